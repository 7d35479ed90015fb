"""Language names the models were trained on, and the aliases users type.

The models select the output language only through the Chinese instruction ``语音转写成{名称}：``,
so every alias resolves to the Chinese name; ``None``/``"auto"`` means no language in the prompt.
"""

from __future__ import annotations

from ..errors import UsageError

# (Chinese name, ISO 639-1 code or other short codes, English names)
_LANGUAGES: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("中文", ("zh", "zh-cn", "cmn", "chi", "zho"), ("chinese", "mandarin")),
    ("英文", ("en", "eng"), ("english",)),
    ("日文", ("ja", "jp", "jpn"), ("japanese",)),
    ("粤语", ("yue", "zh-yue", "zh-hk"), ("cantonese",)),
    ("韩文", ("ko", "kor"), ("korean",)),
    ("越南语", ("vi", "vie"), ("vietnamese",)),
    ("印尼语", ("id", "ind"), ("indonesian",)),
    ("泰语", ("th", "tha"), ("thai",)),
    ("马来语", ("ms", "msa", "may"), ("malay",)),
    ("菲律宾语", ("fil", "tl", "tgl"), ("filipino", "tagalog")),
    ("阿拉伯语", ("ar", "ara"), ("arabic",)),
    ("印地语", ("hi", "hin"), ("hindi",)),
    ("保加利亚语", ("bg", "bul"), ("bulgarian",)),
    ("克罗地亚语", ("hr", "hrv"), ("croatian",)),
    ("捷克语", ("cs", "ces", "cze"), ("czech",)),
    ("丹麦语", ("da", "dan"), ("danish",)),
    ("荷兰语", ("nl", "nld", "dut"), ("dutch",)),
    ("爱沙尼亚语", ("et", "est"), ("estonian",)),
    ("芬兰语", ("fi", "fin"), ("finnish",)),
    ("希腊语", ("el", "ell", "gre"), ("greek",)),
    ("匈牙利语", ("hu", "hun"), ("hungarian",)),
    ("爱尔兰语", ("ga", "gle"), ("irish",)),
    ("拉脱维亚语", ("lv", "lav"), ("latvian",)),
    ("立陶宛语", ("lt", "lit"), ("lithuanian",)),
    ("马耳他语", ("mt", "mlt"), ("maltese",)),
    ("波兰语", ("pl", "pol"), ("polish",)),
    ("葡萄牙语", ("pt", "por"), ("portuguese",)),
    ("罗马尼亚语", ("ro", "ron", "rum"), ("romanian",)),
    ("斯洛伐克语", ("sk", "slk", "slo"), ("slovak",)),
    ("斯洛文尼亚语", ("sl", "slv"), ("slovenian", "slovene")),
    ("瑞典语", ("sv", "swe"), ("swedish",)),
)

NANO_LANGUAGES: tuple[str, ...] = ("中文", "英文", "日文")
MLT_LANGUAGES: tuple[str, ...] = tuple(name for name, _, _ in _LANGUAGES)

_ALIASES: dict[str, str] = {}
for _name, _codes, _english in _LANGUAGES:
    for _alias in (_name, *_codes, *_english):
        _ALIASES[_alias.lower()] = _name
# Common extra spellings of the Chinese names.
_ALIASES.update({"汉语": "中文", "普通话": "中文", "英语": "英文", "日语": "日文", "韩语": "韩文"})

_AUTO = {"", "auto", "none"}


def _describe(name: str) -> str:
    for chinese, codes, english in _LANGUAGES:
        if chinese == name:
            return f"{codes[0]} ({english[0]}, {chinese})"
    return name


def resolve_language(language: str | None, supported: tuple[str, ...]) -> str | None:
    """Map a user's language (ISO code, English or Chinese name, or None/'auto') to the trained name."""
    if language is None or language.strip().lower() in _AUTO:
        return None
    name = _ALIASES.get(language.strip().lower())
    if name is None or name not in supported:
        valid = ", ".join(_describe(n) for n in supported)
        raise UsageError(f"unknown language {language!r} for this model; use one of: {valid} or 'auto'")
    return name


def language_code(name: str | None) -> str | None:
    """ISO code of a trained language name (for outputs such as the OpenAI 'language' field)."""
    for chinese, codes, _ in _LANGUAGES:
        if chinese == name:
            return codes[0]
    return None
