"""Beam search, step for step the vectorised algorithm of transformers (>= 4.50, `GenerationMixin._beam_search`).

Per batch row there are `num_beams` running hypotheses and `num_beams` finished ones. Each step:
  1. log_softmax the next-token logits, apply the processors, add each beam's running score;
  2. keep the top (1 + n_eos, at least 2) * num_beams continuations over all beams x vocabulary;
  3. those that end (EOS, or max_new_tokens reached) among the first num_beams enter the finished
     set with score sum(log p) / length**length_penalty; the best num_beams others keep running;
  4. the KV cache rows are reordered in place to follow the beams that continue.
It stops when no running beam can beat the worst finished one (the early-stopping heuristic), when every
row has num_beams finished hypotheses and early_stopping=True, or at max_new_tokens. Matching transformers
detail for detail (the -1e9 sentinels, the length used in the penalty, which candidates may finish)
is what makes the outputs equal token for token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lmforge.generation import sampling
from lmforge.generation.config import GenerationConfig
from lmforge.generation.generate import Prompt
from lmforge.generation.kv_cache import NextTokenLogits, allocate_cache, reorder_cache

NEG = -1.0e9  # transformers' sentinel for "not a candidate"; finite so sums stay ordered


@dataclass
class BeamResult:
    """The best finished hypothesis of each row."""

    tokens: Tensor  # (B, n): new tokens, the fill id after a row's end; n = the longest row
    lengths: Tensor  # (B,) new tokens of each row's hypothesis (its EOS included)
    scores: Tensor  # (B,) sum of log-probs / length**length_penalty
    logprobs: Tensor | None  # (B, n) raw model log-prob of each token, when GenerationConfig.logprobs


def _gather(t: Tensor, index: Tensor) -> Tensor:
    """t[b, index[b, j], ...] for t (B, K, ...) and index (B, J)."""
    while index.dim() < t.dim():
        index = index.unsqueeze(-1)
    return torch.take_along_dim(t, index, dim=1)


def beam_search(model: nn.Module, prompt: Prompt, cfg: GenerationConfig) -> BeamResult:
    """Beam search over `prompt` (B rows) with cfg.num_beams beams; see the module docstring."""
    B, P = prompt.input_ids.shape
    K, N = cfg.num_beams, cfg.max_new_tokens
    device = prompt.input_ids.device
    if N == 0:
        empty = torch.zeros(B, 0, dtype=torch.long, device=device)
        return BeamResult(empty, torch.zeros(B, dtype=torch.long), torch.zeros(B), empty.float())
    V = model.cfg.vocab_size
    eos = torch.tensor(cfg.eos_ids, device=device) if cfg.eos_ids else None
    keep = max(2, 1 + len(cfg.eos_ids)) * K
    top_k_mask = torch.arange(keep, device=device) < K  # only the best K candidates may finish

    running_seq = torch.full((B, K, N), cfg.fill_id, dtype=torch.long, device=device)
    finished_seq = running_seq.clone()
    running_lp = torch.zeros(B, K, N, device=device)  # per-token raw log-probs, follow the beams
    finished_lp = running_lp.clone()
    running_idx = torch.full((B, K, N), -1, dtype=torch.long, device=device)  # flat source beam per step
    finished_idx = running_idx.clone()
    running_scores = torch.zeros(B, K, device=device)
    running_scores[:, 1:] = NEG  # all beams start equal: let only the first one expand at step 0
    finished_scores = torch.full((B, K), NEG, device=device)
    is_finished = torch.zeros(B, K, dtype=torch.bool, device=device)
    improvable = torch.ones(B, 1, dtype=torch.bool, device=device)
    batch_offset = torch.arange(B, device=device).view(B, 1) * K

    ids = prompt.input_ids.repeat_interleave(K, 0)  # (B*K, P)
    mask = prompt.attention_mask.repeat_interleave(K, 0) if prompt.attention_mask is not None else None
    positions0 = prompt.position_ids.repeat_interleave(K, 0) if prompt.position_ids is not None else None
    cache = allocate_cache(model, B * K, P + N)
    mask_buf = positions = None
    if mask is not None:
        mask_buf = torch.ones(B * K, P + N, dtype=torch.long, device=device)
        mask_buf[:, :P] = mask
        positions = positions0[:, -1:] + 1
    prompt_rows = [r[P - n :] for r, n in zip(prompt.input_ids.tolist(), prompt.lengths)]
    seen = None
    if cfg.repetition_penalty != 1.0:
        seen = torch.zeros(B * K, V, dtype=torch.bool, device=device)
        real = ids if mask is None else ids.where(mask.bool(), ids[:, -1:])
        sampling.mark_seen(seen, real)

    next_logits = NextTokenLogits(model)
    logits = next_logits(ids, mask, positions0, cache)
    for t in range(N):
        log_probs = torch.log_softmax(logits, -1)  # (B*K, V)
        scores = log_probs
        if seen is not None:
            scores = sampling.apply_repetition_penalty(scores, seen, cfg.repetition_penalty)
        if cfg.no_repeat_ngram_size:
            gen = running_seq[:, :, :t].reshape(B * K, t).tolist()
            histories = [prompt_rows[i // K] + gen[i] for i in range(B * K)]
            scores = sampling.block_ngram_repeats(scores, histories, cfg.no_repeat_ngram_size)
        acc = (scores.view(B, K, V) + running_scores[:, :, None]).view(B, K * V)

        # the top `keep` continuations over all beams and tokens
        cand_scores, cand = torch.topk(acc, keep)  # (B, keep)
        cand_beam, cand_tok = cand // V, cand % V
        cand_seq = _gather(running_seq, cand_beam)
        cand_seq[:, :, t] = cand_tok
        cand_idx = _gather(running_idx, cand_beam)
        cand_idx[:, :, t] = cand_beam + batch_offset
        cand_lp = _gather(running_lp, cand_beam)
        cand_lp[:, :, t] = log_probs.view(B, K * V).gather(1, cand)
        hits = torch.full_like(cand_tok, t + 1 >= N, dtype=torch.bool)  # the last step ends every hypothesis
        if eos is not None:
            hits |= torch.isin(cand_tok, eos)

        # the best K unfinished candidates keep running
        cont_scores = cand_scores + hits.float() * NEG
        nxt = torch.topk(cont_scores, K).indices
        running_seq, running_scores = _gather(cand_seq, nxt), _gather(cont_scores, nxt)
        running_idx, running_lp = _gather(cand_idx, nxt), _gather(cand_lp, nxt)

        # finished candidates among the top K join the finished set if they beat its worst
        just_finished = hits & top_k_mask[None, :]
        fin = cand_scores / ((t + 1) ** cfg.length_penalty)
        fin = fin + (is_finished.all(-1, keepdim=True) & (cfg.early_stopping is True)).float() * NEG
        fin = fin + (~improvable).float() * NEG
        fin = fin + (~just_finished) * NEG
        best = torch.topk(torch.cat((finished_scores, fin), 1), K).indices
        finished_seq = _gather(torch.cat((finished_seq, cand_seq), 1), best)
        finished_scores = _gather(torch.cat((finished_scores, fin), 1), best)
        finished_idx = _gather(torch.cat((finished_idx, cand_idx), 1), best)
        finished_lp = _gather(torch.cat((finished_lp, cand_lp), 1), best)
        is_finished = _gather(torch.cat((is_finished, just_finished), 1), best)

        # can a running beam still beat the worst finished one? (transformers' heuristic)
        length = N if cfg.early_stopping == "never" and cfg.length_penalty > 0.0 else t + 1
        best_running = running_scores[:, :1] / (length**cfg.length_penalty)
        worst_finished = torch.where(is_finished, finished_scores.min(1, keepdim=True).values, -1.0e9)
        improvable = improvable & (best_running > worst_finished).any(-1, keepdim=True)
        go_on = bool(improvable.any()) and not (cfg.early_stopping is True and bool(is_finished.all()))
        if not go_on or bool(hits.all()) or t == N - 1:
            break

        beam_index = running_idx[:, :, t].reshape(B * K)
        reorder_cache(cache, beam_index)
        tokens = running_seq[:, :, t].reshape(B * K, 1)
        if seen is not None:
            seen = seen.index_select(0, beam_index)
            sampling.mark_seen(seen, tokens)
        step_mask = mask_buf[:, : P + t + 1] if mask_buf is not None else None
        logits = next_logits(tokens, step_mask, positions, cache)
        if positions is not None:
            positions += 1

    lengths = (finished_idx[:, 0] >= 0).sum(-1)  # (B,)
    n = int(lengths.max())
    logprobs = finished_lp[:, 0, :n] if cfg.logprobs else None
    return BeamResult(finished_seq[:, 0, :n], lengths, finished_scores[:, 0], logprobs)
