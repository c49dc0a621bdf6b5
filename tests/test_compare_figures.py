"""The Compare tab's numbers and words: one format per metric everywhere, prompts ellipsised at a word with the
whole prompt on hover, a heatmap scale that reads in the units it shows."""

from types import SimpleNamespace

import numpy as np
from PIL import Image, ImageDraw

from fp8demo.faces.generate.compare_tab import compare_table, sheet_table_text
from fp8demo.faces.generate.figures import psnr_text, shorten, ssim_text
from fp8demo.faces.generate.sheet import contact_sheet
from fp8demo.metrics import ImageMetrics, difference_heatmap
from fp8demo.request import GenerationRequest, Timings

LONG = "a lighthouse on a cliff at dusk | oil painting, <warm> light, dramatic clouds, crashing waves, seagulls"


def fake(prompt=LONG, ssim=0.99994, psnr=41.238):
    def side(precision):
        return SimpleNamespace(image=Image.new("RGB", (256, 256), "gray"), precision=precision,
                               timings=Timings(0.01, 0.5, 0.1, 0.61), peak_memory_bytes=0, blocks_run=8,
                               blocks_total=8, blocks_skipped=0,
                               request=GenerationRequest(prompt, seed=42, steps=4, guidance=0.0, width=256,
                                                         height=256))
    return SimpleNamespace(baseline=side("bf16"), fp8=side("FP8 E4M3 weights, bf16 compute"),
                           metrics=ImageMetrics(psnr, ssim, 0.4567, 3), baseline_transformer_bytes=2000,
                           fp8_transformer_bytes=1000, device="cpu", speed_representative=False, swap_seconds=0.0,
                           load_seconds=0.0)


def test_one_format_per_metric_in_the_table_the_rows_and_the_captions(monkeypatch):
    res = fake()
    table, rows = compare_table(res), sheet_table_text([res])
    for text in (table, rows):
        assert "41.24 dB" in text and "0.9999" in text and "1.000" not in text and "0.46" in text
    drawn = []
    monkeypatch.setattr(ImageDraw.ImageDraw, "text", lambda self, xy, text, **kw: drawn.append(text))
    contact_sheet([res])
    caption = drawn[-1]
    assert caption.endswith(" · PSNR 41.24 dB · SSIM 0.9999")
    assert psnr_text(float("inf")) == "∞ (identical)" and ssim_text(1.0) == "1.0000"


def test_prompts_are_ellipsised_at_a_word_and_whole_on_hover(monkeypatch):
    row = sheet_table_text([fake()]).splitlines()[2]
    assert 'title="a lighthouse on a cliff at dusk &#124; oil painting, &lt;warm&gt; light,' in row
    shown = row.split(">", 1)[1].split("</span>")[0]
    assert shown.endswith("…") and len(shown) < len(LONG) and "&lt;warm&gt;" in shown  # escaped, cut at a word
    drawn = []
    monkeypatch.setattr(ImageDraw.ImageDraw, "text", lambda self, xy, text, **kw: drawn.append(text))
    sheet = contact_sheet([fake()])
    prompt = drawn[-1].split(" · PSNR")[0]
    assert prompt.endswith("…") and LONG.startswith(prompt[:-1].rstrip())  # whole words, then the ellipsis
    from PIL import ImageFont
    assert ImageFont.load_default(size=16).getlength(drawn[-1]) <= sheet.width - 16  # it fits
    assert shorten("short enough", lambda t: len(t) <= 20) == "short enough"
    assert shorten("one two three four", lambda t: len(t) <= 12) == "one two…"


def test_the_heatmap_scale_is_under_the_map_and_sized_to_read():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (512, 512, 3)).astype(np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-1, 2, a.shape), 0, 255).astype(np.uint8)
    heat = np.asarray(difference_heatmap(Image.fromarray(a), Image.fromarray(b)))
    assert heat.shape[1] == 512 and heat.shape[0] > 512 + 4 * 20  # the map at its size, the scale under it
    text_rows = (heat[512:].min(axis=2) < 80).any(axis=1)  # dark ink under the map: ticks and the label
    assert text_rows.sum() >= 2 * 14  # two lines of text at least 14 px tall
