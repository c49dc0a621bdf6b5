"""Speed recipes: the step cache skips transformer blocks (counted), composes with native FP8 and with compile, and
the run plan refuses what a machine cannot run, saying why."""

import functools
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import CPU, H100, RTX4090

from fp8demo import compiler, config, recipes, runplan
from fp8demo.errors import SetupError
from fp8demo.request import GenerationRequest

FOX = GenerationRequest("a red fox in the snow", seed=3, steps=8, width=256, height=256)


def _engine(cfg):
    from fp8demo.engine import Engine

    return Engine(replace(cfg, warmup_runs=0), CPU).start()


def _pixels(result):
    return np.asarray(result.image, dtype=np.float32)


@pytest.fixture(scope="module")
def reference(tiny_config):
    return _engine(tiny_config).generate(FOX)


@pytest.mark.parametrize("cache", ["first-block:0.5", "taylorseer:3:2"])
def test_a_cached_recipe_runs_fewer_blocks_and_says_how_many_it_skipped(tiny_config, reference, cache):
    engine = _engine(replace(tiny_config, cache=cache))
    assert engine.plan.cache == recipes.parse_cache(cache) and f"cache {cache}" in engine.plan.label()
    first, again = engine.generate(FOX), engine.generate(FOX)
    blocks = len(engine.pipe.transformer.transformer_blocks)
    assert reference.blocks_run == reference.blocks_total == FOX.steps * blocks and reference.blocks_skipped == 0
    assert first.blocks_total == FOX.steps * blocks
    assert 0 < first.blocks_run < first.blocks_total and first.blocks_skipped == first.blocks_total - first.blocks_run
    # each image starts clean: the second is the first again (no residual carried over from the last image)
    assert again.blocks_run == first.blocks_run and np.array_equal(_pixels(again), _pixels(first))
    assert not np.array_equal(_pixels(first), _pixels(reference))  # skipping has a price, measured by `fidelity`


def test_a_threshold_nothing_reaches_changes_nothing(tiny_config, reference):
    """First-Block Cache with a tiny threshold runs every block: the same picture as no cache, bit for bit."""
    result = _engine(replace(tiny_config, cache="first-block:0.0001")).generate(FOX)
    assert result.blocks_skipped == 0 and np.array_equal(_pixels(result), _pixels(reference))


@pytest.mark.slow  # builds SD3.5 Medium blocks at real width: about a minute on 2 cores
def test_the_cache_works_on_mmdit_x_with_guidance(cache_dir):
    """random:medium:2: SD3.5 Medium's dual-attention blocks at real width, guidance 4.5 (a batch of 2 a step).
    Random weights change a lot from step to step (0.5 skips nothing here), hence the loose threshold."""
    cfg = config.EngineConfig(model="random:medium:2", cache_dir=cache_dir, cache="first-block:0.9", t5="off")
    result = _engine(cfg).generate(replace(FOX, guidance=4.5, steps=10))
    assert result.blocks_total == 20 and 0 < result.blocks_run < 20, (result.blocks_run, result.blocks_total)


def test_a_cached_recipe_composes_with_native_fp8_and_compile_without_new_graphs(tiny_config):
    """Compiled as the engine compiles (dynamo only: the same graphs and guards, no kernels), native FP8 matmuls,
    a step cache that skips: after warm-up, sizes, guidance and skipped steps compile nothing."""
    from fp8demo.engine import Engine

    cfg = replace(tiny_config, compile=True, fp8_matmul="native", cache="first-block:0.5", warmup_runs=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compiler, "compile_blocks", functools.partial(compiler.compile_blocks, backend="eager"))
        engine = Engine(cfg, CPU).start()
    try:
        assert engine.plan.fp8_matmul and engine.plan.compile and engine.compiled
        graphs = compiler.graphs_compiled()
        skipped = 0
        for w, h, guidance in ((256, 256, 0.0), (384, 256, 0.0), (256, 448, 4.5), (512, 512, 4.5)):
            result = engine.generate(replace(FOX, width=w, height=h, guidance=guidance))
            skipped += result.blocks_skipped
            assert result.blocks_run > 0
        assert skipped > 0
        assert compiler.graphs_compiled() == graphs, "a cached step asked for a new graph"
    finally:
        torch.compiler.set_stance("default")


# ---- the plan: what each machine may run, and why -------------------------------------------------------------


def test_the_plan_carries_the_cache_and_says_why():
    plan = runplan.decide(config.EngineConfig(cache="taylorseer:4:3"), CPU)
    assert str(plan.cache) == "taylorseer:4:3" and plan.as_dict()["cache"] == "taylorseer:4:3"
    assert "Taylor" in plan.reasons["cache"]
    assert runplan.decide(config.EngineConfig(), CPU).cache is None  # none unless asked for
    assert "step cache none" in runplan.describe(runplan.decide(config.EngineConfig(), CPU).as_dict())[0]


def test_each_preset_has_its_recommended_cache():
    for name, expected in (("large", "first-block:0.08"), ("medium", "first-block:0.08"), ("large-turbo", None)):
        plan = runplan.decide(config.EngineConfig(cache="preset"), CPU, preset=config.PRESETS[name])
        assert (str(plan.cache) if plan.cache else None) == expected
        assert name in plan.reasons["cache"]


@pytest.mark.parametrize("spec, message", [
    ("first-block:2", "--cache 'first-block:2'"), ("taylorseer:1", "--cache 'taylorseer:1'"),
    ("fast", "--cache 'fast'"), ("mag:0.1", "MagCache needs magnitude ratios"),
])
def test_a_cache_the_plan_cannot_run_is_refused_naming_the_flag(spec, message):
    with pytest.raises(SetupError, match=message.replace("(", r"\(")):
        runplan.decide(config.EngineConfig(cache=spec), CPU)


def test_fp8_attention_runs_on_hopper_with_flash_attention_3_only():
    cfg = config.EngineConfig(attention="fp8")
    for caps, why in ((CPU, "the CPU is not one"), (RTX4090, r"RTX 4090 \(compute capability 8.9"),
                      (H100, "needs flash-attn 3")):
        with pytest.raises(SetupError, match=why):
            runplan.decide(cfg, caps)
    plan = runplan.decide(cfg, replace(H100, flash_attention_3=True))
    assert plan.attention == "fp8" and "FP8 attention" in plan.label() and "flash-attn 3" in plan.reasons["attention"]


def test_recipes_name_the_speed_choices():
    large = config.PRESETS["large"]
    assert recipes.flags("bf16") == {"precision": "bf16", "compile": False, "cache": "none", "attention": "sdpa"}
    assert recipes.flags("fp8-native+compile+cache", large) == {
        "precision": "fp8", "fp8_matmul": "native", "compile": True, "cache": "first-block:0.08",
        "attention": "sdpa"}
    assert recipes.flags("fp8+cache=taylorseer:3:2+fp8-attention")["cache"] == "taylorseer:3:2"
    assert recipes.apply(config.EngineConfig(model="tiny"), "fp8-storage").fp8_matmul == "weight-only"
    for bad, message in (("int8", "starts with one of"), ("fp8+turbo", "unknown part 'turbo'"),
                         ("fp8+cache=first-block:7", "--cache")):
        with pytest.raises(SetupError, match=message):
            recipes.flags(bad)
