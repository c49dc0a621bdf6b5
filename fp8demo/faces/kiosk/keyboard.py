"""The on-screen keyboard's layouts (pure data for simple-keyboard, fp8demo/assets/kiosk/simple-keyboard/).

Touch-only screens have no keyboard of their own (Chromium in kiosk mode on Linux shows none), so the kiosk draws
one: every key a button whose accessible name is the character it types, Shift, Space, Backspace, a symbols layer
and a Create key. The operator picks the layout (FP8DEMO_KIOSK_KEYBOARD_LAYOUT); a physical keyboard works too.
"""

from __future__ import annotations

from ...errors import SetupError

# simple-keyboard's layout format: per layer, rows of space-separated keys; {name} keys do something else than type
_BOTTOM = "{symbols} , {space} . {create}"
_SYMBOLS = [
    "1 2 3 4 5 6 7 8 9 0 {bksp}",
    "- / : ; ( ) & @ ? !",
    "' \" + = % * # € ù",
    "{abc} , {space} . {create}",
]
LAYOUTS: dict[str, dict[str, list[str]]] = {
    "en": {  # English QWERTY
        "default": ["q w e r t y u i o p {bksp}", "a s d f g h j k l '", "{shift} z x c v b n m - ?", _BOTTOM],
        "shift": ["Q W E R T Y U I O P {bksp}", "A S D F G H J K L '", "{shift} Z X C V B N M - !", _BOTTOM],
        "symbols": _SYMBOLS,
    },
    "de": {  # German QWERTZ
        "default": ["q w e r t z u i o p {bksp}", "a s d f g h j k l ö ä", "{shift} y x c v b n m ü ß", _BOTTOM],
        "shift": ["Q W E R T Z U I O P {bksp}", "A S D F G H J K L Ö Ä", "{shift} Y X C V B N M Ü ?", _BOTTOM],
        "symbols": _SYMBOLS,
    },
    "fr": {  # French AZERTY
        "default": ["a z e r t y u i o p {bksp}", "q s d f g h j k l m '", "{shift} w x c v b n é è à ç", _BOTTOM],
        "shift": ["A Z E R T Y U I O P {bksp}", "Q S D F G H J K L M '", "{shift} W X C V B N É È À Ç", _BOTTOM],
        "symbols": _SYMBOLS,
    },
}
ALIASES = {"qwerty": "en", "en-qwerty": "en", "english": "en", "us": "en", "gb": "en", "uk": "en",
           "qwertz": "de", "de-qwertz": "de", "german": "de", "deutsch": "de",
           "azerty": "fr", "fr-azerty": "fr", "french": "fr", "français": "fr"}
# what the special keys show, and their accessible names (a character key's name is the character itself)
DISPLAY = {"{bksp}": "⌫", "{shift}": "⇧", "{space}": "space", "{create}": "Create", "{symbols}": "123",
           "{abc}": "ABC"}
NAMES = {"{bksp}": "Backspace", "{shift}": "Shift", "{space}": "Space", "{create}": "Create",
         "{symbols}": "Numbers and symbols", "{abc}": "Letters"}


def layout_name(value: str) -> str:
    """The layout FP8DEMO_KIOSK_KEYBOARD_LAYOUT names: en (QWERTY), de (QWERTZ), fr (AZERTY), or an alias."""
    name = value.strip().lower()
    name = ALIASES.get(name, name)
    if name not in LAYOUTS:
        raise SetupError(f"FP8DEMO_KIOSK_KEYBOARD_LAYOUT: unknown layout {value!r}; choose one of "
                         f"{', '.join(LAYOUTS)} (QWERTY, QWERTZ, AZERTY).")
    return name


def options(layout: str) -> dict:
    """What the page's script hands simple-keyboard, and the keys' accessible names."""
    return {"layout": LAYOUTS[layout_name(layout)], "display": DISPLAY, "names": NAMES}
