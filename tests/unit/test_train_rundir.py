"""Run-directory rules of `pretrain`: refuse another run, --overwrite removes only run files, vocab size."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from lmforge.config import RunConfig
from lmforge.errors import UsageError
from lmforge.training.pretrain import check_run_dir, resolve_vocab


def make_run(d: Path) -> None:
    (d / "checkpoints" / "step-10").mkdir(parents=True)
    (d / "config.yaml").write_text("objective: clm\n")
    (d / "metrics.jsonl").write_text('{"step": 1}\n')
    (d / "notes.md").write_text("mine")  # not a run file


def test_refuses_a_directory_holding_a_run(tmp_path: Path) -> None:
    make_run(tmp_path)
    with pytest.raises(UsageError, match=r"already holds a run \(checkpoints up to step 10\); pass --resume"):
        check_run_dir(tmp_path, resume=False, overwrite=False)
    check_run_dir(tmp_path, resume=True, overwrite=False)  # continuing is fine
    check_run_dir(tmp_path / "new", resume=False, overwrite=False)  # a new directory is fine
    with pytest.raises(UsageError, match="contradict"):
        check_run_dir(tmp_path, resume=True, overwrite=True)


def test_overwrite_removes_only_run_files(tmp_path: Path) -> None:
    make_run(tmp_path)
    check_run_dir(tmp_path, resume=False, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.md"]


def test_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        check_run_dir(tmp_path / "f", resume=False, overwrite=False)


@pytest.mark.parametrize(("tokens", "expected"), [(65, 65), (1000, 1000), (8192, 8192), (30522, 30528)])
def test_vocab_follows_the_tokenizer(tokens: int, expected: int) -> None:
    cfg = resolve_vocab(RunConfig(), SimpleNamespace(vocab_size=tokens))
    assert cfg.model.vocab_size == expected
