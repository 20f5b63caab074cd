"""lmforge: transformer language models from BERT to GPT-3.

The Python API is part of the contract::

    model = lmforge.load_model("runs/my-gpt")          # a run directory, an lmforge export or an HF checkpoint dir
    tok = lmforge.load_tokenizer("runs/my-gpt")
    new_ids = lmforge.generate(model, input_ids, max_new_tokens=32)
    texts = lmforge.generate_text(model, tok, ["def fib(n):"], max_new_tokens=64)
"""

from __future__ import annotations

from typing import Any

from lmforge.errors import CheckpointError, ConfigError, DataError, LmforgeError, UsageError

__version__ = "0.1.0"


def load_model(path: Any, **kwargs: Any) -> Any:
    """Load a model from a run directory, an lmforge export or a Hugging Face checkpoint directory."""
    from lmforge.checkpoint.io import load_model as _load

    return _load(path, **kwargs)


def load_backbone(path: Any, head: Any, **kwargs: Any) -> Any:
    """A pretrained backbone with a new head (a HeadConfig, or "sequence"/"token"/...), for fine-tuning.

    Returns a BackboneLoad: `.model` (the TaskModel), `.new`, `.reused` and `.dropped` weight names.
    """
    from lmforge.checkpoint.io import load_backbone as _load
    from lmforge.config import HeadConfig

    return _load(path, HeadConfig(kind=head) if isinstance(head, str) else head, **kwargs)


def load_tokenizer(path: Any) -> Any:
    """Load the tokenizer of a run directory, an lmforge export, an HF checkpoint dir or a tokenizer file."""
    from lmforge.tokenizers import load_tokenizer as _load

    return _load(path)


def generate(model: Any, input_ids: Any, **kwargs: Any) -> Any:
    """New token ids (B, new tokens) decoded from `input_ids`; see lmforge.generation.generate."""
    from lmforge.generation import generate as _generate

    return _generate(model, input_ids, **kwargs)


def generate_text(model: Any, tokenizer: Any, prompts: Any, **kwargs: Any) -> Any:
    """Decoded continuations of `prompts` (a string or a list of strings)."""
    from lmforge.generation import generate_text as _generate_text

    return _generate_text(model, tokenizer, prompts, **kwargs)


def stream_text(model: Any, tokenizer: Any, prompt: str, **kwargs: Any) -> Any:
    """Yield text deltas of one continuation as they are decoded."""
    from lmforge.generation import stream_text as _stream_text

    return _stream_text(model, tokenizer, prompt, **kwargs)


__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "LmforgeError",
    "UsageError",
    "generate",
    "generate_text",
    "load_backbone",
    "load_model",
    "load_tokenizer",
    "stream_text",
]
