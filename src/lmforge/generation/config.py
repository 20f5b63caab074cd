"""What a generation call is asked to do (`GenerationConfig`) and what it returns (`Generation`)."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

from lmforge.errors import ConfigError

FinishReason = Literal["length", "stop", "eos"]


class GenerationConfigError(ConfigError, ValueError):
    """An invalid generation parameter; a ValueError for library callers, exit code 2 in the CLI."""


@dataclass(frozen=True, kw_only=True)
class GenerationConfig:
    """Decoding parameters. Defaults are greedy decoding of 32 tokens, as in transformers minus its top_k=50."""

    max_new_tokens: int = 32  # tokens to generate per prompt (fewer if EOS or a stop string comes first)
    do_sample: bool = False  # sample from the processed distribution; False picks the argmax (greedy)
    temperature: float = 1.0  # divides the logits before sampling; 0 means greedy
    top_k: int = 0  # sample among the k most likely tokens; 0 disables
    top_p: float = 1.0  # nucleus: the smallest set of tokens whose probability reaches top_p; 1 disables
    min_p: float = 0.0  # drop tokens less likely than min_p * p(most likely token); 0 disables
    repetition_penalty: float = 1.0  # CTRL (Keskar et al. 2019) on seen tokens; 1 disables
    no_repeat_ngram_size: int = 0  # never repeat an n-gram of this size (prompt included); 0 disables
    num_beams: int = 1  # beam search with this many beams; 1 is greedy or sampling
    length_penalty: float = 1.0  # beam score = sum log p / length**length_penalty; > 0 favours longer outputs
    early_stopping: bool | Literal["never"] = False  # beams: stop at num_beams done (True), heuristic, 'never'
    eos_token_id: int | tuple[int, ...] | None = None  # a row is done after it emits one of these ids
    pad_token_id: int | None = None  # fills rows that are done; default: the first EOS id, else 0
    bos_token_id: int | None = None  # an empty prompt starts from this id (else from the first EOS id)
    stop: tuple[str, ...] = ()  # stop strings (text APIs only): the text ends before the first one
    seed: int | None = None  # seeds a private torch.Generator, so sampling is reproducible and leaves global RNG alone
    truncate: Literal["error", "left"] = "error"  # a prompt that does not fit: raise, or keep its last tokens
    logprobs: bool = False  # also compute each chosen token's log-probability under the model (before processing)

    def __post_init__(self) -> None:
        if isinstance(self.eos_token_id, list):
            object.__setattr__(self, "eos_token_id", tuple(self.eos_token_id))
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        elif not isinstance(self.stop, tuple):
            object.__setattr__(self, "stop", tuple(self.stop))
        problems = []
        if not _is_int(self.max_new_tokens) or self.max_new_tokens < 0:
            problems.append(f"max_new_tokens={self.max_new_tokens!r} must be an integer >= 0")
        if not _is_number(self.temperature) or self.temperature < 0:
            problems.append(f"temperature={self.temperature!r} must be >= 0 (0 means greedy)")
        if not _is_int(self.top_k) or self.top_k < 0:
            problems.append(f"top_k={self.top_k!r} must be an integer >= 0 (0 disables it)")
        if not _is_number(self.top_p) or not 0.0 < self.top_p <= 1.0:
            problems.append(f"top_p={self.top_p!r} must be in (0, 1] (1 disables it)")
        if not _is_number(self.min_p) or not 0.0 <= self.min_p <= 1.0:
            problems.append(f"min_p={self.min_p!r} must be in [0, 1] (0 disables it)")
        if not _is_number(self.repetition_penalty) or self.repetition_penalty <= 0:
            problems.append(f"repetition_penalty={self.repetition_penalty!r} must be > 0 (1 disables it)")
        if not _is_int(self.no_repeat_ngram_size) or self.no_repeat_ngram_size < 0:
            problems.append(f"no_repeat_ngram_size={self.no_repeat_ngram_size!r} must be an integer >= 0")
        if not _is_int(self.num_beams) or self.num_beams < 1:
            problems.append(f"num_beams={self.num_beams!r} must be an integer >= 1")
        elif self.num_beams > 1 and self.do_sample:
            problems.append(f"num_beams={self.num_beams} with do_sample=True (beam sampling) is not supported")
        if not _is_number(self.length_penalty):
            problems.append(f"length_penalty={self.length_penalty!r} must be a number")
        if self.early_stopping not in (True, False, "never"):
            problems.append(f"early_stopping={self.early_stopping!r} must be True, False or 'never'")
        if self.truncate not in ("error", "left"):
            problems.append(f"truncate={self.truncate!r} must be 'error' or 'left'")
        if any(not isinstance(s, str) or not s for s in self.stop):
            problems.append(f"stop={self.stop!r} must be non-empty strings")
        for name in ("pad_token_id", "bos_token_id"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 0):
                problems.append(f"{name}={value!r} must be a token id >= 0")
        if self.eos_token_id is not None and any(not _is_int(e) or e < 0 for e in self.eos_ids):
            problems.append(f"eos_token_id={self.eos_token_id!r} must be token ids >= 0")
        if problems:
            raise GenerationConfigError("invalid generation parameters: " + "; ".join(problems))

    @property
    def eos_ids(self) -> tuple[int, ...]:
        if self.eos_token_id is None:
            return ()
        return self.eos_token_id if isinstance(self.eos_token_id, tuple) else (self.eos_token_id,)

    @property
    def greedy(self) -> bool:
        """True when the next token is the argmax: no sampling, or temperature 0."""
        return not self.do_sample or self.temperature == 0

    @property
    def fill_id(self) -> int:
        """The id that pads rows which are done."""
        if self.pad_token_id is not None:
            return self.pad_token_id
        return self.eos_ids[0] if self.eos_ids else 0


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


FIELD_NAMES = tuple(f.name for f in fields(GenerationConfig))


def resolve_config(config: GenerationConfig | None, overrides: Mapping[str, Any]) -> GenerationConfig:
    """`config` (or the defaults) with keyword overrides; an unknown keyword names the closest valid one."""
    unknown = [k for k in overrides if k not in FIELD_NAMES]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, FIELD_NAMES, n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise GenerationConfigError(f"unknown generation parameter {', '.join(hints)}; valid: {', '.join(FIELD_NAMES)}")
    base = config if config is not None else GenerationConfig()
    return dataclasses.replace(base, **overrides) if overrides else base


@dataclass
class Generation:
    """One decoded continuation: its text, the token ids generated, their log-probs, and why it ended."""

    text: str
    token_ids: list[int]
    finish_reason: FinishReason
    logprobs: list[float] | None = None  # per token in token_ids, under the model before any processing
    prompt_tokens: int = 0  # prompt length after truncation (and the BOS an empty prompt gets)

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "token_ids": self.token_ids,
            "logprobs": self.logprobs,
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
        }
