"""Predictions and metrics of a fine-tuned model on encoded task data (lmforge.data.finetune).

`predict` runs the model over every example in batches (longest first, to pad little) and returns one record
per example in input order: `label` and `probs` (classification), `score` (regression), `tags` (one per word,
token-classification) or `text` (generated, text-to-text). `task_metrics` compares those records with the gold
labels through lmforge.evaluation.metrics, from the collected predictions of the whole set.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lmforge.data.finetune import Encoded, iterate_in_order
from lmforge.data.tasks import TaskData
from lmforge.evaluation.metrics import classification_metrics, entity_metrics, regression_metrics, text_metrics


@dataclass(frozen=True)
class GenerationSettings:
    """How text-to-text predictions are generated (greedy by default, as the evaluation of record)."""

    max_new_tokens: int = 64
    num_beams: int = 1


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _batches(
    model: nn.Module, encoded: Encoded, pad_id: int, batch_size: int
) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    device = _device(model)
    for indices, batch in iterate_in_order(encoded.examples, batch_size, pad_id, encoded.task):
        yield list(indices), {k: v.to(device) for k, v in batch.items()}


@torch.no_grad()
def predict(
    model: nn.Module,
    encoded: Encoded,
    *,
    pad_id: int,
    batch_size: int = 64,
    label_names: list[str] | None = None,
    tokenizer: Any = None,
    generation: GenerationSettings | None = None,
    progress: Any = None,
    data: TaskData | None = None,
) -> list[dict[str, Any]]:
    """One prediction record per encoded example, in the order of `encoded.examples`.

    Args:
        label_names: names for class ids and tag ids (records then carry names, not ids).
        tokenizer: text-to-text: decodes the generated ids.
        progress: a tqdm-like bar, advanced by the number of examples done.
        data: token-classification: the rows the examples came from, so words cut by truncation still get a
            tag ("O") and every record has one tag per word.
    """
    was_training = model.training
    model.eval()
    try:
        if encoded.task == "text-to-text":
            return _generate_all(model, encoded, tokenizer, generation or GenerationSettings(), batch_size, progress)
        records: list[dict[str, Any] | None] = [None] * len(encoded)
        for indices, batch in _batches(model, encoded, pad_id, batch_size):
            out = model(
                batch["input_ids"], attention_mask=batch["attention_mask"], token_type_ids=batch.get("token_type_ids")
            )
            logits = out.logits.float()
            for j, i in enumerate(indices):
                n_words = len(data.texts[encoded.source_rows[i]]) if data is not None else None
                records[i] = _record(encoded, i, logits[j], batch["labels"][j], label_names, n_words)
            if progress is not None:
                progress.update(len(indices))
        return records  # type: ignore[return-value]
    finally:
        model.train(was_training)


def _record(
    encoded: Encoded, i: int, logits: torch.Tensor, labels: torch.Tensor, names: list[str] | None, n_words: int | None
) -> dict[str, Any]:
    if encoded.task == "classification":
        probs = logits.softmax(-1)
        k = int(probs.argmax())
        return {"label": names[k] if names else k, "probs": [round(float(p), 6) for p in probs]}
    if encoded.task == "regression":
        return {"score": float(logits[0])}
    # token-classification: one tag per word, read at each word's first sub-token (labels != -100 there)
    ex = encoded.examples[i]
    first = (labels != -100).nonzero().flatten()
    ids = logits[first].argmax(-1).tolist()
    outside = "O" if not names or "O" in names else names[0]
    tags: list[Any] = [outside] * (n_words if n_words is not None else len(ex["word_starts"]))
    for word, tag in zip(ex["word_starts"], ids):
        tags[word] = names[tag] if names else tag
    return {"tags": tags}


def _generate_all(
    model: nn.Module,
    encoded: Encoded,
    tokenizer: Any,
    settings: GenerationSettings,
    batch_size: int,
    progress: Any,
) -> list[dict[str, Any]]:
    from lmforge.generation import generate

    if tokenizer is None:
        raise ValueError("text-to-text prediction needs the tokenizer to decode the generated text")
    eos = tokenizer.eos_id
    order = sorted(range(len(encoded)), key=lambda i: -encoded.examples[i]["prompt_len"])
    records: list[dict[str, Any] | None] = [None] * len(encoded)
    ctx = model.cfg.max_seq_len
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        prompts = []
        for i in chunk:
            ex = encoded.examples[i]
            prompt = ex["input_ids"][: ex["prompt_len"]]
            if len(prompt) + settings.max_new_tokens > ctx:  # keep the prompt's end, next to where the answer goes
                prompt = prompt[-(ctx - settings.max_new_tokens) :]
            prompts.append(prompt)
        new = generate(
            model,
            prompts,
            max_new_tokens=settings.max_new_tokens,
            num_beams=settings.num_beams,
            eos_token_id=eos,
            pad_token_id=eos if eos is not None else 0,
        )
        for i, row in zip(chunk, new.tolist()):
            if eos is not None and eos in row:
                row = row[: row.index(eos)]
            records[i] = {"text": tokenizer.decode(row, skip_special_tokens=True).strip()}
        if progress is not None:
            progress.update(len(chunk))
    return records  # type: ignore[return-value]


def task_metrics(
    encoded: Encoded, data: TaskData, records: list[dict[str, Any]], label_names: list[str] | None = None
) -> dict[str, float]:
    """The task's metrics of `records` (from `predict`) against the gold labels of `data`'s rows."""
    rows = encoded.source_rows
    if encoded.task == "classification":
        index = {n: k for k, n in enumerate(label_names)} if label_names else None
        pred = [index[r["label"]] if index else r["label"] for r in records]
        return classification_metrics([data.labels[row] for row in rows], pred, len(label_names or []) or None)
    if encoded.task == "regression":
        return regression_metrics([data.labels[row] for row in rows], [r["score"] for r in records])
    if encoded.task == "token-classification":
        names = label_names or data.label_names or []
        gold = [[names[t] for t in data.labels[row]] for row in rows]
        pred = [[str(t) for t in r["tags"]] for r in records]
        return entity_metrics(gold, pred)
    return text_metrics([r["text"] for r in records], [data.labels[row] for row in rows])
