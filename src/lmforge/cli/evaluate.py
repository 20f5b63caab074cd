"""`lmforge evaluate`: a model's metrics on a labelled file (or a language model's perplexity on text)."""

from __future__ import annotations

import argparse
import json
import sys

EXAMPLES = """examples:
  lmforge evaluate runs/sst2 --data sst2/test.tsv --json           task and columns from the run's config.yaml
  lmforge evaluate runs/sts --data stsb/sts-test.csv --text-column sentence1 --text-pair-column sentence2 \\
      --label-column score
  lmforge evaluate runs/ner --data wnut17/emerging.test.annotated   entity precision / recall / F1 (seqeval)
  lmforge evaluate runs/mt --data multi30k/test_2016_flickr.en --max-new-tokens 48   ROUGE and BLEU
  lmforge evaluate runs/my-gpt --task lm --data wikitext2/test.txt  perplexity and bits per character
Metrics: classification accuracy, macro_f1, mcc; regression pearson, spearman; NER precision, recall, f1;
text-to-text rouge1, rouge2, rougeL, bleu; lm perplexity, bits_per_char. All from the whole file's predictions.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="metrics of a model on a labelled file, or perplexity on text",
        description="Score MODEL (a fine-tuned run directory, an export or a Hugging Face directory) on FILE.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_task_arguments(p)
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.set_defaults(func=run)


def add_task_arguments(p: argparse.ArgumentParser) -> None:
    """The flags `evaluate` and `predict` share."""
    p.add_argument("model", metavar="MODEL", help="run directory, lmforge export or Hugging Face directory")
    p.add_argument("--data", required=True, metavar="FILE", help="csv / tsv / jsonl / parquet, CoNLL, or text")
    p.add_argument(
        "--task",
        choices=["classification", "regression", "token-classification", "text-to-text", "lm"],
        help="default: the run's task (config.yaml), else what the model's head fits",
    )
    p.add_argument("--text-column", metavar="C", help="default: the run's")
    p.add_argument("--text-pair-column", metavar="C2", help="default: the run's")
    p.add_argument("--label-column", metavar="L", help="default: the run's")
    p.add_argument("--max-length", type=int, metavar="N", help="tokens per example (default: the run's)")
    p.add_argument("--template", help="text-to-text prompt template or name (default: the run's)")
    p.add_argument("--batch-size", type=int, default=64, metavar="B")
    p.add_argument("--max-new-tokens", type=int, default=64, metavar="N", help="text-to-text generation length")
    p.add_argument("--num-beams", type=int, default=1, metavar="K", help="text-to-text: beam search width")
    p.add_argument("--device", default="cpu")


def prepare(args: argparse.Namespace, with_labels: bool):  # noqa: ANN201 - a tuple of library objects
    """Model, tokenizer, settings, rows and encoded examples for the shared flags."""
    import lmforge
    from lmforge.errors import UsageError
    from lmforge.evaluation.tasks import encode_for_prediction, read_inputs, task_settings

    for name in ("batch_size", "max_new_tokens", "num_beams"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= 1")
    if args.max_length is not None and args.max_length < 1:
        raise UsageError(f"--max-length {args.max_length}: must be >= 1")
    model = lmforge.load_model(args.model, device=args.device)
    if args.max_length is not None and args.max_length > model.cfg.max_seq_len:
        raise UsageError(f"--max-length {args.max_length}: the model has {model.cfg.max_seq_len} positions")
    tokenizer = lmforge.load_tokenizer(args.model)
    if args.task == "lm":
        return model, tokenizer, None, None, None
    settings = task_settings(
        args.model,
        model,
        args.task,
        args.text_column,
        args.text_pair_column,
        args.label_column,
        args.max_length,
        args.template,
    )
    data = read_inputs(args.data, settings, model.labels, with_labels)
    encoded = encode_for_prediction(data, tokenizer, settings)
    if not encoded.examples:
        from lmforge.errors import DataError

        raise DataError(f"{args.data}: no usable rows (all {len(data)} have an empty text)")
    return model, tokenizer, settings, data, encoded


def predict_all(args: argparse.Namespace, model, tokenizer, data, encoded, bar) -> list[dict]:  # noqa: ANN001
    """Records of every encoded example, with the shared flags' batch and generation settings."""
    from lmforge.evaluation.tasks import GenerationSettings, predict

    return predict(
        model,
        encoded,
        pad_id=tokenizer.pad_id if tokenizer.pad_id is not None else (tokenizer.eos_id or 0),
        batch_size=args.batch_size,
        label_names=model.labels,
        tokenizer=tokenizer,
        generation=GenerationSettings(args.max_new_tokens, args.num_beams),
        progress=bar,
        data=data,
    )


def progress_bar(total: int, desc: str, enabled: bool):  # noqa: ANN201 - a tqdm bar or None
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="ex", file=sys.stderr, dynamic_ncols=True, disable=None)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from lmforge.evaluation.tasks import language_model_eval, task_metrics

    model, tokenizer, settings, data, encoded = prepare(args, with_labels=True)
    if settings is None:
        bar = progress_bar(0, "perplexity", not args.json)
        metrics = language_model_eval(model, tokenizer, args.data, batch_size=args.batch_size, progress=bar)
        task = "lm"
    else:
        bar = progress_bar(len(encoded), "evaluate", not args.json)
        records = predict_all(args, model, tokenizer, data, encoded, bar)
        metrics = task_metrics(encoded, data, records, model.labels)
        metrics["examples"] = len(encoded)
        if encoded.skipped_empty:
            metrics["skipped_empty"] = encoded.skipped_empty
        if encoded.truncated:
            metrics["truncated"] = encoded.truncated
        task = settings.task
    if bar is not None:
        bar.close()
    if args.json:
        print(json.dumps({"task": task, **metrics}))
    else:
        print(f"{task} on {args.data}:")
        for k, v in metrics.items():
            print(f"  {k:<16} {v:.4f}" if isinstance(v, float) else f"  {k:<16} {v}")
        if metrics.get("unseen_labels"):
            print(f"  ({int(metrics['unseen_labels'])} rows have labels the model never saw; left out of the metrics)")
    return 0
