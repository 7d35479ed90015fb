"""The shown part of a live partial: agreed text cut back to whole words, and the newest words held back."""

from __future__ import annotations


def whole_words(stable: str, text: str) -> str:
    """``stable`` (a prefix of ``text``) cut back to its last whole word: agreed tokens can end inside a
    word ("Barbara C") whose rest is still to be decoded. Characters of unspaced scripts are words."""
    if not text.startswith(stable):
        return ""
    if len(stable) == len(text) or not stable:
        return stable
    before, after = stable[-1], text[len(stable)]
    if in_word(before) and in_word(after):
        cut = max(stable.rfind(" "), 0)
        return stable[:cut].rstrip()
    return stable


def held_back(text: str, stable: str, words: int) -> str:
    """``text`` without the last ``words`` words of its part past ``stable`` (and the punctuation after
    them): the newest words are decoded from audio that ends inside them. A character of an unspaced
    script is a word."""
    end = len(text)
    for _ in range(words):
        while end > len(stable) and not text[end - 1].isalnum():
            end -= 1
        if end <= len(stable):
            break
        if in_word(text[end - 1]):
            while end > len(stable) and in_word(text[end - 1]):
                end -= 1
        else:
            end -= 1
    return text[: max(end, len(stable))].rstrip()


def in_word(char: str) -> bool:
    """Part of a spaced word: a letter or digit outside the scripts written without spaces."""
    return char.isalnum() and not ("\u3040" <= char <= "\u30ff" or "\u3400" <= char <= "\u9fff")
