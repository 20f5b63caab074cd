"""Hugging Face interop: config and weight maps for BERT and GPT-2, both directions.

This is the only module that knows Hugging Face names. Our checkpoints use lmforge's attribute names,
`backbone.*` (`tok_emb`, `blocks.N.attn.qkv`, ...) and `head.*` (tasks/heads.py); HF's differ per class:

    BertModel                       embeddings.*, encoder.layer.N.*, pooler.*
    BertForMaskedLM                 bert.* (no pooler) + cls.predictions.*
    BertForSequenceClassification   bert.* + classifier.*
    BertForTokenClassification      bert.* (no pooler) + classifier.*
    GPT2Model                       wte, wpe, h.N.*, ln_f
    GPT2LMHeadModel                 transformer.* + lm_head
    GPT2ForSequenceClassification   transformer.* + score

GPT-2 stores its projections as Conv1D, weight (in, out): the transpose of nn.Linear's (out, in).
BERT keeps separate query/key/value matrices; we fuse them into one qkv projection.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lmforge.config import HeadConfig, ModelConfig
from lmforge.errors import CheckpointError

# architecture name -> (family, head kind)
ARCHITECTURES: dict[str, tuple[str, str]] = {
    "BertModel": ("bert", "none"),
    "BertForMaskedLM": ("bert", "mlm"),
    "BertForSequenceClassification": ("bert", "sequence"),
    "BertForTokenClassification": ("bert", "token"),
    "GPT2Model": ("gpt2", "none"),
    "GPT2LMHeadModel": ("gpt2", "lm"),
    "GPT2ForSequenceClassification": ("gpt2", "sequence"),
}
# when config.json names no architecture, the base model of its model_type
_DEFAULT_ARCH = {"bert": "BertModel", "gpt2": "GPT2LMHeadModel"}

_HF_ACT = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu", "silu": "silu"}
_OUR_ACT = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "silu": "silu"}


def architecture_of(hf_config: dict[str, Any], where: str = "config.json") -> str:
    """The supported HF architecture a config.json describes, or a CheckpointError listing those we support."""
    archs = hf_config.get("architectures") or []
    model_type = hf_config.get("model_type")
    arch = archs[0] if archs else _DEFAULT_ARCH.get(str(model_type))
    if arch not in ARCHITECTURES:
        raise CheckpointError(
            f"{where}: architecture {arch or model_type!r} is not supported; lmforge converts "
            f"{', '.join(ARCHITECTURES)}"
        )
    return arch


def head_config_from_hf(hf_config: dict[str, Any], where: str = "config.json") -> HeadConfig:
    """Our HeadConfig for an HF config.json dict (the head its architecture carries)."""
    _, kind = ARCHITECTURES[architecture_of(hf_config, where)]
    pad = hf_config.get("pad_token_id") if kind == "sequence" else None
    return HeadConfig(kind=kind, num_labels=_num_labels(hf_config), pad_token_id=pad)  # type: ignore[arg-type]


def model_config_from_hf(hf_config: dict[str, Any], where: str = "config.json") -> ModelConfig:
    """Our (backbone) ModelConfig for an HF config.json dict."""
    arch = architecture_of(hf_config, where)
    family, _ = ARCHITECTURES[arch]
    try:
        if family == "bert":
            act = hf_config.get("hidden_act", "gelu")
            if act not in _HF_ACT:
                raise CheckpointError(f"{where}: hidden_act={act!r} is not supported (use one of {list(_HF_ACT)})")
            if hf_config.get("position_embedding_type", "absolute") != "absolute":
                raise CheckpointError(f"{where}: only position_embedding_type='absolute' is supported")
            return ModelConfig(
                family="bert",
                vocab_size=hf_config["vocab_size"],
                n_layer=hf_config["num_hidden_layers"],
                n_head=hf_config["num_attention_heads"],
                d_model=hf_config["hidden_size"],
                d_ff=hf_config["intermediate_size"],
                max_seq_len=hf_config["max_position_embeddings"],
                type_vocab_size=hf_config.get("type_vocab_size", 2),
                activation=_HF_ACT[act],
                norm_eps=hf_config.get("layer_norm_eps", 1e-12),
                init_std=hf_config.get("initializer_range", 0.02),
                dropout=hf_config.get("hidden_dropout_prob", 0.0),
                attn_dropout=hf_config.get("attention_probs_dropout_prob", 0.0),
            )
        act = hf_config.get("activation_function", "gelu_new")
        if act not in _HF_ACT:
            raise CheckpointError(f"{where}: activation_function={act!r} is not supported")
        if hf_config.get("scale_attn_by_inverse_layer_idx") or hf_config.get("reorder_and_upcast_attn"):
            raise CheckpointError(
                f"{where}: scale_attn_by_inverse_layer_idx / reorder_and_upcast_attn are not supported"
            )
        d_model = hf_config["n_embd"]
        return ModelConfig(
            family="gpt2",
            vocab_size=hf_config["vocab_size"],
            n_layer=hf_config["n_layer"],
            n_head=hf_config["n_head"],
            d_model=d_model,
            d_ff=hf_config.get("n_inner") or 4 * d_model,
            max_seq_len=hf_config["n_positions"],
            activation=_HF_ACT[act],
            norm_eps=hf_config.get("layer_norm_epsilon", 1e-5),
            init_std=hf_config.get("initializer_range", 0.02),
            tie_embeddings=hf_config.get("tie_word_embeddings", True),
            dropout=hf_config.get("resid_pdrop", 0.0),
            attn_dropout=hf_config.get("attn_pdrop", 0.0),
        )
    except KeyError as e:
        raise CheckpointError(f"{where}: field {e.args[0]!r} is missing (a {arch} config needs it)") from None


def _num_labels(hf_config: dict[str, Any]) -> int:
    if "id2label" in hf_config and hf_config["id2label"]:
        return len(hf_config["id2label"])
    return int(hf_config.get("num_labels", 2))


def hf_config_from_model(cfg: ModelConfig, head: HeadConfig, labels: list[str] | None = None) -> dict[str, Any]:
    """An HF config.json dict for our backbone + head (BERT or GPT-2 families only)."""
    arch = {v: k for k, v in ARCHITECTURES.items()}.get((cfg.family, head.kind))
    if arch is None:
        raise CheckpointError(
            f"model.family={cfg.family!r} with head={head.kind!r} has no Hugging Face equivalent; "
            "to-hf exports BERT (none/mlm/sequence/token heads) and GPT-2/GPT-3-dense models (none/lm/sequence)"
        )
    if cfg.family == "gpt2" and "banded" in cfg.attention_layers:
        raise CheckpointError("banded (GPT-3 sparse) attention layers have no GPT-2 equivalent in transformers")
    if cfg.family == "gpt2" and not cfg.bias:
        raise CheckpointError("model.bias=false has no GPT-2 equivalent in transformers")
    n = head.num_labels
    id2label = {str(i): (labels[i] if labels else f"LABEL_{i}") for i in range(n)}
    common: dict[str, Any] = {
        "architectures": [arch],
        "vocab_size": cfg.vocab_size,
        "initializer_range": cfg.init_std,
        "id2label": id2label,
        "label2id": {v: int(k) for k, v in id2label.items()},
        "tie_word_embeddings": cfg.tie_embeddings,
    }
    if head.pad_token_id is not None:
        common["pad_token_id"] = head.pad_token_id
    if head.kind == "sequence" and n == 1:
        common["problem_type"] = "regression"
    if cfg.family == "bert":
        return {
            **common,
            "model_type": "bert",
            "hidden_size": cfg.d_model,
            "num_hidden_layers": cfg.n_layer,
            "num_attention_heads": cfg.n_head,
            "intermediate_size": cfg.ff_dim,
            "hidden_act": _OUR_ACT[cfg.act],
            "max_position_embeddings": cfg.max_seq_len,
            "type_vocab_size": cfg.type_vocab_size,
            "layer_norm_eps": cfg.eps,
            "hidden_dropout_prob": cfg.dropout,
            "attention_probs_dropout_prob": cfg.attn_dropout,
            "position_embedding_type": "absolute",
        }
    return {
        **common,
        "model_type": "gpt2",
        "n_embd": cfg.d_model,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_inner": cfg.ff_dim,
        "n_positions": cfg.max_seq_len,
        "activation_function": _OUR_ACT[cfg.act],
        "layer_norm_epsilon": cfg.eps,
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.attn_dropout,
    }


# --- weights --------------------------------------------------------------------------------------------
def _prefix(cfg: ModelConfig, head: str) -> str:
    """Where the base model's weights live inside the HF class."""
    if head == "none":
        return ""
    return "bert." if cfg.family == "bert" else "transformer."


def _bert_pairs(cfg: ModelConfig, head: str) -> list[tuple[str, str]]:
    """(ours, hf) names whose tensors are equal as they are (no fusing or transposing)."""
    p = _prefix(cfg, head)
    pairs = [
        ("backbone.tok_emb.weight", f"{p}embeddings.word_embeddings.weight"),
        ("backbone.pos_emb.weight", f"{p}embeddings.position_embeddings.weight"),
        ("backbone.type_emb.weight", f"{p}embeddings.token_type_embeddings.weight"),
        ("backbone.emb_norm.weight", f"{p}embeddings.LayerNorm.weight"),
        ("backbone.emb_norm.bias", f"{p}embeddings.LayerNorm.bias"),
    ]
    for i in range(cfg.n_layer):
        ours, hf = f"backbone.blocks.{i}.", f"{p}encoder.layer.{i}."
        for t in ("weight", "bias"):
            pairs += [
                (f"{ours}attn.out.{t}", f"{hf}attention.output.dense.{t}"),
                (f"{ours}attn_norm.{t}", f"{hf}attention.output.LayerNorm.{t}"),
                (f"{ours}mlp.up.{t}", f"{hf}intermediate.dense.{t}"),
                (f"{ours}mlp.down.{t}", f"{hf}output.dense.{t}"),
                (f"{ours}mlp_norm.{t}", f"{hf}output.LayerNorm.{t}"),
            ]
    if head in ("none", "sequence"):
        pairs += [
            ("head.pooler.dense.weight", f"{p}pooler.dense.weight"),
            ("head.pooler.dense.bias", f"{p}pooler.dense.bias"),
        ]
    if head == "mlm":
        pairs += [
            ("head.dense.weight", "cls.predictions.transform.dense.weight"),
            ("head.dense.bias", "cls.predictions.transform.dense.bias"),
            ("head.norm.weight", "cls.predictions.transform.LayerNorm.weight"),
            ("head.norm.bias", "cls.predictions.transform.LayerNorm.bias"),
            ("head.decoder.weight", "cls.predictions.decoder.weight"),
            ("head.decoder.bias", "cls.predictions.bias"),
        ]
    if head == "sequence":
        pairs += [("head.proj.weight", "classifier.weight"), ("head.proj.bias", "classifier.bias")]
    if head == "token":
        pairs += [("head.proj.weight", "classifier.weight"), ("head.proj.bias", "classifier.bias")]
    return pairs


def _gpt2_pairs(cfg: ModelConfig, head: str) -> tuple[list[tuple[str, str]], set[str]]:
    """(ours, hf) pairs, and the HF names stored as Conv1D (transposed)."""
    p = _prefix(cfg, head)
    pairs = [("backbone.tok_emb.weight", f"{p}wte.weight"), ("backbone.pos_emb.weight", f"{p}wpe.weight")]
    conv1d: set[str] = set()
    for i in range(cfg.n_layer):
        ours, hf = f"backbone.blocks.{i}.", f"{p}h.{i}."
        for o, h in (
            ("attn.qkv", "attn.c_attn"),
            ("attn.out", "attn.c_proj"),
            ("mlp.up", "mlp.c_fc"),
            ("mlp.down", "mlp.c_proj"),
        ):
            pairs += [(f"{ours}{o}.weight", f"{hf}{h}.weight"), (f"{ours}{o}.bias", f"{hf}{h}.bias")]
            conv1d.add(f"{hf}{h}.weight")
        for o, h in (("attn_norm", "ln_1"), ("mlp_norm", "ln_2")):
            pairs += [(f"{ours}{o}.weight", f"{hf}{h}.weight"), (f"{ours}{o}.bias", f"{hf}{h}.bias")]
    pairs += [("backbone.final_norm.weight", f"{p}ln_f.weight"), ("backbone.final_norm.bias", f"{p}ln_f.bias")]
    if head == "lm":
        pairs.append(("head.proj.weight", "lm_head.weight"))
    if head == "sequence":
        pairs.append(("head.proj.weight", "score.weight"))
    return pairs, conv1d


def _tied_hf_names(cfg: ModelConfig, head: str) -> dict[str, str]:
    """HF names that may be absent from a file because they are tied to another tensor."""
    if cfg.family == "bert" and head == "mlm":
        return {
            "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
            "cls.predictions.decoder.bias": "cls.predictions.bias",
        }
    if cfg.family == "gpt2" and head == "lm" and cfg.tie_embeddings:
        return {"lm_head.weight": "transformer.wte.weight"}
    return {}


# HF buffers that are not weights (older GPT-2 files carry the causal mask as `attn.bias`)
_IGNORED_HF_SUFFIXES = (".attn.bias", ".attn.masked_bias", "position_ids")


def from_hf(sd: dict[str, Tensor], cfg: ModelConfig, head: str, where: str = "model.safetensors") -> dict[str, Tensor]:
    """Convert an HF state dict (of the class with `head`) to ours; missing and unexpected tensors are an error."""
    sd = dict(sd)
    for name, source in _tied_hf_names(cfg, head).items():
        if name not in sd and source in sd:
            sd[name] = sd[source]
    # a bare base model saved under its task prefix (e.g. "bert.embeddings...") or vice versa
    sd = _align_prefix(sd, cfg, head)
    out: dict[str, Tensor] = {}
    used: set[str] = set()
    missing: list[str] = []
    if cfg.family == "bert":
        for ours, hf in _bert_pairs(cfg, head):
            if hf in sd:
                out[ours] = sd[hf]
                used.add(hf)
            else:
                missing.append(hf)
        p = _prefix(cfg, head)
        for i in range(cfg.n_layer):
            base = f"{p}encoder.layer.{i}.attention.self."
            for t in ("weight", "bias"):
                names = [f"{base}{x}.{t}" for x in ("query", "key", "value")]
                if all(n in sd for n in names):
                    out[f"backbone.blocks.{i}.attn.qkv.{t}"] = torch.cat([sd[n] for n in names], dim=0)
                    used.update(names)
                else:
                    missing += [n for n in names if n not in sd]
    elif cfg.family == "gpt2":
        pairs, conv1d = _gpt2_pairs(cfg, head)
        for ours, hf in pairs:
            if hf in sd:
                out[ours] = sd[hf].t() if hf in conv1d else sd[hf]
                used.add(hf)
            else:
                missing.append(hf)
    else:
        raise CheckpointError(f"family {cfg.family!r} has no Hugging Face weight map")
    used.update(_tied_hf_names(cfg, head))
    extra = sorted(k for k in sd if k not in used and not k.endswith(_IGNORED_HF_SUFFIXES))
    if missing:
        raise CheckpointError(
            f"{where}: {len(missing)} tensors missing (e.g. {missing[:3]}); is this really a "
            f"{_arch_name(cfg, head)} checkpoint?"
        )
    if extra:
        raise CheckpointError(
            f"{where}: {len(extra)} unexpected tensors (e.g. {extra[:3]}) for {_arch_name(cfg, head)}"
        )
    return {k: v.contiguous() for k, v in out.items()}


def to_hf(sd: dict[str, Tensor], cfg: ModelConfig, head: str) -> dict[str, Tensor]:
    """Convert our state dict to the HF class's, with every key HF's own state_dict() has (tied ones too)."""
    out: dict[str, Tensor] = {}
    if cfg.family == "bert":
        for ours, hf in _bert_pairs(cfg, head):
            out[hf] = sd[ours]
        p = _prefix(cfg, head)
        for i in range(cfg.n_layer):
            base = f"{p}encoder.layer.{i}.attention.self."
            for t in ("weight", "bias"):
                for name, part in zip(
                    ("query", "key", "value"), sd[f"backbone.blocks.{i}.attn.qkv.{t}"].chunk(3, dim=0)
                ):
                    out[f"{base}{name}.{t}"] = part
        if head == "mlm":
            out["cls.predictions.decoder.bias"] = sd["head.decoder.bias"]
    elif cfg.family == "gpt2":
        pairs, conv1d = _gpt2_pairs(cfg, head)
        for ours, hf in pairs:
            out[hf] = sd[ours].t() if hf in conv1d else sd[ours]
    else:
        raise CheckpointError(f"family {cfg.family!r} has no Hugging Face weight map")
    return {k: v.contiguous() for k, v in out.items()}


def _arch_name(cfg: ModelConfig, head: str) -> str:
    return {v: k for k, v in ARCHITECTURES.items()}.get((cfg.family, head), cfg.family)


def _align_prefix(sd: dict[str, Tensor], cfg: ModelConfig, head: str) -> dict[str, Tensor]:
    base = "bert." if cfg.family == "bert" else "transformer."
    want = _prefix(cfg, head)
    has_prefix = any(k.startswith(base) for k in sd)
    if want == "" and has_prefix:  # e.g. BertModel loaded from a BertForMaskedLM file: drop head weights
        return {k[len(base) :]: v for k, v in sd.items() if k.startswith(base)}
    if want == base and not has_prefix:
        return {
            (k if k.startswith(("cls.", "classifier.", "lm_head.", "score.")) else base + k): v for k, v in sd.items()
        }
    return sd


def model_from_hf(hf_model: Any) -> Any:
    """Our TaskModel with the weights of an in-memory transformers model (BERT or GPT-2 classes above)."""
    from lmforge.tasks import build_model

    hf_config = hf_model.config.to_dict()
    hf_config["architectures"] = [type(hf_model).__name__]
    where = type(hf_model).__name__
    cfg, head = model_config_from_hf(hf_config, where=where), head_config_from_hf(hf_config, where=where)
    model = build_model(cfg, head)
    load_weights(model, from_hf(hf_model.state_dict(), cfg, head.kind, where=where), where=where)
    return model.eval()


def load_weights(model: Any, state: dict[str, Tensor], where: str) -> None:
    """Copy `state` into a TaskModel, naming missing/unexpected tensors and shape mismatches."""
    own = model.state_dict()
    tied = {model.tied_key} if model.tied_key else set()
    if tied and "backbone.tok_emb.weight" not in state:  # a writer that kept the decoder's name for the shared matrix
        for name in tied:
            if name in state:
                state = {**state, "backbone.tok_emb.weight": state[name]}
    missing = sorted(k for k in own if k not in state and k not in tied)
    extra = sorted(k for k in state if k not in own)
    if missing:
        raise CheckpointError(f"{where}: {len(missing)} weights missing (e.g. {missing[:3]})")
    if extra:
        raise CheckpointError(f"{where}: {len(extra)} unexpected weights (e.g. {extra[:3]})")
    bad = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items() if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        k, got, want = bad[0]
        raise CheckpointError(
            f"{where}: tensor {k!r} has shape {got} but the config implies {want}"
            + (f" (and {len(bad) - 1} more mismatches)" if len(bad) > 1 else "")
        )
    model.load_state_dict(state, strict=False)
    model.tie_weights()
