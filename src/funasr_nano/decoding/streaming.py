"""Live text of one recording while its segments decode, as pieces that only ever get appended.

A recording's segments decode together, but its text must arrive in time order: the earliest segment
not yet finished (the head) sends its text as its tokens come in; later segments keep theirs until
they become the head. Text is sent only once nothing can take it back. Held back are tokens a loop
cut could still remove (:class:`~funasr_nano.decoding.guards.LoopWatch`), and, in the text, an incomplete
UTF-8 character, a partial ``/sil`` marker and trailing whitespace, which the finished segment's
text would change or drop. A segment that has sent text is *committed*: it is not split and
decoded again (its loop is cut, its truncation flagged), since its sent text cannot be withdrawn.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

from ..result import join_texts, separator
from ..text.prompt import SILENCE_MARKER, clean_text
from .guards import LoopWatch

TextCallback = Callable[[str], None]  # called with each new piece of the text
_REPLACEMENT = "\ufffd"  # what an incomplete UTF-8 character decodes to
_PARTIAL_MARKERS = tuple(SILENCE_MARKER[:n] for n in range(len(SILENCE_MARKER) - 1, 0, -1))


class StreamDivergedError(RuntimeError):
    """A finished segment's text does not continue the text already sent (a bug, never expected)."""


@dataclass(eq=False)
class _Part:
    watch: LoopWatch | None  # None: no loop is cut, every token is final
    watched: int = 0  # tokens the watch has seen: it only catches up when the part is the head
    tokens: list[int] = field(default_factory=list)
    text: str | None = None  # the finished segment's text
    committed: bool = False
    # tokens[:decoded] decode to decoded_text, which ends on a whole character: later tokens are
    # decoded on their own and appended, so each update decodes only the new tokens (the worker
    # thread that calls us also drives the GPU).
    decoded: int = 0
    decoded_text: str = ""

    def final_length(self) -> int:
        """How many leading tokens are final; only the head asks, so only its tokens are watched."""
        if self.watch is None:
            return len(self.tokens)
        self.watch.extend(self.tokens[self.watched :])
        self.watched = len(self.tokens)
        return self.watch.final_length


def sendable(text: str) -> str:
    """The part of a partial segment text (``clean_text`` applied) that its finished text will start
    with once stripped: without a trailing incomplete character, partial ``/sil`` or whitespace."""
    text = text.rstrip(_REPLACEMENT)
    for partial in _PARTIAL_MARKERS:
        if text.endswith(partial):
            text = text[: -len(partial)]
            break
    return text.strip()


class TextStream:
    """Turns the tokens of a recording's segments, as they are decoded, into appended text.

    Segments are identified by any hashable key (the pipeline's piece objects), given in time order.
    ``decode`` must decode a concatenation of token lists to the concatenation of their texts wherever
    the first ends on a whole character, as byte-level BPE (Qwen3's) does: new tokens are decoded alone.
    """

    def __init__(self, decode: Callable[[list[int]], str], on_text: TextCallback, cut_loops: bool):
        self._decode = decode
        self._on_text = on_text
        self._cut_loops = cut_loops
        self._order: list[Hashable] = []
        self._parts: dict[Hashable, _Part] = {}
        self._head = 0  # index in _order of the first unfinished segment
        self._finished_text = ""  # the joined text of the segments before the head
        self._head_sent = ""  # what the head has sent: its separator and the start of its text

    def start(self, keys: Sequence[Hashable]) -> None:
        self._order.extend(keys)
        self._parts.update((key, self._new_part()) for key in keys)

    def add_tokens(self, key: Hashable, tokens: Sequence[int]) -> None:
        part = self._parts[key]
        part.tokens.extend(tokens)
        if self._order[self._head] is key:
            self._send_head()

    def is_committed(self, key: Hashable) -> bool:
        return self._parts[key].committed

    def split(self, key: Hashable, halves: Sequence[Hashable]) -> None:
        """Replace an uncommitted segment by the pieces it is decoded again as."""
        if self._parts[key].committed:
            raise ValueError("a segment that has sent text cannot be split")
        index = self._order.index(key)
        del self._parts[key]
        self._order[index : index + 1] = halves
        self._parts.update((half, self._new_part()) for half in halves)

    def finish(self, key: Hashable, text: str) -> None:
        """The segment's final text; sends everything that is now final."""
        self._parts[key].text = text
        self._send_head()

    def _new_part(self) -> _Part:
        return _Part(LoopWatch() if self._cut_loops else None)

    def _send_head(self) -> None:
        while self._head < len(self._order):
            part = self._parts[self._order[self._head]]
            if part.text is None:
                self._send(self._head_text(self._partial_text(part)), part)
                return
            self._send(self._head_text(part.text.strip()), part)
            self._finished_text = join_texts([self._finished_text, part.text])
            self._head_sent = ""
            self._head += 1

    def _head_text(self, text: str) -> str:
        if not text:
            return ""
        return separator(self._finished_text, text) + text if self._finished_text else text

    def _send(self, head_text: str, part: _Part) -> None:
        if not head_text.startswith(self._head_sent):
            raise StreamDivergedError(
                f"streamed text {self._head_sent!r} is not continued by {head_text!r}: please report this"
            )
        if len(head_text) > len(self._head_sent):
            delta = head_text[len(self._head_sent) :]
            self._head_sent = head_text
            part.committed = True
            self._on_text(delta)

    def _partial_text(self, part: _Part) -> str:
        end = part.final_length()
        if end <= part.decoded:
            return sendable(clean_text(part.decoded_text))
        new_text = self._decode(part.tokens[part.decoded : end])
        if not new_text.endswith(_REPLACEMENT):
            part.decoded, part.decoded_text = end, part.decoded_text + new_text
            return sendable(clean_text(part.decoded_text))
        return sendable(clean_text(part.decoded_text + new_text))


__all__ = ["StreamDivergedError", "TextCallback", "TextStream", "sendable"]
