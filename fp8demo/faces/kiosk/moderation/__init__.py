"""Kiosk prompt moderation: a layered text filter that the server runs on every kiosk request.

Each layer undoes one family of evasions that got through a plain word-list filter when it was probed:

1. Characters (text.py): NFKC (full-width letters, ligatures, NBSP), invisible format characters dropped (U+200B,
   U+2063, soft hyphen), look-alikes from other scripts folded to Latin with Unicode's confusables data (package
   confusable_homoglyphs), small capitals and letters drawn as emoji (🅽, 🇳) by their Unicode names, then casefold
   and accents stripped.
2. Leetspeak (text.py): $ -> s, 3 -> e, 0 -> o, 9 -> g, 1 ! | -> i (and, in a second reading, l), @ -> a ... in words
   that also hold letters or other symbols, so that plain numbers stay numbers.
3. Words (text.py): anything but a letter or digit separates words, and letters stretched to three or more
   (naaaked) count once or twice. Split words are re-joined where a split is likely to be an evasion and unlikely to
   be a real boundary: pieces of one spaced chunk (n.ude, a-s-s) and runs of chunks of at most two characters
   (n u d e, nu de), and letters spelled out one by one (b.r.a.). "pen is" or "a sun dew" are never joined.
4. Allow-list (patterns.py, assets/kiosk/allowlist.txt): innocent phrases ("moby dick", "breast stroke", "un baiser
   sur la joue") are taken out whole before matching, so the bare word stays blocked; a section can depend on the
   prompt's language (Spanish "negro" is a colour).
5. Lists (lists.py): whole words and phrases against the inflected forms of the lists (multilingual lists bundled
   with the glin-profanity package plus the operator's list, in language sections), each inflection confirmed by
   the language's Snowball stemmer; never substrings, so "class", "Sussex" and "Scunthorpe" pass. Chinese, Japanese
   and Korean entries are found inside the text with separators removed. Entries written "porn*" or "*fick*" also
   match as part of a longer word.
6. Guesses (guess.py) about words that are on no list and are no real word of the claimed languages (vocabulary.py,
   the pyspellchecker package's word lists): misspellings within edit distance 1 (five to seven letters) or 2 (eight
   or more) of a listed word, also after sound-alike spellings (secksy, boobz); compounds of a listed word and real
   words (bigboobs, nakedwoman) unless the pieces are an allowed phrase (pussywillow); wildcards (f*cking, p**n).
7. Phrases (patterns.py, assets/kiosk/phrases.txt): euphemisms as patterns ("without ... @clothes", "blown to
   pieces|bits", "covered in blood").
8. Emoji (emoji.py, assets/kiosk/emoji.txt): 🔞 alone, 🍆 with 💦, 🔪 with 🩸.

No torch and no network; the lists and the vocabulary are loaded once per process when the first Moderator is made
(about three seconds), after which a 2,000-character prompt is checked in well under 10 ms (`--report` prints the
figure). The claimed languages, the probes this was measured on and what still gets through: docs/kiosk.md,
"Moderation".
"""

from . import report
from .lists import BUNDLED, bundled_entries, forms, read_list
from .moderator import REFUSAL, Moderator, Verdict
from .report import main, read_probe
from .text import fold

_forms = forms  # the name tests and older callers know

__all__ = ["BUNDLED", "REFUSAL", "Moderator", "Verdict", "bundled_entries", "fold", "forms", "main", "read_list",
           "read_probe", "report"]
