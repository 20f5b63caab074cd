"""Train char, byte-level BPE and WordPiece tokenizers with a bounded memory footprint.

Memory bound: the Rust trainer keeps a count for every distinct pre-token (word) it has seen, and the
upstream `train(files)` path reads whole files into memory, which is what blows up on multi-GB corpora.
We never hand it files: documents are streamed to `train_from_iterator` in batches, and at most
`max_bytes` bytes of text reach it. When the input files are larger than that, each document is kept
with probability max_bytes / total_bytes, decided by a hash of its text, so the sample is spread over
the whole corpus and is the same on every run. Peak memory is therefore set by `max_bytes` (roughly
2-4x it in the worst case of all-distinct words; far less for natural text), not by the corpus size.
Raise `--tokenizer.max_train_bytes` for a larger sample (and more memory), lower it to cap memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as BackendTokenizer

from lmforge.tokenizers.tokenizer import Tokenizer, TokenizerError

EOS = "<|endoftext|>"  # GPT-2's document separator, also ours for char and BPE
CHAR_UNK = "<unk>"
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0..4, in this order
KINDS = ("char", "bpe", "wordpiece")


def train_tokenizer(
    kind: str,
    texts_or_files: Iterable[str] | Iterable[Path] | str | Path,
    vocab_size: int,
    lowercase: bool = False,
    max_bytes: int = 200_000_000,
    min_frequency: int = 2,
    data_cfg: Any = None,
) -> Tokenizer:
    """Train a tokenizer of `kind` ("char", "bpe", "wordpiece") on texts or on files.

    Args:
        texts_or_files: an iterable of document strings, or paths: one str/Path (a file, directory or glob)
            or a list of Path objects.
            Files are read with `lmforge.data.read_documents` under `data_cfg` (a DataConfig; default one).
        vocab_size: target vocabulary size including special tokens (char ignores it: every character seen).
        lowercase: WordPiece only: lowercase and strip accents, as uncased BERT does.
        max_bytes: at most this many bytes of text reach the trainer (see the module docstring).
    """
    if kind not in KINDS:
        raise TokenizerError(f"tokenizer kind {kind!r} is unknown; use one of {list(KINDS)}")
    if kind == "bpe" and vocab_size < 257:
        raise TokenizerError(
            f"vocab_size={vocab_size} is too small for byte-level BPE: it needs >= 257 (256 bytes + EOS)"
        )
    if kind == "wordpiece" and vocab_size < len(BERT_SPECIALS) + 1:
        raise TokenizerError(f"vocab_size={vocab_size} is too small for WordPiece (it has 5 special tokens)")
    docs = _bounded(_documents(texts_or_files, data_cfg, max_bytes), max_bytes)
    if kind == "char":
        return _train_char(docs)
    backend, trainer = (
        _bpe(vocab_size, min_frequency) if kind == "bpe" else _wordpiece(vocab_size, min_frequency, lowercase)
    )
    seen = _Counted(docs)
    backend.train_from_iterator(_batches(seen), trainer=trainer)
    if not seen.n:
        raise TokenizerError("no text to train the tokenizer on: the corpus is empty")
    if kind == "wordpiece":
        _add_bert_post_processor(backend)
    return Tokenizer(backend, kind)  # type: ignore[arg-type]


# --- the three kinds ----------------------------------------------------------------------------------
def _train_char(docs: Iterable[str]) -> Tokenizer:
    chars: set[str] = set()
    n = 0
    for doc in docs:
        chars.update(doc)
        n += 1
    if not n or not chars:
        raise TokenizerError("no text to train the tokenizer on: the corpus is empty")
    vocab = {EOS: 0, CHAR_UNK: 1}
    for c in sorted(chars):
        vocab.setdefault(c, len(vocab))
    return Tokenizer(char_backend(vocab), "char")


def char_backend(vocab: dict[str, int]) -> BackendTokenizer:
    """A character tokenizer: every code point is one token, unknown ones map to <unk>."""
    backend = BackendTokenizer(models.WordLevel(vocab=vocab, unk_token=CHAR_UNK))
    # Oniguruma's (?m) is "dot matches newline": each code point, newlines included, becomes one pre-token.
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"(?m)."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens([EOS, CHAR_UNK])
    return backend


def _bpe(vocab_size: int, min_frequency: int) -> tuple[BackendTokenizer, trainers.Trainer]:
    backend = BackendTokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)  # GPT-2's split regex
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: any UTF-8 text round-trips
        show_progress=False,
    )
    return backend, trainer


def _wordpiece(vocab_size: int, min_frequency: int, lowercase: bool) -> tuple[BackendTokenizer, trainers.Trainer]:
    backend = BackendTokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(BERT_SPECIALS),
        continuing_subword_prefix="##",
        show_progress=False,
    )
    return backend, trainer


def _add_bert_post_processor(backend: BackendTokenizer) -> None:
    cls, sep = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )


# --- streaming the input with a byte budget ---------------------------------------------------------
def _documents(texts_or_files: Any, data_cfg: Any, max_bytes: int) -> Iterator[str]:
    paths = _as_paths(texts_or_files)
    if paths is None:
        yield from texts_or_files
        return
    from lmforge.config import DataConfig
    from lmforge.data.reading import expand_paths, read_documents

    cfg = data_cfg or DataConfig()
    files = expand_paths(paths)
    total = sum(f.stat().st_size for f in files)
    keep = min(1.0, max_bytes / total) if total else 1.0
    threshold = int(keep * 2**64)
    for doc in read_documents(files, cfg):
        # keep a hash-chosen share of documents so the sample covers the whole corpus, the same on every run
        if keep >= 1.0 or int.from_bytes(hashlib.blake2b(doc.encode(), digest_size=8).digest(), "big") < threshold:
            yield doc


def _as_paths(x: Any) -> list[str | Path] | None:
    if isinstance(x, (str, Path)):
        return [x]
    if isinstance(x, (list, tuple)) and x and all(isinstance(p, Path) for p in x):
        return list(x)
    return None


def _bounded(docs: Iterable[str], max_bytes: int) -> Iterator[str]:
    used = 0
    for doc in docs:
        if used >= max_bytes:
            return
        if not isinstance(doc, str):
            raise TokenizerError(f"tokenizer training expects strings, got {type(doc).__name__}")
        used += len(doc.encode("utf-8", "replace"))
        yield doc


class _Counted:
    def __init__(self, docs: Iterable[str]) -> None:
        self.docs, self.n = docs, 0

    def __iter__(self) -> Iterator[str]:
        for d in self.docs:
            self.n += 1
            yield d


def _batches(docs: Iterable[str], size: int = 1000) -> Iterator[list[str]]:
    batch: list[str] = []
    for d in docs:
        batch.append(d)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
