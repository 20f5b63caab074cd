"""Predictions and metrics of a fine-tuned model on encoded task data (lmforge.data.finetune).

`predict` runs the model over every example in batches (longest first, to pad little) and returns one record
per example in input order: `label` and `probs` (classification), `score` (regression), `tags` (one per word,
token-classification) or `text` (generated, text-to-text). `task_metrics` compares those records with the gold
labels through lmforge.evaluation.metrics, from the collected predictions of the whole set.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmforge.data.finetune import Encoded, iterate_in_order
from lmforge.data.tasks import TaskData
from lmforge.errors import DataError, UsageError
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
    max_new = min(settings.max_new_tokens, ctx - 1)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        prompts = []
        for i in chunk:
            ex = encoded.examples[i]
            prompt = ex["input_ids"][: ex["prompt_len"]]
            if len(prompt) + max_new > ctx:  # keep the prompt's end, next to where the answer goes
                prompt = prompt[-(ctx - max_new) :]
            prompts.append(prompt)
        new = generate(
            model,
            prompts,
            max_new_tokens=max_new,
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


# --- files in, metrics or records out (what `lmforge evaluate` and `lmforge predict` call) ---------------------
HEAD_TASKS = {
    "sequence": ("classification", "regression"),
    "cosine": ("regression",),
    "token": ("token-classification",),
    "lm": ("text-to-text",),
}


@dataclass
class TaskSettings:
    """What a fine-tuned run directory says about its task (config.yaml), with the caller's flags on top."""

    task: str
    pairs_apart: bool  # a bi-encoder (cosine head): each sentence of a pair is encoded alone
    text_column: str | None
    text_pair_column: str | None
    label_column: str | None
    max_length: int
    template: str


def task_settings(
    model_path: str | Path,
    model: nn.Module,
    task: str | None = None,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    max_length: int | None = None,
    template: str | None = None,
) -> TaskSettings:
    """The task and columns for `model`: the flags given, else the fine-tuning run's config.yaml, else defaults."""
    saved: dict[str, Any] = {}
    cfg_file = Path(model_path) / "config.yaml"
    if cfg_file.is_file():
        import yaml

        raw = yaml.safe_load(cfg_file.read_text(encoding="utf-8")) or {}
        if isinstance(raw, dict) and "task" in raw:
            saved = {"task": raw["task"], **(raw.get("data") or {})}
    kind = model.head_cfg.kind
    fits = HEAD_TASKS.get(kind, ())
    if task is None:
        task = saved.get("task") or (
            "regression" if kind == "sequence" and model.head_cfg.num_labels == 1 else (fits[0] if fits else None)
        )
    if task is None:
        raise UsageError(f"{model_path}: a model with a {kind!r} head has no task to evaluate; pass --task")
    if task != "lm" and task not in fits:
        raise UsageError(
            f"--task {task}: {model_path} has a {kind!r} head, which fits "
            f"{', '.join(fits) or 'no fine-tuning task'}" + ("; language models take --task lm" if kind == "lm" else "")
        )
    if task == "regression" and model.head_cfg.num_labels != 1:
        raise UsageError(f"--task regression: {model_path} is a {model.head_cfg.num_labels}-class classifier")
    if task == "classification" and model.head_cfg.num_labels == 1:
        raise UsageError(f"--task classification: {model_path} has one output (a regression head)")
    pick = lambda given, key: given if given is not None else saved.get(key)  # noqa: E731
    length = max_length or saved.get("max_length") or min(128 if task != "text-to-text" else 256, model.cfg.max_seq_len)
    return TaskSettings(
        task,
        kind == "cosine",
        pick(text_column, "text_column"),
        pick(text_pair_column, "text_pair_column"),
        pick(label_column, "label_column"),
        min(int(length), model.cfg.max_seq_len),
        pick(template, "template") or "default",
    )


def read_inputs(path: str | Path, settings: TaskSettings, label_names: list[str] | None, with_labels: bool) -> TaskData:
    """The rows of `path` for `settings.task`; without labels (predict), a label column is not needed."""
    from lmforge.data.tasks import read_task_file

    s = settings
    cols = {"text_column": s.text_column, "text_pair_column": s.text_pair_column}
    if with_labels or s.label_column is not None and _has_column(path, s.label_column):
        return read_task_file(
            path, s.task, label_column=s.label_column, label_names=label_names, allow_unseen_labels=True, **cols
        )
    if s.task == "token-classification":
        data = read_task_file(path, s.task, s.text_column, s.text_column, label_names=None)  # tokens only
        return TaskData(s.task, data.path, data.texts, [[0] * len(w) for w in data.texts], None, label_names)
    if s.task == "text-to-text" and Path(path).suffix.lower() not in (".csv", ".tsv", ".jsonl", ".json"):
        from lmforge.data.reading import decode_utf8  # one source per line

        lines = decode_utf8(Path(path).read_bytes())[0].splitlines()
        return TaskData(s.task, Path(path), lines, [""] * len(lines))
    return read_task_file(path, s.task, require_labels=False, label_names=label_names, **cols)


def _has_column(path: str | Path, column: str) -> bool:
    from lmforge.data.tasks import _columns_of

    try:
        return column in _columns_of(Path(path), None, None) or column.isdigit()
    except DataError:  # a file we cannot read columns from: the reader names the problem
        return True


def encode_for_prediction(data: TaskData, tokenizer: Any, settings: TaskSettings) -> Encoded:
    """Encoded examples of `data`; text-to-text rows become bare prompts (their targets may be empty)."""
    from lmforge.data.finetune import TEMPLATES, PromptTemplate, encode_examples, encode_pairs_apart, encode_prompt

    if settings.pairs_apart:
        return encode_pairs_apart(data, tokenizer, settings.max_length)
    if settings.task != "text-to-text":
        return encode_examples(data, tokenizer, settings.max_length)
    template = PromptTemplate(TEMPLATES.get(settings.template, settings.template))
    out = Encoded("text-to-text")
    for row, source in enumerate(data.texts):
        if not str(source).strip():
            out.skipped_empty += 1
            continue
        ids = encode_prompt(tokenizer, source, template)
        if len(ids) > settings.max_length:
            out.truncated += 1
            keep = max(1, len(tokenizer.encode(source)) - (len(ids) - settings.max_length))
            ids = encode_prompt(tokenizer, source, template, keep)
        out.add(row, {"input_ids": ids, "labels": [-100] * len(ids), "prompt_len": len(ids)})
    return out


@torch.no_grad()
def language_model_eval(
    model: nn.Module, tokenizer: Any, path: str | Path, batch_size: int = 8, progress: Any = None
) -> dict[str, float]:
    """Perplexity and bits per character of a decoder on a text file.

    The file's tokens are cut into consecutive windows of model.max_seq_len + 1 (inputs and next-token labels);
    every token after the first is predicted once, from at most a window of context (no overlap, as nanoGPT's
    and lm-eval's rolling loglikelihood without stride). Bits per character divide by the file's characters.
    """
    from lmforge.data.reading import decode_utf8
    from lmforge.evaluation.metrics import language_model_metrics

    if model.cfg.family == "bert":
        raise UsageError(
            "--task lm computes a decoder's perplexity; a BERT model's masked-LM loss is what `lmforge pretrain` "
            "reports on its validation split"
        )
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    text, _ = decode_utf8(p.read_bytes())
    ids = tokenizer.encode(text)
    if len(ids) < 2:
        raise DataError(f"{p}: {len(ids)} tokens; perplexity needs at least 2")
    T = model.cfg.max_seq_len
    device = next(model.parameters()).device
    windows = [ids[i : i + T + 1] for i in range(0, len(ids) - 1, T)]
    loss_sum, tokens = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(windows), batch_size):
            chunk = windows[start : start + batch_size]
            width = max(len(w) for w in chunk) - 1
            x = torch.zeros(len(chunk), width, dtype=torch.long)
            y = torch.full((len(chunk), width), -100, dtype=torch.long)
            for r, w in enumerate(chunk):
                x[r, : len(w) - 1] = torch.tensor(w[:-1])
                y[r, : len(w) - 1] = torch.tensor(w[1:])
            n = int((y != -100).sum())
            out = model(x.to(device), labels=y.to(device))
            loss_sum += float(out.loss) * n
            tokens += n
            if progress is not None:
                progress.update(len(chunk))
    finally:
        model.train(was_training)
    return language_model_metrics(loss_sum, tokens, len(text))
