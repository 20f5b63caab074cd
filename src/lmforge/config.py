"""Every *Config dataclass, the model presets, and load_config(); imports nothing else from lmforge.

A run is described by one tree of frozen dataclasses::

    RunConfig(model=ModelConfig, tokenizer=TokenizerConfig, data=DataConfig, train=TrainConfig, dist=DistConfig)

A YAML file sets it, dotted flags (``--model.n_layer 6``) override it, and the resolved tree is saved as
``config.yaml`` in the run directory so that the run can be repeated from that file alone. A field's
comment doubles as its ``--help`` text.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from lmforge.errors import ConfigError

Family = Literal["gpt1", "gpt2", "bert", "modern"]
HeadKind = Literal["none", "lm", "mlm", "sequence", "token", "cosine"]
AttentionKind = Literal["dense", "banded"]
Activation = Literal["gelu", "gelu_tanh", "relu", "silu"]


def _problems_to_error(section: str, problems: list[str]) -> None:
    if problems:
        raise ConfigError("\n".join(f"{section}.{p}" for p in problems))


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Shape and architecture of one transformer; everything `build_model` needs."""

    preset: str | None = None  # name the shape came from (see `lmforge info --list`); explicit fields override it
    # gpt1: post-LN decoder; gpt2: pre-LN decoder (also GPT-3); bert: post-LN encoder;
    # modern: RoPE/RMSNorm/SwiGLU decoder
    family: Family = "gpt2"
    vocab_size: int = 8192  # tokenizer size; pad to a multiple of 64 for faster lm_head matmuls
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    d_ff: int = 0  # MLP hidden width; 0 means 4 * d_model (8/3 * d_model rounded to 64 for the modern family)
    max_seq_len: int = 256  # learned positions (or the RoPE cache) cover this many tokens
    type_vocab_size: int = 2  # BERT segment embeddings (sentence A / B)
    # None picks the family's own: gelu (BERT, GPT-1), gelu_tanh (GPT-2), silu (modern)
    activation: Activation | None = None
    norm_eps: float = 0.0  # 0 picks the family's own: 1e-12 (BERT), 1e-5 (GPT), 1e-6 (modern)
    bias: bool = True  # biases in linear layers and norms (the modern family has none)
    tie_embeddings: bool = True  # lm/mlm decoder shares the token embedding matrix
    dropout: float = 0.0  # residual, embedding and head dropout
    attn_dropout: float = 0.0  # dropout on attention probabilities
    attention_layers: tuple[AttentionKind, ...] = ("dense",)  # cycled over layers; GPT-3 uses (dense, banded)
    band_width: int = 256  # a banded layer lets each token see this many previous tokens (itself included)
    rope_theta: float = 10_000.0  # RoPE base frequency (modern family)
    init_std: float = 0.02  # std of the normal init for weights (GPT-2, BERT)

    def __post_init__(self) -> None:
        problems = []
        for name in ("vocab_size", "n_layer", "n_head", "d_model", "max_seq_len", "band_width"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} must be >= 1")
        if self.d_ff < 0:
            problems.append(f"d_ff={self.d_ff} must be >= 0 (0 = family default)")
        if self.n_head >= 1 and self.d_model % self.n_head:
            problems.append(
                f"d_model={self.d_model} is not divisible by n_head={self.n_head}; "
                f"pick n_head in {[h for h in range(1, 65) if self.d_model % h == 0][-6:]}"
            )
        if self.family == "modern" and self.n_head >= 1 and (self.d_model // self.n_head) % 2:
            problems.append(f"d_model/n_head={self.d_model // self.n_head} must be even for RoPE")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout={self.dropout} must be in [0, 1)")
        if not 0.0 <= self.attn_dropout < 1.0:
            problems.append(f"attn_dropout={self.attn_dropout} must be in [0, 1)")
        if not self.attention_layers:
            problems.append("attention_layers is empty; use [dense]")
        if self.family == "bert" and "banded" in self.attention_layers:
            problems.append("banded attention is a decoder option; BERT layers are all dense")
        _problems_to_error("model", problems)

    # -- resolved family defaults -------------------------------------------------------------------
    @property
    def ff_dim(self) -> int:
        if self.d_ff:
            return self.d_ff
        if self.family == "modern":  # SwiGLU has 3 matrices: 8/3 * d keeps the parameter count of a 4 * d MLP
            return 64 * ((8 * self.d_model // 3 + 63) // 64)
        return 4 * self.d_model

    @property
    def act(self) -> Activation:
        if self.activation:
            return self.activation
        return {"bert": "gelu", "gpt1": "gelu", "gpt2": "gelu_tanh", "modern": "silu"}[self.family]

    @property
    def eps(self) -> float:
        if self.norm_eps:
            return self.norm_eps
        return {"bert": 1e-12, "gpt1": 1e-5, "gpt2": 1e-5, "modern": 1e-6}[self.family]

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def causal(self) -> bool:
        return self.family != "bert"

    def layer_attention(self, layer: int) -> AttentionKind:
        return self.attention_layers[layer % len(self.attention_layers)]


@dataclass(frozen=True, kw_only=True)
class HeadConfig:
    """The task head put on a backbone (tasks/heads.py); the backbone itself only maps ids to hidden states."""

    # lm: next-token logits (decoders); mlm: masked-token logits (BERT); sequence: one output per input
    # (classification, or regression with num_labels=1); token: one output per token (NER); cosine: the
    # cosine of two mean-pooled sentences, times `scale` (a bi-encoder for similarity); none: hidden states
    kind: HeadKind = "lm"
    num_labels: int = 2  # outputs of a sequence/token head (1 = regression)
    # decoder sequence head given no attention_mask: the last token that is not this id is the summary
    # (as transformers' GPT2ForSequenceClassification, which needs it in its config.json)
    pad_token_id: int | None = None
    scale: float = 1.0  # cosine head: predictions are scale * cos (e.g. 5 for STS-B's 0-5 scores)

    def __post_init__(self) -> None:
        if self.num_labels < 1:
            raise ConfigError(f"head.num_labels={self.num_labels} must be >= 1")
        if not self.scale > 0:
            raise ConfigError(f"head.scale={self.scale} must be > 0")

    def check_fits(self, model: ModelConfig) -> None:
        """Raise a ConfigError when this head cannot sit on `model`'s family."""
        if model.family == "bert" and self.kind == "lm":
            raise ConfigError("head 'lm' does not fit family='bert' (an encoder sees both sides); use head 'mlm'")
        if model.family != "bert" and self.kind == "mlm":
            raise ConfigError(f"head 'mlm' needs family='bert', not {model.family!r}; decoders use head 'lm'")


def head_for_objective(objective: str) -> HeadConfig:
    """The head a pretraining objective trains: clm -> lm, mlm -> mlm."""
    return HeadConfig(kind="lm" if objective == "clm" else "mlm")


# --- presets ------------------------------------------------------------------------------------------
# Sources: BERT (Devlin et al. 2018, Table/appendix; compact sizes from Turc et al. 2019 "Well-Read
# Students"), GPT-1 (Radford et al. 2018), GPT-2 (Radford et al. 2019, Table 2; HF configs), GPT-3
# (Brown et al. 2020, Table 2.1), small CPU sizes after minGPT / nanoGPT.
_BERT = dict(family="bert", vocab_size=30522, max_seq_len=512, type_vocab_size=2)
_GPT2 = dict(family="gpt2", vocab_size=50257, max_seq_len=1024)
# GPT-3: alternating dense and locally banded sparse layers ("similar to the Sparse Transformer"); the
# paper does not print the band width, 256 is our default (configurable with model.band_width).
_GPT3 = dict(family="gpt2", vocab_size=50257, max_seq_len=2048, attention_layers=("dense", "banded"))
_CPU = dict(family="gpt2", vocab_size=8192, max_seq_len=256, activation="gelu")

PRESETS: dict[str, dict[str, Any]] = {
    "bert-tiny": dict(_BERT, n_layer=2, n_head=2, d_model=128),
    "bert-mini": dict(_BERT, n_layer=4, n_head=4, d_model=256),
    "bert-small": dict(_BERT, n_layer=4, n_head=8, d_model=512),
    "bert-base": dict(_BERT, n_layer=12, n_head=12, d_model=768),
    "bert-large": dict(_BERT, n_layer=24, n_head=16, d_model=1024),
    "gpt1": dict(family="gpt1", vocab_size=40478, max_seq_len=512, n_layer=12, n_head=12, d_model=768),
    "gpt2": dict(_GPT2, n_layer=12, n_head=12, d_model=768),
    "gpt2-medium": dict(_GPT2, n_layer=24, n_head=16, d_model=1024),
    "gpt2-large": dict(_GPT2, n_layer=36, n_head=20, d_model=1280),
    "gpt2-xl": dict(_GPT2, n_layer=48, n_head=25, d_model=1600),
    "gpt3-small": dict(_GPT3, n_layer=12, n_head=12, d_model=768),
    "gpt3-medium": dict(_GPT3, n_layer=24, n_head=16, d_model=1024),
    "gpt3-large": dict(_GPT3, n_layer=24, n_head=16, d_model=1536),
    "gpt3-xl": dict(_GPT3, n_layer=24, n_head=16, d_model=2048),
    "gpt3-2.7b": dict(_GPT3, n_layer=32, n_head=32, d_model=2560),
    "gpt3-6.7b": dict(_GPT3, n_layer=32, n_head=32, d_model=4096),
    # Table 2.1 prints d_model 5140 for 13B, but also n_head 40 and d_head 128: 40 x 128 = 5120, and 5140
    # is not divisible by 40. We take 5120 (heads x head dim, as the released configs of this size use);
    # the count is then 12.85B, 1.1% under the rounded "13.0B" the paper lists.
    "gpt3-13b": dict(_GPT3, n_layer=40, n_head=40, d_model=5120),
    "gpt3-175b": dict(_GPT3, n_layer=96, n_head=96, d_model=12288),
    # CPU-sized decoders: nano/micro after minGPT, mini is the 6 x 384 shape the benchmarks use. They use
    # the exact (erf) GELU, as nanoGPT does: on CPU GPT-2's tanh approximation made a 4 x 128 training
    # step ~8% slower (benchmarks/RESULTS.md, Training), and these are not GPT-2 checkpoints.
    "gpt-nano": dict(_CPU, n_layer=3, n_head=3, d_model=48, max_seq_len=128),
    "gpt-micro": dict(_CPU, n_layer=4, n_head=4, d_model=128),
    "gpt-mini": dict(_CPU, n_layer=6, n_head=6, d_model=384),
    # The modern decoder (RoPE, RMSNorm, SwiGLU, no biases) at the same CPU sizes.
    "modern-micro": dict(
        family="modern", vocab_size=8192, max_seq_len=256, n_layer=4, n_head=4, d_model=128, bias=False
    ),
    "modern-mini": dict(
        family="modern", vocab_size=8192, max_seq_len=256, n_layer=6, n_head=6, d_model=384, bias=False
    ),
}

# GPT-3 Table 2.1 parameter counts, for tests and `lmforge info`.
GPT3_PAPER_PARAMS = {
    "gpt3-small": 125e6,
    "gpt3-medium": 350e6,
    "gpt3-large": 760e6,
    "gpt3-xl": 1.3e9,
    "gpt3-2.7b": 2.7e9,
    "gpt3-6.7b": 6.7e9,
    "gpt3-13b": 13.0e9,
    "gpt3-175b": 175.0e9,
}


def model_config_from_preset(name: str, **overrides: Any) -> ModelConfig:
    """ModelConfig for a preset name, with explicit fields overriding the preset's."""
    if name not in PRESETS:
        raise ConfigError(f"model.preset={name!r} is unknown{_suggest(name, PRESETS)}; see `lmforge info --list`")
    return ModelConfig(**{**PRESETS[name], "preset": name, **overrides})


# --- the other sections --------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class TokenizerConfig:
    """Which tokenizer a run trains or loads."""

    path: str | None = None  # an existing tokenizer.json / HF tokenizer directory; None trains one on the data
    kind: Literal["bpe", "wordpiece", "char"] | None = None  # None: bpe for decoders, wordpiece for BERT
    vocab_size: int = 8192  # target size when training (char ignores it)
    lowercase: bool = False  # WordPiece only
    max_train_bytes: int = 200_000_000  # tokenizer training reads at most this many bytes (memory bound)
    min_frequency: int = 2  # BPE/WordPiece: a merge or piece must occur this often to enter the vocab

    def __post_init__(self) -> None:
        problems = []
        if self.vocab_size < 2:
            problems.append(f"vocab_size={self.vocab_size} must be >= 2")
        if self.max_train_bytes < 1:
            problems.append(f"max_train_bytes={self.max_train_bytes} must be >= 1")
        if self.min_frequency < 1:
            problems.append(f"min_frequency={self.min_frequency} must be >= 1")
        _problems_to_error("tokenizer", problems)


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Where the text comes from and how it is split and batched."""

    paths: tuple[str, ...] = ()  # files, directories or globs of raw text, or a prepared shard directory
    text_field: str = "text"  # column/field of .jsonl/.csv/.tsv/.parquet inputs
    doc_mode: Literal["file", "blank_line", "line"] = "blank_line"  # how a .txt file splits into documents
    val_fraction: float = 0.05  # share of documents held out for validation (split by document hash)
    val_count: int = 0  # hold out exactly this many documents (smallest hashes) instead; 0: use val_fraction
    min_doc_chars: int = 1  # drop documents shorter than this after cleaning
    dedupe: bool = True  # drop exact-duplicate documents
    nfc: bool = True  # Unicode NFC normalisation
    strip_control: bool = True  # remove control characters (keeps tab and newline)
    normalize_whitespace: bool = True  # CRLF -> LF, no trailing spaces, 3+ newlines -> 2, trimmed (indents kept)
    token_dtype: Literal["auto", "uint16", "uint32"] = "auto"  # shard dtype; auto: uint16 when the vocab fits
    shard_tokens: int = 100_000_000  # tokens per shard file before a new one is started
    sampling: Literal["random", "sequential"] = "random"  # CLM windows: random, or packed with each token once an epoch
    seq_len: int = 256  # tokens per training window
    mlm_probability: float = 0.15  # share of tokens selected for masking (MLM)
    mask_rate: float = 0.8  # MLM: share of selected tokens replaced by [MASK]
    random_rate: float = 0.1  # MLM: share of selected tokens replaced by a random token (the rest stay as they are)
    whole_word_mask: bool = False  # MLM masks every piece of a selected word (WordPiece)
    num_workers: int = 2  # processes used to tokenize

    def __post_init__(self) -> None:
        problems = []
        if not 0.0 <= self.val_fraction < 1.0:
            problems.append(f"val_fraction={self.val_fraction} must be in [0, 1)")
        if self.val_count < 0:
            problems.append(f"val_count={self.val_count} must be >= 0")
        if self.min_doc_chars < 0:
            problems.append(f"min_doc_chars={self.min_doc_chars} must be >= 0")
        if self.shard_tokens < 1024:
            problems.append(f"shard_tokens={self.shard_tokens} must be >= 1024")
        if self.seq_len < 2:
            problems.append(f"seq_len={self.seq_len} must be >= 2")
        if not 0.0 < self.mlm_probability < 1.0:
            problems.append(f"mlm_probability={self.mlm_probability} must be in (0, 1)")
        rates_ok = 0.0 <= self.mask_rate <= 1.0 and 0.0 <= self.random_rate <= 1.0
        if not rates_ok or self.mask_rate + self.random_rate > 1.0:
            problems.append(
                f"mask_rate={self.mask_rate} and random_rate={self.random_rate} must be in [0, 1] and sum to <= 1"
            )
        if self.num_workers < 1:
            problems.append(f"num_workers={self.num_workers} must be >= 1")
        _problems_to_error("data", problems)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """The optimisation loop: steps, batch, learning-rate schedule, precision, logging and checkpoints."""

    max_steps: int = 1000  # optimizer steps
    batch_size: int = 16  # sequences per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 3e-4  # peak learning rate
    min_lr_ratio: float = 0.1  # the schedule decays to lr * this
    warmup_steps: int = 100
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    # adamw: AdamW everywhere; muon: Muon for the transformer blocks' matrices, AdamW for the rest
    # (embeddings, norms, biases, heads); Muon learns faster per token (docs/training.md)
    optimizer: Literal["adamw", "muon"] = "adamw"
    muon_lr: float = 0.0  # peak learning rate of Muon's matrices (0: train.lr); follows the same schedule
    muon_momentum: float = 0.95  # Muon's Nesterov momentum
    weight_decay: float = 0.1  # decoupled; never applied to biases, norms or embeddings
    beta1: float = 0.9
    beta2: float = 0.95
    max_grad_norm: float = 1.0  # 0 disables clipping
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast dtype for the forward pass
    compile: bool = False  # torch.compile the model
    device: str = "auto"  # auto: cuda if available, else cpu
    # on a CPU with glibc: malloc keeps freed memory for the next step instead of returning it to the OS (steps
    # 1.03-1.08x faster; the process holds its freed memory while training). Off where malloc was tuned by the
    # user (MALLOC_* variables, GLIBC_TUNABLES) or replaced (jemalloc / tcmalloc in LD_PRELOAD)
    keep_freed_memory: bool = True
    seed: int = 1337
    eval_every: int = 200  # steps between validation passes (0: only at the end)
    eval_batches: int = 20  # validation batches per pass
    log_every: int = 10
    checkpoint_every: int = 500  # steps between checkpoints (0: only at the end)
    keep_checkpoints: int = 2  # keep the newest K step-N directories
    epochs: int = 0  # fine-tuning: passes over the training set (0: use max_steps); pretraining refuses it

    def __post_init__(self) -> None:
        problems = []
        for name in ("max_steps", "batch_size", "grad_accum", "log_every", "keep_checkpoints", "eval_batches"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("warmup_steps", "eval_every", "checkpoint_every", "epochs"):
            if getattr(self, name) < 0:
                problems.append(f"{name}={getattr(self, name)} must be >= 0")
        if self.lr <= 0:
            problems.append(f"lr={self.lr} must be > 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            problems.append(f"min_lr_ratio={self.min_lr_ratio} must be in [0, 1]")
        if self.max_grad_norm < 0:
            problems.append(f"max_grad_norm={self.max_grad_norm} must be >= 0 (0 disables clipping)")
        if self.muon_lr < 0:
            problems.append(f"muon_lr={self.muon_lr} must be >= 0 (0: use train.lr)")
        if self.muon_lr and self.optimizer != "muon":
            problems.append(
                f"muon_lr={self.muon_lr} is set, but optimizer={self.optimizer!r}; add train.optimizer=muon"
            )
        if not 0.0 <= self.muon_momentum < 1.0:
            problems.append(f"muon_momentum={self.muon_momentum} must be in [0, 1)")
        _problems_to_error("train", problems)


@dataclass(frozen=True, kw_only=True)
class DistConfig:
    """How the run is spread over processes (torchrun)."""

    strategy: Literal["none", "ddp", "fsdp"] = "none"
    backend: Literal["auto", "gloo", "nccl"] = "auto"


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """One run: the model, its tokenizer and data, the training loop and the distribution strategy."""

    objective: Literal["clm", "mlm"] = "clm"  # causal LM (decoders) or masked LM (BERT)
    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    dist: DistConfig = field(default_factory=DistConfig)

    def __post_init__(self) -> None:
        problems = []
        if self.objective == "mlm" and self.model.family != "bert":
            problems.append(f"objective='mlm' needs a BERT model, but model.family={self.model.family!r}")
        if self.objective == "clm" and self.model.family == "bert":
            problems.append("objective='clm' needs a decoder; BERT is trained with objective='mlm'")
        if self.data.seq_len > self.model.max_seq_len:
            problems.append(
                f"data.seq_len={self.data.seq_len} is longer than model.max_seq_len={self.model.max_seq_len}; "
                "lower data.seq_len or raise model.max_seq_len"
            )
        if self.train.epochs:
            problems.append(
                f"train.epochs={self.train.epochs} applies to `lmforge finetune`; pretraining runs train.max_steps "
                "steps (data.sampling=sequential visits each token once per epoch)"
            )
        if self.train.optimizer == "muon" and self.dist.strategy == "fsdp":
            problems.append(
                "train.optimizer='muon' needs whole matrices, but dist.strategy='fsdp' shards them; "
                "use train.optimizer=adamw with FSDP, or dist.strategy=ddp"
            )
        if problems:
            raise ConfigError("\n".join(problems))


FinetuneTask = Literal["classification", "regression", "token-classification", "text-to-text"]
# the validation metric each task keeps its best checkpoint by (higher is better for all of them)
DEFAULT_MONITOR = {
    "classification": "accuracy",
    "regression": "spearman",
    "token-classification": "f1",
    "text-to-text": "rougeL",
}


@dataclass(frozen=True, kw_only=True)
class FinetuneDataConfig:
    """The labelled files of a fine-tuning run and how they become model inputs."""

    train: str = ""  # training file: csv / tsv / jsonl / parquet, or CoNLL for token-classification
    validation: str = ""  # validation file (evaluated every epoch; picks the best checkpoint)
    test: str = ""  # optional test file, evaluated once with the best weights
    text_column: str | None = None  # header name or 0-based index; text-to-text: the source
    text_pair_column: str | None = None  # second sentence of a pair (BERT token type 1)
    label_column: str | None = None  # class, score, tags or target
    max_length: int = 0  # tokens per example, special tokens included; 0: min(128, model.max_seq_len)
    # text-to-text prompt: a name in lmforge.data.finetune.TEMPLATES (summarization, translation, default)
    # or a template with {source} and {target}, {target} last
    template: str = "default"
    augment: Literal["none", "eda"] = "none"  # EDA augmentation of the training texts (lmforge.data.augment)
    augment_alpha: float = 0.1  # EDA: share of words changed per copy (Wei & Zou 2019)
    augment_copies: int = 4  # EDA: augmented copies per training example

    def __post_init__(self) -> None:
        problems = []
        if self.max_length < 0:
            problems.append(f"max_length={self.max_length} must be >= 0 (0: the default)")
        if not 0.0 < self.augment_alpha <= 1.0:
            problems.append(f"augment_alpha={self.augment_alpha} must be in (0, 1]")
        if self.augment_copies < 1:
            problems.append(f"augment_copies={self.augment_copies} must be >= 1")
        _problems_to_error("data", problems)


@dataclass(frozen=True, kw_only=True)
class LoraConfig:
    """Low-rank adapters (Hu et al. 2021) on the blocks' linear layers; 0 = full fine-tuning."""

    rank: int = 0  # rank of each adapter; 0 turns LoRA off
    alpha: float = 16.0  # the adapter's output is scaled by alpha / rank
    targets: tuple[str, ...] = ("qkv", "out")  # attribute names of the nn.Linear layers to adapt (qkv, out, up, down)
    dropout: float = 0.0  # dropout on the adapter's input

    def __post_init__(self) -> None:
        problems = []
        if self.rank < 0:
            problems.append(f"rank={self.rank} must be >= 0 (0: no LoRA)")
        if self.alpha <= 0:
            problems.append(f"alpha={self.alpha} must be > 0")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout={self.dropout} must be in [0, 1)")
        _problems_to_error("lora", problems)


def _finetune_train_defaults() -> TrainConfig:
    # BERT's fine-tuning recipe (Devlin et al. 2018, appendix A.3; RoBERTa's GLUE settings): lr 2e-5..5e-5,
    # batch 32, linear decay to 0 after warmup over 6% of the steps, weight decay 0.01, 3 epochs
    return TrainConfig(
        lr=3e-5,
        batch_size=32,
        schedule="linear",
        min_lr_ratio=0.0,
        warmup_steps=0,
        weight_decay=0.01,
        beta2=0.999,
        epochs=3,
        eval_every=0,
        log_every=20,
        checkpoint_every=0,
        keep_checkpoints=1,
    )


@dataclass(frozen=True, kw_only=True)
class FinetuneConfig:
    """One fine-tuning run: a pretrained model, a task head, labelled data, and the training loop.

    `model` and `head` are filled in from the pretrained model when the run starts and saved in config.yaml,
    so the run directory describes its own model.
    """

    task: FinetuneTask = "classification"
    model_path: str = ""  # a run directory, an lmforge export or a Hugging Face directory
    data: FinetuneDataConfig = field(default_factory=FinetuneDataConfig)
    train: TrainConfig = field(default_factory=_finetune_train_defaults)
    lora: LoraConfig = field(default_factory=LoraConfig)
    warmup_ratio: float = 0.06  # warmup over this share of all steps, when train.warmup_steps is 0
    freeze_encoder: bool = False  # train the head only (a linear probe)
    class_weights: Literal["none", "balanced"] = "none"  # balanced: n / (k * count) per class (sklearn's formula)
    # regression over sentence pairs: cross = one sequence "[CLS] a [SEP] b [SEP]" and a scalar head; bi = each
    # sentence encoded alone, mean-pooled, cosine similarity trained with MSE against score / max score
    # (a bi-encoder, as sentence-transformers trains STS-B; its embeddings also serve retrieval)
    pair_encoding: Literal["cross", "bi"] = "cross"
    monitor: str = ""  # validation metric for the best checkpoint and early stopping; "" = the task's default
    patience: int = 0  # stop after this many evaluations without improvement; 0 = never stop early
    # text-to-text validation: tokens generated per example (greedy); 0 = the longest training target
    max_new_tokens: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)  # resolved from model_path at start
    head: HeadConfig = field(default_factory=HeadConfig)  # resolved from the task and the labels at start

    def __post_init__(self) -> None:
        problems = []
        if not 0.0 <= self.warmup_ratio < 1.0:
            problems.append(f"warmup_ratio={self.warmup_ratio} must be in [0, 1)")
        if self.patience < 0:
            problems.append(f"patience={self.patience} must be >= 0 (0: no early stopping)")
        if self.max_new_tokens < 0:
            problems.append(f"max_new_tokens={self.max_new_tokens} must be >= 0 (0: the longest training target)")
        if self.pair_encoding == "bi" and self.task != "regression":
            problems.append(f"pair_encoding='bi' is a regression model (cosine similarity), not {self.task}")
        if self.freeze_encoder and self.lora.rank:
            problems.append("freeze_encoder and lora.rank > 0 both limit what trains; choose one")
        if problems:
            raise ConfigError("\n".join(problems))

    @property
    def monitor_metric(self) -> str:
        return self.monitor or DEFAULT_MONITOR[self.task]


# --- loading, overriding, saving -----------------------------------------------------------------------
def _suggest(name: str, options: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML value or flag string to the annotated type `tp`, or raise ConfigError naming `where`."""
    origin = get_origin(tp)
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            hint = _suggest(str(value), map(str, choices))
            raise ConfigError(f"{where}={value!r} is not one of {list(choices)}{hint}")
        return value
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        is_null = value is None or (isinstance(value, str) and value.lower() in ("none", "null", ""))
        if is_null and type(None) in get_args(tp):
            return None
        errors = []
        for arg in args:
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}={value!r} fits none of {tp}")
    if origin is tuple:
        (item_tp, _) = get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            value = [value]
        return tuple(_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{where}={value!r} is not a boolean (use true or false)")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}={value!r} is not an integer")
        if isinstance(value, int):
            return value
        try:
            as_float = float(str(value).replace("_", ""))
        except ValueError:
            raise ConfigError(f"{where}={value!r} is not an integer") from None
        if not as_float.is_integer():
            raise ConfigError(f"{where}={value!r} is not an integer")
        return int(as_float)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}={value!r} is not a number")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}={value!r} is not a number") from None
        if not math.isfinite(number):  # NaN slips through every range check (nan < 0 is False)
            raise ConfigError(f"{where}={value!r} is not a finite number")
        return number
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}={value!r} is not a string")
        return str(value)
    raise ConfigError(f"{where}: unsupported field type {tp}")  # pragma: no cover - a bug in this module


def _build(cls: type, raw: dict[str, Any], where: str, problems: list[str]) -> Any:
    """Build dataclass `cls` from a nested dict, collecting every problem instead of stopping at the first."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls) if f.init}
    if cls is ModelConfig:  # a run saved before the backbone/head split; its head follows from the objective
        raw, _ = split_legacy_head(raw)
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            problems.append(f"unknown key {path!r}{_suggest(key, names)}")
            continue
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                problems.append(f"{path} must be a mapping of fields, got {value!r}")
                continue
            # start from the field's own default (FinetuneConfig.train has fine-tuning defaults), then the values
            default = next(f for f in fields(cls) if f.name == key).default_factory  # type: ignore[misc]
            base = config_to_dict(default()) if callable(default) else {}
            if tp is ModelConfig and "preset" in value:  # a preset replaces the default shape, fields override it
                base = {}
            kwargs[key] = _build(tp, {**base, **value}, path, problems)
            continue
        try:
            kwargs[key] = _coerce(value, tp, path)
        except ConfigError as e:
            problems.append(str(e))
    if cls is ModelConfig and isinstance(kwargs.get("preset"), str):
        name = kwargs["preset"]
        if name not in PRESETS:
            problems.append(f"model.preset={name!r} is unknown{_suggest(name, PRESETS)}; see `lmforge info --list`")
        else:
            explicit = {k: v for k, v in kwargs.items() if k != "preset"}
            kwargs = {**PRESETS[name], "preset": name, **explicit}
    if any(v is None and dataclasses.is_dataclass(hints.get(k)) for k, v in kwargs.items()):
        return None
    try:
        return cls(**kwargs)
    except ConfigError as e:
        problems.extend(str(e).splitlines())
    except TypeError as e:  # a nested section failed above and is missing
        problems.append(f"{where or 'config'}: {e}")
    return None


def parse_overrides(args: typing.Sequence[str]) -> dict[str, Any]:
    """Turn ``["--model.n_layer", "6", "--train.lr=3e-4"]`` into a nested dict of strings."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}; overrides look like --section.field value")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise ConfigError(f"--{key} needs a value (e.g. --{key} VALUE or --{key}=VALUE)")
            value = args[i + 1]
            i += 1
        _set_dotted(out, key, value)
        i += 1
    return out


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.replace("-", "_").split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--{key}: {part!r} is a field, not a section")
        node = child
    node[parts[-1]] = value


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(
    path: str | Path | None = None,
    overrides: typing.Sequence[str] | dict[str, Any] | None = None,
    cls: type = RunConfig,
) -> Any:
    """Load a config: the YAML file first, then dotted overrides, each value coerced to its field's type.

    Every problem (unknown keys, wrong types, invalid values) is collected and raised once as ConfigError.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from e
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(loaded).__name__}")
        raw = loaded or {}
    if overrides:
        over = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
        moved = sorted(set(over.get("model") or {}) & set(LEGACY_HEAD_KEYS))
        if moved:
            raise ConfigError(
                f"--model.{moved[0]} is now --head.{LEGACY_HEAD_KEYS[moved[0]]} (the head is no longer part of the "
                "model config); pretraining picks its head from --objective"
            )
        raw = _merge(raw, over)
    problems: list[str] = []
    cfg = _build(cls, raw, "", problems)
    if problems or cfg is None:
        where = f"{path}: " if path else ""
        raise ConfigError(where + "invalid config:\n  " + "\n  ".join(problems or ["unknown problem"]))
    return cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A plain dict (tuples as lists) that YAML and JSON can hold."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in fields(v)}
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        return v

    return plain(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), encoding="utf-8")
    tmp.replace(path)


# fields that moved from ModelConfig to HeadConfig (files written before the backbone/head split carry them)
LEGACY_HEAD_KEYS = {"head": "kind", "num_labels": "num_labels", "pad_token_id": "pad_token_id"}


def split_legacy_head(raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model fields, head fields) of a `model` section that may still hold the head (older files)."""
    model = {k: v for k, v in raw.items() if k not in LEGACY_HEAD_KEYS}
    head = {LEGACY_HEAD_KEYS[k]: v for k, v in raw.items() if k in LEGACY_HEAD_KEYS}
    return model, head


def head_config_from_dict(raw: dict[str, Any], where: str = "config.json") -> HeadConfig:
    """HeadConfig from the `head` section of a saved config (unknown keys are an error)."""
    problems: list[str] = []
    cfg = _build(HeadConfig, raw, "head", problems)
    if problems or cfg is None:
        raise ConfigError(f"{where}: invalid head config:\n  " + "\n  ".join(problems))
    return cfg


def model_config_from_dict(raw: dict[str, Any], where: str = "config.json") -> ModelConfig:
    """ModelConfig from the `model` section of a saved config (unknown keys are an error)."""
    problems: list[str] = []
    raw, _ = split_legacy_head(raw)
    cfg = _build(ModelConfig, raw, "model", problems)
    if problems or cfg is None:
        raise ConfigError(f"{where}: invalid model config:\n  " + "\n  ".join(problems))
    return cfg
