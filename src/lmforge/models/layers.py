"""Layers shared by every family: attention (over SDPA, with masks and a KV cache), MLPs, norms, RoPE."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.weak import WeakIdKeyDictionary

from lmforge.config import ModelConfig


def activation(name: str) -> nn.Module:
    """The activation module for a config name."""
    return {
        "gelu": nn.GELU(),  # exact erf GELU (BERT)
        "gelu_tanh": nn.GELU(approximate="tanh"),  # GPT-2's "gelu_new"
        "relu": nn.ReLU(),
        "silu": nn.SiLU(),
    }[name]


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich 2019): no mean subtraction, no bias."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        # normalise in fp32 (a no-op cast for fp32 input): under bf16 the mean of squares loses too many
        # digits. F.rms_norm is one fused kernel for x * rsqrt(mean(x^2) + eps) * weight.
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).type_as(x)


def layer_norm(cfg: ModelConfig) -> nn.Module:
    if cfg.family == "modern":
        return RMSNorm(cfg.d_model, cfg.eps)
    return nn.LayerNorm(cfg.d_model, eps=cfg.eps, bias=cfg.bias)


class MLP(nn.Module):
    """Position-wise feed-forward: up, activation, down."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.up = nn.Linear(cfg.d_model, cfg.ff_dim, bias=cfg.bias)
        self.act = activation(cfg.act)
        self.down = nn.Linear(cfg.ff_dim, cfg.d_model, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.down(self.act(self.up(x))))


class SwiGLU(nn.Module):
    """Gated MLP (Shazeer 2020): down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate = nn.Linear(cfg.d_model, cfg.ff_dim, bias=cfg.bias)
        self.up = nn.Linear(cfg.d_model, cfg.ff_dim, bias=cfg.bias)
        self.down = nn.Linear(cfg.ff_dim, cfg.d_model, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.down(F.silu(self.gate(x)) * self.up(x)))


class Rotary(nn.Module):
    """Rotary position embedding (Su et al. 2021), half-split layout as in GPT-NeoX / Llama."""

    def __init__(self, head_dim: int, max_seq_len: int, theta: float) -> None:
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), inv_freq)  # (T, D/2)
        # not persistent: recomputed from the config, so checkpoints hold only learned weights
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: Tensor, positions: Tensor) -> Tensor:
        """Rotate x (B, H, T, D) by the angles of `positions` (B, T) or (T,)."""
        cos, sin = self.cos[positions], self.sin[positions]  # (B, T, D/2) or (T, D/2)
        if cos.dim() == 3:
            cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # broadcast over heads
        x1, x2 = x.float().chunk(2, dim=-1)
        out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
        return out.type_as(x)


@dataclass
class KVCache:
    """Preallocated keys and values of one layer: (B, H, T_max, D), filled up to `length`."""

    k: Tensor
    v: Tensor
    length: int = 0

    @classmethod
    def empty(cls, cfg: ModelConfig, batch: int, max_len: int, device: torch.device, dtype: torch.dtype) -> KVCache:
        shape = (batch, cfg.n_head, max_len, cfg.head_dim)
        return cls(torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype))

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v (B, H, T, D) after the cached ones; return views of everything cached so far."""
        T = k.shape[2]
        end = self.length + T
        if end > self.k.shape[2]:
            raise ValueError(f"KV cache holds {self.k.shape[2]} positions; {end} were asked for")
        self.k[:, :, self.length : end] = k
        self.v[:, :, self.length : end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def reorder(self, index: Tensor) -> None:
        """Select batch rows in place (beam search): row i becomes old row index[i]."""
        n = self.length  # only the filled positions: the rest of the buffer is garbage anyway
        self.k[:, :, :n] = self.k[:, :, :n].index_select(0, index)
        self.v[:, :, :n] = self.v[:, :, :n].index_select(0, index)


def build_attention_mask(
    key_padding: Tensor | None,
    T: int,
    S: int,
    causal: bool,
    band_width: int | None,
    device: torch.device,
) -> Tensor | None:
    """Boolean mask (B or 1, 1, T, S), True where a query may attend; None when SDPA can do without one.

    Queries are the last T of S positions (S > T while decoding with a cache). `key_padding` is (B, S)
    with 1 for real tokens. A query whose row would be empty (a left-pad token) keeps its own position,
    so softmax never sees an all-masked row (SDPA returns NaN there); its output is ignored anyway.
    """
    if key_padding is None and band_width is None and (not causal or T == S or T == 1):
        return None  # plain bidirectional, plain causal (is_causal) or a single query over its full past
    q_pos = torch.arange(S - T, S, device=device).unsqueeze(1)  # (T, 1)
    k_pos = torch.arange(S, device=device).unsqueeze(0)  # (1, S)
    allowed = torch.ones(T, S, dtype=torch.bool, device=device)
    if causal:
        allowed = allowed & (k_pos <= q_pos)
    if band_width is not None:
        allowed = allowed & (q_pos - k_pos < band_width)
    mask = allowed[None, None]  # (1, 1, T, S)
    if key_padding is not None:
        mask = mask & key_padding[:, None, None, :].bool()  # (B, 1, T, S)
        mask = mask | (k_pos == q_pos)[None, None]
    return mask


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection over F.scaled_dot_product_attention."""

    def __init__(self, cfg: ModelConfig, causal: bool, rotary: Rotary | None = None) -> None:
        super().__init__()
        self.n_head, self.causal, self.rotary = cfg.n_head, causal, rotary
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)
        self.out = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.attn_dropout = cfg.attn_dropout
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        cache: KVCache | None = None,
        positions: Tensor | None = None,
    ) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=-1)
        q, k, v = (t.view(B, T, self.n_head, -1).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        if self.rotary is not None:
            assert positions is not None, "the modern family passes positions for RoPE"
            q, k = self.rotary(q, positions), self.rotary(k, positions)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, H, S, D), S = cached + T
        S = k.shape[2]
        # a caller passing a mask folds causality into it; SDPA rejects mask + is_causal together
        is_causal = self.causal and mask is None and T == S and T > 1
        dropout = self.attn_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=dropout)
        return self.resid_dropout(self.out(y.transpose(1, 2).reshape(B, T, C)))


# --- single-token decoding --------------------------------------------------------------------------------
# Generation runs one token per row through the model for every new token. At batch 1 a small model's
# matmuls take microseconds, and nn.Module.__call__ plus the parameter lookups (~3 us per module) cost
# as much as the arithmetic: gpt-mini makes ~80 module calls per token. So decoder families build,
# once per generation call, plain closures over their tensors (`decoder()` in each family file) that
# compute exactly what `forward` computes for T = 1, without module calls, dropout or attention maps.
# tests/unit/test_generate.py checks them against `forward`. Hooks do not run inside closures, so generation
# falls back to `forward` for a model with forward hooks (generation/kv_cache.py).

TensorFn = Callable[[Tensor], Tensor]


def plain(module: nn.Module) -> TensorFn:
    """`module`'s eval-mode forward on 2-D input (rows, features) as a closure over its tensors.

    Known: Linear, LayerNorm, RMSNorm, the activations, MLP and SwiGLU. Anything else (an int8 dynamically
    quantized linear, a user's replacement, a module with hooks) is returned as it is, so the fast path stays
    correct.
    """
    kind = type(module)
    if module._forward_hooks or module._forward_pre_hooks:  # a closure would skip them
        return module
    if kind is nn.Linear:
        w, b = module.weight, module.bias
        if w.dtype == torch.float32 and w.device.type == "cpu" and w.numel() >= 1 << 20:
            # x is (rows, features) here. With a few rows, MKL's fp32 GEMM for x @ W^T repacks all of W on every
            # call; for a W larger than the L2 cache (>= 4 MB) (W @ x^T)^T streams it once: 25-35% faster at 8
            # rows for GPT-2 124M's matrices (measured with torch 2.13; smaller matrices and bf16 are faster the
            # F.linear way)
            if b is None:
                return lambda x: (w @ x.T).T
            bias = b[:, None]
            return lambda x: torch.addmm(bias, w, x.T).T
        if w.dtype == torch.bfloat16 and w.device.type == "cpu" and (packed := _onednn_packed(w)) is not None:
            return lambda x: torch.ops.mkldnn._linear_pointwise(x, packed, b, "none", [], "")
        return lambda x: F.linear(x, w, b)
    if kind is nn.LayerNorm:
        shape, w, b, eps = module.normalized_shape, module.weight, module.bias, module.eps
        return lambda x: F.layer_norm(x, shape, w, b, eps)
    if kind is RMSNorm:
        w, eps = module.weight, module.eps
        return lambda x: F.rms_norm(x.float(), (x.shape[-1],), w.float(), eps).type_as(x)
    if kind is nn.GELU:
        approximate = module.approximate
        return lambda x: F.gelu(x, approximate=approximate)
    if kind in (nn.ReLU, nn.SiLU):
        return F.relu if kind is nn.ReLU else F.silu
    if kind is MLP:
        up, act, down = plain(module.up), plain(module.act), plain(module.down)
        return lambda x: down(act(up(x)))
    if kind is SwiGLU:
        gate, up, down = plain(module.gate), plain(module.up), plain(module.down)
        return lambda x: down(F.silu(gate(x)) * up(x))
    return module


_PACKED = WeakIdKeyDictionary()  # weight -> (data_ptr, version, oneDNN-blocked copy); dropped with the weight


def _onednn_packed(w: Tensor) -> Tensor | None:
    """`w` reordered once into oneDNN's blocked layout for bf16 matmuls with a few rows, or None where unsupported.

    On CPUs without AMX, bf16 F.linear with one row re-lays out W on every call and runs at half the fp32
    speed; the pre-packed weight (the op torch.compile's CPU backend uses) decodes gpt-mini 1.4x faster.
    The copy is kept for as long as the weight lives, so repeated generate calls pay the reorder once; it
    costs the weight's size in memory. It is redone when the weight changes through its data pointer or
    in-place version counter (optimizer steps, load_state_dict, .to()). Writes through `weight.data` bypass
    the version counter: call `clear_packed_weights()` after them. Inference tensors have no version counter
    and are not packed. torch.ops.mkldnn._linear_pointwise is private (torch.compile's CPU backend uses it),
    so any failure to pack falls back to F.linear; it can go when bf16 F.linear is as fast for a few rows.
    """
    if w.is_inference() or not (
        hasattr(torch.ops.mkldnn, "_linear_pointwise") and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    ):
        return None
    key = (w.data_ptr(), w._version)
    cached = _PACKED.get(w)
    if cached is not None and cached[0] == key:
        return cached[1]
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(w.detach(), 1)
    except RuntimeError:  # a torch build without oneDNN bf16: F.linear it is
        return None
    _PACKED[w] = (key, packed)
    return packed


def clear_packed_weights() -> None:
    """Drop every cached oneDNN copy of a bf16 weight (after editing weights through `.data`; frees memory)."""
    _PACKED.clear()


AttendFn = Callable[[Tensor, "Tensor | None", KVCache, Tensor], Tensor]


def attention_decoder(attn: Attention) -> AttendFn:
    """`attn` for one new token per row: f(x (B, C), mask (B, 1, 1, S) | None, cache, positions) -> (B, C)."""
    qkv, out, rotary, H = plain(attn.qkv), plain(attn.out), attn.rotary, attn.n_head

    def attend(x: Tensor, mask: Tensor | None, cache: KVCache, positions: Tensor) -> Tensor:
        B, C = x.shape
        q, k, v = qkv(x).reshape(B, 3, H, 1, -1).unbind(1)  # each (B, H, 1, D)
        if rotary is not None:
            q, k = rotary(q, positions), rotary(k, positions)
        k, v = cache.append(k, v)  # (B, H, S, D)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # one query: no causal mask needed
        return out(y.view(B, C))

    return attend
