"""Fine-tuning data: exact ids and labels per task, NER alignment and HF parity, shifted text-to-text labels,
padding, the resumable length-grouped sampler, and evaluation order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer as BackendTokenizer
from tokenizers import models, normalizers, pre_tokenizers

from lmforge.data import IGNORE_INDEX, TaskData, read_task_file
from lmforge.data.finetune import (
    TEMPLATES,
    FinetuneBatches,
    PromptTemplate,
    collate,
    encode_examples,
    encode_prompt,
    iterate_in_order,
)
from lmforge.errors import ConfigError, DataError
from lmforge.tokenizers import Tokenizer, load_tokenizer
from lmforge.tokenizers.train import char_backend

X = IGNORE_INDEX
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "new", "york", "##er", "play", "##s", "!"]


@pytest.fixture(scope="module")
def bert_tok() -> Tokenizer:
    """WordPiece over a hand-made vocab: id i is WORDS[i] ([PAD]=0, [CLS]=2, [SEP]=3)."""
    backend = BackendTokenizer(models.WordPiece({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return Tokenizer(backend, "wordpiece")


@pytest.fixture(scope="module")
def char_tok() -> Tokenizer:
    """Characters: one token per character, EOS = 0, so lengths are character counts."""
    chars = sorted(set("abcdefghijklmnopqrstuvwxyz :=>\n"))
    return Tokenizer(char_backend({"<|endoftext|>": 0, "<unk>": 1, **{c: i + 2 for i, c in enumerate(chars)}}), "char")


def data(task: str, texts: list, labels: list, pairs: list[str] | None = None) -> TaskData:
    return TaskData(task, Path("mem.tsv"), texts, labels, pairs)


# --- classification / regression ----------------------------------------------------------------------
def test_classification_ids_labels_truncation_and_skipped_rows(bert_tok: Tokenizer) -> None:
    d = data("classification", ["the cat sat", "  ", "the cat sat the cat", "new york"], [1, 0, 0, 2])
    enc = encode_examples(d, bert_tok, max_length=5)
    assert enc.examples[0] == {"input_ids": [2, 5, 6, 7, 3], "labels": 1, "token_type_ids": [0] * 5}
    assert enc.examples[1]["input_ids"] == [2, 5, 6, 7, 3]  # cut to max_length, [SEP] kept
    assert enc.examples[2]["input_ids"] == [2, 8, 9, 3]
    assert (enc.truncated, enc.skipped_empty, enc.source_rows) == (1, 1, [0, 2, 3])


def test_regression_pairs_have_segments_and_float_labels(bert_tok: Tokenizer) -> None:
    d = data("regression", ["the cat", "sat", "cat"], [4.5, 1, 2.0], pairs=["sat", "the cat", ""])
    enc = encode_examples(d, bert_tok, max_length=16)
    assert enc.examples[0] == {"input_ids": [2, 5, 6, 3, 7, 3], "token_type_ids": [0, 0, 0, 0, 1, 1], "labels": 4.5}
    assert isinstance(enc.examples[1]["labels"], float)
    assert (enc.skipped_empty, enc.source_rows) == (1, [0, 1])  # an empty pair is skipped too


# --- token classification -----------------------------------------------------------------------------
def test_ner_labels_sit_on_the_first_piece_of_each_word(bert_tok: Tokenizer) -> None:
    d = data("token-classification", [["New", "Yorker", "plays", "!"], []], [[1, 2, 0, 3], []])
    enc = encode_examples(d, bert_tok, max_length=32)
    (ex,) = enc.examples
    assert ex["input_ids"] == [2, 8, 9, 10, 11, 12, 13, 3]  # [CLS] new york ##er play ##s ! [SEP]
    assert ex["labels"] == [X, 1, 2, X, 0, X, 3, X]
    assert ex["word_starts"] == [0, 1, 2, 3]
    assert ex["token_type_ids"] == [0] * 8
    assert (enc.skipped_empty, enc.truncated) == (1, 0)


def test_ner_truncation_drops_the_cut_words(bert_tok: Tokenizer) -> None:
    d = data("token-classification", [["new", "yorker", "plays"]], [[1, 2, 0]])
    enc = encode_examples(d, bert_tok, max_length=5)
    assert enc.examples[0]["input_ids"] == [2, 8, 9, 10, 3]
    assert enc.examples[0]["labels"] == [X, 1, 2, X, X]
    assert enc.examples[0]["word_starts"] == [0, 1]
    assert enc.truncated == 1


def _hf_first_piece_labels(hf: object, words: list[str], tags: list[int]) -> tuple[list[int], list[int]]:
    """Hugging Face run_ner's alignment (label_all_tokens=False)."""
    e = hf(words, is_split_into_words=True)  # type: ignore[operator]
    labels, prev = [], None
    for w in e.word_ids():
        labels.append(X if w is None or w == prev else tags[w])
        prev = w
    return e["input_ids"], labels


def test_ner_ids_match_bert_tokenizer_fast(minilm: Path) -> None:
    transformers = pytest.importorskip("transformers")
    hf = transformers.BertTokenizerFast.from_pretrained(minilm)
    words = [["Héllo", "don't", "\u200b", "São", "Paulo", "😀", "x"], ["unbelievably", "tokenization", ",", "ok"]]
    tags = [list(range(len(w))) for w in words]
    enc = encode_examples(data("token-classification", words, tags), load_tokenizer(minilm), max_length=64)
    for ex, w, t in zip(enc.examples, words, tags):
        assert (ex["input_ids"], ex["labels"]) == _hf_first_piece_labels(hf, w, t)
    assert enc.examples[0]["word_starts"] == [0, 1, 3, 4, 5, 6]  # the zero-width space has no piece


def test_ner_on_wnut17_matches_hf(shared_data: Path, minilm: Path) -> None:
    transformers = pytest.importorskip("transformers")
    hf = transformers.BertTokenizerFast.from_pretrained(minilm)
    d = read_task_file(shared_data / "wnut17" / "wnut17train.conll", "token-classification", max_rows=300)
    enc = encode_examples(d, load_tokenizer(minilm), max_length=512)
    assert (len(enc), enc.truncated, enc.skipped_empty) == (300, 0, 0)
    for ex, row in zip(enc.examples, enc.source_rows):
        assert (ex["input_ids"], ex["labels"]) == _hf_first_piece_labels(hf, d.texts[row], d.labels[row])
        assert len(ex["word_starts"]) == sum(label != X for label in ex["labels"])


# --- text to text -------------------------------------------------------------------------------------
def test_text_to_text_labels_are_shifted_onto_target_and_eos(char_tok: Tokenizer) -> None:
    tpl = PromptTemplate("q: {source}\na: {target}")
    enc = encode_examples(data("text-to-text", ["abc", "", "x"], ["de", "zz", " "]), char_tok, 64, template=tpl)
    (ex,) = enc.examples
    prompt, target = char_tok.encode("q: abc\na:"), char_tok.encode(" de")  # the prompt's last space leads the target
    assert ex["input_ids"] == prompt + target + [0]
    assert ex["prompt_len"] == len(prompt) == len(encode_prompt(char_tok, "abc", tpl))
    assert ex["labels"] == [X] * (len(prompt) - 1) + target + [0, X]
    ids, labels = ex["input_ids"], ex["labels"]
    predicted = [ids[t + 1] for t in range(len(ids)) if labels[t] != X]
    assert predicted == [labels[t] for t in range(len(ids)) if labels[t] != X] == target + [0]
    assert (enc.skipped_empty, enc.source_rows) == (2, [0])


def test_text_to_text_cuts_the_source_first_then_the_target(char_tok: Tokenizer) -> None:
    tpl = PromptTemplate("{source}=>{target}")  # 2 template tokens, the target gains no lead space
    d = data("text-to-text", ["abcdef", "abcdef", "abcdef"], ["xy", "xy", "uvwxyz"])
    long_enough, cut_source, cut_both = (encode_examples(d, char_tok, n, template=tpl) for n in (15, 9, 6))
    assert long_enough.truncated == 0 and cut_source.truncated == cut_both.truncated == 3
    assert char_tok.decode(cut_source.examples[0]["input_ids"]) == "abcd=>xy<|endoftext|>"
    assert char_tok.decode(cut_both.examples[2]["input_ids"]) == "=>uvw<|endoftext|>"  # source gone, then target cut
    assert all(len(e["input_ids"]) <= 6 for e in cut_both.examples)
    with pytest.raises(ConfigError, match="max_length=3"):
        encode_examples(d, char_tok, 3, template=tpl)


def test_default_templates_are_valid(char_tok: Tokenizer) -> None:
    enc = encode_examples(data("text-to-text", ["ab"], ["cd"]), char_tok, 32)
    assert char_tok.decode(enc.examples[0]["input_ids"]) == "ab\n=> cd<|endoftext|>"
    assert {k: PromptTemplate(v).prompt("s") for k, v in TEMPLATES.items()}["translation"] == "English: s\nGerman:"


@pytest.mark.parametrize("bad", ["{target}", "{source}", "{source} => {target}.", "{target} {source}", "a {b}"])
def test_bad_templates_are_config_errors_naming_them(bad: str) -> None:
    with pytest.raises(ConfigError, match="prompt template") as e:
        PromptTemplate(bad)
    assert repr(bad) in str(e.value)


def test_text_to_text_needs_an_eos(bert_tok: Tokenizer) -> None:
    with pytest.raises(DataError, match="end-of-sequence"):
        encode_examples(data("text-to-text", ["the"], ["cat"]), bert_tok, 16)


# --- collate ------------------------------------------------------------------------------------------
def test_collate_pads_right_with_masks_and_ignore_labels() -> None:
    seqs = [{"input_ids": [5, 6, 7], "labels": [X, 1, X]}, {"input_ids": [8], "labels": [2]}]
    b = collate(seqs, pad_id=0, task="token-classification")
    assert b["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert b["labels"].tolist() == [[X, 1, X], [2, X, X]]
    assert "token_type_ids" not in b and all(t.dtype == torch.long for t in b.values())
    rows = [{"input_ids": [2, 5, 3], "token_type_ids": [0, 0, 0], "labels": 1.5}, {"input_ids": [2, 3], "labels": 0}]
    rows[1]["token_type_ids"] = [0, 1]
    b = collate(rows, pad_id=9, task="regression")
    assert b["token_type_ids"].tolist() == [[0, 0, 0], [0, 1, 0]] and b["input_ids"][1].tolist() == [2, 3, 9]
    assert b["labels"].dtype == torch.float32 and b["labels"].tolist() == [1.5, 0.0]
    b = collate([{"input_ids": [1], "labels": 3}], pad_id=0, task="classification")
    assert b["labels"].dtype == torch.long and b["labels"].shape == (1,)


# --- the training sampler -----------------------------------------------------------------------------
def examples(n: int, seed: int = 0) -> list[dict]:
    lengths = np.random.default_rng(seed).integers(1, 60, size=n)
    return [{"input_ids": [i + 1] * int(k), "labels": i % 3} for i, k in enumerate(lengths)]


def rows_of(batch: dict[str, torch.Tensor]) -> list[int]:
    return [int(r[0]) - 1 for r in batch["input_ids"]]  # example i is made of the id i + 1


def test_each_epoch_visits_every_example_once_in_a_new_order() -> None:
    ex = examples(1000)
    b = FinetuneBatches(ex, batch_size=16, pad_id=0, task="classification", seed=3)
    assert b.steps_per_epoch == 63
    epochs = [[r for _ in range(63) for r in rows_of(b.next_batch())] for _ in range(2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(1000))
    assert epochs[0] != epochs[1] and b.epoch == 2.0
    sizes = [len(x) for x in b.epoch_batches(0)]
    assert sizes.count(16) == 62 and sizes.count(1000 - 62 * 16) == 1  # drop_last=False
    assert max(len(ex[i]["input_ids"]) for i in b.epoch_batches(0)[0]) == 59  # the longest batch comes first


def test_sampler_state_roundtrip() -> None:
    ex = examples(300)
    straight = FinetuneBatches(ex, 8, 0, "classification", seed=1)
    expected = [straight.next_batch() for _ in range(50)]  # crosses the epoch boundary at step 38
    first = FinetuneBatches(ex, 8, 0, "classification", seed=1)
    for _ in range(20):
        first.next_batch()
    state = first.state_dict()
    assert state == {"kind": "finetune", "step": 20, "seed": 1, "global_batch_size": 8, "n_examples": 300,
                     "group_by_length": True}  # fmt: skip
    resumed = FinetuneBatches(ex, 8, 0, "classification", seed=1)
    resumed.load_state_dict(state)
    for want in expected[20:]:
        got = resumed.next_batch()
        assert all(torch.equal(got[k], want[k]) for k in want)
    with pytest.raises(DataError, match="seed"):
        FinetuneBatches(ex, 8, 0, "classification", seed=2).load_state_dict(state)


def test_ranks_split_the_same_global_batch_at_any_world_size() -> None:
    ex = examples(37)
    single = FinetuneBatches(ex, 8, 0, "classification", seed=5)
    pair = [FinetuneBatches(ex, 4, 0, "classification", seed=5, rank=r, world_size=2) for r in (0, 1)]
    for _ in range(12):  # 5 steps per epoch, the last one partial (5 rows)
        assert rows_of(single.next_batch()) == [r for p in pair for r in rows_of(p.next_batch())]
    pair[1].load_state_dict(single.state_dict())  # resume on another world size
    assert pair[1].step == 12


def test_tiny_and_empty_datasets() -> None:
    two = examples(2)
    ranks = [FinetuneBatches(two, 4, 0, "classification", seed=0, rank=r, world_size=3) for r in range(3)]
    assert ranks[0].steps_per_epoch == 1
    got = [rows_of(r.next_batch()) for r in ranks]  # 2 rows for 3 ranks: one repeats, none is empty
    assert all(len(g) == 1 for g in got) and {g[0] for g in got} == {0, 1}
    with pytest.raises(DataError, match="no examples"):
        FinetuneBatches([], 4, 0, "classification", seed=0)


def test_length_grouping_cuts_padding_on_sst2(shared_data: Path, minilm: Path) -> None:
    d = read_task_file(shared_data / "sst2" / "train.tsv", "classification", "sentence", "label", max_rows=5000)
    tok = load_tokenizer(minilm)
    enc = encode_examples(d, tok, max_length=128)
    assert (len(enc), enc.skipped_empty, enc.truncated) == (5000, 0, 0)

    def padding(group: bool) -> float:
        b = FinetuneBatches(enc.examples, 32, tok.pad_id, "classification", seed=0, group_by_length=group)
        return float(np.mean([1 - b.next_batch()["attention_mask"].float().mean() for _ in range(b.steps_per_epoch)]))

    grouped, shuffled = padding(True), padding(False)
    assert grouped < 0.1 < 0.5 < shuffled  # measured: ~0.03 vs ~0.66


# --- evaluation order ---------------------------------------------------------------------------------
def test_iterate_in_order_puts_every_example_back() -> None:
    ex = examples(23)
    out: list[int | None] = [None] * 23
    for indices, batch in iterate_in_order(ex, 5, 0, "classification"):
        assert batch["input_ids"].shape[0] == len(indices) <= 5
        for i, row in zip(indices, rows_of(batch)):
            out[i] = row
    assert out == list(range(23))
