"""The outer training loop: set the LR, `train_step`, then log, evaluate and checkpoint on their intervals.

The trainer is given a built (and, for distributed runs, already wrapped) model, a Task, and batch sources;
it knows nothing about the objective beyond the loss and metrics the Task returns. Rank 0 alone writes
metrics, checkpoints and the progress bar; every rank runs the same steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from lmforge.checkpoint.state import (
    TrainState,
    list_checkpoints,
    load_latest_checkpoint,
    save_checkpoint,
)
from lmforge.config import TrainConfig
from lmforge.errors import LmforgeError
from lmforge.tasks import Batch, Task
from lmforge.training.logging import MetricsLogger
from lmforge.training.malloc import keep_freed_memory
from lmforge.training.optim import build_optimizer
from lmforge.training.schedule import lr_at
from lmforge.training.step import autocast, train_step


class BatchSource(Protocol):
    """A resumable stream of batches (lmforge.data's CLMBatches / MLMBatches, or a test's own)."""

    def next_batch(self) -> Batch: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class TrainingDivergedError(LmforgeError):
    """The loss or gradient became NaN/inf; the message names the step and the last good checkpoint."""


@dataclass
class Monitor:
    """Keeps the best evaluation by one metric, and stops training after `patience` evaluations without a better one.

    Args:
        metric: a key of the evaluation rows (e.g. "accuracy", "loss").
        mode: "max" when higher is better, "min" when lower is.
        patience: evaluations without improvement before the run stops (0: never stop early).
        on_best: called with the model and the row whenever a new best is reached (e.g. export it).
    """

    metric: str
    mode: str = "max"
    patience: int = 0
    on_best: Callable[[nn.Module, dict[str, Any]], None] | None = None
    best: float | None = None
    best_step: int | None = None
    bad_evals: int = 0

    def update(self, model: nn.Module, row: dict[str, Any]) -> bool:
        """Record an evaluation row; True when it is the best so far."""
        if self.metric not in row:
            raise LmforgeError(
                f"the monitored metric {self.metric!r} is not among the evaluation metrics "
                f"{sorted(k for k in row if k not in ('step', 'split', 'tokens', 'elapsed_s'))}"
            )
        value = float(row[self.metric])
        better = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
        if better:
            self.best, self.best_step, self.bad_evals = value, int(row["step"]), 0
            if self.on_best is not None:
                self.on_best(model, row)
        else:
            self.bad_evals += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_evals >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "bad_evals": self.bad_evals}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_step = state.get("best"), state.get("best_step")
        self.bad_evals = int(state.get("bad_evals", 0))


@dataclass
class TrainResult:
    """What `Trainer.fit` did in this call."""

    losses: list[float]  # training loss of every step run in this call
    start_step: int  # steps already done when this call began (0, or the resumed checkpoint's step)
    step: int  # steps done when it returned
    # "completed", "stopped" (stop_after reached), "interrupted" (SIGINT/SIGTERM) or "early-stopped" (Monitor)
    status: str
    tokens: int  # training tokens seen by all ranks since step 0
    wall_s: float  # seconds spent in this call
    val: list[dict[str, Any]] = field(default_factory=list)  # every evaluation row of this call
    last_checkpoint: Path | None = None


def resolve_device(name: str) -> torch.device:
    """`auto` is cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA), so model init and training are reproducible."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def measure_matmul_peak(device: torch.device, dtype: torch.dtype, seconds: float = 0.3) -> float:
    """FLOP/s of a square matmul on this device: the denominator of MFU (a measured, not a datasheet, peak)."""
    n = 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm up (thread pool, kernel choice)
    count, start = 0, time.perf_counter()
    while True:
        a @ b
        count += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        if elapsed > seconds:
            return 2 * n**3 * count / elapsed


class _StopFlag:
    """Set by SIGINT/SIGTERM: the loop finishes its step, saves a checkpoint and returns."""

    def __init__(self) -> None:
        self.signal: int | None = None

    @contextlib.contextmanager
    def installed(self, enabled: bool) -> Iterator[None]:
        if not enabled or threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum: int, frame: object) -> None:
            self.signal = signum
            signal.signal(signum, previous[signum])  # a second Ctrl-C stops at once

        for s in previous:
            signal.signal(s, handler)
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


class Trainer:
    """Runs `cfg.max_steps` optimizer steps of `task` on `model`, resumable from its run directory.

    Args:
        model: built and on its device; wrap it (DDP, FSDP2, torch.compile) before handing it over.
        train_batches: the training stream; its state_dict() is saved in every checkpoint.
        make_val_batches: returns a fresh validation stream, so each evaluation sees the same batches.
        run_dir: metrics.jsonl, TensorBoard events and checkpoints/ go here (None: nothing is written).
        flops_per_token: training FLOPs per token, for the MFU estimate (None: MFU is not shown).
        evaluator: computes the validation metrics itself (fine-tuning: over the whole validation set, from
            collected predictions); without it, `task.eval_sums` runs over `cfg.eval_batches` batches.
        monitor: keeps the best evaluation and stops early (see Monitor); its state is checkpointed.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        model: nn.Module,
        task: Task,
        train_batches: BatchSource,
        make_val_batches: Callable[[], BatchSource] | None = None,
        run_dir: str | Path | None = None,
        rank: int = 0,
        world_size: int = 1,
        flops_per_token: float | None = None,
        progress: bool = True,
        tensorboard: bool = True,
        evaluator: Callable[[nn.Module], dict[str, Any]] | None = None,
        monitor: Monitor | None = None,
    ) -> None:
        self.device = next(model.parameters()).device
        if cfg.precision == "bf16" and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            warnings.warn("this GPU has no bf16: training with fp16 autocast and a GradScaler instead", stacklevel=2)
            cfg = dataclasses.replace(cfg, precision="fp16")
        self.cfg = cfg
        self.model = model
        self.task = task
        self.train_batches = train_batches
        self.make_val_batches = make_val_batches
        self.evaluator = evaluator
        self.monitor = monitor
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.rank, self.world_size = rank, world_size
        self.is_main = rank == 0
        self.optimizer = build_optimizer(model, cfg)
        self.scaler = (
            torch.amp.GradScaler(self.device.type) if cfg.precision == "fp16" and self.device.type == "cuda" else None
        )
        self.flops_per_token = flops_per_token
        self.progress = progress and self.is_main
        self.logger = MetricsLogger(run_dir, enabled=self.is_main, tensorboard=tensorboard) if run_dir else None
        self.step = 0
        self.tokens = 0
        self.last_checkpoint: Path | None = None
        self._stop = _StopFlag()
        self._fit_start: float | None = None

    # -- the loop -------------------------------------------------------------------------------------------
    def fit(self, resume: bool = False, stop_after: int | None = None, handle_signals: bool = True) -> TrainResult:
        """Train to `cfg.max_steps` (or to step `stop_after`, with a checkpoint, keeping the schedule).

        With `resume`, continue from the newest valid checkpoint in the run directory (bit-exact on CPU).
        """
        cfg = self.cfg
        if resume:
            self._resume()
        start_step, start = self.step, time.perf_counter()
        self._fit_start = start
        losses: list[torch.Tensor] = []
        val_rows: list[dict[str, Any]] = []
        status = "completed"
        bar = self._progress_bar(start_step)
        peak = self._peak_flops()
        self._check_bf16_pays_off(peak)
        window_tokens, window_start = 0, time.perf_counter()
        self.model.train()
        keep_memory = cfg.keep_freed_memory and self.device.type == "cpu"
        with self._stop.installed(handle_signals), keep_freed_memory(keep_memory):
            while self.step < cfg.max_steps:
                lr = lr_at(self.step, cfg)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr * group.get("lr_scale", 1.0)  # Muon's matrices may peak elsewhere
                micro = [self._to_device(self.train_batches.next_batch()) for _ in range(cfg.grad_accum)]
                stats = train_step(self.model, micro, self.optimizer, self.task, cfg, self.scaler)
                if not stats.finite:
                    self._diverged(stats, lr)
                self.step += 1
                step_tokens = sum(int(b["input_ids"].numel()) for b in micro) * self.world_size
                self.tokens += step_tokens
                window_tokens += step_tokens
                losses.append(stats.loss)

                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    now = time.perf_counter()
                    tok_s = window_tokens / max(now - window_start, 1e-9)
                    window_tokens, window_start = 0, now
                    row = {
                        "step": self.step,
                        "loss": float(stats.loss),
                        "lr": lr,
                        "tokens": self.tokens,
                        "grad_norm": float(stats.grad_norm),
                        "tokens_per_s": round(tok_s, 1),
                        "elapsed_s": round(now - start, 3),
                    }
                    if peak and self.flops_per_token:
                        row["mfu"] = round(tok_s * self.flops_per_token / self.world_size / peak, 4)
                    self._log(row)
                    if bar is not None:
                        bar.set_postfix_str(
                            f"loss {row['loss']:.4f} lr {lr:.2e} {tok_s:,.0f} tok/s"
                            + (f" MFU {row['mfu']:.0%}" if "mfu" in row else ""),
                            refresh=False,
                        )
                if bar is not None:
                    bar.update(1)

                last = self.step == cfg.max_steps
                early_stop = False
                if (cfg.eval_every and self.step % cfg.eval_every == 0) or last:
                    row = self.evaluate()
                    if row:
                        val_rows.append(row)
                        if self.monitor is not None:
                            self.monitor.update(self.model, row)
                            early_stop = self.monitor.should_stop and not last
                stopping = self._stop.signal is not None or (stop_after is not None and self.step >= stop_after)
                stopping = stopping or early_stop
                if (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0) or last or stopping:
                    self.save()
                if stopping and not last:
                    if early_stop:
                        status = "early-stopped"
                    else:
                        status = "interrupted" if self._stop.signal is not None else "stopped"
                    break
        if bar is not None:
            bar.close()
        if self.logger:
            self.logger.close()
        return TrainResult(
            losses=[float(x) for x in losses],
            start_step=start_step,
            step=self.step,
            status=status,
            tokens=self.tokens,
            wall_s=time.perf_counter() - start,
            val=val_rows,
            last_checkpoint=self.last_checkpoint,
        )

    # -- pieces ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, Any] | None:
        """Metrics of the task over `cfg.eval_batches` validation batches (or the evaluator's); "split": "val"."""
        if self.evaluator is not None:
            self.model.eval()
            try:
                with autocast(self.cfg.precision, self.device.type):
                    metrics = self.evaluator(self.model)
            finally:
                self.model.train()
        elif self.make_val_batches is None:
            return None
        else:
            source = self.make_val_batches()
            sums: dict[str, float] = {}
            self.model.eval()
            try:
                for _ in range(self.cfg.eval_batches):
                    batch = self._to_device(source.next_batch())
                    with autocast(self.cfg.precision, self.device.type):
                        for k, v in self.task.eval_sums(self.model, batch).items():
                            sums[k] = sums.get(k, 0.0) + v
            finally:
                self.model.train()
            metrics = self.task.finalize_metrics(sums)
        row = {"step": self.step, "split": "val", "tokens": self.tokens, **metrics}
        if self._fit_start is not None:
            row["elapsed_s"] = round(time.perf_counter() - self._fit_start, 3)
        self._log(row)
        return row

    def save(self) -> Path | None:
        """Checkpoint the current state into run_dir/checkpoints/step-N (rank 0 only)."""
        if self.run_dir is None or not self.is_main:
            return None
        state = TrainState(
            step=self.step,
            model=self.model,
            optimizer=self.optimizer,
            sampler=self.train_batches.state_dict(),
            scheduler={"schedule": self.cfg.schedule, "max_steps": self.cfg.max_steps, "lr": self.cfg.lr},
            counters={"tokens": self.tokens, **({"monitor": self.monitor.state_dict()} if self.monitor else {})},
        )
        self.last_checkpoint = save_checkpoint(self.run_dir, state, keep=self.cfg.keep_checkpoints)
        return self.last_checkpoint

    def _resume(self) -> None:
        if self.run_dir is None:
            raise LmforgeError("resume needs a run directory")
        loaded = load_latest_checkpoint(self.run_dir, self.model, self.optimizer)
        if loaded is None:
            return  # nothing saved yet: start from step 0
        self.step = loaded.step
        self.tokens = int(loaded.counters.get("tokens", 0))
        if self.monitor is not None:
            self.monitor.load_state_dict(loaded.counters.get("monitor") or {})
        self.train_batches.load_state_dict(loaded.sampler)
        self.last_checkpoint = loaded.path
        if self.logger:
            self.logger.truncate_after(self.step)

    def _diverged(self, stats: Any, lr: float) -> None:
        step = self.step + 1
        loss, norm = float(stats.loss), float(stats.grad_norm)
        self._log({"step": step, "loss": loss, "lr": lr, "tokens": self.tokens, "grad_norm": norm, "event": "diverged"})
        if self.logger:
            self.logger.close()
        good = self.last_checkpoint
        if good is None and self.run_dir is not None:
            found = list_checkpoints(self.run_dir)
            good = found[-1][1] if found else None
        where = f"the last good checkpoint is {good}" if good else "no checkpoint was saved before it"
        raise TrainingDivergedError(
            f"training diverged at step {step}: loss={loss}, grad_norm={norm} (the update was not applied); "
            f"{where}. Lower train.lr, raise train.warmup_steps or use train.precision=fp32, then --resume."
        )

    def _to_device(self, batch: Batch) -> Batch:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def _log(self, row: dict[str, Any]) -> None:
        if self.logger:
            self.logger.log(row)

    def _peak_flops(self) -> float | None:
        if not (self.progress or self.logger) or not self.flops_per_token:
            return None
        dtype = torch.bfloat16 if self.cfg.precision == "bf16" else torch.float32
        if self.cfg.precision == "fp16" and self.device.type == "cuda":
            dtype = torch.float16
        return measure_matmul_peak(self.device, dtype)

    def _check_bf16_pays_off(self, peak: float | None) -> None:
        """Warn when bf16 matmuls are slower than fp32 ones on this CPU (AVX-512 without AMX: about half)."""
        if self.cfg.precision != "bf16" or self.device.type != "cpu" or self.rank != 0:
            return
        bf16 = peak if peak is not None else measure_matmul_peak(self.device, torch.bfloat16)
        fp32 = measure_matmul_peak(self.device, torch.float32)
        if bf16 < 0.9 * fp32:
            warnings.warn(
                f"train.precision=bf16 is slower than fp32 on this CPU: its bf16 matmuls run at "
                f"{bf16 / 1e9:.0f} GFLOP/s against {fp32 / 1e9:.0f} in fp32 (as on CPUs without AMX); "
                "train.precision=fp32 trains faster here",
                stacklevel=3,
            )

    def _progress_bar(self, initial: int) -> Any:
        if not self.progress:
            return None
        from tqdm import tqdm

        return tqdm(
            total=self.cfg.max_steps,
            initial=initial,
            desc="train",
            unit="step",
            file=sys.stderr,
            dynamic_ncols=True,
            mininterval=0.5,
            disable=None,
        )
