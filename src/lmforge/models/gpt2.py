"""GPT-2 (Radford et al. 2019), and GPT-3 (Brown et al. 2020) which is the same block with alternating
dense and locally banded sparse attention layers (`model.attention_layers: [dense, banded]`)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from lmforge.config import ModelConfig
from lmforge.models.base import Backbone, DecodeFn
from lmforge.models.init import init_gpt2
from lmforge.models.layers import MLP, Attention, KVCache


class GPT2Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attn_norm, self.attn = nn.LayerNorm(cfg.d_model, eps=cfg.eps, bias=cfg.bias), Attention(cfg, causal=True)
        self.mlp_norm, self.mlp = nn.LayerNorm(cfg.d_model, eps=cfg.eps, bias=cfg.bias), MLP(cfg)

    def forward(self, x: Tensor, mask: Tensor | None, cache: KVCache | None) -> Tensor:
        a = self.attn(self.attn_norm(x), mask, cache)
        x = x + a  # pre-norm; GPT-1 and BERT are post-norm: x = norm(x + attn(x))
        x = x + self.mlp(self.mlp_norm(x))
        return x


class GPT2(Backbone):
    """Token + learned position embeddings, pre-LN blocks, a final LayerNorm, tied LM head."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.max_seq_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(GPT2Block(cfg) for _ in range(cfg.n_layer))
        self.final_norm = nn.LayerNorm(cfg.d_model, eps=cfg.eps, bias=cfg.bias)
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
        x = self.drop(self.tok_emb(input_ids) + self.pos_emb(pos))
        x = self._run_decoder_blocks(x, attention_mask, cache)
        return self.final_norm(x)

    def decoder(self) -> DecodeFn:
        tok_emb, pos_emb = self.tok_emb.weight, self.pos_emb.weight
        return self._pre_norm_decoder(
            lambda tokens, pos: F.embedding(tokens, tok_emb) + F.embedding(pos[:, 0], pos_emb)
        )
