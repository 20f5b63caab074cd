"""Token ids to text while decoding: incremental detokenization and stop strings.

Byte-level BPE splits a multi-byte UTF-8 character (an emoji, most non-Latin scripts) over several
tokens, and decoding a partial character gives U+FFFD. `TextStream` therefore holds text back while it
ends in U+FFFD, and also while its end could be the start of a stop string, so that no delta it emits
ever has to be taken back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

REPLACEMENT = "\ufffd"


class Detokenizer(Protocol):
    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str: ...


class TextStream:
    """Feeds generated token ids in; gets text deltas out that are final, and never contain a stop string.

    Incremental decoding after vLLM's detokenizer: decode the window ids[prefix:] and compare with the
    already emitted ids[prefix:read], so each step costs a few tokens, not the whole output, and
    tokenizers that decode a token differently at the start of a text (SentencePiece's leading space)
    still give the right delta.
    """

    def __init__(self, tokenizer: Detokenizer, stop: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        self.ids: list[int] = []
        self._prefix = 0  # ids[_prefix:_read] decode to text already taken
        self._read = 0
        self.text = ""  # everything decoded so far that is final (may still be held back for stop strings)
        self.emitted = 0  # len of self.text already returned to the caller
        self.stopped = False  # a stop string was found; the text ends before it

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def add(self, token_id: int) -> str:
        """Append one generated token; return the text that became final (possibly "")."""
        if self.stopped:
            return ""
        self.ids.append(token_id)
        prefix_text = self._decode(self.ids[self._prefix : self._read])
        new_text = self._decode(self.ids[self._prefix :])
        if len(new_text) > len(prefix_text) and not new_text.endswith(REPLACEMENT):
            self.text += new_text[len(prefix_text) :]
            self._prefix, self._read = self._read, len(self.ids)
        return self._release(final=False)

    def finish(self) -> str:
        """No more tokens: return what was held back (an incomplete character decodes as U+FFFD)."""
        if not self.stopped:
            prefix_text = self._decode(self.ids[self._prefix : self._read])
            new_text = self._decode(self.ids[self._prefix :])
            self.text += new_text[len(prefix_text) :]
            self._prefix = self._read = len(self.ids)
        return self._release(final=True)

    @property
    def output(self) -> str:
        """The text so far, up to (not including) a stop string."""
        return self.text[: self.emitted] if self.stopped else self.text

    def _release(self, final: bool) -> str:
        if self.stopped:
            return ""
        if self.stop:
            # a stop string that appears now starts at or after `emitted`: text before it was released
            # only once no stop string could begin there
            cut = min((i for s in self.stop if (i := self.text.find(s, self.emitted)) >= 0), default=-1)
            if cut >= 0:
                self.stopped = True
                self.text = self.text[:cut]
                delta, self.emitted = self.text[self.emitted :], cut
                return delta
        end = len(self.text) if final else len(self.text) - held_back(self.text, self.stop, self.emitted)
        delta, self.emitted = self.text[self.emitted : end], end
        return delta


def held_back(text: str, stop: Sequence[str], start: int = 0) -> int:
    """Length of the longest suffix of text[start:] that is a proper prefix of some stop string."""
    best = 0
    for s in stop:
        for k in range(min(len(s) - 1, len(text) - start), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best


def truncate_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """text up to the first stop string, and whether one was found."""
    cut = min((i for s in stop if (i := text.find(s)) >= 0), default=-1)
    return (text, False) if cut < 0 else (text[:cut], True)
