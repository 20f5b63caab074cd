"""linear_cross_entropy against F.cross_entropy(F.linear(...)), and the CLM / MLM losses that use it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmforge.config import ModelConfig
from lmforge.tasks import build_model, losses
from lmforge.tasks.clm import CLMTask
from lmforge.tasks.losses import linear_cross_entropy
from lmforge.tasks.mlm import MLMTask, masked_logits


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The chunked path even for small inputs, in chunks of 64 rows: 300 rows take 5, the last one short."""
    monkeypatch.setattr(losses, "SMALL_LOGITS", 0)
    monkeypatch.setattr(losses, "CHUNK_ELEMENTS", 64 * 1000)
    monkeypatch.setattr(losses, "MIN_ROWS", 64)


@pytest.fixture(params=["chunked", "plain"])
def either_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both implementations: chunked (3 chunks of 16 rows here) and F.linear + F.cross_entropy (small logits)."""
    if request.param == "chunked":
        monkeypatch.setattr(losses, "SMALL_LOGITS", 0)
        monkeypatch.setattr(losses, "CHUNK_ELEMENTS", 16)
        monkeypatch.setattr(losses, "MIN_ROWS", 16)
    else:
        monkeypatch.setattr(losses, "SMALL_LOGITS", 1 << 40)
    return request.param


def _inputs(n: int = 300, c: int = 32, v: int = 1000, bias: bool = True) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    h = torch.randn(n, c, generator=g, requires_grad=True)
    w = (torch.randn(v, c, generator=g) * 0.2).requires_grad_()
    b = torch.randn(v, generator=g).requires_grad_() if bias else None
    y = torch.randint(0, v, (n,), generator=g)
    y[::7] = -100
    return h, w, b, y


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_matches_cross_entropy_over_several_chunks(small_chunks: None, reduction: str) -> None:
    h, w, b, y = _inputs()
    assert losses.chunk_rows(1000) == 64
    expected = F.cross_entropy(F.linear(h, w, b), y, ignore_index=-100, reduction=reduction)
    want = torch.autograd.grad(expected * 0.7, [h, w, b])
    got_loss = linear_cross_entropy(h, w, y, b, reduction=reduction)
    got = torch.autograd.grad(got_loss * 0.7, [h, w, b])
    torch.testing.assert_close(got_loss, expected, rtol=1e-6, atol=1e-5)
    for g_got, g_want in zip(got, want):
        torch.testing.assert_close(g_got, g_want, rtol=1e-5, atol=1e-6)
    assert float(got[0][::7].abs().max()) == 0.0  # ignored rows get no gradient


def test_batched_hidden_states_and_no_bias(either_path: str) -> None:
    h, w, _, y = _inputs(n=24, bias=False)
    h3, y3 = h.detach().reshape(2, 12, -1).requires_grad_(), y.reshape(2, 12)
    expected = F.cross_entropy(F.linear(h3, w).reshape(24, -1), y)
    got = linear_cross_entropy(h3, w, y3)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    for g_got, g_want in zip(torch.autograd.grad(got, [h3, w]), torch.autograd.grad(expected, [h3, w])):
        torch.testing.assert_close(g_got, g_want, rtol=1e-5, atol=1e-7)


def test_fp16_gradients_do_not_underflow_with_a_large_mean() -> None:
    """fp16 + GradScaler: the mean's 1/8192 must reach the gradients after the scale, as with plain autocast."""
    g = torch.Generator().manual_seed(0)
    h = torch.randn(8192, 32, generator=g, requires_grad=True)
    w = (torch.randn(2048, 32, generator=g) * 0.1).requires_grad_()
    y = torch.randint(0, 2048, (8192,), generator=g)
    assert losses.SMALL_LOGITS < 8192 * 2048  # the chunked path
    exact = torch.autograd.grad(F.cross_entropy(F.linear(h, w), y) * 65536, [h, w])
    with torch.autocast("cpu", dtype=torch.float16):
        fused = torch.autograd.grad(linear_cross_entropy(h, w, y) * 65536, [h, w])
        plain = torch.autograd.grad(F.cross_entropy(F.linear(h, w).float(), y) * 65536, [h, w])
    for got, base, want in zip(fused, plain, exact):
        error, plain_error = (got - want).norm() / want.norm(), (base - want).norm() / want.norm()
        assert error < 2 * plain_error + 1e-5, (float(error), float(plain_error))  # 3e-4 for both; 1e-2 underflowed


def test_a_negative_label_other_than_ignore_is_an_error(small_chunks: None) -> None:
    h, w, b, y = _inputs(n=10)
    y[3] = -1
    with pytest.raises(RuntimeError, match="out of bounds"):
        linear_cross_entropy(h, w, y, b)


def test_bf16_autocast_matches_autocast_linear_then_fp32_cross_entropy(small_chunks: None) -> None:
    h, w, b, y = _inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = F.cross_entropy(F.linear(h, w, b).float(), y)
        got = linear_cross_entropy(h, w, y, b)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-3)
    want_grads = torch.autograd.grad(expected, [h, w, b])
    got_grads = torch.autograd.grad(got, [h, w, b])
    for g_got, g_want in zip(got_grads, want_grads):
        assert g_got.dtype == torch.float32
        torch.testing.assert_close(g_got, g_want, rtol=2e-2, atol=2e-3)


def test_no_labelled_rows_gives_zero_loss_and_zero_gradients(either_path: str) -> None:
    h, w, b, _ = _inputs(n=5)
    y = torch.full((5,), -100)
    loss = linear_cross_entropy(h, w, y, b)
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert float(h.grad.abs().sum() + w.grad.abs().sum() + b.grad.abs().sum()) == 0.0
    h0 = torch.zeros(0, 32, requires_grad=True)  # no rows at all (an MLM batch with nothing selected)
    loss0 = linear_cross_entropy(h0, w, torch.zeros(0, dtype=torch.long), b)
    loss0.backward()
    assert float(loss0.detach()) == 0.0 and w.grad.isfinite().all()


def test_no_grad_forward_and_bad_arguments(either_path: str) -> None:
    h, w, b, y = _inputs()
    with torch.no_grad():
        total = linear_cross_entropy(h, w, y, b, reduction="sum")
    torch.testing.assert_close(total, F.cross_entropy(F.linear(h, w, b), y, reduction="sum").detach())
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum'"):
        linear_cross_entropy(h, w, y, b, reduction="none")
    with pytest.raises(ValueError, match="300 hidden rows but 299 labels"):
        linear_cross_entropy(h, w, y[:-1], b)


def test_a_second_backward_is_refused(small_chunks: None) -> None:
    h, w, b, y = _inputs(n=10)
    loss = linear_cross_entropy(h, w, y, b)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward per forward"):
        loss.backward()


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family", ["gpt2", "modern", "gpt1"])
def test_clm_loss_equals_cross_entropy_of_the_logits(family: str, either_path: str) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(family=family, vocab_size=97, n_layer=2, n_head=2, d_model=32, max_seq_len=16)
    model = build_model(cfg)
    ids = torch.randint(0, 97, (3, 16))
    labels = torch.randint(0, 97, (3, 16))
    labels[0, :5] = -100
    logits = model(ids).logits
    F.cross_entropy(logits.reshape(-1, 97), labels.reshape(-1)).backward()
    want = _grads(model)
    model.zero_grad(set_to_none=True)
    loss = CLMTask().loss(model, {"input_ids": ids, "labels": labels})
    loss.backward()
    got = _grads(model)
    expected = F.cross_entropy(logits.detach().reshape(-1, 97), labels.reshape(-1))
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-6, atol=1e-6)
    assert got.keys() == want.keys() and "backbone.tok_emb.weight" in got  # the tied embedding gets both contributions
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6, msg=name)
    sums = CLMTask().eval_sums(model, {"input_ids": ids, "labels": labels})
    assert sums["tokens"] == 43.0
    assert sums["loss_sum"] == pytest.approx(float(expected) * 43, rel=1e-5)


def test_mlm_loss_equals_cross_entropy_of_the_selected_logits(either_path: str) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(family="bert", vocab_size=97, n_layer=2, n_head=2, d_model=32, max_seq_len=16)
    model = build_model(cfg)
    ids = torch.randint(0, 97, (2, 16))
    labels = torch.full((2, 16), -100)
    labels[0, 3], labels[1, 7], labels[1, 8] = 5, 6, 7
    batch = {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids)}
    logits, selected = masked_logits(model, batch)
    F.cross_entropy(logits, selected).backward()
    want = _grads(model)
    model.zero_grad(set_to_none=True)
    loss = MLMTask().loss(model, batch)
    loss.backward()
    torch.testing.assert_close(loss.detach(), F.cross_entropy(logits.detach(), selected), rtol=1e-6, atol=1e-6)
    got = _grads(model)
    assert "head.decoder.bias" in got
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6, msg=name)


def test_a_model_without_task_head_has_no_loss() -> None:
    cfg = ModelConfig(family="bert", vocab_size=97, n_layer=1, n_head=2, d_model=32)
    model = build_model(cfg, "none")
    with pytest.raises(ValueError, match="a model without a task head has no loss"):
        model(torch.zeros(1, 4, dtype=torch.long), labels=torch.zeros(1, 4, dtype=torch.long))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")  # raised inside torch.compile
def test_chunked_loss_trains_the_same_under_torch_compile() -> None:
    """train.compile: dynamo traces the model with its head_loss closure and the chunked autograd.Function."""
    from lmforge.config import TrainConfig
    from lmforge.training.optim import build_optimizer
    from lmforge.training.step import train_step

    cfg = ModelConfig(family="gpt2", vocab_size=8192, n_layer=1, n_head=2, d_model=64, max_seq_len=128)
    x, y = torch.randint(0, 8192, (2, 128)), torch.randint(0, 8192, (2, 128))
    assert losses.SMALL_LOGITS < 2 * 128 * 8192  # the chunked path
    runs = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model, train = build_model(cfg), TrainConfig(lr=1e-3)
        optimizer = build_optimizer(model, train)
        stepped = torch.compile(model) if compiled else model
        batch = {"input_ids": x, "labels": y}
        runs.append([float(train_step(stepped, [batch], optimizer, CLMTask(), train).loss) for _ in range(3)])
    assert runs[0][-1] < runs[0][0]
    assert runs[1] == pytest.approx(runs[0], rel=1e-5)
