"""CLM and MLM batches: exact windows, determinism, rank sharding, epoch coverage, state round trips, masking."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lmforge.config import DataConfig
from lmforge.data import IGNORE_INDEX, CLMBatches, MLMBatches, TokenShards, mask_tokens, prepare_shards
from lmforge.errors import DataError
from lmforge.tokenizers import Tokenizer, train_tokenizer

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "tiny.txt"


@pytest.fixture(scope="module")
def gpt_shards(tmp_path_factory: pytest.TempPathFactory) -> TokenShards:
    out = tmp_path_factory.mktemp("gpt")
    tok = train_tokenizer("bpe", FIXTURE, vocab_size=300)
    prepare_shards([FIXTURE], tok, out, DataConfig(num_workers=1, shard_tokens=1024), progress=False)
    return TokenShards(out, "train")


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Tokenizer, TokenShards]:
    out = tmp_path_factory.mktemp("bert")
    tok = train_tokenizer("wordpiece", FIXTURE, vocab_size=400, lowercase=True)
    prepare_shards([FIXTURE], tok, out, DataConfig(num_workers=1), progress=False)
    return tok, TokenShards(out, "train")


def test_clm_labels_are_the_next_tokens(gpt_shards: TokenShards) -> None:
    batches = CLMBatches(gpt_shards, seq_len=32, batch_size=4, seed=0)
    b = batches.next_batch()
    assert b["input_ids"].shape == b["labels"].shape == (4, 32)
    assert b["input_ids"].dtype == b["labels"].dtype == torch.long
    assert torch.equal(b["input_ids"][:, 1:], b["labels"][:, :-1])
    whole = torch.from_numpy(gpt_shards[0 : len(gpt_shards)])
    for row in b["input_ids"]:  # every row is a real window of the stream
        starts = [i for i in range(len(whole) - 32) if torch.equal(whole[i : i + 32], row)]
        assert starts


def test_clm_is_a_function_of_seed_and_step(gpt_shards: TokenShards) -> None:
    a = CLMBatches(gpt_shards, 16, 4, seed=1)
    b = CLMBatches(gpt_shards, 16, 4, seed=1)
    c = CLMBatches(gpt_shards, 16, 4, seed=2)
    first = a.next_batch()
    assert torch.equal(first["input_ids"], b.next_batch()["input_ids"])
    assert not torch.equal(first["input_ids"], c.next_batch()["input_ids"])
    assert not torch.equal(first["input_ids"], a.next_batch()["input_ids"])


def test_clm_ranks_split_the_global_batch(gpt_shards: TokenShards) -> None:
    for mode in ("random", "sequential"):
        whole = CLMBatches(gpt_shards, 16, 4, seed=3, mode=mode).next_batch()["input_ids"]
        r0 = CLMBatches(gpt_shards, 16, 2, seed=3, rank=0, world_size=2, mode=mode).next_batch()["input_ids"]
        r1 = CLMBatches(gpt_shards, 16, 2, seed=3, rank=1, world_size=2, mode=mode).next_batch()["input_ids"]
        assert torch.equal(torch.cat([r0, r1]), whole)


def test_sequential_mode_covers_every_token_once_per_epoch(gpt_shards: TokenShards) -> None:
    T, B = 16, 3
    batches = CLMBatches(gpt_shards, T, B, seed=0, mode="sequential")
    n = batches.windows_per_epoch
    rows = [r for _ in range((n + B - 1) // B) for r in batches.next_batch()["input_ids"]][:n]
    seen = torch.cat(sorted(rows, key=lambda r: r.tolist()))
    expected = torch.from_numpy(gpt_shards[0 : n * T]).view(n, T)
    assert torch.equal(seen, torch.cat(sorted(expected, key=lambda r: r.tolist())))
    first_epoch = torch.stack(rows[:n])
    second = CLMBatches(gpt_shards, T, n, seed=0, mode="sequential")
    second.load_state_dict({"step": 1, "seed": 0, "seq_len": T, "mode": "sequential"})
    assert not torch.equal(second.next_batch()["input_ids"], first_epoch)  # a new permutation each epoch
    assert gpt_shards.separator_id in torch.cat(rows).tolist()  # documents stay packed with EOS between them


@pytest.mark.parametrize("mode", ["random", "sequential"])
def test_sampler_state_roundtrip(gpt_shards: TokenShards, mode: str) -> None:
    a = CLMBatches(gpt_shards, 16, 4, seed=5, mode=mode)
    for _ in range(7):
        a.next_batch()
    state = json.loads(json.dumps(a.state_dict()))  # JSON-serialisable
    b = CLMBatches(gpt_shards, 16, 4, seed=5, mode=mode)
    b.load_state_dict(state)
    for _ in range(3):
        x, y = a.next_batch(), b.next_batch()
        assert torch.equal(x["input_ids"], y["input_ids"]) and torch.equal(x["labels"], y["labels"])


def test_mlm_sampler_state_roundtrip(bert: tuple[Tokenizer, TokenShards]) -> None:
    tok, shards = bert
    a = MLMBatches(shards, tok, 32, 4, seed=9, whole_word_mask=True)
    for _ in range(5):
        a.next_batch()
    state = json.loads(json.dumps(a.state_dict()))
    b = MLMBatches(shards, tok, 32, 4, seed=9, whole_word_mask=True)
    b.load_state_dict(state)
    for _ in range(3):
        x, y = a.next_batch(), b.next_batch()
        assert all(torch.equal(x[k], y[k]) for k in ("input_ids", "labels", "attention_mask"))


def test_resume_with_other_settings_is_refused(gpt_shards: TokenShards) -> None:
    state = CLMBatches(gpt_shards, 16, 4, seed=5).state_dict()
    with pytest.raises(DataError, match="settings changed .*seed: saved 5, now 6"):
        CLMBatches(gpt_shards, 16, 4, seed=6).load_state_dict(state)


def test_too_few_tokens_is_a_clear_error(gpt_shards: TokenShards) -> None:
    with pytest.raises(DataError, match=r"split 'train' has [\d,]+ tokens, fewer than seq_len \+ 1"):
        CLMBatches(gpt_shards, len(gpt_shards), 1, seed=0)


def test_mlm_batches_wrap_windows_and_mask(bert: tuple[Tokenizer, TokenShards]) -> None:
    tok, shards = bert
    b = MLMBatches(shards, tok, seq_len=64, batch_size=8, seed=0).next_batch()
    ids, labels = b["input_ids"], b["labels"]
    assert ids.shape == labels.shape == b["attention_mask"].shape == (8, 64)
    assert (ids[:, 0] == tok.cls_id).all() and (ids[:, -1] == tok.sep_id).all()
    assert (labels[:, 0] == IGNORE_INDEX).all() and (labels[:, -1] == IGNORE_INDEX).all()
    assert ((labels != IGNORE_INDEX).sum() > 0) and (ids == tok.mask_id).any()
    again = MLMBatches(shards, tok, seq_len=64, batch_size=8, seed=0).next_batch()
    assert torch.equal(again["input_ids"], ids) and torch.equal(again["labels"], labels)


def test_mlm_needs_bert_specials(gpt_shards: TokenShards) -> None:
    tok = train_tokenizer("bpe", FIXTURE, vocab_size=300)
    with pytest.raises(DataError, match="MLM needs a tokenizer with \\[CLS\\], \\[SEP\\] and \\[MASK\\]"):
        MLMBatches(gpt_shards, tok, 32, 2, seed=0)


# --- mask_tokens: invariants exactly, rates statistically -------------------------------------------
SPECIAL = [0, 1, 2, 3]  # pad, cls, sep, mask
MASK, V = 3, 1000


def _ids(B: int = 64, T: int = 512, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, V, (B, T), generator=g)
    ids[:, 0], ids[:, -1] = 1, 2
    ids[:, -40:-1] = 0  # padding
    return ids


def test_mask_tokens_invariants() -> None:
    ids = _ids()
    out, labels = mask_tokens(ids, SPECIAL, MASK, V, torch.Generator().manual_seed(1))
    selected = labels != IGNORE_INDEX
    special = torch.isin(ids, torch.tensor(SPECIAL))
    assert not (selected & special).any()  # special and padding tokens are never selected
    assert torch.equal(labels[selected], ids[selected])  # labels hold the original ids
    assert torch.equal(out[~selected], ids[~selected])  # everything else is untouched
    changed = selected & (out != ids)
    assert not torch.isin(out[changed & (out != MASK)], torch.tensor(SPECIAL)).any()  # random ids are ordinary
    again, labels2 = mask_tokens(ids, SPECIAL, MASK, V, torch.Generator().manual_seed(1))
    assert torch.equal(again, out) and torch.equal(labels2, labels)  # deterministic given the generator
    assert torch.equal(ids, _ids())  # the input is not modified


@pytest.mark.parametrize(("p", "mask_rate", "random_rate"), [(0.15, 0.8, 0.1), (0.3, 0.5, 0.5)])
def test_mask_tokens_rates(p: float, mask_rate: float, random_rate: float) -> None:
    ids = _ids(B=128)
    out, labels = mask_tokens(ids, SPECIAL, MASK, V, torch.Generator().manual_seed(2), p, mask_rate, random_rate)
    ordinary = ~torch.isin(ids, torch.tensor(SPECIAL))
    selected = labels != IGNORE_INDEX
    n, k = int(ordinary.sum()), int(selected.sum())

    def close(observed: float, expected: float, count: int) -> None:
        sigma = (expected * (1 - expected) / count) ** 0.5
        assert abs(observed - expected) < 5 * sigma + 1e-9, (observed, expected)

    close(k / n, p, n)
    masked = (out[selected] == MASK).float().mean().item()
    replaced = ((out[selected] != MASK) & (out[selected] != ids[selected])).float().mean().item()
    close(masked, mask_rate, k)
    close(replaced, random_rate * (1 - 1 / (V - 4)), k)  # a random draw equals the original 1 time in V-4
    kept = 1 - masked - replaced
    close(kept, 1 - mask_rate - random_rate * (1 - 1 / (V - 4)), k)


def test_whole_word_masking_selects_all_pieces_of_a_word() -> None:
    g = torch.Generator().manual_seed(0)
    ids = _ids(B=32, T=256)
    word_starts = torch.rand(ids.shape, generator=g) < 0.4  # ~2.5 pieces per word
    out, labels = mask_tokens(ids, SPECIAL, MASK, V, torch.Generator().manual_seed(3), word_starts=word_starts)
    selected = labels != IGNORE_INDEX
    special = torch.isin(ids, torch.tensor(SPECIAL))
    starts = word_starts | special
    for b in range(ids.shape[0]):
        words = torch.cumsum(starts[b].long(), 0)
        for w in words.unique():
            members = (words == w) & ~special[b]
            if members.any():
                picked = selected[b][members]
                assert picked.all() or not picked.any()  # all pieces or none
    ordinary = int((~special).sum())
    assert 0.10 < int(selected.sum()) / ordinary < 0.20


def test_wordpiece_continuations_drive_whole_word_masking(bert: tuple[Tokenizer, TokenShards]) -> None:
    tok, shards = bert
    cont = np.array(tok.continuation_mask())
    assert cont.any() and all(tok.id_to_token(i).startswith("##") for i in np.flatnonzero(cont))
    b = MLMBatches(shards, tok, 64, 16, seed=4, whole_word_mask=True).next_batch()
    ids, labels = b["input_ids"], b["labels"]
    selected = labels != IGNORE_INDEX
    original = torch.where(selected, labels, ids)
    for row_orig, row_sel in zip(original, selected):
        for t in range(2, len(row_orig) - 1):
            if cont[row_orig[t]] and not tok.id_to_token(int(row_orig[t - 1])).startswith("["):
                assert row_sel[t] == row_sel[t - 1]  # a ## piece shares the fate of the piece before it
