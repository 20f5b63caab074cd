"""Decode throughput: lmforge.generate against transformers' generate on identical converted weights.

Greedy decoding of `--new-tokens` tokens after a `--prompt-len`-token random prompt, at each batch size
and dtype. Ours is converted from the transformers model (model_from_hf), so both compute the same
function; the greedy tokens are checked equal in fp32. Runs of the two libraries interleave, so noise
from the machine hits both alike, and the best of `--reps` runs is kept.

  tokens/s   batch * new tokens / wall time of one generate call (prefill included)
  TTFT       wall time of generate(max_new_tokens=1): prompt in, first token out
  peak MB    peak resident memory above the loaded model during one full generate call, measured in a
             fresh child process (Linux: /proc/self/clear_refs resets VmHWM), so allocator reuse
             between runs cannot hide it

`--quantize int8` adds torch.ao.quantization.quantize_dynamic (int8 weights for every nn.Linear) on our
fp32 model: its speedup over fp32, and the change in perplexity on `--ppl-text` (tokens are the text's
bytes; with random weights only the *change* means something, with `--ppl-model RUN_DIR` a trained model
and its tokenizer are used instead).

    python benchmarks/bench_generate.py                                  # both shapes, batch 1 and 8, fp32 and bf16
    python benchmarks/bench_generate.py --shapes gpt-mini --dtypes fp32 --reps 2
    python benchmarks/bench_generate.py --shapes gpt-mini --quantize int8 --dtypes fp32
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")

SHAPES = {
    # n_positions 512 for gpt-mini (its preset has 256): prompt 32 + 256 new tokens must fit
    "gpt-mini": dict(n_layer=6, n_head=6, n_embd=384, vocab_size=8192, n_positions=512),
    "gpt2-124m": dict(n_layer=12, n_head=12, n_embd=768, vocab_size=50257, n_positions=1024),
    # gpt-mini's 6 layers (the same kernels per step) at negligible arithmetic: isolates per-token overhead
    "overhead": dict(n_layer=6, n_head=2, n_embd=32, vocab_size=256, n_positions=512),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def build_pair(shape: str, dtype: torch.dtype) -> tuple[torch.nn.Module, torch.nn.Module]:
    from transformers import GPT2Config, GPT2LMHeadModel

    from lmforge.checkpoint.hf import model_from_hf

    torch.manual_seed(0)
    cfg = GPT2Config(**SHAPES[shape], bos_token_id=0, eos_token_id=0, attn_implementation="sdpa")
    hf = GPT2LMHeadModel(cfg).eval()
    hf.generation_config.eos_token_id = None  # decode all new tokens, as ours does without eos_token_id
    hf.generation_config.bos_token_id = None
    ours = model_from_hf(hf)
    return hf.to(dtype), ours.to(dtype)


def hf_generate(hf: torch.nn.Module, ids: torch.Tensor, n: int) -> torch.Tensor:
    with torch.inference_mode():
        out = hf.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=n,
            min_new_tokens=0,
            do_sample=False,
            num_beams=1,
            pad_token_id=0,
            eos_token_id=None,
        )
    return out[:, ids.shape[1] :]


def ours_generate(model: torch.nn.Module, ids: torch.Tensor, n: int) -> torch.Tensor:
    from lmforge.generation import generate

    return generate(model, ids, max_new_tokens=n)


RUNNERS = {"hf": hf_generate, "ours": ours_generate}


def timed(fn, *args) -> float:  # noqa: ANN001, ANN002
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


# --- peak memory, one child process per measurement --------------------------------------------------------
def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def child_memory(impl: str, shape: str, dtype: str, batch: int, prompt_len: int, new: int) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    from lmforge.checkpoint.hf import model_config_from_hf
    from lmforge.tasks import build_model

    torch.manual_seed(0)  # weights do not matter for memory: build only the measured model, never both
    cfg = GPT2Config(**SHAPES[shape], bos_token_id=0, eos_token_id=0, attn_implementation="sdpa")
    if impl == "hf":
        model = GPT2LMHeadModel(cfg).eval()
        model.generation_config.eos_token_id = None
    else:
        model = build_model(model_config_from_hf({**cfg.to_dict(), "architectures": ["GPT2LMHeadModel"]})).eval()
    model.to(DTYPES[dtype])
    gc.collect()
    ids = torch.randint(1, SHAPES[shape]["vocab_size"], (batch, prompt_len), generator=torch.Generator().manual_seed(0))
    RUNNERS[impl](model, ids, 2)  # first-call allocations (thread pools, kernels) are not the cache
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS counter (VmHWM) to the current RSS
    before = _status_kb("VmRSS")
    RUNNERS[impl](model, ids, new)
    print(json.dumps({"peak_mb": (_status_kb("VmHWM") - before) / 1024}))


def peak_memory(impl: str, shape: str, dtype: str, batch: int, prompt_len: int, new: int) -> float | None:
    if not Path("/proc/self/clear_refs").exists():
        return None
    cmd = [sys.executable, __file__, "--child-memory", impl, shape, dtype, str(batch), str(prompt_len), str(new)]
    # a fixed, low mmap threshold: every tensor buffer is its own mapping and goes back to the OS when freed,
    # so RSS tracks live tensors instead of what glibc's heap happens to keep
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    r = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if r.returncode != 0:
        print(f"  (memory child failed: {r.stderr.strip().splitlines()[-1:]})", file=sys.stderr)
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])["peak_mb"]


# --- int8 dynamic quantization ------------------------------------------------------------------------
def perplexity(model: torch.nn.Module, ids: torch.Tensor, window: int) -> float:
    """exp(mean next-token NLL) over non-overlapping windows of `ids` (1-D)."""
    nll, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(ids) - 1, window):
            chunk = ids[start : start + window + 1]
            if len(chunk) < 2:
                break
            logits = model(chunk[None, :-1]).logits[0].float()
            nll += float(torch.nn.functional.cross_entropy(logits, chunk[1:], reduction="sum"))
            count += len(chunk) - 1
    return math.exp(nll / count)


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    from lmforge.generation.quantize import quantize_int8 as quantize  # what `lmforge generate --quantize int8` runs

    return quantize(model)


def bench_int8(args: argparse.Namespace, shape: str, rows: list[dict]) -> None:
    import copy

    if args.ppl_model:
        import lmforge

        ours = lmforge.load_model(args.ppl_model)
        text = Path(args.ppl_text).read_text(encoding="utf-8")[: args.ppl_chars]
        ids = torch.tensor(lmforge.load_tokenizer(args.ppl_model).encode(text))
        label = f"{args.ppl_model}"
    else:
        _, ours = build_pair(shape, torch.float32)
        text = Path(args.ppl_text).read_text(encoding="utf-8")[: args.ppl_chars]
        ids = torch.tensor(list(text.encode("utf-8")))
        label = f"{shape} (random weights)"
    q = quantize_int8(copy.deepcopy(ours))
    window = min(256, ours.cfg.max_seq_len)
    ppl32, ppl8 = perplexity(ours, ids, window), perplexity(q, ids, window)
    for batch in args.batches:
        prompt = torch.randint(
            1, ours.cfg.vocab_size, (batch, args.prompt_len), generator=torch.Generator().manual_seed(0)
        )
        n = min(args.new_tokens, ours.cfg.max_seq_len - args.prompt_len)
        ours_generate(ours, prompt, 4)
        ours_generate(q, prompt, 4)
        t32, t8 = [], []
        for _ in range(args.reps):
            t32.append(timed(ours_generate, ours, prompt, n))
            t8.append(timed(ours_generate, q, prompt, n))
        row = {
            "bench": "int8",
            "model": label,
            "batch": batch,
            "new_tokens": n,
            "fp32_tok_s": batch * n / min(t32),
            "int8_tok_s": batch * n / min(t8),
            "speedup": min(t32) / min(t8),
            "ppl_fp32": ppl32,
            "ppl_int8": ppl8,
            "ppl_change_pct": 100 * (ppl8 / ppl32 - 1),
            "ppl_tokens": len(ids),
        }
        rows.append(row)
        print(
            f"int8 {label:<28} b={batch}  fp32 {row['fp32_tok_s']:8.1f} tok/s  int8 {row['int8_tok_s']:8.1f} tok/s  "
            f"speedup {row['speedup']:.2f}x  ppl {ppl32:.3f} -> {ppl8:.3f} ({row['ppl_change_pct']:+.2f}%)",
            flush=True,
        )


# --- main ----------------------------------------------------------------------------------------------
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=["gpt-mini", "gpt2-124m"], choices=list(SHAPES))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=list(DTYPES))
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--reps", type=int, default=2, help="timed runs per library; the best counts")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    p.add_argument("--quantize", choices=["int8"], help="also benchmark int8 dynamic quantization (ours, fp32 base)")
    p.add_argument(
        "--ppl-text", default=str(Path(__file__).resolve().parents[1].parent / "shared/data/wikitext2/valid.txt")
    )
    p.add_argument("--ppl-chars", type=int, default=20_000, help="characters of --ppl-text to score")
    p.add_argument("--ppl-model", help="a trained run dir / export for the int8 perplexity (default: random weights)")
    p.add_argument("--skip-decode", action="store_true", help="only the int8 benchmark")
    p.add_argument("--json", type=Path, help="also write every row to this JSON file")
    p.add_argument("--child-memory", nargs=6, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_memory:
        impl, shape, dtype, batch, plen, new = args.child_memory
        child_memory(impl, shape, dtype, int(batch), int(plen), int(new))
        return

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; greedy, prompt {args.prompt_len}, "
        f"{args.new_tokens} new tokens, best of {args.reps}",
        flush=True,
    )
    rows: list[dict] = []
    for shape in args.shapes:
        for dtype in [] if args.skip_decode else args.dtypes:
            hf, ours = build_pair(shape, DTYPES[dtype])
            for batch in args.batches:
                ids = torch.randint(
                    1, SHAPES[shape]["vocab_size"], (batch, args.prompt_len), generator=torch.Generator().manual_seed(0)
                )
                a, b = hf_generate(hf, ids, 16), ours_generate(ours, ids, 16)  # warm-up, and an equality check
                same = float((a == b).float().mean())
                times: dict[str, list[float]] = {"hf": [], "ours": []}
                ttft: dict[str, list[float]] = {"hf": [], "ours": []}
                for _ in range(args.reps):
                    for impl, model in (("hf", hf), ("ours", ours)):
                        times[impl].append(timed(RUNNERS[impl], model, ids, args.new_tokens))
                for _ in range(3):
                    for impl, model in (("hf", hf), ("ours", ours)):
                        ttft[impl].append(timed(RUNNERS[impl], model, ids, 1))
                mem = {
                    impl: None
                    if args.no_memory
                    else peak_memory(impl, shape, dtype, batch, args.prompt_len, args.new_tokens)
                    for impl in times
                }
                row = {
                    "bench": "decode",
                    "shape": shape,
                    "dtype": dtype,
                    "batch": batch,
                    "greedy_match_16": same,
                    "threads": torch.get_num_threads(),
                    "loadavg_1m": os.getloadavg()[0],
                }
                for impl in times:
                    row[f"{impl}_tok_s"] = batch * args.new_tokens / min(times[impl])
                    row[f"{impl}_ttft_ms"] = 1000 * min(ttft[impl])
                    row[f"{impl}_peak_mb"] = mem[impl]
                row["speedup"] = row["ours_tok_s"] / row["hf_tok_s"]
                rows.append(row)

                def mb(x: float | None) -> str:
                    return "   n/a" if x is None else f"{x:6.1f}"

                print(
                    f"{shape:<9} {dtype} b={batch}  tok/s hf {row['hf_tok_s']:7.1f}  ours {row['ours_tok_s']:7.1f}  "
                    f"ratio {row['speedup']:.2f}x | TTFT ms hf {row['hf_ttft_ms']:6.1f} "
                    f"ours {row['ours_ttft_ms']:6.1f} "
                    f"| peak MB hf {mb(row['hf_peak_mb'])} ours {mb(row['ours_peak_mb'])} | same tokens {same:.2f} "
                    f"| load {row['loadavg_1m']:.1f}",
                    flush=True,
                )
            del hf, ours
            gc.collect()
        if args.quantize == "int8" and not args.ppl_model:
            bench_int8(args, shape, rows)
    if args.quantize == "int8" and args.ppl_model:
        bench_int8(args, args.shapes[0], rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
