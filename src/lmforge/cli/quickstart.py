"""`lmforge quickstart`: a small GPT (or BERT) trained on this machine in about two minutes, start to finish."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from lmforge.errors import UsageError

EXAMPLES = """examples:
  lmforge quickstart                          GPT on the Python standard library, ~2 minutes
  lmforge quickstart --model bert             BERT (masked LM) on the same corpus, then fill-mask
  lmforge quickstart --data my_notes/ --minutes 5
  lmforge quickstart --out runs/demo --overwrite
"""

CODE_PROMPTS = [
    "def fibonacci(n):\n",
    "import os\nimport sys\n\n\ndef main(",
    "class Stack:\n    def __init__(self):\n",
]
CODE_MASKS = ["import [MASK]", "for i in [MASK](10):", "def __init__([MASK], name):"]
CORPUS_BYTES = 5_000_000  # of the standard library: more than two minutes of training can use on 2 cores


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quickstart",
        help="train a small GPT on the Python standard library in ~2 minutes",
        description="Train a tokenizer and a small model on a corpus every machine has (the Python standard "
        "library; or --data), within a time budget, then report validation perplexity and show what the model "
        "learned: three continuations of code prompts (GPT) or fill-mask predictions (BERT). Everything lands in "
        "a normal run directory, usable by every other command. Needs no network.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", choices=["gpt", "bert"], default="gpt", help="gpt (causal LM) or bert (masked LM)")
    p.add_argument("--data", nargs="+", metavar="PATH", help="your own text files or directories instead")
    p.add_argument("--minutes", type=float, default=2.0, help="training time budget (default 2)")
    p.add_argument("--out", help="run directory (default: runs/quickstart-gpt, -2, -3 ... if taken)")
    p.add_argument("--overwrite", action="store_true", help="replace the run --out holds")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object (no progress bar)")
    p.set_defaults(func=run)


def quickstart_config(model: str, data: list[str] | None) -> Any:
    """The run config: a 4 x 128 GPT (or a 4 x 128 BERT) with a 4,096-token BPE (WordPiece) vocabulary."""
    from lmforge.config import load_config

    shape = {"n_layer": 4, "n_head": 4, "d_model": 128, "max_seq_len": 128, "vocab_size": 4096}
    model_cfg = {"family": "bert" if model == "bert" else "gpt2", **shape}
    raw = {
        "objective": "mlm" if model == "bert" else "clm",
        "model": model_cfg,
        "tokenizer": {
            "kind": "wordpiece" if model == "bert" else "bpe",
            "vocab_size": 4096,
            "max_train_bytes": 3_000_000,
        },
        "data": {
            "paths": data or [],
            "doc_mode": "blank_line" if data else "file",  # the stdlib: one module is one document
            "val_fraction": 0.05,
            "seq_len": 128,
            "num_workers": 2,
        },
        # lr 2e-3: small models take large steps (nanoGPT's shakespeare-char uses 1e-3 at batch 64 x 256)
        "train": {
            "batch_size": 16,
            "lr": 2e-3,
            "warmup_steps": 50,
            "min_lr_ratio": 0.1,
            "weight_decay": 0.1,
            "eval_batches": 8,
            "log_every": 10,
            "checkpoint_every": 0,
            "device": "cpu",
            "seed": 1337,
        },
    }
    return load_config(None, raw)


def default_corpus(limit: int = CORPUS_BYTES) -> list[str]:
    """About `limit` bytes of the standard library: every other module (a spread of topics), in path order."""
    from lmforge.data import default_corpus_files

    chosen, total = [], 0
    for f in default_corpus_files()[::2]:
        size = f.stat().st_size
        if total + size <= limit:
            chosen.append(str(f))
            total += size
    return chosen


def _free_run_dir(model: str) -> Path:
    base = Path("runs") / f"quickstart-{model}"
    if not base.exists() or not any(base.iterdir()):
        return base
    n = 2
    while (base.parent / f"{base.name}-{n}").exists():
        n += 1
    return base.parent / f"{base.name}-{n}"


def calibrate_steps(setup: Any, budget_s: float) -> int:
    """How many steps fit in `budget_s`: time a few steps of a throwaway copy of the model, minus evaluations."""
    import torch

    from lmforge.config import head_for_objective
    from lmforge.tasks import build_model, build_task
    from lmforge.training.optim import build_optimizer
    from lmforge.training.pretrain import _batch_sources
    from lmforge.training.step import train_step

    cfg = setup.cfg
    batches, _ = _batch_sources(cfg, setup.data_dir, setup.tokenizer, 0, 1)
    model = build_model(cfg.model, head_for_objective(cfg.objective))
    opt = build_optimizer(model, cfg.train)
    task = build_task(cfg.objective)
    rng_state = torch.get_rng_state()
    b = batches.next_batch()
    for _ in range(2):  # warm up: thread pool, allocator
        train_step(model, [b], opt, task, cfg.train)
    n, start = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - start < 1.5:
        train_step(model, [batches.next_batch()], opt, task, cfg.train)
        n += 1
    torch.set_rng_state(rng_state)
    per_step = (time.perf_counter() - start) / n
    evals = 4 * cfg.train.eval_batches * per_step / 3  # four evaluations; a forward pass is ~1/3 of a step
    return max(5, int((budget_s - evals - 3.0) / per_step))  # 3 s: final save, plot


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from lmforge.training.pretrain import setup_run, train_run

    if args.minutes <= 0:
        raise UsageError(f"--minutes {args.minutes}: must be > 0")
    wall_start = time.perf_counter()
    out = Path(args.out) if args.out else _free_run_dir(args.model)
    data = args.data or default_corpus()
    cfg = quickstart_config(args.model, data)
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr, flush=True))
    source = ", ".join(args.data) if args.data else f"{len(data)} modules of the Python standard library"
    say(f"lmforge quickstart: a {args.model.upper()} on {source}; budget {args.minutes:g} min; run dir {out}")
    say("1/3 tokenizer and token shards ...")
    setup = setup_run(cfg, out, overwrite=args.overwrite, progress=not args.json)
    budget = args.minutes * 60 - (time.perf_counter() - wall_start)
    steps = calibrate_steps(setup, budget)
    train = dataclasses.replace(
        setup.cfg.train,
        max_steps=steps,
        eval_every=-(-steps // 4),  # four evaluations, the last at the end
        warmup_steps=min(setup.cfg.train.warmup_steps, steps // 10),
    )
    setup = dataclasses.replace(setup, cfg=dataclasses.replace(setup.cfg, train=train))
    say(f"2/3 training {steps} steps of {train.batch_size} x {setup.cfg.data.seq_len} tokens ...")
    result = train_run(setup, progress=not args.json)
    say("3/3 samples ...")
    samples = show_samples(result, args.model, bool(args.data))

    val = result.final_val or {}
    summary = {
        "run_dir": str(out),
        "model": args.model,
        "n_params": result.n_params,
        "steps": result.train.step,
        "tokens": result.train.tokens,
        "train_seconds": round(result.train.wall_s, 1),
        "total_seconds": round(time.perf_counter() - wall_start, 1),
        "val_loss": val.get("loss"),
        "val_perplexity": val.get("perplexity"),
        "samples": samples,
    }
    if "masked_accuracy" in val:
        summary["val_masked_accuracy"] = val["masked_accuracy"]
    if args.json:
        print(json.dumps(summary))
        return 0 if result.train.status == "completed" else 130
    print(
        f"\ntrained {result.n_params / 1e6:.2f}M parameters for {result.train.step} steps "
        f"({result.train.tokens:,} tokens) in {result.train.wall_s:.0f}s"
    )
    if val:
        line = f"validation loss {val['loss']:.3f}, perplexity {val['perplexity']:.1f}"
        if "masked_accuracy" in val:
            line += f", masked-token accuracy {val['masked_accuracy']:.1%}"
        print(line)
    for s in samples:
        if args.model == "gpt":
            print(f"\n--- prompt ---\n{s['prompt']}--- continuation ---\n{s['text']}")
        else:
            print(f"\n{s['text']}  ->  " + ", ".join(f"{c['token']} ({c['prob']:.0%})" for c in s["candidates"]))
    print(f"\nrun directory: {out} (model.safetensors, tokenizer.json, config.yaml, metrics.jsonl, loss.png)")
    print("next:")
    if args.model == "gpt":
        print(f"  lmforge generate {out} --prompt 'def main():' --do-sample --top-k 40")
    else:
        print(f"  lmforge fill-mask {out} 'import [MASK]'")
    print(f"  lmforge plot {out}")
    print(f"  lmforge pretrain --config {out}/config.yaml --out runs/longer --train.max_steps 5000")
    return 0 if result.train.status == "completed" else 130


def _prompts_from_data(result: Any, n: int = 3) -> list[str]:
    """The first words of a few validation windows, for a user's own data."""
    from lmforge.data import TokenShards

    tok = result.tokenizer
    split = "val" if "val" in TokenShards(result.run_dir / "data", "train").meta["splits"] else "train"
    shards = TokenShards(result.run_dir / "data", split)
    step = max(1, (len(shards) - 16) // n)
    return [tok.decode(shards.slice(i * step, i * step + 8).tolist(), skip_special_tokens=True) for i in range(n)]


def show_samples(result: Any, model: str, own_data: bool) -> list[dict[str, Any]]:
    """Three continuations (GPT) or fill-mask predictions (BERT), through lmforge.generation."""
    from lmforge.generation import fill_mask, generate_text

    net, tok = result.model.eval(), result.tokenizer
    if model == "gpt":
        prompts = _prompts_from_data(result) if own_data else CODE_PROMPTS
        texts = generate_text(net, tok, prompts, max_new_tokens=64, do_sample=True, temperature=0.8, top_k=40, seed=0)
        return [{"prompt": p, "text": t} for p, t in zip(prompts, texts)]
    mask = tok.id_to_token(tok.mask_id)
    if own_data:
        texts = []
        for p in _prompts_from_data(result):
            words = p.split()
            if len(words) >= 2:
                words[len(words) // 2] = mask
                texts.append(" ".join(words))
    else:
        texts = [t.replace("[MASK]", mask) for t in CODE_MASKS]
    out = []
    for text in texts:
        preds = fill_mask(net, tok, text, top_k=3)
        cands = [{"token": c.token, "prob": round(c.probability, 4)} for c in preds[0].candidates] if preds else []
        out.append({"text": text, "candidates": cands})
    return out


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the shard writer forks after the tokenizer ran
