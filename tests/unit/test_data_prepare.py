"""prepare_shards and TokenShards: exact token streams, splits, no-op reruns, refusal, atomicity, dtypes."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest

import lmforge.data.prepare as prepare_mod
from lmforge.config import DataConfig
from lmforge.data import TokenShards, document_hash, prepare_shards, read_documents, read_meta
from lmforge.errors import DataError
from lmforge.tokenizers import Tokenizer, train_tokenizer
from lmforge.tokenizers.train import char_backend

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "tiny.txt"
CFG = DataConfig(val_fraction=0.2, num_workers=1)


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return train_tokenizer("bpe", FIXTURE, vocab_size=300)


def corpus(tmp_path: Path, n_files: int = 3, n_docs: int = 40) -> list[Path]:
    files = []
    for i in range(n_files):
        f = tmp_path / "in" / f"part{i}.txt"
        f.parent.mkdir(exist_ok=True)
        f.write_text("\n\n".join(f"file {i} document {j}: " + "lorem ipsum " * (j % 7 + 1) for j in range(n_docs)))
        files.append(f)
    return files


def stream(out: Path, split: str) -> list[int]:
    s = TokenShards(out, split)
    return s[0 : len(s)].tolist()


def test_shards_hold_exactly_the_encoded_documents(tmp_path: Path, tok: Tokenizer) -> None:
    files = corpus(tmp_path)
    result = prepare_shards(files, tok, tmp_path / "out", CFG, progress=False)
    assert not result.skipped
    expected: dict[str, list[int]] = {"train": [], "val": []}
    n_docs = {"train": 0, "val": 0}
    for doc in read_documents(files, CFG):
        split = "val" if document_hash(doc) < CFG.val_fraction * 2**64 else "train"
        expected[split] += tok.encode(doc) + [tok.eos_id]
        n_docs[split] += 1
    for split in ("train", "val"):
        assert stream(tmp_path / "out", split) == expected[split]
    meta = read_meta(tmp_path / "out")
    assert meta["dtype"] == "uint16" and meta["separator_id"] == tok.eos_id
    assert {k: v["documents"] for k, v in meta["splits"].items()} == n_docs
    assert meta["tokenizer"] == {"hash": tok.hash(), "kind": "bpe", "vocab_size": tok.vocab_size}
    assert [s["path"] for s in meta["sources"]] == [str(f.resolve()) for f in files]
    assert all(s["size"] == f.stat().st_size and s["mtime_ns"] for s, f in zip(meta["sources"], files))
    assert (tmp_path / "out" / "tokenizer.json").is_file()
    assert 0 < n_docs["val"] < n_docs["train"]
    assert not list((tmp_path / "out").glob(".tmp-*"))


def test_parallel_output_equals_serial(tmp_path: Path, tok: Tokenizer) -> None:
    files = corpus(tmp_path, n_files=4, n_docs=200)
    cfg = dataclasses.replace(CFG, shard_tokens=2048)
    prepare_shards(files, tok, tmp_path / "serial", cfg, progress=False)
    prepare_shards(files, tok, tmp_path / "parallel", dataclasses.replace(cfg, num_workers=2), progress=False)
    for split in ("train", "val"):
        assert stream(tmp_path / "serial", split) == stream(tmp_path / "parallel", split)
    meta = read_meta(tmp_path / "parallel")
    assert len(meta["splits"]["train"]["shards"]) > 2  # rolled over at 2048 tokens
    assert all(s["tokens"] == 2048 for s in meta["splits"]["train"]["shards"][:-1])


def test_split_is_stable_when_files_are_added(tmp_path: Path, tok: Tokenizer) -> None:
    files = corpus(tmp_path, n_files=4)
    prepare_shards(files[:2], tok, tmp_path / "a", CFG, progress=False)
    prepare_shards(files, tok, tmp_path / "b", CFG, progress=False)
    val_a = {*read_documents_of_split(tmp_path / "a", tok, "val")}
    val_b = {*read_documents_of_split(tmp_path / "b", tok, "val")}
    assert val_a and val_a <= val_b  # every held-out document stays held out


def read_documents_of_split(out: Path, tok: Tokenizer, split: str) -> list[str]:
    ids = stream(out, split)
    docs, cur = [], []
    for i in ids:
        if i == tok.eos_id:
            docs.append(tok.decode(cur))
            cur = []
        else:
            cur.append(i)
    return docs


def test_val_count_holds_out_the_smallest_hashes(tmp_path: Path, tok: Tokenizer) -> None:
    files = corpus(tmp_path)
    cfg = dataclasses.replace(CFG, val_count=7)
    result = prepare_shards(files, tok, tmp_path / "out", cfg, progress=False)
    assert result.meta["splits"]["val"]["documents"] == 7
    all_docs = list(read_documents(files, cfg))
    smallest = sorted(all_docs, key=document_hash)[:7]
    assert sorted(read_documents_of_split(tmp_path / "out", tok, "val")) == sorted(smallest)
    assert result.meta["splits"]["train"]["documents"] == len(all_docs) - 7


def test_rerun_is_a_noop_until_an_input_changes(tmp_path: Path, tok: Tokenizer) -> None:
    files = corpus(tmp_path)
    out = tmp_path / "out"
    prepare_shards(files, tok, out, CFG, progress=False)
    shard = out / "train-00000.bin"
    before = shard.stat().st_mtime_ns
    again = prepare_shards(files, tok, out, CFG, progress=False)
    assert again.skipped and shard.stat().st_mtime_ns == before
    changed_cfg = prepare_shards(files, tok, out, dataclasses.replace(CFG, val_fraction=0.3), progress=False)
    assert not changed_cfg.skipped
    with open(files[0], "a") as f:
        f.write("\n\na brand new document")
    redone = prepare_shards(files, tok, out, dataclasses.replace(CFG, val_fraction=0.3), progress=False)
    assert not redone.skipped and redone.meta["documents"] == changed_cfg.meta["documents"] + 1


def test_shards_of_another_tokenizer_are_refused(tmp_path: Path, tok: Tokenizer) -> None:
    files = corpus(tmp_path)
    out = tmp_path / "out"
    prepare_shards(files, tok, out, CFG, progress=False)
    other = train_tokenizer("bpe", FIXTURE, vocab_size=280)
    with pytest.raises(DataError, match=r"out: the shards were written by another tokenizer \(bpe, vocab 300"):
        prepare_shards(files, other, out, CFG, progress=False)
    with pytest.raises(DataError, match="written by another tokenizer"):
        TokenShards(out, "train", tokenizer=other)
    TokenShards(out, "train", tokenizer=tok)  # the right one is accepted
    replaced = prepare_shards(files, other, out, CFG, progress=False, overwrite=True)
    assert replaced.meta["tokenizer"]["hash"] == other.hash()


def test_crash_while_tokenizing_keeps_the_old_complete_set(
    tmp_path: Path, tok: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = corpus(tmp_path)
    out = tmp_path / "out"
    prepare_shards(files, tok, out, CFG, progress=False)
    good = stream(out, "train")
    with open(files[0], "a") as f:
        f.write("\n\nnew text")

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_mod._SplitWriter, "write", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare_shards(files, tok, out, CFG, progress=False)
    assert stream(out, "train") == good  # old meta + old shards, untouched
    assert not list(out.glob(".tmp-*"))


def test_crash_during_commit_is_never_read_as_complete(
    tmp_path: Path, tok: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = corpus(tmp_path)
    out = tmp_path / "out"
    prepare_shards(files, tok, out, CFG, progress=False)
    with open(files[0], "a") as f:
        f.write("\n\nnew text")
    real_save = Tokenizer.save

    def die_before_meta(self, path):  # the shards are renamed in, meta.json is not written yet
        raise KeyboardInterrupt

    monkeypatch.setattr(Tokenizer, "save", die_before_meta)
    with pytest.raises(KeyboardInterrupt):
        prepare_shards(files, tok, out, CFG, progress=False)
    with pytest.raises(DataError, match="no meta.json"):
        TokenShards(out, "train")
    monkeypatch.setattr(Tokenizer, "save", real_save)
    assert not prepare_shards(files, tok, out, CFG, progress=False).skipped
    assert len(TokenShards(out, "train")) > 0


def test_truncated_shard_is_refused(tmp_path: Path, tok: Tokenizer) -> None:
    out = tmp_path / "out"
    prepare_shards(corpus(tmp_path), tok, out, CFG, progress=False)
    shard = out / "train-00000.bin"
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size - 2)
    with pytest.raises(DataError, match=r"train-00000\.bin: shard is incomplete"):
        TokenShards(out, "train")


def test_token_dtype_follows_the_vocab(tmp_path: Path) -> None:
    files = corpus(tmp_path, n_files=1, n_docs=10)
    text = files[0].read_text()
    vocab = {"<|endoftext|>": 0, "<unk>": 1}
    for c in sorted(set(text)):
        vocab[c] = len(vocab)
    for i in range(70_000):  # pad past 65,536 ids with private-use characters
        vocab.setdefault(chr(0xF0000 + i), len(vocab))
    big = Tokenizer(char_backend(vocab), "char")
    assert big.vocab_size > 65_536
    result = prepare_shards(files, big, tmp_path / "big", CFG, progress=False)
    assert result.meta["dtype"] == "uint32"
    assert TokenShards(tmp_path / "big", "train").dtype == np.uint32
    with pytest.raises(DataError, match="data.token_dtype=uint16 cannot hold a vocabulary of 70,"):
        prepare_shards(files, big, tmp_path / "big16", dataclasses.replace(CFG, token_dtype="uint16"), progress=False)


def test_empty_corpus_is_a_clear_error(tmp_path: Path, tok: Tokenizer) -> None:
    f = tmp_path / "blank.txt"
    f.write_text("\n\n  \n\n")
    with pytest.raises(DataError, match=r"blank\.txt: no documents left to tokenize \(3 read, 3 too short"):
        prepare_shards([f], tok, tmp_path / "out", CFG, progress=False)
    assert not (tmp_path / "out" / "meta.json").exists()


def test_shard_slices_cross_files(tmp_path: Path, tok: Tokenizer) -> None:
    out = tmp_path / "out"
    prepare_shards(corpus(tmp_path), tok, out, dataclasses.replace(CFG, shard_tokens=1024), progress=False)
    s = TokenShards(out, "train")
    meta = json.loads((out / "meta.json").read_text())
    files = [out / sh["file"] for sh in meta["splits"]["train"]["shards"]]
    assert len(files) > 1
    whole = np.concatenate([np.fromfile(f, dtype=np.uint16) for f in files]).astype(np.int64)
    assert len(s) == len(whole)
    a = len(np.fromfile(files[0], dtype=np.uint16)) - 5  # a window across the first shard boundary
    assert s[a : a + 10].tolist() == whole[a : a + 10].tolist()
    with pytest.raises(IndexError):
        s.slice(len(s) - 1, len(s) + 1)
    with pytest.raises(DataError, match="no split 'test'"):
        TokenShards(out, "test")


def test_pool_keeps_a_bounded_amount_of_text_in_flight(
    tmp_path: Path, tok: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # memory stays flat because the reader runs at most 2 x num_workers tasks of TASK_BYTES ahead of the writer
    files = corpus(tmp_path, n_files=6, n_docs=100)
    unit_bytes, task_bytes = 512, 2048
    seen = {"read": 0, "written": 0, "max_ahead": 0}
    real_units, real_pool = prepare_mod.iter_units, prepare_mod._run_pool

    def units(*args, **kwargs):
        for u in real_units(files, CFG, unit_bytes=unit_bytes):
            seen["read"] += u.nbytes
            seen["max_ahead"] = max(seen["max_ahead"], seen["read"] - seen["written"])
            yield u

    def pool(files, tokenizer, cfg, sep_id, consume):
        def counting(enc):
            seen["written"] += enc.nbytes
            consume(enc)

        return real_pool(files, tokenizer, cfg, sep_id, counting)

    monkeypatch.setattr(prepare_mod, "iter_units", units)
    monkeypatch.setattr(prepare_mod, "_run_pool", pool)
    monkeypatch.setattr(prepare_mod, "TASK_BYTES", task_bytes)
    result = prepare_shards(files, tok, tmp_path / "out", dataclasses.replace(CFG, num_workers=2), progress=False)
    total = sum(os.path.getsize(f) for f in files)
    assert seen["read"] == seen["written"] == result.stats["bytes_read"] == total
    assert total > 10 * task_bytes
    assert seen["max_ahead"] <= (2 * 2 + 1) * (task_bytes + unit_bytes)


def test_seen_hashes_match_a_python_set() -> None:
    rng = np.random.default_rng(0)
    seen, reference = prepare_mod._SeenHashes(), set()
    previous = np.array([1], dtype=np.uint64)
    for _ in range(40):  # 40 x 5,000 hashes: the recent set is merged into the sorted array several times
        batch = rng.integers(0, 2**64 - 1, size=5_000, dtype=np.uint64, endpoint=True)
        batch[::7] = batch[0]  # duplicates inside one batch
        batch[1::50] = rng.choice(previous, size=len(batch[1::50]))  # hashes seen in an earlier call
        expected = []
        for h in batch.tolist():
            expected.append(h not in reference)
            reference.add(h)
        assert seen.first_seen(batch).tolist() == expected
        previous = batch
    assert len(seen) == len(reference) and len(seen._sorted) > 0
