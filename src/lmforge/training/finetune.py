"""Fine-tuning: a pretrained backbone, a fresh task head, labelled files, the same Trainer as pretraining.

    files -> TaskData (data/tasks.py) -> encoded examples (data/finetune.py) -> FinetuneBatches
    model_path -> load_backbone(path, head) -> [freeze | LoRA] -> Trainer(task, evaluator, monitor)
    every epoch: predictions on the whole validation set -> metrics -> best/ export (and early stopping)
    at the end: the best weights become the run directory's model; the test file is scored with them

The run directory is a model path for `evaluate`, `predict`, `generate` (text-to-text) and `convert to-hf`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lmforge.checkpoint.io import (
    CONFIG,
    WEIGHTS,
    BackboneLoad,
    load_backbone,
    resolve_model_dir,
    save_model,
    write_json_atomic,
)
from lmforge.checkpoint.state import unwrap
from lmforge.config import FinetuneConfig, HeadConfig, save_config
from lmforge.data.finetune import Encoded, FinetuneBatches, encode_examples, encode_pairs_apart
from lmforge.data.tasks import TaskData, read_task_file
from lmforge.errors import ConfigError, DataError, UsageError
from lmforge.tasks.supervised import SupervisedTask
from lmforge.training.logging import plot_runs
from lmforge.training.pretrain import check_run_dir
from lmforge.training.trainer import Monitor, Trainer, TrainResult, resolve_device, seed_everything

DECODERS = ("gpt1", "gpt2", "modern")
BEST = "best"  # run_dir/best/: the export of the best validation evaluation so far


@dataclass
class TaskFiles:
    """The read and encoded files of one run."""

    train: TaskData
    validation: TaskData
    test: TaskData | None
    encoded: dict[str, Encoded]
    label_names: list[str] | None
    max_length: int


@dataclass
class FinetuneResult:
    """Where a fine-tuning run left things, and its numbers."""

    run_dir: Path
    cfg: FinetuneConfig
    train: TrainResult
    best: dict[str, Any] | None  # the best validation row
    test: dict[str, Any] | None  # metrics on the test file with the best weights
    load: BackboneLoad
    data_report: dict[str, Any]  # rows read, skipped, truncated per split
    trainable_params: int
    n_params: int


def _head_for(cfg: FinetuneConfig, label_names: list[str] | None, train: TaskData) -> HeadConfig:
    if cfg.task == "regression" and cfg.pair_encoding == "bi":
        top = max((abs(float(y)) for y in train.labels), default=1.0)  # STS-B: 5, so cos is trained against score / 5
        return HeadConfig(kind="cosine", num_labels=1, scale=top or 1.0)
    if cfg.task == "classification":
        return HeadConfig(kind="sequence", num_labels=len(label_names or []))
    if cfg.task == "regression":
        return HeadConfig(kind="sequence", num_labels=1)
    if cfg.task == "token-classification":
        return HeadConfig(kind="token", num_labels=len(label_names or []))
    return HeadConfig(kind="lm")


def check_task_fits_family(task: str, family: str, where: str) -> None:
    """A BERT encoder cannot generate; say which family fits."""
    if task == "text-to-text" and family not in DECODERS:
        raise ConfigError(
            f"{where} is a {family!r} model; text-to-text generates its targets and needs a decoder "
            f"({', '.join(DECODERS)}); a BERT encoder fits classification, regression and token-classification"
        )


def read_files(cfg: FinetuneConfig, tokenizer: Any, model_max_len: int) -> TaskFiles:
    """Read, augment and encode the train / validation / test files of `cfg`."""
    d = cfg.data
    if not d.train:
        raise UsageError("no training file: pass --train FILE")
    if not d.validation:
        raise UsageError("no validation file: pass --validation FILE (it picks the best checkpoint)")
    for name, path in (("--train", d.train), ("--validation", d.validation), ("--test", d.test)):
        if path and not Path(path).is_file():
            raise DataError(f"{name} {path}: no such file")
    cols = {"text_column": d.text_column, "label_column": d.label_column, "text_pair_column": d.text_pair_column}
    train = read_task_file(d.train, cfg.task, **cols)
    names = train.label_names
    if cfg.task == "classification" and names is not None and len(names) < 2:
        raise DataError(f"{d.train}: only one label ({names}) in column {d.label_column!r}; classification needs two")
    val = read_task_file(d.validation, cfg.task, **cols, label_names=names, allow_unseen_labels=True)
    test = read_task_file(d.test, cfg.task, **cols, label_names=names, allow_unseen_labels=True) if d.test else None
    if d.augment == "eda":
        train = augment(train, cfg)
    max_length = d.max_length or min(128 if cfg.task != "text-to-text" else 256, model_max_len)
    if max_length > model_max_len:
        raise ConfigError(
            f"data.max_length={max_length} is longer than the model's {model_max_len} positions (model.max_seq_len)"
        )
    encoded = {}
    for split, data in (("train", train), ("validation", val), ("test", test)):
        if data is not None and cfg.pair_encoding == "bi":
            encoded[split] = encode_pairs_apart(data, tokenizer, max_length)
        elif data is not None:
            encoded[split] = encode_examples(data, tokenizer, max_length, template=d.template)
            if not encoded[split].examples:
                raise DataError(f"{data.path}: no usable rows (all {len(data)} are empty)")
    return TaskFiles(train, val, test, encoded, names, max_length)


def augment(train: TaskData, cfg: FinetuneConfig) -> TaskData:
    """The training data with EDA copies of every example (classification and regression only)."""
    from lmforge.data.augment import EDAConfig, augment_examples

    if cfg.task not in ("classification", "regression"):
        raise ConfigError(f"data.augment=eda edits sentences; it fits classification and regression, not {cfg.task}")
    eda = EDAConfig(alpha=cfg.data.augment_alpha, n_aug=cfg.data.augment_copies)
    texts, labels, pairs = augment_examples(train.texts, train.labels, eda, cfg.train.seed, train.text_pairs)
    return dataclasses.replace(train, texts=texts, labels=labels, text_pairs=pairs)


def balanced_class_weights(labels: list[int], num_labels: int) -> Tensor:
    """n / (k * count(c)) per class c: scikit-learn's class_weight="balanced"."""
    counts = Counter(labels)
    n = len(labels)
    return torch.tensor([n / (num_labels * max(counts.get(c, 0), 1)) for c in range(num_labels)])


def data_report(files: TaskFiles) -> dict[str, Any]:
    """Rows, skipped empty rows, truncated examples and unseen labels per split (what the user is told)."""
    out: dict[str, Any] = {"max_length": files.max_length}
    for split, enc in files.encoded.items():
        data = {"train": files.train, "validation": files.validation, "test": files.test}[split]
        row = {"rows": len(data), "examples": len(enc), "skipped_empty": enc.skipped_empty, "truncated": enc.truncated}
        if data.task == "classification":
            row["unseen_labels"] = sum(1 for y in data.labels if y == -1)
        out[split] = row
    return out


def _prepare_model(cfg: FinetuneConfig, load: BackboneLoad) -> nn.Module:
    model = load.model
    if cfg.freeze_encoder:
        for p in model.backbone.parameters():
            p.requires_grad_(False)
    if cfg.lora.rank:
        from lmforge.models.lora import apply_lora

        apply_lora(model, cfg.lora.rank, cfg.lora.alpha, cfg.lora.targets, cfg.lora.dropout)
    return model


def export_plain(model: nn.Module, out: Path, tokenizer: Any) -> None:
    """Save `model` as an lmforge export; LoRA adapters are merged into a copy first, so the file is a plain model."""
    model = unwrap(model)
    if any(type(m).__name__ == "LoRALinear" for m in model.modules()):
        from lmforge.models.lora import merge_lora

        model = copy.deepcopy(model)
        merge_lora(model)
    save_model(model, out, tokenizer)


def finetune(
    cfg: FinetuneConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> FinetuneResult:
    """Fine-tune `cfg.model_path` on `cfg.task` into `run_dir`; see the module docstring for the steps."""
    from lmforge.evaluation.tasks import GenerationSettings, predict, task_metrics
    from lmforge.tokenizers import load_tokenizer

    run_dir = Path(run_dir)
    if not cfg.model_path:
        raise UsageError("no model: pass --model PATH (a run directory, an lmforge export or a Hugging Face dir)")
    check_run_dir(run_dir, resume, overwrite)
    if overwrite:
        shutil.rmtree(run_dir / BEST, ignore_errors=True)
    source = resolve_model_dir(cfg.model_path)
    check_task_fits_family(cfg.task, source.cfg.family, cfg.model_path)
    tokenizer = load_tokenizer(cfg.model_path)
    pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else (tokenizer.eos_id or 0)
    files = read_files(cfg, tokenizer, source.cfg.max_seq_len)
    report = data_report(files)
    head = _head_for(cfg, files.label_names, files.train)
    if cfg.task == "classification" and source.cfg.family in DECODERS:
        head = dataclasses.replace(head, pad_token_id=pad_id)

    t = cfg.train
    batches = FinetuneBatches(files.encoded["train"].examples, t.batch_size, pad_id, cfg.task, t.seed)
    # an optimizer step takes grad_accum micro-batches of batch_size rows
    steps_per_epoch = -(-batches.steps_per_epoch // t.grad_accum)
    max_steps = t.epochs * steps_per_epoch if t.epochs else t.max_steps
    warmup = t.warmup_steps or round(cfg.warmup_ratio * max_steps)
    eval_every = t.eval_every or steps_per_epoch
    train_cfg = dataclasses.replace(
        t,
        max_steps=max_steps,
        warmup_steps=warmup,
        eval_every=eval_every,
        checkpoint_every=t.checkpoint_every or eval_every,
    )
    cfg = dataclasses.replace(cfg, model=source.cfg, head=head)
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume and (run_dir / "config.yaml").is_file():
        _check_same_run(cfg, run_dir)
    save_config(cfg, run_dir / "config.yaml")
    write_json_atomic(run_dir / "labels.json", {"task": cfg.task, "labels": files.label_names})
    tokenizer.save(run_dir)

    device = resolve_device(t.device)
    seed_everything(t.seed)
    weights = None
    if cfg.class_weights == "balanced" and cfg.task == "classification":
        weights = balanced_class_weights(files.train.labels, head.num_labels)
    load = load_backbone(cfg.model_path, head, labels=files.label_names, class_weights=weights, seed=t.seed)
    model = _prepare_model(cfg, load).to(device)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_params = sum(p.numel() for p in model.parameters())

    val_enc = files.encoded["validation"]
    generation = GenerationSettings(max_new_tokens=cfg.max_new_tokens or _longest_target(files.encoded["train"]))

    def evaluator(m: nn.Module) -> dict[str, Any]:
        records = predict(
            m,
            val_enc,
            pad_id=pad_id,
            label_names=files.label_names,
            tokenizer=tokenizer,
            data=files.validation,
            generation=generation,
        )
        return task_metrics(val_enc, files.validation, records, files.label_names)

    def on_best(m: nn.Module, row: dict[str, Any]) -> None:
        export_plain(m, run_dir / BEST, tokenizer)
        write_json_atomic(run_dir / BEST / "metrics.json", row)

    monitor = Monitor(metric=cfg.monitor_metric, mode="max", patience=cfg.patience, on_best=on_best)
    if progress:
        print(load.summary(), file=sys.stderr)
        print(_report_line(report), file=sys.stderr)
    trainer = Trainer(
        train_cfg,
        torch.compile(model) if t.compile else model,
        SupervisedTask(cfg.task),
        batches,
        run_dir=run_dir,
        progress=progress,
        evaluator=evaluator,
        monitor=monitor,
    )
    result = trainer.fit(resume=resume, stop_after=stop_after)
    best_file = run_dir / BEST / "metrics.json"
    best_row = json.loads(best_file.read_text()) if (run_dir / BEST / CONFIG).is_file() else None
    test_row = None
    if result.status in ("completed", "early-stopped") and best_row is not None:
        for name in (CONFIG, WEIGHTS):  # the best weights are the run's model
            shutil.copyfile(run_dir / BEST / name, run_dir / f".{name}.tmp")
            (run_dir / f".{name}.tmp").replace(run_dir / name)
        if files.test is not None:
            from lmforge.checkpoint.io import load_model

            best = load_model(run_dir, device=device)
            test_enc = files.encoded["test"]
            records = predict(
                best,
                test_enc,
                pad_id=pad_id,
                label_names=files.label_names,
                tokenizer=tokenizer,
                data=files.test,
                generation=generation,
            )
            metrics = task_metrics(test_enc, files.test, records, files.label_names)
            test_row = {"step": result.step, "split": "test", **metrics}
            with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(test_row) + "\n")
        write_json_atomic(run_dir / "results.json", {"best_val": best_row, "test": test_row, "data": report})
        plot_runs([run_dir], run_dir / "loss.png")
    return FinetuneResult(run_dir, cfg, result, best_row, test_row, load, report, trainable, n_params)


def _longest_target(encoded: Encoded) -> int:
    """Target tokens (EOS included) of the longest training example: enough to generate any answer seen."""
    if encoded.task != "text-to-text":
        return 1
    return max(sum(1 for y in ex["labels"] if y != -100) for ex in encoded.examples)


def _report_line(report: dict[str, Any]) -> str:
    parts = []
    for split in ("train", "validation", "test"):
        if split in report:
            r = report[split]
            extra = [f"{r['skipped_empty']} empty skipped"] if r["skipped_empty"] else []
            extra += [f"{r['truncated']} truncated to {report['max_length']} tokens"] if r["truncated"] else []
            extra += [f"{r['unseen_labels']} with labels unseen in training"] if r.get("unseen_labels") else []
            parts.append(f"{split}: {r['examples']:,} examples" + (f" ({', '.join(extra)})" if extra else ""))
    return "; ".join(parts)


def _check_same_run(cfg: FinetuneConfig, run_dir: Path) -> None:
    """--resume must continue the same model, head and task."""
    from lmforge.config import load_config

    saved = load_config(run_dir / "config.yaml", cls=FinetuneConfig)
    for name in ("task", "model", "head", "lora", "freeze_encoder"):
        if getattr(saved, name) != getattr(cfg, name):
            raise ConfigError(
                f"--resume: {run_dir}/config.yaml was fine-tuned with another {name} "
                f"({getattr(saved, name)!r}, now {getattr(cfg, name)!r}); start a new run to change it"
            )
