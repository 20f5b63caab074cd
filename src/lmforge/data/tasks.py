"""Labelled task data for fine-tuning: read a csv/tsv/jsonl/CoNLL/parallel-text file into a TaskData.

Tasks and what they read:

* classification: text (+ optional text pair) and a label; labels become ids into a sorted label list.
* regression: text (+ pair) and a float score.
* token-classification: CoNLL (one `token<TAB>tag` per line, blank or whitespace-only line between
  sentences), or jsonl with list-valued token and tag fields; tags become ids into a sorted tag list.
* text-to-text: a source and a target column, or two line-aligned files (`train.en` + `train.de`).

Columns are named by header (csv/tsv with a header row, jsonl keys) or by 0-based index (files without a
header, CoNLL). Examples on the files in ../shared/data are in docs/data.md.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lmforge.data.reading import TABLE_SUFFIXES, decode_utf8, parse_json_object
from lmforge.errors import DataError

Task = Literal["classification", "regression", "token-classification", "text-to-text"]
TASKS = ("classification", "regression", "token-classification", "text-to-text")
TASK_TABLES = TABLE_SUFFIXES | {".json"}  # files with named columns; anything else is CoNLL / parallel text


@dataclass
class TaskData:
    """Examples of one task file. `texts[i]` (+ `text_pairs[i]`) goes with `labels[i]`.

    labels are class ids (classification), floats (regression), lists of tag ids (token-classification,
    where texts[i] is the list of words) or target strings (text-to-text).
    """

    task: str
    path: Path
    texts: list[Any]
    labels: list[Any]
    text_pairs: list[str] | None = None
    label_names: list[str] | None = None
    columns: dict[str, str | None] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    def save_labels(self, path: str | Path) -> Path:
        """Write the label vocabulary as JSON ({"task": ..., "labels": [...]}), atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"task": self.task, "labels": self.label_names}, indent=1), encoding="utf-8")
        tmp.replace(path)
        return path


def load_labels(path: str | Path) -> list[str]:
    """The label list saved by TaskData.save_labels."""
    path = Path(path)
    try:
        labels = json.loads(path.read_text(encoding="utf-8"))["labels"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not a label file written by lmforge ({e})") from e
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise DataError(f"{path}: 'labels' must be a list of strings")
    return labels


def read_task_file(
    path: str | Path,
    task: str,
    text_column: str | None = None,
    label_column: str | None = None,
    text_pair_column: str | None = None,
    *,
    label_names: list[str] | None = None,
    target_file: str | Path | None = None,
    delimiter: str | None = None,
    header: bool | None = None,
    max_rows: int | None = None,
    allow_unseen_labels: bool = False,
    require_labels: bool = True,
) -> TaskData:
    """Read one task file.

    Args:
        text_column / label_column / text_pair_column: header names or jsonl keys, or 0-based indexes for files
            without a header and for CoNLL (defaults there: tokens in column 0, tags in the last column).
            For text-to-text, text_column is the source and label_column the target.
        label_names: the label list of the training data, so that ids agree across files; a label outside it
            is an error. None builds the (sorted) list from this file.
        target_file: text-to-text from two line-aligned plain-text files (source = `path`). Without it, a file
            `X.<text_column>` is paired with `X.<label_column>` (train.en + train.de with --text-column en
            --label-column de).
        delimiter: csv/tsv field separator; None: tab for .tsv or when the first line has a tab, else comma.
        header: whether a csv/tsv file starts with a header row; None: yes, unless every column asked for is
            an index that the first row does not contain as a name.
        allow_unseen_labels: classification with `label_names`: a label outside them becomes id -1 (evaluation
            counts them) instead of an error.
        require_labels: False reads the texts only (prediction); labels are placeholders (0, 0.0 or "").
    """
    path = Path(path)
    if task not in TASKS:
        raise DataError(f"task {task!r} is unknown; use one of {list(TASKS)}")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if task == "text-to-text" and (target_file is not None or suffix not in TASK_TABLES):
        return _read_parallel(path, target_file, text_column, label_column, max_rows)
    if task == "token-classification" and suffix not in TASK_TABLES:
        return _read_conll(path, text_column, label_column, label_names, max_rows)
    if text_column is None:
        raise DataError(
            f"{path}: name the text column (--text-column); the columns are {_columns_of(path, delimiter, header)}"
        )
    if label_column is None and require_labels:
        raise DataError(
            f"{path}: name the label column (--label-column); the columns are {_columns_of(path, delimiter, header)}"
        )
    if not require_labels:
        label_column = None
    wanted = [c for c in (text_column, text_pair_column, label_column) if c is not None]
    if suffix in (".jsonl", ".json"):
        rows = _jsonl_rows(path, wanted, max_rows)
    elif suffix == ".parquet":
        rows = _parquet_rows(path, wanted, max_rows)
    else:
        rows = _table_rows(path, wanted, delimiter, header, max_rows)
    if not rows:
        raise DataError(f"{path}: no rows")
    cols = {"text": text_column, "text_pair": text_pair_column, "label": label_column}
    if task == "token-classification":  # jsonl with list-valued token and tag fields
        raw_texts = [r[text_column] for _, r in rows]
        return _token_task_from_lists(path, raw_texts, [(line, r[label_column]) for line, r in rows], label_names, cols)
    texts = [_as_text(r[text_column]) for _, r in rows]
    pairs = [_as_text(r[text_pair_column]) for _, r in rows] if text_pair_column is not None else None
    if label_column is None:  # prediction: texts only
        placeholder = {"classification": 0, "regression": 0.0}.get(task, "")
        return TaskData(task, path, texts, [placeholder] * len(texts), pairs, label_names, cols)
    raw_labels = [(line, r[label_column]) for line, r in rows]
    _check_no_missing(path, label_column, raw_labels)
    if task == "regression":
        labels = []
        for line, v in raw_labels:
            try:
                labels.append(float(v))
            except (TypeError, ValueError):
                raise DataError(
                    f"{path}: line {line}: label {v!r} in column {label_column!r} is not a number"
                ) from None
            if not math.isfinite(labels[-1]):
                raise DataError(f"{path}: line {line}: label {v!r} in column {label_column!r} is not a finite number")
        return TaskData(task, path, texts, labels, pairs, None, cols)
    if task == "text-to-text":
        return TaskData(task, path, texts, [_as_text(v) for _, v in raw_labels], pairs, None, cols)
    names, ids = _label_ids(path, [(line, str(v).strip()) for line, v in raw_labels], label_names, allow_unseen_labels)
    return TaskData(task, path, texts, ids, pairs, names, cols)


# --- helpers ------------------------------------------------------------------------------------------
def _as_text(v: Any) -> str:
    return v.strip() if isinstance(v, str) else "" if v is None else str(v)


def _check_no_missing(path: Path, column: str, raw_labels: list[tuple[int, Any]]) -> None:
    missing = [line for line, v in raw_labels if v is None or (isinstance(v, str) and not v.strip())]
    if missing:
        raise DataError(
            f"{path}: {len(missing)} rows have no label in column {column!r} (first at line {missing[0]}); "
            "every row needs one: fill them in or drop those rows"
        )


def _sorted_labels(values: set[str]) -> list[str]:
    try:
        return sorted(values, key=float)  # "2" < "10" for numeric labels
    except ValueError:
        return sorted(values)


def _label_ids(
    path: Path, labels: list[tuple[int, str]], label_names: list[str] | None, allow_unseen: bool = False
) -> tuple[list[str], list[int]]:
    names = list(label_names) if label_names is not None else _sorted_labels({v for _, v in labels})
    index = {n: i for i, n in enumerate(names)}
    ids = []
    for line, v in labels:
        if v not in index and allow_unseen:
            ids.append(-1)  # evaluation: counted and left out of the metrics (lmforge.evaluation.metrics)
            continue
        if v not in index:
            raise DataError(
                f"{path}: line {line}: label {v!r} is not among the training labels {names[:20]}; "
                "fix the row or train with it"
            )
        ids.append(index[v])
    return names, ids


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    if b"\x00" in raw[:8192]:
        raise DataError(f"{path}: looks like a binary file (NUL bytes), not a text table")
    text, _ = decode_utf8(raw)
    return text[1:] if text.startswith("\ufeff") else text


def _sniff_delimiter(path: Path, text: str, delimiter: str | None) -> str:
    if delimiter is not None:
        return {"tab": "\t", "\\t": "\t", "comma": ","}.get(delimiter, delimiter)
    if path.suffix.lower() == ".tsv":
        return "\t"
    first = text.split("\n", 1)[0]
    return "\t" if "\t" in first else ","


def _table(path: Path, delimiter: str | None) -> list[list[str]]:
    text = _read_text(path)
    sep = _sniff_delimiter(path, text, delimiter)
    # tab-separated task files (GLUE SST-2, STS-B) use bare double quotes inside sentences: no quote parsing
    quoting = csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL
    try:
        return [r for r in csv.reader(io.StringIO(text, newline=""), delimiter=sep, quoting=quoting)]
    except csv.Error as e:
        raise DataError(f"{path}: not valid CSV ({e})") from e


def _has_header(first: list[str], wanted: list[str], header: bool | None) -> bool:
    if header is not None:
        return header
    return not (all(c.lstrip("-").isdigit() for c in wanted) and not any(c in first for c in wanted))


def _parquet_table(path: Path) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - pyarrow is a dependency
        raise DataError(f"{path}: reading .parquet needs pyarrow (pip install pyarrow)") from e
    try:
        return pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for bad files
        raise DataError(f"{path}: not a valid parquet file ({e})") from e


def _parquet_rows(path: Path, wanted: list[str], max_rows: int | None) -> list[tuple[int, dict[str, Any]]]:
    table = _parquet_table(path)
    missing = [c for c in wanted if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: no column {missing[0]!r}; the columns are {table.column_names}")
    columns = {c: table.column(c).to_pylist()[:max_rows] for c in wanted}
    n = min(len(v) for v in columns.values()) if columns else 0
    return [(i + 1, {c: columns[c][i] for c in wanted}) for i in range(n)]  # "line" = 1-based row number


def _columns_of(path: Path, delimiter: str | None, header: bool | None) -> list[str]:
    if path.suffix.lower() == ".parquet":
        return list(_parquet_table(path).column_names)
    if path.suffix.lower() in (".jsonl", ".json"):
        for line in _read_text(path).split("\n"):
            if line.strip():
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    return []
                return sorted(obj) if isinstance(obj, dict) else []
        return []
    table = _table(path, delimiter)
    if not table:
        return []
    if header is False:
        return [str(i) for i in range(len(table[0]))]
    return table[0]


def _table_rows(
    path: Path, wanted: list[str], delimiter: str | None, header: bool | None, max_rows: int | None
) -> list[tuple[int, dict[str, str]]]:
    table = _table(path, delimiter)
    if not table:
        raise DataError(f"{path}: the file is empty")
    if _has_header(table[0], wanted, header):
        names = [n.strip() for n in table[0]]
        missing = [c for c in wanted if c not in names]
        if missing:
            raise DataError(
                f"{path}: no column {missing[0]!r}; the columns are {names} "
                "(for a file without a header row, give 0-based column indexes)"
            )
        idx = {c: names.index(c) for c in wanted}
        body, first_line = table[1:], 2
    else:
        idx = {}
        for c in wanted:
            try:
                idx[c] = int(c)
            except ValueError:
                raise DataError(
                    f"{path}: column {c!r} must be a 0-based index in a file without a header row "
                    f"(its rows have {len(table[0])} fields)"
                ) from None
        body, first_line = table, 1
    rows = []
    for offset, r in enumerate(body):
        if not r or (len(r) == 1 and not r[0].strip()):
            continue
        line = first_line + offset
        row = {}
        for c, i in idx.items():
            if not -len(r) <= i < len(r):
                raise DataError(f"{path}: line {line}: has {len(r)} fields, column {c!r} needs field {i}")
            row[c] = r[i]
        rows.append((line, row))
        if max_rows is not None and len(rows) >= max_rows:
            break
    return rows


def _jsonl_rows(path: Path, wanted: list[str], max_rows: int | None) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for line_no, line in enumerate(_read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        obj = parse_json_object(line, f"{path}: line {line_no}")
        missing = [c for c in wanted if c not in obj]
        if missing:
            raise DataError(f"{path}: line {line_no}: no field {missing[0]!r}; the fields are {sorted(obj)}")
        rows.append((line_no, obj))
        if max_rows is not None and len(rows) >= max_rows:
            break
    return rows


def _token_task_from_lists(
    path: Path, texts: list[Any], raw_labels: list[tuple[int, Any]], label_names: list[str] | None, cols: dict
) -> TaskData:
    words, tags = [], []
    for (line, t), w in zip(raw_labels, texts):
        if not isinstance(t, list):
            raise DataError(f"{path}: line {line}: token-classification tags must be a list, got {type(t).__name__}")
        words.append(w.split() if isinstance(w, str) else list(w))
        tags.append([(line, str(x)) for x in t])
        if len(words[-1]) != len(t):
            raise DataError(f"{path}: line {line}: {len(words[-1])} tokens but {len(t)} tags")
    names, flat = _label_ids(path, [x for seq in tags for x in seq], label_names)
    ids, k = [], 0
    for seq in tags:
        ids.append(flat[k : k + len(seq)])
        k += len(seq)
    return TaskData("token-classification", path, words, ids, None, names, cols)


def _read_conll(
    path: Path, token_column: str | None, tag_column: str | None, label_names: list[str] | None, max_rows: int | None
) -> TaskData:
    tok_i, tag_i = _index(path, token_column, 0), _index(path, tag_column, -1)
    sentences: list[list[str]] = []
    tag_seqs: list[list[tuple[int, str]]] = []
    words: list[str] = []
    tags: list[tuple[int, str]] = []
    for line_no, line in enumerate(_read_text(path).split("\n"), start=1):
        if not line.strip():  # WNUT-17 separates some sentences with a line holding one TAB
            if words:
                sentences.append(words)
                tag_seqs.append(tags)
                words, tags = [], []
                if max_rows is not None and len(sentences) >= max_rows:
                    break
            continue
        if line.startswith("-DOCSTART-"):
            continue
        fields = line.rstrip("\r").split("\t") if "\t" in line else line.split()
        if len(fields) < 2 or not (-len(fields) <= tok_i < len(fields) and -len(fields) <= tag_i < len(fields)):
            raise DataError(
                f"{path}: line {line_no}: expected `token<TAB>tag` (CoNLL), got {line[:60]!r}; "
                "token-classification reads CoNLL files or jsonl with list fields"
            )
        words.append(fields[tok_i])
        tags.append((line_no, fields[tag_i].strip()))
    if words:
        sentences.append(words)
        tag_seqs.append(tags)
    if not sentences:
        raise DataError(f"{path}: no sentences (expected CoNLL: `token<TAB>tag` lines, blank line between sentences)")
    missing = [ln for seq in tag_seqs for ln, t in seq if not t]
    if missing:
        raise DataError(
            f"{path}: {len(missing)} tokens have no tag (first at line {missing[0]}); every token needs one"
        )
    names, flat = _label_ids(path, [x for seq in tag_seqs for x in seq], label_names)
    ids, k = [], 0
    for seq in tag_seqs:
        ids.append(flat[k : k + len(seq)])
        k += len(seq)
    cols = {"text": str(tok_i), "label": str(tag_i), "text_pair": None}
    return TaskData("token-classification", path, sentences, ids, None, names, cols)


def _index(path: Path, column: str | None, default: int) -> int:
    if column is None:
        return default
    try:
        return int(column)
    except ValueError:
        raise DataError(f"{path}: CoNLL columns are 0-based indexes (token 0, tag -1), not {column!r}") from None


def _read_parallel(
    path: Path, target_file: str | Path | None, text_column: str | None, label_column: str | None, max_rows: int | None
) -> TaskData:
    if target_file is None:
        if text_column and label_column and path.suffix == f".{text_column}":
            target_file = path.with_suffix(f".{label_column}")
        else:
            raise DataError(
                f"{path}: text-to-text from plain text needs a line-aligned target file: give target_file, or name "
                "the files X.SRC / X.TGT and pass --text-column SRC --label-column TGT (e.g. train.en + train.de)"
            )
    target = Path(target_file)
    if not target.is_file():
        raise DataError(f"{target}: no such file (the target side of {path})")
    src = _read_text(path).split("\n")
    tgt = _read_text(target).split("\n")
    for lines in (src, tgt):
        if lines and lines[-1] == "":
            lines.pop()
    if len(src) != len(tgt):
        raise DataError(
            f"{path} has {len(src)} lines but {target} has {len(tgt)}; parallel files must align line by line"
        )
    empty = [i + 1 for i, t in enumerate(tgt) if not t.strip()]
    if empty:
        raise DataError(
            f"{target}: {len(empty)} empty target lines (first at line {empty[0]}); every source needs a target"
        )
    if max_rows is not None:
        src, tgt = src[:max_rows], tgt[:max_rows]
    cols = {"text": str(path), "label": str(target), "text_pair": None}
    return TaskData("text-to-text", path, [s.strip() for s in src], [t.strip() for t in tgt], None, None, cols)
