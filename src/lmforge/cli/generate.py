"""`lmforge generate`: continue prompts with a GPT-family model (greedy, sampling or beam search)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lmforge.errors import DataError, UsageError

EXAMPLES = """examples:
  lmforge generate runs/my-gpt --prompt "Once upon a time" --max-new-tokens 64
  lmforge generate runs/my-gpt --prompt "def fib(n):" --stream --do-sample --temperature 0.8 --top-p 0.95 --seed 0
  lmforge generate hf/gpt2 --prompt "The capital of France is" --num-beams 4 --length-penalty 1.0 --json
  lmforge generate runs/my-gpt --prompts-file prompts.txt --stop "\\n\\n" --json > out.jsonl
  lmforge generate runs/my-gpt --prompt "$(cat long.txt)" --truncate left
  lmforge generate hf/gpt2 --prompt "The capital of France is" --quantize int8     int8 weights, CPU float32

--json prints one object per prompt: prompt, text, token_ids, logprobs (of each token under the model),
finish_reason (length | stop | eos) and prompt_tokens. With --stream it first prints {"index", "delta"}
lines as the text is decoded. Without --json the continuation of each prompt is printed on its own.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="continue prompts with a GPT-family model",
        description="Generate text with a GPT-family model from a run directory, an lmforge export or a Hugging "
        "Face GPT-2 directory. Decoding is greedy unless --do-sample or --num-beams is given; all samplers use "
        "a KV cache allocated once per call. Prompts from a file are decoded in left-padded batches.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL", help="run directory, lmforge export or HF checkpoint directory")
    src = p.add_argument_group("prompts (one of)")
    src.add_argument("--prompt", help="one prompt (may be empty: then decoding starts from BOS/EOS)")
    src.add_argument(
        "--prompts-file", type=Path, help="one prompt per line (.txt), or .jsonl rows with a 'prompt' field"
    )
    p.add_argument("--tokenizer", help="tokenizer file or directory (default: MODEL)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate per prompt (default 64)")
    p.add_argument("--do-sample", action="store_true", help="sample instead of taking the most likely token")
    p.add_argument("--temperature", type=float, default=1.0, help="with --do-sample: logits / T; 0 = greedy")
    p.add_argument("--top-k", type=int, default=0, help="with --do-sample: keep the k most likely tokens (0 = off)")
    p.add_argument("--top-p", type=float, default=1.0, help="with --do-sample: nucleus mass in (0, 1] (1 = off)")
    p.add_argument("--min-p", type=float, default=0.0, help="with --do-sample: drop p < min_p * p_max (0 = off)")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="> 1 discourages seen tokens (1 = off)")
    p.add_argument("--no-repeat-ngram-size", type=int, default=0, help="never repeat an n-gram of this size")
    p.add_argument("--num-beams", type=int, default=1, help="beam search with this many beams (1 = off)")
    p.add_argument("--length-penalty", type=float, default=1.0, help="beam score = log p / length**this")
    p.add_argument(
        "--early-stopping", choices=["true", "false", "never"], default="false", help="beam search stop rule"
    )
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable); the text ends before it")
    p.add_argument("--seed", type=int, help="seed for reproducible sampling")
    p.add_argument(
        "--truncate",
        choices=["error", "left"],
        default="error",
        help="a prompt too long for the context: fail, or keep its end (default: error)",
    )
    p.add_argument("--batch-size", type=int, default=8, help="prompts decoded together (default 8)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="weights and cache dtype")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--quantize",
        choices=["int8"],
        help="int8 dynamic quantization of every linear layer (CPU, float32 only): faster on larger models",
    )
    p.add_argument("--stream", action="store_true", help="print the text as it is decoded (one prompt at a time)")
    p.add_argument("--json", action="store_true", help="print one JSON object per prompt")
    p.set_defaults(func=run, accepts_overrides=False)


def read_prompts(args: argparse.Namespace) -> list[str]:
    if (args.prompt is None) == (args.prompts_file is None):
        raise UsageError("give exactly one of --prompt TEXT or --prompts-file FILE")
    if args.prompt is not None:
        return [args.prompt]
    path: Path = args.prompts_file
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as e:
        raise DataError(f"--prompts-file {path}: no such file") from e
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"--prompts-file {path}: cannot read it as UTF-8 text ({e})") from e
    if path.suffix == ".jsonl":
        prompts = []
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: not valid JSON ({e.msg})") from e
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
                raise DataError(f"{path}:{n}: expected an object with a string field 'prompt'")
            prompts.append(row["prompt"])
    else:
        prompts = [line for line in lines if line.strip()]
    if not prompts:
        raise DataError(f"--prompts-file {path}: holds no prompt")
    return prompts


def generation_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    early: bool | str = {"true": True, "false": False, "never": "never"}[args.early_stopping]
    return dict(
        max_new_tokens=args.max_new_tokens,
        do_sample=args.do_sample,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        repetition_penalty=args.repetition_penalty,
        no_repeat_ngram_size=args.no_repeat_ngram_size,
        num_beams=args.num_beams,
        length_penalty=args.length_penalty,
        early_stopping=early,
        stop=tuple(args.stop),
        seed=args.seed,
        truncate=args.truncate,
    )


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    import torch

    import lmforge
    from lmforge.generation import GenerationConfig, complete, stream_generation

    prompts = read_prompts(args)
    if args.batch_size < 1:
        raise UsageError(f"--batch-size {args.batch_size} must be >= 1")
    config = GenerationConfig(**generation_kwargs(args))  # fails before loading anything on a bad flag
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    model = lmforge.load_model(args.model, device=args.device, dtype=dtype)
    if args.quantize == "int8":
        from lmforge.generation.quantize import quantize_int8

        model = quantize_int8(model)
    tokenizer = lmforge.load_tokenizer(args.tokenizer or args.model)
    out = sys.stdout
    if args.stream:
        for i, prompt in enumerate(prompts):
            stream = stream_generation(model, tokenizer, prompt, config=config)
            for delta in stream:
                out.write(json.dumps({"index": i, "delta": delta}) + "\n" if args.json else delta)
                out.flush()
            result = stream.result
            assert result is not None
            out.write(json.dumps({"prompt": prompt, **result.to_dict()}) + "\n" if args.json else "\n")
            out.flush()
        return 0
    for start in range(0, len(prompts), args.batch_size):
        batch = prompts[start : start + args.batch_size]
        for prompt, result in zip(batch, complete(model, tokenizer, batch, config=config)):
            out.write(json.dumps({"prompt": prompt, **result.to_dict()}) + "\n" if args.json else result.text + "\n")
        out.flush()
    return 0
