"""Sentences for the demo model: English, Mandarin and Japanese, with a held-out test split.

Every item carries the text the voice speaks (``speech``), the written target with inverse text
normalisation (``itn``: digits) and the spoken-form target (``spoken``: numbers as words), so that
the ITN switch of the prompt has something to learn. Japanese is written in kana because espeak-ng
reads kana but not kanji. Deterministic for a given seed.

    python -m training.corpus OUT.jsonl [--per-language 100000] [--test-per-language 400]
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path

_EN_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_EN_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_EN_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
_ZH_DIGITS = "零一二三四五六七八九"


def english_number(n: int) -> str:
    """0..999999 as words ("four thousand two hundred seven")."""
    if n < 20:
        return _EN_ONES[n]
    if n < 100:
        return _EN_TENS[n // 10] + ("" if n % 10 == 0 else " " + _EN_ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _EN_ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + english_number(rest))
    rest = n % 1000
    return english_number(n // 1000) + " thousand" + ("" if rest == 0 else " " + english_number(rest))


def english_year(year: int) -> str:
    """Years as they are said: 1987 -> nineteen eighty seven, 2005 -> two thousand five."""
    if 2000 <= year < 2010:
        return english_number(year)
    high, low = divmod(year, 100)
    return (
        english_number(high)
        + " "
        + ("hundred" if low == 0 else english_number(low) if low >= 10 else "oh " + english_number(low))
    )


def chinese_number(n: int) -> str:
    """0..99999999 in Chinese numerals (四十二, 一千零五, 三万二千)."""
    if n == 0:
        return "零"
    if n >= 10000:
        high, low = divmod(n, 10000)
        text = chinese_number(high) + "万"
        if low:
            text += ("零" if low < 1000 else "") + chinese_number(low)
        return text
    units = ["千", "百", "十", ""]
    digits = [n // 1000, n // 100 % 10, n // 10 % 10, n % 10]
    out = ""
    zero = False
    for digit, unit in zip(digits, units, strict=True):
        if digit == 0:
            zero = bool(out)
            continue
        if zero:
            out += "零"
            zero = False
        out += _ZH_DIGITS[digit] + unit
    return out[1:] if out.startswith("一十") else out


def chinese_digits(text: str) -> str:
    """A digit string read digit by digit (phone numbers, years): 2024 -> 二零二四."""
    return "".join(_ZH_DIGITS[int(c)] for c in text)


class Item(dict):
    """lang, speech, itn, spoken (all str)."""


def _item(lang: str, itn: str, spoken: str, speech: str | None = None) -> Item:
    return Item(lang=lang, itn=itn, spoken=spoken, speech=speech or spoken)


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _mixed(rng: random.Random, words: Callable[[], Item], *templates: Callable[[], Item]) -> Iterator[Item]:
    """Half random-word sentences, half template sentences (names, numbers, dates) in equal shares."""
    makers = [words] * len(templates) + list(templates)
    while True:
        yield rng.choice(makers)()


def english_items(rng: random.Random, fake: object) -> Iterator[Item]:
    """Random-word sentences, and templates with names, places, numbers and dates."""

    def number_sentence() -> Item:
        n = rng.choice([rng.randint(2, 20), rng.randint(21, 99), rng.randint(100, 999), rng.randint(1000, 9999)])
        noun = rng.choice(
            [
                "apples",
                "books",
                "people",
                "tickets",
                "dollars",
                "minutes",
                "kilometers",
                "emails",
                "students",
                "cars",
                "pages",
                "boxes",
            ]
        )
        lead = rng.choice(["We need", "There are", "She bought", "They sold", "I counted", "He wrote", "Please bring"])
        return _item("en", f"{lead} {n} {noun}.", f"{lead} {english_number(n)} {noun}.")

    def date_sentence() -> Item:
        month, day, year = rng.choice(_EN_MONTHS), rng.randint(1, 28), rng.randint(1950, 2030)
        lead = rng.choice(
            ["The meeting is on", "She was born on", "We moved on", "The report is due on", "It happened on"]
        )
        return _item(
            "en", f"{lead} {month} {day}, {year}.", f"{lead} {month} {english_number(day)}, {english_year(year)}."
        )

    def name_sentence() -> Item:
        template = rng.choice(
            [
                "My name is {n}.",
                "{n} lives in {c}.",
                "Please call {n} tomorrow.",
                "{n} works for {co}.",
                "I met {n} in {c} last week.",
                "Send the letter to {n}.",
            ]
        )
        text = template.format(n=fake.name(), c=fake.city(), co=fake.company())
        return _item("en", text, text)

    def word_sentence() -> Item:
        text = fake.sentence(nb_words=rng.randint(3, 12))
        return _item("en", text, text)

    yield from _mixed(rng, word_sentence, name_sentence, number_sentence, date_sentence)


def chinese_items(rng: random.Random, fake: object) -> Iterator[Item]:
    def number_sentence() -> Item:
        n = rng.choice([rng.randint(2, 20), rng.randint(21, 99), rng.randint(100, 999), rng.randint(1000, 99999)])
        noun = rng.choice(["个苹果", "本书", "位客人", "张票", "块钱", "分钟", "公里", "名学生", "辆车", "页"])
        lead = rng.choice(["我们需要", "一共有", "她买了", "他们卖了", "我数了", "今天来了", "请准备"])
        return _item("zh", f"{lead}{n}{noun}。", f"{lead}{chinese_number(n)}{noun}。")

    def date_sentence() -> Item:
        year, month, day = rng.randint(1950, 2030), rng.randint(1, 12), rng.randint(1, 28)
        lead = rng.choice(["会议定在", "她出生于", "我们在", "报告截止到", "活动开始于"])
        itn = f"{lead}{year}年{month}月{day}日。"
        spoken = f"{lead}{chinese_digits(str(year))}年{chinese_number(month)}月{chinese_number(day)}日。"
        return _item("zh", itn, spoken)

    def name_sentence() -> Item:
        template = rng.choice(
            [
                "我叫{n}。",
                "{n}住在{c}。",
                "请明天给{n}打电话。",
                "{n}在{co}工作。",
                "上周我在{c}见到了{n}。",
                "把这封信交给{n}。",
            ]
        )
        text = template.format(n=fake.name(), c=fake.city(), co=fake.company())
        return _item("zh", text, text)

    def word_sentence() -> Item:
        text = fake.sentence(nb_words=rng.randint(3, 10)).rstrip(".") + "。"
        return _item("zh", text, text)

    for item in _mixed(rng, word_sentence, name_sentence, number_sentence, date_sentence):
        if not re.search(r"[A-Za-z]", item["itn"]):  # Faker's zh companies may hold Latin letters
            yield item


def japanese_items(rng: random.Random, fake: object) -> Iterator[Item]:
    import pykakasi

    kakasi = pykakasi.kakasi()

    def kana(text: str) -> str:
        # Katakana words stay katakana, everything else is read as hiragana.
        parts = []
        for part in kakasi.convert(text):
            orig = part["orig"]
            parts.append(orig if re.fullmatch(r"[\u30a0-\u30ff]+", orig) else part["hira"])
        return "".join(parts)

    def name_sentence() -> Item:
        template = rng.choice(
            [
                "わたしのなまえは{n}です。",
                "{n}さんは{c}にすんでいます。",
                "あした{n}さんにでんわしてください。",
                "{n}さんと{c}であいました。",
                "このてがみを{n}さんにわたしてください。",
            ]
        )
        return _item("ja", template.format(n=kana(fake.last_name()), c=kana(fake.city())), "")

    def word_sentence() -> Item:
        return _item("ja", kana(fake.sentence(nb_words=rng.randint(3, 8))), "")

    makers: list[Callable[[], Item]] = [word_sentence, word_sentence, word_sentence, name_sentence]
    while True:
        item = rng.choice(makers)()
        text = item["itn"]
        if re.fullmatch(r"[\u3040-\u30ff\u30fc。、]+", text):
            item["spoken"] = item["speech"] = text
            yield item


def generate(per_language: int, test_per_language: int, seed: int) -> list[Item]:
    from faker import Faker

    items: list[Item] = []
    for lang, locale, maker in (
        ("en", "en_US", english_items),
        ("zh", "zh_CN", chinese_items),
        ("ja", "ja_JP", japanese_items),
    ):
        fake = Faker(locale)
        fake.seed_instance(seed)
        rng = random.Random(f"{seed}-{lang}")
        seen: set[str] = set()
        stream = maker(rng, fake)
        # The test split is drawn first and its texts are never used for training.
        for split, count in (("test", test_per_language), ("train", per_language)):
            made = 0
            while made < count:
                item = next(stream)
                if item["itn"] in seen:
                    continue
                seen.add(item["itn"])
                item["split"] = split
                items.append(item)
                made += 1
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-language", type=int, default=100_000)
    parser.add_argument("--test-per-language", type=int, default=400)
    parser.add_argument("--seed", type=int, default=2512)
    args = parser.parse_args()
    items = generate(args.per_language, args.test_per_language, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as f:
        for item in items:
            f.write(json.dumps(item, ensure_ascii=False) + "\n")
    print(f"{len(items)} sentences -> {args.out}")


if __name__ == "__main__":
    main()
