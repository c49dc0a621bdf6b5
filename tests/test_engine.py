"""The warm engine on the tiny model: determinism, stages, cache, progress, cancel, prompts, sizes."""

import threading

import numpy as np
import pytest

from fp8demo.errors import Cancelled, InvalidRequest, SetupError
from fp8demo.request import GenerationRequest, Job

LONG_PROMPT = ", ".join(["a photo of a red fox in an autumn forest with golden leaves"] * 8) + ", unicorn finale"


def _pixels(result):
    return np.asarray(result.image)


def test_same_seed_same_image_other_seed_other_image(tiny_engine):
    a = tiny_engine.generate(GenerationRequest("a cat on a windowsill", seed=7))
    b = tiny_engine.generate(GenerationRequest("a cat on a windowsill", seed=7))
    c = tiny_engine.generate(GenerationRequest("a cat on a windowsill", seed=8))
    assert np.array_equal(_pixels(a), _pixels(b))
    assert not np.array_equal(_pixels(a), _pixels(c))
    assert a.request.seed == 7 and c.request.seed == 8


def test_result_reports_stages_memory_and_settings(tiny_engine):
    r = tiny_engine.generate(GenerationRequest("a lighthouse", seed=1, steps=2, width=512, height=384))
    assert r.image.size == (512, 384)
    t = r.timings
    assert min(t.text_encoding, t.denoising, t.vae_decode) >= 0
    assert t.total == pytest.approx(t.text_encoding + t.denoising + t.vae_decode, rel=1e-6)
    assert r.peak_memory_bytes > 0 and r.peak_memory_kind
    assert (r.request.steps, r.request.guidance) == (2, 0.0)  # guidance from the tiny preset
    assert r.precision == "FP8 E4M3 weights, bf16 compute" and r.model == "tiny"


def test_unset_seed_is_random_and_reported(tiny_engine):
    seeds = {tiny_engine.generate(GenerationRequest("a boat", steps=1)).request.seed for _ in range(3)}
    assert len(seeds) == 3


def test_seed_zero_and_guidance_zero_are_kept(tiny_engine):
    r = tiny_engine.generate(GenerationRequest("a boat", seed=0, guidance=0.0, steps=1))
    assert r.request.seed == 0 and r.request.guidance == 0.0


def test_repeated_prompt_skips_the_text_encoders(tiny_engine):
    first = tiny_engine.generate(GenerationRequest("an owl under a full moon, unique 1", seed=1, steps=1))
    again = tiny_engine.generate(GenerationRequest("an owl under a full moon, unique 1", seed=2, steps=1))
    assert not first.embeddings_cached and again.embeddings_cached
    # the cache key includes the negative prompt when CFG uses it
    cfg = tiny_engine.generate(GenerationRequest("an owl under a full moon, unique 1", "blurry", 2, 1, 4.5))
    assert not cfg.embeddings_cached


def test_classifier_free_guidance_and_negative_prompt_change_the_image(tiny_engine):
    base = GenerationRequest("a red fox", seed=3, steps=2, guidance=4.5)
    a = tiny_engine.generate(base)
    from dataclasses import replace

    b = tiny_engine.generate(replace(base, negative_prompt="blurry, lowres"))
    c = tiny_engine.generate(replace(base, guidance=0.0))
    assert not np.array_equal(_pixels(a), _pixels(b))
    assert not np.array_equal(_pixels(a), _pixels(c))


def test_progress_callback_counts_every_step(tiny_engine):
    seen = []
    tiny_engine.run(Job(GenerationRequest("a tree", seed=1, steps=3), progress=lambda i, n: seen.append((i, n))))
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_cancel_stops_and_engine_stays_usable(tiny_engine):
    cancel = threading.Event()
    steps = []

    def progress(i, n):
        steps.append(i)
        cancel.set()

    with pytest.raises(Cancelled):
        tiny_engine.run(Job(GenerationRequest("a tree", seed=1, steps=6), progress=progress, cancel=cancel))
    assert steps == [1]  # interrupted after the first step
    assert tiny_engine.generate(GenerationRequest("a tree", seed=1, steps=1)).image.size == (512, 512)


def test_long_prompt_warns_and_names_what_clip_cannot_see(tiny_engine):
    info = tiny_engine.token_info(LONG_PROMPT)
    assert info.clip_tokens > 77 and info.t5_tokens > 77
    r = tiny_engine.generate(GenerationRequest(LONG_PROMPT, seed=1, steps=1))
    assert len(r.warnings) == 1
    assert "CLIP" in r.warnings[0] and "unicorn finale" in r.warnings[0] and "T5" in r.warnings[0]
    short = tiny_engine.generate(GenerationRequest("a short prompt", seed=1, steps=1))
    assert short.warnings == ()


def test_large_sizes_decode_in_tiles(tiny_engine):
    r = tiny_engine.generate(GenerationRequest("a wide panorama", seed=1, steps=1, width=1152, height=256))
    assert r.image.size == (1152, 256)
    assert tiny_engine.pipe.vae.use_tiling
    tiny_engine.generate(GenerationRequest("a wide panorama", seed=1, steps=1, width=512, height=256))
    assert not tiny_engine.pipe.vae.use_tiling


def test_bad_requests_are_refused_before_any_work(tiny_engine):
    with pytest.raises(InvalidRequest, match="multiple of 16"):
        tiny_engine.generate(GenerationRequest("x", width=1000))


def test_engine_refuses_work_until_warm(tiny_config):
    from conftest import CPU

    from fp8demo.engine import Engine

    engine = Engine(tiny_config, CPU)
    assert engine.info()["state"] == "created"
    with pytest.raises(SetupError, match="warming up"):
        engine.generate(GenerationRequest("x"))


def test_fp8_and_bf16_engines_agree_closely(tiny_engine, tiny_engine_bf16):
    req = GenerationRequest("a bowl of ramen", seed=5, steps=2)
    a = _pixels(tiny_engine.generate(req)).astype(float)
    b = _pixels(tiny_engine_bf16.generate(req)).astype(float)
    assert a.shape == b.shape
    assert np.abs(a - b).mean() < 8.0  # of 255: FP8 storage perturbs, it does not scramble
    assert tiny_engine_bf16.report.transformer_ratio == pytest.approx(1.0, abs=0.01)
