"""This browser's pictures: the entries the browser sends back are checked field by field, the gallery's text is
escaped."""

from pathlib import Path

from fp8demo.faces.generate import history
from fp8demo.request import GenerationRequest

GOOD = {"png": "fp8demo-7-0123abcd.png", "prompt": "a fox", "negative_prompt": "", "seed": 7, "steps": 4,
        "guidance": 0.0, "width": 512, "height": 512}


def saved(name):
    return Path("/outputs") / name if name in (GOOD["png"], "fp8demo-8-0123abcd.png") else None


def test_only_pictures_the_server_has_with_known_fields_of_the_right_types():
    entries = [
        GOOD,
        {**GOOD, "png": "../../etc/passwd"},  # a name the server never gave
        {**GOOD, "png": "fp8demo-9-0123abcd.png"},  # gone from the outputs folder
        {**GOOD, "png": "fp8demo-8-0123abcd.png", "seed": "8", "extra": "<script>"},  # a number as text is fine
        {**GOOD, "prompt": ["not", "text"]},
        {**GOOD, "guidance": "nan"},
        {k: v for k, v in GOOD.items() if k != "steps"},
        "not an entry",
    ]
    kept = history.clean(entries, saved)
    assert kept == [GOOD, {**GOOD, "png": "fp8demo-8-0123abcd.png", "seed": 8}]
    assert history.clean(None, saved) == [] and history.clean({"a": 1}, saved) == []
    assert len(history.clean([GOOD] * 100, saved)) == history.LIMIT
    assert history.clean([{**GOOD, "prompt": "x" * 50}], saved, max_chars=10) == []


def test_an_entry_is_the_pictures_settings_and_the_gallery_escapes_them():
    request = GenerationRequest('a <b>fox</b> & "friends"', negative_prompt="", seed=3, steps=2, guidance=1.5,
                                width=256, height=256)
    e = history.entry(request, "fp8demo-3-0123abcd.png")
    assert e == {"png": "fp8demo-3-0123abcd.png", "prompt": request.prompt, "negative_prompt": "", "seed": 3,
                 "steps": 2, "guidance": 1.5, "width": 256, "height": 256}
    page = history.gallery_html([e])
    assert "<b>fox</b>" not in page and "&lt;b&gt;fox&lt;/b&gt;" in page and 'title="a &lt;b&gt;' in page
    assert 'href="take/fp8demo-3-0123abcd.png" download="fp8demo-3-0123abcd.png"' in page
    assert all(f'data-action="{a}"' in page for a in ("open", "settings", "seed"))
    assert "appear here" in history.gallery_html([])
