"""A modern decoder, where GPT-3's line went next (Llama-style): RoPE instead of learned positions,
RMSNorm instead of LayerNorm, a SwiGLU MLP, and no biases. Pre-norm like GPT-2."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from lmforge.config import ModelConfig
from lmforge.models.base import Backbone, DecodeFn
from lmforge.models.init import init_gpt2
from lmforge.models.layers import Attention, KVCache, RMSNorm, Rotary, SwiGLU


class ModernBlock(nn.Module):
    def __init__(self, cfg: ModelConfig, rotary: Rotary) -> None:
        super().__init__()
        self.attn_norm, self.attn = RMSNorm(cfg.d_model, cfg.eps), Attention(cfg, causal=True, rotary=rotary)
        self.mlp_norm, self.mlp = RMSNorm(cfg.d_model, cfg.eps), SwiGLU(cfg)

    def forward(self, x: Tensor, mask: Tensor | None, cache: KVCache | None, positions: Tensor) -> Tensor:
        a = self.attn(self.attn_norm(x), mask, cache, positions)
        x = x + a
        x = x + self.mlp(self.mlp_norm(x))
        return x


class Modern(Backbone):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.rotary = Rotary(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(ModernBlock(cfg, self.rotary) for _ in range(cfg.n_layer))
        self.final_norm = RMSNorm(cfg.d_model, cfg.eps)
        init_gpt2(self)

    def encode(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        token_type_ids: Tensor | None,
        position_ids: Tensor | None,
        cache: list[KVCache] | None,
    ) -> Tensor:
        pos = self._positions(input_ids, position_ids, cache)
        x = self.drop(self.tok_emb(input_ids))
        x = self._run_decoder_blocks(x, attention_mask, cache, positions=pos)
        return self.final_norm(x)

    def decoder(self) -> DecodeFn:
        tok_emb = self.tok_emb.weight  # positions enter through RoPE in attention
        return self._pre_norm_decoder(lambda tokens, pos: F.embedding(tokens, tok_emb))
