"""Output heads and the TransformerModel base that attaches one by `cfg.head`.

Each family (gpt1.py, gpt2.py, bert.py, modern.py) writes its own embeddings and block in `encode`;
the heads, the forward signature and the output dataclass are shared here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lmforge.config import ModelConfig
from lmforge.models.layers import KVCache, activation, attention_decoder, build_attention_mask, plain

# f(tokens (B,), positions (B | 1, 1), cache, key mask (B, S) | None) -> hidden (B, C) after the final norm
DecodeFn = Callable[[Tensor, Tensor, list[KVCache], Tensor | None], Tensor]


@dataclass
class ModelOutput:
    """What every model returns: hidden states always, logits when it has a head (a loss instead when asked)."""

    last_hidden_state: Tensor  # (B, T, C)
    logits: Tensor | None = None  # (B, T, V) for lm/mlm, (B, num_labels) sequence, (B, T, num_labels) token
    loss: Tensor | None = None  # what `head_loss` returned, when forward was given one (then logits is None)
    pooled: Tensor | None = None  # (B, C): BERT's pooler output, or a GPT's last real token
    attentions: list[Tensor] | None = None  # per layer (B, H, T, S), only when asked for


@dataclass
class Encoded:
    """What a family's `encode` hands to the head."""

    hidden: Tensor  # (B, T, C) after the final norm
    attentions: list[Tensor] | None = None


class MLMHead(nn.Module):
    """BERT's masked-LM head: dense + GELU + LayerNorm, then a decoder tied to the token embeddings."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.d_model, cfg.d_model)
        self.act = activation(cfg.act)
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.eps)
        self.decoder = nn.Linear(cfg.d_model, cfg.vocab_size, bias=True)

    def transform(self, h: Tensor) -> Tensor:
        """Everything before the decoder (dense, GELU, LayerNorm)."""
        return self.norm(self.act(self.dense(h)))

    def forward(self, h: Tensor) -> Tensor:
        return self.decoder(self.transform(h))


class Pooler(nn.Module):
    """BERT's pooler: tanh(dense(h[:, 0])) over the [CLS] position."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, h: Tensor) -> Tensor:
        return torch.tanh(self.dense(h[:, 0]))


class ClassifierHead(nn.Module):
    """Dropout + one linear layer to `num_labels` outputs (sequence or token classification, regression)."""

    def __init__(self, cfg: ModelConfig, bias: bool) -> None:
        super().__init__()
        self.dropout = nn.Dropout(cfg.dropout)
        self.proj = nn.Linear(cfg.d_model, cfg.num_labels, bias=bias)

    def forward(self, h: Tensor) -> Tensor:
        return self.proj(self.dropout(h))


def last_token_index(input_ids: Tensor, attention_mask: Tensor | None, pad_token_id: int | None) -> Tensor:  # (B,)
    """Index of the last real token per row, for GPT sequence heads (right or left padding)."""
    B, T = input_ids.shape
    if attention_mask is not None:
        real = attention_mask.bool()
    elif pad_token_id is not None:
        real = input_ids != pad_token_id
    else:
        return torch.full((B,), T - 1, device=input_ids.device, dtype=torch.long)
    positions = torch.arange(T, device=input_ids.device)
    return (positions * real).argmax(-1)


class TransformerModel(nn.Module):
    """Base of every family: owns the head and the shared forward; subclasses implement `encode`."""

    cfg: ModelConfig

    def _build_head(self) -> None:
        cfg = self.cfg
        if cfg.head == "lm":
            self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        elif cfg.head == "mlm":
            self.mlm_head = MLMHead(cfg)
        elif cfg.head == "sequence":
            if cfg.family == "bert":
                self.cls_head = ClassifierHead(cfg, bias=True)
            else:  # GPT-2's `score` layer has no bias
                self.cls_head = ClassifierHead(cfg, bias=cfg.family == "modern" and cfg.bias)
        elif cfg.head == "token":
            self.token_head = ClassifierHead(cfg, bias=True)
        self.tie_weights()

    def tie_weights(self) -> None:
        """Share the token embedding with the LM/MLM decoder; call again after `to_empty`."""
        if not self.cfg.tie_embeddings:
            return
        if self.cfg.head == "lm":
            self.lm_head.weight = self.tok_emb.weight
        elif self.cfg.head == "mlm":
            self.mlm_head.decoder.weight = self.tok_emb.weight

    def encode(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        token_type_ids: Tensor | None,
        position_ids: Tensor | None,
        cache: list[KVCache] | None,
        output_attentions: bool,
    ) -> Encoded:
        raise NotImplementedError

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        cache: list[KVCache] | None = None,
        output_attentions: bool = False,
        head_mask: Tensor | None = None,
        head_loss: Callable[[Tensor, nn.Module], Tensor] | None = None,
    ) -> ModelOutput:
        """Run the model on input_ids (B, T); `attention_mask` (B, S) marks real tokens with 1.

        Args:
            head_mask: (B, T) bool; an lm/mlm/token head then runs only where it is True and `logits` is
                (N, V) for those N positions. MLM training passes its ~15% selected positions: the
                V-wide decoder is about half of a small BERT's FLOPs.
            head_loss: for an lm/mlm head, `head_loss(hidden, head)` is called instead of `head(hidden)` and its
                result returned as `loss`: a task computes its loss from the head's weights without the (N, V)
                logits (tasks.losses; the loss itself stays in tasks/). It runs inside forward, so DDP sees the
                head being used, and so would FSDP2 as long as the head stays in the root unit: `head_loss` reads
                its weights directly, without the head's own __call__ (and hooks).
        """
        enc = self.encode(input_ids, attention_mask, token_type_ids, position_ids, cache, output_attentions)
        h = enc.hidden
        out = ModelOutput(last_hidden_state=h, attentions=enc.attentions)
        head = self.cfg.head
        if self.cfg.family == "bert" and hasattr(self, "pooler"):
            out.pooled = self.pooler(h)
        per_token = h if head_mask is None else h[head_mask]  # (B, T, C) or (N, C)
        if head_loss is not None:
            if head not in ("lm", "mlm"):
                raise ValueError(f"head_loss needs an lm or mlm head, this model has a {head!r} head")
            out.loss = head_loss(per_token, self.lm_head if head == "lm" else self.mlm_head)
        elif head == "lm":
            out.logits = self.lm_head(per_token)
        elif head == "mlm":
            out.logits = self.mlm_head(per_token)
        elif head == "sequence":
            if out.pooled is None:  # decoders summarise a sequence by its last real token
                idx = last_token_index(input_ids, attention_mask, self.cfg.pad_token_id)
                out.pooled = h[torch.arange(h.shape[0], device=h.device), idx]
            out.logits = self.cls_head(out.pooled)
        elif head == "token":
            out.logits = self.token_head(per_token)
        return out

    # -- helpers for subclasses -----------------------------------------------------------------------
    def _run_decoder_blocks(
        self,
        x: Tensor,
        attention_mask: Tensor | None,
        cache: list[KVCache] | None,
        output_attentions: bool,
        **block_kwargs: Tensor,
    ) -> tuple[Tensor, list[Tensor] | None]:
        """Run x (B, T, C) through every decoder block, each with the mask of its attention kind."""
        T = x.shape[1]
        S = (cache[0].length if cache else 0) + T  # keys: what the cache holds plus the new tokens
        masks = self._masks(attention_mask, T, S, x.device)
        attns: list[Tensor] | None = [] if output_attentions else None
        for i, block in enumerate(self.blocks):
            mask = masks[self.cfg.layer_attention(i)]
            x, probs = block(x, mask, cache[i] if cache else None, want_attn=output_attentions, **block_kwargs)
            if attns is not None:
                attns.append(probs)
        return x, attns

    def decoder(self) -> DecodeFn:
        """`encode` for one new token per row, as plain closures (see layers.plain); decoder families only.

        Build it once per generation call: it captures the current modules and tensors.
        """
        raise NotImplementedError(f"{type(self).__name__} has no single-token decoder (not a decoder family)")

    def _pre_norm_decoder(self, embed: Callable[[Tensor, Tensor], Tensor]) -> DecodeFn:
        """`decoder()` of a pre-norm family (GPT-2/GPT-3, modern): x + attn(norm(x)), x + mlp(norm(x)), final norm.

        `embed(tokens (B,), positions (B | 1, 1)) -> (B, C)` is the family's own input embedding.
        """
        blocks = [(plain(b.attn_norm), attention_decoder(b.attn), plain(b.mlp_norm), plain(b.mlp)) for b in self.blocks]
        kinds = [self.cfg.layer_attention(i) for i in range(self.cfg.n_layer)]
        final_norm = plain(self.final_norm)

        def decode(tokens: Tensor, positions: Tensor, cache: list[KVCache], mask: Tensor | None) -> Tensor:
            x = embed(tokens, positions)
            masks = self._masks(mask, 1, cache[0].length + 1, x.device)
            for (attn_norm, attn, mlp_norm, mlp), kind, layer_cache in zip(blocks, kinds, cache):
                x = x + attn(attn_norm(x), masks[kind], layer_cache, positions)  # the block's forward, T = 1
                x = x + mlp(mlp_norm(x))
            return final_norm(x)

        return decode

    def _masks(self, attention_mask: Tensor | None, T: int, S: int, device: torch.device) -> dict[str, Tensor | None]:
        """One boolean mask per attention kind used by this model (dense, banded)."""
        cfg = self.cfg
        kinds = set(cfg.attention_layers[: cfg.n_layer])
        masks: dict[str, Tensor | None] = {}
        for kind in kinds:
            band = cfg.band_width if kind == "banded" else None
            masks[kind] = build_attention_mask(attention_mask, T, S, cfg.causal, band, device)
        return masks

    def _positions(self, input_ids: Tensor, position_ids: Tensor | None, cache: list[KVCache] | None) -> Tensor:
        if position_ids is not None:
            return position_ids
        start = cache[0].length if cache else 0
        T = input_ids.shape[1]
        if start + T > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {start + T} tokens is longer than model.max_seq_len={self.cfg.max_seq_len}")
        return torch.arange(start, start + T, device=input_ids.device)

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
