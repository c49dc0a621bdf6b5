"""The card planner: every card of 8-80 GiB and every SD3.5 model, sized on the meta device (no weights, no GPU)."""

import copy
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
from conftest import CPU

from fp8demo import config, planner, precision
from fp8demo.__main__ import main
from fp8demo.precision import PrecisionOptions, plan_precision
from fp8demo.weights import random_models

GIB = 2**30
CARDS = planner.CARD_SIZES_GIB
MODELS = planner.PLAN_MODELS
# The preference order of the issue, written out here rather than read from the planner
TRANSFORMER_ORDER = ["gpu", "model-offload", "group-offload", "sequential"]
# how close to the GPU a component is, to find a plan that dominates another
NEARNESS = {"gpu": 0, "off": 0, "model-offload": 1, "group-offload": 1, "cpu": 2, "sequential": 3}


@pytest.fixture(scope="module")
def plans():
    return {(m, g): planner.plan_for_card(m, g) for m in MODELS for g in CARDS}


def _request(model: str, gib: float, **options) -> planner.CardPlanRequest:
    arch, layers = planner.architecture_of(model)
    plan = plan_precision(PrecisionOptions(**options), planner.card_capabilities(int(gib * GIB)))
    cfg = config.PRESETS[random_models.ARCHITECTURES[arch].preset].guidance > 1
    return planner.CardPlanRequest(plan, planner.architecture_footprint(arch, plan, config.MAX_SIDE, layers),
                                   int(gib * GIB), config.MAX_SIDE, cfg)


@pytest.mark.parametrize("gib", CARDS)
@pytest.mark.parametrize("model", MODELS)
def test_every_card_fits_every_model_below_its_memory(plans, model, gib):
    plan = plans[model, gib]
    assert plan.fits, plan.notes
    assert plan.peak_load_bytes < gib * GIB and plan.peak_run_bytes < gib * GIB
    assert plan.resident_bytes < plan.peak_load_bytes and plan.resident_bytes < plan.peak_run_bytes
    assert plan.peak_run_bytes == max(plan.phase_bytes.values())
    assert plan.t5 == "fp8" and set(plan.placement) == set(precision.COMPONENTS)


@pytest.mark.parametrize("gib", CARDS)
@pytest.mark.parametrize("model", MODELS)
def test_the_plan_is_the_fastest_that_fits(plans, model, gib):
    """Brute force over every candidate: none that fits is faster, and none keeps more on the GPU at no cost."""
    chosen = plans[model, gib]
    fitting = [c for c in planner.candidates(_request(model, gib)) if c.fits]

    def speed(c):
        return TRANSFORMER_ORDER.index(c.placement["transformer"]), c.offload_seconds

    assert speed(chosen) == min(speed(c) for c in fitting)
    for c in fitting:
        nearer = [NEARNESS[c.placement[k]] <= NEARNESS[chosen.placement[k]] for k in chosen.placement]
        strictly = any(NEARNESS[c.placement[k]] < NEARNESS[chosen.placement[k]] for k in chosen.placement)
        assert not (all(nearer) and strictly), (c.placement, chosen.placement)


@pytest.mark.parametrize("model", MODELS)
def test_more_memory_never_gives_a_slower_plan(plans, model):
    keys = [plans[model, g].speed_key for g in CARDS]
    assert keys == sorted(keys, reverse=True)


@pytest.mark.parametrize("model", MODELS)
def test_80_gib_keeps_everything_resident_and_compiled(plans, model):
    plan = plans[model, 80]
    assert plan.all_resident and plan.offload == "none" and plan.compile
    assert set(plan.placement.values()) == {"gpu"}
    assert plan.as_dict()["offload"] == "none"


@pytest.mark.parametrize("model", ["large", "large-turbo"])
def test_large_with_t5_on_24_gib_keeps_the_transformer_resident(plans, model):
    plan = plans[model, 24]
    assert plan.placement["transformer"] == "gpu" and plan.compile and plan.t5 == "fp8"
    assert plan.placement["text_encoder_3"] != "off"


def test_text_encoders_leave_before_the_transformer_does(plans):
    """Whenever the transformer is offloaded, no plan with it resident fits, whatever the text encoders do."""
    offloaded = [(m, g) for (m, g), p in plans.items() if p.placement["transformer"] != "gpu"]
    assert offloaded  # the 8 GiB cards cannot hold Large's transformer with its activations
    for model, gib in offloaded:
        resident = [c for c in planner.candidates(_request(model, gib)) if c.placement["transformer"] == "gpu"]
        assert resident and not any(c.fits for c in resident)


def test_an_offloaded_transformer_is_never_compiled():
    plan = planner.plan_for_card("large", 8)
    assert plan.placement["transformer"] == "group-offload" and plan.compile is False
    assert any("known-broken" in n for n in plan.notes) and any("group offload" in n for n in plan.notes)
    assert "transformer group offload (CUDA streams)" in plan.offload


@pytest.mark.parametrize("gib, options, message", [
    (2, {}, "Nothing fits in 2.0 GiB: "),
    (12, {"offload": "none"}, "Nothing fits in 12.0 GiB with --offload none"),
])
def test_nothing_fits_says_so(gib, options, message):
    req = _request("large", gib, **options)
    plan = planner.plan_card(req)
    assert plan.fits is False and not any(c.fits for c in planner.candidates(req))
    note = next(n for n in plan.notes if n.startswith("Nothing fits"))
    assert note.startswith(message) and "GiB at peak" in note


def test_t5_off_is_never_loaded():
    plan = planner.plan_for_card("large", 12, PrecisionOptions(t5="off"))
    assert plan.t5 == "off" and plan.placement["text_encoder_3"] == "off"
    assert plan.fits and plan.placement["transformer"] == "gpu"


def test_bf16_large_does_not_fit_16_gib_resident():
    """15 GiB of bf16 weights plus activations: the transformer has to stream."""
    plan = planner.plan_for_card("large", 16, PrecisionOptions(precision="bf16"))
    assert plan.fits and plan.placement["transformer"] == "group-offload" and not plan.compile


def test_ampere_card_stores_fp8_without_compiling():
    plan = planner.plan_for_card("large", 24, compute_capability=(8, 6))
    assert plan.precision == "FP8 E4M3 weights, bf16 compute" and plan.compile is False
    assert plan.placement["transformer"] == "gpu" and plan.fits


def test_activation_formula_at_1536_px():
    large = _request("large", 24).footprint
    medium = _request("medium", 24).footprint
    tokens = (1536 // 16) ** 2 + 77 + 256
    assert planner.transformer_activation_bytes(large, 1536, 2, eager_fp8=False) == 2 * tokens * 2432 * 2 * 11
    assert planner.transformer_activation_bytes(large, 1536, 1, eager_fp8=True) == tokens * 2432 * 2 * 33
    assert planner.transformer_activation_bytes(medium, 1536, 2, eager_fp8=False) == 2 * tokens * 1536 * 2 * 13
    # the VAE decodes 1024 px tiles above 1024 px, so its peak stops growing there
    vae_1024 = 4 * 256 * 1024 * 1024 * 2
    assert planner.vae_activation_bytes(large, 1536) == planner.vae_activation_bytes(large, 1024) == vae_1024
    assert planner.vae_activation_bytes(large, 768) == 4 * 256 * 768 * 768 * 2


def test_smaller_max_side_needs_less_memory():
    full, small = planner.plan_for_card("large", 80), planner.plan_for_card("large", 80, max_side=1024)
    assert small.activation_bytes["transformer"] < full.activation_bytes["transformer"]
    assert small.peak_run_bytes < full.peak_run_bytes


def test_peak_load_is_resident_plus_one_16bit_layer():
    req = _request("large", 80)
    plan = planner.plan_card(req)
    largest = max(req.footprint.largest_module_16bit.values())
    assert largest == 32128 * 4096 * 2  # T5's shared embedding, the largest single module
    assert plan.peak_load_bytes == planner.OVERHEAD_BYTES + plan.resident_bytes + largest


def test_footprints_match_the_precision_estimate_on_full_size_models():
    fp = _request("large", 24).footprint
    assert 7.5 * GIB < fp.bytes["transformer"] < 7.7 * GIB  # README's Precision table: 7.59 GiB
    # 38 blocks, the last one (context_pre_only) smaller; the rest: embedders, norm_out, proj_out, cropped table
    assert fp.transformer_rest_bytes + 37 * fp.transformer_block_bytes < fp.bytes["transformer"]
    assert fp.transformer_rest_bytes + 38 * fp.transformer_block_bytes >= fp.bytes["transformer"]
    assert fp.transformer_rest_bytes < 0.02 * fp.bytes["transformer"]
    assert fp.width == 2432 and fp.dual_attention_blocks == 0
    assert _request("medium", 24).footprint.dual_attention_blocks == 13


def test_per_component_estimate_is_exact_on_tiny():
    """The planner's bytes are what apply_precision really leaves, component by component, T5 in FP8 included."""
    components = random_models.build_components(random_models.TINY)
    for options in (PrecisionOptions(), PrecisionOptions(t5="bf16", modulation="bf16")):
        plan = plan_precision(options, CPU)
        pipe = SimpleNamespace(**{c: copy.deepcopy(components[c]) for c in precision.COMPONENTS})
        estimate = precision.estimate_component_bytes(pipe, plan)
        report = precision.apply_precision(pipe, plan)
        assert estimate == {c.name: c.bytes for c in report.components}, options


def test_engine_entry_point_matches_the_card_plan():
    from fp8demo.weights.sources import resolve_model

    req = _request("medium", 12)
    for name in ("stabilityai/stable-diffusion-3.5-medium", "random:medium"):
        source = resolve_model(name, planner.card_capabilities(12 * GIB))
        assert planner.plan_for_engine(source, req.plan, 12 * GIB) == planner.plan_card(req)
    # nothing to plan off CUDA, or for the tiny model
    assert planner.plan_for_engine(source, plan_precision(PrecisionOptions(), CPU), None) is None
    assert planner.plan_for_engine(resolve_model("tiny", CPU), req.plan, 12 * GIB) is None


def test_cli_prints_one_json_line():
    repo = "stabilityai/stable-diffusion-3.5-large"
    proc = subprocess.run([sys.executable, "-m", "fp8demo", "plan", "--model", repo, "--vram", "24"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    for key in ("fits", "offload", "t5", "compile", "resident_bytes", "peak_load_bytes", "peak_run_bytes", "notes",
                "placement"):
        assert key in data
    assert data["fits"] is True and data["placement"]["transformer"] == "gpu" and data["architecture"] == "large"
    assert data["peak_run_bytes"] < 24 * GIB


@pytest.mark.parametrize("args, message", [
    (["--model", "tiny", "--vram", "8"], "plan knows the SD3.5 architectures only"),
    (["--model", "random:nope", "--vram", "8"], "Unknown model"),
    (["--model", "medium", "--vram", "0"], "--vram must be a positive"),
    (["--model", "medium", "--vram", "8", "--max-side", "1000"], "--max-side must be a multiple of 16"),
    (["--model", "medium", "--vram", "8", "--compute-capability", "ada"], "--compute-capability must look like"),
])
def test_cli_mistakes_exit_2(args, message, capsys):
    assert main(["plan", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_readme_plans_table_matches_the_planner():
    from benchmarks import plans

    assert plans.main(["--check"]) == 0, "run: python -m benchmarks.plans"
