"""Decoding loop: cache == recompute, padding, EOS, stop strings, seeds, streaming, validation, fill-mask errors."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import lmforge
from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError, UsageError
from lmforge.generation import (
    GenerationConfig,
    GenerationConfigError,
    complete,
    fill_mask,
    generate,
    generate_text,
    stream_generation,
    stream_text,
)
from lmforge.models import KVCache
from lmforge.tasks import TaskOutput, build_model

V = 260  # bytes 0..255, then EOS=256, BOS=257, PAD=258
EOS, BOS, PAD = 256, 257, 258


def tiny(family: str = "gpt2", **kw: object) -> nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(family=family, vocab_size=V, n_layer=2, n_head=2, d_model=32, max_seq_len=96, **kw)
    return build_model(cfg).eval()


class ByteTokenizer:
    """Each id is one byte (byte-level BPE's fallback for rare characters), plus three special ids."""

    eos_id, bos_id, pad_id, mask_id = EOS, BOS, PAD, None

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


class ScriptedLM(nn.Module):
    """A stand-in decoder that emits a fixed token script per row, to test what the loop does with it."""

    def __init__(self, script: list[list[int]]) -> None:
        super().__init__()
        self.cfg = ModelConfig(family="gpt2", vocab_size=V, n_layer=1, n_head=1, d_model=8, max_seq_len=96)
        self.script = script
        self.anchor = nn.Parameter(torch.zeros(1))
        self.calls = 0

    def forward(self, input_ids: Tensor, attention_mask=None, position_ids=None, cache=None) -> TaskOutput:  # noqa: ANN001
        B, T = input_ids.shape
        if cache is not None and cache[0].length == 0:
            self.calls = 0
        if cache is not None:
            cache[0].length += T
        logits = torch.full((B, T, V), -10.0)
        for b in range(B):
            row = self.script[min(b, len(self.script) - 1)]  # beams of one prompt share its script
            logits[b, -1, row[min(self.calls, len(row) - 1)]] = 10.0
        self.calls += 1
        return TaskOutput(last_hidden_state=torch.zeros(B, T, 8), logits=logits)


def full_recompute_greedy(model: nn.Module, ids: Tensor, steps: int) -> tuple[Tensor, list[Tensor]]:
    seq, all_logits = ids, []
    for _ in range(steps):
        logits = model(seq).logits[:, -1]
        all_logits.append(logits)
        seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], 1)
    return seq[:, ids.shape[1] :], all_logits


# --- the cache -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["gpt2", "gpt1", "modern"])
def test_cached_decoding_equals_full_recompute(family: str) -> None:
    model = tiny(family, bias=family != "modern")
    ids = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref_tokens, ref_logits = full_recompute_greedy(model, ids, 64)
        cache = [KVCache.empty(model.cfg, 2, 9 + 64, ids.device, torch.float32) for _ in range(2)]
        logits = model(ids, cache=cache).logits[:, -1]
        for t in range(64):
            torch.testing.assert_close(logits, ref_logits[t], rtol=0, atol=1e-5)
            logits = model(ref_tokens[:, t : t + 1], cache=cache).logits[:, -1]
    assert torch.equal(generate(model, ids, max_new_tokens=64), ref_tokens)


@pytest.mark.parametrize(
    "family, kw",
    [
        ("gpt2", {}),
        ("gpt1", {}),
        ("modern", {"bias": False}),
        ("gpt2", {"attention_layers": ("dense", "banded"), "band_width": 4}),
    ],
)
def test_single_token_decoder_equals_forward_with_padding(family: str, kw: dict) -> None:
    """model.decoder() (generation's module-free fast path) computes forward's hidden state, padded rows included."""
    model = tiny(family, **kw)
    ids = torch.randint(0, 256, (2, 14), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0  # row 1 is left-padded
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    P = 6
    decode = model.backbone.decoder()
    with torch.no_grad():
        full = model(ids, attention_mask=mask, position_ids=positions).last_hidden_state  # (B, T, C)
        cache = [KVCache.empty(model.cfg, 2, 14, ids.device, torch.float32) for _ in range(model.cfg.n_layer)]
        model.backbone.encode(ids[:, :P], mask[:, :P], None, positions[:, :P], cache)
        for t in range(P, 14):
            hidden = decode(ids[:, t], positions[:, t : t + 1], cache, mask[:, : t + 1])
            torch.testing.assert_close(hidden[0], full[0, t], rtol=0, atol=1e-5)
            torch.testing.assert_close(hidden[1], full[1, t], rtol=0, atol=1e-5)
    assert cache[0].length == 14


def test_plain_closures_equal_their_modules_and_unknown_modules_pass_through() -> None:
    from lmforge.models.layers import MLP, RMSNorm, SwiGLU, plain

    cfg = ModelConfig(family="gpt2", vocab_size=V, n_layer=1, n_head=2, d_model=16)
    torch.manual_seed(0)
    modules = [
        nn.Linear(16, 16),
        nn.Linear(16, 16, bias=False),
        nn.LayerNorm(16),
        RMSNorm(16, 1e-6),
        nn.GELU(approximate="tanh"),
        nn.SiLU(),
        MLP(cfg),
        SwiGLU(cfg),
    ]
    x = torch.randn(3, 16)
    for module in modules:
        with torch.no_grad():
            torch.testing.assert_close(plain(module.eval())(x), module(x), rtol=0, atol=0)
        assert plain(module) is not module, type(module).__name__
    unknown = nn.Sequential(nn.Linear(16, 16))
    assert plain(unknown) is unknown
    # a fp32 matrix of >= 1M elements takes the (W @ x^T)^T route: same values up to summation order
    for big in (nn.Linear(1024, 1024), nn.Linear(1024, 1024, bias=False)):
        rows = torch.randn(3, 1024)
        with torch.no_grad():
            torch.testing.assert_close(plain(big)(rows), big(rows), rtol=0, atol=1e-5)


def test_bf16_linear_closure_tracks_in_place_weight_changes() -> None:
    """bf16 linears may decode through a pre-packed oneDNN copy: it must equal F.linear and follow weight updates."""
    from lmforge.models.layers import _onednn_packed, clear_packed_weights, plain

    torch.manual_seed(0)
    lin = nn.Linear(64, 48).to(torch.bfloat16)
    if _onednn_packed(lin.weight) is None:
        pytest.skip("this torch build or CPU has no oneDNN bf16 linear: bf16 uses F.linear")
    x = torch.randn(2, 64, dtype=torch.bfloat16)
    with torch.no_grad():
        torch.testing.assert_close(plain(lin)(x).float(), lin(x).float(), rtol=0.02, atol=0.02)
        lin.weight.mul_(-2.0)  # an optimizer step or load_state_dict changes weights in place
        torch.testing.assert_close(plain(lin)(x).float(), lin(x).float(), rtol=0.02, atol=0.02)
        lin.weight.data.mul_(-1.0)  # .data bypasses the version counter: documented, and cleared by hand
        clear_packed_weights()
        torch.testing.assert_close(plain(lin)(x).float(), lin(x).float(), rtol=0.02, atol=0.02)
    with torch.inference_mode():  # inference tensors have no version counter: never packed, still correct
        frozen = nn.Linear(64, 48).to(torch.bfloat16)
        assert _onednn_packed(frozen.weight) is None
        torch.testing.assert_close(plain(frozen)(x).float(), frozen(x).float(), rtol=0, atol=0)


def test_forward_hooks_run_on_every_generated_token() -> None:
    """Closures would skip hooks, so a hooked model decodes through forward."""
    model = tiny()
    calls = []
    handle = model.backbone.blocks[0].register_forward_hook(lambda module, args, out: calls.append(args[0].shape[1]))
    generate(model, [[1, 2, 3]], max_new_tokens=5)
    handle.remove()
    assert calls == [3, 1, 1, 1, 1]  # the prompt, then one call per new token but the last


def test_bf16_decoding_equals_bf16_recompute() -> None:
    model = tiny().to(torch.bfloat16)
    ids = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref, _ = full_recompute_greedy(model, ids, 16)
    same = (generate(model, ids, max_new_tokens=16) == ref).float().mean()
    assert float(same) >= 0.9  # bf16 rounding differs between the paths; the argmax rarely flips


def test_int8_quantized_model_decodes_through_its_own_linears() -> None:
    """quantize_dynamic swaps nn.Linear for int8 modules: the fast path must call them, not the fp32 weights."""
    model = tiny()
    from lmforge.generation.quantize import quantize_int8

    quantized = quantize_int8(model)
    ids = torch.randint(0, 256, (1, 10), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref, _ = full_recompute_greedy(quantized, ids, 24)
    assert torch.equal(generate(quantized, ids, max_new_tokens=24), ref)


def test_gpt3_banded_layers_decode_like_recompute() -> None:
    model = tiny("gpt2", attention_layers=("dense", "banded"), band_width=8)
    ids = torch.randint(0, 256, (1, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref, _ = full_recompute_greedy(model, ids, 30)
    assert torch.equal(generate(model, ids, max_new_tokens=30), ref)


def test_left_padded_batch_equals_each_prompt_alone() -> None:
    model = tiny()
    prompts = [[5, 6, 7, 8, 9, 10, 11], [40, 41], [100, 101, 102, 103]]
    batch = generate(model, prompts, max_new_tokens=20)
    for row, p in zip(batch, prompts):
        assert row.tolist() == generate(model, [p], max_new_tokens=20)[0].tolist()


def test_explicit_left_padded_mask_equals_list_input() -> None:
    model = tiny()
    ids = torch.tensor([[PAD, PAD, 3, 4, 5], [9, 8, 7, 6, 5]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert torch.equal(
        generate(model, ids, mask, max_new_tokens=10), generate(model, [[3, 4, 5], [9, 8, 7, 6, 5]], max_new_tokens=10)
    )


def test_training_flag_is_restored_and_dropout_is_off() -> None:
    model = tiny(dropout=0.5)
    model.train()
    a = generate(model, [[1, 2, 3]], max_new_tokens=8)
    b = generate(model, [[1, 2, 3]], max_new_tokens=8)
    assert model.training and torch.equal(a, b)


# --- EOS, padding of finished rows, shapes ---------------------------------------------------------------
def test_eos_finishes_rows_and_fills_with_pad() -> None:
    model = ScriptedLM([[10, 11, EOS, 12], [20, 21, 22, 23, EOS]])
    out = generate(model, [[1], [2]], max_new_tokens=10, eos_token_id=EOS, pad_token_id=PAD)
    assert out.tolist() == [[10, 11, EOS, PAD, PAD], [20, 21, 22, 23, EOS]]  # stops when every row is done


def test_without_eos_runs_max_new_tokens() -> None:
    model = ScriptedLM([[10, EOS]])
    assert generate(model, [[1]], max_new_tokens=4).tolist() == [[10, EOS, EOS, EOS]]
    assert generate(model, [[1]], max_new_tokens=0).shape == (1, 0)


def test_several_eos_ids() -> None:
    model = ScriptedLM([[10, 11, 12]])
    assert generate(model, [[1]], max_new_tokens=5, eos_token_id=[99, 11]).tolist() == [[10, 11]]


# --- sampling ----------------------------------------------------------------------------------------------
def test_seeded_sampling_is_reproducible_and_leaves_global_rng() -> None:
    model = tiny()
    kw = dict(max_new_tokens=24, do_sample=True, top_k=40, top_p=0.9, temperature=1.3, seed=7)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = generate(model, [[1, 2, 3], [4, 5]], **kw)
    assert torch.equal(torch.get_rng_state(), state)
    b = generate(model, [[1, 2, 3], [4, 5]], **kw)
    c = generate(model, [[1, 2, 3], [4, 5]], **{**kw, "seed": 8})
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_top_k_1_and_temperature_0_are_greedy() -> None:
    model = tiny()
    greedy = generate(model, [[1, 2, 3]], max_new_tokens=16)
    assert torch.equal(generate(model, [[1, 2, 3]], max_new_tokens=16, do_sample=True, top_k=1, seed=0), greedy)
    assert torch.equal(generate(model, [[1, 2, 3]], max_new_tokens=16, do_sample=True, temperature=0), greedy)


def test_no_repeat_ngram_size_never_repeats() -> None:
    model = tiny()
    out = generate(model, [[1, 2, 3]], max_new_tokens=60, no_repeat_ngram_size=2)[0].tolist()
    seq = [1, 2, 3] + out
    bigrams = list(zip(seq, seq[1:]))
    assert len(bigrams) == len(set(bigrams))
    plain = generate(model, [[1, 2, 3]], max_new_tokens=60)[0].tolist()
    plain_seq = [1, 2, 3] + plain
    assert len(set(zip(plain_seq, plain_seq[1:]))) < len(plain_seq) - 1  # the tiny model does loop without it


def test_repetition_penalty_changes_a_looping_greedy_output() -> None:
    model = tiny()
    plain = generate(model, [[1, 2, 3]], max_new_tokens=40)[0].tolist()
    penalized = generate(model, [[1, 2, 3]], max_new_tokens=40, repetition_penalty=5.0)[0].tolist()
    assert len(set(penalized)) > len(set(plain))


# --- beams -------------------------------------------------------------------------------------------------
def test_one_beam_is_greedy_and_beams_score_at_least_greedy() -> None:
    model = tiny()
    greedy = generate(model, [[1, 2, 3]], max_new_tokens=12)
    beams = generate(model, [[1, 2, 3]], max_new_tokens=12, num_beams=4, length_penalty=0.0)

    def logp(new: Tensor) -> float:
        seq = torch.cat([torch.tensor([[1, 2, 3]]), new], 1)
        with torch.no_grad():
            lp = model(seq).logits.log_softmax(-1)[0, 2:-1]
        return float(lp.gather(1, new[0][:, None]).sum())

    assert logp(beams) >= logp(greedy) - 1e-5


def test_beam_search_with_padding_equals_each_prompt_alone() -> None:
    model = tiny()
    prompts = [[5, 6, 7, 8, 9], [40, 41]]
    batch = generate(model, prompts, max_new_tokens=10, num_beams=3, eos_token_id=EOS)
    for row, p in zip(batch, prompts):
        alone = generate(model, [p], max_new_tokens=10, num_beams=3, eos_token_id=EOS)[0]
        assert row[: len(alone)].tolist() == alone.tolist()


# --- prompts: context, truncation, empty ---------------------------------------------------------------------
def test_prompt_longer_than_context_is_a_clear_error() -> None:
    model = tiny()
    with pytest.raises(GenerationConfigError, match=r"prompt of 90 tokens \+ max_new_tokens=10 exceeds .* 96 tokens"):
        generate(model, [list(range(90))], max_new_tokens=10)
    with pytest.raises(GenerationConfigError, match="max_new_tokens=96 leaves no room"):
        generate(model, [[1]], max_new_tokens=96)


def test_truncate_left_keeps_the_end_of_the_prompt() -> None:
    model = tiny()
    long = list(range(100))
    out = generate(model, [long], max_new_tokens=16, truncate="left")
    assert torch.equal(out, generate(model, [long[-80:]], max_new_tokens=16))
    res = complete(model, ByteTokenizer(), "x" * 200, max_new_tokens=6, truncate="left")[0]
    assert res.prompt_tokens == 90


def test_empty_prompt_starts_from_bos_or_eos() -> None:
    model, tok = tiny(), ByteTokenizer()
    from_bos = generate(model, [[BOS]], max_new_tokens=5)
    assert torch.equal(generate(model, [[]], max_new_tokens=5, bos_token_id=BOS), from_bos)
    no_tokens = torch.zeros(1, 0, dtype=torch.long)
    from_eos = generate(model, [[EOS]], max_new_tokens=5, eos_token_id=[])
    out = generate(model, no_tokens, max_new_tokens=5, eos_token_id=EOS)  # may end at once: EOS after EOS
    assert torch.equal(out, from_eos[:, : out.shape[1]])
    res = complete(model, tok, ["", "ab"], max_new_tokens=5, eos_token_id=[])
    assert res[0].prompt_tokens == 1 and res[0].token_ids == from_bos[0].tolist()  # the tokenizer's BOS
    with pytest.raises(GenerationConfigError, match="empty prompt needs a start token"):
        generate(model, [[]], max_new_tokens=5)


# --- text, stop strings, streaming -----------------------------------------------------------------------
def test_stop_string_across_tokens_ends_the_text_before_it() -> None:
    tok = ByteTokenizer()
    script = tok.encode("Hi there\nEND and more")
    res = complete(ScriptedLM([script]), tok, "x", max_new_tokens=30, stop=["\nEND"])[0]
    assert res.text == "Hi there" and res.finish_reason == "stop"
    assert res.token_ids == script[: len("Hi there\nEND")]  # up to the token that completed the stop
    assert len(res.logprobs) == len(res.token_ids)


def test_finish_reasons_eos_and_length_in_one_batch() -> None:
    tok = ByteTokenizer()
    model = ScriptedLM([tok.encode("ab") + [EOS], tok.encode("abcdefgh")])
    res = complete(model, tok, ["x", "y"], max_new_tokens=5)
    assert [(g.text, g.finish_reason) for g in res] == [("ab", "eos"), ("abcde", "length")]
    assert res[0].token_ids == [97, 98, EOS] and res[1].token_ids == [97, 98, 99, 100, 101]
    assert all(lp <= 0 for g in res for lp in g.logprobs)


def test_streaming_multibyte_characters_split_over_tokens() -> None:
    tok = ByteTokenizer()
    text = "é€🙂 ok"
    deltas = list(stream_text(ScriptedLM([tok.encode(text) + [EOS]]), tok, "x", max_new_tokens=20))
    assert "".join(deltas) == text
    assert not any("\ufffd" in d for d in deltas)
    assert deltas[:3] == ["é", "€", "🙂"]  # each delta arrives as soon as its last byte does


def test_stream_equals_generate_text_and_reports_the_result() -> None:
    model, tok = tiny(), ByteTokenizer()
    kw = dict(max_new_tokens=30, do_sample=True, top_p=0.95, seed=3, stop=["e"])
    stream = stream_generation(model, tok, "hello", **kw)
    deltas = list(stream)
    assert "".join(deltas) == generate_text(model, tok, "hello", **kw) == stream.result.text
    assert "e" not in stream.result.text
    assert lmforge.generate_text(model, tok, ["hello"], **kw) == [stream.result.text]
    assert "".join(lmforge.stream_text(model, tok, "hello", **kw)) == stream.result.text


def test_text_beam_search_truncates_at_stop() -> None:
    tok = ByteTokenizer()
    model = ScriptedLM([tok.encode("one, two, three")])
    res = complete(model, tok, "x", max_new_tokens=15, num_beams=2, stop=[", t"])[0]
    assert res.text == "one" and res.finish_reason == "stop"


# --- validation ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"top_p": 1.5}, r"top_p=1.5 must be in \(0, 1\]"),
        ({"top_p": 0.0}, r"top_p=0.0 must be in \(0, 1\]"),
        ({"temperature": -0.1}, "temperature=-0.1 must be >= 0"),
        ({"top_k": -1}, "top_k=-1 must be an integer >= 0"),
        ({"num_beams": 0}, "num_beams=0 must be an integer >= 1"),
        ({"min_p": 2.0}, r"min_p=2.0 must be in \[0, 1\]"),
        ({"repetition_penalty": 0.0}, "repetition_penalty=0.0 must be > 0"),
        ({"max_new_tokens": -3}, "max_new_tokens=-3 must be an integer >= 0"),
        ({"num_beams": 2, "do_sample": True}, "num_beams=2 with do_sample=True"),
        ({"early_stopping": "sometimes"}, "early_stopping='sometimes'"),
        ({"truncate": "right"}, "truncate='right' must be 'error' or 'left'"),
        ({"top_pp": 0.5}, "unknown generation parameter 'top_pp' \\(did you mean 'top_p'\\?\\)"),
    ],
)
def test_invalid_parameters_name_the_parameter(kwargs: dict, message: str) -> None:
    model = tiny()
    with pytest.raises(GenerationConfigError, match=message) as info:
        generate(model, [[1, 2]], **kwargs)
    assert isinstance(info.value, ValueError) and isinstance(info.value, LmforgeError)
    assert info.value.exit_code == 2


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(GenerationConfigError, match="temperature=-1.*top_k=-2.*top_p=3"):
        GenerationConfig(temperature=-1, top_k=-2, top_p=3)


def test_bad_prompts_are_clear_errors() -> None:
    model = tiny()
    with pytest.raises(GenerationConfigError, match="token id 999, outside the model's vocab_size=260"):
        generate(model, [[1, 999]])
    with pytest.raises(GenerationConfigError, match="must be left-padded"):
        generate(model, torch.tensor([[1, 2, PAD]]), torch.tensor([[1, 1, 0]]))
    with pytest.raises(GenerationConfigError, match="prompt 1 has no real token"):
        generate(model, torch.tensor([[1, 2], [3, 4]]), torch.tensor([[1, 1], [0, 0]]))


def test_a_bert_model_cannot_generate_and_a_gpt_cannot_fill_masks() -> None:
    bert = build_model(ModelConfig(family="bert", vocab_size=V, n_layer=1, n_head=2, d_model=16))
    with pytest.raises(UsageError, match="family='bert', head='mlm'.*fill-mask"):
        generate(bert, [[1, 2]])
    with pytest.raises(UsageError, match="fill-mask needs a BERT-family model .* family='gpt2', head='lm'"):
        fill_mask(tiny(), ByteTokenizer(), "a [MASK]")


def test_stream_text_checks_everything_before_the_first_token() -> None:
    model, tok = tiny(), ByteTokenizer()
    with pytest.raises(GenerationConfigError, match="top_p=2.0"):
        stream_text(model, tok, "x", top_p=2.0)  # raised by the call itself, not on iteration
    with pytest.raises(GenerationConfigError, match="prompt of 95 tokens"):
        stream_text(model, tok, "x" * 95, max_new_tokens=10)
