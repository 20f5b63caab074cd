"""TaskModel: a backbone (models/) with a task head (tasks/heads.py), the one module training, DDP/FSDP,
generation, evaluation and serving see.

Checkpoint keys are `backbone.*` (tok_emb, blocks.N.attn.qkv, ...) and `head.*` (proj, pooler.dense, ...).
Fine-tuning is `load_backbone(path, head)`: the pretrained backbone with a newly initialised head
(checkpoint/io.py).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lmforge.config import HeadConfig, ModelConfig
from lmforge.models import Backbone, KVCache, build_backbone
from lmforge.models.init import init_normal
from lmforge.tasks.heads import build_head


@dataclass
class TaskOutput:
    """What a TaskModel returns: hidden states always, logits unless a fused loss made them unnecessary."""

    last_hidden_state: Tensor  # (B, T, C)
    logits: Tensor | None = None  # (B, T, V) lm/mlm, (B, num_labels) sequence, (B, T, num_labels) token
    loss: Tensor | None = None  # when forward was given labels
    pooled: Tensor | None = None  # (B, C): BERT's pooled [CLS], or a decoder's last real token


class TaskModel(nn.Module):
    """`head(backbone(input_ids))`, tying an LM/MLM decoder to the token embedding when the config says so."""

    def __init__(
        self, backbone: Backbone, head: nn.Module, head_cfg: HeadConfig, labels: list[str] | None = None
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.head_cfg = head_cfg
        self.labels = labels  # names of a classifier's outputs or a tagger's tags, when known
        self.tie_weights()

    @property
    def cfg(self) -> ModelConfig:
        """The backbone's config (family, shape)."""
        return self.backbone.cfg

    @property
    def tied_key(self) -> str | None:
        """State-dict key of the head weight shared with `backbone.tok_emb.weight`, if any."""
        tied = getattr(self.head, "tied", None)
        return f"head.{tied}" if tied and self.cfg.tie_embeddings else None

    def tie_weights(self) -> None:
        """Share the token embedding with the LM/MLM decoder; call again after `to_empty`."""
        if self.tied_key is None:
            return
        owner, name = self.head, self.head.tied
        *path, leaf = name.split(".")
        for part in path:
            owner = getattr(owner, part)
        setattr(owner, leaf, self.backbone.tok_emb.weight)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        cache: list[KVCache] | None = None,
        labels: Tensor | None = None,
        keep_logits: bool = False,
    ) -> TaskOutput:
        """Hidden states, then the head; with `labels`, the head's loss too.

        Args:
            labels: the task's targets (-100 = ignore); for lm they are already shifted (labels[:, t] is the
                token after input_ids[:, t]).
            keep_logits: with labels, also return the logits (evaluation); for lm/mlm training leave it off,
                so the loss is fused with the decoder and the (N, V) logits are never built.
        """
        h = self.backbone.encode(input_ids, attention_mask, token_type_ids, position_ids, cache)
        out = self.head(h, attention_mask, labels, keep_logits, input_ids)
        return TaskOutput(last_hidden_state=h, logits=out.logits, loss=out.loss, pooled=out.pooled)


def build_model(
    cfg: ModelConfig,
    head: HeadConfig | str | None = None,
    *,
    device: str | torch.device | None = None,
    labels: list[str] | None = None,
    class_weights: Tensor | None = None,
) -> TaskModel:
    """A freshly initialised backbone with `head` ("lm", "mlm", ... or a HeadConfig); on device="meta", no memory.

    head=None is the family's pretraining head: mlm for BERT, lm for the decoders.
    """
    if head is None:
        head = "mlm" if cfg.family == "bert" else "lm"
    head_cfg = HeadConfig(kind=head) if isinstance(head, str) else head
    with torch.device(device) if device is not None else contextlib.nullcontext():
        backbone = build_backbone(cfg)
        head_module = build_head(cfg, head_cfg, class_weights)
        # N(0, init_std) as BERT/GPT initialise their heads; before tying, so the tied embedding keeps its init
        init_normal(head_module, std=cfg.init_std)
        return TaskModel(backbone, head_module, head_cfg, labels)
