"""`lmforge info`: parameter counts, layer shapes and FLOPs of a preset or config, without allocating weights."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from lmforge.config import (
    GPT3_PAPER_PARAMS,
    LEGACY_HEAD_KEYS,
    PRESETS,
    ModelConfig,
    config_to_dict,
    head_config_from_dict,
    load_config,
    model_config_from_dict,
    parse_overrides,
)
from lmforge.errors import UsageError

EXAMPLES = """examples:
  lmforge info --list
  lmforge info --preset gpt2
  lmforge info --preset bert-base --head.kind none --json
  lmforge info --preset gpt3-175b --context 2048
  lmforge info --config runs/my-run/config.yaml
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="parameter counts, shapes and FLOPs of a preset or config",
        description="Print parameter counts (total and non-embedding), layer shapes and FLOPs per token "
        "of a model preset or config. Weights are built on the meta device: nothing is allocated, so "
        "gpt3-175b is as quick as gpt-nano. Any --model.FIELD VALUE overrides the preset.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", help="a preset name (see --list)")
    p.add_argument("--config", help="a run config YAML (its model section is used)")
    p.add_argument("--context", type=int, help="context length for FLOPs (default: model.max_seq_len)")
    p.add_argument("--list", action="store_true", help="list the presets")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run, accepts_overrides=True)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from lmforge.planning.params import summarize  # imports torch: only when the verb runs

    if args.list:
        rows = []
        for name in PRESETS:
            s = summarize(ModelConfig(**PRESETS[name]))
            rows.append({"preset": name, "family": PRESETS[name]["family"], "n_params": s.n_params})
        if args.json:
            print(json.dumps(rows))
        else:
            for r in rows:
                print(f"{r['preset']:<14} {r['family']:<7} {r['n_params'] / 1e6:>12,.1f}M")
        return 0
    if not args.preset and not args.config and not overrides:
        raise UsageError("give --preset NAME or --config FILE (see `lmforge info --list`)")
    tree = parse_overrides(overrides)
    if set(tree) - {"model", "head"}:
        raise UsageError(
            f"info takes only --model.FIELD and --head.FIELD overrides, not {sorted(set(tree) - {'model', 'head'})}"
        )
    model_raw = dict(tree.get("model", {}))
    moved = sorted(set(model_raw) & set(LEGACY_HEAD_KEYS))
    if moved:
        raise UsageError(f"--model.{moved[0]} is now --head.{LEGACY_HEAD_KEYS[moved[0]]}")
    if args.config:
        base = config_to_dict(load_config(args.config).model)
        model_raw = {**base, **model_raw}
    if args.preset:
        model_raw["preset"] = args.preset
    cfg = model_config_from_dict(model_raw, where="--model flags")
    head = head_config_from_dict(
        {"kind": "mlm" if cfg.family == "bert" else "lm", **tree.get("head", {})}, where="--head flags"
    )
    head.check_fits(cfg)
    s = summarize(cfg, args.context, head)
    result = {
        "preset": cfg.preset,
        "model": config_to_dict(cfg),
        "head": config_to_dict(head),
        **{k: v for k, v in asdict(s).items() if k != "shapes"},
        "shapes": s.shapes,
    }
    if cfg.preset in GPT3_PAPER_PARAMS:
        result["paper_n_params"] = int(GPT3_PAPER_PARAMS[cfg.preset])
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"{cfg.preset or 'custom'}: family={cfg.family} head={head.kind} layers={cfg.n_layer} d_model={cfg.d_model} "
        f"heads={cfg.n_head} d_ff={cfg.ff_dim} vocab={cfg.vocab_size} context={cfg.max_seq_len}"
    )
    if len(set(cfg.attention_layers)) > 1 or "banded" in cfg.attention_layers:
        print(f"  attention layers: {', '.join(cfg.attention_layers)} (cycled), band width {cfg.band_width}")
    print(f"  parameters:      {s.n_params:>18,}")
    print(f"  non-embedding:   {s.n_params_non_embedding:>18,}")
    print(f"  embedding:       {s.n_embedding:>18,}")
    if "paper_n_params" in result:
        print(f"  paper (Table 2.1): {result['paper_n_params']:>16,}  ({s.n_params / result['paper_n_params']:.3f}x)")
    print(f"  FLOPs per token: {s.forward_flops_per_token:>18,} forward, {s.train_flops_per_token:,} training")
    print("  shapes (first block shown):")
    for name, shape in s.shapes.items():
        print(f"    {name:<40} {tuple(shape)}")
    return 0
