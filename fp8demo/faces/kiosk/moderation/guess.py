"""Guesses about words that are on no list and are no real word: misspellings (nakid, boobz, secksy), compounds
(bigboobs, pornstar, nakedwoman) and wildcards (f*cking, p**n).

Every guess is about a word that the vocabulary does not know (vocabulary.py): a real word is judged as itself, so
"witch" is never a misspelled "bitch", nor "cocktail" a compound of "cock". Misspellings are also guessed about the
rarest dictionary forms, where misspellings that the web uses end up ("pennis"). Edit distances come from rapidfuzz
(optimal string alignment: a swap of two letters, nakde, counts one); guesses aim at the core words only (the
operator's list and the bundled English one), not at the long tails of the other bundled lists.
"""

from __future__ import annotations

import re

from rapidfuzz import process
from rapidfuzz.distance import OSA, Hamming

from . import vocabulary
from .lists import Lists

MIN_FUZZY = 5  # shorter words are too close to too many others ("nude": node, nuke, rude)
MIN_SOUND = 4  # sounding the same needs no edit: "sexi" is "sexy"
WILDCARDS = "*#%_?"
_SOUNDS = (("ph", "f"), ("ck", "k"), ("c", "k"), ("q", "k"), ("x", "ks"), ("z", "s"), ("kh", "k"), ("y", "i"))
_DOUBLE = re.compile(r"(.)\1+")
_WILDCARD_CHUNK = re.compile(r"^[^\W\d_]*(?:[*#%_?]+[^\W\d_]*)+$")


def max_distance(length: int) -> int:
    """Edits allowed for a word of this length: 1 from five letters, 2 from eight."""
    return 0 if length < MIN_FUZZY else 1 if length < 8 else 2


def sound(word: str) -> str:
    """A spelling that hides the usual sound-alike swaps (ph/f, c/k, x/ks, z/s, y/i) and doubled letters."""
    for written, said in _SOUNDS:
        word = word.replace(written, said)
    return _DOUBLE.sub(r"\1", word)


class Guesser:
    def __init__(self, lists: Lists, allowed_split) -> None:
        self.by_shape = lists.by_shape
        self.core = lists.core
        self.sound_words = {sound(word) for word in lists.core if len(word) >= MIN_SOUND and word.isalpha()}
        self.bases = lists.bases
        self.wildcards: dict[tuple[str, int], list[str]] = {**lists.by_shape, **lists.short}
        self.by_length: dict[int, list[str]] = {}
        for (_, length), words in self.wildcards.items():
            self.by_length.setdefault(length, []).extend(words)
        self.allowed_split = allowed_split  # pieces -> whether they are an allowed phrase (pussy willow)

    def misspelled(self, word: str) -> bool:
        """Whether a word sounds like a listed word, or is within a few edits of one (max_distance)."""
        if len(word) < MIN_SOUND or not word.isalpha():
            return False
        key = sound(word)
        if key in self.sound_words:
            return True
        if len(word) == MIN_SOUND:  # four letters: a listed word of five with one letter left out (nakd), or one
            # of four with two letters swapped (nued)
            longer = (base for base in self.by_shape.get((word[0], 5), ()) if base in self.bases)
            same = (base for base in self.by_shape.get((word[0], 4), ()) if base in self.bases)
            return any(_dropped_one(word, base) for base in longer) or any(_swapped(word, base) for base in same)
        k = max_distance(len(word))
        return bool(k) and _near(word, self.by_shape, k, self.bases)

    def compound(self, word: str) -> bool:
        """A word made of a listed word and real words (or listed ones): bigboobs, nakedwoman, sexdoll; unless the
        pieces are an allowed phrase (pussywillow)."""
        if len(word) < 6 or len(word) > 40 or not word.isalpha():
            return False
        split = self._split(word, 3)
        return split is not None and not self.allowed_split(split)

    def _split(self, word: str, parts: int, listed_yet: bool = False) -> list[str] | None:
        """Pieces of at least three letters, each listed or known, one of them listed; None when there is none."""
        n = len(word)
        for i in range(3, n - 2):
            left, right = word[:i], word[i:]
            # a listed word of three letters only starts a compound (sexdoll), never ends one (Middlesex, bluetit)
            left_listed = left in self.core and (i > 3 or not listed_yet and parts == 3)
            if not left_listed and not vocabulary.known(left):
                continue
            have = listed_yet or left_listed
            right_listed = right in self.core and len(right) > 3
            if (have or right_listed) and (right_listed or vocabulary.known(right)):
                return [left, right]
            # of three pieces, one at most has three letters: "vergadering" is no verga + der + ing
            if parts > 2 and len(right) >= 7 and (i > 3 or len(right) >= 8):
                rest = self._split(right, parts - 1, have)
                if rest is not None:
                    return [left, *rest]
        return None

    def wildcard(self, chunk: str) -> bool:
        """A word with letters hidden behind symbols (f*cking, p**n, sh#t) that fits a listed word."""
        chunk = chunk.strip(".,;:!()[]{}\"'")
        if not _WILDCARD_CHUNK.match(chunk):
            return False
        hidden = sum(c in WILDCARDS for c in chunk)
        shown = len(chunk) - hidden
        if shown < 2 or hidden > shown or hidden == len(chunk):
            return False
        query = "".join("\0" if c in WILDCARDS else c for c in chunk)
        choices = self.wildcards.get((query[0], len(query))) if query[0] != "\0" else self.by_length.get(len(query))
        if not choices:
            return False
        return process.extractOne(query, choices, scorer=Hamming.distance, score_cutoff=hidden) is not None


def _dropped_one(word: str, longer: str) -> bool:
    """Whether `word` is `longer` with one letter left out."""
    return any(longer[:i] + longer[i + 1 :] == word for i in range(1, len(longer)))


def _swapped(word: str, other: str) -> bool:
    """Whether `word` is `other` with two neighbouring letters swapped."""
    return any(other[:i] + other[i + 1] + other[i] + other[i + 2 :] == word for i in range(1, len(other) - 1))


def _near(word: str, index: dict[tuple[str, int], list[str]], k: int, bases: set[str]) -> bool:
    """Whether a listed word of the same first letter is within k edits. An inflected form counts only at one edit
    and not when it differs in the last letter alone: that is how names and other languages' words differ from an
    inflection (Dickel, dicked; analects, anales), while a misspelling of the listed word itself (naket) counts."""
    n = len(word)
    for length in range(n - k, n + k + 1):
        choices = index.get((word[0], length))
        if not choices:
            continue
        for choice, edits, _ in process.extract(word, choices, scorer=OSA.distance, score_cutoff=k, limit=8):
            if choice in bases or edits == 1 and not (len(choice) == n and choice[:-1] == word[:-1]):
                return True
    return False
