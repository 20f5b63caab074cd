"""Generation against transformers on identical converted weights: greedy and beam search token for token,
the samplers against transformers' logits warpers, and fill-mask against BertForMaskedLM."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel  # noqa: E402
from transformers.generation import logits_process as lp  # noqa: E402

from lmforge.checkpoint.hf import model_from_hf  # noqa: E402
from lmforge.generation import generate, mask_probabilities, sampling  # noqa: E402

V, PAD = 97, 96  # a non-zero pad: transformers fills finished beams with `pad_token_id or eos`


@pytest.fixture(scope="module")
def gpt2_pair() -> tuple[GPT2LMHeadModel, torch.nn.Module]:
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=V, n_embd=32, n_layer=2, n_head=4, n_positions=96, bos_token_id=1, eos_token_id=2)
    hf = GPT2LMHeadModel(cfg).eval()
    return hf, model_from_hf(hf)


@pytest.fixture(scope="module")
def padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(3, PAD, (3, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    mask[2, :1] = 0
    return ids.masked_fill(mask == 0, PAD), mask


def hf_new_tokens(hf: GPT2LMHeadModel, ids: torch.Tensor, mask: torch.Tensor, **kw: object) -> torch.Tensor:
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=mask, pad_token_id=PAD, **kw)
    return out[:, ids.shape[1] :]


def frequent_token(tokens: torch.Tensor) -> int:
    """A token the model does emit, to serve as EOS so that rows really end early."""
    return int(torch.mode(tokens.flatten()).values)


def test_greedy_equals_transformers_token_for_token(gpt2_pair, padded_batch) -> None:
    hf, ours = gpt2_pair
    ids, mask = padded_batch
    ref = hf_new_tokens(hf, ids, mask, max_new_tokens=48, do_sample=False, eos_token_id=None)
    assert torch.equal(generate(ours, ids, mask, max_new_tokens=48), ref)
    eos = int(ref[0, 5])  # row 0 ends at step 6 at the latest
    ref_eos = hf_new_tokens(hf, ids, mask, max_new_tokens=48, do_sample=False, eos_token_id=eos)
    ours_eos = generate(ours, ids, mask, max_new_tokens=48, eos_token_id=eos, pad_token_id=PAD)
    assert (ref_eos[0] == eos).any() and torch.equal(ours_eos, ref_eos)


@pytest.mark.parametrize(
    ("length_penalty", "early_stopping"),
    [(1.0, False), (0.6, True), (2.0, "never"), (-0.5, False), (1.0, "never")],
)
def test_beam_search_equals_transformers_token_for_token(gpt2_pair, padded_batch, length_penalty, early_stopping):
    hf, ours = gpt2_pair
    ids, mask = padded_batch
    kw = dict(max_new_tokens=24, num_beams=4, length_penalty=length_penalty, early_stopping=early_stopping)
    greedy = generate(ours, ids, mask, max_new_tokens=24)
    for eos in (None, frequent_token(greedy)):
        ref = hf_new_tokens(hf, ids, mask, do_sample=False, eos_token_id=eos, **kw)
        got = generate(ours, ids, mask, eos_token_id=eos, pad_token_id=PAD, **kw)
        assert got.tolist() == ref.tolist(), f"eos={eos}"


def test_beam_search_with_eos_ends_rows_early_like_transformers(gpt2_pair, padded_batch) -> None:
    hf, ours = gpt2_pair
    ids, mask = padded_batch
    kw = dict(max_new_tokens=30, num_beams=3, length_penalty=-1.0, early_stopping=True)  # < 0 favours short
    eos = int(hf_new_tokens(hf, ids, mask, do_sample=False, eos_token_id=None, **kw)[0, 3])
    ref = hf_new_tokens(hf, ids, mask, do_sample=False, eos_token_id=eos, **kw)
    got = generate(ours, ids, mask, eos_token_id=eos, pad_token_id=PAD, **kw)
    assert (ref == eos).any() and got.tolist() == ref.tolist()


def test_repetition_penalty_and_no_repeat_ngram_equal_transformers(gpt2_pair) -> None:
    hf, ours = gpt2_pair
    ids = torch.randint(
        3, PAD, (2, 6), generator=torch.Generator().manual_seed(5)
    )  # unpadded: transformers penalises pads
    mask = torch.ones_like(ids)
    kw = dict(max_new_tokens=40, repetition_penalty=1.7, no_repeat_ngram_size=3)
    ref = hf_new_tokens(hf, ids, mask, do_sample=False, eos_token_id=None, **kw)
    assert torch.equal(generate(ours, ids, max_new_tokens=40, repetition_penalty=1.7, no_repeat_ngram_size=3), ref)
    ref_beam = hf_new_tokens(hf, ids, mask, do_sample=False, eos_token_id=None, num_beams=3, **kw)
    got_beam = generate(ours, ids, num_beams=3, max_new_tokens=40, repetition_penalty=1.7, no_repeat_ngram_size=3)
    assert got_beam.tolist() == ref_beam.tolist()


def test_seeded_top_k_top_p_sample_is_stable_and_matches_transformers_rng(gpt2_pair, padded_batch) -> None:
    hf, ours = gpt2_pair
    ids, mask = padded_batch
    kw = dict(max_new_tokens=32, do_sample=True, top_k=20, top_p=0.9, temperature=0.8)
    a = generate(ours, ids, mask, seed=11, **kw)
    assert torch.equal(a, generate(ours, ids, mask, seed=11, **kw))
    # with seed=None both libraries draw from the global RNG with torch.multinomial on the same distribution
    torch.manual_seed(3)
    ref = hf_new_tokens(hf, ids, mask, eos_token_id=None, **kw)
    torch.manual_seed(3)
    assert torch.equal(generate(ours, ids, mask, **kw), ref)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (lambda x: sampling.apply_temperature(x, 0.7), lp.TemperatureLogitsWarper(0.7)),
        (lambda x: sampling.filter_top_k(x, 7), lp.TopKLogitsWarper(7)),
        (lambda x: sampling.filter_top_p(x, 0.8), lp.TopPLogitsWarper(0.8)),
        (lambda x: sampling.filter_top_p(x, 0.05), lp.TopPLogitsWarper(0.05)),
        (lambda x: sampling.filter_min_p(x, 0.1), lp.MinPLogitsWarper(0.1)),
    ],
)
def test_warpers_equal_transformers(ours, theirs) -> None:
    x = torch.randn(4, V, generator=torch.Generator().manual_seed(2)) * 3
    ids = torch.zeros(4, 1, dtype=torch.long)
    assert torch.equal(ours(x), theirs(ids, x.clone()))


def test_repetition_penalty_and_ngram_processors_equal_transformers() -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, V, generator=g)
    ids = torch.randint(0, 6, (3, 30), generator=g)  # a small alphabet, so n-grams do repeat
    seen = torch.zeros(3, V, dtype=torch.bool)
    sampling.mark_seen(seen, ids)
    ref = lp.RepetitionPenaltyLogitsProcessor(1.3)(ids, x.clone())
    assert torch.equal(sampling.apply_repetition_penalty(x, seen, 1.3), ref)
    for n in (1, 2, 3):
        ref = lp.NoRepeatNGramLogitsProcessor(n)(ids, x.clone())
        assert torch.equal(sampling.block_ngram_repeats(x, ids.tolist(), n), ref)


def test_fill_mask_top5_equals_bert_for_masked_lm() -> None:
    torch.manual_seed(0)
    hf = BertForMaskedLM(
        BertConfig(
            vocab_size=V,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
        )
    ).eval()
    ours = model_from_hf(hf)
    mask_id = 4
    ids = torch.tensor([2, 17, mask_id, 33, 40, mask_id, mask_id, 9, 3])
    with torch.no_grad():
        probs = hf(ids[None]).logits[0].softmax(-1)
    preds = mask_probabilities(ours, ids, mask_id, top_k=5)
    assert [p for p, _, _ in preds] == [2, 5, 6]
    for pos, top_probs, top_ids in preds:
        ref = probs[pos].topk(5)
        assert top_ids.tolist() == ref.indices.tolist()
        torch.testing.assert_close(top_probs, ref.values, rtol=0, atol=1e-5)
