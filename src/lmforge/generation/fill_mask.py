"""BERT fill-mask: the top-k tokens, with probabilities, for every mask token of an input.

All masks are predicted in one forward pass, each independently of the others (as in BERT's MLM
objective and the transformers fill-mask pipeline).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from lmforge.errors import UsageError
from lmforge.generation.config import GenerationConfigError
from lmforge.generation.generate import eval_mode
from lmforge.generation.kv_cache import model_device_dtype


class MaskTokenizer(Protocol):
    mask_id: int | None

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]: ...

    def id_to_token(self, token_id: int) -> str | None: ...


@dataclass
class MaskCandidate:
    token_id: int
    token: str
    probability: float


@dataclass
class MaskPrediction:
    """The candidates for one mask, most likely first."""

    position: int  # index of the mask in the encoded input (special tokens included)
    candidates: list[MaskCandidate]

    def to_dict(self) -> dict[str, object]:
        return {
            "position": self.position,
            "candidates": [
                {"token_id": c.token_id, "token": c.token, "probability": c.probability} for c in self.candidates
            ],
        }


def check_masked_lm(model: nn.Module) -> None:
    cfg = getattr(model, "cfg", None)
    head = getattr(getattr(model, "head_cfg", None), "kind", None)
    if cfg is None or cfg.family != "bert" or head != "mlm":
        got = f"family={cfg.family!r}, head={head!r}" if cfg is not None else type(model).__name__
        causal = cfg is not None and cfg.causal
        hint = ": a GPT model generates text, use generate / `lmforge generate`" if causal else ""
        raise UsageError(f"fill-mask needs a BERT-family model with an MLM head; got {got}{hint}")


@torch.inference_mode()
def mask_probabilities(
    model: nn.Module, input_ids: Tensor, mask_id: int, top_k: int = 5
) -> list[tuple[int, Tensor, Tensor]]:
    """For one input (T,) or (1, T): (position, top-k probabilities, top-k ids) for each mask position."""
    check_masked_lm(model)
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise GenerationConfigError(f"top_k={top_k!r} must be an integer >= 1")
    ids = input_ids.view(1, -1).long()
    positions = (ids[0] == mask_id).nonzero().flatten().tolist()
    if not positions:
        raise GenerationConfigError(f"the input has no mask token (id {mask_id}); put at least one in the text")
    ctx = model.cfg.max_seq_len
    if ids.shape[1] > ctx:
        raise GenerationConfigError(
            f"input of {ids.shape[1]} tokens exceeds the model's context of {ctx} tokens (model.max_seq_len)"
        )
    device, _ = model_device_dtype(model)
    with eval_mode(model):
        logits = model(ids.to(device)).logits[0, positions].float()  # (M, V)
    probs = logits.softmax(-1)
    k = min(top_k, probs.shape[-1])
    top = probs.topk(k, dim=-1)
    return [(p, top.values[i], top.indices[i]) for i, p in enumerate(positions)]


def fill_mask(
    model: nn.Module, tokenizer: MaskTokenizer, text: str | Sequence[str], top_k: int = 5
) -> list[MaskPrediction] | list[list[MaskPrediction]]:
    """Top-k candidates for every mask token in `text` (one list per text when given a list)."""
    if not isinstance(text, str):
        return [fill_mask(model, tokenizer, t, top_k) for t in text]  # type: ignore[misc]
    check_masked_lm(model)
    mask_id = getattr(tokenizer, "mask_id", None)
    if mask_id is None:
        raise UsageError("the tokenizer has no mask token; fill-mask needs a BERT-style (WordPiece) tokenizer")
    mask_token = tokenizer.id_to_token(mask_id)
    ids = tokenizer.encode(text, add_special_tokens=True)
    if mask_id not in ids:
        raise GenerationConfigError(
            f"text={text!r} has no mask token; write {mask_token} where a word should be predicted"
        )
    preds = []
    for pos, probs, top_ids in mask_probabilities(model, torch.tensor(ids), mask_id, top_k):
        cands = [
            MaskCandidate(int(i), tokenizer.id_to_token(int(i)) or "", float(p))
            for p, i in zip(probs.tolist(), top_ids.tolist())
        ]
        preds.append(MaskPrediction(pos, cands))
    return preds
