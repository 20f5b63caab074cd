"""Corpus reading and cleaning: formats, document modes, cleaning counts, invalid UTF-8, bad input."""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path

import pytest

from lmforge.config import DataConfig
from lmforge.data import ReadStats, default_corpus_files, expand_paths, read_documents
from lmforge.data.reading import iter_units, unit_documents
from lmforge.errors import DataError

RAW = DataConfig(dedupe=False, nfc=False, strip_control=False, normalize_whitespace=False)


def docs(paths, cfg: DataConfig = RAW, stats: ReadStats | None = None) -> list[str]:
    return list(read_documents(paths, cfg, stats))


def test_txt_document_modes(tmp_path: Path) -> None:
    f = tmp_path / "a.txt"
    f.write_text("one\ntwo\n\nthree\n \t\nfour")
    assert docs(f, dataclasses.replace(RAW, doc_mode="file")) == ["one\ntwo\n\nthree\n \t\nfour"]
    assert docs(f, dataclasses.replace(RAW, doc_mode="blank_line")) == ["one\ntwo", "three", "four"]
    assert docs(f, dataclasses.replace(RAW, doc_mode="line")) == ["one", "two", "three", " \t", "four"]


def test_small_units_cut_on_document_boundaries(tmp_path: Path) -> None:
    f = tmp_path / "big.txt"
    paragraphs = [f"paragraph {i}\nline two of {i}" for i in range(500)]
    f.write_text("\n\n".join(paragraphs))
    for mode in ("blank_line", "line", "file"):
        cfg = dataclasses.replace(RAW, doc_mode=mode)
        whole = [d for u in iter_units([f], cfg, unit_bytes=1 << 20) for d in unit_documents(u, cfg)[0]]
        units = list(iter_units([f], cfg, unit_bytes=97))
        pieces = [d for u in units for d in unit_documents(u, cfg)[0]]
        assert [d for d in pieces if d] == [d for d in whole if d]
        if mode != "file":
            assert len(units) > 50
    assert docs(f) == paragraphs


def test_jsonl_csv_tsv_parquet_and_gz(tmp_path: Path) -> None:
    rows = [{"text": "first, with a comma", "id": 1}, {"text": 'a "quoted"\nmultiline one', "id": 2}]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as f:
        f.write("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "c.csv").write_text('id,text\n1,"first, with a comma"\n2,"a ""quoted""\nmultiline one"\n')
    (tmp_path / "d.tsv").write_text('text\tid\nplain "quotes" stay\t1\n')
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["from parquet", None], "n": [1, 2]}), tmp_path / "e.parquet")
    with gzip.open(tmp_path / "f.txt.gz", "wt") as f:
        f.write("gz one\n\ngz two")
    expected = [r["text"] for r in rows]
    assert docs(tmp_path / "a.jsonl") == expected
    assert docs(tmp_path / "b.jsonl.gz") == expected
    assert docs(tmp_path / "c.csv") == expected
    assert docs(tmp_path / "d.tsv") == ['plain "quotes" stay']
    assert docs(tmp_path / "e.parquet") == ["from parquet"]
    assert docs(tmp_path / "f.txt.gz") == ["gz one", "gz two"]
    # a directory: every known format, recursively, in sorted order; a glob: just the matches
    everything = docs(tmp_path)
    assert everything == expected * 3 + ['plain "quotes" stay', "from parquet", "gz one", "gz two"]
    assert docs(str(tmp_path / "*.jsonl*")) == expected * 2


def test_missing_columns_list_the_existing_ones(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"body": "x", "id": 1}\n')
    (tmp_path / "a.csv").write_text("body,id\nx,1\n")
    with pytest.raises(DataError, match=r"a\.jsonl: line 1: no field 'text'; the fields are \['body', 'id'\]"):
        docs(tmp_path / "a.jsonl")
    with pytest.raises(DataError, match=r"a\.csv: no column 'text'; the columns are \['body', 'id'\]"):
        docs(tmp_path / "a.csv")
    assert docs(tmp_path / "a.csv", dataclasses.replace(RAW, text_field="body")) == ["x"]
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "a.parquet")
    with pytest.raises(DataError, match=r"a\.parquet: no column 'text'; the columns are \['body'\]"):
        docs(tmp_path / "a.parquet")


def test_bad_input_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"{tmp_path / 'nope.txt'}: no such file or directory"):
        docs(tmp_path / "nope.txt")
    with pytest.raises(DataError, match="the pattern matches no files"):
        docs(str(tmp_path / "*.txt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="the directory holds no"):
        docs(tmp_path / "empty")
    binary = tmp_path / "model.txt"
    binary.write_bytes(b"PK\x03\x04\x00\x00binary\x00")
    with pytest.raises(DataError, match=f"{binary}: looks like a binary file"):
        docs(binary)
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"text": "ok"}\n{"text": broken}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl: line 2: not valid JSON"):
        docs(bad_json)
    not_gz = tmp_path / "fake.txt.gz"
    not_gz.write_bytes(b"this is not gzip")
    with pytest.raises(DataError, match=r"fake\.txt\.gz: cannot read"):
        docs(not_gz)


def test_invalid_utf8_is_replaced_and_counted_per_file(tmp_path: Path) -> None:
    f = tmp_path / "latin1.txt"
    f.write_bytes("caf\u00e9 ok\n\nna\u00efve".encode("latin-1") + b"\n\nalready \xef\xbf\xbd here")
    stats = ReadStats()
    out = docs(f, RAW, stats)
    assert out == ["caf\ufffd ok", "na\ufffdve", "already \ufffd here"]
    assert stats.invalid_utf8 == {str(f): 2}  # the real U+FFFD in the file is not counted


def test_cleaning_steps_are_counted_and_switchable(tmp_path: Path) -> None:
    f = tmp_path / "a.jsonl"
    texts = [
        "Cafe\u0301",  # decomposed é: NFC composes it
        "bell\x07 and\x00 nul",  # control characters
        "line  \r\nnext\n\n\n\nfar   ",  # CRLF, trailing spaces, blank-line runs
        "dup",
        "dup",
        "x",  # too short with min_doc_chars=2
        "   ",  # empty after trimming
    ]
    f.write_text("\n".join(json.dumps({"text": t}) for t in texts))
    stats = ReadStats()
    cfg = DataConfig(min_doc_chars=2)
    out = docs(f, cfg, stats)
    assert out == ["Caf\u00e9", "bell and nul", "line\nnext\n\nfar", "dup"]
    assert dict(stats.counts) == {
        "nfc_normalized": 1,
        "control_chars_removed": 2,
        "whitespace_normalized": 2,  # "line ..." and "   "
        "duplicates": 1,
        "too_short": 2,
    }
    assert stats.documents_read == 7 and stats.documents_kept == 4
    assert docs(f, dataclasses.replace(RAW, min_doc_chars=0)) == texts[:6] + ["   "]


def test_expand_paths_dedupes_and_sorts(tmp_path: Path) -> None:
    for name in ("b.txt", "a.txt", ".hidden.txt", "notes.bin"):
        (tmp_path / name).write_text("x")
    assert expand_paths([tmp_path, tmp_path / "a.txt"]) == [tmp_path / "a.txt", tmp_path / "b.txt"]


def test_default_corpus_is_the_stdlib() -> None:
    files = default_corpus_files()
    names = {f.name for f in files}
    assert len(files) > 300 and {"os.py", "textwrap.py", "__init__.py"} <= names
    assert all(f.suffix == ".py" for f in files)
    assert not any("test" in f.parts or "site-packages" in f.parts for f in files)
    first = next(read_documents(files[:3], DataConfig(doc_mode="file")))
    assert len(first) > 100


def test_missing_shared_data_skips_or_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import conftest  # tests/conftest.py: pytest puts tests/ on sys.path

    monkeypatch.setattr(conftest, "shared_data_dir", lambda: tmp_path / "absent")
    monkeypatch.delenv("LMFORGE_REQUIRE_SHARED", raising=False)
    with pytest.raises(pytest.skip.Exception, match="absent/sst2 is missing"):
        conftest.require_shared("sst2")
    monkeypatch.setenv("LMFORGE_REQUIRE_SHARED", "1")
    with pytest.raises(pytest.fail.Exception, match="LMFORGE_REQUIRE_SHARED=1 but .*absent"):
        conftest.require_shared("sst2")
