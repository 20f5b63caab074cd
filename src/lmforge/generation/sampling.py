"""Pure functions from logits (B, V) to the next tokens: the processors and warpers of every sampler.

Each filter returns new logits with the removed tokens at -inf, so they compose in any order; the order
`generate` uses is the one transformers uses (repetition penalty, no-repeat n-gram, then temperature,
top-k, top-p, min-p), so seeded runs of both libraries see the same distribution.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

NEG_INF = float("-inf")


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    """logits / temperature; temperature 0 is greedy and is handled by the caller."""
    return logits if temperature == 1.0 else logits / temperature


def filter_top_k(logits: Tensor, k: int) -> Tensor:
    """Keep the k largest logits per row (ties with the k-th are kept too); k=0 keeps all."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, NEG_INF)


def filter_top_p(logits: Tensor, p: float) -> Tensor:
    """Nucleus filter (Holtzman et al. 2019): keep the most likely tokens until their mass reaches p.

    As in transformers: a token is removed when the mass of all tokens *less* likely than it, itself
    included, is <= 1 - p; the most likely token always stays.
    """
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=False)
    cum = sorted_logits.softmax(-1).cumsum(-1)  # mass of this token and every less likely one
    remove_sorted = cum <= (1.0 - p)
    remove_sorted[..., -1] = False
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, NEG_INF)


def filter_min_p(logits: Tensor, min_p: float) -> Tensor:
    """Min-p (Nguyen et al. 2024): drop tokens with p < min_p * p_max; the most likely token stays."""
    if min_p <= 0.0:
        return logits
    probs = logits.softmax(-1)
    threshold = min_p * probs.amax(-1, keepdim=True)
    remove = probs < threshold
    remove.scatter_(-1, probs.argmax(-1, keepdim=True), False)
    return logits.masked_fill(remove, NEG_INF)


def apply_repetition_penalty(logits: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """CTRL's penalty (Keskar et al. 2019) on tokens already in the sequence, once per token.

    `seen` (B, V) is True for token ids that occurred. Positive logits are divided by the penalty and
    negative ones multiplied, so a penalty > 1 always makes a seen token less likely.
    """
    if penalty == 1.0:
        return logits
    penalized = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalized, logits)


def mark_seen(seen: Tensor, token_ids: Tensor) -> None:
    """Set seen[b, token_ids[b, j]] = True in place; token_ids (B, T)."""
    seen.scatter_(1, token_ids, True)


def banned_ngram_tokens(tokens: Sequence[int], n: int) -> list[int]:
    """Tokens that would complete an n-gram already present in `tokens` (the no-repeat n-gram rule)."""
    if n <= 0 or len(tokens) + 1 < n:
        return []
    if n == 1:
        return sorted(set(tokens))
    suffix = tuple(tokens[len(tokens) - n + 1 :])
    banned = set()
    for i in range(len(tokens) - n + 1):
        if tuple(tokens[i : i + n - 1]) == suffix:
            banned.add(tokens[i + n - 1])
    return sorted(banned)


def block_ngram_repeats(logits: Tensor, sequences: Sequence[Sequence[int]], n: int) -> Tensor:
    """Set to -inf, per row, every token that would repeat an n-gram of that row's sequence."""
    if n <= 0:
        return logits
    rows, cols = [], []
    for b, seq in enumerate(sequences):
        banned = banned_ngram_tokens(seq, n)
        rows += [b] * len(banned)
        cols += banned
    if not rows:
        return logits
    logits = logits.clone()
    logits[rows, cols] = NEG_INF
    return logits


def sample(logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Draw one token per row from softmax(logits); (B, V) -> (B,)."""
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)
