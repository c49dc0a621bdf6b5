"""The composer (tiles rebuilt on the server, free text refused where the screen takes tiles only), the input modes
and the on-screen keyboard's layouts, as pure logic. The page itself: test_kiosk_page.py."""

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from fp8demo import config
from fp8demo.errors import SetupError
from fp8demo.faces.kiosk import composer, keyboard
from fp8demo.faces.kiosk.composer import PARTS, Tiles, preview, prompt_for
from fp8demo.faces.kiosk.face import face
from fp8demo.faces.kiosk.rules import KioskRefusal
from fp8demo.faces.kiosk.service import KioskService

TILES = Tiles.from_file(config.ASSETS_DIR / "kiosk" / "tiles.txt")
FOX = {"subject": "A red fox", "setting": "on the moon", "mood": "calm and peaceful", "style": "in pixel art"}


def test_the_shipped_tiles_make_readable_sentences():
    assert all(len(TILES.parts[part]) >= 6 for part in PARTS)
    assert TILES.sentence(FOX) == "A red fox on the moon, calm and peaceful, in pixel art"
    assert TILES.sentence({"subject": "A sleepy cat"}) == "A sleepy cat"
    assert TILES.sentence({"subject": "A sleepy cat", "style": "as a pencil sketch"}) == \
        "A sleepy cat, as a pencil sketch"
    assert preview({"setting": "on the moon"}) == "On the moon"  # what the page shows while the visitor picks


@pytest.mark.parametrize("forged", [
    {"subject": "A red fox naked"},  # a tile with words added
    {"subject": "a red fox"},  # not the tile's exact text
    {"subject": "A red fox", "style": "as a photograph of a real person"},
    {"subject": "on the moon"},  # another part's tile
    {"subject": ["A red fox"]},  # not text at all
    {"subject": "A red fox", "extra": "anything"},  # a part that does not exist
])
def test_a_value_that_is_not_one_of_the_operators_tiles_is_refused(forged):
    with pytest.raises(KioskRefusal, match=composer.NOT_A_TILE):
        TILES.sentence(forged)


def test_a_picture_needs_a_subject():
    with pytest.raises(KioskRefusal, match="first row"):
        TILES.sentence({"setting": "on the moon"})
    assert composer.NO_SUBJECT


def test_input_modes_decide_what_the_server_takes():
    assert prompt_for("compose", "", FOX, TILES) == ("A red fox on the moon, calm and peaceful, in pixel art", True)
    assert prompt_for("compose", None, FOX, TILES)[1] is True
    for text in ("a free idea", " x ", 42):
        with pytest.raises(KioskRefusal, match="tiles"):
            prompt_for("compose", text, FOX, TILES)  # free text is refused on every route, with tiles or without
    assert composer.FREE_TEXT_REFUSED
    assert prompt_for("free", "a lighthouse", None, None) == ("a lighthouse", False)  # moderated by the caller
    with pytest.raises(KioskRefusal, match="typed ideas"):
        prompt_for("free", "", FOX, TILES)
    assert composer.TILES_REFUSED
    assert prompt_for("both", "a lighthouse", FOX, TILES) == ("a lighthouse", False)  # typed: moderated
    assert prompt_for("both", "", FOX, TILES)[1] is True
    assert prompt_for("free", "", {p: "" for p in PARTS}, None) == ("", False)  # empty tiles are no tiles


def test_the_service_builds_composed_prompts_and_moderates_only_free_text(tmp_path):
    tiles = tmp_path / "tiles.txt"
    tiles.write_text("[subject]\nA naked mole rat\n[style]\nas a watercolor painting\n")
    cfg = config.KioskConfig(input_mode="compose", tiles=tiles)
    kiosk = KioskService(SimpleNamespace(preset=config.PRESETS["tiny"]), cfg)
    request = kiosk.request_for(None, tiles={"subject": "A naked mole rat", "style": "as a watercolor painting"})
    assert request.prompt == "A naked mole rat, as a watercolor painting"  # the operator's words: pre-approved
    assert request.negative_prompt == cfg.negative_prompt and request.steps == cfg.steps
    with pytest.raises(KioskRefusal, match="tiles"):
        kiosk.request_for("a lighthouse", tiles={"subject": "A naked mole rat"})
    both = KioskService(SimpleNamespace(preset=config.PRESETS["tiny"]), replace(cfg, input_mode="both"))
    with pytest.raises(KioskRefusal) as refused:
        both.request_for("a naked man")  # typed: the text filter decides
    assert refused.value.kind == "prompt"  # the page clears a refused prompt from the box
    free = KioskService(SimpleNamespace(preset=config.PRESETS["tiny"]), replace(cfg, input_mode="free"))
    assert free.tiles is None
    with pytest.raises(KioskRefusal, match="typed ideas"):
        free.request_for("", tiles={"subject": "A naked mole rat"})


def test_bad_tile_files_and_settings_are_said_at_start(tmp_path):
    bad = tmp_path / "tiles.txt"
    for text, words in (("[colour]\nred\n", "unknown part"), ("A fox\n", "before any"), ("[style]\nink\n", "subject")):
        bad.write_text(text)
        with pytest.raises(SetupError, match=words):
            Tiles.from_file(bad)
    with pytest.raises(SetupError, match="could not be read"):
        Tiles.from_file(tmp_path / "missing.txt")
    with pytest.raises(SetupError, match="FP8DEMO_KIOSK_INPUT"):
        face(config.KioskConfig(input_mode="voice"))
    with pytest.raises(SetupError, match="FP8DEMO_KIOSK_KEYBOARD_LAYOUT"):
        face(config.KioskConfig(keyboard_layout="dvorak"))


def test_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("FP8DEMO_KIOSK_INPUT", "Compose")
    monkeypatch.setenv("FP8DEMO_KIOSK_KEYBOARD", "off")
    monkeypatch.setenv("FP8DEMO_KIOSK_KEYBOARD_LAYOUT", "azerty")
    monkeypatch.setenv("FP8DEMO_KIOSK_TILES", "/srv/tiles.txt")
    monkeypatch.setenv("FP8DEMO_KIOSK_TITLE", "Malen mit Worten")
    monkeypatch.setenv("FP8DEMO_KIOSK_SUBTITLE", "Beschreibe ein Bild.")
    cfg = config.KioskConfig()
    assert (cfg.input_mode, cfg.keyboard, keyboard.layout_name(cfg.keyboard_layout)) == ("compose", False, "fr")
    assert cfg.tiles == Path("/srv/tiles.txt") and (cfg.title, cfg.subtitle) == ("Malen mit Worten",
                                                                                 "Beschreibe ein Bild.")
    monkeypatch.setenv("FP8DEMO_KIOSK_KEYBOARD", "maybe")
    with pytest.raises(ValueError, match="on or off"):
        config.KioskConfig()
    for name in ("FP8DEMO_KIOSK_INPUT", "FP8DEMO_KIOSK_KEYBOARD", "FP8DEMO_KIOSK_KEYBOARD_LAYOUT"):
        monkeypatch.delenv(name)
    cfg = config.KioskConfig()
    assert (cfg.input_mode, cfg.keyboard, cfg.keyboard_layout) == ("free", True, "en")  # the defaults


@pytest.mark.parametrize("name", sorted(keyboard.LAYOUTS))
def test_every_layout_has_the_keys_a_visitor_needs(name):
    layers = keyboard.LAYOUTS[name]
    assert set(layers) == {"default", "shift", "symbols"}
    for layer, rows in layers.items():
        keys = [key for row in rows for key in row.split()]
        specials = {key for key in keys if key.startswith("{")}
        assert specials <= set(keyboard.DISPLAY) and specials <= set(keyboard.NAMES), (layer, specials)
        assert {"{bksp}", "{space}", "{create}"} <= specials, layer
        assert all(len(key) == 1 for key in keys if key not in specials), layer  # a key types its own name
        assert max(len(row.split()) for row in rows) <= 11, layer  # keys stay >= 56 px on a landscape panel
    assert "{shift}" in layers["default"][2]
    letters = [key for row in layers["default"][:3] for key in row.split() if key.isalpha()]
    shifted = [key for row in layers["shift"][:3] for key in row.split() if key.isalpha()]
    assert [key.upper() for key in letters if key != "ß"] == [key for key in shifted if key != "?"]


def test_layout_names_and_aliases():
    assert keyboard.LAYOUTS["en"]["default"][0].startswith("q w e r t y")
    assert keyboard.LAYOUTS["de"]["default"][0].startswith("q w e r t z")
    assert keyboard.LAYOUTS["fr"]["default"][0].startswith("a z e r t y")
    assert [keyboard.layout_name(n) for n in ("QWERTY", "de-qwertz", "azerty", " fr ")] == ["en", "de", "fr", "fr"]
    assert keyboard.options("de")["names"]["{bksp}"] == "Backspace"
