"""Sampler units on hand-made distributions, and stop strings / incremental decoding on constructed token streams."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.generation import sampling
from lmforge.generation.text import TextStream, held_back, truncate_at_stop

INF = float("-inf")


def logits_of(probs: list[float]) -> torch.Tensor:
    return torch.tensor([probs]).log()


def kept(logits: torch.Tensor) -> list[int]:
    return torch.isfinite(logits[0]).nonzero().flatten().tolist()


# --- filters --------------------------------------------------------------------------------------------
def test_top_k_keeps_the_k_largest() -> None:
    x = torch.tensor([[1.0, 3.0, 2.0, 0.0], [0.0, 0.25, 0.5, 0.75]])
    out = sampling.filter_top_k(x, 2)
    assert out.tolist() == [[INF, 3.0, 2.0, INF], [INF, INF, 0.5, 0.75]]


def test_top_k_zero_or_large_keeps_everything() -> None:
    x = torch.randn(2, 5)
    assert torch.equal(sampling.filter_top_k(x, 0), x)
    assert torch.equal(sampling.filter_top_k(x, 5), x)


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    x = logits_of([0.05, 0.5, 0.15, 0.3])
    assert kept(sampling.filter_top_p(x, 0.75)) == [1, 3]  # 0.5 + 0.3 = 0.8 >= 0.75
    assert kept(sampling.filter_top_p(x, 0.85)) == [1, 2, 3]  # 0.95
    assert kept(sampling.filter_top_p(x, 0.4)) == [1]  # the top token alone reaches it
    assert kept(sampling.filter_top_p(x, 1.0)) == [0, 1, 2, 3]


def test_top_p_always_keeps_the_most_likely_token() -> None:
    x = logits_of([0.97, 0.01, 0.01, 0.01])
    assert kept(sampling.filter_top_p(x, 1e-6)) == [0]


def test_min_p_scales_with_the_top_probability() -> None:
    x = logits_of([0.05, 0.5, 0.15, 0.3])
    assert kept(sampling.filter_min_p(x, 0.2)) == [1, 2, 3]  # threshold 0.1
    assert kept(sampling.filter_min_p(x, 0.5)) == [1, 3]  # threshold 0.25
    assert kept(sampling.filter_min_p(x, 1.0)) == [1]
    assert kept(sampling.filter_min_p(x, 0.0)) == [0, 1, 2, 3]


def test_temperature_divides_logits() -> None:
    x = torch.tensor([[2.0, -4.0]])
    assert sampling.apply_temperature(x, 0.5).tolist() == [[4.0, -8.0]]
    assert sampling.apply_temperature(x, 1.0) is x


@settings(max_examples=60, deadline=None)
@given(
    probs=st.lists(st.floats(0.01, 1.0), min_size=2, max_size=12),
    p=st.floats(0.05, 0.99),
)
def test_top_p_set_is_minimal(probs: list[float], p: float) -> None:
    x = torch.tensor([probs], dtype=torch.float64).log()
    pr = x.softmax(-1)[0]
    keep = kept(sampling.filter_top_p(x, p))
    mass = float(pr[keep].sum())
    assert mass >= p - 1e-9  # the kept set reaches p ...
    smallest_kept = float(pr[keep].min())
    assert mass - smallest_kept < p + 1e-9 or len(keep) == 1  # ... and dropping its least likely token would not
    dropped = [i for i in range(len(probs)) if i not in keep]
    assert all(float(pr[d]) <= smallest_kept + 1e-12 for d in dropped)  # it is a top set


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=2, max_size=20), st.integers(1, 25))
def test_top_k_keeps_at_least_k_and_only_the_largest(values: list[float], k: int) -> None:
    x = torch.tensor([values])
    keep = kept(sampling.filter_top_k(x, k))
    assert len(keep) >= min(k, len(values))
    dropped = [v for i, v in enumerate(values) if i not in keep]
    assert not dropped or max(dropped) < min(values[i] for i in keep)


# --- repetition penalty and n-grams ----------------------------------------------------------------------
def test_repetition_penalty_divides_positive_and_multiplies_negative() -> None:
    x = torch.tensor([[2.0, -1.0, 0.5, -3.0]])
    seen = torch.tensor([[True, True, False, False]])
    assert sampling.apply_repetition_penalty(x, seen, 2.0).tolist() == [[1.0, -2.0, 0.5, -3.0]]
    assert sampling.apply_repetition_penalty(x, seen, 1.0) is x


def test_mark_seen_once_per_token() -> None:
    seen = torch.zeros(2, 6, dtype=torch.bool)
    sampling.mark_seen(seen, torch.tensor([[1, 1, 4], [0, 2, 2]]))
    assert seen.nonzero().tolist() == [[0, 1], [0, 4], [1, 0], [1, 2]]


def test_banned_ngram_tokens_on_constructed_sequences() -> None:
    assert sampling.banned_ngram_tokens([1, 2, 3, 1, 2], 3) == [3]  # "1 2 3" exists; "1 2" is the suffix
    assert sampling.banned_ngram_tokens([5, 6, 5, 7, 5], 2) == [6, 7]
    assert sampling.banned_ngram_tokens([1, 2, 3], 3) == []  # suffix "2 3" never seen before
    assert sampling.banned_ngram_tokens([1], 3) == []  # too short to complete any 3-gram
    assert sampling.banned_ngram_tokens([4, 4, 9], 1) == [4, 9]
    assert sampling.banned_ngram_tokens([1, 2, 1, 2], 0) == []


def test_block_ngram_repeats_sets_banned_to_minus_inf_per_row() -> None:
    x = torch.zeros(2, 8)
    out = sampling.block_ngram_repeats(x, [[1, 2, 3, 1, 2], [7, 7]], 3)
    assert torch.isinf(out).nonzero().tolist() == [[0, 3]]
    out2 = sampling.block_ngram_repeats(x, [[1, 2, 1], [7, 7]], 2)
    assert torch.isinf(out2).nonzero().tolist() == [[0, 2], [1, 7]]
    assert not torch.isinf(x).any()  # the input is not modified


def test_sample_is_reproducible_with_a_seeded_generator() -> None:
    x = torch.randn(4, 50)
    draws = []
    for _ in range(2):
        g = torch.Generator().manual_seed(123)
        draws.append([sampling.sample(x, g).tolist() for _ in range(5)])
    assert draws[0] == draws[1]


def test_sample_after_top_k_1_is_argmax() -> None:
    x = torch.randn(6, 30)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(sampling.sample(sampling.filter_top_k(x, 1), g), x.argmax(-1))


def test_sample_frequencies_follow_the_filtered_distribution() -> None:
    x = logits_of([0.05, 0.5, 0.15, 0.3]).expand(20000, 4)
    g = torch.Generator().manual_seed(1)
    draws = sampling.sample(sampling.filter_top_p(x, 0.75), g)
    freq = torch.bincount(draws, minlength=4).float() / len(draws)
    assert freq[0] == 0 and freq[2] == 0
    assert math.isclose(float(freq[1]), 0.5 / 0.8, abs_tol=0.02)


# --- text: UTF-8 split across tokens and stop strings --------------------------------------------------
class ByteTokenizer:
    """Each id is one byte, as byte-level BPE falls back to for rare characters."""

    eos_id = bos_id = pad_id = None

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return bytes(ids).decode("utf-8", errors="replace")


class PieceTokenizer:
    """Each id is a fixed string piece, for stop strings that span token boundaries."""

    def __init__(self, pieces: list[str]) -> None:
        self.pieces = pieces

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return "".join(self.pieces[i] for i in ids)


def stream_all(stream: TextStream, ids: list[int]) -> list[str]:
    deltas = [stream.add(i) for i in ids]
    deltas.append(stream.finish())
    return deltas


def test_stream_never_splits_a_multibyte_character() -> None:
    text = "héllo wörld € 🙂 ok"
    tok = ByteTokenizer()
    deltas = stream_all(TextStream(tok), tok.encode(text))
    assert "".join(deltas) == text
    assert not any("\ufffd" in d for d in deltas)
    assert deltas[tok.encode(text).index(0xF0) : tok.encode(text).index(0xF0) + 3] == ["", "", ""]  # 🙂 is 4 bytes


def test_stream_flushes_an_incomplete_character_at_the_end() -> None:
    tok = ByteTokenizer()
    deltas = stream_all(TextStream(tok), list(b"ab") + [0xE2, 0x82])  # first 2 bytes of €
    assert "".join(deltas) == "ab\ufffd"


def test_stop_string_spanning_tokens_is_never_emitted() -> None:
    tok = PieceTokenizer(["Hello", " wo", "rld", "\n\n", "Bye", " EN", "D", " more"])
    stream = TextStream(tok, stop=["END"])
    deltas = [stream.add(i) for i in [0, 1, 2, 3, 4, 5, 6, 7]]
    assert "".join(deltas) + stream.finish() == "Hello world\n\nBye "
    assert stream.stopped
    assert deltas[5] == " "  # "EN" could start "END": held back, then dropped
    assert stream.add(7) == ""  # nothing after the stop


def test_stop_string_inside_one_token() -> None:
    tok = PieceTokenizer(["a", "bSTOPc", "d"])
    stream = TextStream(tok, stop=["STOP"])
    assert stream_all(stream, [0, 1, 2]) == ["a", "b", "", ""]
    assert stream.output == "ab"


def test_false_start_of_a_stop_string_is_released() -> None:
    tok = PieceTokenizer(["x S", "T", "OR", "Y"])
    stream = TextStream(tok, stop=["STOP"])
    deltas = stream_all(stream, [0, 1, 2, 3])
    assert deltas == ["x ", "", "STOR", "Y", ""]
    assert not stream.stopped


def test_earliest_of_several_stop_strings_wins() -> None:
    tok = ByteTokenizer()
    stream = TextStream(tok, stop=["\n\n", "###"])
    out = "".join(stream_all(stream, tok.encode("one ### two\n\nthree")))
    assert out == "one "


def test_stop_string_split_inside_a_multibyte_character() -> None:
    tok = ByteTokenizer()
    stream = TextStream(tok, stop=["€"])
    out = "".join(stream_all(stream, tok.encode("price: 5€ each")))
    assert out == "price: 5"


def test_held_back_and_truncate_at_stop() -> None:
    assert held_back("abcST", ["STOP"]) == 2
    assert held_back("abcS", ["STOP", "SX"]) == 1
    assert held_back("abc", ["STOP"]) == 0
    assert truncate_at_stop("a STOP b", ["STOP"]) == ("a ", True)
    assert truncate_at_stop("a b", ["STOP"]) == ("a b", False)


@pytest.mark.parametrize("cut", range(1, 9))
def test_stream_of_any_token_split_equals_truncate_at_stop(cut: int) -> None:
    text = "ab€cd STOP ef"
    pieces = [text[i : i + cut] for i in range(0, len(text), cut)]
    stream = TextStream(PieceTokenizer(pieces), stop=["STOP"])
    assert "".join(stream_all(stream, list(range(len(pieces))))) == truncate_at_stop(text, ["STOP"])[0]
