"""Text generation for GPT-family models (KV-cached greedy / sampling / beam search, streaming) and BERT fill-mask.

new_ids = generate(model, input_ids, max_new_tokens=32, do_sample=True, top_p=0.9, seed=0)   # (B, new)
texts = generate_text(model, tokenizer, ["Once upon", "The"], max_new_tokens=64, stop=["\\n\\n"])
for delta in stream_text(model, tokenizer, "Once upon", max_new_tokens=64): print(delta, end="")
preds = fill_mask(bert, tokenizer, "Paris is the [MASK] of France.", top_k=5)
"""

from lmforge.generation.beam import BeamResult, beam_search
from lmforge.generation.config import FinishReason, Generation, GenerationConfig, GenerationConfigError
from lmforge.generation.fill_mask import MaskCandidate, MaskPrediction, fill_mask, mask_probabilities
from lmforge.generation.generate import (
    GenerationStream,
    complete,
    generate,
    generate_text,
    stream_generation,
    stream_text,
)
from lmforge.generation.text import TextStream

__all__ = [
    "BeamResult",
    "FinishReason",
    "Generation",
    "GenerationConfig",
    "GenerationConfigError",
    "GenerationStream",
    "MaskCandidate",
    "MaskPrediction",
    "TextStream",
    "beam_search",
    "complete",
    "fill_mask",
    "generate",
    "generate_text",
    "mask_probabilities",
    "stream_generation",
    "stream_text",
]
