"""Forward + backward throughput: lmforge's GPT-2 and BERT against transformers' on identical configs.

Both models get the same weights (ours is converted from the HF one), the same batch and the same loss
(cross-entropy in fp32 over every position). Timings interleave the two models step by step, so that
noise from the machine hits both alike; the printed ratio is ours / reference (higher is better).

    python benchmarks/bench_models.py                 # every shape, fp32 and bf16
    python benchmarks/bench_models.py --shapes gpt2-124m --steps 6
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F

warnings.filterwarnings("ignore")

SHAPES = {
    # name: (family, hf kwargs, batch, seq)
    "gpt2-124m": ("gpt2", dict(n_layer=12, n_head=12, n_embd=768, vocab_size=50257, n_positions=1024), 2, 256),
    "gpt-mini": ("gpt2", dict(n_layer=6, n_head=6, n_embd=384, vocab_size=8192, n_positions=256), 8, 256),
    "bert-minilm": (
        "bert",
        dict(num_hidden_layers=6, num_attention_heads=12, hidden_size=384, intermediate_size=1536, vocab_size=30522),
        16,
        128,
    ),
    "bert-base": (
        "bert",
        dict(num_hidden_layers=12, num_attention_heads=12, hidden_size=768, intermediate_size=3072, vocab_size=30522),
        4,
        128,
    ),
}


def build_pair(family: str, kw: dict) -> tuple[torch.nn.Module, torch.nn.Module]:
    from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

    from lmforge.checkpoint.hf import model_from_hf

    torch.manual_seed(0)
    if family == "gpt2":
        # dropout 0 on both sides, as in modern pretraining; bos/eos inside the vocab to keep HF quiet
        hf = GPT2LMHeadModel(
            GPT2Config(
                **kw,
                resid_pdrop=0.0,
                embd_pdrop=0.0,
                attn_pdrop=0.0,
                bos_token_id=0,
                eos_token_id=0,
                attn_implementation="sdpa",
            )
        )
    else:
        hf = BertForMaskedLM(
            BertConfig(**kw, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, attn_implementation="sdpa")
        )
    ours = model_from_hf(hf)
    assert ours.cfg.dropout == 0.0 and ours.cfg.attn_dropout == 0.0
    return hf.train(), ours.train()


def make_step(model: torch.nn.Module, ids: torch.Tensor, precision: str) -> Callable[[], None]:
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: weights stay identical across steps

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(ids).logits
        loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), ids.view(-1))
        loss.backward()
        opt.step()

    return step


def bench(shape: str, precision: str, steps: int) -> dict:
    family, kw, batch, seq = SHAPES[shape]
    hf, ours = build_pair(family, kw)
    ids = torch.randint(0, kw["vocab_size"], (batch, seq))
    runs = {"reference": make_step(hf, ids, precision), "lmforge": make_step(ours, ids, precision)}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for fn in runs.values():  # warm-up (allocator, autocast caches)
        fn()
    for _ in range(steps):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    tok = batch * seq
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "shape": shape,
        "precision": precision,
        "tokens_per_step": tok,
        "reference_tok_s": round(tok / med["reference"], 1),
        "lmforge_tok_s": round(tok / med["lmforge"], 1),
        "ratio": round(med["reference"] / med["lmforge"], 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'shape':<12} {'prec':<5} {'reference tok/s':>16} {'lmforge tok/s':>14} {'ratio':>6}")
    rows = []
    for shape in args.shapes:
        for precision in args.precision:
            r = bench(shape, precision, args.steps)
            rows.append(r)
            print(
                f"{r['shape']:<12} {r['precision']:<5} {r['reference_tok_s']:>16,.0f} {r['lmforge_tok_s']:>14,.0f} "
                f"{r['ratio']:>6.2f}"
            )
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
