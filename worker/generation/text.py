"""A sequence's text as its tokens arrive: incremental decoding, stop strings, and what is safe to stream.

Decoding every token's text alone is wrong for byte-level BPE (a character split over tokens) and for
SentencePiece (a leading space that depends on the token before), and decoding everything again each step
costs O(length) per token. As vLLM does, the text of the tokens from ``prefix`` on is decoded twice, with and
without the newest ones; the difference is the new text, held back while it ends in half a character. Summed,
the deltas are the text of all the tokens decoded at once.

A stop string ends the sequence where it starts and is never part of the text; while streaming, the last
``len(longest stop) - 1`` characters are held back, since they may be the beginning of one.
"""
from __future__ import annotations

from typing import Any


class TextTracker:
    """The decoded text of one sequence's generated tokens, cut at the first stop string."""

    def __init__(self, tokenizer: Any, stops: tuple[str, ...]) -> None:
        self.tokenizer = tokenizer
        self.stops = stops
        self.hold = max((len(s) for s in stops), default=1) - 1
        self.ids: list[int] = []
        self.prefix = 0
        self.read = 0
        self.text = ""
        self.sent = 0
        self.stopped = False

    def push(self, token: int) -> bool:
        """Add a token; True when a stop string ends the text (now or before)."""
        if self.stopped:
            return True
        self.ids.append(token)
        before, after = self._decoded()
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return False
        self.prefix, self.read = self.read, len(self.ids)
        return self._take(after[len(before):])

    def close(self) -> None:
        """The sequence has ended: take in text still held back for a half character."""
        if self.stopped or self.read == len(self.ids):
            return
        before, after = self._decoded()
        self.prefix = self.read = len(self.ids)
        if len(after) > len(before):
            self._take(after[len(before):])

    def _decoded(self) -> tuple[str, str]:
        """The text from ``prefix`` without and with the tokens not read yet."""
        decode = self.tokenizer.decode
        before = decode(self.ids[self.prefix:self.read], skip_special_tokens=True) if self.read > self.prefix else ""
        return before, decode(self.ids[self.prefix:], skip_special_tokens=True)

    def _take(self, new: str) -> bool:
        start = max(len(self.text) - self.hold, 0)  # where a stop string ending in the new text may begin
        self.text += new
        found = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
        if not found:
            return False
        self.text = self.text[:min(found)]
        self.stopped = True
        return True

    def delta(self, final: bool) -> str:
        """Text not streamed yet that is safe to stream now (all of it once the sequence has ended)."""
        end = len(self.text) if final else max(len(self.text) - self.hold, self.sent)
        out = self.text[self.sent:end]
        self.sent = end
        return out

