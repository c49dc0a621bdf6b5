"""Kiosk prompt moderation: a layered text filter that the server runs on every kiosk request.

Each layer undoes one family of evasions that got through a plain word-list filter when it was probed:

1. Characters: NFKC (full-width letters, ligatures, NBSP), invisible format characters dropped (U+200B, U+2063, soft
   hyphen), look-alikes from other scripts folded to Latin with Unicode's confusables data (package
   confusable_homoglyphs) and small capitals by their Unicode names, then casefold and accents stripped.
2. Leetspeak: $ -> s, 3 -> e, 0 -> o, 1 ! | -> i (and, in a second reading, l), @ -> a ... in words that also hold
   letters or other symbols, so that plain numbers stay numbers.
3. Words: anything but a letter or digit separates words, and letters stretched to three or more (naaaked) count
   once or twice. Split words are re-joined where a split is likely to be an evasion and unlikely to be a real
   boundary: pieces of one spaced chunk (n.ude, a-s-s) and runs of chunks of at most two characters (n u d e,
   nu de). "pen is" or "a sun dew" are never joined.
4. Allow-list: innocent phrases ("moby dick", "naked mole rat") are taken out whole before matching, so the bare
   word stays blocked.
5. Matching: whole words and phrases against the inflected forms of the lists (multilingual lists bundled with the
   glin-profanity package plus the operator's project list), never substrings, so "class", "Sussex" and
   "Scunthorpe" pass. Chinese and Japanese are written without spaces: their entries are found as substrings of
   the text with separators removed.

No torch and no network; the lists are compiled once per process on first use (about a second), after which a
2,000-character prompt is checked in well under 10 ms (1-5 ms measured on a busy, shared 2-core CPU; `--report`
below prints the figure).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import logging
import re
import threading
import time
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

REFUSAL = "Let's try a different idea: that prompt can't be shown on this screen. How about one of the suggestions?"

# Bundled word lists of glin-profanity (derived from LDNOOBW) -> the Snowball stemmer that checks their inflections.
# Chinese and Japanese entries are matched as substrings and need none.
BUNDLED = {
    "english": "english",
    "spanish": "spanish",
    "french": "french",
    "german": "german",
    "russian": "russian",
    "chinese": None,
    "japanese": None,
}
PROJECT_LANGUAGE = "english"  # the stemmer for the operator's own list

# Endings tried on each list word. A generated form is kept only when the language's stemmer reduces it to the same
# stem as the listed word: "butt" gets "butts" but not "butter", "spic" not "spicy", "cock" not "cocker".
_SUFFIXES = {
    "english": ("s", "es", "ed", "d", "ing", "er", "ers", "ies", "ied"),
    "spanish": ("s", "es", "a", "as", "o", "os"),
    "french": ("s", "e", "es", "x"),
    "german": ("e", "en", "n", "er", "es", "s", "em", "ern"),
    "russian": ("а", "я", "ы", "и", "е", "у", "ю", "о", "ой", "ом", "ем", "ам", "ям", "ами", "ями", "ах", "ях",
                "ов", "ев", "ей", "ый", "ий", "ая", "яя", "ое", "ее", "ые", "ие", "ого", "его", "ому", "ему", "ую",
                "юю", "ых", "их", "ым", "им", "ыми", "ими", "ал", "ала", "али", "ало", "ает", "ают", "ешь", "ет",
                "ут", "ют", "ит", "ат", "ят", "ишь", "ил", "ила", "или", "ть", "ся", "ться"),
}
# English lists hold inflected words too ("rimming"): endings go on the word, never on its stem ("rim").

_LEET = {"@": "a", "4": "a", "8": "b", "3": "e", "€": "e", "6": "g", "0": "o", "$": "s", "5": "s", "7": "t",
         "+": "t"}
_LEET_I = str.maketrans({**_LEET, "1": "i", "!": "i", "|": "i", "¡": "i"})
_LEET_L = str.maketrans({**_LEET, "1": "l", "!": "l", "|": "l", "¡": "l"})
_LEET_SYMBOL = re.compile("[@$€+!|¡]")  # leetspeak even without a letter beside them (@$$)
_LEET_ANY = re.compile("[" + re.escape("".join(_LEET)) + "1!|¡]")
_AMBIGUOUS = re.compile("[1!|¡]")  # i or l: both readings are checked

# Combining marks that are accents on Latin, Greek and Cyrillic letters; kana voicing marks (U+3099) are left alone
_ACCENTS = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
_CJK = re.compile("[\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\uff66-\uff9f]")
_STRETCHED = re.compile(r"(\w)\1\1+")
_CYRILLIC = re.compile("[\u0400-\u04ff]")
_WORD = re.compile(r"[^\W_]+")  # letters and digits of any script


# ---------------------------------------------------------------------------------------------------------------
# Layer 1: characters


@functools.cache
def _lookalikes() -> dict[str, str]:
    """Non-ASCII character -> the ASCII letter it imitates, from Unicode's confusables as shipped by
    confusable_homoglyphs. That table links look-alikes in pairs (κ -> ĸ -> ᴋ), so a character takes the first Latin
    letter within three links; small capitals (ᴋ) count as their letter, named so in the Unicode database."""
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
    # small capitals missing from that table, by their Unicode names: IPA, Phonetic Extensions, Latin Extended-D
    for code in (*range(0x0250, 0x02B0), *range(0x1D00, 0x1D80), *range(0xA720, 0xA800)):
        letter = _as_latin(chr(code), direct=False)
        if letter:
            table.setdefault(chr(code), letter)
    for char, target in list(table.items()):
        # capitals are linked (Cyrillic К -> K); give the lower-case letter (к) the same reading
        if char.lower() not in table and not char.lower().isascii():
            table[char.lower()] = target
    return table


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


def _as_latin(glyph: str, direct: bool = True) -> str | None:
    """An ASCII letter, one with combining marks (n̩), or a small capital (ᴋ), as its lower-case letter."""
    bare = _ACCENTS.sub("", unicodedata.normalize("NFD", glyph))
    if direct and len(bare) == 1 and bare.isascii() and bare.isalpha():
        return bare.casefold()
    name = unicodedata.name(glyph, "") if len(glyph) == 1 else ""
    if name.startswith("LATIN LETTER SMALL CAPITAL ") and len(name) == len("LATIN LETTER SMALL CAPITAL ") + 1:
        return name[-1].lower()
    return None


def fold(text: str) -> str:
    """Characters only: NFKC, no accents, no invisible characters, look-alikes as Latin, casefolded."""
    text = unicodedata.normalize("NFKC", text)
    if text.isascii():
        return text.casefold()
    # accents first, so that ё is seen as е, then look-alikes before and after casefolding (Cyrillic К and к)
    text = unicodedata.normalize("NFC", _ACCENTS.sub("", unicodedata.normalize("NFD", text)))
    table = _lookalikes()
    text = "".join(table.get(c, c) for c in text if not (unicodedata.category(c) == "Cf" or "\ufe00" <= c <= "\ufe0f"))
    return "".join(table.get(c, c) for c in text.casefold())


# ---------------------------------------------------------------------------------------------------------------
# Layers 2 and 3: readings of a text as words


@dataclass
class _Reading:
    pieces: list[str | None]  # words in order; None where an allowed phrase was taken out
    chunk: list[int]  # index of the whitespace-separated chunk each piece came from


def _readings(folded: str) -> Iterator[_Reading]:
    """The text read as words: symbols as separators, then with leetspeak (1 as i, then as l when present)."""
    chunks = folded.split()
    yield _split(chunks)
    if not _LEET_ANY.search(folded):
        return
    # symbols always count; digits only beside letters or symbols, so that plain numbers stay numbers
    leety = [bool(_LEET_SYMBOL.search(ch) or (_LEET_ANY.search(ch) and not ch.isdigit())) for ch in chunks]
    if not any(leety):
        return
    tables = [_LEET_I, _LEET_L] if _AMBIGUOUS.search(folded) else [_LEET_I]
    for table in tables:
        yield _split([ch.translate(table) if leet else ch for ch, leet in zip(chunks, leety, strict=True)])


def _split(chunks: list[str]) -> _Reading:
    pieces: list[str | None] = []
    owner: list[int] = []
    for i, chunk in enumerate(chunks):
        for piece in _WORD.findall(chunk):
            pieces.append(piece)
            owner.append(i)
    return _Reading(pieces, owner)


def _runs(reading: _Reading) -> Iterator[list[str | None]]:
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


def _joins_to(run: list[str | None], words: set[str], prefixes: set[str]) -> bool:
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


def _unstretched(word: str) -> set[str]:
    """A word with stretched letters (naaaked, sexxx) written with each run of three or more as one and as two."""
    return {_STRETCHED.sub(r"\1", word), _STRETCHED.sub(r"\1\1", word)}


# ---------------------------------------------------------------------------------------------------------------
# Lists


def _entry_words(entry: str, folded: bool = True) -> tuple[str, ...]:
    """A list entry as words; symbols inside a word are leetspeak or spelling (a$$, f*ck, g-spot). Unfolded words
    (Cyrillic left as it is) are what a stemmer understands."""
    words = []
    for chunk in (fold(entry) if folded else unicodedata.normalize("NFKC", entry).casefold()).split():
        word = "".join(_WORD.findall(chunk.translate(_LEET_I) if _LEET_SYMBOL.search(chunk) else chunk))
        if word:
            words.append(word)
    return tuple(words)


@functools.cache
def _stemmer(language: str):
    import snowballstemmer  # pure Python; imported only when lists are compiled

    return snowballstemmer.stemmer(language)


def _forms(word: str, language: str | None) -> set[str]:
    """The word and those of its inflections that its language's stemmer confirms."""
    forms = {word}
    if not language or not word.isalpha() or len(word) < 3:
        return forms
    if language == "russian" and not _CYRILLIC.search(word):
        return forms  # transliterations: no stemmer knows their spelling
    stem = _stemmer(language).stemWord
    target = stem(word)
    if language == "english":
        bases = {word, word + word[-1]}  # strip -> stripping
        if word[-1] in "ey":
            bases.add(word[:-1])  # rape -> raping, party -> parties
    else:  # dictionary forms: endings go on the stem and in place of the word's own (голый -> голая, puta -> putos)
        bases = {word[:-1], word[:-2]} | ({target} if len(target) >= 3 else set())
        if language != "russian":
            bases.add(word)
    candidates = {base + suffix for base in bases for suffix in _SUFFIXES[language]}
    forms.update(c for c in candidates if stem(c) == target)
    return forms


def read_list(path: Path) -> list[str]:
    """Lines of a list file, without blank lines and # comments."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


@functools.cache
def bundled_entries(language: str) -> tuple[str, ...]:
    """One language's word list as shipped by the glin-profanity package (read as data; its filter is not used)."""
    spec = importlib.util.find_spec("glin_profanity")
    if spec is None or spec.origin is None:
        raise RuntimeError("kiosk moderation needs the glin-profanity package (pip install -r requirements.txt)")
    path = Path(spec.origin).parent / "data" / "dictionaries" / f"{language}.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    return tuple(w for w in data["words"] if isinstance(w, str) and w.strip())


class _Lists:
    """Compiled lists: inflected single words, phrases by their first word, CJK substrings, symbol entries."""

    def __init__(self) -> None:
        self.words: set[str] = set()
        self.prefixes: set[str] = set()  # of every listed word, to cut re-joining short
        self.phrases: dict[str, list[tuple[frozenset[str], ...]]] = {}
        self.cjk: set[str] = set()
        self.symbols: set[str] = set()

    def add(self, entry: str, language: str | None) -> None:
        if _CJK.search(entry):
            self.cjk.add("".join(_WORD.findall(fold(entry))))
            return
        words = _entry_words(entry)
        if not words:
            self.symbols.add(fold(entry).strip())  # an emoji entry
            return
        # inflect before folding: the stemmer knows "голая", not its Latin look-alike spelling
        last = {"".join(_entry_words(form)) for form in _forms(_entry_words(entry, folded=False)[-1], language)}
        if len(words) == 1:
            self.words |= last
        else:
            self.words |= {"".join(words[:-1]) + w for w in last}  # written as one word: selfharm
            steps = tuple(frozenset({w}) for w in words[:-1]) + (frozenset(last),)
            self.phrases.setdefault(words[0], []).append(steps)


@functools.cache
def _compiled(terms: tuple[str, ...], removed: frozenset[tuple[str, ...]], languages: tuple[str, ...]) -> _Lists:
    lists = _Lists()
    for language in languages:
        for entry in bundled_entries(language):
            if _entry_words(entry) not in removed:
                lists.add(entry, BUNDLED[language])
    for entry in terms:
        lists.add(entry, PROJECT_LANGUAGE)
    lists.prefixes = {word[:k] for word in lists.words for k in range(1, len(word))}
    return lists


# ---------------------------------------------------------------------------------------------------------------
# Layer 4: allowed phrases


class _Allowed:
    def __init__(self, phrases: Iterable[str]) -> None:
        self.phrases: dict[str, list[tuple[frozenset[str], ...]]] = {}
        self.cjk: list[str] = []
        for phrase in phrases:
            folded = fold(phrase)
            if _CJK.search(folded):
                self.cjk.append("".join(_WORD.findall(folded)))
                continue
            words = _WORD.findall(folded)  # pieces, so "Gore-Tex" also matches "gore tex"
            if words:
                last = words[-1]
                steps = tuple(frozenset({w}) for w in words[:-1]) + (frozenset({last, last + "s", last + "es"}),)
                self.phrases.setdefault(words[0], []).append(steps)
        self.cjk.sort(key=len, reverse=True)

    def remove(self, reading: _Reading) -> None:
        """Blank out allowed phrases in place; what is left cannot be joined across the gap."""
        pieces = reading.pieces
        for i, piece in enumerate(pieces):
            for steps in self.phrases.get(piece, ()) if piece is not None else ():
                if _starts(pieces, i, steps):
                    pieces[i : i + len(steps)] = [None] * len(steps)
                    break


def _starts(pieces: list[str | None], i: int, steps: tuple[frozenset[str], ...]) -> bool:
    if i + len(steps) > len(pieces):
        return False
    return all(pieces[i + k] in step for k, step in enumerate(steps))


# ---------------------------------------------------------------------------------------------------------------
# Layer 5: the moderator


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    message: str = ""  # shown to the visitor; never repeats the blocked word


class Moderator:
    """Blocks prompts that hold a listed word or phrase, however it is spelled, unless it is part of an allowed
    phrase.

    `terms` are the operator's own entries; a term written "-entry" drops that entry from the bundled lists (some
    are innocent in an image prompt, like Spanish "martillo", hammer). `languages` picks the bundled lists; pass ()
    to use `terms` alone.
    """

    def __init__(self, terms: Iterable[str], allowed: Iterable[str] = (), languages: Iterable[str] = tuple(BUNDLED)):
        terms = list(terms)
        removed = frozenset(_entry_words(t[1:]) for t in terms if t.startswith("-"))
        added = tuple(t for t in terms if not t.startswith("-"))
        self._lists = _compiled(added, removed, tuple(languages))
        self._allowed = _Allowed(allowed)
        self.refused = 0
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: Path, allowlist: Path | None = None) -> Moderator:
        """The blocklist at `path`, and the allow-list beside it (allowlist.txt) unless another is given."""
        path = Path(path)
        allowlist = allowlist or path.with_name("allowlist.txt")
        allowed = read_list(allowlist) if allowlist.exists() else []
        return cls(read_list(path), allowed)

    def matches(self, text: str) -> bool:
        folded = fold(text)
        lists = self._lists
        if any(s in folded for s in lists.symbols):
            return True
        if lists.cjk and _CJK.search(folded) and self._cjk_match(folded):
            return True
        for reading in _readings(folded):
            self._allowed.remove(reading)
            if self._words_match(reading):
                return True
        return False

    def _cjk_match(self, folded: str) -> bool:
        stream = "".join(_WORD.findall(folded))  # no spaces in these languages: separators are evasions
        for phrase in self._allowed.cjk:
            stream = stream.replace(phrase, "|")
        return any(entry in stream for entry in self._lists.cjk)

    def _words_match(self, reading: _Reading) -> bool:
        words, phrases = self._lists.words, self._lists.phrases
        pieces = reading.pieces
        for i, piece in enumerate(pieces):
            if piece is None:
                continue
            if piece in words or (_STRETCHED.search(piece) and _unstretched(piece) & words):
                return True
            starting = phrases.get(piece)
            if starting and any(_starts(pieces, i, steps) for steps in starting):
                return True
        return any(_joins_to(run, words, self._lists.prefixes) for run in _runs(reading))

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


# ---------------------------------------------------------------------------------------------------------------
# Report: python -m fp8demo.faces.kiosk.moderation --report, from a checkout (the published prompt lists are test data,
# not part of the package: the server never reads them)

DATA = Path("tests") / "data"


def report(moderator: Moderator, evasions: list[str], innocent: list[str]) -> dict[str, float]:
    """Share of evasions blocked, share of innocent prompts wrongly refused, and the time for a long prompt."""
    blocked = sum(moderator.matches(p) for p in evasions)
    refused = sum(moderator.matches(p) for p in innocent)
    long_prompt = (" ".join(innocent) * 20)[:2000]
    start = time.perf_counter()
    for _ in range(20):
        moderator.matches(long_prompt)
    return {
        "evasions": len(evasions),
        "blocked": blocked / len(evasions),
        "innocent": len(innocent),
        "wrongly_refused": refused / len(innocent),
        "ms_per_2000_chars": (time.perf_counter() - start) / 20 * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    from ... import config

    parser = argparse.ArgumentParser(prog="python -m fp8demo.faces.kiosk.moderation",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--report", action="store_true", help="print the shares blocked and wrongly refused")
    parser.add_argument("--blocklist", type=Path, default=config.field_default(config.KioskConfig, "blocklist"))
    parser.add_argument("--evasions", type=Path, default=DATA / "moderation_evasions.txt")
    parser.add_argument("--innocent", type=Path, default=DATA / "moderation_innocent.txt")
    parser.add_argument("--misses", type=Path, default=DATA / "moderation_known_misses.txt")
    args = parser.parse_args(argv)
    if not args.report:
        parser.print_help()
        return 0
    moderator = Moderator.from_file(args.blocklist)
    evasions = read_list(args.evasions) + (read_list(args.misses) if args.misses.exists() else [])
    r = report(moderator, evasions, read_list(args.innocent))
    print(f"evasions blocked: {r['blocked']:.1%} of {r['evasions']}")
    print(f"innocent prompts wrongly refused: {r['wrongly_refused']:.1%} of {r['innocent']}")
    print(f"a 2,000-character prompt: {r['ms_per_2000_chars']:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
