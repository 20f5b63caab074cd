"""int8 dynamic quantization for CPU inference: int8 weights for every nn.Linear, activations quantized per call."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from lmforge.errors import UsageError
from lmforge.generation.kv_cache import model_device_dtype


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy-free int8 version of an fp32 CPU model (torch.ao.quantization.quantize_dynamic, qint8 weights).

    Pays off where weight reads dominate decoding (gpt-mini and larger: 1.6-2.3x on 2 CPU cores, perplexity
    within 0.4%; benchmarks/RESULTS.md); a 4 x 128 model is too small to gain. The model is modified in place.
    """
    device, dtype = model_device_dtype(model)
    if device.type != "cpu" or dtype != torch.float32:
        raise UsageError(
            f"int8 dynamic quantization needs an fp32 model on the CPU; this one is {dtype} on {device} "
            "(use --dtype float32 --device cpu with --quantize int8)"
        )
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao; it still works here
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)
