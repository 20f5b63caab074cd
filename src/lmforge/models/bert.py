"""BERT (Devlin et al. 2018): post-LN encoder; word + position + token-type embeddings.

The [CLS] pooler of Hugging Face's BertModel belongs to the sequence head (tasks/heads.py).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lmforge.config import ModelConfig
from lmforge.models.base import Backbone
from lmforge.models.init import init_normal
from lmforge.models.layers import MLP, Attention, KVCache


class BertBlock(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attn, self.attn_norm = Attention(cfg, causal=False), nn.LayerNorm(cfg.d_model, eps=cfg.eps)
        self.mlp, self.mlp_norm = MLP(cfg), nn.LayerNorm(cfg.d_model, eps=cfg.eps)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        a = self.attn(x, mask)
        x = self.attn_norm(x + a)  # post-norm: the residual sum is normalised, not the block input
        x = self.mlp_norm(x + self.mlp(x))
        return x


class BERT(Backbone):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.max_seq_len, cfg.d_model)
        self.type_emb = nn.Embedding(cfg.type_vocab_size, cfg.d_model)
        self.emb_norm = nn.LayerNorm(cfg.d_model, eps=cfg.eps)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(BertBlock(cfg) for _ in range(cfg.n_layer))
        init_normal(self, std=cfg.init_std)

    def encode(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        token_type_ids: Tensor | None,
        position_ids: Tensor | None,
        cache: list[KVCache] | None,
    ) -> Tensor:
        if cache:
            raise ValueError("BERT is an encoder; it has no KV cache")
        T = input_ids.shape[1]
        pos = self._positions(input_ids, position_ids, None)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.tok_emb(input_ids) + self.pos_emb(pos) + self.type_emb(token_type_ids)
        x = self.drop(self.emb_norm(x))
        mask = self._masks(attention_mask, T, T, input_ids.device)["dense"]
        for block in self.blocks:
            x = block(x, mask)
        return x
