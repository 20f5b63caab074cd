"""`lmforge quickstart` end to end: a complete run directory, validation perplexity and samples."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def quickstart(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-m", "lmforge", "quickstart", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )


def check_run_dir(run: Path) -> None:
    for name in ("config.yaml", "tokenizer.json", "model.safetensors", "config.json", "metrics.jsonl", "loss.png"):
        assert (run / name).is_file(), name
    assert list((run / "checkpoints").glob("step-*"))


def write_notes(tmp_path: Path) -> None:
    text = "\n\n".join(f"The cat number {i} sat on the mat and looked at the dog number {i + 1}." for i in range(400))
    (tmp_path / "notes.txt").write_text(text, encoding="utf-8")


@pytest.mark.slow
def test_quickstart_gpt_short_budget(tmp_path: Path) -> None:
    r = quickstart("--minutes", "0.4", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    run = tmp_path / "runs" / "quickstart-gpt"  # the default place, relative to the working directory
    assert out["run_dir"] == str(Path("runs") / "quickstart-gpt")
    check_run_dir(run)
    assert out["steps"] >= 20 and out["val_perplexity"] > 1.0
    assert len(out["samples"]) == 3 and all(isinstance(s["text"], str) for s in out["samples"])
    assert out["samples"][0]["prompt"].startswith("def fibonacci")


def test_quickstart_gpt_on_own_data_twice(tmp_path: Path) -> None:
    write_notes(tmp_path)
    r = quickstart("--data", "notes.txt", "--minutes", "0.2", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["run_dir"] == str(Path("runs") / "quickstart-gpt")
    check_run_dir(tmp_path / "runs" / "quickstart-gpt")
    assert out["total_seconds"] < 120  # a 12 s budget; a busy shared machine needs the slack
    assert len(out["samples"]) == 3 and out["samples"][0]["prompt"]
    # running again does not touch the first run: it picks the next free directory
    r = quickstart("--data", "notes.txt", "--minutes", "0.1", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["run_dir"].endswith("quickstart-gpt-2")


@pytest.mark.slow
def test_quickstart_bert_on_own_data(tmp_path: Path) -> None:
    write_notes(tmp_path)
    r = quickstart("--model", "bert", "--data", "notes.txt", "--minutes", "0.2", "--out", "b", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    check_run_dir(tmp_path / "b")
    assert 0.0 <= out["val_masked_accuracy"] <= 1.0
    assert out["samples"] and all(len(s["candidates"]) == 3 for s in out["samples"])
    assert all("[MASK]" in s["text"] for s in out["samples"])


def test_quickstart_refuses_a_taken_out_dir_and_bad_budget(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "config.yaml").write_text("objective: clm\n")
    r = quickstart("--out", "taken", cwd=tmp_path)
    assert r.returncode == 2 and "already holds a run" in r.stderr
    r = quickstart("--minutes", "0", cwd=tmp_path)
    assert r.returncode == 2 and "--minutes 0" in r.stderr


@pytest.mark.slow
def test_quickstart_default_two_minutes(tmp_path: Path) -> None:
    r = quickstart(cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "validation loss" in r.stdout and r.stdout.count("--- continuation ---") == 3
    check_run_dir(tmp_path / "runs" / "quickstart-gpt")
