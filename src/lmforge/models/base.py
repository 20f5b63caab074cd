"""The Backbone base every family (gpt1.py, gpt2.py, bert.py, modern.py) derives from.

A backbone maps token ids to hidden states and knows no head and no loss: heads and losses live in
tasks/ (tasks/heads.py), and `tasks.TaskModel(backbone, head)` is the one module that training, generation
and serving see. Each family writes its own embeddings and block in `encode`; the forward signature, the
masks and the single-token decoder scaffolding are shared here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lmforge.config import ModelConfig
from lmforge.models.layers import KVCache, attention_decoder, build_attention_mask, plain

# f(tokens (B,), positions (B | 1, 1), cache, key mask (B, S) | None) -> hidden (B, C) after the final norm
DecodeFn = Callable[[Tensor, Tensor, list[KVCache], Tensor | None], Tensor]


@dataclass
class BackboneOutput:
    """What every backbone returns."""

    last_hidden_state: Tensor  # (B, T, C), after the final norm where the family has one


class Backbone(nn.Module):
    """Base of every family: the shared forward; subclasses implement `encode`."""

    cfg: ModelConfig

    def encode(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        token_type_ids: Tensor | None,
        position_ids: Tensor | None,
        cache: list[KVCache] | None,
    ) -> Tensor:
        """Hidden states (B, T, C) of input_ids (B, T)."""
        raise NotImplementedError

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        cache: list[KVCache] | None = None,
    ) -> BackboneOutput:
        """Run the backbone on input_ids (B, T); `attention_mask` (B, S) marks real tokens with 1."""
        return BackboneOutput(self.encode(input_ids, attention_mask, token_type_ids, position_ids, cache))

    # -- helpers for subclasses -----------------------------------------------------------------------
    def _run_decoder_blocks(
        self,
        x: Tensor,
        attention_mask: Tensor | None,
        cache: list[KVCache] | None,
        **block_kwargs: Tensor,
    ) -> Tensor:
        """Run x (B, T, C) through every decoder block, each with the mask of its attention kind."""
        T = x.shape[1]
        S = (cache[0].length if cache else 0) + T  # keys: what the cache holds plus the new tokens
        masks = self._masks(attention_mask, T, S, x.device)
        for i, block in enumerate(self.blocks):
            x = block(x, masks[self.cfg.layer_attention(i)], cache[i] if cache else None, **block_kwargs)
        return x

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
