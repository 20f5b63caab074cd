"""`lmforge pretrain` and `lmforge plot` end to end, in a subprocess, on text the tests write themselves."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch

ROOT = Path(__file__).resolve().parents[2]
TINY = [  # a tiny char-level GPT; every run below overrides only what it tests
    "--tokenizer.kind",
    "char",
    "--model.n_layer",
    "1",
    "--model.n_head",
    "2",
    "--model.d_model",
    "32",
    "--model.max_seq_len",
    "32",
    "--data.seq_len",
    "32",
    "--train.batch_size",
    "4",
    "--train.warmup_steps",
    "2",
    "--train.eval_every",
    "4",
    "--train.eval_batches",
    "2",
    "--train.log_every",
    "1",
    "--data.doc_mode",
    "line",
    "--data.val_fraction",
    "0.1",
]


def lmforge(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "lmforge", *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = random.Random(0)
    words = [
        "the",
        "king",
        "and",
        "queen",
        "of",
        "a",
        "castle",
        "rode",
        "to",
        "war",
        "with",
        "their",
        "loyal",
        "knights",
        "under",
        "gray",
        "skies",
    ]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))) + "." for _ in range(1500)]
    path = tmp_path_factory.mktemp("corpus") / "story.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def train_losses(run: Path) -> list[float]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "split" not in r]


def test_pretrain_writes_a_complete_run_dir(tmp_path: Path, corpus: Path) -> None:
    run = tmp_path / "run"
    r = lmforge(
        "pretrain",
        "--data",
        str(corpus),
        "--out",
        str(run),
        "--train.max_steps",
        "8",
        "--train.checkpoint_every",
        "4",
        "--json",
        *TINY,
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["status"] == "completed" and summary["step"] == 8
    assert summary["tokens"] == 8 * 4 * 32
    assert summary["val_bits_per_char"] == pytest.approx(summary["val_loss"] / 0.6931471805599453)
    for name in ("config.yaml", "tokenizer.json", "model.safetensors", "config.json", "metrics.jsonl", "loss.png"):
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").iterdir())
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-4", "step-8"]
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r.get("split") == "val"] == [4, 8]
    assert all({"step", "loss", "lr", "tokens"} <= set(r) for r in rows if "split" not in r)

    from lmforge.checkpoint.io import load_model
    from lmforge.config import load_config

    cfg = load_config(run / "config.yaml")  # the resolved config repeats the run
    assert cfg.model.vocab_size == json.loads((run / "config.json").read_text())["model"]["vocab_size"]
    model = load_model(run)
    assert model(torch.zeros(1, 4, dtype=torch.long)).logits.shape == (1, 4, cfg.model.vocab_size)

    # a second run into the same directory is refused, and nothing is lost
    before = (run / "model.safetensors").read_bytes()
    r = lmforge("pretrain", "--data", str(corpus), "--out", str(run), "--train.max_steps", "2", *TINY)
    assert r.returncode == 2
    assert "already holds a run (checkpoints up to step 8)" in r.stderr and "--resume" in r.stderr
    assert (run / "model.safetensors").read_bytes() == before

    r = lmforge("generate", str(run), "--prompt", "the king", "--max-new-tokens", "5")  # a run dir is a model path
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()

    r = lmforge("plot", str(run), "--out", str(tmp_path / "curves.png"))
    assert r.returncode == 0 and (tmp_path / "curves.png").stat().st_size > 1000

    r = lmforge("pretrain", "--data", str(corpus), "--out", str(run), "--train.max_steps", "2", "--overwrite", *TINY)
    assert r.returncode == 0, r.stderr
    assert len(train_losses(run)) == 2


@pytest.mark.slow  # the same property is tested in-process in tests/unit/test_train.py
def test_resume_through_the_cli_is_exact(tmp_path: Path, corpus: Path) -> None:
    common = ["--data", str(corpus), "--train.max_steps", "8", *TINY]
    assert lmforge("pretrain", *common, "--out", str(tmp_path / "a")).returncode == 0
    r = lmforge("pretrain", *common, "--out", str(tmp_path / "b"), "--stop-after", "5")
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "b" / "model.safetensors").exists()  # not finished: no final weights yet
    r = lmforge("pretrain", "--out", str(tmp_path / "b"), "--resume")  # the saved config.yaml is reused
    assert r.returncode == 0, r.stderr
    assert train_losses(tmp_path / "b") == train_losses(tmp_path / "a")
    a = safetensors.torch.load_file(str(tmp_path / "a" / "model.safetensors"))
    b = safetensors.torch.load_file(str(tmp_path / "b" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # the same property is tested in-process in tests/unit/test_train.py
def test_sigint_saves_a_checkpoint_and_resume_finishes(tmp_path: Path, corpus: Path) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    args = [
        sys.executable,
        "-m",
        "lmforge",
        "pretrain",
        "--data",
        str(corpus),
        "--out",
        str(run),
        "--train.max_steps",
        "100000",
        "--train.eval_every",
        "0",
        *TINY,
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    deadline = time.time() + 120
    while time.time() < deadline and not (
        (run / "metrics.jsonl").is_file() and len((run / "metrics.jsonl").read_text().splitlines()) >= 3
    ):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted at step" in out and "--resume" in out
    steps = sorted(int(p.name.split("-")[1]) for p in (run / "checkpoints").iterdir() if p.name.startswith("step-"))
    assert len(steps) == 1 and steps[0] >= 3
    r = lmforge("pretrain", "--out", str(run), "--resume", "--train.max_steps", str(steps[0] + 2))
    assert r.returncode == 0, r.stderr
    assert len(train_losses(run)) == steps[0] + 2


def test_mlm_run(tmp_path: Path, corpus: Path) -> None:
    r = lmforge(
        "pretrain",
        "--objective",
        "mlm",
        "--model.family",
        "bert",
        "--tokenizer.kind",
        "wordpiece",
        "--tokenizer.vocab_size",
        "200",
        "--data",
        str(corpus),
        "--out",
        str(tmp_path / "bert"),
        "--train.max_steps",
        "4",
        "--json",
        *TINY[2:],
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert 0.0 <= summary["val_masked_accuracy"] <= 1.0 and summary["step"] == 4


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--model.preset", "gpt-mico"], 2, "did you mean 'gpt-micro'"),
        (["--objective", "mlm"], 2, "objective='mlm' needs a BERT model"),
        (["--train.batch_size", "many"], 2, "train.batch_size='many' is not an integer"),
        (["--data.seq_len", "64"], 2, "data.seq_len=64 is longer than model.max_seq_len=32"),
        (["--train.lr", "0"], 2, "train.lr=0.0 must be > 0"),
    ],
)
def test_bad_config_exits_2_naming_the_field(
    tmp_path: Path, corpus: Path, args: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from lmforge.cli.__main__ import main  # in-process: these fail before any training, a subprocess is slow

    assert main(["pretrain", "--data", str(corpus), "--out", str(tmp_path / "x"), *TINY, *args]) == code
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # nothing was created


def test_bad_data_is_a_clear_error(tmp_path: Path) -> None:
    r = lmforge("pretrain", "--data", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "x"), *TINY)
    assert r.returncode == 1 and "missing.txt: no such file or directory" in r.stderr
    small = tmp_path / "small.txt"
    small.write_text("to be\nor not\n" * 3)
    r = lmforge("pretrain", "--data", str(small), "--out", str(tmp_path / "y"), *TINY)
    assert r.returncode == 1 and "fewer than seq_len + 1" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_char_gpt_on_tinyshakespeare_reaches_stated_loss(tmp_path: Path, shared_data: Path) -> None:
    r = lmforge(
        "pretrain", "--data", str(shared_data / "tinyshakespeare" / "input.txt"), "--out", str(tmp_path / "shk"),
        "--tokenizer.kind", "char", "--model.n_layer", "2", "--model.n_head", "2", "--model.d_model", "64",
        "--model.max_seq_len", "64", "--data.seq_len", "64", "--data.val_fraction", "0.1",
        "--train.batch_size", "16", "--train.max_steps", "300", "--train.lr", "3e-3", "--train.warmup_steps", "30",
        "--train.eval_every", "0", "--train.eval_batches", "20", "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    # ln(67) = 4.2 at the start; unigram entropy of the text is ~3.3 nats/char; 300 steps get well below it
    assert summary["val_loss"] < 2.5, summary
    assert summary["val_bits_per_char"] < 3.6


def test_shakespeare_recipe_runs_with_muon(tmp_path: Path, shared_data: Path) -> None:
    """examples/shakespeare_char.yaml (the issue-4 quality recipe) parses and trains, Muon included; 4 steps only."""
    out = tmp_path / "sh"
    r = lmforge(
        "pretrain",
        "--config",
        "examples/shakespeare_char.yaml",
        "--out",
        str(out),
        "--train.max_steps",
        "4",
        "--train.eval_every",
        "2",
        "--train.eval_batches",
        "2",
        "--train.log_every",
        "1",
    )
    assert r.returncode == 0, r.stderr
    saved = (out / "config.yaml").read_text()
    assert "optimizer: muon" in saved and "family: modern" in saved
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [x for x in rows if "split" not in x]
    assert [x["step"] for x in train_rows] == [1, 2, 3, 4]
    assert train_rows[-1]["loss"] < train_rows[0]["loss"]
    assert (out / "model.safetensors").exists()


@pytest.mark.slow
def test_kill_9_loses_only_steps_since_the_last_checkpoint(tmp_path: Path, corpus: Path) -> None:
    """SIGKILL at arbitrary moments, with a checkpoint every step so that some kills land mid-write: every
    step-N directory left behind must load (sizes and sha256 checked), and --resume must finish the run."""
    from lmforge.checkpoint.state import list_checkpoints, load_checkpoint
    from lmforge.config import load_config
    from lmforge.tasks import build_model

    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    common = ["--data", str(corpus), "--out", str(run), "--train.eval_every", "0", "--train.keep_checkpoints", "3"]
    args = [sys.executable, "-m", "lmforge", "pretrain", *common, *TINY, "--train.checkpoint_every", "1"]
    rng = random.Random(0)

    def newest() -> int:
        return max((step for step, _ in list_checkpoints(run)), default=0) if (run / "checkpoints").is_dir() else 0

    for attempt in range(3):
        cmd = args + ["--train.max_steps", "100000"] + (["--resume"] if attempt else [])
        before = newest()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        deadline = time.time() + 120
        while time.time() < deadline and newest() < before + 2:  # this process is training and checkpointing
            time.sleep(0.05)
        assert newest() >= before + 2, "training did not progress"
        time.sleep(rng.uniform(0.0, 0.5))  # somewhere in a step or a checkpoint write
        proc.kill()
        proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        found = list_checkpoints(run)
        assert found, "no checkpoint survived"
        for _, path in found:  # every checkpoint that has its final name is whole
            state = json.loads((path / "trainer_state.json").read_text())
            assert state["step"] == int(path.name.split("-")[1])
            load_checkpoint(path, build_model(load_config(run / "config.yaml").model))
    last = max(step for step, _ in list_checkpoints(run))
    r = lmforge("pretrain", *common, "--resume", "--train.max_steps", str(last + 3))
    assert r.returncode == 0, r.stderr
    assert f"resumed from step {last}" in r.stdout
    assert len(train_losses(run)) == last + 3  # one metrics row per step, none lost or doubled
    assert (run / "model.safetensors").exists()


def test_resume_refuses_another_optimizer(tmp_path: Path, corpus: Path) -> None:
    common = ["--data", str(corpus), "--out", str(tmp_path / "r"), *TINY]
    assert lmforge("pretrain", *common, "--train.max_steps", "2").returncode == 0
    r = lmforge("pretrain", *common, "--train.max_steps", "4", "--resume", "--train.optimizer", "muon")
    assert r.returncode == 2
    assert "was trained with train.optimizer='adamw', this run asks for 'muon'" in r.stderr
