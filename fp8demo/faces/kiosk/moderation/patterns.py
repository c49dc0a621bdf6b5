"""Phrase patterns: euphemisms to refuse ("without any clothes", "blown to pieces") and phrases to let through
("breast stroke", "un baiser sur la joue"), matched on a prompt's words after folding and leetspeak.

A pattern is words separated by spaces, each one of:

- ``word``: that word; ``word*``: any word starting so (``undress*``);
- ``a|b|c``: one of these (each may end in ``*``);
- ``@name``: one of the words of a class defined on an earlier line ``@name = a b c*``;
- ``...``: up to three other words;
- any of the above followed by ``?``: optional.

A line may start with ``[spanish portuguese]``: the pattern then applies only to prompts written in one of those
languages (as told by their small words: "un", "el", "o", ...).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable

from . import vocabulary
from .text import WORD, fold

_CLASS = re.compile(r"^@(\w+)\s*=\s*(.+)$")
_LANGUAGES = re.compile(r"^\[([a-z ]+)\]\s*(.+)$")
_GAP = r"(?:[^ #][^ ]* ){0,3}"


class Patterns:
    """Compiled pattern lines; `plurals` also lets the last word take -s and -es (allow-list: naked mole rats).

    Each pattern is filed under the words it can start with, so that a prompt is matched by trying, at each word,
    only the patterns that start there (a 2,000-character prompt against every pattern at every word took ~10 ms).
    """

    def __init__(self, lines: Iterable[str], plurals: bool = False) -> None:
        classes: dict[str, list[str]] = {}
        self.by_first: dict[str, list[tuple[frozenset[str] | None, re.Pattern[str]]]] = defaultdict(list)
        self.anywhere: list[tuple[frozenset[str] | None, re.Pattern[str]]] = []  # patterns with no first word
        self.count = 0
        for line in lines:
            if m := _CLASS.match(line):
                classes[m.group(1)] = [a for token in m.group(2).split() for a in _alternatives(token, classes)]
                continue
            languages = None
            if m := _LANGUAGES.match(line):
                languages, line = frozenset(m.group(1).split()), m.group(2)
            regex, first = _compile(line, classes, plurals)
            entry = (languages, re.compile(regex))
            if first is None:
                self.anywhere.append(entry)
            for word in first or ():
                self.by_first[word].append(entry)
            self.count += 1

    def __bool__(self) -> bool:
        return bool(self.count)

    def spans(self, pieces: list[str | None]) -> list[tuple[int, int]]:
        """(first, last + 1) piece indices of each match, left to right and not overlapping; removed pieces (None)
        are never part of one."""
        text, starts = _text(pieces)
        found: list[tuple[int, int]] = []
        prompt_languages: set[str] | None = None
        end = 0
        for i, piece in enumerate(pieces):
            if i < end or piece is None:
                continue
            for languages, regex in (*self.by_first.get(piece, ()), *self.anywhere):
                if languages is not None:
                    if prompt_languages is None:
                        prompt_languages = vocabulary.languages(pieces)
                    # only where the prompt is more likely in one of those languages than in English ("a dick")
                    if not languages & prompt_languages or "english" in prompt_languages - languages:
                        continue
                m = regex.match(text, starts[i])
                if m:
                    end = i + m.group(0).count(" ")
                    found.append((i, end))
                    break
        return found

    def search(self, pieces: list[str | None]) -> bool:
        return bool(self.spans(pieces))


def _text(pieces: list[str | None]) -> tuple[str, list[int]]:
    """The pieces as " a b c " ("#" for a removed piece) and where each starts."""
    starts, pos = [], 1
    for piece in pieces:
        starts.append(pos)
        pos += len(piece or "#") + 1
    return " " + " ".join(p or "#" for p in pieces) + " ", starts


def _alternatives(token: str, classes: dict[str, list[str]]) -> list[str]:
    """Regular expressions for the words a token stands for."""
    out = []
    for alternative in token.split("|"):
        if alternative.startswith("@"):
            out.extend(classes[alternative[1:]])
            continue
        prefix = alternative.endswith("*")
        words = WORD.findall(fold(alternative.rstrip("*")))
        if words:
            out.append(" ".join(re.escape(w) for w in words) + ("[^ ]*" if prefix else ""))
    return out


def _compile(line: str, classes: dict[str, list[str]], plurals: bool) -> tuple[str, set[str] | None]:
    """A pattern's regular expression, and the words it can start with (None when it can start anywhere)."""
    tokens = line.split()
    body = []
    first: set[str] | None = None
    for n, token in enumerate(tokens):
        if token == "...":
            body.append(_GAP)
            continue
        optional = token.endswith("?") and len(token) > 1
        alternatives = _alternatives(token.rstrip("?") if optional else token, classes)
        if not alternatives:
            raise ValueError(f"pattern {line!r}: {token!r} stands for no word")
        if plurals and n == len(tokens) - 1:
            alternatives = [a + s for a in alternatives for s in ("", "s", "es")]
        if n == 0 and not optional and all(re.fullmatch(r"[^\\ \[\]()*?+.|]+", a) for a in alternatives):
            first = set(alternatives)
        regex = "(?:" + "|".join(alternatives) + ") "
        body.append(f"(?:{regex})?" if optional else regex)
    return "".join(body), first
