"""Model families: shapes, causality, banded attention, KV cache, padding, tying and init."""

from __future__ import annotations

import math

import pytest
import torch

from lmforge.config import ModelConfig
from lmforge.models import KVCache, build_model

V = 97


def tiny(family: str, **kw) -> ModelConfig:
    head = {"bert": "mlm"}.get(family, "lm")
    base = dict(family=family, head=head, vocab_size=V, n_layer=2, n_head=2, d_model=32, max_seq_len=64)
    if family == "modern":
        base["bias"] = False
    return ModelConfig(**{**base, **kw})


DECODERS = ["gpt1", "gpt2", "modern"]


VALID = [(f, h) for f in DECODERS for h in ("none", "lm", "sequence", "token")] + [
    ("bert", h) for h in ("none", "mlm", "sequence", "token")
]


@pytest.mark.parametrize("family,head", VALID)
def test_forward_shapes(family: str, head: str) -> None:
    torch.manual_seed(0)
    m = build_model(tiny(family, head=head, num_labels=3)).eval()
    ids = torch.randint(0, V, (2, 10))
    out = m(ids)
    assert out.last_hidden_state.shape == (2, 10, 32)
    want = {"none": None, "lm": (2, 10, V), "mlm": (2, 10, V), "sequence": (2, 3), "token": (2, 10, 3)}[head]
    assert (out.logits is None) if want is None else (tuple(out.logits.shape) == want)
    assert torch.isfinite(out.last_hidden_state).all()


@pytest.mark.parametrize("family", DECODERS)
def test_decoders_are_causal(family: str) -> None:
    torch.manual_seed(0)
    m = build_model(tiny(family)).eval()
    ids = torch.randint(0, V, (1, 12))
    changed = ids.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % V
    a, b = m(ids).logits, m(changed).logits
    torch.testing.assert_close(a[:, :8], b[:, :8])
    assert (a[:, 8:] - b[:, 8:]).abs().max() > 1e-4


def test_bert_sees_both_sides() -> None:
    torch.manual_seed(0)
    m = build_model(tiny("bert")).eval()
    ids = torch.randint(0, V, (1, 12))
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % V
    assert (m(ids).logits[:, 0] - m(changed).logits[:, 0]).abs().max() > 1e-4


def test_banded_layers_see_only_the_band() -> None:
    """With every layer banded (width 4) and 2 layers, position t sees back to t - 2 * 3 only."""
    torch.manual_seed(0)
    m = build_model(tiny("gpt2", attention_layers=("banded",), band_width=4)).eval()
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
    m = build_model(tiny("bert", head="none")).eval()
    ids = torch.randint(5, V, (1, 8))
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], 1)
    mask = torch.cat([torch.ones(1, 8), torch.zeros(1, 4)], 1).long()
    a = m(ids).last_hidden_state
    b = m(padded, attention_mask=mask).last_hidden_state[:, :8]
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_left_padded_decoder_with_positions_matches_unpadded() -> None:
    torch.manual_seed(0)
    m = build_model(tiny("gpt2")).eval()
    ids = torch.randint(1, V, (1, 6))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], 1)
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 1]])
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    a = m(ids).logits
    b = m(padded, attention_mask=mask, position_ids=pos).logits[:, 3:]
    assert torch.isfinite(m(padded, attention_mask=mask, position_ids=pos).logits).all()
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_attention_maps_are_returned_and_do_not_change_outputs() -> None:
    torch.manual_seed(0)
    m = build_model(tiny("gpt2")).eval()
    ids = torch.randint(0, V, (2, 7))
    plain = m(ids)
    out = m(ids, output_attentions=True)
    assert plain.attentions is None
    assert len(out.attentions) == 2 and out.attentions[0].shape == (2, 2, 7, 7)
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(2, 2, 7))
    assert out.attentions[0][0, 0].triu(1).abs().max() == 0  # causal map
    torch.testing.assert_close(out.logits, plain.logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", ["gpt2", "bert", "modern"])
def test_tying_survives_meta_init_and_to_empty(family: str) -> None:
    cfg = tiny(family)
    with torch.device("meta"):
        m = build_model(cfg)
    m.to_empty(device="cpu")
    m.tie_weights()
    head = m.mlm_head.decoder if family == "bert" else m.lm_head
    assert head.weight is m.tok_emb.weight
    with torch.no_grad():
        m.tok_emb.weight.fill_(0.5)
    assert float(head.weight.detach()[3, 3]) == 0.5


def test_untied_head_is_separate() -> None:
    m = build_model(tiny("gpt2", tie_embeddings=False))
    assert m.lm_head.weight is not m.tok_emb.weight
    assert (
        sum(p.numel() for p in m.parameters())
        == sum(p.numel() for p in build_model(tiny("gpt2")).parameters()) + V * 32
    )


def test_gpt2_init_scales_residual_projections() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(family="gpt2", vocab_size=512, n_layer=8, n_head=4, d_model=256, max_seq_len=64)
    m = build_model(cfg)
    resid = torch.cat([torch.cat([b.attn.out.weight.flatten(), b.mlp.down.weight.flatten()]) for b in m.blocks])
    other = torch.cat([b.mlp.up.weight.flatten() for b in m.blocks])
    assert resid.std().item() == pytest.approx(0.02 / math.sqrt(2 * 8), rel=0.05)
    assert other.std().item() == pytest.approx(0.02, rel=0.05)
    assert all(b.attn.qkv.bias.abs().max() == 0 for b in m.blocks)


def test_modern_family_has_no_biases_and_uses_swiglu() -> None:
    m = build_model(tiny("modern"))
    assert not any(name.endswith("bias") for name, _ in m.named_parameters())
    assert hasattr(m.blocks[0].mlp, "gate")
    assert not hasattr(m, "pos_emb")  # positions come from RoPE


def test_sequence_head_uses_last_real_token_for_decoders() -> None:
    torch.manual_seed(0)
    m = build_model(tiny("gpt2", head="sequence", num_labels=2)).eval()
    ids = torch.randint(1, V, (1, 5))
    padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], 1)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0]])
    torch.testing.assert_close(m(padded, attention_mask=mask).logits, m(ids).logits, rtol=0, atol=1e-5)


def test_too_long_input_is_a_clear_error() -> None:
    m = build_model(tiny("gpt2"))
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
def test_head_mask_runs_the_head_on_selected_positions_only(family: str) -> None:
    torch.manual_seed(0)
    m = build_model(tiny(family)).eval()
    ids = torch.randint(0, V, (2, 9))
    selected = torch.zeros(2, 9, dtype=torch.bool)
    selected[0, 2] = selected[1, 5] = selected[1, 8] = True
    full = m(ids).logits
    part = m(ids, head_mask=selected).logits
    assert part.shape == (3, V)
    torch.testing.assert_close(part, full[selected], rtol=0, atol=1e-6)
