"""The one Tokenizer type: a thin, typed wrapper over a `tokenizers.Tokenizer` (kept as `.backend`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from tokenizers import Tokenizer as BackendTokenizer

from lmforge.errors import DataError

Kind = Literal["char", "bpe", "wordpiece"]

# Special-token spellings we recognise, most specific first (ours, GPT-2, BERT, sentencepiece-style).
_SPECIAL_CANDIDATES: dict[str, tuple[str, ...]] = {
    "eos": ("<|endoftext|>", "</s>", "<eos>"),
    "bos": ("<|endoftext|>", "<s>", "<bos>"),
    "pad": ("[PAD]", "<pad>", "<|pad|>"),
    "unk": ("[UNK]", "<unk>", "<|unk|>"),
    "mask": ("[MASK]", "<mask>"),
    "cls": ("[CLS]", "<cls>"),
    "sep": ("[SEP]", "<sep>"),
}


class TokenizerError(DataError):
    """A tokenizer file or directory cannot be read, or does not fit the data it is used with."""


class Tokenizer:
    """Text <-> token ids for one of three kinds: char, byte-level BPE (GPT) or WordPiece (BERT).

    Everything runs in the Rust `tokenizers` library; this class fixes the API the rest of lmforge uses
    and records which ids play which special role.
    """

    def __init__(self, backend: BackendTokenizer, kind: Kind | None = None) -> None:
        # A tokenizer.json may carry truncation/padding (the MiniLM one pads to 128): callers decide lengths.
        backend.no_truncation()
        backend.no_padding()
        self.backend = backend
        model = json.loads(backend.to_str())["model"]  # parsed once: a 50k-entry vocab takes ~50 ms
        self.kind: Kind = kind or _kind_of(model)
        self._hash: tuple[int, str] | None = None
        for role, names in _SPECIAL_CANDIDATES.items():
            setattr(self, f"{role}_id", self._first_id(names))
        if self.kind == "wordpiece":
            self.eos_id = self.bos_id = None  # BERT separates documents with [SEP]; it has no EOS/BOS of its own
        self._continuation_prefix = (
            (model.get("continuing_subword_prefix") or "##") if self.kind == "wordpiece" else None
        )

    def _first_id(self, names: tuple[str, ...]) -> int | None:
        for name in names:
            i = self.backend.token_to_id(name)
            if i is not None:
                return i
        return None

    # -- sizes and special ids -----------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def special_ids(self) -> list[int]:
        """Ids of every special token (added tokens flagged special), sorted."""
        ids = {i for i, t in self.backend.get_added_tokens_decoder().items() if t.special}
        for role in _SPECIAL_CANDIDATES:
            if (i := getattr(self, f"{role}_id")) is not None:
                ids.add(i)
        return sorted(ids)

    @property
    def doc_separator_id(self) -> int | None:
        """The id written between documents in token shards: EOS for GPT kinds, [SEP] for BERT."""
        return self.eos_id if self.eos_id is not None else self.sep_id

    # -- encoding ------------------------------------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_batch(self, texts: list[str], add_special_tokens: bool = False) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(list(texts), add_special_tokens=add_special_tokens)]

    def encode_pair(self, a: str, b: str | None = None, max_length: int | None = None) -> tuple[list[int], list[int]]:
        """Ids and token_type_ids of `[CLS] a [SEP] b [SEP]` (BERT), or `a <eos> b` for kinds without [CLS].

        Truncation is longest-first: a token is cut from the end of the longer segment until the whole fits
        `max_length` (special tokens included), as Hugging Face's default pair truncation does.
        """
        ids_a = self.encode(a)
        ids_b = self.encode(b) if b is not None else None
        bert = self.cls_id is not None and self.sep_id is not None
        if bert:
            n_special = 3 if ids_b is not None else 2
        else:
            n_special = 1 if ids_b is not None and self.eos_id is not None else 0
        if max_length is not None:
            budget = max_length - n_special
            if budget < 0:
                raise TokenizerError(f"max_length={max_length} leaves no room for the {n_special} special tokens")
            if ids_b is None:
                ids_a = ids_a[:budget]
            else:
                while len(ids_a) + len(ids_b) > budget:
                    if len(ids_a) > len(ids_b):
                        ids_a.pop()
                    else:
                        ids_b.pop()
        if bert:
            ids = [self.cls_id, *ids_a, self.sep_id]
            types = [0] * len(ids)
            if ids_b is not None:
                ids += [*ids_b, self.sep_id]
                types += [1] * (len(ids_b) + 1)
            return ids, types  # type: ignore[return-value]
        ids, types = list(ids_a), [0] * len(ids_a)
        if ids_b is not None:
            middle = [self.eos_id] if self.eos_id is not None else []
            ids += [*middle, *ids_b]
            types += [0] * len(middle) + [1] * len(ids_b)
        return ids, types

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        return self.backend.id_to_token(i)

    def continuation_mask(self) -> list[bool]:
        """Per id: True when the token continues the previous word (WordPiece `##x`); used by whole-word masking."""
        prefix = self._continuation_prefix
        if not prefix:
            return [False] * self.vocab_size
        return [(t := self.backend.id_to_token(i)) is not None and t.startswith(prefix) for i in range(self.vocab_size)]

    # -- persistence ---------------------------------------------------------------------------------
    def to_json(self) -> str:
        return self.backend.to_str()

    def save(self, path: str | Path) -> Path:
        """Write tokenizer.json into directory `path`, or to `path` itself when it ends in .json; atomic."""
        path = Path(path)
        target = path if path.suffix == ".json" else path / "tokenizer.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        tmp.replace(target)
        return target

    def hash(self) -> str:
        """A stable content hash (vocab, merges, normalizer, specials) for shard meta; 16 hex digits."""
        size = self.vocab_size  # cached per vocabulary size: adding tokens to .backend invalidates it
        if self._hash is None or self._hash[0] != size:
            canonical = json.dumps(json.loads(self.to_json()), sort_keys=True, ensure_ascii=False)
            self._hash = (size, hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16])
        return self._hash[1]

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size})"


def infer_kind(backend: BackendTokenizer) -> Kind:
    """'wordpiece' for a WordPiece model, 'bpe' for BPE, 'char' for our WordLevel character model."""
    return _kind_of(json.loads(backend.to_str())["model"])


def _kind_of(model: dict) -> Kind:
    kinds: dict[str, Kind] = {"WordPiece": "wordpiece", "BPE": "bpe", "WordLevel": "char"}
    model_type = model.get("type")
    if model_type not in kinds:
        raise TokenizerError(f"tokenizer model type {model_type!r} is not supported (use BPE, WordPiece or char)")
    return kinds[model_type]
