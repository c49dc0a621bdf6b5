"""Emoji that say what the words would: 🔞 on its own, 🍆 with 💦, 🔪 with 🩸 (rules in assets/kiosk/emoji.txt).

An emoji is one symbol character; skin tones, variation selectors and joiners are left out, so 👉🏽 is 👉 and a
joined sequence counts as its parts. A rule lists one or more emoji and refuses a prompt that holds all of them,
in any order and anywhere: the eggplant alone is a vegetable, beside 💦 it is not.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

_LEFT_OUT = {*range(0x1F3FB, 0x1F400), 0xFE0E, 0xFE0F, 0x200D, 0x20E3}


def emoji_in(text: str) -> set[str]:
    return {c for c in text if ord(c) >= 0x2100 and ord(c) not in _LEFT_OUT and unicodedata.category(c) == "So"}


class EmojiRules:
    def __init__(self, lines: Iterable[str]) -> None:
        self.rules: list[frozenset[str]] = []
        for line in lines:
            found = emoji_in(unicodedata.normalize("NFKC", line.split("#", 1)[0]))
            if found:
                self.rules.append(frozenset(found))

    def matches(self, text: str) -> bool:
        if not self.rules or text.isascii():
            return False
        found = emoji_in(text)
        return bool(found) and any(rule <= found for rule in self.rules)
