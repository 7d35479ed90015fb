from __future__ import annotations

import pytest

from funasr_nano.errors import UsageError
from funasr_nano.text.languages import MLT_LANGUAGES, NANO_LANGUAGES, language_code, resolve_language
from funasr_nano.text.prompt import instruction, normalize_hotwords


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("zh", "中文"),
        ("ZH", "中文"),
        ("Chinese", "中文"),
        ("中文", "中文"),
        ("en", "英文"),
        ("english", "英文"),
        ("ja", "日文"),
        ("Japanese", "日文"),
        ("日语", "日文"),
    ],
)
def test_nano_aliases(alias, name):
    assert resolve_language(alias, NANO_LANGUAGES) == name


def test_auto_never_reaches_the_prompt():
    for value in (None, "auto", "AUTO", "", "none"):
        assert resolve_language(value, NANO_LANGUAGES) is None


def test_mlt_has_31_languages_with_aliases():
    assert len(MLT_LANGUAGES) == 31
    assert resolve_language("ko", MLT_LANGUAGES) == "韩文"
    assert resolve_language("Cantonese", MLT_LANGUAGES) == "粤语"
    assert resolve_language("tl", MLT_LANGUAGES) == "菲律宾语"
    assert language_code("瑞典语") == "sv"


def test_unknown_language_lists_the_valid_ones():
    with pytest.raises(UsageError) as info:
        resolve_language("ko", NANO_LANGUAGES)  # Korean is an MLT-only language
    message = str(info.value)
    assert "'ko'" in message and "zh (chinese, 中文)" in message and "ja (japanese, 日文)" in message
    with pytest.raises(UsageError):
        resolve_language("klingon", MLT_LANGUAGES)


def test_hotwords_accept_lists_and_comma_strings():
    assert normalize_hotwords("开放时间, 北京，Fun-ASR") == ["开放时间", "北京", "Fun-ASR"]
    assert normalize_hotwords(None) == []
    with pytest.raises(UsageError):
        normalize_hotwords([1, 2])  # type: ignore[list-item]
    with pytest.raises(UsageError):
        normalize_hotwords({"a": 1})  # type: ignore[arg-type]


def test_hotword_lists_are_kept_verbatim_as_the_official_joins_them():
    words = [" a ", "", "b", " "]
    assert normalize_hotwords(words) == words and normalize_hotwords(tuple(words)) == words
    # funasr 1.4.16 FunASRNano.get_prompt(hotwords=[" a ", "", "b", " "]) gives exactly this block
    assert "热词列表：[ a , , b,  ]\n语音转写：" in instruction(normalize_hotwords(words), None, True)
    assert "热词列表" in instruction(normalize_hotwords([""]), None, True)  # a non-empty list, as official
