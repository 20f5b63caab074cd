"""`lmforge generate` and `lmforge fill-mask` in a subprocess, on tiny HF checkpoint directories made here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel  # noqa: E402

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "a journey of a thousand miles begins with a single step",
    "to be or not to be that is the question",
    "all that glitters is not gold",
] * 5


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lmforge", *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def gpt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("gpt")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.save(str(d / "tokenizer.json"))
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=tok.get_vocab_size(), n_embd=32, n_layer=2, n_head=2, n_positions=64)
    GPT2LMHeadModel(cfg).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("bert")
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials))
    tok.post_processor = processors.BertProcessing(("[SEP]", 3), ("[CLS]", 2))
    tok.save(str(d / "tokenizer.json"))
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertForMaskedLM(cfg).save_pretrained(d)
    return d


def test_generate_json_reports_text_ids_logprobs_and_finish_reason(gpt_dir: Path) -> None:
    r = run_cli("generate", str(gpt_dir), "--prompt", "the quick", "--max-new-tokens", "7", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["prompt"] == "the quick" and out["finish_reason"] in ("length", "eos")
    assert 1 <= len(out["token_ids"]) <= 7 and len(out["logprobs"]) == len(out["token_ids"])
    assert all(lp <= 0 for lp in out["logprobs"])
    import lmforge

    model, tok = lmforge.load_model(gpt_dir), lmforge.load_tokenizer(gpt_dir)
    assert out["text"] == lmforge.generate_text(model, tok, "the quick", max_new_tokens=7)  # greedy is deterministic


def test_generate_stream_prints_the_same_text(gpt_dir: Path) -> None:
    args = ["generate", str(gpt_dir), "--prompt", "to be", "--max-new-tokens", "12", "--do-sample", "--seed", "3"]
    plain = run_cli(*args, "--json")
    streamed = run_cli(*args, "--stream", "--json")
    assert plain.returncode == 0 and streamed.returncode == 0, streamed.stderr
    lines = [json.loads(x) for x in streamed.stdout.splitlines()]
    deltas, final = lines[:-1], lines[-1]
    assert "".join(d["delta"] for d in deltas) == final["text"] == json.loads(plain.stdout)["text"]
    text = run_cli(*args, "--stream")
    assert text.stdout == final["text"] + "\n"


def test_generate_prompts_file_stop_string_and_beams(gpt_dir: Path, tmp_path: Path) -> None:
    f = tmp_path / "prompts.jsonl"
    f.write_text(json.dumps({"prompt": "all that"}) + "\n" + json.dumps({"prompt": ""}) + "\n")
    r = run_cli(
        "generate",
        str(gpt_dir),
        "--prompts-file",
        str(f),
        "--num-beams",
        "3",
        "--stop",
        "e",
        "--max-new-tokens",
        "10",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert [row["prompt"] for row in rows] == ["all that", ""]
    assert all("e" not in row["text"] for row in rows)
    assert rows[1]["prompt_tokens"] == 1  # the empty prompt starts from <|endoftext|>


def test_generate_context_overflow_and_truncate_left(gpt_dir: Path) -> None:
    long = "the quick brown fox " * 30
    r = run_cli("generate", str(gpt_dir), "--prompt", long, "--max-new-tokens", "8")
    assert r.returncode == 2
    assert "exceeds the model's context of 64 tokens" in r.stderr and "--truncate left" in r.stderr
    assert "Traceback" not in r.stderr
    ok = run_cli("generate", str(gpt_dir), "--prompt", long, "--max-new-tokens", "8", "--truncate", "left", "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["prompt_tokens"] == 56


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--top-p", "1.5"], "top_p=1.5 must be in (0, 1]"),
        (["--temperature", "-1"], "temperature=-1.0 must be >= 0"),
        (["--top-k", "-2"], "top_k=-2 must be an integer >= 0"),
        (["--num-beams", "0"], "num_beams=0 must be an integer >= 1"),
    ],
)
def test_generate_bad_parameters_exit_2_naming_them(gpt_dir: Path, flags: list[str], message: str) -> None:
    r = run_cli("generate", str(gpt_dir), "--prompt", "x", *flags)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_generate_usage_errors(gpt_dir: Path, bert_dir: Path, tmp_path: Path) -> None:
    r = run_cli("generate", str(gpt_dir))
    assert r.returncode == 2 and "exactly one of --prompt TEXT or --prompts-file FILE" in r.stderr
    r = run_cli("generate", str(gpt_dir), "--prompts-file", str(tmp_path / "missing.txt"))
    assert r.returncode == 1 and "missing.txt: no such file" in r.stderr
    r = run_cli("generate", str(bert_dir), "--prompt", "x")
    assert r.returncode == 2 and "needs a decoder with an LM head" in r.stderr and "fill-mask" in r.stderr


def test_fill_mask_json_several_masks(bert_dir: Path) -> None:
    r = run_cli("fill-mask", str(bert_dir), "the [MASK] brown fox [MASK] over", "--top-k", "3", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert len(out["masks"]) == 2
    for m in out["masks"]:
        probs = [c["probability"] for c in m["candidates"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1
    import lmforge
    from lmforge.generation import fill_mask

    model, tok = lmforge.load_model(bert_dir), lmforge.load_tokenizer(bert_dir)
    preds = fill_mask(model, tok, "the [MASK] brown fox [MASK] over", top_k=3)
    assert [c.token_id for c in preds[0].candidates] == [c["token_id"] for c in out["masks"][0]["candidates"]]
    text = run_cli("fill-mask", str(bert_dir), "a [MASK] step")
    assert text.returncode == 0 and "mask 1" in text.stdout


def test_fill_mask_errors(bert_dir: Path, gpt_dir: Path) -> None:
    r = run_cli("fill-mask", str(bert_dir), "no mask here")
    assert r.returncode == 2 and "has no mask token; write [MASK]" in r.stderr
    r = run_cli("fill-mask", str(gpt_dir), "a [MASK]")
    assert r.returncode == 2 and "fill-mask needs a BERT-family model" in r.stderr and "family='gpt2'" in r.stderr
    r = run_cli("fill-mask", str(bert_dir), "a [MASK]", "--top-k", "0")
    assert r.returncode == 2 and "--top-k 0 must be >= 1" in r.stderr


@pytest.mark.slow  # a pretrain subprocess: ~15 s on a quiet CPU
def test_fill_mask_on_a_bert_pretrained_by_lmforge(tmp_path: Path) -> None:
    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "tiny.txt"
    run = tmp_path / "bert"
    small = ["--model.n_layer", "1", "--model.n_head", "2", "--model.d_model", "32", "--model.max_seq_len", "32"]
    r = run_cli(
        "pretrain", "--objective", "mlm", "--model.family", "bert",
        "--tokenizer.kind", "wordpiece", "--tokenizer.vocab_size", "200", "--data", str(fixture),
        "--out", str(run), "--train.max_steps", "3", "--train.batch_size", "4", "--data.seq_len", "32", *small,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = run_cli("fill-mask", str(run), "the [MASK] of the", "--top-k", "4", "--json")
    assert out.returncode == 0, out.stderr
    cands = json.loads(out.stdout)["masks"][0]["candidates"]
    probs = [c["probability"] for c in cands]
    assert len(cands) == 4 and all(0 < p < 1 for p in probs) and probs == sorted(probs, reverse=True)


def test_generate_int8_quantized(gpt_dir: Path) -> None:
    r = run_cli(
        "generate", str(gpt_dir), "--prompt", "the quick", "--max-new-tokens", "6", "--json", "--quantize", "int8"
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert 1 <= len(out["token_ids"]) <= 6 and out["finish_reason"] in ("length", "eos")
    bad = run_cli("generate", str(gpt_dir), "--prompt", "x", "--quantize", "int8", "--dtype", "bfloat16")
    assert bad.returncode == 2
    assert "int8 dynamic quantization needs an fp32 model on the CPU; this one is torch.bfloat16" in bad.stderr
