"""`lmforge predict`: one JSON object per input row, in input order, from a fine-tuned model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lmforge.cli.evaluate import add_task_arguments, predict_all, prepare, progress_bar

EXAMPLES = """examples:
  lmforge predict runs/sst2 --data reviews.tsv --out predictions.jsonl     {"row", "label", "probs"}
  lmforge predict runs/sts --data pairs.csv --out scores.jsonl             {"row", "score"}
  lmforge predict runs/ner --data sentences.conll --out tags.jsonl         {"row", "tags"} (one per word)
  lmforge predict runs/mt --data sources.txt --out translations.jsonl      {"row", "text"}
A label column is not needed. Rows that cannot be predicted (empty text) are written with "skipped".
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="predictions of a fine-tuned model, one JSON line per input row",
        description="Run MODEL over every row of FILE and write one JSON object per row to OUT, in input order.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_task_arguments(p)
    p.add_argument("--out", required=True, metavar="FILE.jsonl", help="where the predictions go")
    p.add_argument("--json", action="store_true", help="print a summary as one JSON object (no progress bar)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from lmforge.checkpoint.io import write_text_atomic
    from lmforge.errors import UsageError

    out = Path(args.out)
    if out.is_dir():
        raise UsageError(f"--out {out}: is a directory; give a file name such as {out / 'predictions.jsonl'}")
    if args.task == "lm":
        raise UsageError("predict writes task predictions; for a language model use `lmforge generate`")
    model, tokenizer, settings, data, encoded = prepare(args, with_labels=False)
    bar = progress_bar(len(encoded), "predict", not args.json)
    records = predict_all(args, model, tokenizer, data, encoded, bar)
    if bar is not None:
        bar.close()
    by_row = dict(zip(encoded.source_rows, records))
    lines = []
    for row in range(len(data)):
        record = by_row.get(row)
        lines.append(json.dumps({"row": row, **record} if record else {"row": row, "skipped": "empty text"}))
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, "\n".join(lines) + "\n")
    summary = {"out": str(out), "rows": len(data), "predicted": len(records), "skipped_empty": encoded.skipped_empty}
    summary["truncated"] = encoded.truncated
    print(json.dumps(summary) if args.json else f"wrote {len(lines)} rows to {out} ({encoded.skipped_empty} skipped)")
    return 0
