"""`lmforge plot`: loss curves (train, val, learning rate) of one or several runs to a PNG."""

from __future__ import annotations

import argparse
from pathlib import Path

from lmforge.errors import UsageError

EXAMPLES = """examples:
  lmforge plot runs/gpt                          writes runs/gpt/loss.png
  lmforge plot runs/a runs/b --out compare.png   two runs on the same axes
  lmforge plot runs/a runs/b --labels fp32 bf16 --out compare.png
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plot",
        help="draw loss curves of runs to PNG",
        description="Draw train and validation loss against step and tokens, and the learning rate, from the "
        "metrics.jsonl of one or more run directories.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (each holds metrics.jsonl)")
    p.add_argument("--out", help="PNG to write (default: RUN/loss.png for one run, loss.png for several)")
    p.add_argument("--labels", nargs="+", help="one legend label per run (default: directory names)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from lmforge.training.logging import METRICS_FILE, plot_runs

    for r in args.runs:
        if not (Path(r) / METRICS_FILE).is_file():
            raise UsageError(f"{r}: no {METRICS_FILE} (not a run directory, or the run logged nothing yet)")
    if args.labels and len(args.labels) != len(args.runs):
        raise UsageError(f"--labels has {len(args.labels)} names for {len(args.runs)} runs")
    out = Path(args.out) if args.out else (Path(args.runs[0]) / "loss.png" if len(args.runs) == 1 else Path("loss.png"))
    plot_runs(args.runs, out, labels=args.labels)
    print(out)
    return 0
