"""Layers 1-3: a prompt as folded characters, then as words (plain and as leetspeak), then split words re-joined."""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_LEET = {"@": "a", "4": "a", "8": "b", "3": "e", "€": "e", "6": "g", "9": "g", "0": "o", "$": "s", "5": "s",
         "7": "t", "+": "t"}
LEET_I = str.maketrans({**_LEET, "1": "i", "!": "i", "|": "i", "¡": "i"})
_LEET_L = str.maketrans({**_LEET, "1": "l", "!": "l", "|": "l", "¡": "l"})
LEET_SYMBOL = re.compile("[@$€+!|¡]")  # leetspeak even without a letter beside them (@$$)
_LEET_ANY = re.compile("[" + re.escape("".join(_LEET)) + "1!|¡]")
_AMBIGUOUS = re.compile("[1!|¡]")  # i or l: both readings are checked

# Combining marks that are accents on Latin, Greek and Cyrillic letters; kana voicing marks (U+3099) are left alone
ACCENTS = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
# Chinese, Japanese and Korean: matched inside text (no spaces in the first two; particles glued on in Korean)
CJK = re.compile("[\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\uff66-\uff9f]")
STRETCHED = re.compile(r"(\w)\1\1+")
_SPELLED = re.compile(r"(?<![^\W_])[^\W_]([^\w\s]|_)(?:[^\W_]\1)+[^\W_]?(?![^\W_])")  # n.u.d.e, b.r.a., s-e-x
WORD = re.compile(r"[^\W_]+")  # letters and digits of any script


# ---------------------------------------------------------------------------------------------------------------
# Layer 1: characters


@functools.cache
def _lookalikes() -> dict[int, str]:
    """Non-ASCII character -> the ASCII letter it imitates, from Unicode's confusables as shipped by
    confusable_homoglyphs. That table links look-alikes in pairs (κ -> ĸ -> ᴋ), so a character takes the first Latin
    letter within three links; small capitals (ᴋ) and letters drawn as emoji (🅽, 🇳) count as their letter, named
    so in the Unicode database. Returned as a str.translate table."""
    # about 50 ms, once per process
    spec = importlib.util.find_spec("confusable_homoglyphs")  # read its data file; importing the module parses it too
    path = Path(spec.origin).parent / "confusables.json"
    links = {
        char: [g["c"] for g in glyphs]
        for char, glyphs in json.loads(path.read_text(encoding="utf-8")).items()
        if len(char) == 1
    }
    table: dict[str, str] = {}
    for char in links:
        if char.isascii():
            continue
        target = _nearest_letter(char, links)
        if target:
            table[char] = target
    # small capitals missing from that table, by their Unicode names: IPA, Phonetic Extensions, Latin Extended-D;
    # squared and circled letters and regional indicators (emoji letters: 🅽🆄🅳🅴, 🇳🇺🇩🇪)
    for code in (*range(0x0250, 0x02B0), *range(0x1D00, 0x1D80), *range(0xA720, 0xA800), *range(0x1F110, 0x1F200)):
        letter = _as_latin(chr(code), direct=False)
        if letter:
            table.setdefault(chr(code), letter)
    for char, target in list(table.items()):
        # capitals are linked (Cyrillic К -> K); give the lower-case letter (к) the same reading
        if char.lower() not in table and not char.lower().isascii():
            table[char.lower()] = target
    return {ord(char): target for char, target in table.items()}


def _nearest_letter(char: str, links: dict[str, list[str]]) -> str | None:
    seen, frontier = {char}, [char]
    for _ in range(3):
        frontier = [g for c in frontier for g in links.get(c, ()) if g not in seen]
        seen.update(frontier)
        for glyph in frontier:
            letter = _as_latin(glyph)
            if letter:
                return letter
    return _as_latin(char, direct=False)


_LETTER_NAMES = ("LATIN LETTER SMALL CAPITAL ", "REGIONAL INDICATOR SYMBOL LETTER ")
_EMOJI_LETTER = re.compile(r"^(NEGATIVE )?(SQUARED|CIRCLED) LATIN CAPITAL LETTER [A-Z]$")


def _as_latin(glyph: str, direct: bool = True) -> str | None:
    """An ASCII letter, one with combining marks (n̩), a small capital (ᴋ) or an emoji letter, as its lower case."""
    bare = ACCENTS.sub("", unicodedata.normalize("NFD", glyph))
    if direct and len(bare) == 1 and bare.isascii() and bare.isalpha():
        return bare.casefold()
    name = unicodedata.name(glyph, "") if len(glyph) == 1 else ""
    if any(name.startswith(p) and len(name) == len(p) + 1 for p in _LETTER_NAMES) or _EMOJI_LETTER.match(name):
        return name[-1].lower()
    return None


def _invisible(char: str) -> bool:
    return unicodedata.category(char) == "Cf" or "\ufe00" <= char <= "\ufe0f"


@functools.cache
def _fold_table() -> dict[int, str | None]:
    """Look-alikes as Latin letters, and the invisible characters that Python knows in one table."""
    table: dict[int, str | None] = dict(_lookalikes())
    for code in (0x00AD, 0x061C, *range(0x200B, 0x2010), *range(0x202A, 0x202F), *range(0x2060, 0x2070),
                 *range(0xFE00, 0xFE10), 0xFEFF, *range(0xE0000, 0xE0080)):
        if _invisible(chr(code)):
            table[code] = None
    return table


def fold(text: str) -> str:
    """Characters only: NFKC, no accents, no invisible characters, look-alikes as Latin, casefolded."""
    text = unicodedata.normalize("NFKC", text)
    if text.isascii():
        return text.casefold()
    # accents first, so that ё is seen as е, then look-alikes before and after casefolding (Cyrillic К and к)
    text = unicodedata.normalize("NFC", ACCENTS.sub("", unicodedata.normalize("NFD", text)))
    table = _fold_table()
    text = "".join(c for c in text.translate(table) if not _invisible(c))
    return text.casefold().translate(table)


# ---------------------------------------------------------------------------------------------------------------
# Layers 2 and 3: readings of a text as words


@dataclass
class Reading:
    pieces: list[str | None]  # words in order; None where an allowed phrase was taken out
    chunk: list[int]  # index of the whitespace-separated chunk each piece came from
    chunks: list[str]  # the whitespace-separated chunks themselves, symbols kept (f*ck)


def readings(folded: str) -> Iterator[Reading]:
    """The text read as words: symbols as separators, then with letters spelled out one by one joined (b.r.a. is
    bra, so that phrases see it), then with leetspeak (1 as i, then as l when present)."""
    chunks = folded.split()
    yield split(chunks)
    spelled = [_SPELLED.sub(lambda m: m.group(0).replace(m.group(1), ""), ch) for ch in chunks]
    if spelled != chunks:
        yield split(spelled)
    if not _LEET_ANY.search(folded):
        return
    # symbols always count; digits only beside letters or symbols, so that plain numbers stay numbers
    leety = [bool(LEET_SYMBOL.search(ch) or (_LEET_ANY.search(ch) and not ch.isdigit())) for ch in chunks]
    if not any(leety):
        return
    tables = [LEET_I, _LEET_L] if _AMBIGUOUS.search(folded) else [LEET_I]
    for table in tables:
        yield split([ch.translate(table) if leet else ch for ch, leet in zip(chunks, leety, strict=True)])


def split(chunks: list[str]) -> Reading:
    pieces: list[str | None] = []
    owner: list[int] = []
    for i, chunk in enumerate(chunks):
        for piece in WORD.findall(chunk):
            pieces.append(piece)
            owner.append(i)
    return Reading(pieces, owner, chunks)


def runs(reading: Reading) -> Iterator[list[str | None]]:
    """Pieces that may be one split word: those of one chunk (n.ude, a-s-s), and runs of chunks of at most two
    characters (n u d e, nu de). A longer chunk breaks a run, so real words next to each other are never joined."""
    chunks: list[list[str | None]] = []
    last = -1
    for piece, owner in zip(reading.pieces, reading.chunk, strict=True):
        if owner != last:
            chunks.append([])
            last = owner
        chunks[-1].append(piece)
    yield from (pieces for pieces in chunks if len(pieces) > 1)
    run: list[str | None] = []
    for pieces in chunks + [[None]]:
        if None not in pieces and len(text := "".join(pieces)) <= 2:  # type: ignore[arg-type]
            run.append(text)
            continue
        if len(run) > 1:
            yield run
        run = []


def joins_to(run: list[str | None], words: set[str], prefixes: set[str]) -> bool:
    """Whether consecutive pieces of the run join into a listed word. Joins stop as soon as they are no prefix of a
    listed word, which keeps a long run of single letters linear (a 2,000-character "a a a ..." takes ~1 ms)."""
    n = len(run)
    for i in range(n):
        joined, j = run[i], i + 1
        while joined is not None and j < n and run[j] is not None:
            joined += run[j]  # type: ignore[operator]
            if joined in words:
                return True
            if joined not in prefixes:
                break
            j += 1
    return False


def unstretched(word: str) -> set[str]:
    """A word with stretched letters (naaaked, sexxx) written with each run of three or more as one and as two."""
    return {STRETCHED.sub(r"\1", word), STRETCHED.sub(r"\1\1", word)}
