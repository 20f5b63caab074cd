"""Tokenizers: char, byte-level BPE (GPT) and WordPiece (BERT) over the `tokenizers` library.

tok = train_tokenizer("bpe", ["corpus/"], vocab_size=8192)
tok.save("runs/my-gpt")                      # writes runs/my-gpt/tokenizer.json
tok = load_tokenizer("runs/my-gpt")          # also an HF checkpoint dir, vocab.json + merges.txt, vocab.txt
ids = tok.encode("hello world")
"""

from lmforge.tokenizers.load import load_tokenizer
from lmforge.tokenizers.tokenizer import Tokenizer, TokenizerError, infer_kind
from lmforge.tokenizers.train import BERT_SPECIALS, EOS, train_tokenizer

__all__ = ["BERT_SPECIALS", "EOS", "Tokenizer", "TokenizerError", "infer_kind", "load_tokenizer", "train_tokenizer"]
