"""`lmforge finetune`, `evaluate` and `predict` end to end, on data the tests make (a keyword task a tiny model
learns in seconds) and, for the slow tests, on the real sets in ../shared/data with all-MiniLM-L6-v2."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lmforge.checkpoint.io import load_backbone, load_model, save_model
from lmforge.config import HeadConfig, ModelConfig
from lmforge.tasks import build_model
from lmforge.tokenizers import train_tokenizer

POS, NEG, FILL = (
    ["good", "great", "fine", "superb"],
    ["bad", "awful", "poor", "dull"],
    ["the", "movie", "was", "a", "plot"],
)
NAMES = ["alice", "bob", "carol"]


def lmforge(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "lmforge", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def sentence(rng: random.Random, positive: bool) -> str:
    words = [rng.choice(FILL) for _ in range(rng.randint(3, 7))]
    words.insert(rng.randrange(len(words) + 1), rng.choice(POS if positive else NEG))
    return " ".join(words)


def write_tsv(path: Path, rows: list[tuple[str, str]], header: str = "sentence\tlabel") -> Path:
    path.write_text(header + "\n" + "".join(f"{a}\t{b}\n" for a, b in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An lmforge export of a randomly initialised 2-layer BERT (MLM head) with a WordPiece tokenizer."""
    d = tmp_path_factory.mktemp("bert")
    words = POS + NEG + FILL + NAMES + ["met", "and", "saw", "in", "paris"]
    tok = train_tokenizer("wordpiece", [" ".join(words)] * 50, vocab_size=200, min_frequency=1)
    torch.manual_seed(0)
    cfg = ModelConfig(family="bert", vocab_size=tok.vocab_size, n_layer=2, n_head=2, d_model=64, max_seq_len=64)
    save_model(build_model(cfg), d, tok)
    return d


@pytest.fixture(scope="module")
def tiny_gpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An lmforge export of a randomly initialised 2-layer GPT-2 with a character tokenizer."""
    d = tmp_path_factory.mktemp("gpt")
    tok = train_tokenizer("char", ["abcdefghij => \n" * 10], vocab_size=64)
    torch.manual_seed(0)
    cfg = ModelConfig(family="gpt2", vocab_size=tok.vocab_size, n_layer=2, n_head=2, d_model=64, max_seq_len=64)
    save_model(build_model(cfg), d, tok)
    return d


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("sentiment")
    rng = random.Random(0)
    split = {}
    for name, n in (("train", 240), ("dev", 60)):
        rows = [(sentence(rng, i % 2 == 0), "pos" if i % 2 == 0 else "neg") for i in range(n)]
        split[name] = write_tsv(d / f"{name}.tsv", rows)
    return split


FAST = ["--train.lr", "3e-3", "--train.batch_size", "16", "--data.max_length", "32"]


@pytest.fixture(scope="module")
def sentiment_run(tiny_bert: Path, sentiment: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "sst"
    r = lmforge(
        "finetune", "--task", "classification", "--model", str(tiny_bert), "--train", str(sentiment["train"]),
        "--validation", str(sentiment["dev"]), "--test", str(sentiment["dev"]), "--text-column", "sentence",
        "--label-column", "label", "--out", str(out), "--train.epochs", "6", *FAST, "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return out


def test_classification_learns_and_keeps_the_best_checkpoint(sentiment_run: Path) -> None:
    results = json.loads((sentiment_run / "results.json").read_text())
    assert results["best_val"]["accuracy"] >= 0.95
    assert results["test"]["accuracy"] == results["best_val"]["accuracy"]  # the same file, the best weights
    meta = json.loads((sentiment_run / "config.json").read_text())
    assert meta["head"] == {"kind": "sequence", "num_labels": 2, "pad_token_id": None, "scale": 1.0}
    assert meta["labels"] == ["neg", "pos"]  # string labels, kept in the run directory
    assert (sentiment_run / "best" / "model.safetensors").read_bytes() == (
        sentiment_run / "model.safetensors"
    ).read_bytes()
    rows = [json.loads(x) for x in (sentiment_run / "metrics.jsonl").read_text().splitlines()]
    vals = [r for r in rows if r.get("split") == "val"]
    assert len(vals) == 6  # once per epoch
    steps = [r["step"] for r in vals]
    assert steps == [15 * (i + 1) for i in range(6)]  # 240 rows / 16 per batch = 15 steps an epoch
    assert results["best_val"]["step"] == max(vals, key=lambda r: r["accuracy"])["step"]


def test_evaluate_and_predict_agree_with_the_run(sentiment_run: Path, sentiment: dict[str, Path], tmp_path) -> None:
    r = lmforge("evaluate", str(sentiment_run), "--data", str(sentiment["dev"]), "--json")
    assert r.returncode == 0, r.stderr
    metrics = json.loads(r.stdout)
    best = json.loads((sentiment_run / "results.json").read_text())["best_val"]
    assert metrics["accuracy"] == pytest.approx(best["accuracy"]) and metrics["examples"] == 60
    # predict: a file with an empty row and no label column, one line per input row, in order
    rng = random.Random(5)
    texts = [sentence(rng, True), "   ", sentence(rng, False), "superb superb superb"]
    path = tmp_path / "inputs.jsonl"  # blank lines of a csv/tsv are not rows; an empty field is
    path.write_text("".join(json.dumps({"sentence": t}) + "\n" for t in texts), encoding="utf-8")
    out = tmp_path / "pred.jsonl"
    r = lmforge("predict", str(sentiment_run), "--data", str(path), "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["row"] for x in lines] == [0, 1, 2, 3]
    assert lines[1] == {"row": 1, "skipped": "empty text"}
    assert lines[0]["label"] == "pos" and lines[2]["label"] == "neg" and lines[3]["label"] == "pos"
    assert sum(lines[0]["probs"]) == pytest.approx(1.0, abs=1e-5)
    assert json.loads(r.stdout)["skipped_empty"] == 1


def test_unseen_label_at_evaluation_is_counted(sentiment_run: Path, tmp_path: Path) -> None:
    path = write_tsv(tmp_path / "dev.tsv", [("the movie was good", "pos"), ("a plot", "neutral"), ("bad", "neg")])
    r = lmforge("evaluate", str(sentiment_run), "--data", str(path), "--json")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["unseen_labels"] == 1 and m["examples"] == 3


def test_classifier_export_loads_in_transformers_with_equal_logits(sentiment_run: Path, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    r = lmforge("convert", "to-hf", str(sentiment_run), str(tmp_path / "hf"))
    assert r.returncode == 0, r.stderr
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    ours = load_model(sentiment_run)
    assert hf.config.id2label == {0: "neg", 1: "pos"}
    ids = torch.randint(5, ours.cfg.vocab_size, (3, 9))
    mask = torch.ones_like(ids)
    mask[2, 6:] = 0
    with torch.no_grad():
        torch.testing.assert_close(ours(ids, attention_mask=mask).logits, hf(ids, attention_mask=mask).logits)


def test_regression_learns_a_score(tiny_bert: Path, tmp_path: Path) -> None:
    rng = random.Random(1)
    rows = []
    for _ in range(300):
        k = rng.randint(0, 3)
        words = [rng.choice(FILL) for _ in range(4)] + ["good"] * k
        rng.shuffle(words)
        rows.append((" ".join(words), " ".join(rng.choice(FILL) for _ in range(3)), str(k * 1.5)))
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"a": a, "b": b, "score": s}) + "\n" for a, b, s in rows[:240]))
    dev = tmp_path / "dev.jsonl"
    dev.write_text("".join(json.dumps({"a": a, "b": b, "score": s}) + "\n" for a, b, s in rows[240:]))
    r = lmforge(
        "finetune", "--task", "regression", "--model", str(tiny_bert), "--train", str(train), "--validation",
        str(dev), "--text-column", "a", "--text-pair-column", "b", "--label-column", "score", "--out",
        str(tmp_path / "run"), "--train.epochs", "6", *FAST, "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["val"]["pearson"] > 0.8 and s["val"]["spearman"] > 0.8
    out = tmp_path / "scores.jsonl"
    assert lmforge("predict", str(tmp_path / "run"), "--data", str(dev), "--out", str(out)).returncode == 0
    scores = [json.loads(x)["score"] for x in out.read_text().splitlines()]
    gold = [float(x[2]) for x in rows[240:]]
    from scipy.stats import spearmanr

    assert spearmanr(scores, gold).statistic == pytest.approx(s["val"]["spearman"], abs=1e-6)


@pytest.mark.slow
def test_bi_encoder_regression_learns_similarity_and_exports_a_bert_model(tiny_bert: Path, tmp_path: Path) -> None:
    rng = random.Random(4)

    def rows(n: int) -> list[dict[str, object]]:
        out = []
        for _ in range(n):
            same = rng.random() < 0.5
            a = sentence(rng, True)
            b = sentence(rng, same)  # the same sentiment word family: similar (5), the other: dissimilar (0)
            out.append({"a": a, "b": b, "score": 5.0 if same else 0.0})
        return out

    train, dev = tmp_path / "train.jsonl", tmp_path / "dev.jsonl"
    train.write_text("".join(json.dumps(x) + "\n" for x in rows(300)))
    dev.write_text("".join(json.dumps(x) + "\n" for x in rows(60)))
    run = tmp_path / "bi"
    r = lmforge(
        "finetune", "--task", "regression", "--pair_encoding", "bi", "--model", str(tiny_bert), "--train",
        str(train), "--validation", str(dev), "--text-column", "a", "--text-pair-column", "b", "--label-column",
        "score", "--out", str(run), "--train.epochs", "4", *FAST, "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["val"]["spearman"] > 0.8
    assert json.loads((run / "config.json").read_text())["head"]["kind"] == "cosine"
    ev = lmforge("evaluate", str(run), "--data", str(dev), "--json")
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["spearman"] == pytest.approx(s["val"]["spearman"], abs=1e-9)
    transformers = pytest.importorskip("transformers")
    assert lmforge("convert", "to-hf", str(run), str(tmp_path / "hf")).returncode == 0
    hf = transformers.AutoModel.from_pretrained(tmp_path / "hf").eval()
    ours = load_model(run)
    ids = torch.randint(5, ours.cfg.vocab_size, (2, 6))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).last_hidden_state, hf(ids).last_hidden_state)


def conll(path: Path, rng: random.Random, n: int) -> Path:
    lines = []
    for _ in range(n):
        words = [rng.choice(FILL + ["met", "saw", "in"]) for _ in range(rng.randint(3, 6))]
        tags = ["O"] * len(words)
        i = rng.randrange(len(words))
        words.insert(i, rng.choice(NAMES))
        tags.insert(i, "B-person")
        if rng.random() < 0.3:
            words.insert(0, "paris")
            tags.insert(0, "B-location")
        lines += [f"{w}\t{t}" for w, t in zip(words, tags)] + [""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.slow
def test_token_classification_learns_entities_and_exports(tiny_bert: Path, tmp_path: Path) -> None:
    rng = random.Random(2)
    train, dev = conll(tmp_path / "train.conll", rng, 200), conll(tmp_path / "dev.conll", rng, 50)
    run = tmp_path / "ner"
    r = lmforge(
        "finetune", "--task", "token-classification", "--model", str(tiny_bert), "--train", str(train),
        "--validation", str(dev), "--out", str(run), "--train.epochs", "5", *FAST, "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["val"]["f1"] > 0.9
    assert json.loads((run / "config.json").read_text())["labels"] == ["B-location", "B-person", "O"]
    out = tmp_path / "tags.jsonl"
    assert lmforge("predict", str(run), "--data", str(dev), "--out", str(out)).returncode == 0
    first = json.loads(out.read_text().splitlines()[0])
    gold_words = dev.read_text().split("\n\n")[0].splitlines()
    assert len(first["tags"]) == len(gold_words)  # one tag per word
    transformers = pytest.importorskip("transformers")
    assert lmforge("convert", "to-hf", str(run), str(tmp_path / "hf")).returncode == 0
    hf = transformers.AutoModelForTokenClassification.from_pretrained(tmp_path / "hf").eval()
    ours = load_model(run)
    ids = torch.randint(5, ours.cfg.vocab_size, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(ids).logits)


@pytest.mark.slow
def test_text_to_text_trains_on_targets_and_beats_the_base_model(tiny_gpt: Path, tmp_path: Path) -> None:
    rng = random.Random(3)

    def rows(n: int) -> list[dict[str, str]]:
        out = []
        for _ in range(n):
            src = [rng.choice("abcde") for _ in range(rng.randint(4, 6))]
            mapped = chr(ord(src[0]) + 5)  # the first letter, a -> f, b -> g, ...: a task 2 tiny layers learn fast
            out.append({"source": " ".join(src), "target": " ".join([mapped] * 5)})
        return out

    train, dev = tmp_path / "train.jsonl", tmp_path / "dev.jsonl"
    train.write_text("".join(json.dumps(x) + "\n" for x in rows(400)))
    dev_rows = rows(30)
    dev.write_text("".join(json.dumps(x) + "\n" for x in dev_rows))
    cols = ["--text-column", "source", "--label-column", "target"]
    base = lmforge("evaluate", str(tiny_gpt), "--task", "text-to-text", "--data", str(dev), *cols,
                   "--max-new-tokens", "12", "--json")  # fmt: skip
    assert base.returncode == 0, base.stderr
    run = tmp_path / "t2t"
    r = lmforge(
        "finetune", "--task", "text-to-text", "--model", str(tiny_gpt), "--train", str(train), "--validation",
        str(dev), *cols, "--out", str(run), "--train.epochs", "8", "--train.lr", "3e-3", "--train.batch_size", "16",
        "--data.max_length", "48", "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    after = lmforge("evaluate", str(run), "--data", str(dev), "--max-new-tokens", "12", "--json")
    assert after.returncode == 0, after.stderr
    before_m, after_m = json.loads(base.stdout), json.loads(after.stdout)
    assert after_m["bleu"] > before_m["bleu"] + 20 and after_m["rougeL"] > before_m["rougeL"] + 20
    # the metrics equal an independent computation on predict's output with the same libraries
    out = tmp_path / "pred.jsonl"
    assert lmforge("predict", str(run), "--data", str(dev), "--out", str(out), "--max-new-tokens", "12").returncode == 0
    preds = [json.loads(x)["text"] for x in out.read_text().splitlines()]
    import sacrebleu

    bleu = sacrebleu.corpus_bleu(preds, [[x["target"] for x in dev_rows]]).score
    assert after_m["bleu"] == pytest.approx(bleu, abs=1e-6)
    # the run directory is a model for `generate`
    g = lmforge("generate", str(run), "--prompt", "abc\n=> ", "--max-new-tokens", "4", "--json")
    assert g.returncode == 0, g.stderr


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["--text-column", "text", "--label-column", "label"], 1, "columns are ['sentence', 'label']"),
        (["--text-column", "sentence", "--label-column", "label", "--train.epochs", "nope"], 2, "train.epochs"),
        (["--text-column", "sentence", "--label-column", "label", "--data.max_length", "1000"], 2, "max_seq_len"),
        (["--text-column", "sentence", "--label-column", "label", "--lora.rank", "-1"], 2, "lora.rank"),
    ],
)
def test_bad_finetune_input_is_one_line(
    tiny_bert: Path, sentiment: dict[str, Path], tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    r = lmforge(
        "finetune", "--task", "classification", "--model", str(tiny_bert), "--train", str(sentiment["train"]),
        "--validation", str(sentiment["dev"]), "--out", str(tmp_path / "run"), *args,
    )  # fmt: skip
    assert r.returncode == code, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr


def test_text_to_text_on_bert_names_the_families_that_fit(
    tiny_bert: Path, sentiment: dict[str, Path], tmp_path
) -> None:
    r = lmforge(
        "finetune", "--task", "text-to-text", "--model", str(tiny_bert), "--train", str(sentiment["train"]),
        "--validation", str(sentiment["dev"]), "--text-column", "sentence", "--label-column", "label",
        "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert r.returncode == 2 and "needs a decoder (gpt1, gpt2, modern)" in r.stderr and "Traceback" not in r.stderr


def test_regression_label_that_is_not_a_number_names_file_and_line(tiny_bert: Path, tmp_path: Path) -> None:
    train = write_tsv(tmp_path / "train.tsv", [("good", "1.5"), ("bad", "high"), ("fine", "2")])
    r = lmforge(
        "finetune", "--task", "regression", "--model", str(tiny_bert), "--train", str(train), "--validation",
        str(train), "--text-column", "sentence", "--label-column", "label", "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert r.returncode == 1 and "line 3" in r.stderr and "'high'" in r.stderr and str(train) in r.stderr


@pytest.mark.slow
def test_interrupted_finetune_resumes_to_the_same_weights(
    tiny_bert: Path, sentiment: dict[str, Path], tmp_path
) -> None:
    common = [
        "finetune", "--task", "classification", "--model", str(tiny_bert), "--train", str(sentiment["train"]),
        "--validation", str(sentiment["dev"]), "--text-column", "sentence", "--label-column", "label",
        "--train.epochs", "2", *FAST,
    ]  # fmt: skip
    straight = lmforge(*common, "--out", str(tmp_path / "a"), "--json")
    assert straight.returncode == 0, straight.stderr
    first = lmforge(*common, "--out", str(tmp_path / "b"), "--stop-after", "7", "--json")
    assert first.returncode == 0 and json.loads(first.stdout)["status"] == "stopped", first.stderr
    again = lmforge("finetune", "--out", str(tmp_path / "b"), "--resume", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["start_step"] == 7
    a, b = (tmp_path / "a" / "model.safetensors").read_bytes(), (tmp_path / "b" / "model.safetensors").read_bytes()
    assert a == b


@pytest.mark.slow
def test_lora_and_freeze_encoder(tiny_bert: Path, sentiment: dict[str, Path], tmp_path: Path) -> None:
    common = [
        "finetune", "--task", "classification", "--model", str(tiny_bert), "--train", str(sentiment["train"]),
        "--validation", str(sentiment["dev"]), "--text-column", "sentence", "--label-column", "label",
        "--train.epochs", "1", *FAST, "--json",
    ]  # fmt: skip
    lora = lmforge(*common, "--out", str(tmp_path / "lora"), "--lora.rank", "4", "--lora.targets", "qkv,out")
    assert lora.returncode == 0, lora.stderr
    s = json.loads(lora.stdout)
    d, L = 64, 2  # adapters: rank * (in + out) per wrapped layer; the head (pooler + classifier) trains fully
    adapters = L * (4 * (d + 3 * d) + 4 * (d + d))
    head = d * d + d + 2 * d + 2
    assert s["trainable_params"] == adapters + head
    weights = load_model(tmp_path / "lora").state_dict()
    assert not any("lora" in k for k in weights)  # merged on export
    frozen = lmforge(*common, "--out", str(tmp_path / "frozen"), "--freeze-encoder")
    assert frozen.returncode == 0, frozen.stderr
    assert json.loads(frozen.stdout)["trainable_params"] == head
    before, after = load_model(tiny_bert).state_dict(), load_model(tmp_path / "frozen").state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("backbone."))


def test_load_backbone_reports_new_reused_and_dropped(tiny_bert: Path, tmp_path: Path) -> None:
    load = load_backbone(tiny_bert, HeadConfig(kind="sequence", num_labels=3), seed=0)
    assert load.new == ["head.pooler.dense.bias", "head.pooler.dense.weight", "head.proj.bias", "head.proj.weight"]
    assert load.dropped == [
        "head.decoder.bias",
        "head.dense.bias",
        "head.dense.weight",
        "head.norm.bias",
        "head.norm.weight",
    ]
    assert load.model.training and load.model.head.proj.out_features == 3
    src = load_model(tiny_bert).state_dict()
    assert all(torch.equal(v, src[k]) for k, v in load.model.state_dict().items() if k.startswith("backbone."))
    again = load_backbone(tiny_bert, HeadConfig(kind="sequence", num_labels=3), seed=0)
    assert torch.equal(again.model.head.proj.weight, load.model.head.proj.weight)  # the seed fixes the new head


def test_load_backbone_from_hugging_face_directories(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    bert = transformers.BertForMaskedLM(
        transformers.BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64, max_position_embeddings=64)
    )  # fmt: skip
    bert.save_pretrained(tmp_path / "bert")
    load = load_backbone(tmp_path / "bert", HeadConfig(kind="token", num_labels=5))
    assert load.new == ["head.proj.bias", "head.proj.weight"] and "head.decoder.bias" in load.dropped
    ids = torch.randint(0, 97, (2, 8))
    with torch.no_grad():
        want = bert.eval().bert(ids).last_hidden_state
        got = load.model.eval()(ids).last_hidden_state
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    gpt = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(vocab_size=97, n_embd=32, n_layer=2, n_head=4, n_positions=64)
    )
    gpt.save_pretrained(tmp_path / "gpt")
    load = load_backbone(tmp_path / "gpt", HeadConfig(kind="sequence", num_labels=2))
    assert load.new == ["head.proj.weight"] and load.dropped == []  # the LM head is tied: nothing extra to drop


def test_old_flat_checkpoints_still_load(tmp_path: Path) -> None:
    """Exports written before the backbone/head split (flat keys, head inside `model`) are migrated on load."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    cfg = ModelConfig(family="gpt2", vocab_size=97, n_layer=1, n_head=2, d_model=32, max_seq_len=32)
    model = build_model(cfg, HeadConfig(kind="sequence", num_labels=2))
    flat = {
        k.removeprefix("backbone.").replace("head.proj.", "cls_head.proj."): v.contiguous()
        for k, v in model.state_dict().items()
    }
    save_file(flat, tmp_path / "model.safetensors")
    meta = {"format": "lmforge", "model": {**json.loads(json.dumps(cfg.__dict__, default=list)), "head": "sequence"}}
    (tmp_path / "config.json").write_text(json.dumps(meta))
    loaded = load_model(tmp_path)
    assert loaded.head_cfg.kind == "sequence"
    ids = torch.randint(0, 97, (2, 5))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model.eval()(ids).logits, rtol=0, atol=0)


def test_evaluate_lm_perplexity_and_bits_per_char(tiny_gpt: Path, tiny_bert: Path, tmp_path: Path) -> None:
    text = "abc => def\n" * 20  # 220 characters, one token each (a character tokenizer)
    path = tmp_path / "text.txt"
    path.write_text(text, encoding="utf-8")
    r = lmforge("evaluate", str(tiny_gpt), "--task", "lm", "--data", str(path), "--json")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    model = load_model(tiny_gpt)
    from lmforge.tokenizers import load_tokenizer

    ids = torch.tensor(load_tokenizer(tiny_gpt).encode(text))
    T = model.cfg.max_seq_len  # windows of 64 inputs, each predicting its next token; the last is shorter
    total, n = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids) - 1, T):
            window = ids[start : start + T + 1]
            logits = model(window[None, :-1]).logits[0]
            total += float(torch.nn.functional.cross_entropy(logits, window[1:], reduction="sum"))
            n += len(window) - 1
    assert n == 219
    assert m["perplexity"] == pytest.approx(math.exp(total / n), rel=1e-5)
    assert m["bits_per_char"] == pytest.approx(total / math.log(2) / len(text), rel=1e-5)
    bert = lmforge("evaluate", str(tiny_bert), "--task", "lm", "--data", str(path))
    assert bert.returncode == 2 and "perplexity" in bert.stderr and "Traceback" not in bert.stderr


# --- real weights, real data ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_minilm_learns_sst2_sentiment_and_its_export_matches_transformers(
    minilm: Path, shared_data: Path, tmp_path: Path
) -> None:
    transformers = pytest.importorskip("transformers")
    lines = (shared_data / "sst2" / "train.tsv").read_text(encoding="utf-8").splitlines()
    (tmp_path / "train.tsv").write_text("\n".join(lines[:401]) + "\n", encoding="utf-8")
    dev = (shared_data / "sst2" / "dev.tsv").read_text(encoding="utf-8").splitlines()
    (tmp_path / "dev.tsv").write_text("\n".join(dev[:201]) + "\n", encoding="utf-8")
    run = tmp_path / "sst2"
    r = lmforge(
        "finetune", "--task", "classification", "--model", str(minilm), "--train", str(tmp_path / "train.tsv"),
        "--validation", str(tmp_path / "dev.tsv"), "--text-column", "sentence", "--label-column", "label",
        "--out", str(run), "--train.epochs", "2", "--train.lr", "1e-4", "--train.batch_size", "16",
        "--data.max_length", "64", "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["val"]["accuracy"] >= 0.72  # 400 sentences; 8,000 reach 0.85 (benchmarks/RESULTS.md)
    assert s["new_weights"] == ["head.proj.bias", "head.proj.weight"]  # MiniLM's pooler is reused
    assert lmforge("convert", "to-hf", str(run), str(tmp_path / "hf")).returncode == 0
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    batch = tok(["a gorgeous, witty, seductive movie.", "the plot is nothing but boilerplate clichés"],
                padding=True, return_tensors="pt")  # fmt: skip
    ours = load_model(run)
    with torch.no_grad():
        want = hf(**batch).logits
        got = ours(
            batch["input_ids"], attention_mask=batch["attention_mask"], token_type_ids=batch.get("token_type_ids")
        )
    torch.testing.assert_close(got.logits, want, rtol=0, atol=1e-5)
    assert want[0].argmax() == 1 and want[1].argmax() == 0
