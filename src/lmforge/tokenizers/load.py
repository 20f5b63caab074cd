"""load_tokenizer: ours and Hugging Face's tokenizer files, from a file or a directory."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer as BackendTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

from lmforge.tokenizers.tokenizer import Tokenizer, TokenizerError
from lmforge.tokenizers.train import BERT_SPECIALS, EOS


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a tokenizer from a tokenizer.json file or a directory.

    A directory may hold tokenizer.json (a run directory, an lmforge export, an HF checkpoint), or
    GPT-2's vocab.json + merges.txt, or BERT's vocab.txt (with tokenizer_config.json's do_lower_case).
    """
    path = Path(path)
    if path.is_file():
        if path.suffix == ".json":
            return _from_json(path)
        if path.name == "vocab.txt":
            return _from_bert_vocab(path.parent)
        raise TokenizerError(f"{path}: not a tokenizer file; give a tokenizer.json or a directory holding one")
    if path.is_dir():
        if (path / "tokenizer.json").is_file():
            return _from_json(path / "tokenizer.json")
        if (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
            return _from_gpt2_files(path)
        if (path / "vocab.txt").is_file():
            return _from_bert_vocab(path)
        raise TokenizerError(
            f"{path}: no tokenizer found (looked for tokenizer.json, vocab.json + merges.txt, vocab.txt); "
            "train one with `lmforge tokenizer train`"
        )
    raise TokenizerError(f"{path}: no such file or directory (expected a tokenizer.json or a directory holding one)")


def _from_json(path: Path) -> Tokenizer:
    try:
        backend = BackendTokenizer.from_file(str(path))
    except Exception as e:  # noqa: BLE001 - the Rust side raises a bare Exception with its parse error
        raise TokenizerError(f"{path}: not a valid tokenizer.json ({str(e).splitlines()[0][:200]})") from e
    return Tokenizer(backend)


def _from_gpt2_files(directory: Path) -> Tokenizer:
    try:
        model = models.BPE.from_file(str(directory / "vocab.json"), str(directory / "merges.txt"))
    except Exception as e:  # noqa: BLE001
        raise TokenizerError(f"{directory}: cannot read vocab.json + merges.txt ({e})") from e
    backend = BackendTokenizer(model)
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    if backend.token_to_id(EOS) is not None:
        backend.add_special_tokens([EOS])
    return Tokenizer(backend, "bpe")


def _from_bert_vocab(directory: Path) -> Tokenizer:
    vocab = directory / "vocab.txt"
    lower, strip_accents = True, None  # transformers' BertTokenizer defaults
    cfg_path = directory / "tokenizer_config.json"
    if cfg_path.is_file():
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise TokenizerError(f"{cfg_path}: not valid JSON ({e})") from e
        lower = bool(cfg.get("do_lower_case", lower))
        strip_accents = cfg.get("strip_accents", strip_accents)
    try:
        model = models.WordPiece.from_file(str(vocab), unk_token="[UNK]")
    except Exception as e:  # noqa: BLE001
        raise TokenizerError(f"{vocab}: cannot read the WordPiece vocabulary ({e})") from e
    backend = BackendTokenizer(model)
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=strip_accents, lowercase=lower
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    present = [t for t in BERT_SPECIALS if backend.token_to_id(t) is not None]
    backend.add_special_tokens(present)
    cls, sep = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    if cls is None or sep is None:
        raise TokenizerError(f"{vocab}: a BERT vocabulary needs [CLS] and [SEP] tokens")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return Tokenizer(backend, "wordpiece")
