"""`lmforge tokenizer train|encode`: train a char / byte-level BPE / WordPiece tokenizer, encode text with one."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from lmforge.config import load_config
from lmforge.errors import UsageError

EXAMPLES = """examples:
  lmforge tokenizer train --kind bpe --vocab-size 8192 corpus/ --out runs/tok
  lmforge tokenizer train --kind wordpiece --vocab-size 30522 --lowercase wiki/*.txt --out runs/bert-tok
  lmforge tokenizer train --kind char ../shared/data/tinyshakespeare/input.txt --out runs/char-tok
  lmforge tokenizer train --kind bpe --vocab-size 4096 --out runs/tok      # no files: the Python stdlib
  lmforge tokenizer train --kind bpe data.jsonl --data.text_field body --out runs/tok
  lmforge tokenizer encode --tokenizer runs/tok "Hello world" --tokens
  lmforge tokenizer encode --tokenizer path/to/hf-bert-checkpoint "Hello world" --special --json
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tokenizer",
        help="train or apply a tokenizer (char, byte-level BPE, WordPiece)",
        description="Train a tokenizer on your files, or encode text with one (ours, or a Hugging Face "
        "tokenizer.json / vocab.json + merges.txt / vocab.txt directory).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = p.add_subparsers(dest="tokenizer_command", metavar="SUBCOMMAND")

    t = verbs.add_parser(
        "train",
        help="train a tokenizer and save tokenizer.json",
        description="Train a tokenizer on files, directories or globs (.txt/.jsonl/.csv/.tsv/.parquet, .gz). "
        "Without files it trains on the Python standard library. Reading follows the --data.* options "
        "(doc_mode, text_field, cleaning); at most --max-train-bytes of text are used (a hash-chosen sample "
        "of the documents when the corpus is larger), which bounds memory. Any --data.FIELD or "
        "--tokenizer.FIELD VALUE override is accepted.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument("files", nargs="*", help="files, directories or globs (default: the Python standard library)")
    t.add_argument("--kind", choices=["bpe", "wordpiece", "char"], help="tokenizer kind (default: bpe)")
    t.add_argument("--vocab-size", type=int, help="target vocabulary size, special tokens included (default 8192)")
    t.add_argument("--lowercase", action="store_true", default=None, help="WordPiece: lowercase and strip accents")
    t.add_argument("--min-frequency", type=int, help="a merge/piece must occur this often (default 2)")
    t.add_argument("--max-train-bytes", type=int, help="read at most this many bytes of text (default 200 MB)")
    t.add_argument("--out", required=True, help="a directory (gets tokenizer.json) or a .json file path")
    t.add_argument("--json", action="store_true", help="print one JSON object")
    t.set_defaults(func=run_train, accepts_overrides=True)

    e = verbs.add_parser(
        "encode",
        help="print the token ids of text",
        description="Encode each TEXT argument (or each line of stdin) and print its ids.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument("texts", nargs="*", help="texts to encode (default: lines of stdin)")
    e.add_argument("--tokenizer", required=True, help="tokenizer.json, a run directory or an HF checkpoint directory")
    e.add_argument("--special", action="store_true", help="add the special tokens ([CLS] ... [SEP] for BERT)")
    e.add_argument("--tokens", action="store_true", help="also print the token strings")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=run_encode, accepts_overrides=False)
    p.set_defaults(func=_missing_subcommand(p), accepts_overrides=False)


def _missing_subcommand(parser: argparse.ArgumentParser):  # noqa: ANN202
    def run(args: argparse.Namespace, overrides: list[str]) -> int:
        parser.print_help(sys.stderr)
        raise UsageError("give a subcommand: `lmforge tokenizer train` or `lmforge tokenizer encode`")

    return run


def run_train(args: argparse.Namespace, overrides: list[str]) -> int:
    from lmforge.data import default_corpus_files
    from lmforge.tokenizers import train_tokenizer

    explicit = {
        "kind": args.kind,
        "vocab_size": args.vocab_size,
        "lowercase": args.lowercase,
        "min_frequency": args.min_frequency,
        "max_train_bytes": args.max_train_bytes,
    }
    flags = [f"--tokenizer.{k}={v}" for k, v in explicit.items() if v is not None]
    cfg = load_config(None, [*overrides, *flags])
    files: list[Path]
    data_cfg = cfg.data
    if args.files:
        files = [Path(f) for f in args.files]
    else:
        files = default_corpus_files()
        data_cfg = _replace(data_cfg, doc_mode="file")  # one module is one document
        print(f"no files given: training on the Python standard library ({len(files)} files)", file=sys.stderr)
    kind = cfg.tokenizer.kind or "bpe"
    if cfg.tokenizer.lowercase and kind != "wordpiece":
        raise UsageError(f"--lowercase applies to wordpiece tokenizers only, not {kind}")
    t0 = time.perf_counter()
    tok = train_tokenizer(
        kind,
        files,
        vocab_size=cfg.tokenizer.vocab_size,
        lowercase=cfg.tokenizer.lowercase,
        max_bytes=cfg.tokenizer.max_train_bytes,
        min_frequency=cfg.tokenizer.min_frequency,
        data_cfg=data_cfg,
    )
    path = tok.save(args.out)
    result = {
        "path": str(path),
        "kind": tok.kind,
        "vocab_size": tok.vocab_size,
        "hash": tok.hash(),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"trained a {tok.kind} tokenizer with {tok.vocab_size:,} tokens in {result['seconds']:.1f} s -> {path}")
    return 0


def _replace(cfg, **changes):  # noqa: ANN001, ANN202
    import dataclasses

    return dataclasses.replace(cfg, **changes)


def run_encode(args: argparse.Namespace, overrides: list[str]) -> int:
    from lmforge.tokenizers import load_tokenizer

    tok = load_tokenizer(args.tokenizer)
    texts = args.texts or [line.rstrip("\n") for line in sys.stdin]
    rows = []
    for text in texts:
        ids = tok.encode(text, add_special_tokens=args.special)
        row = {"text": text, "ids": ids}
        if args.tokens:
            row["tokens"] = [tok.id_to_token(i) for i in ids]
        rows.append(row)
    if args.json:
        print(json.dumps({"kind": tok.kind, "vocab_size": tok.vocab_size, "results": rows}, ensure_ascii=False))
        return 0
    for row in rows:
        print(" ".join(map(str, row["ids"])))
        if args.tokens:
            print(" ".join(repr(t) for t in row["tokens"]))
    return 0
