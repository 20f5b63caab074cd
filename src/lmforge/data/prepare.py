"""prepare_shards: raw text files -> cleaned, deduplicated, split, tokenized, memory-mapped token shards.

The main process cuts files into ~1 MB units (reading.iter_units, grouped into ~1 MB pool tasks) and a
process pool does the rest of the work: decode, split into documents, clean, hash, encode. The main process
keeps only what must be global: the document hashes (dedupe), the validation split, and the shard writers.
At most 2 x num_workers tasks are in flight, so memory does not grow with the corpus, apart from the hashes
(8 bytes per unique document, 80 MB for 10M documents). A worker's peak is set by the largest single
document it encodes.

Atomicity: everything is written into a temporary directory inside `out_dir`; at the end the old
meta.json is removed, the new shards are renamed into place, and meta.json is written last (temp + rename).
A run killed at any point leaves either the old complete set, or no meta.json (which readers refuse and
which the next prepare redoes), never a meta.json that lists an unfinished shard.
"""

from __future__ import annotations

import heapq
import json
import multiprocessing
import os
import shutil
import sys
import time
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from lmforge.config import DataConfig
from lmforge.data.reading import (
    ReadStats,
    Unit,
    clean_document,
    document_hash,
    expand_paths,
    iter_units,
    unit_documents,
)
from lmforge.data.shards import FORMAT, META, check_tokenizer, read_meta
from lmforge.errors import DataError

VERSION = 1
TASK_BYTES = 1 << 20  # input bytes per pool task; at most 2 x num_workers tasks are in flight
# The DataConfig fields that change what lands in the shards; a change in any of them re-prepares.
_CONTENT_FIELDS = (
    "text_field",
    "doc_mode",
    "val_fraction",
    "val_count",
    "min_doc_chars",
    "dedupe",
    "nfc",
    "strip_control",
    "normalize_whitespace",
    "token_dtype",
    "shard_tokens",
)


@dataclass
class PreparedData:
    """What prepare_shards did: where, how much, and whether it was a no-op."""

    out_dir: Path
    skipped: bool  # True: the inputs were unchanged and nothing was written
    meta: dict[str, Any]
    seconds: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens(self) -> dict[str, int]:
        return {name: s["tokens"] for name, s in self.meta["splits"].items()}

    @property
    def mb_per_s(self) -> float:
        return self.meta["input_bytes"] / 1e6 / self.seconds if self.seconds else 0.0


def token_dtype(vocab_size: int, requested: str = "auto", where: str = "data.token_dtype") -> np.dtype:
    """uint16 when every id fits (vocab <= 65,536), else uint32; a forced uint16 too small for the vocab is an error."""
    if requested == "uint32":
        return np.dtype(np.uint32)
    if vocab_size > 1 << 16:
        if requested == "uint16":
            raise DataError(
                f"{where}=uint16 cannot hold a vocabulary of {vocab_size:,} ids (max 65,536); use uint32 or auto"
            )
        return np.dtype(np.uint32)
    return np.dtype(np.uint16)


def _fingerprint(files: list[Path]) -> list[dict[str, Any]]:
    out = []
    for f in files:
        st = f.stat()
        out.append({"path": str(f.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out


def prepare_shards(
    paths: Any,
    tokenizer: Any,
    out_dir: str | Path,
    cfg: DataConfig,
    progress: bool = True,
    overwrite: bool = False,
) -> PreparedData:
    """Tokenize `paths` into `out_dir` (meta.json + train/val shards); a no-op when nothing changed.

    Args:
        paths: files, directories or globs (see lmforge.data.read_documents).
        tokenizer: an lmforge Tokenizer; its hash is stored, and shards written by another one are refused
            unless `overwrite`.
        progress: show a tqdm bar (MB/s, ETA) on stderr.
    """
    out_dir = Path(out_dir)
    files = expand_paths(paths)
    dtype = token_dtype(tokenizer.vocab_size, cfg.token_dtype)
    sep_id = tokenizer.doc_separator_id
    if sep_id is None:
        raise DataError(f"the {tokenizer.kind} tokenizer has no EOS or [SEP] token to separate documents with")
    sources = _fingerprint(files)
    content_cfg = {k: getattr(cfg, k) for k in _CONTENT_FIELDS}
    if (out_dir / META).is_file():
        old = read_meta(out_dir)
        if not overwrite:
            check_tokenizer(old, tokenizer, out_dir)
        unchanged = old.get("version") == VERSION and old["sources"] == sources and old["config"] == content_cfg
        if unchanged and old["tokenizer"]["hash"] == tokenizer.hash():
            return PreparedData(out_dir, skipped=True, meta=old, stats=old.get("stats", {}))
    elif out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir}: exists and is not a directory; pick another --out")

    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(".tmp-prepare-*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    tmp = out_dir / f".tmp-prepare-{os.getpid()}"
    tmp.mkdir()
    t0 = time.perf_counter()
    try:
        stats, splits = _tokenize_all(files, tokenizer, tmp, cfg, dtype, sep_id, progress)
        seconds = time.perf_counter() - t0
        if not splits["train"]["documents"] and not splits["val"]["documents"]:
            raise DataError(_empty_message(paths, stats))
        if not splits["train"]["documents"]:
            raise DataError(
                f"{out_dir}: every one of the {splits['val']['documents']} documents went to validation; "
                "lower data.val_fraction / data.val_count or add data"
            )
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "tokenizer": {"hash": tokenizer.hash(), "kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size},
            "dtype": dtype.name,
            "separator_id": sep_id,
            "splits": splits,
            "tokens": sum(s["tokens"] for s in splits.values()),
            "documents": sum(s["documents"] for s in splits.values()),
            "input_bytes": sum(s["size"] for s in sources),
            "sources": sources,
            "config": content_cfg,
            "stats": stats.to_dict(),
            "seconds": round(seconds, 3),
        }
        _commit(tmp, out_dir, meta, tokenizer)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return PreparedData(out_dir, skipped=False, meta=meta, seconds=seconds, stats=meta["stats"])


def _empty_message(paths: Any, stats: ReadStats) -> str:
    shown = paths if isinstance(paths, (str, Path)) else ", ".join(map(str, paths))
    c = stats.counts
    return (
        f"{shown}: no documents left to tokenize ({stats.documents_read} read, {c['too_short']} too short, "
        f"{c['duplicates']} duplicates); check the files, data.doc_mode, data.text_field and data.min_doc_chars"
    )


def _commit(tmp: Path, out_dir: Path, meta: dict[str, Any], tokenizer: Any) -> None:
    old_meta = out_dir / META
    if old_meta.exists():
        old_meta.unlink()  # from here until the new meta lands, readers see "not prepared", never a mix
    for old in [*out_dir.glob("train-*.bin"), *out_dir.glob("val-*.bin")]:
        old.unlink()
    for split in meta["splits"].values():
        for shard in split["shards"]:
            (tmp / shard["file"]).replace(out_dir / shard["file"])
    tokenizer.save(out_dir / "tokenizer.json")
    tmp_meta = out_dir / (META + ".tmp")
    tmp_meta.write_text(json.dumps(meta, indent=1), encoding="utf-8")
    tmp_meta.replace(out_dir / META)


# --- the pipeline -----------------------------------------------------------------------------------
class _SplitWriter:
    """Appends token arrays to `NAME-00000.bin`, starting a new shard every `shard_tokens` tokens exactly."""

    def __init__(self, directory: Path, name: str, dtype: np.dtype, shard_tokens: int) -> None:
        self.directory, self.name, self.dtype, self.shard_tokens = directory, name, dtype, shard_tokens
        self.shards: list[dict[str, Any]] = []
        self.documents = 0
        self._file: Any = None
        self._tokens_in_shard = 0

    def write(self, tokens: np.ndarray, documents: int) -> None:
        self.documents += documents
        while len(tokens):
            if self._file is None or self._tokens_in_shard == self.shard_tokens:
                self._roll()
            room = self.shard_tokens - self._tokens_in_shard  # a document may continue in the next shard
            part, tokens = tokens[:room], tokens[room:]
            self._file.write(part.astype(self.dtype, copy=False).tobytes())
            self._tokens_in_shard += len(part)
            self.shards[-1]["tokens"] = self._tokens_in_shard

    def _roll(self) -> None:
        self.close()
        name = f"{self.name}-{len(self.shards):05d}.bin"
        self._file = open(self.directory / name, "wb")  # noqa: SIM115 - closed in close()
        self._tokens_in_shard = 0
        self.shards.append({"file": name, "tokens": 0})

    def close(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None

    def summary(self) -> dict[str, Any]:
        return {"tokens": sum(s["tokens"] for s in self.shards), "documents": self.documents, "shards": self.shards}


class _SeenHashes:
    """The set of document hashes kept so far, at ~8 bytes each (a Python set of ints costs ~70).

    Old hashes live in one sorted uint64 array, new ones in a small set that is merged in when it reaches
    1/8 of the array (a linear merge: amortised O(1) per hash). 10M documents take ~80 MB.
    """

    def __init__(self) -> None:
        self._sorted = np.empty(0, dtype=np.uint64)
        self._recent: set[int] = set()

    def first_seen(self, hashes: np.ndarray) -> np.ndarray:
        """Mask of `hashes` not seen before (in earlier calls or earlier in this array); records them."""
        if len(self._sorted):
            idx = np.searchsorted(self._sorted, hashes).clip(max=len(self._sorted) - 1)
            old = self._sorted[idx] == hashes
        else:
            old = np.zeros(len(hashes), dtype=bool)
        keep = np.empty(len(hashes), dtype=bool)
        recent = self._recent
        for i, h in enumerate(hashes.tolist()):
            keep[i] = not old[i] and h not in recent
            if keep[i]:
                recent.add(h)
        if len(recent) >= max(1 << 16, len(self._sorted) // 8):
            new = np.sort(np.fromiter(recent, dtype=np.uint64, count=len(recent)))
            self._sorted = np.sort(np.concatenate([self._sorted, new]), kind="stable")  # two sorted runs: a merge
            recent.clear()
        return keep

    def __len__(self) -> int:
        return len(self._sorted) + len(self._recent)


@dataclass
class _Encoded:
    """One unit after the worker: tokens of every kept document (each followed by the separator)."""

    path: str
    nbytes: int
    tokens: np.ndarray  # (n_tokens,) uint32
    lengths: np.ndarray  # (n_docs,) int64, separator included
    hashes: list[int]
    bad_utf8: int
    counts: Counter
    n_read: int


_WORKER: dict[str, Any] = {}


def _init_worker(tokenizer_json: str, cfg: DataConfig) -> None:
    # One Rust thread per worker process: the pool already fills the cores, threads would only contend.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from tokenizers import Tokenizer as BackendTokenizer

    _WORKER["backend"] = BackendTokenizer.from_str(tokenizer_json)
    _WORKER["cfg"] = cfg


def _encode_unit(unit: Unit, sep_id: int) -> _Encoded:
    cfg: DataConfig = _WORKER["cfg"]
    raw_docs, bad = unit_documents(unit, cfg)
    counts: Counter = Counter()
    docs, hashes = [], []
    for d in raw_docs:
        text = clean_document(d, cfg, counts)
        if text is not None:
            docs.append(text)
            hashes.append(document_hash(text))
    flat: list[int] = []
    lengths = np.empty(len(docs), dtype=np.int64)
    # encode_batch_fast (tokenizers >= 0.20) skips character offsets, which shards do not store: ~15% faster
    backend = _WORKER["backend"]
    encode = getattr(backend, "encode_batch_fast", None) or backend.encode_batch
    for i, enc in enumerate(encode(docs, add_special_tokens=False)):
        ids = enc.ids
        flat.extend(ids)
        flat.append(sep_id)
        lengths[i] = len(ids) + 1
    tokens = np.array(flat, dtype=np.uint32)
    return _Encoded(unit.path, unit.nbytes, tokens, lengths, hashes, bad, counts, len(raw_docs))


def _tokenize_all(
    files: list[Path], tokenizer: Any, tmp: Path, cfg: DataConfig, dtype: np.dtype, sep_id: int, progress: bool
) -> tuple[ReadStats, dict[str, Any]]:
    stats = ReadStats(files=len(files))
    writers = {name: _SplitWriter(tmp, name, dtype, cfg.shard_tokens) for name in ("train", "val")}
    seen = _SeenHashes()
    val_heap: list[tuple[int, int, np.ndarray]] = []  # count mode: (-hash, order, tokens), the val_count smallest
    threshold = np.uint64(min(int(cfg.val_fraction * 2**64), 2**64 - 1))
    order = 0
    total = sum(f.stat().st_size for f in files)
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="prepare", disable=not progress, file=sys.stderr)

    def consume(enc: _Encoded) -> None:
        nonlocal order
        stats.merge_unit(enc.path, enc.bad_utf8, enc.counts, enc.n_read)
        stats.bytes_read += enc.nbytes
        bar.update(enc.nbytes)
        hashes = np.array(enc.hashes, dtype=np.uint64)
        keep = seen.first_seen(hashes) if cfg.dedupe else np.ones(len(hashes), dtype=bool)
        stats.counts["duplicates"] += int((~keep).sum())
        stats.documents_kept += int(keep.sum())
        if cfg.val_count:
            to_val = np.zeros(len(hashes), dtype=bool)
            ends = np.cumsum(enc.lengths)
            for i in np.flatnonzero(keep):
                h = int(hashes[i])
                if len(val_heap) == cfg.val_count and h >= -val_heap[0][0]:
                    continue  # not among the smallest hashes: it trains
                item = (-h, order, enc.tokens[ends[i] - enc.lengths[i] : ends[i]].copy())
                order += 1
                to_val[i] = True  # waits in the heap until the end
                if len(val_heap) < cfg.val_count:
                    heapq.heappush(val_heap, item)
                else:
                    evicted = heapq.heapreplace(val_heap, item)
                    writers["train"].write(evicted[2], 1)  # pushed out of the smallest-hash set: it trains
            outputs = (("train", keep & ~to_val),)
        else:
            to_val = hashes < threshold
            outputs = (("train", keep & ~to_val), ("val", keep & to_val))
        for name, mask in outputs:
            if mask.all():
                writers[name].write(enc.tokens, len(mask))
            elif mask.any():
                writers[name].write(enc.tokens[np.repeat(mask, enc.lengths)], int(mask.sum()))

    try:
        if cfg.num_workers == 1:
            _init_worker(tokenizer.to_json(), cfg)
            for unit in iter_units(files, cfg):
                consume(_encode_unit(unit, sep_id))
        else:
            _run_pool(files, tokenizer, cfg, sep_id, consume)
        for _, _, tokens in sorted(val_heap, key=lambda item: item[1]):
            writers["val"].write(tokens, 1)
    finally:
        for w in writers.values():
            w.close()
        bar.close()
    return stats, {name: w.summary() for name, w in writers.items()}


def _encode_units(units: list[Unit], sep_id: int) -> list[_Encoded]:
    return [_encode_unit(u, sep_id) for u in units]


def _task_batches(files: list[Path], cfg: DataConfig) -> Iterator[list[Unit]]:
    """Units grouped into tasks of about TASK_BYTES: a corpus of many small files would otherwise pay one
    inter-process round trip per file."""
    batch: list[Unit] = []
    size = 0
    for unit in iter_units(files, cfg):
        batch.append(unit)
        size += unit.nbytes
        if size >= TASK_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _run_pool(files: list[Path], tokenizer: Any, cfg: DataConfig, sep_id: int, consume: Any) -> None:
    # fork starts workers in milliseconds and shares the tokenizer JSON; spawn where fork does not exist.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    max_in_flight = 2 * cfg.num_workers  # bounded: this is what keeps memory flat
    with ProcessPoolExecutor(
        cfg.num_workers, mp_context=ctx, initializer=_init_worker, initargs=(tokenizer.to_json(), cfg)
    ) as pool:
        pending: deque[Future] = deque()
        for batch in _task_batches(files, cfg):
            pending.append(pool.submit(_encode_units, batch, sep_id))
            if len(pending) >= max_in_flight:
                for enc in pending.popleft().result():
                    consume(enc)
        while pending:
            for enc in pending.popleft().result():
                consume(enc)


__all__ = ["PreparedData", "prepare_shards", "token_dtype"]
