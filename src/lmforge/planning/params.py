"""Parameter counts and FLOPs per token of any model config, computed on the meta device (no memory)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lmforge.config import HeadConfig, ModelConfig


@dataclass
class ModelSummary:
    """What `lmforge info` reports about a config."""

    n_params: int  # every trainable parameter (tied matrices counted once)
    n_params_non_embedding: int  # without token, position and type embeddings (Kaplan et al. 2020's N)
    n_embedding: int
    forward_flops_per_token: int  # 2N + attention scores at full context (Kaplan et al. 2020, Table 1)
    train_flops_per_token: int  # forward + backward ~ 3 x forward
    shapes: dict[str, list[int]] = field(default_factory=dict)  # parameter name -> shape, first block only


def summarize(cfg: ModelConfig, context: int | None = None, head: HeadConfig | None = None) -> ModelSummary:
    """Count parameters of `cfg` with `head` (default: the family's pretraining head, lm or mlm) on the meta
    device, and estimate FLOPs per token at `context` tokens."""
    from lmforge.tasks import build_model

    head = head or HeadConfig(kind="mlm" if cfg.family == "bert" else "lm")
    model = build_model(cfg, head, device="meta")
    seen: set[int] = set()
    total = emb = 0
    shapes: dict[str, list[int]] = {}
    for name, p in model.named_parameters():  # named_parameters() already skips tied duplicates
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if name.split(".")[:2] in (["backbone", "tok_emb"], ["backbone", "pos_emb"], ["backbone", "type_emb"]):
            emb += p.numel()
        if not name.startswith("backbone.blocks.") or name.startswith("backbone.blocks.0."):
            shapes[name] = list(p.shape)
    non_emb = total - emb
    T = context or cfg.max_seq_len
    # attention: QK^T and AV are each 2 * T * d_model MACs-as-FLOPs per token per layer, averaged over
    # positions a causal layer sees T/2 keys; Kaplan et al. count 2 * n_layer * n_ctx * d_attn.
    banded = sum(cfg.layer_attention(i) == "banded" for i in range(cfg.n_layer))
    dense = cfg.n_layer - banded
    attn = 2 * cfg.d_model * (dense * T + banded * min(T, cfg.band_width))
    # the LM/MLM decoder matmul is a real cost even when its weight is tied to the embedding
    head = 2 * cfg.d_model * cfg.vocab_size if head.kind in ("lm", "mlm") and cfg.tie_embeddings else 0
    forward = 2 * non_emb + attn + head
    return ModelSummary(
        n_params=total,
        n_params_non_embedding=non_emb,
        n_embedding=emb,
        forward_flops_per_token=forward,
        train_flops_per_token=3 * forward,
        shapes=shapes,
    )
