"""One segment's text while it decodes: what of it is final already.

Held back are tokens a loop cut could still remove (:class:`~funasr_nano.decoding.guards.LoopWatch`),
and, in the text, an incomplete UTF-8 character, a partial ``/sil`` marker and trailing whitespace,
which the finished segment's text would change or drop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .prompt import SILENCE_MARKER, clean_text
from .repetition import LoopWatch

_REPLACEMENT = "\ufffd"  # what an incomplete UTF-8 character decodes to
_PARTIAL_MARKERS = tuple(SILENCE_MARKER[:n] for n in range(len(SILENCE_MARKER) - 1, 0, -1))


def sendable(text: str) -> str:
    """The part of a partial segment text (``clean_text`` applied) that its finished text will start
    with once stripped: without a trailing incomplete character, partial ``/sil`` or whitespace."""
    text = text.rstrip(_REPLACEMENT)
    for partial in _PARTIAL_MARKERS:
        if text.endswith(partial):
            text = text[: -len(partial)]
            break
    return text.strip()


class Detokenizer:
    """The final prefix of one segment's text as its tokens arrive.

    ``decode`` must decode a concatenation of token lists to the concatenation of their texts wherever
    the first ends on a whole character, as byte-level BPE (Qwen3's) does: new tokens are decoded alone,
    so each update costs only the new tokens.
    """

    def __init__(self, decode: Callable[[list[int]], str], cut_loops: bool):
        self._decode = decode
        self._watch = LoopWatch() if cut_loops else None  # None: no loop is cut, every token is final
        self.tokens: list[int] = []
        self._watched = 0  # tokens the watch has seen: it catches up only when the text is asked for
        # tokens[:_decoded] decode to _decoded_text, which ends on a whole character
        self._decoded = 0
        self._decoded_text = ""

    def add(self, tokens: Sequence[int]) -> None:
        self.tokens.extend(tokens)

    def text(self) -> str:
        """What the finished segment's text will start with (stripped), from the tokens so far."""
        end = self._final_length()
        if end <= self._decoded:
            return sendable(clean_text(self._decoded_text))
        new_text = self._decode(self.tokens[self._decoded : end])
        if not new_text.endswith(_REPLACEMENT):
            self._decoded, self._decoded_text = end, self._decoded_text + new_text
            return sendable(clean_text(self._decoded_text))
        return sendable(clean_text(self._decoded_text + new_text))

    def _final_length(self) -> int:
        if self._watch is None:
            return len(self.tokens)
        self._watch.extend(self.tokens[self._watched :])
        self._watched = len(self.tokens)
        return self._watch.final_length
