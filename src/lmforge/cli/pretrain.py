"""`lmforge pretrain`: train a GPT (causal LM) or a BERT (masked LM) from text into a run directory."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from lmforge.config import load_config
from lmforge.errors import UsageError

EXAMPLES = """examples:
  lmforge pretrain --config examples/shakespeare_char.yaml --out runs/shakespeare
  lmforge pretrain --model.preset gpt-micro --data corpus/ --out runs/gpt --train.max_steps 2000
  lmforge pretrain --model.preset bert-mini --objective mlm --data notes.txt --out runs/bert
  lmforge pretrain --data ../shared/data/tinyshakespeare/input.txt --tokenizer.kind char --out runs/c
  lmforge pretrain --out runs/gpt --resume --train.max_steps 4000     continue (and extend) a run
  lmforge pretrain --config my.yaml --out runs/x --overwrite            replace what runs/x holds
  lmforge pretrain --model.preset gpt-mini --data corpus/ --out runs/m --train.optimizer muon --train.lr 1e-2
Any config field can be set as --section.field VALUE (see the sections of config.yaml in a run directory).
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="pretrain a GPT (clm) or BERT (mlm) on your text",
        description="Pretrain a model into a run directory: tokenizer (trained on the data unless given), token "
        "shards (prepared on the fly from raw files), checkpoints, metrics.jsonl, TensorBoard events, loss.png and "
        "the final weights. Ctrl-C (or SIGTERM) saves a checkpoint; --resume continues bit-exactly.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="a run config YAML; --section.field flags override it")
    p.add_argument("--objective", choices=["clm", "mlm"], help="clm for GPT-family models, mlm for BERT")
    p.add_argument("--data", nargs="+", metavar="PATH", help="text files, directories, globs, or a prepared dir")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="the run directory")
    p.add_argument("--resume", action="store_true", help="continue from the newest valid checkpoint in RUN_DIR")
    p.add_argument("--overwrite", action="store_true", help="replace the run RUN_DIR holds")
    p.add_argument(
        "--stop-after",
        type=int,
        metavar="N",
        help="stop with a checkpoint after step N (the schedule still spans train.max_steps)",
    )
    p.add_argument("--json", action="store_true", help="print the final summary as one JSON object")
    p.set_defaults(func=run, accepts_overrides=True)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from lmforge.training.pretrain import pretrain

    out = Path(args.out)
    config_path = args.config
    if args.resume and config_path is None and (out / "config.yaml").is_file():
        config_path = out / "config.yaml"  # resuming repeats the saved config, flags still override it
    flags = list(overrides)
    if args.objective:
        flags += ["--objective", args.objective]
    if args.data:
        flags += ["--data.paths", ",".join(args.data)]
    if args.stop_after is not None and args.stop_after < 1:
        raise UsageError(f"--stop-after {args.stop_after}: must be >= 1")
    cfg = load_config(config_path, flags or None)
    result = pretrain(
        cfg, out, resume=args.resume, overwrite=args.overwrite, stop_after=args.stop_after, progress=not args.json
    )
    summary = summarize_result(result)
    if args.json:
        print(json.dumps(summary))
    else:
        print_summary(summary)
    return 130 if result.train.status == "interrupted" else 0


def summarize_result(result: object) -> dict:
    """The end-of-run numbers as a plain dict (what --json prints)."""
    r = result.train  # type: ignore[attr-defined]
    val = result.final_val or {}  # type: ignore[attr-defined]
    out = {
        "run_dir": str(result.run_dir),  # type: ignore[attr-defined]
        "objective": result.cfg.objective,  # type: ignore[attr-defined]
        "status": r.status,
        "start_step": r.start_step,  # > 0: resumed from the checkpoint of this step
        "step": r.step,
        "tokens": r.tokens,
        "wall_s": round(r.wall_s, 2),
        "n_params": result.n_params,  # type: ignore[attr-defined]
        "train_loss": r.losses[-1] if r.losses else None,
        "last_checkpoint": str(r.last_checkpoint) if r.last_checkpoint else None,
    }
    for k, v in val.items():
        if k not in ("step", "split", "tokens"):
            out[f"val_{k}"] = v
    return out


def print_summary(s: dict) -> None:
    run = s["run_dir"]
    lines = [
        f"\n{'finished' if s['status'] == 'completed' else s['status']} at step {s['step']} "
        f"in {s['wall_s']:.1f}s: {s['tokens']:,} tokens, {s['n_params'] / 1e6:.2f}M parameters"
    ]
    if s["start_step"]:
        lines.append(f"  resumed from step {s['start_step']} (its checkpoint); this call ran the steps after it")
    if s.get("train_loss") is not None and math.isfinite(s["train_loss"]):
        lines.append(f"  train loss     {s['train_loss']:.4f}")
    if "val_loss" in s:
        lines.append(f"  val loss       {s['val_loss']:.4f}   perplexity {s['val_perplexity']:.2f}")
    if "val_bits_per_char" in s:
        lines.append(f"  val bits/char  {s['val_bits_per_char']:.4f}")
    if "val_masked_accuracy" in s:
        lines.append(f"  masked-token accuracy {s['val_masked_accuracy']:.2%}")
    lines.append(f"  run directory  {run}  (config.yaml, tokenizer.json, metrics.jsonl, loss.png, checkpoints/)")
    if s["status"] == "completed":
        lines.append("next:")
        if s["objective"] == "mlm":
            lines.append(f"  lmforge fill-mask {run} 'The capital of France is [MASK].'")
        else:
            lines.append(f"  lmforge generate {run} --prompt 'Once upon a time' --do-sample --top-k 40")
        lines.append(f"  lmforge plot {run}")
    else:
        lines.append(f"continue with: lmforge pretrain --out {run} --resume")
    print("\n".join(lines), file=sys.stdout)
