"""Data: corpus reading and cleaning, token shards, CLM/MLM batches, labelled task files.

docs = read_documents(["corpus/"], DataConfig())                 # cleaned, deduplicated text
prepare_shards(["corpus/"], tok, "data/shards", DataConfig())    # -> meta.json + train/val shards
batches = CLMBatches(TokenShards("data/shards", "train"), seq_len=256, batch_size=16, seed=1)
batch = batches.next_batch()                                     # {"input_ids": (B, T), "labels": (B, T)}
"""

from typing import Any

from lmforge.data.prepare import PreparedData, prepare_shards, token_dtype
from lmforge.data.reading import ReadStats, default_corpus_files, document_hash, expand_paths, read_documents
from lmforge.data.shards import TokenShards, read_meta
from lmforge.data.tasks import TASKS, TaskData, load_labels, read_task_file

_BATCHES = ("IGNORE_INDEX", "CLMBatches", "MLMBatches", "mask_tokens")


def __getattr__(name: str) -> Any:
    # batches import torch (~300 MB, ~1.5 s); `data prepare` and its worker processes never need it
    if name in _BATCHES:
        from lmforge.data import batches

        return getattr(batches, name)
    raise AttributeError(f"module 'lmforge.data' has no attribute {name!r}")


__all__ = [
    "IGNORE_INDEX",
    "TASKS",
    "CLMBatches",
    "MLMBatches",
    "PreparedData",
    "ReadStats",
    "TaskData",
    "TokenShards",
    "default_corpus_files",
    "document_hash",
    "expand_paths",
    "load_labels",
    "mask_tokens",
    "prepare_shards",
    "read_documents",
    "read_meta",
    "read_task_file",
    "token_dtype",
]
