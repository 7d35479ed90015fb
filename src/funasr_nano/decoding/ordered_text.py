"""A recording's text while its segments decode, as pieces that only ever get appended.

A recording's segments decode together, but its text must arrive in time order: the earliest segment
not yet finished (the head) sends its final prefix (:class:`~funasr_nano.text.detokenize.Detokenizer`)
as its tokens come in; later segments keep theirs until they become the head. A segment that has sent
text is *streamed*: the scheduler does not split and decode it again, since its text cannot be withdrawn.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

from ..result import join_texts, separator
from ..text.detokenize import Detokenizer


class StreamDivergedError(RuntimeError):
    """A finished segment's text does not continue the text already sent (a bug, never expected)."""


class OrderedText:
    """Segments under hashable keys, given in time order; each method returns the new text to send."""

    def __init__(self, decode: Callable[[list[int]], str], cut_loops: bool):
        self._decode = decode
        self._cut_loops = cut_loops
        self._order: list[Hashable] = []
        self._parts: dict[Hashable, Detokenizer] = {}
        self._texts: dict[Hashable, str] = {}  # finished segments' texts
        self._streamed: set[Hashable] = set()
        self._head = 0  # index in _order of the first unfinished segment
        self._finished_text = ""  # the joined text of the segments before the head
        self._head_sent = ""  # what the head has sent: its separator and the start of its text

    def start(self, keys: Sequence[Hashable]) -> None:
        self._order.extend(keys)
        self._parts.update((key, Detokenizer(self._decode, self._cut_loops)) for key in keys)

    def streamed(self, key: Hashable) -> bool:
        return key in self._streamed

    def split(self, key: Hashable, halves: Sequence[Hashable]) -> None:
        """Replace a segment that has sent nothing by the pieces it is decoded again as."""
        if key in self._streamed:
            raise ValueError("a segment that has sent text cannot be split")
        index = self._order.index(key)
        del self._parts[key]
        self._order[index : index + 1] = halves
        self._parts.update((half, Detokenizer(self._decode, self._cut_loops)) for half in halves)

    def add(self, key: Hashable, tokens: Sequence[int]) -> str:
        self._parts[key].add(tokens)
        return self._advance() if self._order[self._head] is key else ""

    def finish(self, key: Hashable, text: str) -> str:
        """The segment's final text; returns everything that is now final."""
        self._texts[key] = text
        return self._advance()

    def _advance(self) -> str:
        sent = []
        while self._head < len(self._order):
            key = self._order[self._head]
            text = self._texts.get(key)
            if text is None:
                sent.append(self._send(self._head_text(self._parts[key].text()), key))
                break
            sent.append(self._send(self._head_text(text.strip()), key))
            self._finished_text = join_texts([self._finished_text, text])
            self._head_sent = ""
            self._head += 1
            del self._parts[key], self._texts[key]
        return "".join(sent)

    def _head_text(self, text: str) -> str:
        if not text:
            return ""
        return separator(self._finished_text, text) + text if self._finished_text else text

    def _send(self, head_text: str, key: Hashable) -> str:
        if not head_text.startswith(self._head_sent):
            raise StreamDivergedError(
                f"streamed text {self._head_sent!r} is not continued by {head_text!r}: please report this"
            )
        if len(head_text) <= len(self._head_sent):
            return ""
        delta = head_text[len(self._head_sent) :]
        self._head_sent = head_text
        self._streamed.add(key)
        return delta
