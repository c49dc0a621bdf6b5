"""Known words: what a real word in a claimed language looks like, so that the guesses (fuzzy matching, splitting
compounds) are only made about words that are no real word ("nakid", "bigboobs"), never about "witch", "books" or
"cocktail".

The word-frequency lists of the pyspellchecker package (English, Spanish, French, German, Italian, Portuguese,
Russian, Arabic; about 1.3 million words) are read as data; its spell checker is not used. Words are kept as 64-bit
hashes in one sorted array with their languages (13 MB instead of ~130 MB of str), loaded once per process in
about two seconds.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
import unicodedata
from pathlib import Path

import numpy as np

from .text import ACCENTS, _fold_table

VOCABULARY_LANGUAGES = ("en", "es", "fr", "de", "it", "pt", "ru", "ar")

# Small words that say which language a prompt is written in (for the allow-list's language sections)
FUNCTION_WORDS = {
    "english": "a an the and with of in on at by under over from into its his her their this that is are".split(),
    "spanish": "el la los las un una unos unas y con de del en al por para sobre bajo entre muy su sus es".split(),
    "french": "le la les un une des et avec de du en au aux dans sur sous pour par son sa ses est".split(),
    "german": "der die das ein eine einen einem dem den des und mit im am auf unter von zu ist".split(),
    "italian": "il lo la i gli le un uno una e con di del della nel nella sul sulla per tra fra è".split(),
    "portuguese": "o a os as um uma uns umas e com de do da dos das no na nos nas em por para sobre é".split(),
}


def _fold_word(word: str) -> str:
    """fold() for one dictionary word, without NFKC and the invisible characters it never holds."""
    word = word.casefold()
    if word.isascii():
        return word
    word = unicodedata.normalize("NFD", word).translate(_strip_table())
    if not unicodedata.is_normalized("NFC", word):
        word = unicodedata.normalize("NFC", word)
    return word.translate(_fold_table()).casefold().translate(_fold_table())


@functools.cache
def _strip_table() -> dict[int, None]:
    return {code: None for code in range(0x0300, 0xFE30) if ACCENTS.match(chr(code))}


@functools.cache
def _table() -> tuple[np.ndarray, np.ndarray]:
    """Sorted word hashes, and for each the languages that know the word (bit i: VOCABULARY_LANGUAGES[i]) and, in
    the top bit, whether it is more than a dictionary form: each list gives its rarest words one lowest count (about
    two thirds of them), among them misspellings that the web uses ("pennis") and rare forms ("penus")."""
    spec = importlib.util.find_spec("spellchecker")
    if spec is None or spec.origin is None:
        raise RuntimeError("kiosk moderation needs the pyspellchecker package (pip install -r requirements.txt)")
    folder = Path(spec.origin).parent / "resources"
    hashes, bits = [], []
    for i, language in enumerate(VOCABULARY_LANGUAGES):
        counts = json.loads(gzip.decompress((folder / f"{language}.json.gz").read_bytes()))
        floor = min(counts.values())
        words = [w for w in counts if w.isalpha()]
        hashes.append(np.fromiter((hash(w if w.isascii() else _fold_word(w)) for w in words), np.int64, len(words)))
        seen = np.fromiter((counts[w] > floor for w in words), bool, len(words))
        bits.append(np.where(seen, (1 << i) | SEEN, 1 << i).astype(np.uint16))
    unique, inverse = np.unique(np.concatenate(hashes), return_inverse=True)
    mask = np.zeros(len(unique), np.uint16)
    np.bitwise_or.at(mask, inverse, np.concatenate(bits))
    return unique, mask


SEEN = 1 << 15


def load() -> None:
    """Read the lists now (about two seconds) rather than on the first prompt."""
    _table()


def known_in(word: str) -> int:
    """The languages that know a folded word, as bits (VOCABULARY_LANGUAGES[i] is bit i), with SEEN set when the
    word is more than a dictionary form; 0 for none."""
    table, mask = _table()
    h = hash(word)
    i = int(table.searchsorted(h))
    return int(mask[i]) if i < len(table) and int(table[i]) == h else 0


def seen(word: str) -> bool:
    """Whether a folded word is more than a dictionary form of the rarest kind: a misspelling is guessed about
    unless it is."""
    return bool(known_in(word) & SEEN)


def known(word: str) -> bool:
    """Whether a folded word is a word of one of the vocabulary's languages."""
    return known_in(word) & ~SEEN != 0


ENGLISH = 1 << VOCABULARY_LANGUAGES.index("en")


_NAMES = {"en": "english", "es": "spanish", "fr": "french", "de": "german", "it": "italian", "pt": "portuguese",
          "ru": "russian", "ar": "arabic"}


def languages(words: list[str | None]) -> set[str]:
    """The languages a prompt is most likely written in: those that know most of its words, small words counting
    twice (un, el, o, der); empty when none knows any."""
    votes = dict.fromkeys(_NAMES.values(), 0)
    small = _function_words()
    for word in words:
        if word is None:
            continue
        bits = known_in(word)
        for i, code in enumerate(VOCABULARY_LANGUAGES):
            if bits >> i & 1:  # SEEN is bit 15, past the languages
                votes[_NAMES[code]] += 1
        for language, vocab in small.items():
            votes[language] += word in vocab
    best = max(votes.values())
    return {language for language, n in votes.items() if n == best} if best else set()


@functools.cache
def _function_words() -> dict[str, frozenset[str]]:
    return {lang: frozenset(_fold_word(w) for w in words) for lang, words in FUNCTION_WORDS.items()}
