"""Kiosk moderation: the published prompt lists, then each layer on its own."""

from pathlib import Path

import pytest

from fp8demo import config
from fp8demo.faces.kiosk import moderation
from fp8demo.faces.kiosk.moderation import REFUSAL, Moderator, fold, read_list

DATA = Path(__file__).parent / "data"
EVASIONS = read_list(DATA / "moderation_evasions.txt")
INNOCENT = read_list(DATA / "moderation_innocent.txt")
KNOWN_MISSES = read_list(DATA / "moderation_known_misses.txt")


@pytest.fixture(scope="module")
def mod():
    return Moderator.from_file(config.KioskConfig().blocklist)  # the kiosk's lists, allow-list beside the blocklist


def test_published_lists_are_big_enough():
    assert len(EVASIONS) >= 150 and len(INNOCENT) >= 80
    assert len(set(EVASIONS)) == len(EVASIONS) and len(set(INNOCENT)) == len(INNOCENT)
    # the kiosk languages are all represented among the evasions
    for sample in ("desnuda", "nue", "nackte", "голая", "裸体", "ヌード"):
        assert any(sample in p for p in EVASIONS), sample


def test_every_evasion_is_refused(mod):
    assert [p for p in EVASIONS if mod.check(p).allowed] == []


def test_every_innocent_prompt_passes(mod):
    assert [p for p in INNOCENT if not mod.check(p).allowed] == []


def test_known_misses_still_get_through(mod):
    # when one of these starts being refused, move it to moderation_evasions.txt so the figures stay honest
    assert KNOWN_MISSES and [p for p in KNOWN_MISSES if not mod.check(p).allowed] == []


def test_refusal_is_friendly_and_never_repeats_the_word(mod):
    verdict = mod.check("a N.A.K.E.D man")
    assert not verdict.allowed and verdict.message == REFUSAL
    assert not any(w in REFUSAL.lower() for w in ("naked", "nude", "sex", "porn", "ass "))
    assert mod.check("a lighthouse at dusk") == moderation.Verdict(True)


def test_refusals_are_counted_and_the_text_is_not_logged(caplog):
    mod = Moderator(["forbidden"], languages=())
    with caplog.at_level("INFO"):
        mod.check("something forbidden")
        mod.check("fine")
    assert mod.refused == 1
    assert "refused prompt #1" in caplog.text and "forbidden" not in caplog.text.replace("refused", "")


def test_every_text_is_checked():
    mod = Moderator(["forbidden"], languages=())
    assert not mod.check("fine", "forbidden").allowed
    assert mod.check("fine", "").allowed


# ---- layer 1: characters


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("ＮＵＤＥ", "nude"),  # full-width
        ("nüdé", "nude"),  # accents
        ("nu\u200bd\u2063e\u00ad", "nude"),  # zero-width space, invisible separator, soft hyphen
        ("n\u00a0u", "n u"),  # NBSP is a space
        ("nаkеd", "naked"),  # Cyrillic а, е
        ("ΝΑΚΕD", "naked"),  # Greek capitals
        ("ɴᴜᴅᴇ", "nude"),  # small capitals
        ("𝐧𝐮𝐝𝐞", "nude"),  # mathematical bold
        ("ヌード", "ヌード"),  # kana voicing marks are not accents
    ],
)
def test_fold(text, folded):
    assert fold(text) == folded


def test_cyrillic_words_still_match_after_folding():
    # entries and prompts go through the same folding, so Russian words stay comparable
    mod = Moderator(["голый"], languages=())
    assert fold("голый") != "голый" and not mod.check("Голый").allowed


# ---- layer 2: leetspeak


@pytest.mark.parametrize("text", ["a$$", "@ss", "4ss", "s3x", "p0rn", "sh1t", "$h!t", "k1ll", "5ex"])
def test_leetspeak_is_read_as_letters(mod, text):
    assert not mod.check(text).allowed


@pytest.mark.parametrize("text", ["1990s arcade", "3 cats", "a 4k wallpaper", "R2-D2", "8-bit style", "455 hp"])
def test_numbers_stay_numbers(mod, text):
    assert mod.check(text).allowed


def test_one_is_read_as_i_and_as_l():
    mod = Moderator(["kill", "nil"], languages=())
    assert not mod.check("ki1l").allowed and not mod.check("n1l").allowed


# ---- layer 3: separators and split words


@pytest.mark.parametrize(
    "text", ["n u d e", "nu de", "n.ude", "n-u-d-e", "n * a * k * e * d", "a n a k e d man", "a.s.s", "Self   Harm"]
)
def test_split_words_are_rejoined(mod, text):
    assert not mod.check(text).allowed


@pytest.mark.parametrize(
    "text", ["the pen is red", "a sun dew", "a s shaped road", "it's ex", "up or no", "to be or not to be"]
)
def test_real_word_boundaries_are_not_joined(mod, text):
    assert mod.check(text).allowed


def test_stretched_letters_count_once_or_twice(mod):
    assert not mod.check("naaaaked").allowed and not mod.check("asssss").allowed
    assert mod.check("zzz, a sleeping cat").allowed


# ---- layer 4: allow-list


def test_allowed_phrases_pass_but_not_their_words():
    mod = Moderator(["dick", "naked"], ["moby dick", "naked mole rat"], languages=())
    assert mod.check("Moby Dick at sea").allowed and mod.check("two naked mole rats").allowed
    assert mod.check("MOBY-DICK").allowed
    for text in ("dick", "a naked woman", "moby dick and a naked woman", "naked mole", "moby d i c k"):
        assert not mod.check(text).allowed, text


def test_allowed_phrase_hides_nothing_around_it():
    mod = Moderator(["nude"], ["moby dick"], languages=())
    assert not mod.check("nu de moby dick").allowed and not mod.check("moby dick n.u.d.e").allowed
    # an allowed phrase between fragments breaks the run like any long word ("n u cat d e") would, no more
    assert mod.check("n u moby dick d e").allowed == mod.check("n u whale d e").allowed


# ---- layer 5: whole words, inflections, phrases, other scripts


@pytest.mark.parametrize("text", ["nudes", "raped", "raping", "killed", "killing", "asses", "breasts", "murderer"])
def test_inflections_are_blocked(mod, text):
    assert not mod.check(text).allowed


@pytest.mark.parametrize(
    "text", ["class", "bass", "Sussex", "Scunthorpe", "cocktail", "therapist", "butter", "spicy", "cocker", "Dickens"]
)
def test_whole_words_only(mod, text):
    assert mod.check(text).allowed


def test_inflections_are_confirmed_by_a_stemmer():
    forms = moderation._forms("butt", "english")
    assert {"butt", "butts"} <= forms and "butter" not in forms
    assert {"голая", "голые", "голую"} <= moderation._forms("голый", "russian")
    assert "голова" not in moderation._forms("голый", "russian")


def test_phrases_need_all_words_in_order():
    mod = Moderator(["hate speech"], languages=())
    assert not mod.check("some Hate-Speech here").allowed
    assert not mod.check("hatespeech").allowed  # written as one word
    assert mod.check("hate", "speech").allowed  # separate texts, no phrase
    assert mod.check("speech of hate").allowed


def test_cjk_entries_are_found_inside_text():
    mod = Moderator(["做爱"], ["乌龟"], languages=())
    assert not mod.check("他们在做爱").allowed and not mod.check("做 爱").allowed
    assert mod.check("做饭").allowed


def test_operator_can_drop_a_bundled_entry():
    assert not Moderator([]).check("un martillo").allowed  # Spanish list: hammer
    assert Moderator(["-martillo"]).check("un martillo").allowed


def test_bundled_lists_cover_the_kiosk_languages():
    for language in ("english", "spanish", "french", "german", "russian", "chinese", "japanese"):
        assert len(moderation.bundled_entries(language)) > 50, language


def test_long_prompts_get_the_same_verdicts(mod):
    # Speed is a figure, not a test (`python -m fp8demo.faces.kiosk.moderation --report` prints it: 1-5 ms for 2,000
    # characters here); what must hold at the length limit is the verdict.
    innocent = (" ".join(INNOCENT) * 20)[:2000]
    assert mod.check(innocent).allowed
    for evasion in (("a " * 990) + "n u d e", ("lovely " * 280) + "a$$"):
        assert not mod.check(evasion[:2000]).allowed, evasion[-12:]




def test_report_prints_the_shares(capsys, monkeypatch):
    monkeypatch.chdir(DATA.parent.parent)  # run from a checkout, as docs/kiosk.md says: the lists are test data
    assert moderation.main(["--report"]) == 0
    out = capsys.readouterr().out
    assert "evasions blocked:" in out and "wrongly refused: 0.0%" in out
