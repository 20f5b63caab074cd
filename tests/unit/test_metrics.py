"""Fine-tuning metrics against values worked out by hand or with numpy, and the inputs they must reject."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lmforge.errors import DataError, UsageError
from lmforge.evaluation import (
    METRIC_KEYS,
    classification_metrics,
    entity_metrics,
    language_model_metrics,
    regression_metrics,
    text_metrics,
)

pytestmark = pytest.mark.filterwarnings("error")  # no library warning may leak out of a metric


def test_classification_matches_hand_counts() -> None:
    gold, pred = [0, 1, 1, 2, 0, 2], [0, 1, 0, 2, 0, 1]
    m = classification_metrics(gold, pred, num_labels=3)
    assert m["accuracy"] == pytest.approx(np.mean(np.array(gold) == np.array(pred)))  # 4/6
    # per-class F1 = 2tp / (2tp + fp + fn): class 0 4/5, class 1 1/2, class 2 2/3
    assert m["macro_f1"] == pytest.approx((4 / 5 + 1 / 2 + 2 / 3) / 3)
    # multiclass MCC (Gorodkin): correct c=4, total s=6, true counts t=(2,2,2), predicted p=(3,2,1)
    c, s, t, p = 4, 6, np.array([2, 2, 2]), np.array([3, 2, 1])
    mcc = (c * s - t @ p) / math.sqrt((s**2 - p @ p) * (s**2 - t @ t))
    assert m["mcc"] == pytest.approx(mcc)
    assert set(m) == set(METRIC_KEYS["classification"])


def test_classification_single_class_gives_zero_mcc_without_warning() -> None:
    m = classification_metrics([1, 1, 1], [1, 1, 1])
    assert m == {"accuracy": 1.0, "macro_f1": 1.0, "mcc": 0.0}


def test_unseen_labels_are_counted_and_excluded() -> None:
    m = classification_metrics([-1, 0, -1, 1], [0, 0, 1, 0], num_labels=2)
    assert m["unseen_labels"] == 2
    assert m["accuracy"] == 0.5  # over the two seen examples only
    with pytest.raises(DataError, match="all 2 gold labels are -1"):
        classification_metrics([-1, -1], [0, 1])


@pytest.mark.parametrize(
    ("gold", "pred", "match"),
    [
        ([], [], "no examples"),
        ([0, 1], [0], "2 gold labels but 1 predictions"),
        ([0, 1], [0, 3], r"predictions hold ids outside \[0, 2\).*\[3\]"),
        ([0, 0.5], [0, 1], "integer label id"),
    ],
)
def test_classification_rejects_bad_input(gold: list, pred: list, match: str) -> None:
    with pytest.raises(DataError, match=match):
        classification_metrics(gold, pred, num_labels=2)


def test_regression_matches_numpy() -> None:
    gold, pred = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 4.0, 5.0, 4.0])
    m = regression_metrics(gold.tolist(), pred.tolist())
    assert m["pearson"] == pytest.approx(np.corrcoef(gold, pred)[0, 1])
    # Spearman = Pearson of ranks; the tied 4.0s share rank 2.5
    assert m["spearman"] == pytest.approx(np.corrcoef([1, 2, 3, 4], [1, 2.5, 4, 2.5])[0, 1])
    assert m["mse"] == pytest.approx((1 + 4 + 4 + 0) / 4)


def test_regression_constant_predictions_score_zero() -> None:
    m = regression_metrics([1.0, 2.0, 3.0], [0.5, 0.5, 0.5])
    assert (m["pearson"], m["spearman"], m["constant_predictions"]) == (0.0, 0.0, 1.0)
    assert json.dumps(m, allow_nan=False)


@pytest.mark.parametrize(
    ("gold", "pred", "match"),
    [
        ([1.0], [1.0], "at least 2 examples"),
        ([1.0, 2.0], [1.0, float("nan")], "predictions hold 1 non-finite"),
        ([1.0, 2.0], [1.0], "2 gold scores but 1 predictions"),
    ],
)
def test_regression_rejects_bad_input(gold: list, pred: list, match: str) -> None:
    with pytest.raises(DataError, match=match):
        regression_metrics(gold, pred)


def test_entity_metrics_count_entities_like_conlleval() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "I-LOC"], ["B-ORG", "B-LOC"]]
    # gold entities: PER, LOC, ORG. Predicted: PER, LOC (conlleval starts an entity at I- after O), ORG, and a
    # spurious LOC. 3 of 4 predicted are right and all 3 gold are found: P = 3/4, R = 1, F = 2PR/(P+R) = 6/7.
    m = entity_metrics(gold, pred)
    assert m == pytest.approx({"precision": 3 / 4, "recall": 1.0, "f1": 6 / 7})


def test_entity_metrics_name_the_mismatched_sentence() -> None:
    with pytest.raises(DataError, match="sentence 1: 2 gold tags but 1 predicted"):
        entity_metrics([["O"], ["B-PER", "O"]], [["O"], ["B-PER"]])
    with pytest.raises(DataError, match="no examples"):
        entity_metrics([], [])


def test_text_metrics_match_hand_counts() -> None:
    refs = ["the cat sat on the mat", "a b c"]
    preds = ["the cat lay on a rug", "a b c"]
    m = text_metrics(preds, refs)
    # pair 1 shares 3 of 6 unigrams each way (the, cat, on): F = 0.5; 1 of 5 bigrams (the cat): F = 0.2.
    # Pair 2 is identical (F = 1), so the example means are 75 and 60 on the 0-100 scale.
    assert m["rouge1"] == pytest.approx(75.0)
    assert m["rouge2"] == pytest.approx(60.0)
    assert text_metrics(["the quick brown fox jumps"], ["the quick brown fox jumps"])["bleu"] == pytest.approx(100.0)


def test_chars_tokenizer_scores_chinese() -> None:
    preds, refs = ["猫坐在地上"], ["猫坐在垫子上"]
    assert text_metrics(preds, refs)["rouge1"] == 0.0  # the default tokenizer drops every CJK character
    # 4 shared characters (猫 坐 在 上) of 5 predicted and 6 reference: F = 2 * 4 / (5 + 6)
    m = text_metrics(preds, refs, tokenize="zh", rouge_tokenizer="chars")
    assert m["rouge1"] == pytest.approx(100 * 8 / 11)


def test_text_metrics_reject_bad_input() -> None:
    with pytest.raises(DataError, match="1 references but 2 predictions"):
        text_metrics(["a", "b"], ["a"])
    with pytest.raises(UsageError, match="tokenize='xx'"):
        text_metrics(["a"], ["a"], tokenize="xx")


def test_language_model_metrics_are_definitions() -> None:
    m = language_model_metrics(loss_sum=4 * math.log(5), tokens=4, chars=8)
    assert m["perplexity"] == pytest.approx(5.0)
    assert m["bits_per_char"] == pytest.approx(4 * math.log2(5) / 8)  # 4 tokens' bits spread over 8 characters
    huge = language_model_metrics(loss_sum=1e6, tokens=1)
    assert huge["perplexity"] == math.exp(700) and json.dumps(huge, allow_nan=False)
    with pytest.raises(DataError, match="tokens=0"):
        language_model_metrics(0.0, tokens=0)
    with pytest.raises(DataError, match="not finite"):
        language_model_metrics(float("nan"), tokens=3)
