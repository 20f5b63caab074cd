"""int8 dynamic quantization for CPU inference: int8 weights for every nn.Linear, activations quantized per call."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from lmforge.errors import UsageError
from lmforge.generation.kv_cache import model_device_dtype


def quantize_int8(model: nn.Module) -> nn.Module:
    """`model` with every nn.Linear swapped for an int8 one (torch.ao.quantization.quantize_dynamic, qint8).

    Pays off where weight reads dominate decoding: GPT-2 124M decodes 2.8-3.1x faster on 2 CPU cores,
    gpt-mini 1.2-1.5x, a 4 x 128 model not at all; perplexity moves by less than 0.4% (benchmarks/RESULTS.md).
    The linear layers are replaced in place (their int8 weights are new tensors).
    """
    device, dtype = model_device_dtype(model)
    if device.type != "cpu" or dtype != torch.float32:
        raise UsageError(
            f"int8 dynamic quantization needs an fp32 model on the CPU; this one is {dtype} on {device} "
            "(use --dtype float32 --device cpu with --quantize int8)"
        )
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao (and the deprecation of quantized tensor creation);
        # both still work in torch 2.13. Move to torchao's int8 API once torchao is a dependency.
        warnings.filterwarnings("ignore", message="torch.ao.quantization is deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="torch.quantize_per_tensor", category=UserWarning)
        return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)
