"""The card planner: every card of 8-80 GiB and every SD3.5 model, sized on the meta device (no weights, no GPU)."""

import copy
import json
from types import SimpleNamespace

import pytest
from conftest import CPU, make_plan

from fp8demo import cards, config, planner, prepare, report
from fp8demo.__main__ import main
from fp8demo.policy import COMPONENTS
from fp8demo.weights import footprint, quantize, random_models

GIB = 2**30
CARDS = planner.CARD_SIZES_GIB
MODELS = planner.PLAN_MODELS
# The preference order (fastest first), written out here rather than read from the planner
TRANSFORMER_ORDER = ["device", "model-offload", "group-offload", "sequential"]
# how close to the GPU a component is, to find a plan that dominates another
NEARNESS = {"device": 0, "off": 0, "model-offload": 1, "group-offload": 1, "cpu": 2, "sequential": 3}


@pytest.fixture(scope="module")
def plans():
    return {(m, g): cards.plan_for_card(m, g) for m in MODELS for g in CARDS}


def _footprint(model: str) -> planner.ModelFootprint:
    return footprint.of_source(cards.source_of(model))


def _candidates(model: str, gib: float, **options) -> list[planner.Candidate]:
    """Every placement the run plan weighs for `model` on a card of `gib` GiB, as runplan.decide weighs them."""
    cfg = config.EngineConfig(model=model, **options)
    plan = cards.plan_for_card(model, gib, cfg)
    fp = _footprint(model)
    size = planner.sizes(fp, plan.kinds, plan.t5 is not None)
    compile_wanted = cfg.compile if cfg.compile is not None else plan.fp8_matmul
    guided = cards.source_of(model).preset.guidance > 1
    return [planner.evaluate(fp, size, where, compile_wanted, plan.fp8_matmul, int(gib * GIB), guided)
            for where in planner.candidate_placements(cfg.offload, plan.t5 is not None)]


@pytest.mark.parametrize("gib", CARDS)
@pytest.mark.parametrize("model", MODELS)
def test_every_card_fits_every_model_below_its_memory(plans, model, gib):
    plan = plans[model, gib]
    m = plan.memory
    assert m.fits, plan.reasons
    assert m.peak_load_bytes < gib * GIB and m.peak_run_bytes < gib * GIB
    assert m.resident_bytes < m.peak_load_bytes and m.resident_bytes < m.peak_run_bytes
    assert m.peak_run_bytes == max(m.phase_bytes.values())
    assert plan.t5.value == "fp8-weights" and set(plan.placement) == set(COMPONENTS)


@pytest.mark.parametrize("gib", CARDS)
@pytest.mark.parametrize("model", MODELS)
def test_every_plan_that_fits_keeps_the_headroom(plans, model, gib):
    """max(0.5 GiB, 6 % of the card) stays free at both peaks: the context, workspaces and fragmentation need it."""
    m = plans[model, gib].memory
    assert m.headroom_bytes == max(512 * 2**20, int(0.06 * gib * GIB))
    assert m.fits and max(m.peak_run_bytes, m.peak_load_bytes) + m.headroom_bytes <= gib * GIB


def test_a_placement_that_would_eat_the_headroom_is_not_taken():
    """Medium on 8 GiB with T5-XXL model-offloaded peaks at 7.9 GiB: under the card, but into its half GiB of
    headroom, so T5-XXL runs on the CPU instead (6.6 GiB at peak)."""
    plan = cards.plan_for_card("medium", 8)
    assert plan.placement["text_encoder_3"] == "cpu" and plan.placement["transformer"] == "device"
    offloaded = [c for c in _candidates("medium", 8) if c.placement["text_encoder_3"] == "model-offload"
                 and c.memory.peak_run_bytes < 8 * GIB and not c.memory.fits]
    assert offloaded  # such placements fit the card, not the headroom


@pytest.mark.parametrize("gib", CARDS)
@pytest.mark.parametrize("model", MODELS)
def test_the_plan_is_the_fastest_that_fits(plans, model, gib):
    """Brute force over every candidate: none that fits is faster, and none keeps more on the GPU at no cost."""
    chosen = plans[model, gib]
    fitting = [c for c in _candidates(model, gib) if c.memory.fits]

    def speed(c):
        return TRANSFORMER_ORDER.index(c.placement["transformer"]), c.memory.offload_seconds

    assert speed(chosen) == min(speed(c) for c in fitting)
    for c in fitting:
        nearer = [NEARNESS[c.placement[k]] <= NEARNESS[chosen.placement[k]] for k in chosen.placement]
        strictly = any(NEARNESS[c.placement[k]] < NEARNESS[chosen.placement[k]] for k in chosen.placement)
        assert not (all(nearer) and strictly), (c.placement, chosen.placement)


@pytest.mark.parametrize("model", MODELS)
def test_more_memory_never_gives_a_slower_plan(plans, model):
    keys = [(planner.TRANSFORMER_TIERS[p.placement["transformer"]], p.memory.offload_seconds)
            for p in (plans[model, g] for g in CARDS)]
    assert keys == sorted(keys, reverse=True)


@pytest.mark.parametrize("model", MODELS)
def test_80_gib_keeps_everything_resident_and_compiled(plans, model):
    plan = plans[model, 80]
    assert plan.offload == "none" and plan.compile
    assert set(plan.placement.values()) == {planner.Where.DEVICE}
    assert plan.as_dict()["offload"] == "none"


@pytest.mark.parametrize("model", ["large", "large-turbo"])
def test_large_with_t5_on_24_gib_keeps_the_transformer_resident(plans, model):
    plan = plans[model, 24]
    assert plan.placement["transformer"] == "device" and plan.compile and plan.t5.value == "fp8-weights"
    assert plan.placement["text_encoder_3"] != "off"


def test_text_encoders_leave_before_the_transformer_does(plans):
    """Whenever the transformer is offloaded, no plan with it resident fits, whatever the text encoders do."""
    offloaded = [(m, g) for (m, g), p in plans.items() if p.placement["transformer"] != "device"]
    assert offloaded  # the 8 GiB cards cannot hold Large's transformer with its activations
    for model, gib in offloaded:
        resident = [c for c in _candidates(model, gib) if c.placement["transformer"] == "device"]
        assert resident and not any(c.memory.fits for c in resident)


def test_an_offloaded_transformer_is_never_compiled():
    plan = cards.plan_for_card("large", 8)
    assert plan.placement["transformer"] == "group-offload" and plan.compile is False
    assert "known-broken" in plan.reasons["compile"] and "group offload" in plan.reasons["placement"]
    assert "transformer group offload (CUDA streams)" in plan.offload


@pytest.mark.parametrize("gib, options, message", [
    (2, {}, "Nothing fits in 2.0 GiB: "),
    (12, {"offload": "none"}, "Nothing fits in 12.0 GiB with --offload none"),
])
def test_nothing_fits_says_so(gib, options, message):
    plan = cards.plan_for_card("large", gib, config.EngineConfig(**options))
    assert plan.memory.fits is False and not any(c.memory.fits for c in _candidates("large", gib, **options))
    note = plan.reasons["placement"][plan.reasons["placement"].index("Nothing fits"):]
    assert note.startswith(message) and "GiB at peak" in note


def test_t5_off_is_never_loaded():
    plan = cards.plan_for_card("large", 12, config.EngineConfig(t5="off"))
    assert plan.t5 is None and plan.placement["text_encoder_3"] == "off"
    assert plan.memory.fits and plan.placement["transformer"] == "device"


def test_bf16_large_does_not_fit_16_gib_resident():
    """15 GiB of bf16 weights plus activations: the transformer has to stream."""
    plan = cards.plan_for_card("large", 16, config.EngineConfig(precision="bf16"))
    assert plan.memory.fits and plan.placement["transformer"] == "group-offload" and not plan.compile


def test_ampere_card_stores_fp8_without_compiling():
    plan = cards.plan_for_card("large", 24, compute_capability=(8, 6))
    assert plan.label() == "FP8 E4M3 weights, bf16 compute" and plan.compile is False
    assert plan.placement["transformer"] == "device" and plan.memory.fits


def test_activation_formula_at_1536_px():
    large, medium = _footprint("large"), _footprint("medium")
    tokens = (1536 // 16) ** 2 + 77 + 256
    assert planner.transformer_activation_bytes(large, 2, eager_fp8=False) == 2 * tokens * 2432 * 2 * 11
    assert planner.transformer_activation_bytes(large, 1, eager_fp8=True) == tokens * 2432 * 2 * 33
    assert planner.transformer_activation_bytes(medium, 2, eager_fp8=False) == 2 * tokens * 1536 * 2 * 13
    # the VAE decodes 1024 px tiles above 1024 px, so its peak stops growing there
    vae_1024 = 4 * 256 * 1024 * 1024 * 2
    at = footprint.of_architecture
    assert planner.vae_activation_bytes(large) == planner.vae_activation_bytes(at("large", None, 1024)) == vae_1024
    assert planner.vae_activation_bytes(at("large", None, 768)) == 4 * 256 * 768 * 768 * 2


def test_smaller_max_side_needs_less_memory():
    full = cards.plan_for_card("large", 80)
    small = cards.plan_for_card("large", 80, config.EngineConfig(max_side=1024))
    assert small.memory.activation_bytes["transformer"] < full.memory.activation_bytes["transformer"]
    assert small.memory.peak_run_bytes < full.memory.peak_run_bytes


def test_peak_load_is_resident_plus_one_linear_being_quantized():
    plan = cards.plan_for_card("large", 80)
    fp = _footprint("large")
    assert max(fp.largest_module_16bit.values()) == 32128 * 4096 * 2  # T5's shared embedding, the largest module
    # ... but it stays 16-bit; T5's FFN Linears are quantized as they load, with torchao's float32 copies
    quantizing = 10240 * 4096 * planner.QUANTIZE_BYTES_PER_WEIGHT
    assert fp.components["text_encoder_3"].quantize_transient(plan.kinds) == quantizing
    assert plan.memory.peak_load_bytes == planner.OVERHEAD_BYTES + plan.memory.resident_bytes + quantizing


def test_peak_load_of_a_16bit_plan_or_without_t5():
    bf16 = cards.plan_for_card("large", 80, config.EngineConfig(precision="bf16", t5="bf16"))
    assert bf16.memory.peak_load_bytes == planner.OVERHEAD_BYTES + bf16.memory.resident_bytes + 32128 * 4096 * 2
    no_t5 = cards.plan_for_card("large", 80, config.EngineConfig(t5="off"))
    adaln = 6 * 2432 * 2432 * planner.QUANTIZE_BYTES_PER_WEIGHT  # the transformer's largest FP8 Linear (norm1.linear)
    assert no_t5.memory.peak_load_bytes == planner.OVERHEAD_BYTES + no_t5.memory.resident_bytes + adaln


def test_footprints_match_the_precision_estimate_on_full_size_models():
    fp = _footprint("large")
    size = planner.sizes(fp, cards.plan_for_card("large", 24).kinds, t5=True)
    transformer = size.components["transformer"]
    assert 7.5 * GIB < transformer < 7.7 * GIB  # the docs' Precision table: 7.59 GiB
    # 38 blocks, the last one (context_pre_only) smaller; the rest: embedders, norm_out, proj_out, cropped table
    assert size.rest + 37 * size.block < transformer <= size.rest + 38 * size.block
    assert size.rest < 0.02 * transformer
    assert fp.width == 2432 and fp.dual_attention_blocks == 0
    assert _footprint("medium").dual_attention_blocks == 13


def test_per_component_estimate_is_exact_on_tiny():
    """The footprint's bytes under a plan are what preparing really leaves, component by component, T5 in FP8
    included."""
    components = random_models.build_components(random_models.TINY)
    for options in ({}, {"t5": "bf16", "modulation": "bf16"}):
        plan = make_plan(CPU, **options)
        pipe = SimpleNamespace(**{c: copy.deepcopy(components[c]) for c in COMPONENTS})
        fp = footprint.measure(pipe, "tiny", plan.max_side)
        estimate = planner.sizes(fp, plan.kinds, t5=True).components
        prepare.transformer(pipe.transformer, plan)  # the steps that change bytes
        quantize.quantize(pipe.text_encoder_3, "text_encoder_3", plan)
        held = report.measure(pipe, plan)
        assert estimate == {c.name: c.bytes for c in held.components}, options


def test_engine_and_card_plans_agree():
    """The engine's plan on a 12 GiB card is the one `plan` prints for that card, for an official repo id and its
    random twin; off CUDA, or for the tiny model, nothing is placed by the planner."""
    from fp8demo.weights.sources import resolve_model

    caps = cards.card_capabilities(12 * GIB)
    expected = cards.plan_for_card("medium", 12)
    for name in ("stabilityai/stable-diffusion-3.5-medium", "random:medium"):
        plan = footprint.plan_for(resolve_model(name, caps), config.EngineConfig(model=name), caps)
        assert plan == expected
    assert footprint.plan_for(resolve_model("random:medium", CPU), config.EngineConfig(), CPU).memory is None
    assert footprint.plan_for(resolve_model("tiny", CPU), config.EngineConfig(), caps).memory is None


def test_cli_prints_one_json_line(capsys):
    # in this process (test_cli.py runs the real entry point in a new one)
    repo = "stabilityai/stable-diffusion-3.5-large"
    assert main(["plan", "--model", repo, "--vram", "24", "--json"]) == 0
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1
    data = json.loads(out)
    for key in ("placement", "offload", "t5", "compile", "memory", "reasons", "label", "blocks", "dtypes"):
        assert key in data
    m = data["memory"]
    assert m["headroom_bytes"] == int(0.06 * 24 * GIB)
    assert m["fits"] is True and data["placement"]["transformer"] == "device" and data["architecture"] == "large"
    assert m["resident_bytes"] < m["peak_load_bytes"] and m["peak_run_bytes"] < 24 * GIB


@pytest.mark.parametrize("args, message", [
    (["--model", "tiny", "--vram", "8"], "plan knows the SD3.5 architectures only"),
    (["--model", "random:nope", "--vram", "8"], "Unknown model"),
    (["--model", "medium", "--vram", "0"], "--vram must be a positive"),
    (["--model", "medium", "--vram", "8", "--max-side", "1000"], "--max-side must be a multiple of 16"),
    (["--model", "medium", "--vram", "8", "--compute-capability", "ada"], "--compute-capability must look like"),
    (["--model", "large", "--vram", "24", "--cache", "first-block:3"], "--cache 'first-block:3'"),
])
def test_cli_mistakes_exit_2(args, message, capsys):
    assert main(["plan", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_the_plan_carries_the_step_cache_asked_for(capsys):
    assert main(["plan", "--model", "large", "--vram", "24", "--cache", "preset", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["cache"] == "first-block:0.08" and "large preset" in data["reasons"]["cache"]


def test_plain_output_says_what_goes_where_and_why(capsys):
    assert main(["plan", "--model", "large", "--vram", "12"]) == 0
    out = capsys.readouterr().out
    assert "placement:     transformer device" in out and "T5-XXL cpu" in out and ": fits" in out
    assert "compile:     On: FP8 matmuls are slower than bf16 unless compiled." in out


def test_readme_plans_table_matches_the_planner():
    from benchmarks import plans

    assert plans.main(["--check"]) == 0, "docs/precision.md's plans table is stale: run python -m benchmarks.plans"
