"""Tokenizers: round trips (hypothesis), MiniLM id-exactness against transformers, HF loading, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lmforge.config import DataConfig
from lmforge.errors import DataError, LmforgeError
from lmforge.tokenizers import Tokenizer, TokenizerError, load_tokenizer, train_tokenizer

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Pack my box with five dozen liquor jugs!",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "Grüße aus Köln — naïve café, 東京, emoji 🙂.",
] * 20


@pytest.fixture(scope="module")
def bpe() -> Tokenizer:
    return train_tokenizer("bpe", CORPUS, vocab_size=400, min_frequency=1)


@pytest.fixture(scope="module")
def wordpiece() -> Tokenizer:
    return train_tokenizer("wordpiece", CORPUS, vocab_size=300, lowercase=True, min_frequency=1)


@pytest.fixture(scope="module")
def char() -> Tokenizer:
    return train_tokenizer("char", CORPUS, vocab_size=0)


# --- round trips --------------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_bpe_roundtrips_any_unicode(bpe: Tokenizer, text: str) -> None:
    assert bpe.decode(bpe.encode(text)) == text


@settings(max_examples=200, deadline=None)
@given(text=st.text(min_size=1, max_size=100))
def test_char_roundtrips_text_it_was_trained_on(text: str) -> None:
    # a literal special-token string in the text encodes as that one special token (as `tokenizers` does for
    # added tokens); that is a property of special tokens, not of the character model
    tok = train_tokenizer("char", [text], vocab_size=0)
    assume(not any(tok.id_to_token(i) in text for i in tok.special_ids))
    ids = tok.encode(text)
    assert len(ids) == len(text)  # one id per code point
    assert tok.decode(ids) == text


@settings(max_examples=100, deadline=None)
@given(text=st.text(alphabet=sorted(set("".join(CORPUS))), max_size=100))
def test_char_roundtrips_known_characters(text: str) -> None:
    tok = train_tokenizer("char", CORPUS, vocab_size=0)
    assert tok.decode(tok.encode(text)) == text


def test_char_maps_unknown_characters_to_unk(char: Tokenizer) -> None:
    ids = char.encode("fox\u2603")  # a snowman is not in the training text
    assert ids[-1] == char.unk_id
    assert ids[:3] == [char.token_to_id(c) for c in "fox"]
    assert char.kind == "char" and char.eos_id == char.token_to_id("<|endoftext|>")


def test_bpe_has_gpt_specials(bpe: Tokenizer) -> None:
    assert bpe.kind == "bpe"
    assert bpe.eos_id == bpe.token_to_id("<|endoftext|>") == 0
    assert 300 < bpe.vocab_size <= 400  # 256 bytes + EOS + merges (the toy corpus runs out before 400)
    assert bpe.encode("<|endoftext|>") == [bpe.eos_id]  # the special token is never split
    assert bpe.decode([*bpe.encode("a"), bpe.eos_id], skip_special_tokens=True) == "a"


def test_wordpiece_has_bert_specials_and_template(wordpiece: Tokenizer) -> None:
    assert [wordpiece.pad_id, wordpiece.unk_id, wordpiece.cls_id, wordpiece.sep_id, wordpiece.mask_id] == [
        0,
        1,
        2,
        3,
        4,
    ]
    ids = wordpiece.encode("The quick fox", add_special_tokens=True)
    assert ids[0] == wordpiece.cls_id and ids[-1] == wordpiece.sep_id
    assert wordpiece.encode("THE QUICK") == wordpiece.encode("the quick")  # lowercase option
    assert wordpiece.decode(wordpiece.encode("the quick brown fox")) == "the quick brown fox"
    assert wordpiece.eos_id is None and wordpiece.doc_separator_id == wordpiece.sep_id


def test_encode_pair_truncates_longest_first(wordpiece: Tokenizer) -> None:
    a, b = "the quick brown fox jumps over the lazy dog", "pack my box"
    ids, types = wordpiece.encode_pair(a, b)
    na, nb = len(wordpiece.encode(a)), len(wordpiece.encode(b))
    assert len(ids) == na + nb + 3 and types == [0] * (na + 2) + [1] * (nb + 1)
    assert ids[0] == wordpiece.cls_id and ids[na + 1] == wordpiece.sep_id and ids[-1] == wordpiece.sep_id
    ids, types = wordpiece.encode_pair(a, b, max_length=10)
    assert len(ids) == 10 and types.count(1) == min(nb, 3) + 1
    single, types = wordpiece.encode_pair(a, max_length=5)
    assert len(single) == 5 and single[-1] == wordpiece.sep_id and set(types) == {0}


def test_encode_batch_equals_encode(bpe: Tokenizer) -> None:
    texts = ["hello world", "", "Grüße 🙂"]
    assert bpe.encode_batch(texts) == [bpe.encode(t) for t in texts]


# --- save / load / hash -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["bpe", "wordpiece", "char"])
def test_save_load_roundtrip(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    tok: Tokenizer = request.getfixturevalue(name)
    assert tok.save(tmp_path / "run") == tmp_path / "run" / "tokenizer.json"
    assert tok.save(tmp_path / "x.json") == tmp_path / "x.json"
    for path in (tmp_path / "run", tmp_path / "x.json"):
        again = load_tokenizer(path)
        assert again.kind == tok.kind and again.vocab_size == tok.vocab_size
        assert again.hash() == tok.hash()
        assert again.encode(CORPUS[3]) == tok.encode(CORPUS[3])


def test_hash_differs_between_tokenizers(bpe: Tokenizer, wordpiece: Tokenizer) -> None:
    assert len(bpe.hash()) == 16 and bpe.hash() != wordpiece.hash()
    assert bpe.hash() == train_tokenizer("bpe", CORPUS, vocab_size=400, min_frequency=1).hash()  # deterministic
    copy = Tokenizer(bpe.backend.from_str(bpe.to_json()))
    before = copy.hash()
    copy.backend.add_tokens(["<|new|>"])
    assert copy.hash() != before  # the cached hash follows changes to the backend's vocabulary


def test_load_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match=f"{tmp_path / 'nope'}: no such file"):
        load_tokenizer(tmp_path / "nope")
    with pytest.raises(TokenizerError, match="no tokenizer found .*tokenizer.json"):
        load_tokenizer(tmp_path)
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(TokenizerError, match=f"{bad}: not a valid tokenizer.json"):
        load_tokenizer(bad)
    assert issubclass(TokenizerError, DataError) and issubclass(TokenizerError, LmforgeError)


def test_training_errors() -> None:
    with pytest.raises(TokenizerError, match="kind 'sentencepiece' is unknown"):
        train_tokenizer("sentencepiece", CORPUS, 100)
    with pytest.raises(TokenizerError, match="too small for byte-level BPE"):
        train_tokenizer("bpe", CORPUS, 100)
    with pytest.raises(TokenizerError, match="corpus is empty"):
        train_tokenizer("bpe", [], 300)


def test_training_reads_at_most_max_bytes(tmp_path: Path) -> None:
    # 'zebra' only appears after the byte budget: a char tokenizer cannot have seen the 'z'
    docs = ["aaaa bbbb"] * 100 + ["zzzz"]
    tok = train_tokenizer("char", docs, vocab_size=0, max_bytes=200)
    assert tok.token_to_id("a") is not None and tok.token_to_id("z") is None


def test_training_on_files_samples_by_hash(tmp_path: Path) -> None:
    files = []
    for i in range(4):
        f = tmp_path / f"part{i}.txt"
        f.write_text("\n\n".join(f"document {i} number {j} " + "x" * 50 for j in range(50)))
        files.append(f)
    full = train_tokenizer("bpe", files, vocab_size=300, max_bytes=10**9)
    sampled = train_tokenizer("bpe", files, vocab_size=300, max_bytes=3000)
    again = train_tokenizer("bpe", files, vocab_size=300, max_bytes=3000)
    assert sampled.hash() == again.hash()  # the hash-chosen sample is the same on every run
    assert sampled.hash() != full.hash()
    by_dir = train_tokenizer("bpe", str(tmp_path), vocab_size=300, max_bytes=10**9, data_cfg=DataConfig())
    assert by_dir.hash() == full.hash()


# --- Hugging Face tokenizers --------------------------------------------------------------------------
def _real_sentences(shared: Path) -> list[str]:
    sst = (shared / "sst2" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]
    wiki = (shared / "wikitext2" / "valid.txt").read_text(encoding="utf-8").splitlines()
    sentences = [line.rsplit("\t", 1)[0].strip() for line in sst[:300]]
    sentences += [line.strip() for line in wiki if line.strip()][:300]
    sentences += ["Grüße aus Köln — naïve café, 東京 🙂", "  multiple   spaces\tand\ttabs  ", "Ünïcödé ÀÉÎ"]
    return sentences


def test_minilm_tokenizer_json_ids_equal_transformers(shared_data: Path, minilm: Path) -> None:
    transformers = pytest.importorskip("transformers")
    model_dir = minilm
    ref = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    ours = load_tokenizer(model_dir)
    assert ours.kind == "wordpiece" and ours.vocab_size == 30522
    assert (ours.cls_id, ours.sep_id, ours.pad_id, ours.mask_id, ours.unk_id) == (101, 102, 0, 103, 100)
    sentences = _real_sentences(shared_data)
    assert len(sentences) > 500
    for s in sentences:
        assert ours.encode(s, add_special_tokens=True) == ref(s)["input_ids"], s
    long = " ".join(sentences[:40])  # longer than the 128 tokens the file's own truncation setting would cut at
    assert ours.encode(long, add_special_tokens=True) == ref(long)["input_ids"]
    a, b = sentences[0], sentences[1]
    enc = ref(a, b)
    assert ours.encode_pair(a, b) == (enc["input_ids"], enc["token_type_ids"])
    enc = ref(a, b, truncation="longest_first", max_length=16)
    assert ours.encode_pair(a, b, max_length=16) == (enc["input_ids"], enc["token_type_ids"])


def test_minilm_vocab_txt_alone_gives_the_same_ids(tmp_path: Path, shared_data: Path, minilm: Path) -> None:
    transformers = pytest.importorskip("transformers")
    src = minilm
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(src / name, tmp_path / name)
    ours = load_tokenizer(tmp_path)  # no tokenizer.json: built from vocab.txt + do_lower_case
    ref = transformers.BertTokenizer.from_pretrained(str(tmp_path))  # the slow, pure-Python reference
    for s in _real_sentences(shared_data)[::7]:
        assert ours.encode(s, add_special_tokens=True) == ref(s)["input_ids"], s
    # do_lower_case=false is honoured
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    cased = load_tokenizer(tmp_path)
    assert cased.encode("Hello") != ours.encode("Hello")


def test_gpt2_vocab_and_merges_load(bpe: Tokenizer, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    # write our byte-level BPE as GPT-2's vocab.json + merges.txt and read both ways
    model = json.loads(bpe.to_json())["model"]
    (tmp_path / "vocab.json").write_text(json.dumps(model["vocab"]), encoding="utf-8")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    ours = load_tokenizer(tmp_path)
    ref = transformers.GPT2Tokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    assert ours.kind == "bpe" and ours.eos_id == bpe.eos_id
    for text in CORPUS[:4] + ["  leading spaces", "tabs\tand\nnewlines"]:
        assert ours.encode(text) == bpe.encode(text) == ref(text)["input_ids"]
        assert ours.decode(ours.encode(text)) == text
