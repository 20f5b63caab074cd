"""`lmforge data prepare|inspect`: tokenize a corpus into token shards; check how a task file reads."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from lmforge.config import load_config
from lmforge.errors import UsageError

EXAMPLES = """examples:
  lmforge data prepare corpus/ --tokenizer runs/tok --out data/shards
  lmforge data prepare 'logs/*.jsonl.gz' --tokenizer runs/tok --out data/shards --data.text_field body
  lmforge data prepare ../shared/data/wikitext2/valid.txt --tokenizer runs/bert-tok --out data/wiki \\
      --data.doc_mode line --data.val_count 100 --workers 2
  lmforge data prepare --tokenizer runs/tok --out data/stdlib          # no files: the Python stdlib
  lmforge data inspect ../shared/data/sst2/train.tsv --task classification --text-column sentence --label-column label
  lmforge data inspect ../shared/data/stsb/sts-train.csv --task regression \\
      --text-column 5 --text-pair-column 6 --label-column 4
  lmforge data inspect ../shared/data/wnut17/wnut17train.conll --task token-classification
  lmforge data inspect ../shared/data/multi30k/train.en --task text-to-text --text-column en --label-column de
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="prepare token shards from raw text; inspect labelled task files",
        description="Turn raw text into memory-mapped token shards for pretraining (prepare), or check how "
        "a labelled task file for fine-tuning is read (inspect).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")

    pr = verbs.add_parser(
        "prepare",
        help="clean, split and tokenize files into token shards",
        description="Read files, directories or globs (.txt/.jsonl/.csv/.tsv/.parquet, .gz of any), clean them "
        "(NFC, control characters, whitespace, exact duplicates, minimum length: each reported with counts), "
        "split documents into train/val by a hash of their text, and tokenize them with a process pool into "
        "OUT/train-*.bin and OUT/val-*.bin plus OUT/meta.json. Re-running on unchanged inputs does nothing; "
        "shards written by another tokenizer are refused (unless --overwrite). Any --data.FIELD VALUE "
        "override is accepted (doc_mode, text_field, val_fraction, val_count, min_doc_chars, dedupe, nfc, "
        "strip_control, normalize_whitespace, token_dtype, shard_tokens).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pr.add_argument("files", nargs="*", help="files, directories or globs (default: the Python standard library)")
    pr.add_argument("--tokenizer", required=True, help="tokenizer.json, a run directory or an HF checkpoint directory")
    pr.add_argument("--out", required=True, help="output directory for meta.json and the shards")
    pr.add_argument("--workers", type=int, help="tokenizer processes (default: data.num_workers = 2)")
    pr.add_argument("--overwrite", action="store_true", help="replace shards written by another tokenizer")
    pr.add_argument("--no-progress", action="store_true", help="no progress bar")
    pr.add_argument("--json", action="store_true", help="print one JSON object (the meta.json summary)")
    pr.set_defaults(func=run_prepare, accepts_overrides=True)

    ins = verbs.add_parser(
        "inspect",
        help="read a labelled task file and summarise it",
        description="Read a task file exactly as `lmforge finetune` will (same column flags) and print the "
        "number of examples, the label set and the first examples. Columns are header names / jsonl keys, "
        "or 0-based indexes for files without a header and for CoNLL.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ins.add_argument("file", help="a .csv/.tsv/.jsonl file, a CoNLL file, or the source side of parallel text files")
    ins.add_argument(
        "--task", required=True, choices=["classification", "regression", "token-classification", "text-to-text"]
    )
    ins.add_argument("--text-column", help="text (or source) column")
    ins.add_argument("--text-pair-column", help="second text column for sentence pairs")
    ins.add_argument("--label-column", help="label / score / tag (or target) column")
    ins.add_argument("--target-file", help="text-to-text: the line-aligned target file")
    ins.add_argument("--delimiter", help="csv/tsv separator: tab, comma or a character (default: sniffed)")
    ins.add_argument("--no-header", action="store_true", default=None, help="the csv/tsv file has no header row")
    ins.add_argument("--show", type=int, default=3, help="examples to print (default 3)")
    ins.add_argument("--json", action="store_true", help="print one JSON object")
    ins.set_defaults(func=run_inspect, accepts_overrides=False)
    p.set_defaults(func=_missing_subcommand(p), accepts_overrides=False)


def _missing_subcommand(parser: argparse.ArgumentParser):  # noqa: ANN202
    def run(args: argparse.Namespace, overrides: list[str]) -> int:
        parser.print_help(sys.stderr)
        raise UsageError("give a subcommand: `lmforge data prepare` or `lmforge data inspect`")

    return run


def run_prepare(args: argparse.Namespace, overrides: list[str]) -> int:
    from lmforge.data import default_corpus_files, prepare_shards
    from lmforge.tokenizers import load_tokenizer

    flags = [f"--data.num_workers={args.workers}"] if args.workers is not None else []
    cfg = load_config(None, [*overrides, *flags]).data
    if args.files:
        files: list[Path] = [Path(f) for f in args.files]
    else:
        files = default_corpus_files()
        cfg = dataclasses.replace(cfg, doc_mode="file")
        print(f"no files given: preparing the Python standard library ({len(files)} files)", file=sys.stderr)
    tok = load_tokenizer(args.tokenizer)
    result = prepare_shards(files, tok, args.out, cfg, progress=not args.no_progress, overwrite=args.overwrite)
    meta = result.meta
    summary = {
        "out": str(result.out_dir),
        "skipped": result.skipped,
        "dtype": meta["dtype"],
        "tokens": result.tokens,
        "documents": {k: v["documents"] for k, v in meta["splits"].items()},
        "input_bytes": meta["input_bytes"],
        "seconds": round(result.seconds, 3),
        "mb_per_s": round(result.mb_per_s, 3),
        "stats": meta.get("stats", {}),
    }
    if args.json:
        print(json.dumps(summary))
        return 0
    if result.skipped:
        print(f"{result.out_dir}: inputs and tokenizer unchanged since the last prepare; nothing to do")
        return 0
    tokens, docs = summary["tokens"], summary["documents"]
    print(
        f"prepared {meta['input_bytes'] / 1e6:.1f} MB in {result.seconds:.1f} s ({result.mb_per_s:.2f} MB/s) -> "
        f"{result.out_dir} ({meta['dtype']})"
    )
    for split in ("train", "val"):
        print(f"  {split:<5} {tokens[split]:>14,} tokens {docs[split]:>10,} documents")
    stats = summary["stats"]
    cleaning = ", ".join(f"{k} {v:,}" for k, v in stats.get("cleaning", {}).items()) or "no changes"
    print(
        f"  read {stats.get('documents_read', 0):,} documents from {stats.get('files', 0)} files; cleaning: {cleaning}"
    )
    for path, n in stats.get("invalid_utf8", {}).items():
        print(f"  {path}: {n:,} invalid UTF-8 sequences replaced by U+FFFD")
    if not docs["val"]:
        print("  note: the validation split is empty (raise data.val_fraction or set data.val_count)")
    return 0


def run_inspect(args: argparse.Namespace, overrides: list[str]) -> int:
    from lmforge.data import read_task_file

    data = read_task_file(
        args.file,
        args.task,
        args.text_column,
        args.label_column,
        args.text_pair_column,
        target_file=args.target_file,
        delimiter=args.delimiter,
        header=False if args.no_header else None,
    )
    examples = []
    for i in range(min(args.show, len(data))):
        ex = {"text": data.texts[i], "label": data.labels[i]}
        if data.text_pairs is not None:
            ex["text_pair"] = data.text_pairs[i]
        if data.label_names is not None:
            ex["label_name"] = (
                [data.label_names[j] for j in data.labels[i]]
                if isinstance(data.labels[i], list)
                else data.label_names[data.labels[i]]
            )
        examples.append(ex)
    result = {
        "file": str(data.path),
        "task": data.task,
        "examples": len(data),
        "labels": data.label_names,
        "columns": data.columns,
        "first": examples,
    }
    if args.task == "regression":
        result["label_mean"] = sum(data.labels) / len(data)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
        return 0
    print(f"{data.path}: {len(data):,} {data.task} examples")
    if data.label_names is not None:
        print(f"  labels ({len(data.label_names)}): {data.label_names}")
    if "label_mean" in result:
        print(f"  mean score: {result['label_mean']:.3f}")
    for ex in examples:
        print(f"  {json.dumps(ex, ensure_ascii=False)[:300]}")
    return 0
