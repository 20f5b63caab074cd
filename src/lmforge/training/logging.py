"""Where a run's numbers go: metrics.jsonl (the contract), TensorBoard events, and loss.png."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"
TB_DIR = "tensorboard"


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every row of a run's metrics.jsonl (a torn last line from a crash is ignored)."""
    path = Path(run_dir) / METRICS_FILE
    rows = []
    if not path.is_file():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class MetricsLogger:
    """Appends one JSON object per logged step/eval to metrics.jsonl and mirrors scalars to TensorBoard.

    Only the main process (rank 0) should hold one; other ranks pass `enabled=False`.
    """

    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._tb = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.run_dir / METRICS_FILE, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional: metrics.jsonl and loss.png carry the same numbers
                SummaryWriter = None
            if SummaryWriter is not None:
                self._tb = SummaryWriter(log_dir=str(self.run_dir / TB_DIR))

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after `step` (a resumed run repeats the steps its last checkpoint did not keep)."""
        if not self.enabled:
            return
        self._file.close()
        rows = [r for r in read_metrics(self.run_dir) if r.get("step", 0) <= step]
        tmp = self.run_dir / (METRICS_FILE + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        tmp.replace(self.run_dir / METRICS_FILE)
        self._file = open(self.run_dir / METRICS_FILE, "a", encoding="utf-8")  # noqa: SIM115

    def log(self, row: dict[str, Any]) -> None:
        """Write one row; `split` (e.g. "val") prefixes its TensorBoard tags."""
        if not self.enabled:
            return
        self._file.write(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n")
        self._file.flush()
        if self._tb is not None:
            prefix = row.get("split", "train")
            for key, value in row.items():
                if key not in ("step", "split") and isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(f"{prefix}/{key}", value, row["step"])

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def plot_runs(run_dirs: list[str | Path], out: str | Path, labels: list[str] | None = None) -> Path:
    """Draw train/val loss against step and tokens, and the learning rate, of one or more runs to a PNG."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_step, ax_tok, ax_lr) = plt.subplots(1, 3, figsize=(16, 4.5))
    for i, run in enumerate(run_dirs):
        name = labels[i] if labels else Path(run).name
        rows = read_metrics(run)
        train = [r for r in rows if r.get("split", "train") == "train" and r.get("loss") is not None]
        val = [r for r in rows if r.get("split") == "val" and r.get("loss") is not None]
        color = f"C{i % 10}"
        if train:
            ax_step.plot(
                [r["step"] for r in train], [r["loss"] for r in train], color=color, alpha=0.6, label=f"{name} train"
            )
            ax_tok.plot([r["tokens"] for r in train], [r["loss"] for r in train], color=color, alpha=0.6)
            ax_lr.plot([r["step"] for r in train], [r["lr"] for r in train], color=color, label=name)
        if val:
            ax_step.plot([r["step"] for r in val], [r["loss"] for r in val], "o-", color=color, label=f"{name} val")
            ax_tok.plot([r["tokens"] for r in val], [r["loss"] for r in val], "o-", color=color)
    ax_step.set(xlabel="step", ylabel="loss", title="loss by step")
    ax_tok.set(xlabel="tokens", ylabel="loss", title="loss by tokens seen")
    ax_lr.set(xlabel="step", ylabel="learning rate", title="learning rate")
    for ax in (ax_step, ax_tok, ax_lr):
        ax.grid(alpha=0.3)
    ax_step.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out)
    return out
