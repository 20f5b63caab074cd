"""Task heads: each turns a backbone's hidden states into its task's logits and, given labels, its loss.

    LMHead        next-token logits (decoders); loss: cross-entropy fused with the projection
    MLMHead       BERT's masked-LM head; runs only on the masked positions when given labels
    SequenceHead  one output vector per input (classification; regression with one output, MSE loss)
    TokenHead     one output vector per token (NER); labels -100 are ignored
    CosineHead    a bi-encoder: cosine of two mean-pooled sentences (similarity regression), no weights
    PoolerHead    no task: BERT's [CLS] pooler only (Hugging Face's BertModel), nothing for decoders

A head owns its loss so that the loss is computed inside `TaskModel.forward`: DDP then sees every weight
used, and a fused loss (tasks/losses.py) never builds the (N, V) logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmforge.config import HeadConfig, ModelConfig
from lmforge.models.layers import activation
from lmforge.tasks.losses import linear_cross_entropy


@dataclass
class HeadOutput:
    """What a head returns: logits unless a fused loss made them unnecessary, the loss when given labels."""

    logits: Tensor | None = None  # (B, T, V) lm; (B, T, V) or (N, V) mlm; (B, L) sequence; (B, T, L) token
    loss: Tensor | None = None  # fp32 mean over the labelled items
    pooled: Tensor | None = None  # (B, C): BERT's pooled [CLS], or a decoder's last real token


class LMHead(nn.Module):
    """Next-token logits: one linear map to the vocabulary, tied to the token embedding by default."""

    tied = "proj.weight"  # the parameter that shares the token embedding when model.tie_embeddings

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.proj = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)

    def forward(
        self,
        h: Tensor,
        attention_mask: Tensor | None,
        labels: Tensor | None,
        keep_logits: bool,
        input_ids: Tensor | None = None,
    ) -> HeadOutput:
        if labels is None:
            return HeadOutput(logits=self.proj(h))
        if keep_logits:
            logits = self.proj(h)
            loss = F.cross_entropy(logits.flatten(0, -2).float(), labels.flatten(), ignore_index=-100)
            return HeadOutput(logits=logits, loss=loss)
        # labels[:, t] is the token after input_ids[:, t]; the (B, T, V) logits never exist (tasks/losses.py)
        return HeadOutput(loss=linear_cross_entropy(h, self.proj.weight, labels, self.proj.bias))


class MLMHead(nn.Module):
    """BERT's masked-LM head: dense + GELU + LayerNorm, then a decoder tied to the token embeddings."""

    tied = "decoder.weight"

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.d_model, cfg.d_model)
        self.act = activation(cfg.act)
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.eps)
        self.decoder = nn.Linear(cfg.d_model, cfg.vocab_size, bias=True)

    def transform(self, h: Tensor) -> Tensor:
        """Everything before the decoder (dense, GELU, LayerNorm)."""
        return self.norm(self.act(self.dense(h)))

    def forward(
        self,
        h: Tensor,
        attention_mask: Tensor | None,
        labels: Tensor | None,
        keep_logits: bool,
        input_ids: Tensor | None = None,
    ) -> HeadOutput:
        if labels is None:
            return HeadOutput(logits=self.decoder(self.transform(h)))
        # only the ~15% selected positions: the V-wide decoder is about half of a small BERT's FLOPs, and
        # the other 85% of its output would be thrown away
        selected = labels != -100
        x, y = self.transform(h[selected]), labels[selected]  # (N, C), (N,)
        if keep_logits:
            logits = self.decoder(x)  # (N, V)
            loss = F.cross_entropy(logits.float(), y) if y.numel() else logits.sum() * 0.0
            return HeadOutput(logits=logits, loss=loss)
        return HeadOutput(loss=linear_cross_entropy(x, self.decoder.weight, y, self.decoder.bias))


class Pooler(nn.Module):
    """BERT's pooler: tanh(dense(h[:, 0])) over the [CLS] position."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, h: Tensor) -> Tensor:
        return torch.tanh(self.dense(h[:, 0]))


def last_token_index(real: Tensor | None, B: int, T: int, device: torch.device) -> Tensor:  # (B,)
    """Index of the last real token per row (`real` (B, T) is 1/True there), for decoder sequence heads."""
    if real is None:
        return torch.full((B,), T - 1, device=device, dtype=torch.long)
    positions = torch.arange(T, device=device)
    return (positions * real.bool()).argmax(-1)


def pool(h: Tensor, real: Tensor | None, pooler: Pooler | None) -> Tensor:
    """(B, C) summary of each row: BERT's pooled [CLS], or a decoder's last real token (it has seen them all)."""
    if pooler is not None:
        return pooler(h)
    B, T, _ = h.shape
    return h[torch.arange(B, device=h.device), last_token_index(real, B, T, h.device)]


class PoolerHead(nn.Module):
    """No task head: hidden states, plus BERT's [CLS] pooler, so a Hugging Face BertModel keeps every weight."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.pooler = Pooler(cfg) if cfg.family == "bert" else None

    def forward(
        self,
        h: Tensor,
        attention_mask: Tensor | None,
        labels: Tensor | None,
        keep_logits: bool,
        input_ids: Tensor | None = None,
    ) -> HeadOutput:
        if labels is not None:
            raise ValueError("a model without a task head has no loss; attach a head (lmforge.tasks.load_backbone)")
        return HeadOutput(pooled=pool(h, attention_mask, self.pooler))


class SequenceHead(nn.Module):
    """One output vector per input: pooled hidden state -> dropout -> linear (Devlin et al. 2018, section 4.1).

    With num_labels == 1 it is a regression head trained with MSE (e.g. STS-B similarity); otherwise a
    classifier trained with cross-entropy, optionally class-weighted.
    """

    def __init__(
        self, cfg: ModelConfig, num_labels: int, class_weights: Tensor | None = None, pad_token_id: int | None = None
    ) -> None:
        super().__init__()
        self.pooler = Pooler(cfg) if cfg.family == "bert" else None
        self.pad_token_id = pad_token_id
        self.dropout = nn.Dropout(cfg.dropout)
        # GPT-2's `score` layer has no bias (transformers' GPT2ForSequenceClassification); BERT's classifier has one
        bias = cfg.family == "bert" or (cfg.family == "modern" and cfg.bias)
        self.proj = nn.Linear(cfg.d_model, num_labels, bias=bias)
        # not persistent: a training option, not part of the exported model
        self.register_buffer("class_weights", class_weights, persistent=False)

    def forward(
        self,
        h: Tensor,
        attention_mask: Tensor | None,
        labels: Tensor | None,
        keep_logits: bool,
        input_ids: Tensor | None = None,
    ) -> HeadOutput:
        real = attention_mask
        if real is None and input_ids is not None and self.pad_token_id is not None:
            real = input_ids != self.pad_token_id
        pooled = pool(h, real, self.pooler)
        logits = self.proj(self.dropout(pooled))  # (B, L)
        loss = None
        if labels is not None and logits.shape[-1] == 1:
            loss = F.mse_loss(logits.squeeze(-1).float(), labels.float())
        elif labels is not None:
            weight = self.class_weights.float() if self.class_weights is not None else None
            loss = F.cross_entropy(logits.float(), labels, weight=weight, ignore_index=-100)
        return HeadOutput(logits=logits, loss=loss, pooled=pooled)


class TokenHead(nn.Module):
    """One output vector per token: dropout -> linear (NER tags); labels -100 (special and non-first pieces) ignored."""

    def __init__(self, cfg: ModelConfig, num_labels: int) -> None:
        super().__init__()
        self.dropout = nn.Dropout(cfg.dropout)
        self.proj = nn.Linear(cfg.d_model, num_labels, bias=True)

    def forward(
        self,
        h: Tensor,
        attention_mask: Tensor | None,
        labels: Tensor | None,
        keep_logits: bool,
        input_ids: Tensor | None = None,
    ) -> HeadOutput:
        logits = self.proj(self.dropout(h))  # (B, T, L)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)
        return HeadOutput(logits=logits, loss=loss)


class CosineHead(nn.Module):
    """A bi-encoder: rows [a_1..a_B, b_1..b_B] of the batch are mean-pooled and compared by cosine similarity.

    Prediction: scale * cos(a_i, b_i); loss: MSE(cos, label / scale), the CosineSimilarityLoss sentence-transformers
    trains STS-B with (Reimers & Gurevych 2019). BERT's pooler is kept, unused, so an export stays a full BertModel.
    """

    def __init__(self, cfg: ModelConfig, scale: float) -> None:
        super().__init__()
        self.pooler = Pooler(cfg) if cfg.family == "bert" else None
        if self.pooler is not None:
            self.pooler.requires_grad_(False)
        self.scale = scale

    def forward(
        self,
        h: Tensor,
        attention_mask: Tensor | None,
        labels: Tensor | None,
        keep_logits: bool,
        input_ids: Tensor | None = None,
    ) -> HeadOutput:
        if h.shape[0] % 2:
            raise ValueError(
                f"a cosine head needs the batch as two halves (sentences a, then b); got {h.shape[0]} rows"
            )
        m = (attention_mask if attention_mask is not None else torch.ones(h.shape[:2], device=h.device)).unsqueeze(-1)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)  # (2B, C) mean over real tokens
        a, b = pooled.float().chunk(2)
        cos = F.cosine_similarity(a, b, dim=-1)  # (B,)
        loss = F.mse_loss(cos, labels.float() / self.scale) if labels is not None else None
        return HeadOutput(logits=(cos * self.scale).unsqueeze(-1), loss=loss, pooled=pooled)


def build_head(cfg: ModelConfig, head: HeadConfig, class_weights: Tensor | None = None) -> nn.Module:
    """The head module `head` describes, for a backbone of `cfg`."""
    head.check_fits(cfg)
    if head.kind == "lm":
        return LMHead(cfg)
    if head.kind == "mlm":
        return MLMHead(cfg)
    if head.kind == "sequence":
        return SequenceHead(cfg, head.num_labels, class_weights, head.pad_token_id)
    if head.kind == "token":
        return TokenHead(cfg, head.num_labels)
    if head.kind == "cosine":
        return CosineHead(cfg, head.scale)
    return PoolerHead(cfg)
