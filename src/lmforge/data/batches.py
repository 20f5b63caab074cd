"""Training batches over token shards: CLM windows (random or packed-sequential) and MLM with 80/10/10 masking.

Every batch is a pure function of (seed, step, rank): a sampler's whole state is its step counter, so
`state_dict()` is a tiny JSON dict and a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from lmforge.data.shards import TokenShards
from lmforge.errors import DataError

IGNORE_INDEX = -100  # labels the loss skips (torch.nn.functional.cross_entropy's default ignore_index)


def _step_rng(seed: int, step: int, *extra: int) -> np.random.Generator:
    return np.random.default_rng([seed, step, *extra])


class _StepSampler:
    """Shared state handling: the step counter plus the settings that must match on resume."""

    kind = "sampler"
    step: int

    def _fixed(self) -> dict[str, Any]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: the next step and the settings it is only valid with."""
        return {"kind": self.kind, "step": self.step, **self._fixed()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mismatched = {k: (state[k], v) for k, v in self._fixed().items() if k in state and state[k] != v}
        if mismatched:
            details = ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in mismatched.items())
            raise DataError(f"cannot resume the {self.kind} sampler: its settings changed ({details})")
        self.step = int(state["step"])


class CLMBatches(_StepSampler):
    """Causal-LM batches: (B, T) windows of the token stream and the same windows shifted by one as labels.

    mode="random": each row starts at a position drawn from (seed, step); rank r of `world_size` takes rows
    [r*B, (r+1)*B) of the global batch, so ranks never draw the same window at a step.
    mode="sequential": the stream is cut into windows of T (+1 label token) that are visited in a seeded
    permutation, so each token is an input exactly once per epoch; documents stay packed, separated by EOS.
    """

    kind = "clm"

    def __init__(
        self,
        shards: TokenShards,
        seq_len: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        mode: Literal["random", "sequential"] = "random",
    ) -> None:
        if mode not in ("random", "sequential"):
            raise DataError(f"CLM sampling mode {mode!r} is unknown; use 'random' or 'sequential'")
        if not 0 <= rank < world_size:
            raise DataError(f"rank={rank} is outside world_size={world_size}")
        if len(shards) < seq_len + 1:
            raise DataError(
                f"{shards.out_dir}: split {shards.split!r} has {len(shards):,} tokens, fewer than seq_len + 1 = "
                f"{seq_len + 1}; lower data.seq_len or add data"
            )
        self.shards, self.seq_len, self.batch_size, self.seed = shards, seq_len, batch_size, seed
        self.rank, self.world_size, self.mode = rank, world_size, mode
        self.step = 0
        self.windows_per_epoch = (len(shards) - 1) // seq_len
        self._perm_epoch, self._perm = -1, np.zeros(0, dtype=np.int64)

    def _fixed(self) -> dict[str, Any]:
        return {"seed": self.seed, "seq_len": self.seq_len, "mode": self.mode}

    @property
    def epoch(self) -> float:
        """Epochs covered so far (sequential mode counts windows; random mode counts tokens drawn)."""
        seen = self.step * self.batch_size * self.world_size
        return seen / self.windows_per_epoch

    def _starts(self, step: int) -> np.ndarray:
        B, T = self.batch_size, self.seq_len
        if self.mode == "random":
            starts = _step_rng(self.seed, step).integers(0, len(self.shards) - T, size=B * self.world_size)
            return starts[self.rank * B : (self.rank + 1) * B]
        g = step * B * self.world_size + self.rank * B + np.arange(B)  # global window numbers
        out = np.empty(B, dtype=np.int64)
        for i, gi in enumerate(g):
            epoch, k = divmod(int(gi), self.windows_per_epoch)
            out[i] = self._permutation(epoch)[k] * T
        return out

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch, 7]).permutation(self.windows_per_epoch)
            self._perm_epoch = epoch
        return self._perm

    def next_batch(self) -> dict[str, torch.Tensor]:
        """{"input_ids": (B, T) long, "labels": (B, T) long}: labels[t] is the token after input_ids[t]."""
        T = self.seq_len
        rows = np.stack([self.shards.slice(int(s), int(s) + T + 1) for s in self._starts(self.step)])
        self.step += 1
        return {
            "input_ids": torch.from_numpy(np.ascontiguousarray(rows[:, :-1])),
            "labels": torch.from_numpy(np.ascontiguousarray(rows[:, 1:])),
        }

    def __iter__(self) -> CLMBatches:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        return self.next_batch()


def mask_tokens(
    input_ids: torch.Tensor,
    special_ids: Sequence[int],
    mask_id: int,
    vocab_size: int,
    generator: torch.Generator,
    mlm_probability: float = 0.15,
    mask_rate: float = 0.8,
    random_rate: float = 0.1,
    word_starts: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's MLM corruption (Devlin et al. 2018, 3.1): select, then 80% [MASK] / 10% random / 10% kept.

    Args:
        input_ids: (B, T) ids; not modified (a corrupted copy is returned).
        special_ids: ids never selected ([CLS], [SEP], [PAD], ...).
        generator: all randomness comes from it, so a seeded generator makes the result deterministic.
        word_starts: (B, T) bool for whole-word masking: True where a word begins; a selected word has all
            of its pieces selected. None selects tokens independently.
    Returns:
        (corrupted ids, labels): labels hold the original id where a token was selected, -100 elsewhere.
    """
    ids = input_ids.clone()
    special = torch.isin(ids, torch.as_tensor(list(special_ids), dtype=ids.dtype))
    draw = torch.rand(ids.shape, generator=generator)
    if word_starts is None:
        selected = (draw < mlm_probability) & ~special
    else:
        starts = word_starts.bool() | special  # a special token also ends the previous word
        word = torch.cumsum(starts.long(), dim=1) - 1  # (B, T) word number within the row
        word = word.clamp(min=0)  # pieces before the row's first word start join word 0
        start_pick = (draw < mlm_probability) & starts  # one draw per word, taken at its first piece
        chosen = torch.zeros(ids.shape, dtype=torch.long).scatter_add_(1, word, start_pick.long()) > 0  # (B, words)
        selected = chosen.gather(1, word) & ~special
    labels = torch.where(selected, ids, torch.full_like(ids, IGNORE_INDEX))
    action = torch.rand(ids.shape, generator=generator)
    to_mask = selected & (action < mask_rate)
    to_random = selected & (action >= mask_rate) & (action < mask_rate + random_rate)
    ids[to_mask] = mask_id
    n_random = int(to_random.sum())
    if n_random:
        ids[to_random] = _random_ordinary_ids(n_random, vocab_size, special_ids, generator).to(ids.dtype)
    return ids, labels


def _random_ordinary_ids(
    n: int, vocab_size: int, special_ids: Sequence[int], generator: torch.Generator
) -> torch.Tensor:
    """n ids drawn uniformly from the vocabulary without the special tokens."""
    special = torch.as_tensor(sorted(set(special_ids)), dtype=torch.long)
    pool_size = vocab_size - int((special < vocab_size).sum())
    r = torch.randint(0, pool_size, (n,), generator=generator)
    # shift each draw past the special ids at or below it: maps [0, pool) onto the ordinary ids in order
    for s in special.tolist():
        r = r + (r >= s).long()
    return r


class MLMBatches(_StepSampler):
    """Masked-LM batches: windows of seq_len - 2 stream tokens wrapped in [CLS] ... [SEP], then masked.

    Window positions come from (seed, step), masking randomness from a torch.Generator seeded by
    (seed, step, rank): a batch is the same whenever it is drawn.
    """

    kind = "mlm"

    def __init__(
        self,
        shards: TokenShards,
        tokenizer: Any,
        seq_len: int,
        batch_size: int,
        seed: int,
        mlm_probability: float = 0.15,
        whole_word_mask: bool = False,
        rank: int = 0,
        world_size: int = 1,
        mask_rate: float = 0.8,
        random_rate: float = 0.1,
    ) -> None:
        missing = [n for n in ("cls_id", "sep_id", "mask_id") if getattr(tokenizer, n) is None]
        if missing:
            raise DataError(
                f"MLM needs a tokenizer with [CLS], [SEP] and [MASK]; this {tokenizer.kind} one lacks "
                f"{', '.join(m[:-3] for m in missing)} (train a wordpiece tokenizer)"
            )
        if not 0 <= rank < world_size:
            raise DataError(f"rank={rank} is outside world_size={world_size}")
        if len(shards) < seq_len - 2:
            raise DataError(
                f"{shards.out_dir}: split {shards.split!r} has {len(shards):,} tokens, fewer than seq_len - 2 = "
                f"{seq_len - 2}; lower data.seq_len or add data"
            )
        self.shards, self.tokenizer = shards, tokenizer
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed
        self.mlm_probability, self.mask_rate, self.random_rate = mlm_probability, mask_rate, random_rate
        self.whole_word_mask = whole_word_mask
        self.rank, self.world_size = rank, world_size
        self.step = 0
        self.special_ids = tokenizer.special_ids
        self._continuation = torch.tensor(tokenizer.continuation_mask(), dtype=torch.bool) if whole_word_mask else None

    def _fixed(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "seq_len": self.seq_len,
            "mlm_probability": self.mlm_probability,
            "whole_word_mask": self.whole_word_mask,
        }

    def next_batch(self) -> dict[str, torch.Tensor]:
        """{"input_ids", "labels" (-100 where not selected), "attention_mask"}, each (B, T)."""
        B, L = self.batch_size, self.seq_len - 2
        starts = _step_rng(self.seed, self.step).integers(0, len(self.shards) - L + 1, size=B * self.world_size)
        starts = starts[self.rank * B : (self.rank + 1) * B]
        body = torch.from_numpy(np.stack([self.shards.slice(int(s), int(s) + L) for s in starts]))
        cls = torch.full((B, 1), self.tokenizer.cls_id, dtype=torch.long)
        sep = torch.full((B, 1), self.tokenizer.sep_id, dtype=torch.long)
        ids = torch.cat([cls, body, sep], dim=1)  # (B, T)
        gen = torch.Generator().manual_seed(int(_step_rng(self.seed, self.step, self.rank, 1).integers(2**62)))
        word_starts = ~self._continuation[ids] if self._continuation is not None else None
        masked, labels = mask_tokens(
            ids,
            self.special_ids,
            self.tokenizer.mask_id,
            self.tokenizer.vocab_size,
            gen,
            self.mlm_probability,
            self.mask_rate,
            self.random_rate,
            word_starts=word_starts,
        )
        self.step += 1
        return {"input_ids": masked, "labels": labels, "attention_mask": torch.ones_like(ids)}

    def __iter__(self) -> MLMBatches:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        return self.next_batch()
