"""Evaluation of fine-tuned models: metrics over the collected predictions of a whole dataset."""

from __future__ import annotations

from lmforge.evaluation.metrics import (
    METRIC_KEYS,
    classification_metrics,
    entity_metrics,
    language_model_metrics,
    regression_metrics,
    text_metrics,
)

__all__ = [
    "METRIC_KEYS",
    "classification_metrics",
    "entity_metrics",
    "language_model_metrics",
    "regression_metrics",
    "text_metrics",
]
