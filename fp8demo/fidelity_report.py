"""The fidelity harness's report for people: a Markdown table (one row per recipe, quality beside speed) and a
contact sheet (the worst cases first: the reference beside every recipe, each picture captioned with its scores).
Reads the report dict that fidelity.json holds; PIL only."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

from .report import size_text

CELL = 256  # longest side of a picture on the sheet
SHEET_ROWS = 6  # cases shown, worst first
GAP, HEAD_H, TITLE_H, CAPTION_H = 8, 22, 20, 34


def _score(value, fmt: str) -> str:
    return "–" if value is None else ("inf" if value == "inf" else format(value, fmt))


def _pair(spread: dict | None, fmt: str) -> str:
    return "–" if spread is None else f"{_score(spread['mean'], fmt)} ({_score(spread['worst'], fmt)})"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def intro(report: dict) -> list[str]:
    """What was compared, in words, and what the columns mean."""
    size = "x".join(map(str, report["size"] or ["?"]))
    lines = []
    if report["random_weights"]:
        lines += [f"`{report['model']}` has random weights: these numbers measure the code path and the relative "
                  "costs of the recipes, not SD3.5's picture quality.", ""]
    lpips = report["lpips"]
    if lpips["available"] and not lpips["genuine"]:
        lpips_text = f"LPIPS column: NOT LPIPS (backbone: {lpips['backbone']}; a test of the code path)."
    elif lpips["available"]:
        lpips_text = "LPIPS: AlexNet (lower is closer, 0 identical)."
    else:
        lpips_text = f"LPIPS missing (the column is empty): {lpips['reason'].removeprefix('LPIPS: ')}"
    lines += [
        f"Each recipe's image against the reference `{report['reference']}`'s of the same prompt and seed: "
        f"{_count(report['prompts']['count'], 'prompt')} (`{report['prompts']['set']}`) x "
        f"{_count(len(report['seeds']), 'seed')}, "
        f"{report['steps']} steps, {size}, guidance {report['guidance']:g}, on {report['device']['describe']}. "
        f"{lpips_text} PSNR in dB (higher is closer, inf identical), SSIM (1 identical); each as mean (worst). "
        "Seconds per image: text encoding, denoising and VAE decode, the mean after the first image, which is shown "
        "apart (what warm-up is left after the engine's start, where compiling happens). Blocks: transformer blocks "
        "run per image, of steps x blocks; a step cache skips some.",
    ]
    return lines


def table(report: dict) -> list[str]:
    lines = [
        "| recipe | run plan | LPIPS | PSNR (dB) | SSIM | identical | s / image | first image | blocks run / total "
        "| peak memory |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    refused = []
    for r in report["recipes"]:
        if r["refused"]:
            refused.append(f"- `{r['recipe']}` refused here: {r['refused']}")
            continue
        name = f"`{r['recipe']}`" + (" (reference)" if r["reference"] else "")
        skipped = r["blocks_skipped_per_image"]
        blocks = f"{r['blocks_run_per_image']:g} / {r['blocks_total_per_image']}" + (
            f" ({skipped:g} skipped)" if skipped else "")
        lines.append(
            f"| {name} | {r['plan']} | {_pair(r['lpips'], '.4f')} | {_pair(r['psnr_db'], '.2f')} "
            f"| {_pair(r['ssim'], '.4f')} | {r['identical_images']}/{len(r['images'])} "
            f"| {r['seconds_per_image']:.2f} s | {r['first_image_seconds']:.2f} s | {blocks} "
            f"| {size_text(r['peak_memory_bytes'])} |")
    kinds = {r["peak_memory_kind"] for r in report["recipes"] if not r["refused"]}
    notes = [f"Peak memory: {', '.join(sorted(kinds))}."]
    if "process peak RSS" in kinds:
        notes[0] += (" On a CPU that is the process's high-water mark so far (it never goes down), so a recipe's "
                     "figure includes the ones before it.")
    loads = [x for r in report["recipes"] for x in r.get("load_average_1min") or [] if x is not None]
    if loads:
        notes.append(f"Load average (1 min) before and after each recipe: {min(loads):.1f} to {max(loads):.1f} on "
                     f"{report['device']['cpu_count']} cores (other work on the machine slows every timing).")
    return [*lines, "", " ".join(notes), *([""] + refused if refused else [])]


def markdown(report: dict) -> str:
    title = f"# Fidelity: `{report['model']}` on {report['device']['name']}"
    return "\n".join([title, "", *intro(report), "", *table(report), ""]) + "\n"


def worst_cases(report: dict, count: int = SHEET_ROWS) -> list[int]:
    """Cases (prompt x seed), most different from the reference first: by LPIPS when there is one, else by SSIM,
    taking each case's worst recipe."""
    compared = [r for r in report["recipes"] if not r["refused"] and not r["reference"]]
    cases = [i["case"] for i in report["recipes"][0]["images"]]
    if not compared:
        return cases[:count]

    def badness(case: int) -> float:
        rows = [r["images"][case] for r in compared]
        if all(row["lpips"] is not None for row in rows):
            return max(row["lpips"] for row in rows)
        return max(1.0 - row["ssim"] for row in rows)

    return sorted(cases, key=lambda c: (-badness(c), c))[:count]


def _caption(row: dict, reference: bool) -> tuple[str, str]:
    if reference:
        return "reference", ""
    psnr = "inf" if row["psnr_db"] == "inf" else f"{row['psnr_db']:.1f} dB"
    lpips = "LPIPS missing" if row["lpips"] is None else f"LPIPS {row['lpips']:.4f}"
    return f"PSNR {psnr} · SSIM {row['ssim']:.4f}", lpips


def contact_sheet(report: dict, thumbnails: dict) -> Image.Image:
    """Rows: the worst cases first, each titled with its prompt and seed; columns: the reference, then each recipe
    that ran, captioned with its scores against the reference. `thumbnails`: (recipe, case) -> PIL image."""
    shown = [r for r in report["recipes"] if not r["refused"]]
    cases = worst_cases(report)
    w, h = thumbnails[(shown[0]["recipe"], cases[0])].size
    columns = len(shown)
    width = GAP + columns * (CELL + GAP)
    row_h = TITLE_H + h + CAPTION_H + GAP
    sheet = Image.new("RGB", (width, HEAD_H + GAP + len(cases) * row_h), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=13)
    small = ImageFont.load_default(size=11)
    lpips = report["lpips"]
    for col, r in enumerate(shown):
        head = r["recipe"] + (" (reference)" if r["reference"] else "")
        draw.text((GAP + col * (CELL + GAP), 4), _fit(draw, head, font, CELL), fill="black", font=font)
    for n, case in enumerate(cases):
        y = HEAD_H + GAP + n * row_h
        row = shown[0]["images"][case]
        title = f"#{n + 1} (seed {row['seed']}): {row['prompt']}"
        draw.text((GAP, y + 2), _fit(draw, title, font, width - 2 * GAP), fill="black", font=font)
        for col, r in enumerate(shown):
            x = GAP + col * (CELL + GAP)
            sheet.paste(thumbnails[(r["recipe"], case)], (x, y + TITLE_H))
            first, second = _caption(r["images"][case], r["reference"])
            if lpips["available"] and not lpips["genuine"] and second:
                second += " (not LPIPS: test backbone)"
            draw.text((x, y + TITLE_H + h + 3), _fit(draw, first, small, CELL), fill="black", font=small)
            draw.text((x, y + TITLE_H + h + 17), _fit(draw, second, small, CELL), fill="black", font=small)
    return sheet


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """`text`, cut with an ellipsis to `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"
