"""Pieces of training/finetune.py and evaluation/tasks.py checked against their references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmforge.config import FinetuneConfig, HeadConfig, ModelConfig
from lmforge.errors import ConfigError
from lmforge.tasks import build_model
from lmforge.training.finetune import balanced_class_weights, check_task_fits_family
from lmforge.training.trainer import Monitor


def test_balanced_class_weights_equal_scikit_learns() -> None:
    sklearn = pytest.importorskip("sklearn.utils.class_weight")
    labels = [0, 0, 0, 1, 2, 2, 0, 1, 0]
    want = sklearn.compute_class_weight("balanced", classes=np.array([0, 1, 2]), y=np.array(labels))
    torch.testing.assert_close(balanced_class_weights(labels, 3), torch.tensor(want, dtype=torch.float32))


def test_monitor_keeps_the_best_and_stops_after_patience() -> None:
    seen: list[int] = []
    m = Monitor(metric="accuracy", mode="max", patience=2, on_best=lambda model, row: seen.append(row["step"]))
    for step, acc in ((10, 0.5), (20, 0.7), (30, 0.6), (40, 0.7)):
        m.update(None, {"step": step, "accuracy": acc})  # type: ignore[arg-type]
    assert (m.best, m.best_step, seen, m.should_stop) == (0.7, 20, [10, 20], True)  # a tie is no improvement
    restored = Monitor(metric="accuracy")
    restored.load_state_dict(m.state_dict())
    assert (restored.best, restored.best_step, restored.bad_evals) == (0.7, 20, 2)
    with pytest.raises(Exception, match="'f1' is not among the evaluation metrics"):
        Monitor(metric="f1").update(None, {"step": 1, "accuracy": 0.5})  # type: ignore[arg-type]


def test_text_to_text_needs_a_decoder() -> None:
    with pytest.raises(ConfigError, match="needs a decoder"):
        check_task_fits_family("text-to-text", "bert", "runs/bert")
    check_task_fits_family("text-to-text", "gpt2", "runs/gpt")  # fits


def test_bi_encoder_is_a_regression_option_only() -> None:
    with pytest.raises(ConfigError, match="pair_encoding='bi' is a regression model"):
        FinetuneConfig(task="classification", pair_encoding="bi")


def test_gpt_sequence_head_finds_the_last_real_token_by_pad_id_without_a_mask() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(family="gpt2", vocab_size=50, n_layer=1, n_head=2, d_model=16, max_seq_len=16)
    m = build_model(cfg, HeadConfig(kind="sequence", num_labels=2, pad_token_id=0)).eval()
    ids = torch.tensor([[5, 6, 7, 0, 0], [5, 6, 7, 8, 9]])
    mask = (ids != 0).long()
    with torch.no_grad():
        torch.testing.assert_close(m(ids).logits, m(ids, attention_mask=mask).logits)
        torch.testing.assert_close(m(ids).logits[0], m(ids[:1, :3]).logits[0])
