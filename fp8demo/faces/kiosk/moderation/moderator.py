"""The moderator: every layer in order, one verdict."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from . import vocabulary
from .emoji import EmojiRules
from .guess import MIN_SOUND, WILDCARDS, Guesser
from .lists import BUNDLED, Lists, bundled_entries, entry_words, read_list, read_sections
from .patterns import Patterns
from .text import CJK, STRETCHED, WORD, Reading, fold, joins_to, readings, runs, unstretched

log = logging.getLogger("fp8demo.faces.kiosk.moderation")

REFUSAL = "Let's try a different idea: that prompt can't be shown on this screen. How about one of the suggestions?"


@functools.cache
def _compiled(terms: tuple[tuple[str, str], ...], removed: frozenset[tuple[str, ...]],
              languages: tuple[str, ...]) -> Lists:
    lists = Lists()
    for language in languages:
        for entry in bundled_entries(language):
            if entry_words(entry) not in removed:
                lists.add(entry, BUNDLED[language], core=language == "english")
    for language, entry in terms:
        lists.add(entry, BUNDLED[language])
    lists.words -= {words[0] for words in removed if len(words) == 1}  # and wherever an inflection made it
    lists.finish()
    return lists


class _Allowed:
    """Allowed phrases (patterns.py), taken out of a prompt before it is matched; CJK ones out of its text."""

    def __init__(self, lines: Iterable[str]) -> None:
        lines = list(lines)
        self.cjk = sorted(("".join(WORD.findall(fold(p))) for p in lines if CJK.search(p)), key=len, reverse=True)
        self.patterns = Patterns((p for p in lines if not CJK.search(p)), plurals=True)

    def remove(self, reading: Reading) -> None:
        """Blank out allowed phrases in place; what is left cannot be joined across the gap."""
        for first, end in self.patterns.spans(reading.pieces):
            reading.pieces[first:end] = [None] * (end - first)

    def whole(self, pieces: list[str]) -> bool:
        """Whether the pieces are one allowed phrase (a compound pussywillow split as pussy willow)."""
        return any(first == 0 and end == len(pieces) for first, end in self.patterns.spans(list(pieces)))


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    message: str = ""  # shown to the visitor; never repeats the blocked word


class Moderator:
    """Blocks prompts that hold a listed word or phrase, however it is spelled, unless it is part of an allowed
    phrase; also misspellings and compounds of listed words, euphemisms (`phrases`) and emoji (`emoji`).

    `terms` are the operator's own entries, in language sections ("[spanish]"); a term written "-entry" drops that
    entry from the bundled lists (some are innocent in an image prompt, like Spanish "martillo", hammer). `languages`
    picks the bundled lists; pass () to use `terms` alone.
    """

    def __init__(self, terms: Iterable[str], allowed: Iterable[str] = (), languages: Iterable[str] = tuple(BUNDLED),
                 phrases: Iterable[str] = (), emoji: Iterable[str] = ()):
        sections = read_sections(list(terms))
        removed = frozenset(entry_words(t[1:]) for _, t in sections if t.startswith("-"))
        added = tuple((lang, t) for lang, t in sections if not t.startswith("-"))
        self._lists = _compiled(added, removed, tuple(languages))
        self._allowed = _Allowed(allowed)
        self._phrases = Patterns(phrases)
        self._emoji = EmojiRules(emoji)
        self._guess = Guesser(self._lists, self._allowed.whole)
        vocabulary.load()
        self.refused = 0
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: Path, allowlist: Path | None = None) -> Moderator:
        """The blocklist at `path`, and beside it the allow-list (allowlist.txt unless another is given), the
        euphemisms (phrases.txt) and the emoji rules (emoji.txt) where they exist."""
        path = Path(path)
        allowlist = allowlist or path.with_name("allowlist.txt")

        def beside(name: str) -> list[str]:
            other = path.with_name(name)
            return read_list(other) if other.exists() else []

        allowed = read_list(allowlist) if allowlist.exists() else []
        return cls(read_list(path), allowed, phrases=beside("phrases.txt"), emoji=beside("emoji.txt"))

    def matches(self, text: str) -> bool:
        return self.reason(text) is not None

    def reason(self, text: str) -> str | None:
        """The layer that refuses the text (for the report and for an operator's own checks), None when none does:
        emoji, symbol, cjk, word, phrase, part (of a word), misspelling, compound, split (word), euphemism,
        wildcard."""
        if self._emoji.matches(text):
            return "emoji"
        folded = fold(text)
        lists = self._lists
        if any(s in folded for s in lists.symbols):
            return "symbol"
        if lists.cjk and CJK.search(folded) and self._cjk_match(folded):
            return "cjk"
        verdicts: dict[str, str | None] = {}  # one word's verdict, shared by the readings (most words are in all)
        for reading in readings(folded):
            self._allowed.remove(reading)
            found = self._words_match(reading, verdicts)
            if found:
                return found
        return None

    def _cjk_match(self, folded: str) -> bool:
        stream = "".join(WORD.findall(folded))  # no spaces in these languages: separators are evasions
        for phrase in self._allowed.cjk:
            stream = stream.replace(phrase, "|")
        return any(entry in stream for entry in self._lists.cjk)

    def _word(self, piece: str) -> str | None:
        """The verdict on one word alone: listed, part of a word, or a guess."""
        lists = self._lists
        words, parts = lists.words, lists.part_pattern
        candidates = {piece, *unstretched(piece)} if STRETCHED.search(piece) else (piece,)  # xxx is listed as it is
        if any(c in words for c in candidates):
            return "word"
        if parts is not None and any(parts.search(c) for c in candidates):
            return "part"
        if len(piece) >= MIN_SOUND:
            for c in candidates:
                bits = vocabulary.known_in(c)
                if bits & vocabulary.SEEN:
                    continue
                if self._guess.misspelled(c):  # also about the rarest dictionary forms (pennis, penus)
                    return "misspelling"
                if not bits and self._guess.compound(c):
                    return "compound"
        return None

    def _words_match(self, reading: Reading, verdicts: dict[str, str | None]) -> str | None:
        lists = self._lists
        words, phrases = lists.words, lists.phrases
        pieces = reading.pieces
        for i, piece in enumerate(pieces):
            if piece is None:
                continue
            if piece not in verdicts:
                verdicts[piece] = self._word(piece)
            if verdicts[piece]:
                return verdicts[piece]
            starting = phrases.get(piece)
            if starting and any(_starts(pieces, i, steps) for steps in starting):
                return "phrase"
        for run in runs(reading):
            if joins_to(run, words, lists.prefixes):
                return "split"
            joined = "".join(p for p in run if p is not None)
            if len(joined) >= MIN_SOUND and joined not in words and not vocabulary.seen(joined):
                if self._guess.misspelled(joined):  # n.a.k.i.d
                    return "split"
        if self._phrases and self._phrases.search(pieces):
            return "euphemism"
        if any(self._guess.wildcard(chunk) for chunk in reading.chunks if any(w in chunk for w in WILDCARDS)):
            return "wildcard"
        return None

    def check(self, *texts: str) -> Verdict:
        for text in texts:
            if text and self.matches(text):
                with self._lock:
                    self.refused += 1
                    count = self.refused
                # the count and length only: refused text is neither logged nor kept
                log.info("kiosk: refused prompt #%d (%d characters)", count, len(text))
                return Verdict(False, REFUSAL)
        return Verdict(True)


def _starts(pieces: list[str | None], i: int, steps: tuple[frozenset[str], ...]) -> bool:
    if i + len(steps) > len(pieces):
        return False
    return all(pieces[i + k] in step for k, step in enumerate(steps))
