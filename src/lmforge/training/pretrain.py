"""`pretrain`: config -> tokenizer -> token shards -> model -> Trainer -> run directory; the CLI is a thin shell.

Run directory (see DESIGN.md)::

    RUN/config.yaml            the resolved config: `lmforge pretrain --config RUN/config.yaml` repeats the run
    RUN/tokenizer.json         trained here or copied from tokenizer.path / the prepared data
    RUN/data/                  token shards, when raw files were given (prepared on the fly)
    RUN/checkpoints/step-N/    model, optimizer, sampler position, RNG states (checkpoint/state.py)
    RUN/metrics.jsonl          one JSON object per logged step / evaluation
    RUN/tensorboard/           TensorBoard events
    RUN/loss.png               train/val loss and learning rate against step and tokens
    RUN/model.safetensors      final weights + RUN/config.json (checkpoint/io.py), written when the run completes
"""

from __future__ import annotations

import dataclasses
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmforge.checkpoint.state import list_checkpoints, unwrap
from lmforge.config import RunConfig, config_to_dict, head_for_objective, save_config
from lmforge.errors import ConfigError, DataError, UsageError
from lmforge.tasks import build_model, build_task
from lmforge.training.logging import METRICS_FILE, TB_DIR, plot_runs
from lmforge.training.trainer import Trainer, TrainResult, resolve_device, seed_everything

# What marks a directory as holding a run, and what --overwrite removes (nothing else is touched).
RUN_FILES = ("config.yaml", "tokenizer.json", "model.safetensors", "config.json", METRICS_FILE, "loss.png")
RUN_DIRS = ("checkpoints", TB_DIR, "data")


@dataclass
class PretrainResult:
    """Where a pretraining run left things, and its numbers."""

    run_dir: Path
    cfg: RunConfig  # as resolved (vocab size from the tokenizer)
    train: TrainResult
    n_params: int
    final_val: dict[str, Any] | None  # the last evaluation row, if any
    model: torch.nn.Module
    tokenizer: Any
    saved_model: Path | None  # RUN when the final weights were written (the run completed)


def check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to write over another run unless asked to continue it (resume) or replace it (overwrite)."""
    if resume and overwrite:
        raise UsageError("--resume and --overwrite contradict each other; pick one")
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--out {run_dir}: exists and is not a directory")
    present = [n for n in RUN_FILES if (run_dir / n).exists()] + [n for n in RUN_DIRS if (run_dir / n).exists()]
    if not present or resume:
        return
    if overwrite:
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
        for name in RUN_DIRS:
            shutil.rmtree(run_dir / name, ignore_errors=True)
        return
    steps = list_checkpoints(run_dir)
    what = f"checkpoints up to step {steps[-1][0]}" if steps else ", ".join(present[:3])
    raise UsageError(
        f"{run_dir} already holds a run ({what}); pass --resume to continue it, --overwrite to replace it, "
        "or choose another --out"
    )


def _is_prepared(path: str) -> bool:
    return Path(path).is_dir() and (Path(path) / "meta.json").is_file()


def _tokenizer_for(cfg: RunConfig, run_dir: Path, resume: bool, progress: bool) -> Any:
    from lmforge.tokenizers import load_tokenizer, train_tokenizer

    saved = run_dir / "tokenizer.json"
    if resume and saved.is_file():
        return load_tokenizer(saved)
    if cfg.tokenizer.path:
        return load_tokenizer(cfg.tokenizer.path)
    paths = list(cfg.data.paths)
    if len(paths) == 1 and _is_prepared(paths[0]):
        return load_tokenizer(Path(paths[0]) / "tokenizer.json")
    kind = cfg.tokenizer.kind or ("wordpiece" if cfg.model.family == "bert" else "bpe")
    return train_tokenizer(
        kind,
        [Path(p) for p in paths],
        cfg.tokenizer.vocab_size,
        lowercase=cfg.tokenizer.lowercase,
        max_bytes=cfg.tokenizer.max_train_bytes,
        min_frequency=cfg.tokenizer.min_frequency,
        data_cfg=cfg.data,
    )


def resolve_vocab(cfg: RunConfig, tokenizer: Any) -> RunConfig:
    """The model's vocab_size follows the tokenizer (rounded up to a multiple of 64 for tokenizers of 1,024+
    tokens so the decoder matmul tiles evenly; a char vocabulary of 65 stays 65)."""
    n = tokenizer.vocab_size
    size = -(-n // 64) * 64 if n >= 1024 else n
    if cfg.model.vocab_size == size:
        return cfg
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=size))


def _batch_sources(cfg: RunConfig, data_dir: Path, tokenizer: Any, rank: int, world_size: int) -> tuple[Any, Any]:
    from lmforge.data import CLMBatches, MLMBatches, TokenShards

    d, t = cfg.data, cfg.train
    train_shards = TokenShards(data_dir, "train", tokenizer)
    val_shards = TokenShards(data_dir, "val", tokenizer) if "val" in train_shards.meta["splits"] else None

    def make(shards: Any, seed: int, sequential: bool) -> Any:
        if cfg.objective == "mlm":
            return MLMBatches(
                shards,
                tokenizer,
                d.seq_len,
                t.batch_size,
                seed,
                d.mlm_probability,
                d.whole_word_mask,
                rank,
                world_size,
                d.mask_rate,
                d.random_rate,
            )
        mode = "sequential" if sequential else d.sampling
        return CLMBatches(shards, d.seq_len, t.batch_size, seed, rank, world_size, mode=mode)

    train = make(train_shards, t.seed, sequential=False)
    make_val = None
    if val_shards is not None:
        need = d.seq_len + 1 if cfg.objective == "clm" else d.seq_len - 2
        if len(val_shards) >= need:
            # the same batches at every evaluation: a fixed seed, windows in order
            make_val = lambda: make(val_shards, t.seed + 1, sequential=True)  # noqa: E731
        else:
            warnings.warn(
                f"{data_dir}: the validation split has {len(val_shards)} tokens, fewer than one window of "
                f"{need}; no evaluation (raise data.val_fraction or add data)",
                stacklevel=2,
            )
    return train, make_val


@dataclass
class RunSetup:
    """A run directory made ready to train: resolved config, tokenizer and token shards."""

    cfg: RunConfig
    run_dir: Path
    tokenizer: Any
    data_dir: Path


def setup_run(
    cfg: RunConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    rank: int = 0,
) -> RunSetup:
    """Check the run directory, train or load the tokenizer, prepare the shards, and save config.yaml."""
    run_dir = Path(run_dir)
    if not cfg.data.paths:
        raise ConfigError("no training data: pass --data PATH... (text files, directories, globs or a prepared dir)")
    for p in cfg.data.paths:
        if not any(ch in p for ch in "*?[") and not Path(p).exists():
            raise DataError(f"--data {p}: no such file or directory")
    check_run_dir(run_dir, resume, overwrite)
    is_main = rank == 0
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)

    tokenizer = _tokenizer_for(cfg, run_dir, resume, progress)
    cfg = resolve_vocab(cfg, tokenizer)
    if resume and (run_dir / "config.yaml").is_file():
        _check_same_model(cfg, run_dir)
    if is_main:
        tokenizer.save(run_dir)
        save_config(cfg, run_dir / "config.yaml")

    paths = list(cfg.data.paths)
    if len(paths) == 1 and _is_prepared(paths[0]):
        data_dir = Path(paths[0])
    else:
        from lmforge.data import prepare_shards

        data_dir = run_dir / "data"
        prepare_shards(paths, tokenizer, data_dir, cfg.data, progress=progress and is_main)
    return RunSetup(cfg, run_dir, tokenizer, data_dir)


def train_run(
    setup: RunSetup,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
    rank: int = 0,
    world_size: int = 1,
) -> PretrainResult:
    """Build the model and batches of a prepared run, train it, and write the final weights and loss.png."""
    cfg, run_dir, tokenizer = setup.cfg, setup.run_dir, setup.tokenizer
    is_main = rank == 0
    if is_main:
        save_config(cfg, run_dir / "config.yaml")
    train_batches, make_val = _batch_sources(cfg, setup.data_dir, tokenizer, rank, world_size)
    device = resolve_device(cfg.train.device)
    seed_everything(cfg.train.seed)
    model = build_model(cfg.model, head_for_objective(cfg.objective)).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    trained = torch.compile(model) if cfg.train.compile else model
    task = build_task(cfg.objective, chars_per_token=1.0 if getattr(tokenizer, "kind", None) == "char" else None)

    from lmforge.planning.params import summarize

    flops = summarize(cfg.model, context=cfg.data.seq_len).train_flops_per_token
    trainer = Trainer(
        cfg.train,
        trained,
        task,
        train_batches,
        make_val,
        run_dir=run_dir,
        rank=rank,
        world_size=world_size,
        flops_per_token=flops,
        progress=progress,
    )
    result = trainer.fit(resume=resume, stop_after=stop_after)

    saved = None
    if is_main:
        if result.status == "completed":
            from lmforge.checkpoint.io import save_model

            saved = save_model(unwrap(model), run_dir, tokenizer)
        plot_runs([run_dir], run_dir / "loss.png")
    final_val = result.val[-1] if result.val else None
    return PretrainResult(run_dir, cfg, result, n_params, final_val, unwrap(model), tokenizer, saved)


def pretrain(
    cfg: RunConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
    rank: int = 0,
    world_size: int = 1,
) -> PretrainResult:
    """Pretrain `cfg` into `run_dir`: train or load the tokenizer, prepare data if needed, train, save.

    Args:
        resume: continue from the newest valid checkpoint in `run_dir` (bit-exact on CPU).
        overwrite: replace a run that `run_dir` already holds.
        stop_after: stop (with a checkpoint) after this step; the schedule still spans train.max_steps.
    """
    setup = setup_run(cfg, run_dir, resume=resume, overwrite=overwrite, progress=progress, rank=rank)
    return train_run(setup, resume=resume, stop_after=stop_after, progress=progress, rank=rank, world_size=world_size)


def _check_same_model(cfg: RunConfig, run_dir: Path) -> None:
    """A resumed run must build the same model with the same optimizer; other fields (max_steps, lr) may change."""
    from lmforge.config import load_config

    saved = load_config(run_dir / "config.yaml")
    old, new = config_to_dict(saved.model), config_to_dict(cfg.model)
    changed = {k: (old[k], new[k]) for k in old if old[k] != new.get(k)}
    if changed or saved.objective != cfg.objective:
        detail = ", ".join(f"model.{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
        if saved.objective != cfg.objective:
            detail = ", ".join(filter(None, [detail, f"objective: {saved.objective!r} -> {cfg.objective!r}"]))
        raise ConfigError(f"--resume: {run_dir}/config.yaml was trained with another model ({detail})")
    if saved.train.optimizer != cfg.train.optimizer:
        raise ConfigError(
            f"--resume: {run_dir} was trained with train.optimizer={saved.train.optimizer!r}, this run asks for "
            f"{cfg.train.optimizer!r}; the saved optimizer state only fits the first (start a new run to switch)"
        )
