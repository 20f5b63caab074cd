"""GPT-1 (Radford et al. 2018): post-LN decoder with learned positions and no final norm."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from lmforge.config import ModelConfig
from lmforge.models.base import Backbone, DecodeFn
from lmforge.models.init import init_normal
from lmforge.models.layers import MLP, Attention, KVCache, attention_decoder, plain


class GPT1Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attn, self.attn_norm = Attention(cfg, causal=True), nn.LayerNorm(cfg.d_model, eps=cfg.eps)
        self.mlp, self.mlp_norm = MLP(cfg), nn.LayerNorm(cfg.d_model, eps=cfg.eps)

    def forward(self, x: Tensor, mask: Tensor | None, cache: KVCache | None) -> Tensor:
        a = self.attn(x, mask, cache)
        x = self.attn_norm(x + a)  # post-norm, as in the original Transformer
        x = self.mlp_norm(x + self.mlp(x))
        return x


class GPT1(Backbone):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.max_seq_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(GPT1Block(cfg) for _ in range(cfg.n_layer))
        init_normal(self, std=cfg.init_std)

    def encode(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        token_type_ids: Tensor | None,
        position_ids: Tensor | None,
        cache: list[KVCache] | None,
    ) -> Tensor:
        pos = self._positions(input_ids, position_ids, cache)
        x = self.drop(self.tok_emb(input_ids) + self.pos_emb(pos))
        return self._run_decoder_blocks(x, attention_mask, cache)

    def decoder(self) -> DecodeFn:
        blocks = [(attention_decoder(b.attn), plain(b.attn_norm), plain(b.mlp), plain(b.mlp_norm)) for b in self.blocks]
        kinds = [self.cfg.layer_attention(i) for i in range(self.cfg.n_layer)]
        tok_emb, pos_emb = self.tok_emb.weight, self.pos_emb.weight

        def decode(tokens: Tensor, positions: Tensor, cache: list[KVCache], mask: Tensor | None) -> Tensor:
            x = F.embedding(tokens, tok_emb) + F.embedding(positions[:, 0], pos_emb)  # (B, C)
            masks = self._masks(mask, 1, cache[0].length + 1, x.device)
            for (attn, attn_norm, mlp, mlp_norm), kind, layer_cache in zip(blocks, kinds, cache):
                x = attn_norm(x + attn(x, masks[kind], layer_cache, positions))  # the block's forward, T = 1
                x = mlp_norm(x + mlp(x))
            return x

        return decode
