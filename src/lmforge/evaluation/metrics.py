"""Metrics for fine-tuning evaluation, each over the predictions of a whole dataset (never an average of batch metrics).

Every function returns a plain `dict[str, float]` that `json.dumps` accepts: no NaN or inf, no numpy scalars.
The formulas come from scikit-learn, scipy, seqeval, rouge-score and sacreBLEU, so numbers match what papers report;
only `language_model_metrics` is written out, because perplexity and bits per character are definitions.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import sacrebleu
import seqeval.metrics
from rouge_score.rouge_scorer import RougeScorer
from scipy.stats import pearsonr, spearmanr
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef, mean_squared_error

from lmforge.errors import DataError, UsageError

# The keys each task always reports. Some add one when it applies: classification "unseen_labels",
# regression "constant_predictions" / "constant_gold", lm "bits_per_char".
METRIC_KEYS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "macro_f1", "mcc"),
    "regression": ("pearson", "spearman", "mse"),
    "token-classification": ("precision", "recall", "f1"),
    "text-to-text": ("rouge1", "rouge2", "rougeL", "bleu"),
    "lm": ("loss", "perplexity"),
}

UNSEEN_LABEL = -1  # gold id of a label the training set never had, so the model has no output for it


def _check_lengths(gold: Sequence[object], pred: Sequence[object], gold_name: str, pred_name: str) -> None:
    if len(gold) != len(pred):
        raise DataError(f"{len(gold)} {gold_name} but {len(pred)} {pred_name}; they must pair up one to one")
    if len(gold) == 0:
        raise DataError(f"no examples: {gold_name} and {pred_name} are empty")


def _label_ids(ids: Sequence[int], name: str) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{name} must be one integer label id per example, got dtype {arr.dtype} and shape {arr.shape}")
    return arr


def classification_metrics(gold: Sequence[int], pred: Sequence[int], num_labels: int | None = None) -> dict[str, float]:
    """Accuracy, macro F1 and Matthews correlation of predicted label ids against gold ids.

    Gold id -1 marks a label the training set never had. Those examples are left out of every metric (accuracy
    included), and their count is reported as "unseen_labels" when there are any. Macro F1 averages over the
    classes that occur in gold or pred; MCC is 0.0 when only one class occurs.

    Args:
        num_labels: when given, every prediction and every other gold id must lie in [0, num_labels).
    """
    _check_lengths(gold, pred, "gold labels", "predictions")
    y_true, y_pred = _label_ids(gold, "gold labels"), _label_ids(pred, "predictions")
    upper = num_labels if num_labels is not None else math.inf
    seen = y_true != UNSEEN_LABEL
    for name, ids in (("predictions", y_pred), ("gold labels", y_true[seen])):
        if (bad := ids[(ids < 0) | (ids >= upper)]).size:
            raise DataError(f"{name} hold ids outside [0, {upper}) (gold may also be -1): e.g. {bad[:3].tolist()}")
    unseen = int((~seen).sum())
    if unseen == len(y_true):
        raise DataError(f"no examples to score: all {unseen} gold labels are -1 (never seen in training)")
    y_true, y_pred = y_true[seen], y_pred[seen]
    with warnings.catch_warnings():
        # a single class present: sklearn warns about the confusion matrix shape and returns MCC 0.0, which we keep
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        out = {
            "accuracy": float(accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
            "mcc": float(matthews_corrcoef(y_true, y_pred)),
        }
    if unseen:
        out["unseen_labels"] = float(unseen)
    return out


def regression_metrics(gold: Sequence[float], pred: Sequence[float]) -> dict[str, float]:
    """Pearson and Spearman correlation and mean squared error of predicted scores against gold scores.

    A correlation is undefined when either side is constant (scipy gives NaN, which JSON cannot hold). Then both
    correlations are reported as 0.0, "no linear or rank relation", and "constant_predictions": 1.0 (or
    "constant_gold": 1.0) says why, so a collapsed regressor is visible rather than a crash mid-training.
    """
    _check_lengths(gold, pred, "gold scores", "predictions")
    y_true, y_pred = np.asarray(gold, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    if len(y_true) < 2:
        raise DataError(f"correlation needs at least 2 examples, got {len(y_true)}")
    for name, arr in (("gold scores", y_true), ("predictions", y_pred)):
        if arr.ndim != 1:
            raise DataError(f"{name} must be one score per example, got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise DataError(f"{name} hold {int((~np.isfinite(arr)).sum())} non-finite values (NaN or inf)")
    out = {"pearson": 0.0, "spearman": 0.0, "mse": float(mean_squared_error(y_true, y_pred))}
    constant_pred, constant_gold = bool(np.all(y_pred == y_pred[0])), bool(np.all(y_true == y_true[0]))
    if constant_pred:
        out["constant_predictions"] = 1.0
    if constant_gold:
        out["constant_gold"] = 1.0
    if not (constant_pred or constant_gold):
        out["pearson"] = float(pearsonr(y_true, y_pred).statistic)
        out["spearman"] = float(spearmanr(y_true, y_pred).statistic)
    return out


def entity_metrics(gold_tags: list[list[str]], pred_tags: list[list[str]]) -> dict[str, float]:
    """Entity-level micro precision, recall and F1 of BIO tag sequences, as conlleval counts them (seqeval)."""
    _check_lengths(gold_tags, pred_tags, "gold sentences", "predicted sentences")
    for i, (g, p) in enumerate(zip(gold_tags, pred_tags)):
        if len(g) != len(p):
            raise DataError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted tags")
    # zero_division=0: no gold (or no predicted) entities scores 0 instead of warning
    return {
        name: float(fn(gold_tags, pred_tags, zero_division=0))
        for name, fn in (
            ("precision", seqeval.metrics.precision_score),
            ("recall", seqeval.metrics.recall_score),
            ("f1", seqeval.metrics.f1_score),
        )
    }


class _CharTokenizer:
    """Every non-space character is a token: rouge-score's default tokenizer keeps only [a-z0-9], so CJK scores 0."""

    def tokenize(self, text: str) -> list[str]:
        return [c for c in text.lower() if not c.isspace()]


def text_metrics(
    predictions: list[str],
    references: list[str],
    tokenize: str = "13a",
    rouge_tokenizer: Literal["default", "chars"] = "default",
) -> dict[str, float]:
    """ROUGE-1/2/L F-measure averaged over examples and corpus BLEU, all on sacreBLEU's 0-100 scale.

    Args:
        tokenize: sacreBLEU's tokenizer for BLEU ("13a" its default, "zh" for Chinese, "char", ...).
        rouge_tokenizer: "default" is rouge-score's own (lowercase, [a-z0-9] words, Porter stemming);
            "chars" scores characters instead, for Chinese, Japanese and other text without [a-z0-9] words.
    """
    _check_lengths(references, predictions, "references", "predictions")
    if tokenize not in sacrebleu.BLEU.TOKENIZERS:
        choices = list(sacrebleu.BLEU.TOKENIZERS)
        raise UsageError(f"tokenize={tokenize!r} is not a sacreBLEU tokenizer; use one of {choices}")
    if rouge_tokenizer not in ("default", "chars"):
        raise UsageError(f"rouge_tokenizer={rouge_tokenizer!r}; use 'default' or 'chars'")
    types = ["rouge1", "rouge2", "rougeL"]
    scorer = RougeScorer(types, use_stemmer=True, tokenizer=_CharTokenizer() if rouge_tokenizer == "chars" else None)
    totals = dict.fromkeys(types, 0.0)
    for pred, ref in zip(predictions, references):
        scores = scorer.score(ref, pred)  # score(target, prediction): the order matters for precision vs recall
        for t in types:
            totals[t] += scores[t].fmeasure
    out = {t: 100.0 * totals[t] / len(predictions) for t in types}
    out["bleu"] = float(sacrebleu.corpus_bleu(predictions, [references], tokenize=tokenize).score)
    return out


def language_model_metrics(loss_sum: float, tokens: int, chars: int | None = None) -> dict[str, float]:
    """Mean loss, perplexity and (given the text's character count) bits per character from a summed token loss.

    Args:
        loss_sum: cross-entropy in nats, summed over every scored token of the dataset.
        tokens: how many tokens that sum covers.
        chars: how many characters of text those tokens cover; adds "bits_per_char".
    """
    if tokens <= 0:
        raise DataError(f"no examples: tokens={tokens}, nothing was scored")
    if not math.isfinite(loss_sum):
        raise DataError(f"loss_sum={loss_sum} is not finite; the model's loss diverged")
    loss = loss_sum / tokens
    out = {"loss": float(loss), "perplexity": math.exp(min(loss, 700.0))}  # exp(>709) overflows a float
    if chars is not None:
        if chars <= 0:
            raise DataError(f"chars={chars}; bits per character needs a positive character count")
        out["bits_per_char"] = float(loss_sum / math.log(2) / chars)
    return out
