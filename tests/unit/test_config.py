"""The config tree: YAML + dotted overrides, type coercion, collected errors with suggestions, presets."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmforge.config import (
    GPT3_PAPER_PARAMS,
    PRESETS,
    HeadConfig,
    ModelConfig,
    RunConfig,
    load_config,
    model_config_from_preset,
    parse_overrides,
    save_config,
)
from lmforge.errors import ConfigError
from lmforge.planning.params import summarize


def test_yaml_then_flags_coerced_to_field_types(tmp_path: Path) -> None:
    f = tmp_path / "run.yaml"
    f.write_text("model:\n  preset: gpt-micro\n  n_layer: 2\ntrain:\n  lr: 1e-3\n  max_steps: 10\n")
    cfg = load_config(
        f,
        [
            "--train.lr=3e-4",
            "--model.d_model",
            "64",
            "--train.compile",
            "true",
            "--model.attention_layers",
            "dense,banded",
        ],
    )
    assert isinstance(cfg, RunConfig)
    assert cfg.model.n_layer == 2 and cfg.model.d_model == 64 and cfg.model.n_head == 4  # preset kept the rest
    assert cfg.train.lr == pytest.approx(3e-4) and cfg.train.max_steps == 10 and cfg.train.compile is True
    assert cfg.model.attention_layers == ("dense", "banded")


def test_saved_config_reloads_identically(tmp_path: Path) -> None:
    cfg = load_config(None, ["--model.preset", "gpt3-small", "--model.max_seq_len", "256", "--train.seed", "7"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_unknown_key_suggests_closest_and_all_problems_are_collected() -> None:
    with pytest.raises(ConfigError) as e:
        load_config(
            None,
            [
                "--model.n_layr",
                "3",
                "--train.lr",
                "fast",
                "--trian.seed",
                "1",
                "--model.d_model",
                "100",
                "--model.n_head",
                "3",
            ],
        )
    msg = str(e.value)
    assert "unknown key 'model.n_layr' (did you mean 'n_layer'?)" in msg
    assert "train.lr='fast' is not a number" in msg
    assert "unknown key 'trian' (did you mean 'train'?)" in msg
    assert "d_model=100 is not divisible by n_head=3" in msg


def test_literal_field_lists_choices() -> None:
    with pytest.raises(
        ConfigError,
        match=r"model.family='gtp2' is not one of \['gpt1', 'gpt2', 'bert', 'modern'\] "
        r"\(did you mean 'gpt2'\?\)",
    ):
        load_config(None, {"model": {"family": "gtp2"}})


def test_wrong_types_are_named() -> None:
    with pytest.raises(ConfigError, match=r"train.max_steps='1.5' is not an integer"):
        load_config(None, ["--train.max_steps", "1.5"])
    with pytest.raises(ConfigError, match=r"train.compile='maybe' is not a boolean"):
        load_config(None, ["--train.compile", "maybe"])


def test_objective_must_fit_family() -> None:
    with pytest.raises(ConfigError, match="objective='mlm' needs a BERT model"):
        load_config(None, ["--objective", "mlm", "--model.preset", "gpt2"])
    with pytest.raises(ConfigError, match="head 'lm' does not fit family='bert'"):
        HeadConfig(kind="lm").check_fits(ModelConfig(family="bert"))


def test_seq_len_beyond_positions_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"data.seq_len=512 is longer than model.max_seq_len=128"):
        load_config(None, ["--model.preset", "gpt-nano", "--data.seq_len", "512"])


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(tmp_path / "list.yaml")


def test_override_parsing() -> None:
    assert parse_overrides(["--a.b", "1", "--a.c=x", "--d", "2"]) == {"a": {"b": "1", "c": "x"}, "d": "2"}
    with pytest.raises(ConfigError, match="--train.lr needs a value"):
        parse_overrides(["--train.lr"])


def test_configs_are_frozen() -> None:
    cfg = ModelConfig()
    with pytest.raises(AttributeError):
        cfg.n_layer = 3  # type: ignore[misc]


EXACT = {
    "bert-base": 109_482_240,
    "bert-large": 335_141_888,
    "gpt2": 124_439_808,
    "gpt2-medium": 354_823_168,
    "gpt2-large": 774_030_080,
    "gpt2-xl": 1_557_611_200,
}


@pytest.mark.parametrize("name", EXACT)
def test_exact_parameter_counts(name: str) -> None:
    head = HeadConfig(kind="none" if name.startswith("bert") else "lm")  # BERT: BertModel's, pooler included
    assert summarize(model_config_from_preset(name), head=head).n_params == EXACT[name]


# The paper's own hyperparameters (Table 2.1) give these counts; four sizes land 1.1-1.8% from the rounded
# numbers it prints (medium 355.9M vs "350M", XL 1.316B vs "1.3B", 2.7B 2.652B, 13B 12.85B), so the
# tolerance here is 2%, and the exact values are pinned so that any change is noticed.
GPT3_EXPECTED = {
    "gpt3-small": 125_226_240,
    "gpt3-medium": 355_871_744,
    "gpt3-large": 760_300_032,
    "gpt3-xl": 1_315_723_264,
    "gpt3-2.7b": 2_651_553_280,
    "gpt3-6.7b": 6_658_404_352,
    "gpt3-13b": 12_853_386_240,
    "gpt3-175b": 174_604_259_328,
}


@pytest.mark.parametrize("name", GPT3_EXPECTED)
def test_gpt3_sizes_near_paper(name: str) -> None:
    n = summarize(model_config_from_preset(name)).n_params
    assert n == GPT3_EXPECTED[name]
    assert abs(n / GPT3_PAPER_PARAMS[name] - 1) < 0.02
    assert model_config_from_preset(name).attention_layers == ("dense", "banded")


def test_every_preset_builds_on_meta() -> None:
    for name in PRESETS:
        s = summarize(model_config_from_preset(name))
        assert s.n_params > 0 and s.train_flops_per_token == 3 * s.forward_flops_per_token


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_float_fields_refuse_non_finite_values(value: str) -> None:
    with pytest.raises(ConfigError, match=rf"train.lr={value!r} is not a finite number"):
        load_config(None, ["--train.lr", value])


def test_head_flag_moved_out_of_the_model_section() -> None:
    with pytest.raises(ConfigError, match=r"--model.head is now --head.kind"):
        load_config(None, ["--model.head", "none"])


def test_pretraining_refuses_epochs_and_finetuning_keeps_its_defaults_under_overrides() -> None:
    from lmforge.config import FinetuneConfig

    with pytest.raises(ConfigError, match=r"train.epochs=2 applies to `lmforge finetune`"):
        load_config(None, ["--train.epochs", "2"])
    cfg = load_config(None, ["--task", "regression", "--train.lr", "5e-5"], cls=FinetuneConfig)
    train = cfg.train
    assert (train.lr, train.batch_size, train.schedule, train.weight_decay) == (5e-5, 32, "linear", 0.01)
    assert cfg.monitor_metric == "spearman"
