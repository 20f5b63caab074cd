"""Corpus reading and cleaning: files, directories and globs of .txt/.jsonl/.csv/.tsv/.parquet (and .gz) to documents.

Reading is split in two so that `prepare` can run the expensive half in worker processes:

* `iter_units` (main process) walks the files and cuts them into work units of about `unit_bytes`:
  raw byte blocks that end on a document boundary (.txt, .jsonl), or lists of strings (.csv/.tsv/.parquet,
  whose quoting needs a real parser).
* `unit_documents` + `clean_document` (any process) turn a unit into cleaned documents, counting what
  each cleaning step did and how many invalid UTF-8 sequences were replaced.

`read_documents` chains both in one process for callers that just want the text.
"""

from __future__ import annotations

import csv
import glob
import gzip
import hashlib
import io
import json
import re
import sys
import sysconfig
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from lmforge.config import DataConfig
from lmforge.errors import DataError

TEXT_SUFFIXES = {".txt", ".text", ".md", ".rst", ".py"}
TABLE_SUFFIXES = {".jsonl", ".csv", ".tsv", ".parquet"}
KNOWN_SUFFIXES = TEXT_SUFFIXES | TABLE_SUFFIXES
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # C0/C1 controls except tab, LF, CR
_TRAILING_SPACE = re.compile(r"[ \t]+\n")
_MANY_NEWLINES = re.compile(r"\n{3,}")
_BLANK_LINE = re.compile(r"\n[ \t\r\f\v]*\n")  # a blank or whitespace-only line ends a document
_MAX_PENDING = 64 << 20  # a .txt block with no document boundary is cut at a line after this many bytes


@dataclass
class ReadStats:
    """What reading and cleaning did: counts per step, invalid UTF-8 per file."""

    files: int = 0
    bytes_read: int = 0
    documents_read: int = 0
    documents_kept: int = 0
    counts: Counter = field(
        default_factory=Counter
    )  # nfc_normalized, control_chars_removed, whitespace_normalized, too_short, duplicates
    invalid_utf8: dict[str, int] = field(default_factory=dict)  # file -> replaced sequences

    def merge_unit(self, path: str, bad_utf8: int, counts: Counter, n_read: int) -> None:
        if bad_utf8:
            self.invalid_utf8[path] = self.invalid_utf8.get(path, 0) + bad_utf8
        self.counts.update(counts)
        self.documents_read += n_read

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "bytes_read": self.bytes_read,
            "documents_read": self.documents_read,
            "documents_kept": self.documents_kept,
            "cleaning": dict(sorted(self.counts.items())),
            "invalid_utf8": dict(sorted(self.invalid_utf8.items())),
        }


@dataclass
class Unit:
    """A piece of one file to turn into documents: a byte block (`raw`) or ready strings (`docs`)."""

    file_index: int
    path: str
    kind: str  # "text" | "jsonl" | "docs"
    raw: bytes = b""
    docs: list[str] | None = None
    first_line: int = 1  # line number of the block's first line (for error messages)
    nbytes: int = 0


# --- finding files ------------------------------------------------------------------------------------
def inner_suffix(path: Path) -> str:
    """The format suffix, looking through .gz: data.jsonl.gz -> .jsonl."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        return suffixes[-2] if len(suffixes) > 1 else ".txt"
    return path.suffix.lower()


def expand_paths(paths: Iterable[str | Path] | str | Path) -> list[Path]:
    """Files named by `paths` (files, directories searched recursively for known formats, globs), sorted, unique."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out: list[Path] = []
    for p in paths:
        p_str = str(p)
        if glob.has_magic(p_str):
            matches = sorted(Path(m) for m in glob.glob(p_str, recursive=True))
            files = [m for m in matches if m.is_file()]
            if not files:
                raise DataError(f"{p_str}: the pattern matches no files")
            out.extend(files)
        elif Path(p_str).is_dir():
            found = sorted(
                f
                for f in Path(p_str).rglob("*")
                if f.is_file()
                and not any(part.startswith(".") for part in f.relative_to(p_str).parts)
                and inner_suffix(f) in KNOWN_SUFFIXES
            )
            if not found:
                raise DataError(f"{p_str}: the directory holds no {'/'.join(sorted(KNOWN_SUFFIXES))} files")
            out.extend(found)
        elif Path(p_str).is_file():
            out.append(Path(p_str))
        else:
            raise DataError(f"{p_str}: no such file or directory")
    seen: set[Path] = set()
    unique = []
    for f in out:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def default_corpus_files() -> list[Path]:
    """The Python standard library's .py files (found via sysconfig): a corpus every machine already has.

    Test suites and site-packages are left out. Read it with `DataConfig(doc_mode="file")`: one module is
    one document.
    """
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
    files = sorted(f for f in stdlib.rglob("*.py") if not skip & set(f.relative_to(stdlib).parts))
    if not files:  # pragma: no cover - an interpreter without its sources
        raise DataError(f"{stdlib}: no standard-library sources found (python {sys.version.split()[0]})")
    return files


# --- cutting files into units -------------------------------------------------------------------------
def _open_binary(path: Path) -> IO[bytes]:
    try:
        if path.suffix.lower() == ".gz":
            return gzip.open(path, "rb")  # type: ignore[return-value]
        return open(path, "rb")  # noqa: SIM115 - closed by the caller
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e.strerror})") from e


def _check_not_binary(path: Path, head: bytes) -> None:
    if b"\x00" in head[:8192]:
        raise DataError(
            f"{path}: looks like a binary file (NUL bytes), not text; pass text files (.txt/.jsonl/.csv/...)"
        )


def iter_units(files: list[Path], cfg: DataConfig, unit_bytes: int = 1 << 20) -> Iterator[Unit]:
    """Cut `files` into units of about `unit_bytes`, each ending on a document boundary."""
    for index, path in enumerate(files):
        suffix = inner_suffix(path)
        if suffix == ".parquet":
            yield from _parquet_units(index, path, cfg, unit_bytes)
        elif suffix in (".csv", ".tsv"):
            yield from _table_units(index, path, cfg, unit_bytes, delimiter="\t" if suffix == ".tsv" else ",")
        elif suffix == ".jsonl":
            yield from _block_units(index, path, "jsonl", b"\n", unit_bytes)
        else:
            sep = {"file": None, "line": b"\n", "blank_line": b"\n\n"}[cfg.doc_mode]
            yield from _block_units(index, path, "text", sep, unit_bytes)


def _block_units(index: int, path: Path, kind: str, sep: bytes | None, unit_bytes: int) -> Iterator[Unit]:
    line = 1
    pending = b""
    with _open_binary(path) as f:
        while True:
            try:
                chunk = f.read(unit_bytes)
            except (OSError, EOFError, gzip.BadGzipFile) as e:
                raise DataError(f"{path}: cannot read ({e})") from e
            if line == 1 and not pending:
                _check_not_binary(path, chunk)
            if not chunk:
                break
            pending += chunk
            if sep is None:  # one document per file: keep reading
                continue
            cut = pending.rfind(sep)
            end = cut + len(sep)
            if cut < 0:
                if len(pending) <= _MAX_PENDING:
                    continue
                end = pending.rfind(b"\n") + 1  # no boundary for 64 MB: cut at a line rather than grow without bound
                if end <= 0:
                    continue
            block, pending = pending[:end], pending[end:]
            yield Unit(index, str(path), kind, raw=block, first_line=line, nbytes=len(block))
            line += block.count(b"\n")
    if pending:
        yield Unit(index, str(path), kind, raw=pending, first_line=line, nbytes=len(pending))


def _table_units(index: int, path: Path, cfg: DataConfig, unit_bytes: int, delimiter: str) -> Iterator[Unit]:
    with _open_binary(path) as raw:
        head = raw.peek(8192) if hasattr(raw, "peek") else b""
        _check_not_binary(path, head)
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")
        quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL  # TSV corpora (GLUE) use bare quotes
        reader = csv.reader(text, delimiter=delimiter, quoting=quoting)
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise DataError(f"{path}: not valid {'TSV' if delimiter == chr(9) else 'CSV'} ({e})") from e
        if cfg.text_field not in header:
            raise DataError(
                f"{path}: no column {cfg.text_field!r}; the columns are {header}; pick one with --data.text_field"
            )
        col = header.index(cfg.text_field)
        docs: list[str] = []
        size = 0
        try:
            for row in reader:
                if col < len(row):
                    docs.append(row[col])
                    size += len(row[col])
                if size >= unit_bytes:
                    yield Unit(index, str(path), "docs", docs=docs, nbytes=size)
                    docs, size = [], 0
        except csv.Error as e:
            raise DataError(f"{path}: line {reader.line_num}: not valid CSV ({e})") from e
        if docs:
            yield Unit(index, str(path), "docs", docs=docs, nbytes=size)


def _parquet_units(index: int, path: Path, cfg: DataConfig, unit_bytes: int) -> Iterator[Unit]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - pyarrow is a dependency
        raise DataError(f"{path}: reading .parquet needs pyarrow (pip install pyarrow)") from e
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid and friends
        raise DataError(f"{path}: not a valid parquet file ({e})") from e
    names = pf.schema_arrow.names
    if cfg.text_field not in names:
        raise DataError(
            f"{path}: no column {cfg.text_field!r}; the columns are {names}; pick one with --data.text_field"
        )
    for batch in pf.iter_batches(columns=[cfg.text_field], batch_size=4096):
        docs = [d for d in batch.column(0).to_pylist() if isinstance(d, str)]
        yield Unit(index, str(path), "docs", docs=docs, nbytes=sum(len(d) for d in docs))


# --- units to clean documents -------------------------------------------------------------------------
def decode_utf8(raw: bytes) -> tuple[str, int]:
    """Text and the number of invalid UTF-8 sequences replaced by U+FFFD (never fatal)."""
    try:
        return raw.decode("utf-8"), 0
    except UnicodeDecodeError:
        text = raw.decode("utf-8", "replace")
        return text, text.count("\ufffd") - raw.count("\ufffd".encode())


def unit_documents(unit: Unit, cfg: DataConfig, doc_mode: str | None = None) -> tuple[list[str], int]:
    """The raw (uncleaned) documents of a unit, and how many invalid UTF-8 sequences were replaced."""
    if unit.kind == "docs":
        return list(unit.docs or []), 0
    text, bad = decode_utf8(unit.raw)
    if unit.kind == "jsonl":
        return _jsonl_documents(text, unit, cfg.text_field), bad
    mode = doc_mode or cfg.doc_mode
    if mode == "file":
        return [text], bad
    if mode == "line":
        return text.split("\n"), bad
    return _BLANK_LINE.split(text), bad


def parse_json_object(line: str, where: str) -> dict[str, Any]:
    """One JSONL line as a dict, or a DataError naming `where` (file and line)."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: not valid JSON ({e.msg})") from e
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _jsonl_documents(text: str, unit: Unit, key: str) -> list[str]:
    docs = []
    for offset, line in enumerate(text.split("\n")):
        if not line.strip():
            continue
        obj = parse_json_object(line, f"{unit.path}: line {unit.first_line + offset}")
        if key not in obj:
            raise DataError(
                f"{unit.path}: line {unit.first_line + offset}: no field {key!r}; the fields are {sorted(obj)}; "
                "pick one with --data.text_field"
            )
        value = obj[key]
        if isinstance(value, str):
            docs.append(value)
        elif value is not None:
            docs.append(str(value))
    return docs


def clean_document(text: str, cfg: DataConfig, counts: Counter) -> str | None:
    """Apply the enabled cleaning steps, counting each change; None when the document is dropped."""
    if cfg.nfc and not text.isascii() and not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
        counts["nfc_normalized"] += 1
    # Each step first asks a cheap C-level question (substring, isprintable) and runs its regex only when the
    # answer says there is something to change: most documents need no change, and regexes scan at ~100 MB/s.
    if cfg.strip_control and not text.replace("\n", "").replace("\t", "").isprintable():
        stripped = _CONTROL.sub("", text)
        if len(stripped) != len(text):
            counts["control_chars_removed"] += len(text) - len(stripped)
            text = stripped
    if cfg.normalize_whitespace:
        before = text
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if " \n" in text or "\t\n" in text:
            text = _TRAILING_SPACE.sub("\n", text)
        if "\n\n\n" in text:
            text = _MANY_NEWLINES.sub("\n\n", text)
        text = text.strip()
        if text != before:
            counts["whitespace_normalized"] += 1
    if len(text) < max(cfg.min_doc_chars, 1):
        counts["too_short"] += 1
        return None
    return text


def document_hash(text: str) -> int:
    """64-bit content hash: dedupes documents and decides their split (stable across runs and machines)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


def read_documents(
    paths: Iterable[str | Path] | str | Path, cfg: DataConfig, stats: ReadStats | None = None
) -> Iterator[str]:
    """Cleaned (and, with cfg.dedupe, deduplicated) documents of `paths`, streamed in file order.

    Pass a ReadStats to get the counts of every cleaning step and the invalid UTF-8 per file.
    """
    files = expand_paths(paths)
    stats = stats if stats is not None else ReadStats()
    stats.files = len(files)
    seen: set[int] = set()
    for unit in iter_units(files, cfg):
        raw_docs, bad = unit_documents(unit, cfg)
        counts: Counter = Counter()
        stats.bytes_read += unit.nbytes
        for doc in raw_docs:
            text = clean_document(doc, cfg, counts)
            if text is None:
                continue
            if cfg.dedupe:
                h = document_hash(text)
                if h in seen:
                    counts["duplicates"] += 1
                    continue
                seen.add(h)
            stats.documents_kept += 1
            yield text
        stats.merge_unit(unit.path, bad, counts, len(raw_docs))
