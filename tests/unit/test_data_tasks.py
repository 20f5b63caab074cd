"""Task readers on the real files in ../shared/data (with the flags docs/data.md gives) and on bad input."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path

import pytest

from lmforge.data import load_labels, read_task_file
from lmforge.errors import DataError


# --- the real datasets --------------------------------------------------------------------------------
def test_sst2_tsv(shared_data: Path) -> None:
    d = read_task_file(shared_data / "sst2" / "test.tsv", "classification", "sentence", "label")
    assert len(d) == 872 and d.label_names == ["0", "1"]
    assert Counter(d.labels) == {0: 428, 1: 444}  # the README's counts
    assert all(t == t.strip() and t for t in d.texts)  # the trailing space before the tab is gone
    train = read_task_file(shared_data / "sst2" / "train.tsv", "classification", "sentence", "label")
    assert len(train) == 60_614 and Counter(train.labels) == {0: 26_786, 1: 33_828}


def test_tsv_quotes_are_plain_text(tmp_path: Path) -> None:
    f = tmp_path / "a.tsv"
    f.write_text('sentence\tlabel\nhe said "great\t1\n"fine" , really\t0\n')
    d = read_task_file(f, "classification", "sentence", "label")  # GLUE TSVs: a quote never opens a field
    assert d.texts == ['he said "great', '"fine" , really'] and d.labels == [1, 0]


def test_stsb_headerless_tab_separated_csv(shared_data: Path) -> None:
    d = read_task_file(shared_data / "stsb" / "sts-train.csv", "regression", "5", "4", text_pair_column="6")
    assert len(d) == 5_749 and d.label_names is None
    assert round(statistics.mean(d.labels), 2) == 2.70
    assert (d.texts[0], d.text_pairs[0], d.labels[0]) == ("A plane is taking off.", "An air plane is taking off.", 5.0)
    test = read_task_file(shared_data / "stsb" / "sts-test.csv", "regression", "5", "4", text_pair_column="6")
    assert len(test) == 1_379 and min(test.labels) >= 0.0 and max(test.labels) <= 5.0  # rows with 9 fields read too


def test_wnut17_conll(shared_data: Path) -> None:
    train = read_task_file(shared_data / "wnut17" / "wnut17train.conll", "token-classification")
    assert len(train) == 3_394 and sum(len(s) for s in train.texts) == 62_730
    assert len(train.label_names) == 13 and "O" in train.label_names
    b_tags = Counter(train.label_names[t] for seq in train.labels for t in seq if train.label_names[t][0] == "B")
    assert b_tags["B-person"] == 660 and b_tags["B-location"] == 548
    assert all(len(w) == len(t) for w, t in zip(train.texts, train.labels))
    dev = read_task_file(
        shared_data / "wnut17" / "emerging.dev.conll", "token-classification", label_names=train.label_names
    )
    test = read_task_file(
        shared_data / "wnut17" / "emerging.test.annotated", "token-classification", label_names=train.label_names
    )
    assert (len(dev), sum(map(len, dev.texts))) == (1_009, 15_733)
    assert (len(test), sum(map(len, test.texts))) == (1_287, 23_394)


def test_dialogsum_jsonl(shared_data: Path) -> None:
    folder = shared_data / "summarization" / "dialogsum"
    dev = read_task_file(folder / "dialogsum.dev.jsonl", "text-to-text", "dialogue", "summary")
    assert len(dev) == 500 and dev.texts[0].startswith("#Person1#: Hello, how are you doing today?")
    assert all(isinstance(s, str) and s for s in dev.labels)
    test = read_task_file(folder / "dialogsum.test.jsonl", "text-to-text", "dialogue", "summary1")
    assert len(test) == 500
    with pytest.raises(
        DataError, match=r"line 1: no field 'summary'; the fields are \['dialogue', 'fname', 'summary1'"
    ):
        read_task_file(folder / "dialogsum.test.jsonl", "text-to-text", "dialogue", "summary")


def test_multi30k_parallel_files(shared_data: Path) -> None:
    folder = shared_data / "multi30k"
    d = read_task_file(folder / "train.en", "text-to-text", "en", "de")
    assert len(d) == 29_000
    assert d.texts[0] == "Two young, White males are outside near many bushes."
    assert d.labels[0] == "Zwei junge weiße Männer sind im Freien in der Nähe vieler Büsche."
    same = read_task_file(folder / "val.en", "text-to-text", target_file=folder / "val.de")
    assert len(same) == 1_014


# --- labels ----------------------------------------------------------------------------------------------
def test_label_vocabulary_is_sorted_saved_and_reused(tmp_path: Path) -> None:
    train = tmp_path / "train.csv"
    train.write_text("text,label\na,pos\nb,neg\nc,neutral\nd,pos\n")
    d = read_task_file(train, "classification", "text", "label")
    assert d.label_names == ["neg", "neutral", "pos"] and d.labels == [2, 0, 1, 2]
    path = d.save_labels(tmp_path / "run" / "labels.json")
    assert json.loads(path.read_text()) == {"task": "classification", "labels": ["neg", "neutral", "pos"]}
    assert load_labels(path) == d.label_names
    val = tmp_path / "val.csv"
    val.write_text("text,label\nx,pos\ny,angry\n")
    with pytest.raises(DataError, match=r"val\.csv: line 3: label 'angry' is not among the training labels"):
        read_task_file(val, "classification", "text", "label", label_names=d.label_names)


def test_numeric_labels_sort_as_numbers(tmp_path: Path) -> None:
    f = tmp_path / "a.jsonl"
    f.write_text("\n".join(json.dumps({"t": "x", "y": y}) for y in (10, 2, 1, 2)))
    assert read_task_file(f, "classification", "t", "y").label_names == ["1", "2", "10"]


def test_csv_with_quotes_and_pairs(tmp_path: Path) -> None:
    f = tmp_path / "pairs.csv"
    f.write_text('premise,hypothesis,score\n"A man, smiling",He is happy,4.5\n"Quote ""x""",other,1\n')
    d = read_task_file(f, "regression", "premise", "score", text_pair_column="hypothesis")
    assert d.texts == ["A man, smiling", 'Quote "x"'] and d.text_pairs == ["He is happy", "other"]
    assert d.labels == [4.5, 1.0]


def test_token_classification_from_jsonl_lists(tmp_path: Path) -> None:
    f = tmp_path / "ner.jsonl"
    f.write_text(json.dumps({"tokens": ["John", "lives"], "tags": ["B-PER", "O"]}) + "\n")
    d = read_task_file(f, "token-classification", "tokens", "tags")
    assert d.texts == [["John", "lives"]] and d.label_names == ["B-PER", "O"] and d.labels == [[0, 1]]


# --- bad input: one clear line naming the file --------------------------------------------------------
def test_unknown_column_lists_the_existing_ones(tmp_path: Path) -> None:
    f = tmp_path / "a.tsv"
    f.write_text("sentence\tlabel\nhello\t1\n")
    with pytest.raises(DataError, match=r"a\.tsv: no column 'text'; the columns are \['sentence', 'label'\]"):
        read_task_file(f, "classification", "text", "label")
    with pytest.raises(DataError, match=r"name the label column \(--label-column\); the columns are \['sentence'"):
        read_task_file(f, "classification", "sentence", None)


def test_missing_labels_are_reported_with_count_and_line(tmp_path: Path) -> None:
    f = tmp_path / "a.csv"
    f.write_text("text,label\na,1\nb,\nc,0\nd,\n")
    with pytest.raises(DataError, match=r"a\.csv: 2 rows have no label in column 'label' \(first at line 3\)"):
        read_task_file(f, "classification", "text", "label")
    g = tmp_path / "a.jsonl"
    g.write_text('{"text": "a", "label": null}\n')
    with pytest.raises(DataError, match=r"a\.jsonl: 1 rows have no label"):
        read_task_file(g, "classification", "text", "label")


def test_other_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"{tmp_path / 'nope.csv'}: no such file"):
        read_task_file(tmp_path / "nope.csv", "classification", "text", "label")
    with pytest.raises(DataError, match="task 'sentiment' is unknown"):
        read_task_file(tmp_path / "nope.csv", "sentiment", "text", "label")
    score = tmp_path / "s.csv"
    score.write_text("a,b\nx,high\n")
    with pytest.raises(DataError, match=r"s\.csv: line 2: label 'high' in column 'b' is not a number"):
        read_task_file(score, "regression", "a", "b")
    short = tmp_path / "short.tsv"
    short.write_text("x\t5\ny\n")
    with pytest.raises(DataError, match=r"short\.tsv: line 2: has 1 fields, column '1' needs field 1"):
        read_task_file(short, "classification", "0", "1")
    conll = tmp_path / "bad.conll"
    conll.write_text("John\tB-PER\nlives\n")
    with pytest.raises(DataError, match=r"bad\.conll: line 2: expected `token<TAB>tag`"):
        read_task_file(conll, "token-classification")
    src, tgt = tmp_path / "t.en", tmp_path / "t.de"
    src.write_text("a\nb\n")
    tgt.write_text("x\n")
    with pytest.raises(DataError, match=r"t\.en has 2 lines but .*t\.de has 1"):
        read_task_file(src, "text-to-text", "en", "de")
    with pytest.raises(DataError, match="needs a line-aligned target file"):
        read_task_file(src, "text-to-text", "source", "target")
    binary = tmp_path / "b.csv"
    binary.write_bytes(b"\x00\x01\x02text,label")
    with pytest.raises(DataError, match=r"b\.csv: looks like a binary file"):
        read_task_file(binary, "classification", "text", "label")


def test_parquet_task_files_read_by_column_name(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from lmforge.data.tasks import read_task_file

    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"text": ["good film", "bad film", "fine"], "label": ["pos", "neg", "pos"]}), path)
    data = read_task_file(path, "classification", "text", "label")
    assert data.texts == ["good film", "bad film", "fine"] and data.labels == [1, 0, 1]
    assert data.label_names == ["neg", "pos"]
    with pytest.raises(DataError, match=r"no column 'sentence'; the columns are \['text', 'label'\]"):
        read_task_file(path, "classification", "sentence", "label")
