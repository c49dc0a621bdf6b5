"""Word lists: the bundled multilingual lists, the operator's list in language sections, and their inflections."""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import unicodedata
from collections import defaultdict
from pathlib import Path

from . import vocabulary
from .text import CJK, LEET_I, LEET_SYMBOL, WORD, fold

# The claimed languages: bundled glin-profanity list (derived from LDNOOBW) -> the Snowball stemmer that checks
# inflections. Chinese, Japanese and Korean entries are matched inside text and need none.
BUNDLED = {
    "english": "english",
    "spanish": "spanish",
    "french": "french",
    "german": "german",
    "italian": "italian",
    "portuguese": "portuguese",
    "russian": "russian",
    "arabic": "arabic",
    "chinese": None,
    "japanese": None,
    "korean": None,
}
PROJECT_LANGUAGE = "english"  # the operator's entries before any [language] line

# Endings tried on each list word, by the kind of word its ending shows (a verb's infinitive, a noun or adjective).
# A generated form is kept only when the language's stemmer reduces it to the same stem as the listed word: "butt"
# gets "butts" but not "butter", "spic" not "spicy", "cock" not "cocker". Verb endings go only on verbs of their
# own class, so French "jouir" never yields "jouer" (both stem to "jou").
_NOMINAL = {
    "english": ("s", "es", "ed", "d", "ing", "er", "ers", "ies", "ied"),
    "spanish": ("s", "es", "a", "as", "o", "os"),
    "french": ("s", "e", "es", "x"),
    "german": ("e", "en", "n", "er", "es", "s", "em", "ern"),
    "italian": ("a", "e", "i", "o"),
    "portuguese": ("s", "a", "as", "o", "os", "es"),
    "russian": ("а", "я", "ы", "и", "е", "у", "ю", "о", "ой", "ом", "ем", "ам", "ям", "ами", "ями", "ах", "ях",
                "ов", "ев", "ей", "ый", "ий", "ая", "яя", "ое", "ее", "ые", "ие", "ого", "его", "ому", "ему", "ую",
                "юю", "ых", "их", "ым", "им", "ыми", "ими", "ал", "ала", "али", "ало", "ает", "ают", "ешь", "ет",
                "ут", "ют", "ит", "ат", "ят", "ишь", "ил", "ила", "или", "ть", "ся", "ться", "ается", "аются",
                "ется", "ются", "ешься", "лся", "лась", "лись", "ясь", "ющиеся", "ющийся", "ющая", "ющие", "ющаяся"),
}
_VERBS = {  # infinitive ending -> endings that replace it
    "spanish": {
        "ar": ("o", "as", "a", "amos", "an", "é", "ó", "aba", "aban", "ando", "ado", "ada", "ados", "adas", "arse",
               "ándose", "arla", "arlo", "ándola", "e", "en", "es"),
        "er": ("o", "es", "e", "emos", "en", "í", "ió", "ía", "ían", "iendo", "ido", "ida", "idos", "idas", "erse",
               "iéndose", "a", "an"),
        "ir": ("o", "es", "e", "imos", "en", "í", "ió", "ía", "ían", "iendo", "ido", "ida", "idos", "idas", "irse",
               "iéndose", "a", "an"),
    },
    "french": {
        "er": ("e", "es", "ent", "é", "ée", "és", "ées", "ant", "ait", "aient", "ez", "ons", "ais"),
        "ir": ("is", "it", "issent", "issant", "i", "ie", "is", "ies", "issait"),
    },
    "italian": {
        "are": ("o", "i", "a", "iamo", "ate", "ano", "ato", "ata", "ati", "ando", "ava", "avano", "arsi", "andosi"),
        "ere": ("o", "i", "e", "iamo", "ete", "ono", "uto", "uta", "uti", "endo", "eva", "evano", "ersi"),
        "ire": ("o", "i", "e", "iamo", "ite", "ono", "ito", "ita", "iti", "endo", "iva", "ivano", "irsi"),
    },
    "portuguese": {
        "ar": ("o", "a", "as", "am", "amos", "ou", "ei", "ava", "avam", "ando", "ado", "ada", "ados", "adas", "e",
               "em"),
        "er": ("o", "e", "es", "em", "emos", "eu", "i", "ia", "iam", "endo", "ido", "ida", "idos", "idas", "a",
               "am"),
        "ir": ("o", "e", "es", "em", "imos", "iu", "i", "ia", "iam", "indo", "ido", "ida", "idos", "idas", "a",
               "am"),
    },
    "german": {"en": ("e", "st", "t", "te", "ten", "test", "tet", "end")},
}
_ARABIC_SUFFIXES = ("", "ة", "ه", "ات", "ي", "ية", "يات", "ين", "ون", "ها", "هم", "ان", "تين")
# Arabic writes the article and conjunctions onto the word: العارية, والعاري
_ARABIC_PREFIXES = ("", "ال", "و", "وال", "ب", "بال", "ل", "لل", "ف", "فال", "ك")
_CYRILLIC = re.compile("[\u0400-\u04ff]")
_ARABIC = re.compile("[\u0600-\u06ff]")


def read_list(path: Path) -> list[str]:
    """Lines of a list file, without blank lines and # comments."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


_SECTION = re.compile(r"^\[([a-z]+)\]$")


def read_sections(lines: list[str], default: str = PROJECT_LANGUAGE) -> list[tuple[str, str]]:
    """(language, entry) for the entries of a list: a line "[spanish]" starts that language's section."""
    language, entries = default, []
    for line in lines:
        section = _SECTION.match(line)
        if section:
            language = section.group(1)
            if language not in BUNDLED:
                raise ValueError(f"unknown language section [{language}]: one of {', '.join(BUNDLED)}")
            continue
        entries.append((language, line))
    return entries


@functools.cache
def bundled_entries(language: str) -> tuple[str, ...]:
    """One language's word list as shipped by the glin-profanity package (read as data; its filter is not used)."""
    spec = importlib.util.find_spec("glin_profanity")
    if spec is None or spec.origin is None:
        raise RuntimeError("kiosk moderation needs the glin-profanity package (pip install -r requirements.txt)")
    path = Path(spec.origin).parent / "data" / "dictionaries" / f"{language}.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    return tuple(dict.fromkeys(w for w in data["words"] if isinstance(w, str) and w.strip()))


def entry_words(entry: str, folded: bool = True) -> tuple[str, ...]:
    """A list entry as words; symbols inside a word are leetspeak or spelling (a$$, f*ck, g-spot). Unfolded words
    (Cyrillic left as it is) are what a stemmer understands."""
    words = []
    for chunk in (fold(entry) if folded else unicodedata.normalize("NFKC", entry).casefold()).split():
        word = "".join(WORD.findall(chunk.translate(LEET_I) if LEET_SYMBOL.search(chunk) else chunk))
        if word:
            words.append(word)
    return tuple(words)


@functools.cache
def stemmer(language: str):
    import snowballstemmer  # pure Python; imported only when lists are compiled

    return snowballstemmer.stemmer(language)


def forms(word: str, language: str | None) -> set[str]:
    """The word and those of its inflections that its language's stemmer confirms."""
    found = {word}
    if not language or not word.isalpha() or len(word) < 3:
        return found
    if language == "russian" and not _CYRILLIC.search(word) or language == "arabic" and not _ARABIC.search(word):
        return found  # transliterations: no stemmer knows their spelling
    stem = stemmer(language).stemWord
    target = stem(word)
    if language == "english":
        bases = {word, word + word[-1]}  # strip -> stripping
        if word[-1] in "ey":
            bases.add(word[:-1])  # rape -> raping, party -> parties
        candidates = {base + suffix for base in bases for suffix in _NOMINAL[language]}
    elif language == "arabic":
        bases = {word, word[:-1]} if word[-1] in "ةهي" else {word}
        candidates = {p + b + s for p in _ARABIC_PREFIXES for b in bases for s in _ARABIC_SUFFIXES}
    elif language == "russian":  # dictionary forms: endings in place of the word's own (голый -> голая)
        bases = {word[:-1], word[:-2]} | ({target} if len(target) >= 3 else set())
        candidates = {base + suffix for base in bases for suffix in _NOMINAL[language]}
    else:
        verb = next((e for e in _VERBS.get(language, {}) if word.endswith(e) and len(word) > len(e) + 2), None)
        if verb:
            base = word[: -len(verb)]
            candidates = {base + ending for ending in _VERBS[language][verb]}
            if language == "german":
                candidates.add("ge" + base + "t")  # gefickt
        else:  # nouns and adjectives: their own ending swapped or one added (puta -> putas, putos; nackt -> nackte)
            bases = {word, word[:-1]} if word[-1] in "aeiou" else {word}
            candidates = {base + suffix for base in bases for suffix in _NOMINAL[language]}
    found.update(c for c in candidates if stem(c) == target or language == "german" and c.startswith("ge"))
    return found


Steps = tuple[frozenset[str], ...]


class Lists:
    """Compiled lists: inflected single words, phrases by their first word, CJK substrings, symbol entries, parts of
    words (entries written with *), and the core words by first letter and length for fuzzy matching."""

    def __init__(self) -> None:
        self.words: set[str] = set()
        self.core: set[str] = set()  # single words that guesses aim at
        self.bases: set[str] = set()  # core words as they are written in a list, not inflected
        self.short: dict[tuple[str, int], list[str]] = defaultdict(list)  # core words of three letters (sex)
        self.prefixes: set[str] = set()  # of every listed word, to cut re-joining short
        self.phrases: dict[str, list[Steps]] = {}
        self.cjk: set[str] = set()
        self.symbols: set[str] = set()
        self.parts: dict[str, set[str]] = {"start": set(), "end": set(), "inside": set()}
        self.part_pattern: re.Pattern[str] | None = None
        self.by_shape: dict[tuple[str, int], list[str]] = defaultdict(list)  # (first letter, length) -> words

    def add(self, entry: str, language: str | None, core: bool = True) -> None:
        """Compile one entry; `core` entries (the operator's and the bundled English ones) are also the words that
        guesses aim at, the long tails of the other bundled lists only match as written and inflected."""
        if CJK.search(entry):
            self.cjk.add("".join(WORD.findall(fold(entry))))
            return
        starred = entry.strip()
        if len(starred) > 1 and "*" in (starred[0], starred[-1]) and " " not in starred:
            part = "".join(entry_words(starred.strip("*")))
            kind = "inside" if starred[0] == starred[-1] == "*" else "start" if starred[-1] == "*" else "end"
            if len(part) >= 3:
                self.parts[kind].add(part)
            return
        words = entry_words(entry)
        if not words:
            self.symbols.add(fold(entry).strip())  # an emoji entry
            return
        # inflect before folding: the stemmer knows "голая", not its Latin look-alike spelling
        own = entry_words(entry, folded=False)[-1]
        last = {"".join(entry_words(form)) for form in forms(own, language)}
        if language not in (None, "english"):
            # an inflection that is an English word is left out ("chatter" from French "chatte"): the prompt is
            # more likely English than anything else
            last = {f for f in last if f == words[-1] or not vocabulary.known_in(f) & vocabulary.ENGLISH}
        if len(words) == 1:
            self.words |= last
            if core:
                self.core |= last
                self.bases.add(words[0])
        else:
            self.words |= {"".join(words[:-1]) + w for w in last}  # written as one word: selfharm
            steps = tuple(frozenset({w}) for w in words[:-1]) + (frozenset(last),)
            self.phrases.setdefault(words[0], []).append(steps)

    def finish(self) -> None:
        self.prefixes = {word[:k] for word in self.words for k in range(1, len(word))}
        alternatives = [
            *(f"^{re.escape(p)}" for p in self.parts["start"]),
            *(f"{re.escape(p)}$" for p in self.parts["end"]),
            *(re.escape(p) for p in self.parts["inside"]),
        ]
        self.part_pattern = re.compile("|".join(alternatives)) if alternatives else None
        self.core &= self.words
        for word in self.core:
            if len(word) >= 4 and word.isalpha():
                self.by_shape[word[0], len(word)].append(word)
            elif len(word) == 3 and word.isalpha():
                self.short[word[0], 3].append(word)
