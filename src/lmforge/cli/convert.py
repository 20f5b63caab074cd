"""`lmforge convert from-hf | to-hf`: move checkpoints between lmforge and Hugging Face transformers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lmforge.errors import CheckpointError, UsageError

EXAMPLES = """examples:
  # import a Hugging Face BERT / GPT-2 directory (config.json + model.safetensors + tokenizer files)
  lmforge convert from-hf ~/models/all-MiniLM-L6-v2 exports/minilm
  # export a run (or an export) so that transformers' AutoModel*.from_pretrained can load it
  lmforge convert to-hf runs/my-gpt exports/my-gpt-hf

supported: BertModel, BertForMaskedLM, BertForSequenceClassification, BertForTokenClassification,
GPT2Model, GPT2LMHeadModel, GPT2ForSequenceClassification. Weights are read from safetensors; a
pytorch_model.bin is read only with torch.load(weights_only=True), never by running pickled code.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert checkpoints to and from Hugging Face format",
        description="Convert BERT and GPT-2 checkpoints between lmforge and Hugging Face transformers. "
        "Logits of the converted model equal the source's (fp32, atol 1e-5).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("direction", choices=["from-hf", "to-hf"], help="from-hf: HF dir -> lmforge export; to-hf: back")
    p.add_argument("src", help="source directory (HF checkpoint, lmforge export or run directory)")
    p.add_argument("dst", help="output directory")
    p.add_argument("--overwrite", action="store_true", help="replace files in a non-empty output directory")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    # imported here, not at the top: torch takes seconds to import and every verb's --help would pay for it
    from lmforge.checkpoint.io import copy_tokenizer_files, export_hf, load_model, resolve_model_dir, save_model

    src, dst = Path(args.src), Path(args.dst)
    if dst.exists() and any(dst.iterdir()) and not args.overwrite:
        raise UsageError(f"{dst} is not empty; pass --overwrite to replace its files")
    if src.resolve() == dst.resolve():
        raise UsageError("source and destination are the same directory")
    source = resolve_model_dir(src)
    if args.direction == "from-hf" and source.kind != "hf":
        raise CheckpointError(f"{src}: this is an lmforge model, not a Hugging Face checkpoint; use `convert to-hf`")
    if args.direction == "to-hf" and source.kind == "hf":
        raise CheckpointError(f"{src}: this is already a Hugging Face checkpoint; use `convert from-hf`")
    model = load_model(src)
    if args.direction == "from-hf":
        save_model(model, dst)
    else:
        export_hf(model, dst)
    tok_dir = source.weights.parent if source.kind != "run-checkpoint" else src
    copied = copy_tokenizer_files(tok_dir, dst) if tok_dir.resolve() != dst.resolve() else []
    if args.direction == "to-hf" and copied == ["tokenizer.json"]:
        _write_tokenizer_config(dst, model.cfg.family)
    summary = {
        "direction": args.direction,
        "src": str(src),
        "dst": str(dst),
        "family": model.cfg.family,
        "head": model.head_cfg.kind,
        "n_params": sum(p.numel() for p in model.parameters()),
        "tokenizer_files": copied,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"converted {model.cfg.family}/{model.head_cfg.kind} ({summary['n_params']:,} parameters) -> {dst}")
        if not copied:
            print("note: no tokenizer files found beside the source; copy them by hand if you need them")
    return 0


def _write_tokenizer_config(dst: Path, family: str) -> None:
    """A minimal tokenizer_config.json so AutoTokenizer wraps our tokenizer.json with the right specials."""
    specials = (
        {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "mask_token": "[MASK]", "unk_token": "[UNK]"}
        if family == "bert"
        else {"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"}
    )
    tok = json.loads((dst / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = set((tok.get("model") or {}).get("vocab") or {})
    present = {
        k: v
        for k, v in specials.items()
        if v in vocab or any(a.get("content") == v for a in tok.get("added_tokens", []))
    }
    (dst / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", **present}, indent=2), encoding="utf-8"
    )
