"""Autoregressive decoding with a preallocated KV cache: greedy and sampling, ids in and ids or text out.

One call runs: prepare the prompt (left padding, truncation, an empty prompt's BOS) -> allocate the
cache for prompt + max_new_tokens once -> prefill -> one single-token forward per new token. Beam search
lives in beam.py and shares the preparation.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from lmforge.errors import UsageError
from lmforge.generation import sampling
from lmforge.generation.config import (
    FinishReason,
    Generation,
    GenerationConfig,
    GenerationConfigError,
    resolve_config,
)
from lmforge.generation.kv_cache import NextTokenLogits, allocate_cache, model_device_dtype
from lmforge.generation.text import TextStream, truncate_at_stop


class TextTokenizer(Protocol):
    """What generation needs from a tokenizer (lmforge.tokenizers.Tokenizer has it)."""

    eos_id: int | None
    bos_id: int | None
    pad_id: int | None

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]: ...

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str: ...


@dataclass
class Prompt:
    """A batch of prompts ready for the model: left-padded ids, and mask/positions when padded."""

    input_ids: Tensor  # (B, P) long, on the model's device
    attention_mask: Tensor | None  # (B, P), 1 = real token; None when no row is padded
    position_ids: Tensor | None  # (B, P): cumsum(mask) - 1 clamped at 0 (as transformers); None when unpadded
    lengths: list[int]  # real tokens per row

    @property
    def batch(self) -> int:
        return self.input_ids.shape[0]

    @property
    def width(self) -> int:
        return self.input_ids.shape[1]


@dataclass
class Step:
    """One decoding step: the token chosen per row (fill id for rows already done) and its log-prob."""

    tokens: Tensor  # (B,)
    logprobs: Tensor | None  # (B,), raw model log-probabilities, when GenerationConfig.logprobs


# --- checks and preparation ---------------------------------------------------------------------------
def check_causal_lm(model: nn.Module) -> None:
    cfg = getattr(model, "cfg", None)
    if cfg is None:
        raise UsageError(f"generation needs an lmforge model (see lmforge.load_model); got {type(model).__name__}")
    # a duck-typed model (forward returning .logits, a .cfg) counts as a language model
    head = getattr(getattr(model, "head_cfg", None), "kind", "lm")
    if cfg.family == "bert" or head != "lm":
        raise UsageError(
            f"generation needs a decoder with an LM head; this model has family={cfg.family!r}, "
            f"head={head!r}" + (": use fill_mask / `lmforge fill-mask` for BERT" if cfg.family == "bert" else "")
        )


def prepare_prompt(
    model: nn.Module,
    input_ids: Tensor | Sequence[int] | Sequence[Sequence[int]],
    attention_mask: Tensor | None,
    cfg: GenerationConfig,
) -> Prompt:
    """Validate and left-pad prompts, start empty ones from BOS/EOS, and fit them in the context."""
    device, _ = model_device_dtype(model)
    start_id = cfg.bos_token_id if cfg.bos_token_id is not None else (cfg.eos_ids[0] if cfg.eos_ids else None)
    if isinstance(input_ids, Tensor):
        ids = input_ids
        if ids.dim() == 1:
            ids = ids.unsqueeze(0)
            attention_mask = attention_mask.unsqueeze(0) if attention_mask is not None else None
        if ids.dim() != 2:
            raise GenerationConfigError(f"input_ids must be (batch, tokens); got shape {tuple(input_ids.shape)}")
        if ids.dtype not in (torch.long, torch.int32, torch.int64):
            raise GenerationConfigError(f"input_ids must hold integer token ids; got dtype {ids.dtype}")
        ids = ids.long()
        if ids.shape[1] == 0:
            rows: list[list[int]] = [[] for _ in range(ids.shape[0])]
            return prepare_prompt(model, rows, None, cfg)
        if attention_mask is None:
            mask = torch.ones_like(ids)
        else:
            if attention_mask.shape != ids.shape:
                raise GenerationConfigError(
                    f"attention_mask shape {tuple(attention_mask.shape)} differs from input_ids {tuple(ids.shape)}"
                )
            mask = attention_mask.long()
    else:
        rows = [list(input_ids)] if not input_ids or isinstance(input_ids[0], int) else [list(r) for r in input_ids]
        if not rows:
            raise GenerationConfigError("input_ids is an empty batch; give at least one prompt")
        if any(not r for r in rows):
            if start_id is None:
                raise GenerationConfigError(
                    "an empty prompt needs a start token: set bos_token_id or eos_token_id (the tokenizer has neither)"
                )
            rows = [r or [start_id] for r in rows]
        width = max(len(r) for r in rows)
        pad = cfg.fill_id
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], dtype=torch.long)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)

    vocab = model.cfg.vocab_size
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
        bad = int(ids.max()) if int(ids.max()) >= vocab else int(ids.min())
        raise GenerationConfigError(f"input_ids holds token id {bad}, outside the model's vocab_size={vocab}")
    if mask.shape[1] > 1 and bool((mask[:, 1:] < mask[:, :-1]).any()):
        raise GenerationConfigError(
            "attention_mask must be left-padded for generation (zeros only before the prompt); "
            "right padding would make the model continue after pad tokens"
        )
    lengths = mask.sum(1).tolist()
    if min(lengths) == 0:
        raise GenerationConfigError(f"prompt {lengths.index(0)} has no real token (its attention_mask is all 0)")

    ctx, new = model.cfg.max_seq_len, cfg.max_new_tokens
    budget = ctx - new
    if budget < 1:
        raise GenerationConfigError(
            f"max_new_tokens={new} leaves no room for a prompt in the model's context of {ctx} tokens "
            f"(model.max_seq_len); use max_new_tokens <= {ctx - 1}"
        )
    longest = max(lengths)
    if longest > budget:
        if cfg.truncate == "error":
            raise GenerationConfigError(
                f"prompt of {longest} tokens + max_new_tokens={new} exceeds the model's context of {ctx} tokens "
                f"(model.max_seq_len); shorten the prompt, lower max_new_tokens, or set truncate='left' "
                f"(--truncate left) to keep the last {budget} prompt tokens"
            )
        longest = budget
        lengths = [min(n, budget) for n in lengths]
    ids, mask = ids[:, ids.shape[1] - longest :], mask[:, mask.shape[1] - longest :]  # drop all-pad columns
    ids, mask = ids.to(device), mask.to(device)
    if all(n == longest for n in lengths):
        return Prompt(ids, None, None, lengths)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return Prompt(ids, mask, positions, lengths)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Dropout off while decoding; the model's training flag is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _generator(cfg: GenerationConfig, device: torch.device) -> torch.Generator | None:
    if cfg.seed is None or cfg.greedy:
        return None
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed)
    return gen


# --- the decoding loop ---------------------------------------------------------------------------------
def decode_steps(model: nn.Module, prompt: Prompt, cfg: GenerationConfig, done: Tensor | None = None) -> Iterator[Step]:
    """Yield one Step per new token, greedy or sampled, until max_new_tokens or every row is done.

    `done` (B,) bool is shared with the caller: rows that emit EOS are marked here, and the caller may
    mark more (a stop string) between steps; done rows get the fill id and the loop ends when all are.
    Without `done` and without EOS ids no row can end early, and the step skips that bookkeeping.
    """
    B, P = prompt.input_ids.shape
    N = cfg.max_new_tokens
    if N == 0:
        return
    device = prompt.input_ids.device
    cache = allocate_cache(model, B, P + N)
    mask_buf = positions = None
    if prompt.attention_mask is not None:
        # one (B, P + N) mask for the whole call; each step passes a view of its first cur_len columns
        mask_buf = torch.ones(B, P + N, dtype=torch.long, device=device)
        mask_buf[:, :P] = prompt.attention_mask
        positions = prompt.position_ids[:, -1:] + 1  # (B, 1), advanced in place
    eos = torch.tensor(cfg.eos_ids, device=device) if cfg.eos_ids else None
    fill = torch.tensor(cfg.fill_id, device=device)
    if done is None and eos is not None:
        done = torch.zeros(B, dtype=torch.bool, device=device)
    gen = _generator(cfg, device)
    seen = histories = None
    if cfg.repetition_penalty != 1.0:
        seen = torch.zeros(B, model.cfg.vocab_size, dtype=torch.bool, device=device)
        real = prompt.input_ids
        if prompt.attention_mask is not None:  # pads -> the last token, always real under left padding
            real = real.where(prompt.attention_mask.bool(), real[:, -1:])
        sampling.mark_seen(seen, real)
    if cfg.no_repeat_ngram_size:
        histories = [r[P - n :] for r, n in zip(prompt.input_ids.tolist(), prompt.lengths)]

    next_logits = NextTokenLogits(model)
    logits = next_logits(prompt.input_ids, prompt.attention_mask, prompt.position_ids, cache)  # (B, V)
    for t in range(N):
        scores = logits
        if seen is not None:
            scores = sampling.apply_repetition_penalty(scores, seen, cfg.repetition_penalty)
        if histories is not None:
            scores = sampling.block_ngram_repeats(scores, histories, cfg.no_repeat_ngram_size)
        if cfg.greedy:
            tokens = scores.argmax(-1)
        else:
            scores = sampling.apply_temperature(scores, cfg.temperature)
            scores = sampling.filter_top_k(scores, cfg.top_k)
            scores = sampling.filter_top_p(scores, cfg.top_p)
            scores = sampling.filter_min_p(scores, cfg.min_p)
            tokens = sampling.sample(scores, gen)
        if t and done is not None:  # rows done before this step only emit the fill id
            tokens = torch.where(done, fill, tokens)
        logprobs = None
        if cfg.logprobs:
            logprobs = torch.log_softmax(logits, -1).gather(1, tokens[:, None]).squeeze(1)
        yield Step(tokens, logprobs)
        if eos is not None:
            done |= torch.isin(tokens, eos)
        if t == N - 1 or (done is not None and bool(done.all())):
            return
        if seen is not None:
            sampling.mark_seen(seen, tokens[:, None])
        if histories is not None:
            for h, tok in zip(histories, tokens.tolist()):
                h.append(tok)
        mask = None
        if mask_buf is not None:
            mask = mask_buf[:, : P + t + 1]
        logits = next_logits(tokens[:, None], mask, positions, cache)
        if positions is not None:
            positions += 1


# --- public API ----------------------------------------------------------------------------------------
@torch.inference_mode()
def generate(
    model: nn.Module,
    input_ids: Tensor | Sequence[int] | Sequence[Sequence[int]],
    attention_mask: Tensor | None = None,
    *,
    config: GenerationConfig | None = None,
    **kwargs: Any,
) -> Tensor:
    """New token ids (B, new tokens) continuing `input_ids`; keyword arguments are GenerationConfig fields.

    Args:
        input_ids: (B, T) or (T,) ids, or lists of ids (lists of different lengths are left-padded).
        attention_mask: (B, T), 1 for real tokens; rows must be left-padded.

    Rows that finish early (EOS) are filled with pad_token_id; the width is the longest row's.
    """
    cfg = resolve_config(config, kwargs)
    check_causal_lm(model)
    with eval_mode(model):
        prompt = prepare_prompt(model, input_ids, attention_mask, cfg)
        if cfg.num_beams > 1:
            from lmforge.generation.beam import beam_search

            return beam_search(model, prompt, cfg).tokens
        device = prompt.input_ids.device
        out = torch.full((prompt.batch, cfg.max_new_tokens), cfg.fill_id, dtype=torch.long, device=device)
        n = 0
        for n, step in enumerate(decode_steps(model, prompt, cfg), start=1):
            out[:, n - 1] = step.tokens
        return out[:, :n]


def _text_config(tokenizer: TextTokenizer, config: GenerationConfig | None, kwargs: dict[str, Any]) -> GenerationConfig:
    """Fill EOS / pad / BOS from the tokenizer where the caller left them unset."""
    base = resolve_config(config, kwargs)
    defaults: dict[str, Any] = {}
    if base.eos_token_id is None and getattr(tokenizer, "eos_id", None) is not None:
        defaults["eos_token_id"] = tokenizer.eos_id
    if base.pad_token_id is None and getattr(tokenizer, "pad_id", None) is not None:
        defaults["pad_token_id"] = tokenizer.pad_id
    if base.bos_token_id is None and getattr(tokenizer, "bos_id", None) is not None:
        defaults["bos_token_id"] = tokenizer.bos_id
    return resolve_config(base, defaults)


class _TextRun:
    """Decodes a batch of text prompts; `events()` yields (row, text delta), then `results` holds each Generation."""

    def __init__(
        self, model: nn.Module, tokenizer: TextTokenizer, prompts: Sequence[str], cfg: GenerationConfig
    ) -> None:
        check_causal_lm(model)
        if not prompts or any(not isinstance(p, str) for p in prompts):
            raise GenerationConfigError("prompts must be a string or a non-empty list of strings")
        self.model, self.tokenizer = model, tokenizer
        self.cfg = resolve_config(cfg, {"logprobs": True})
        encoded = [tokenizer.encode(p, add_special_tokens=False) for p in prompts]
        self.prompt = prepare_prompt(model, encoded, None, self.cfg)  # every check before the first token
        self.results: list[Generation] = []

    def events(self) -> Iterator[tuple[int, str]]:
        cfg = self.cfg
        with torch.inference_mode(), eval_mode(self.model):
            prompt = self.prompt
            if cfg.num_beams > 1:
                yield from self._beam(prompt)
                return
            B = prompt.batch
            streams = [TextStream(self.tokenizer, cfg.stop) for _ in range(B)]
            ids: list[list[int]] = [[] for _ in range(B)]
            logprobs: list[list[float]] = [[] for _ in range(B)]
            reasons: list[FinishReason] = ["length"] * B
            eos = set(cfg.eos_ids)
            done = torch.zeros(B, dtype=torch.bool, device=prompt.input_ids.device)
            for step in decode_steps(self.model, prompt, cfg, done):
                finished = done.tolist()
                for b, (tok, lp) in enumerate(zip(step.tokens.tolist(), step.logprobs.tolist())):
                    if finished[b]:  # done before this step: EOS or a stop string
                        continue
                    ids[b].append(tok)
                    logprobs[b].append(lp)
                    if tok in eos:
                        reasons[b] = "eos"
                        done[b] = True
                        continue
                    delta = streams[b].add(tok)
                    if delta:
                        yield b, delta
                    if streams[b].stopped:
                        reasons[b] = "stop"
                        done[b] = True
            for b in range(B):
                delta = streams[b].finish()
                if delta:
                    yield b, delta
                self.results.append(
                    Generation(streams[b].text, ids[b], reasons[b], logprobs[b], prompt_tokens=prompt.lengths[b])
                )

    def _beam(self, prompt: Prompt) -> Iterator[tuple[int, str]]:
        from lmforge.generation.beam import beam_search

        res = beam_search(self.model, prompt, self.cfg)
        eos = set(self.cfg.eos_ids)
        for b in range(prompt.batch):
            n = int(res.lengths[b])
            ids = res.tokens[b, :n].tolist()
            lps = res.logprobs[b, :n].tolist()
            reason: FinishReason = "eos" if ids and ids[-1] in eos else "length"
            text_ids = ids[:-1] if reason == "eos" else ids
            text, stopped = truncate_at_stop(self.tokenizer.decode(text_ids, skip_special_tokens=True), self.cfg.stop)
            if stopped:
                reason = "stop"
            self.results.append(Generation(text, ids, reason, lps, prompt_tokens=prompt.lengths[b]))
            if text:
                yield b, text


def complete(
    model: nn.Module,
    tokenizer: TextTokenizer,
    prompts: str | Sequence[str],
    *,
    config: GenerationConfig | None = None,
    **kwargs: Any,
) -> list[Generation]:
    """Continue each prompt; one Generation (text, token ids, log-probs, finish reason) per prompt."""
    cfg = _text_config(tokenizer, config, kwargs)
    run = _TextRun(model, tokenizer, [prompts] if isinstance(prompts, str) else list(prompts), cfg)
    for _ in run.events():
        pass
    return run.results


def generate_text(
    model: nn.Module,
    tokenizer: TextTokenizer,
    prompts: str | Sequence[str],
    *,
    config: GenerationConfig | None = None,
    **kwargs: Any,
) -> str | list[str]:
    """The continuation of each prompt (without the prompt): a string for a string, a list for a list."""
    results = complete(model, tokenizer, prompts, config=config, **kwargs)
    texts = [g.text for g in results]
    return texts[0] if isinstance(prompts, str) else texts


def stream_text(
    model: nn.Module,
    tokenizer: TextTokenizer,
    prompt: str,
    *,
    config: GenerationConfig | None = None,
    **kwargs: Any,
) -> Iterator[str]:
    """Yield the continuation of one prompt as text deltas, as soon as each is final.

    A delta never ends inside a multi-byte character and never contains (part of) a stop string; the
    concatenated deltas equal generate_text's result for the same arguments and seed.
    """
    if not isinstance(prompt, str):
        raise GenerationConfigError("stream_text takes one prompt string; use generate_text for a batch")
    return iter(stream_generation(model, tokenizer, prompt, config=config, **kwargs))


class GenerationStream:
    """Iterate for text deltas; afterwards `.result` is the Generation (token ids, log-probs, finish reason)."""

    def __init__(self, run: _TextRun) -> None:
        self._run = run
        self.result: Generation | None = None

    def __iter__(self) -> Iterator[str]:
        for _, delta in self._run.events():
            yield delta
        self.result = self._run.results[0]


def stream_generation(
    model: nn.Module,
    tokenizer: TextTokenizer,
    prompt: str,
    *,
    config: GenerationConfig | None = None,
    **kwargs: Any,
) -> GenerationStream:
    """Like stream_text, but the returned object also gives the full Generation once iterated.

    Parameters, the prompt and the context are checked here, before the first token is decoded.
    """
    cfg = _text_config(tokenizer, config, kwargs)
    return GenerationStream(_TextRun(model, tokenizer, [prompt], cfg))
