"""The read side of prepared data: meta.json plus memory-mapped token shards, one 1-D stream per split.

Layout of a prepared directory::

    meta.json            written last: its presence means every shard it lists is complete
    tokenizer.json       the tokenizer that wrote the shards
    train-00000.bin ...  raw little-endian uint16/uint32 token ids; documents end with the separator id
    val-00000.bin ...    (EOS for GPT kinds, [SEP] for BERT)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.errors import DataError

META = "meta.json"
FORMAT = "lmforge-token-shards"
SPLITS = ("train", "val")


def read_meta(out_dir: str | Path) -> dict[str, Any]:
    """The meta.json of a prepared directory, or DataError saying how to make one."""
    path = Path(out_dir) / META
    if not path.is_file():
        raise DataError(
            f"{out_dir}: no {META}: not a prepared shard directory (or its `lmforge data prepare` was interrupted); "
            f"run `lmforge data prepare FILES --out {out_dir}`"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e}); delete the directory and prepare again") from e
    if meta.get("format") != FORMAT:
        raise DataError(f"{path}: not an lmforge shard index (format={meta.get('format')!r})")
    return meta


def check_tokenizer(meta: dict[str, Any], tokenizer: Any, where: str | Path) -> None:
    """Refuse shards that another tokenizer wrote: their ids would mean other tokens."""
    saved = meta["tokenizer"]
    if saved["hash"] != tokenizer.hash():
        raise DataError(
            f"{where}: the shards were written by another tokenizer ({saved['kind']}, vocab {saved['vocab_size']}, "
            f"hash {saved['hash']}); this one is {tokenizer.kind}, vocab {tokenizer.vocab_size}, "
            f"hash {tokenizer.hash()}. "
            "Use the tokenizer.json saved beside the shards, or prepare the data again into a new directory"
        )


class TokenShards:
    """One split of a prepared directory as a single memory-mapped token stream.

    `len(shards)` is the number of tokens; `shards[a:b]` (or `shards.slice(a, b)`) copies a window out,
    crossing shard files when it must. Documents are separated by `separator_id`.
    """

    def __init__(self, out_dir: str | Path, split: str = "train", tokenizer: Any = None) -> None:
        self.out_dir = Path(out_dir)
        self.split = split
        self.meta = read_meta(self.out_dir)
        if split not in self.meta["splits"]:
            raise DataError(f"{self.out_dir}: no split {split!r}; it has {sorted(self.meta['splits'])}")
        if tokenizer is not None:
            check_tokenizer(self.meta, tokenizer, self.out_dir)
        self.dtype = np.dtype(self.meta["dtype"])
        self.separator_id: int | None = self.meta.get("separator_id")
        info = self.meta["splits"][split]
        self.documents: int = info["documents"]
        self._maps: list[np.ndarray] = []
        for shard in info["shards"]:
            path = self.out_dir / shard["file"]
            expected = shard["tokens"] * self.dtype.itemsize
            if not path.is_file() or path.stat().st_size != expected:
                have = path.stat().st_size if path.is_file() else "missing"
                raise DataError(
                    f"{path}: shard is incomplete ({have} bytes, meta.json expects {expected}); prepare the data again"
                )
            self._maps.append(np.memmap(path, dtype=self.dtype, mode="r"))
        sizes = [len(m) for m in self._maps]
        self._offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]) if sizes else np.zeros(1, np.int64)
        self._len = int(self._offsets[-1])

    def __len__(self) -> int:
        return self._len

    def slice(self, start: int, stop: int) -> np.ndarray:
        """Tokens [start, stop) as a new int64 array."""
        if not 0 <= start <= stop <= self._len:
            raise IndexError(f"window [{start}, {stop}) is outside the {self._len} tokens of split {self.split!r}")
        i = int(np.searchsorted(self._offsets, start, side="right")) - 1
        parts = []
        while start < stop:
            base = int(self._offsets[i])
            end = min(stop, int(self._offsets[i + 1]))
            parts.append(self._maps[i][start - base : end - base])
            start, i = end, i + 1
        if not parts:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate(parts).astype(np.int64)

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("TokenShards supports contiguous slices only: shards[a:b]")
        start, stop, _ = key.indices(self._len)
        return self.slice(start, max(start, stop))

    def __repr__(self) -> str:
        return f"TokenShards({str(self.out_dir)!r}, {self.split!r}: {self._len:,} tokens, {self.documents:,} documents)"
