"""`lmforge fill-mask`: the most likely tokens, with probabilities, for each [MASK] of a text (BERT models)."""

from __future__ import annotations

import argparse
import json

from lmforge.errors import UsageError

EXAMPLES = """examples:
  lmforge fill-mask runs/my-bert "The cat sat on the [MASK]."
  lmforge fill-mask runs/my-bert "[MASK] is the capital of [MASK]." --top-k 10
  lmforge fill-mask hf/bert-base-uncased "Paris is the [MASK] of France." --json

--json prints one object per text: {"text", "masks": [{"position", "candidates": [{"token_id", "token",
"probability"}, ...]}, ...]}; each mask is predicted independently, in one forward pass.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fill-mask",
        help="top-k candidates for each mask token of a text (BERT models)",
        description="Predict every mask token (e.g. [MASK]) of each TEXT with a BERT-family model with an MLM "
        "head: the top-k tokens and their probabilities, per mask.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL", help="run directory, lmforge export or HF checkpoint directory")
    p.add_argument("texts", metavar="TEXT", nargs="+", help="text holding one or more mask tokens")
    p.add_argument("--top-k", type=int, default=5, help="candidates per mask (default 5)")
    p.add_argument("--tokenizer", help="tokenizer file or directory (default: MODEL)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    p.add_argument("--json", action="store_true", help="print one JSON object per text")
    p.set_defaults(func=run, accepts_overrides=False)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    import lmforge
    from lmforge.generation import fill_mask
    from lmforge.generation.fill_mask import check_masked_lm

    if args.top_k < 1:
        raise UsageError(f"--top-k {args.top_k} must be >= 1")
    model = lmforge.load_model(args.model, device=args.device)
    check_masked_lm(model)
    tokenizer = lmforge.load_tokenizer(args.tokenizer or args.model)
    for text in args.texts:
        preds = fill_mask(model, tokenizer, text, top_k=args.top_k)
        if args.json:
            print(json.dumps({"text": text, "masks": [p.to_dict() for p in preds]}))  # type: ignore[union-attr]
            continue
        print(text)
        for n, pred in enumerate(preds, start=1):
            print(f"  mask {n} (token {pred.position}):")  # type: ignore[union-attr]
            for c in pred.candidates:  # type: ignore[union-attr]
                print(f"    {c.probability:8.4f}  {c.token}")
    return 0
