"""Training benchmarks: speed against transformers and a nanoGPT-style reference, and the tinyshakespeare recipe.

    python benchmarks/bench_train.py speed [--shapes tinyshakespeare gpt-mini gpt2-124m minilm-mlm] [--steps 8]
    python benchmarks/bench_train.py ablate [--shapes gpt-mini gpt2-124m]
    python benchmarks/bench_train.py ab [--shapes tinyshakespeare] [--blocks 30] [--keep-freed-memory]
    python benchmarks/bench_train.py shakespeare [--config examples/shakespeare_char.yaml] [--skip-reference]

`speed` times forward + backward + clip + AdamW steps (tokens/s) of lmforge's GPT (and BERT for MLM) and the
references in the same process on the same shapes, in fp32 and under bf16 autocast, interleaving the
implementations over several rounds and keeping each one's best round (the machine is shared: the best
round is the least disturbed one). It also measures the matmul peak that MFU is reported against.

`ablate` times lmforge's own GPT step with its CPU speed-ups (fused linear + cross-entropy, kept freed
memory) switched off, each variant in a fresh process, and prints what each one buys. `ab` alternates lmforge
and the nanoGPT-style reference in blocks of steps and prints the ratio of median step times with a 95%
bootstrap interval, for cells where the two are close.

`shakespeare` runs nanoGPT's documented CPU recipe on the reference model (4 x 128, block 64, batch 12,
2000 iterations, lr 1e-3, evaluation of 20 batches every 250 iterations) and lmforge's recipe from the YAML,
both on the first 90% / last 10% character split, and prints val loss against wall time for both.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

from lmforge.config import ModelConfig, TrainConfig  # noqa: E402
from lmforge.planning.params import summarize  # noqa: E402
from lmforge.tasks import build_model  # noqa: E402
from lmforge.tasks.clm import CLMTask  # noqa: E402
from lmforge.tasks.mlm import MLMTask  # noqa: E402
from lmforge.training.optim import build_optimizer  # noqa: E402
from lmforge.training.step import autocast, train_step  # noqa: E402
from nanogpt_ref import RefConfig, RefGPT  # noqa: E402

SHAPES = {  # name: (n_layer, d_model, n_head, seq_len, batch, vocab)
    "tinyshakespeare": (4, 128, 4, 64, 12, 65),
    "gpt-mini": (6, 384, 6, 256, 8, 8192),
    "gpt2-124m": (12, 768, 12, 512, 2, 50257),
    "minilm-mlm": (6, 384, 12, 128, 16, 30522),
}


def matmul_peak(dtype: torch.dtype, n: int = 2048, seconds: float = 2.0) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    best = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best


# --- one "step" closure per implementation ------------------------------------------------------------------
def lmforge_gpt(L: int, C: int, H: int, T: int, V: int, precision: str) -> tuple[Any, int]:
    # exact GELU, like the nanoGPT reference (the fastest reference in most cells) and lmforge's CPU presets;
    # transformers' GPT2LMHeadModel computes GPT-2's tanh GELU, which costs it a few percent on CPU
    cfg = ModelConfig(family="gpt2", vocab_size=V, n_layer=L, n_head=H, d_model=C, max_seq_len=T, activation="gelu")
    model = build_model(cfg)
    tc = TrainConfig(precision=precision, lr=1e-4)
    opt, task = build_optimizer(model, tc), CLMTask()

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        train_step(model, [{"input_ids": x, "labels": y}], opt, task, tc)

    return step, summarize(cfg, context=T).train_flops_per_token


def lmforge_bert(L: int, C: int, H: int, T: int, V: int, precision: str) -> tuple[Any, int]:
    cfg = ModelConfig(family="bert", vocab_size=V, n_layer=L, n_head=H, d_model=C, max_seq_len=512)
    model = build_model(cfg)
    tc = TrainConfig(precision=precision, lr=1e-4)
    opt, task = build_optimizer(model, tc), MLMTask()

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        train_step(model, [{"input_ids": x, "labels": y, "attention_mask": torch.ones_like(x)}], opt, task, tc)

    return step, summarize(cfg, context=T).train_flops_per_token


def _generic(model: torch.nn.Module, loss_fn: Any, precision: str) -> Any:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        with autocast(precision, "cpu"):
            loss = loss_fn(model, x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    return step


def nanogpt(L: int, C: int, H: int, T: int, V: int, precision: str) -> Any:
    model = RefGPT(RefConfig(vocab_size=V, block_size=T, n_layer=L, n_head=H, n_embd=C))
    return _generic(model, lambda m, x, y: m(x, y)[1], precision)


def hf_gpt2(attn: str) -> Any:
    def make(L: int, C: int, H: int, T: int, V: int, precision: str) -> Any:
        from transformers import GPT2Config, GPT2LMHeadModel

        cfg = GPT2Config(
            vocab_size=V,
            n_positions=T,
            n_embd=C,
            n_layer=L,
            n_head=H,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            attn_implementation=attn,
        )
        model = GPT2LMHeadModel(cfg).train()

        def loss(m: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            logits = m(input_ids=x).logits
            return F.cross_entropy(logits.float().view(-1, V), y.view(-1))

        return _generic(model, loss, precision)

    return make


def hf_bert(L: int, C: int, H: int, T: int, V: int, precision: str) -> Any:
    from transformers import BertConfig, BertForMaskedLM

    cfg = BertConfig(
        vocab_size=V,
        hidden_size=C,
        num_hidden_layers=L,
        num_attention_heads=H,
        intermediate_size=4 * C,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        attn_implementation="sdpa",
    )
    model = BertForMaskedLM(cfg).train()

    def loss(m: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return m(input_ids=x, attention_mask=torch.ones_like(x), labels=y).loss

    return _generic(model, loss, precision)


def batch_for(name: str, B: int, T: int, V: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, V, (B, T), generator=g)
    if name == "minilm-mlm":  # 15% of positions carry a label, as BERT's masking selects
        y = torch.where(torch.rand(B, T, generator=g) < 0.15, x, torch.full_like(x, -100))
        return x, y
    return x, torch.randint(0, V, (B, T), generator=g)


def bench_speed(args: argparse.Namespace) -> list[dict[str, Any]]:
    from lmforge.training.malloc import keep_freed_memory

    with keep_freed_memory(args.keep_freed_memory) as kept:
        print(f"malloc: {'freed memory kept (every implementation)' if kept else 'glibc as it comes'}", flush=True)
        return _bench_speed(args)


def _bench_speed(args: argparse.Namespace) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(
        f"matmul peak (2048^3, best of 2 s): fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, "
        f"bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s, {torch.get_num_threads()} threads",
        flush=True,
    )
    rows = []
    for shape in args.shapes:
        L, C, H, T, B, V = SHAPES[shape]
        if shape == "minilm-mlm":
            impls = {"lmforge": lmforge_bert, "hf-bert-sdpa": hf_bert}
        else:
            impls = {
                "lmforge": lmforge_gpt,
                "hf-gpt2-sdpa": hf_gpt2("sdpa"),
                "hf-gpt2-eager": hf_gpt2("eager"),
                "nanogpt-ref": nanogpt,
            }
        for precision in args.precisions:
            steps, flops = {}, None
            for name, make in impls.items():
                made = make(L, C, H, T, V, precision)
                if name == "lmforge":
                    made, flops = made
                steps[name] = made
            x, y = batch_for(shape, B, T, V, 0)
            best = {name: 0.0 for name in steps}
            for step in steps.values():  # warm up every implementation first
                for _ in range(args.warmup):
                    step(x, y)
            for _ in range(args.rounds):  # interleaved rounds: each implementation sees the same machine load
                for name, step in steps.items():
                    t = time.perf_counter()
                    for _ in range(args.steps):
                        step(x, y)
                    best[name] = max(best[name], args.steps * B * T / (time.perf_counter() - t))
            ref_name = max((n for n in best if n != "lmforge"), key=lambda n: best[n])
            row = {
                "shape": shape,
                "precision": precision,
                "tokens_per_s": {k: round(v, 1) for k, v in best.items()},
                "best_reference": ref_name,
                "ratio": round(best["lmforge"] / best[ref_name], 3),
                "lmforge_mfu": round(best["lmforge"] * flops / peaks[precision], 3),
            }
            rows.append(row)
            cells = "  ".join(f"{k} {v:,.0f}" for k, v in best.items())
            print(
                f"{shape:<16} {precision}  {cells}  -> lmforge / {ref_name} = {row['ratio']:.2f}x, "
                f"MFU {row['lmforge_mfu']:.0%}",
                flush=True,
            )
            del steps
    return rows


def bench_ab(args: argparse.Namespace) -> list[dict[str, Any]]:
    """lmforge against nanoGPT-ref, alternating blocks of `--steps` steps `--blocks` times in one process.

    The ratio of the two medians of per-block step time, and a 95% bootstrap interval over the blocks: an
    estimate of how far apart the two are that says how much of it is noise (within this process: separate
    processes running identical code differ by 1-2% more).
    """
    from lmforge.training.malloc import keep_freed_memory

    with keep_freed_memory(args.keep_freed_memory):
        return _bench_ab(args)


def _bench_ab(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for shape in args.shapes:
        L, C, H, T, B, V = SHAPES[shape]
        steps = {"lmforge": lmforge_gpt(L, C, H, T, V, "fp32")[0], "nanogpt-ref": nanogpt(L, C, H, T, V, "fp32")}
        x, y = batch_for(shape, B, T, V, 0)
        times: dict[str, list[float]] = {name: [] for name in steps}
        for step in steps.values():
            step(x, y)
        for _ in range(args.blocks):
            for name, step in steps.items():
                t = time.perf_counter()
                for _ in range(args.steps):
                    step(x, y)
                times[name].append((time.perf_counter() - t) / args.steps)
        ours, ref = np.array(times["lmforge"]), np.array(times["nanogpt-ref"])
        picks = np.random.default_rng(0).integers(0, len(ours), size=(2000, len(ours)))
        boot = np.median(ref[picks], axis=1) / np.median(ours[picks], axis=1)
        low, high = np.percentile(boot, [2.5, 97.5])
        ratio = float(np.median(ref) / np.median(ours))
        rows.append({"shape": shape, "ratio": round(ratio, 3), "ci95": [round(low, 3), round(high, 3)]})
        print(
            f"{shape:<16} fp32  median step lmforge {np.median(ours) * 1e3:.1f} ms, nanogpt-ref "
            f"{np.median(ref) * 1e3:.1f} ms -> lmforge {ratio:.3f}x (95% interval {low:.3f}-{high:.3f}, "
            f"{args.blocks} blocks of {args.steps} steps)",
            flush=True,
        )
    return rows


ABLATIONS = {  # name: (fused linear + cross-entropy, kept freed memory)
    "lmforge": (True, True),
    "plain-ce": (False, True),
    "malloc-default": (True, False),
    "neither": (False, False),
}


def ablation_child(shape: str, variant: str, steps: int) -> tuple[float, float]:
    """Tokens/s of lmforge's GPT step in this (fresh) process with one ablation (warm-up, then `steps` steps),
    and the process's peak resident memory in MB."""
    import resource

    from lmforge.tasks import losses
    from lmforge.training.malloc import keep_freed_memory

    fused, keep = ABLATIONS[variant]
    if not fused:
        losses.SMALL_LOGITS = 1 << 62  # every logits tensor counts as small: the plain F.cross_entropy path
    L, C, H, T, B, V = SHAPES[shape]
    step, _ = lmforge_gpt(L, C, H, T, V, "fp32")
    x, y = batch_for(shape, B, T, V, 0)
    with keep_freed_memory(keep):
        for _ in range(2):
            step(x, y)
        t = time.perf_counter()
        for _ in range(steps):
            step(x, y)
        tokens_per_s = steps * B * T / (time.perf_counter() - t)
    return tokens_per_s, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def bench_ablate(args: argparse.Namespace) -> list[dict[str, Any]]:
    """lmforge's GPT step with each CPU speed-up switched off, each variant in a fresh process, rounds interleaved.

    fused CE off: the plain F.linear + F.cross_entropy path (tasks/losses.py). Kept memory off: glibc's malloc as
    it comes (training/malloc.py not called), which is why every measurement gets a process of its own.
    """
    import subprocess

    rows = []
    for shape in args.shapes:
        best, peak_mb = {name: 0.0 for name in ABLATIONS}, {name: 0.0 for name in ABLATIONS}
        for _ in range(args.rounds):
            for name in ABLATIONS:
                child = ["--child", name, "--shapes", shape, "--steps", str(args.steps)]
                out = subprocess.run(
                    [sys.executable, __file__, "ablate", *child], capture_output=True, text=True, check=True
                ).stdout
                tokens_per_s, rss = json.loads(out.strip().splitlines()[-1])
                best[name], peak_mb[name] = max(best[name], tokens_per_s), max(peak_mb[name], rss)
        row = {
            "shape": shape,
            "tokens_per_s": {k: round(v, 1) for k, v in best.items()},
            "peak_rss_mb": {k: round(v) for k, v in peak_mb.items()},
            "speedup": {k: round(best["lmforge"] / v, 3) for k, v in best.items() if k != "lmforge"},
        }
        rows.append(row)
        cells = "  ".join(f"{k} {v:,.0f} ({peak_mb[k]:,.0f} MB)" for k, v in best.items())
        gains = ", ".join(f"{v:.2f}x over {k}" for k, v in row["speedup"].items())
        print(f"{shape:<16} fp32 tokens/s (peak RSS)  {cells}  (lmforge {gains})", flush=True)
    return rows


# --- tinyshakespeare: reference recipe vs lmforge recipe ------------------------------------------------------
class ArrayShards:
    """A token array that quacks like lmforge.data.TokenShards (len + slice), for the fixed 90/10 split."""

    def __init__(self, tokens: np.ndarray, split: str) -> None:
        self.tokens, self.split, self.out_dir = tokens, split, Path(f"<tinyshakespeare {split}>")

    def __len__(self) -> int:
        return len(self.tokens)

    def slice(self, start: int, stop: int) -> np.ndarray:
        return self.tokens[start:stop].astype(np.int64)


def full_val_loss(forward: Any, val: np.ndarray, T: int, batch: int = 64) -> float:
    """Mean next-char loss over every non-overlapping window of the val split (the same text for both models)."""
    n = (len(val) - 1) // T
    xs = torch.from_numpy(val[: n * T].astype(np.int64)).view(n, T)
    ys = torch.from_numpy(val[1 : n * T + 1].astype(np.int64)).view(n, T)
    total = 0.0
    with torch.no_grad():
        for i in range(0, n, batch):
            logits = forward(xs[i : i + batch])
            total += F.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]), ys[i : i + batch].reshape(-1), reduction="sum"
            ).item()
    return total / (n * T)


def run_reference(train: np.ndarray, val: np.ndarray, V: int) -> dict[str, Any]:
    """nanoGPT train.py with config/train_shakespeare_char.py and the README's CPU overrides."""
    torch.manual_seed(1337)
    B, T, iters, lr, min_lr, warmup = 12, 64, 2000, 1e-3, 1e-4, 100
    model = RefGPT(RefConfig(vocab_size=V, block_size=T, n_layer=4, n_head=4, n_embd=128, dropout=0.0))
    opt = model.configure_optimizers(0.1, lr, (0.9, 0.99))
    data = {"train": torch.from_numpy(train.astype(np.int64)), "val": torch.from_numpy(val.astype(np.int64))}

    def get_batch(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        d = data[split]
        ix = torch.randint(len(d) - T, (B,))
        return torch.stack([d[i : i + T] for i in ix]), torch.stack([d[i + 1 : i + 1 + T] for i in ix])

    def lr_at(it: int) -> float:
        if it < warmup:
            return lr * (it + 1) / (warmup + 1)
        ratio = (it - warmup) / (iters - warmup)
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * min(ratio, 1.0))) * (lr - min_lr)

    curve, start = [], time.perf_counter()
    for it in range(iters + 1):
        if it % 250 == 0:  # estimate_loss(): eval_iters=20 batches of train and of val
            model.eval()
            with torch.no_grad():
                est = {s: float(torch.stack([model(*get_batch(s))[1] for _ in range(20)]).mean()) for s in data}
            model.train()
            curve.append({"iter": it, "elapsed_s": round(time.perf_counter() - start, 2), "val_loss": est["val"]})
            print(f"  reference iter {it}: val {est['val']:.4f} at {curve[-1]['elapsed_s']:.1f}s", flush=True)
        if it == iters:
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(it)
        x, y = get_batch("train")
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    wall = time.perf_counter() - start
    model.eval()
    return {
        "wall_s": round(wall, 1),
        "curve": curve,
        "final_val_loss_estimate": curve[-1]["val_loss"],
        "full_val_loss": round(full_val_loss(lambda x: model(x)[0], val, T), 4),
    }


def run_lmforge(config: Path, train: np.ndarray, val: np.ndarray, tokenizer: Any) -> dict[str, Any]:
    import dataclasses

    from lmforge.config import load_config
    from lmforge.data import CLMBatches
    from lmforge.tasks.clm import CLMTask
    from lmforge.training.pretrain import resolve_vocab
    from lmforge.training.trainer import Trainer, seed_everything

    cfg = resolve_vocab(load_config(config), tokenizer)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, device="cpu"))
    seed_everything(cfg.train.seed)
    model = build_model(cfg.model)
    d, t = cfg.data, cfg.train
    batches = CLMBatches(ArrayShards(train, "train"), d.seq_len, t.batch_size, t.seed, mode=d.sampling)

    def make_val() -> Any:
        return CLMBatches(ArrayShards(val, "val"), d.seq_len, t.batch_size, t.seed + 1, mode="sequential")

    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(
            t,
            torch.compile(model) if t.compile else model,
            CLMTask(chars_per_token=1.0),
            batches,
            make_val,
            run_dir=run_dir,
            progress=False,
            tensorboard=False,
        )
        start = time.perf_counter()
        result = trainer.fit(handle_signals=False)
        wall = time.perf_counter() - start
        rows = [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    curve = [
        {"step": r["step"], "elapsed_s": r.get("elapsed_s"), "val_loss": round(r["loss"], 4)}
        for r in rows
        if r.get("split") == "val"
    ]
    for c in curve:
        print(f"  lmforge step {c['step']}: val {c['val_loss']:.4f} at {c['elapsed_s']}s", flush=True)
    model.eval()
    with autocast(t.precision, "cpu"):
        full = full_val_loss(lambda x: model(x).logits, val, d.seq_len)
    return {
        "wall_s": round(wall, 1),
        "steps": result.step,
        "tokens": result.tokens,
        "curve": curve,
        "final_val_loss": curve[-1]["val_loss"] if curve else None,
        "full_val_loss": round(full, 4),
    }


def bench_shakespeare(args: argparse.Namespace) -> dict[str, Any]:
    from lmforge.tokenizers import train_tokenizer

    text = (ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    tok = train_tokenizer("char", [text], vocab_size=256)
    ids = np.array(tok.encode(text), dtype=np.uint16)
    n = int(0.9 * len(ids))
    train, val = ids[:n], ids[n:]
    V = tok.vocab_size
    print(
        f"tinyshakespeare: {len(train):,} train / {len(val):,} val chars, vocab {V}, {torch.get_num_threads()} threads",
        flush=True,
    )
    out: dict[str, Any] = {}
    if not args.skip_reference:
        out["reference"] = run_reference(train, val, V)
        print(
            f"reference: {out['reference']['wall_s']}s, val {out['reference']['final_val_loss_estimate']:.4f} "
            f"(full val {out['reference']['full_val_loss']:.4f})",
            flush=True,
        )
    if args.skip_lmforge:
        return out
    out["lmforge"] = run_lmforge(args.config, train, val, tok)
    print(
        f"lmforge: {out['lmforge']['wall_s']}s, val {out['lmforge']['final_val_loss']} "
        f"(full val {out['lmforge']['full_val_loss']:.4f})",
        flush=True,
    )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    s.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    s.add_argument("--steps", type=int, default=5, help="timed steps per round")
    s.add_argument("--rounds", type=int, default=3)
    s.add_argument("--warmup", type=int, default=2)
    s.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="run everything inside training/malloc.py's keep_freed_memory, as lmforge's trainer does",
    )
    a = sub.add_parser("ablate")
    a.add_argument("--shapes", nargs="+", default=["gpt-mini", "gpt2-124m"], choices=list(SHAPES))
    a.add_argument("--steps", type=int, default=3, help="timed steps per round")
    a.add_argument("--rounds", type=int, default=3)
    a.add_argument("--child", choices=list(ABLATIONS), help=argparse.SUPPRESS)  # one measurement, in a subprocess
    b = sub.add_parser("ab")
    b.add_argument("--shapes", nargs="+", default=["tinyshakespeare"], choices=list(SHAPES))
    b.add_argument("--steps", type=int, default=10, help="steps per block")
    b.add_argument("--blocks", type=int, default=30)
    b.add_argument("--keep-freed-memory", action="store_true", help="as in speed")
    q = sub.add_parser("shakespeare")
    q.add_argument("--config", type=Path, default=ROOT / "examples" / "shakespeare_char.yaml")
    q.add_argument("--skip-reference", action="store_true")
    q.add_argument("--skip-lmforge", action="store_true")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    if args.mode == "ablate" and args.child:
        print(json.dumps(ablation_child(args.shapes[0], args.child, args.steps)))
        return
    modes = {"speed": bench_speed, "ab": bench_ab, "ablate": bench_ablate, "shakespeare": bench_shakespeare}
    result = modes[args.mode](args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
