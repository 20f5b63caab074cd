"""LoRA: identity at init, only adapters and heads learn, merging is exact, errors name their field."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lmforge.config import HeadConfig, ModelConfig
from lmforge.errors import ConfigError
from lmforge.generation import generate
from lmforge.models.lora import LoRALinear, apply_lora, count_trainable, lora_state_keys, merge_lora
from lmforge.tasks import TaskModel, build_model

GPT2_TARGETS = ("qkv", "out", "up", "down")


def tiny(family: str = "bert", dropout: float = 0.0) -> TaskModel:
    torch.manual_seed(0)
    cfg = ModelConfig(family=family, vocab_size=97, n_layer=2, n_head=2, d_model=32, max_seq_len=32, dropout=dropout)
    return build_model(cfg, HeadConfig(kind="sequence", num_labels=3))


def lora_copy(model: TaskModel, targets=("qkv", "out"), **kw) -> tuple[TaskModel, list[str]]:
    """A LoRA-wrapped copy of `model` (same base weights) with B non-zero, so the update matters."""
    lora = tiny(model.cfg.family)
    lora.load_state_dict(model.state_dict())
    names = apply_lora(lora, rank=4, alpha=8.0, targets=targets, **kw)
    return lora, names


def ids() -> torch.Tensor:
    return torch.randint(0, 97, (3, 12), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(("family", "targets"), [("bert", ("qkv", "out")), ("gpt2", GPT2_TARGETS)])
def test_lora_is_identity_at_init(family: str, targets: tuple[str, ...]) -> None:
    base = tiny(family).eval()
    lora, names = lora_copy(base, targets)
    assert names == [
        f"backbone.blocks.{i}.{'attn' if t in ('qkv', 'out') else 'mlp'}.{t}" for i in (0, 1) for t in targets
    ]
    with torch.no_grad():
        assert torch.equal(lora.eval()(ids()).logits, base(ids()).logits)  # B = 0 exactly


@pytest.mark.parametrize(("family", "targets"), [("bert", ("qkv", "out")), ("gpt2", GPT2_TARGETS)])
def test_only_adapters_and_head_train(family: str, targets: tuple[str, ...]) -> None:
    lora, _ = lora_copy(tiny(family), targets)
    before = {k: v.clone() for k, v in lora.state_dict().items()}
    opt = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        lora(ids(), labels=torch.tensor([0, 1, 2])).loss.backward()
        opt.step()
    after = lora.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    adapters = set(lora_state_keys(lora))
    assert {k for k in changed if not k.startswith("head.")} == adapters
    assert any(k.startswith("head.") for k in changed)
    assert all(k.startswith("head.") or k in adapters for k in changed)


@pytest.mark.parametrize(("family", "targets"), [("bert", ("qkv", "out")), ("gpt2", GPT2_TARGETS)])
def test_merge_matches_unmerged_and_restores_keys(family: str, targets: tuple[str, ...]) -> None:
    base = tiny(family)
    lora, _ = lora_copy(base, targets)
    with torch.no_grad():
        for key, p in lora.named_parameters():
            if key.endswith("lora_b"):
                p.normal_(std=0.1)
    lora.eval()
    with torch.no_grad():
        expected = lora(ids()).logits
        assert merge_lora(lora) == 2 * len(targets)
        torch.testing.assert_close(lora(ids()).logits, expected, rtol=0, atol=1e-5)
    assert list(lora.state_dict()) == list(base.state_dict())
    assert not any(isinstance(m, LoRALinear) for m in lora.modules())
    assert all(p.requires_grad for p in lora.parameters())
    assert not torch.equal(
        lora.state_dict()["backbone.blocks.0.attn.qkv.weight"], base.backbone.blocks[0].attn.qkv.weight
    )


def test_trainable_count_formula() -> None:
    model = tiny("gpt2")
    head = sum(p.numel() for p in model.head.parameters())
    total_before = sum(p.numel() for p in model.parameters())
    names = apply_lora(model, rank=4, alpha=8.0, targets=GPT2_TARGETS)
    C, F = 32, 4 * 32
    shapes = {"qkv": (C, 3 * C), "out": (C, C), "up": (C, F), "down": (F, C)}  # (in, out)
    adapters = 2 * sum(4 * sum(shapes[t]) for t in GPT2_TARGETS)
    assert len(names) == 8
    assert count_trainable(model) == (adapters + head, total_before + adapters)


def test_merged_linear_keeps_dtype_and_formula() -> None:
    base = nn.Linear(6, 5).to(torch.float64)
    layer = LoRALinear(base, rank=2, alpha=3.0)
    nn.init.normal_(layer.lora_b)
    merged = layer.merged()
    assert merged.weight.dtype == torch.float64 and layer.weight is base.weight and layer.bias is base.bias
    torch.testing.assert_close(merged.weight, base.weight + 1.5 * layer.lora_b @ layer.lora_a)
    x = torch.randn(4, 6, dtype=torch.float64)
    torch.testing.assert_close(merged(x), layer(x))


def test_dropout_only_in_training() -> None:
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(8, 8), rank=2, alpha=2.0, dropout=0.5)
    nn.init.normal_(layer.lora_b)
    x = torch.randn(16, 8)
    with torch.no_grad():
        layer.eval()
        assert torch.equal(layer(x), layer(x))
        torch.testing.assert_close(layer(x), layer.merged()(x))
        layer.train()
        assert not torch.equal(layer(x), layer(x))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"rank": 0}, "lora.rank"),
        ({"alpha": 0.0}, "lora.alpha"),
        ({"dropout": 1.0}, "lora.dropout"),
        ({"targets": ("qkv", "query")}, "lora.targets"),
        ({"root": "backbone.layers"}, "lora.root"),
    ],
)
def test_errors_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field) as info:
        apply_lora(tiny(), **{"rank": 4, "alpha": 8.0, **kwargs})
    if field == "lora.targets":
        assert "'query'" in str(info.value) and "['down', 'out', 'qkv', 'up']" in str(info.value)


def test_apply_twice_is_an_error() -> None:
    model = tiny()
    apply_lora(model, rank=2, alpha=2.0)
    with pytest.raises(ConfigError, match="merge_lora"):
        apply_lora(model, rank=2, alpha=2.0)


def test_generation_fast_path_sees_the_update() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(family="gpt2", vocab_size=97, n_layer=2, n_head=2, d_model=32, max_seq_len=32)
    model = build_model(cfg).eval()  # lm head tied to tok_emb: frozen with the backbone
    apply_lora(model, rank=4, alpha=8.0, targets=GPT2_TARGETS)
    assert not model.head.proj.weight.requires_grad
    with torch.no_grad():
        for key, p in model.named_parameters():
            if key.endswith("lora_b"):
                p.normal_(std=0.5)
        tokens = ids()
        for _ in range(6):  # greedy by full recompute through forward
            tokens = torch.cat([tokens, model(tokens).logits[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(generate(model, ids(), max_new_tokens=6), tokens[:, -6:])  # generate returns the new tokens
