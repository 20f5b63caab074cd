"""`lmforge tokenizer` and `lmforge data`: exit codes, files written, one-line errors.

One test runs the real entry point in a subprocess; the rest call `lmforge.cli.__main__.main(argv)` in-process
(the same parser and error handling, without paying the interpreter + torch start-up for each command).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "tests" / "fixtures" / "tiny.txt"


def lmforge_subprocess(*args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(
        [sys.executable, "-m", "lmforge", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        input=stdin,
        timeout=300,
    )


@pytest.fixture
def lmforge(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch):
    """Run `lmforge ARGS` in-process; returns an object with returncode, stdout and stderr."""
    from lmforge.cli.__main__ import main

    def run(*args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess:
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        capsys.readouterr()
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse errors
            code = e.code
        out = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out.out, out.err)

    return run


def test_cli_subprocess_smoke(tmp_path: Path) -> None:
    r = lmforge_subprocess("tokenizer", "train", "--kind", "char", TINY, "--out", tmp_path / "tok")
    assert r.returncode == 0, r.stderr
    r = lmforge_subprocess("data", "prepare", TINY, "--tokenizer", tmp_path / "tok", "--out", tmp_path / "s")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "s" / "meta.json").is_file() and "MB/s" in r.stdout
    r = lmforge_subprocess(
        "data", "prepare", tmp_path / "nope.txt", "--tokenizer", tmp_path / "tok", "--out", tmp_path / "s"
    )
    assert r.returncode == 1 and r.stderr.strip() == f"error: {tmp_path / 'nope.txt'}: no such file or directory"


def test_train_encode_prepare_rerun(tmp_path: Path, lmforge) -> None:
    r = lmforge("tokenizer", "train", "--kind", "bpe", "--vocab-size", "300", TINY, "--out", tmp_path / "tok", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["kind"] == "bpe" and info["vocab_size"] == 300 and (tmp_path / "tok" / "tokenizer.json").is_file()

    r = lmforge("tokenizer", "encode", "--tokenizer", tmp_path / "tok", "First Citizen", "--tokens", "--json")
    assert r.returncode == 0, r.stderr
    enc = json.loads(r.stdout)["results"][0]
    assert enc["text"] == "First Citizen" and len(enc["ids"]) == len(enc["tokens"]) > 0
    r = lmforge("tokenizer", "encode", "--tokenizer", tmp_path / "tok", stdin="a\nb\n")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 2

    out = tmp_path / "shards"
    args = ("data", "prepare", TINY, "--tokenizer", tmp_path / "tok", "--out", out, "--no-progress")
    r = lmforge(*args, "--data.val_count", "5", "--workers", "2", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert not summary["skipped"] and summary["documents"]["val"] == 5 and summary["dtype"] == "uint16"
    assert summary["tokens"]["train"] > 1000
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "tokenizer.json", "train-00000.bin", "val-00000.bin"]
    r = lmforge(*args, "--data.val_count", "5")
    assert r.returncode == 0 and "nothing to do" in r.stdout


def test_bad_inputs_exit_with_one_line(tmp_path: Path, lmforge) -> None:
    r = lmforge("tokenizer", "train", tmp_path / "missing.txt", "--out", tmp_path / "tok")
    assert r.returncode == 1 and r.stderr.strip() == f"error: {tmp_path / 'missing.txt'}: no such file or directory"
    r = lmforge("data", "prepare", TINY, "--tokenizer", tmp_path / "none", "--out", tmp_path / "o")
    assert r.returncode == 1 and "no such file or directory" in r.stderr and "Traceback" not in r.stderr
    r = lmforge(
        "data", "prepare", TINY, "--tokenizer", tmp_path / "none", "--out", tmp_path / "o", "--data.doc_mod", "x"
    )
    assert r.returncode == 2 and "doc_mod" in r.stderr and "did you mean 'doc_mode'" in r.stderr
    r = lmforge("tokenizer", "train", "--kind", "sentencepiece", TINY, "--out", tmp_path / "tok")
    assert r.returncode == 2 and "invalid choice: 'sentencepiece'" in r.stderr
    r = lmforge("data")
    assert r.returncode == 2 and "give a subcommand" in r.stderr


def test_shards_of_another_tokenizer_are_refused(tmp_path: Path, lmforge) -> None:
    for name, size in (("a", "300"), ("b", "280")):
        assert lmforge("tokenizer", "train", TINY, "--vocab-size", size, "--out", tmp_path / name).returncode == 0
    common = ("data", "prepare", TINY, "--out", tmp_path / "s", "--no-progress")
    assert lmforge(*common, "--tokenizer", tmp_path / "a").returncode == 0
    r = lmforge(*common, "--tokenizer", tmp_path / "b")
    assert r.returncode == 1 and "written by another tokenizer" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert lmforge(*common, "--tokenizer", tmp_path / "b", "--overwrite").returncode == 0


@pytest.mark.parametrize(
    ("rel", "flags", "count"),
    [
        ("sst2/test.tsv", ["--task", "classification", "--text-column", "sentence", "--label-column", "label"], 872),
        (
            "stsb/sts-dev.csv",
            ["--task", "regression", "--text-column", "5", "--text-pair-column", "6", "--label-column", "4"],
            1500,
        ),
        ("wnut17/emerging.dev.conll", ["--task", "token-classification"], 1009),
        (
            "summarization/dialogsum/dialogsum.dev.jsonl",
            ["--task", "text-to-text", "--text-column", "dialogue", "--label-column", "summary"],
            500,
        ),
        ("multi30k/val.en", ["--task", "text-to-text", "--text-column", "en", "--label-column", "de"], 1014),
    ],
)
def test_inspect_reads_the_shared_task_files(
    shared_data: Path, rel: str, flags: list[str], count: int, lmforge
) -> None:
    r = lmforge("data", "inspect", shared_data / rel, *flags, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["examples"] == count


def test_inspect_unknown_column_names_the_existing_ones(shared_data: Path, lmforge) -> None:
    r = lmforge(
        "data", "inspect", shared_data / "sst2" / "test.tsv", "--task", "classification", "--text-column", "text"
    )
    assert r.returncode == 1
    assert "no column 'text'; the columns are ['sentence', 'label']" in r.stderr or "--label-column" in r.stderr
