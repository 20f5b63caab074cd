"""Model families and task heads: shapes, causality, banded attention, KV cache, padding, tying, init, losses."""

from __future__ import annotations

import math

import pytest
import torch

from lmforge.config import HeadConfig, ModelConfig
from lmforge.models import KVCache, build_backbone
from lmforge.tasks import TaskModel, build_model

V = 97


def tiny(family: str, **kw) -> ModelConfig:
    base = dict(family=family, vocab_size=V, n_layer=2, n_head=2, d_model=32, max_seq_len=64)
    if family == "modern":
        base["bias"] = False
    return ModelConfig(**{**base, **kw})


def tiny_model(family: str, head: str | None = None, num_labels: int = 3, **kw) -> TaskModel:
    head_cfg = HeadConfig(kind=head, num_labels=num_labels) if head else None
    return build_model(tiny(family, **kw), head_cfg)


DECODERS = ["gpt1", "gpt2", "modern"]


VALID = [(f, h) for f in DECODERS for h in ("none", "lm", "sequence", "token")] + [
    ("bert", h) for h in ("none", "mlm", "sequence", "token")
]


@pytest.mark.parametrize("family,head", VALID)
def test_forward_shapes(family: str, head: str) -> None:
    torch.manual_seed(0)
    m = tiny_model(family, head).eval()
    ids = torch.randint(0, V, (2, 10))
    out = m(ids)
    assert out.last_hidden_state.shape == (2, 10, 32)
    want = {"none": None, "lm": (2, 10, V), "mlm": (2, 10, V), "sequence": (2, 3), "token": (2, 10, 3)}[head]
    assert (out.logits is None) if want is None else (tuple(out.logits.shape) == want)
    assert torch.isfinite(out.last_hidden_state).all()


@pytest.mark.parametrize("family", DECODERS)
def test_decoders_are_causal(family: str) -> None:
    torch.manual_seed(0)
    m = tiny_model(family).eval()
    ids = torch.randint(0, V, (1, 12))
    changed = ids.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % V
    a, b = m(ids).logits, m(changed).logits
    torch.testing.assert_close(a[:, :8], b[:, :8])
    assert (a[:, 8:] - b[:, 8:]).abs().max() > 1e-4


def test_bert_sees_both_sides() -> None:
    torch.manual_seed(0)
    m = tiny_model("bert").eval()
    ids = torch.randint(0, V, (1, 12))
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % V
    assert (m(ids).logits[:, 0] - m(changed).logits[:, 0]).abs().max() > 1e-4


def test_banded_layers_see_only_the_band() -> None:
    """With every layer banded (width 4) and 2 layers, position t sees back to t - 2 * 3 only."""
    torch.manual_seed(0)
    m = tiny_model("gpt2", attention_layers=("banded",), band_width=4).eval()
    ids = torch.randint(0, V, (1, 20))
    changed = ids.clone()
    changed[0, 5] = (changed[0, 5] + 1) % V
    a, b = m(ids).logits, m(changed).logits
    diff = (a - b).abs().amax(-1)[0]
    assert diff[:5].max() == 0  # before the change: causal
    assert diff[5:12].min() > 1e-5  # within two bands of position 5: affected
    assert diff[12:].max() == 0  # receptive field of 2 banded layers is 2 * (4 - 1) = 6 back


def test_gpt3_alternates_dense_and_banded() -> None:
    cfg = tiny("gpt2", n_layer=4, attention_layers=("dense", "banded"), band_width=4)
    assert [cfg.layer_attention(i) for i in range(4)] == ["dense", "banded", "dense", "banded"]
    torch.manual_seed(0)
    m = build_model(cfg).eval()
    ids = torch.randint(0, V, (1, 20))
    changed = ids.clone()
    changed[0, 0] = (changed[0, 0] + 1) % V
    # dense layers carry position 0 to the end even though banded ones could not
    assert (m(ids).logits[0, -1] - m(changed).logits[0, -1]).abs().max() > 1e-5


@pytest.mark.parametrize(
    "family,extra",
    [("gpt1", {}), ("gpt2", {}), ("modern", {}), ("gpt2", {"attention_layers": ("dense", "banded"), "band_width": 5})],
)
def test_kv_cache_matches_full_recompute(family: str, extra: dict) -> None:
    torch.manual_seed(0)
    cfg = tiny(family, **extra)
    m = build_model(cfg).eval()
    ids = torch.randint(0, V, (2, 24))
    with torch.no_grad():
        full = m(ids).logits
        cache = [KVCache.empty(cfg, 2, 24, ids.device, torch.float32) for _ in range(cfg.n_layer)]
        step = [m(ids[:, :10], cache=cache).logits]  # prefill
        for t in range(10, 24):
            step.append(m(ids[:, t : t + 1], cache=cache).logits)
    torch.testing.assert_close(torch.cat(step, 1), full, rtol=0, atol=1e-5)


def test_bert_padding_does_not_change_real_positions() -> None:
    torch.manual_seed(0)
    m = tiny_model("bert", "none").eval()
    ids = torch.randint(5, V, (1, 8))
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], 1)
    mask = torch.cat([torch.ones(1, 8), torch.zeros(1, 4)], 1).long()
    a = m(ids).last_hidden_state
    b = m(padded, attention_mask=mask).last_hidden_state[:, :8]
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_left_padded_decoder_with_positions_matches_unpadded() -> None:
    torch.manual_seed(0)
    m = tiny_model("gpt2").eval()
    ids = torch.randint(1, V, (1, 6))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], 1)
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 1]])
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    a = m(ids).logits
    b = m(padded, attention_mask=mask, position_ids=pos).logits[:, 3:]
    assert torch.isfinite(m(padded, attention_mask=mask, position_ids=pos).logits).all()
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_backbone_returns_hidden_states_only() -> None:
    torch.manual_seed(0)
    backbone = build_backbone(tiny("gpt2")).eval()
    ids = torch.randint(0, V, (2, 7))
    out = backbone(ids)
    assert out.last_hidden_state.shape == (2, 7, 32)
    assert not hasattr(out, "logits")
    assert not any("head" in name for name, _ in backbone.named_parameters())
    model = TaskModel(backbone, torch.nn.Identity(), HeadConfig(kind="none"))  # any head module sits on it
    torch.testing.assert_close(model.backbone(ids).last_hidden_state, out.last_hidden_state)


@pytest.mark.parametrize("family", ["gpt2", "bert", "modern"])
def test_tying_survives_meta_init_and_to_empty(family: str) -> None:
    cfg = tiny(family)
    with torch.device("meta"):
        m = build_model(cfg)
    m.to_empty(device="cpu")
    m.tie_weights()
    head = m.head.decoder if family == "bert" else m.head.proj
    assert head.weight is m.backbone.tok_emb.weight
    with torch.no_grad():
        m.backbone.tok_emb.weight.fill_(0.5)
    assert float(head.weight.detach()[3, 3]) == 0.5


def test_untied_head_is_separate() -> None:
    m = tiny_model("gpt2", tie_embeddings=False)
    assert m.head.proj.weight is not m.backbone.tok_emb.weight
    assert sum(p.numel() for p in m.parameters()) == sum(p.numel() for p in tiny_model("gpt2").parameters()) + V * 32


def test_gpt2_init_scales_residual_projections() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(family="gpt2", vocab_size=512, n_layer=8, n_head=4, d_model=256, max_seq_len=64)
    m = build_model(cfg).backbone
    resid = torch.cat([torch.cat([b.attn.out.weight.flatten(), b.mlp.down.weight.flatten()]) for b in m.blocks])
    other = torch.cat([b.mlp.up.weight.flatten() for b in m.blocks])
    assert resid.std().item() == pytest.approx(0.02 / math.sqrt(2 * 8), rel=0.05)
    assert other.std().item() == pytest.approx(0.02, rel=0.05)
    assert all(b.attn.qkv.bias.abs().max() == 0 for b in m.blocks)


def test_modern_family_has_no_biases_and_uses_swiglu() -> None:
    m = tiny_model("modern")
    assert not any(name.endswith("bias") for name, _ in m.named_parameters())
    assert hasattr(m.backbone.blocks[0].mlp, "gate")
    assert not hasattr(m.backbone, "pos_emb")  # positions come from RoPE


def test_sequence_head_uses_last_real_token_for_decoders() -> None:
    torch.manual_seed(0)
    m = tiny_model("gpt2", "sequence", num_labels=2).eval()
    ids = torch.randint(1, V, (1, 5))
    padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], 1)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0]])
    torch.testing.assert_close(m(padded, attention_mask=mask).logits, m(ids).logits, rtol=0, atol=1e-5)


def test_too_long_input_is_a_clear_error() -> None:
    m = tiny_model("gpt2")
    with pytest.raises(ValueError, match="longer than model.max_seq_len=64"):
        m(torch.zeros(1, 65, dtype=torch.long))


def test_rmsnorm_matches_its_formula() -> None:
    from lmforge.models.layers import RMSNorm

    torch.manual_seed(0)
    norm = RMSNorm(64, eps=1e-6)
    torch.nn.init.normal_(norm.weight)
    x = torch.randn(4, 10, 64)
    want = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    torch.testing.assert_close(norm(x), want, rtol=0, atol=1e-5)
    assert norm(x.bfloat16()).dtype == torch.bfloat16


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_lm_and_mlm_losses_equal_cross_entropy_of_their_logits(family: str) -> None:
    torch.manual_seed(0)
    m = tiny_model(family).eval()
    ids = torch.randint(0, V, (2, 9))
    labels = torch.full((2, 9), -100)
    labels[0, 2], labels[1, 5], labels[1, 8] = 4, 7, 9
    logits = m(ids).logits
    want = torch.nn.functional.cross_entropy(logits[labels != -100], labels[labels != -100])
    fused = m(ids, labels=labels)
    kept = m(ids, labels=labels, keep_logits=True)
    assert fused.logits is None  # the fused loss never builds them
    torch.testing.assert_close(fused.loss, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(kept.loss, want, rtol=1e-5, atol=1e-6)
    if family == "bert":  # the MLM head ran on the 3 selected positions only
        assert kept.logits.shape == (3, V)
        torch.testing.assert_close(kept.logits, logits[labels != -100], rtol=0, atol=1e-5)


def test_sequence_and_token_heads_own_their_losses() -> None:
    torch.manual_seed(0)
    ids = torch.randint(0, V, (3, 6))
    cls = tiny_model("bert", "sequence", num_labels=3).eval()
    y = torch.tensor([0, 2, 1])
    out = cls(ids, labels=y)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, y))
    reg = tiny_model("gpt2", "sequence", num_labels=1).eval()
    scores = torch.tensor([0.5, 4.0, 2.5])
    out = reg(ids, labels=scores)
    torch.testing.assert_close(out.loss, ((out.logits.squeeze(-1) - scores) ** 2).mean())
    tagger = tiny_model("bert", "token", num_labels=5).eval()
    tags = torch.tensor([[-100, 1, 4, -100, 0, -100]] * 3)
    out = tagger(ids, labels=tags)
    keep = tags != -100
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits[keep], tags[keep]))


def test_class_weights_weight_the_classification_loss() -> None:
    torch.manual_seed(0)
    cfg = tiny("bert")
    weights = torch.tensor([1.0, 3.0])
    m = build_model(cfg, HeadConfig(kind="sequence", num_labels=2), class_weights=weights).eval()
    ids, y = torch.randint(0, V, (4, 6)), torch.tensor([0, 1, 1, 0])
    out = m(ids, labels=y)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, y, weight=weights))
    assert "head.class_weights" not in m.state_dict()  # a training option, not a weight


def test_head_that_does_not_fit_the_family_is_a_config_error() -> None:
    from lmforge.errors import ConfigError

    with pytest.raises(ConfigError, match="head 'lm' does not fit family='bert'"):
        build_model(tiny("bert"), "lm")
    with pytest.raises(ConfigError, match="head 'mlm' needs family='bert'"):
        build_model(tiny("gpt2"), "mlm")


def test_cosine_head_compares_the_two_halves_of_the_batch() -> None:
    torch.manual_seed(0)
    m = build_model(tiny("bert"), HeadConfig(kind="cosine", num_labels=1, scale=5.0)).eval()
    a, b = torch.randint(5, V, (3, 6)), torch.randint(5, V, (3, 4))
    b = torch.cat([b, torch.zeros(3, 2, dtype=torch.long)], 1)  # padded: the mask must keep pads out of the mean
    mask = torch.cat([torch.ones(3, 6), torch.cat([torch.ones(3, 4), torch.zeros(3, 2)], 1)]).long()
    y = torch.tensor([5.0, 0.0, 2.5])
    out = m(torch.cat([a, b]), attention_mask=mask, labels=y)
    ha = m.backbone(a).last_hidden_state.mean(1)
    hb = m.backbone(b[:, :4]).last_hidden_state.mean(1)
    cos = torch.nn.functional.cosine_similarity(ha, hb)
    torch.testing.assert_close(out.logits.squeeze(-1), 5 * cos, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.loss, ((cos - y / 5) ** 2).mean(), rtol=1e-5, atol=1e-6)
    assert not any(p.requires_grad for p in m.head.parameters())  # the pooler only rides along for the export
