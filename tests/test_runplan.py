"""The run plan for each kind of hardware, from hand-made Capabilities (no GPU needed), and the engine carrying it
out without rewriting it."""

import copy
from dataclasses import FrozenInstanceError, replace

import pytest
from conftest import A100, CPU, H100, MPS, RTX4090, make_plan

from fp8demo import cards, compiler, config, placement, runplan
from fp8demo.engine import Engine
from fp8demo.errors import SetupError
from fp8demo.planner import Where
from fp8demo.policy import Kind
from fp8demo.request import GenerationRequest, Job

GIB = 2**30


@pytest.mark.parametrize("caps", [H100, RTX4090], ids=["hopper", "ada"])
def test_fp8_matmuls_on_ada_and_hopper(caps):
    plan = make_plan(caps)
    assert plan.blocks is Kind.FP8_MATMUL
    assert plan.modulation is Kind.FP8_WEIGHTS  # never FP8 activations on modulation
    assert plan.compile is True  # FP8 is slower than bf16 unless compiled
    assert plan.t5 is Kind.FP8_WEIGHTS
    assert plan.dtypes["vae"] == plan.dtypes["text_encoder"] == "bfloat16"
    assert "FP8 tensor cores" in plan.reasons["blocks"]


@pytest.mark.parametrize("caps", [A100, CPU, MPS], ids=["ampere", "cpu", "mps"])
def test_fp8_weights_elsewhere_say_why(caps):
    plan = make_plan(caps)
    assert plan.blocks is Kind.FP8_WEIGHTS
    assert plan.compile is False
    assert "saves memory but not time" in plan.reasons["blocks"]
    if caps is A100:
        assert "compute capability 8.0" in plan.reasons["blocks"]


def test_the_plan_is_frozen():
    plan = make_plan(H100)
    with pytest.raises(FrozenInstanceError):
        plan.compile = False


def test_cpu_keeps_vae_in_float32_and_says_so():
    plan = make_plan(CPU, precision="bf16")
    assert plan.dtypes["vae"] == "float32"
    assert "VAE runs in float32" in plan.reasons["vae"]


def test_bf16_baseline_is_all_16_bit():
    plan = make_plan(H100, precision="bf16")
    assert (plan.blocks, plan.modulation, plan.t5) == (Kind.BITS16, Kind.BITS16, Kind.BITS16)
    assert plan.compile is False  # compile defaults on only for FP8 matmuls
    assert plan.compute_dtype == "bfloat16"


def test_fp16_keeps_t5_in_bf16():
    plan = make_plan(H100, precision="fp16")
    assert plan.compute_dtype == "float16" and plan.dtypes["text_encoder_3"] == "bfloat16"
    assert plan.t5 is Kind.BITS16
    assert "T5-XXL computes in bf16" in plan.reasons["t5"]


def test_fp16_with_t5_off_has_no_t5_note():
    plan = make_plan(H100, precision="fp16", t5="off")
    assert plan.t5 is None and plan.placement["text_encoder_3"] is Where.OFF
    assert "overflows" not in plan.reasons["t5"]


def test_modulation_bf16_keeps_modulation_16bit():
    plan = make_plan(H100, modulation="bf16")
    assert plan.blocks is Kind.FP8_MATMUL and plan.modulation is Kind.BITS16


@pytest.mark.parametrize(
    "precision, t5, expected",
    [("fp8", "auto", Kind.FP8_WEIGHTS), ("bf16", "auto", Kind.BITS16), ("fp16", "auto", Kind.BITS16),
     ("bf16", "fp8", Kind.FP8_WEIGHTS), ("fp8", "bf16", Kind.BITS16), ("fp8", "off", None)],
)
def test_t5_modes(precision, t5, expected):
    assert make_plan(H100, precision=precision, t5=t5).t5 is expected


def test_explicit_compile_flags_are_honoured():
    assert make_plan(H100, compile=False).compile is False
    assert make_plan(H100, precision="bf16", compile=True).compile is True


def test_no_torchao_is_a_clear_error_for_fp8_only():
    no_ao = replace(H100, torchao=False)
    with pytest.raises(SetupError, match="pip install torchao"):
        make_plan(no_ao)
    assert make_plan(no_ao, precision="bf16").blocks is Kind.BITS16


def test_no_bf16_gpu_falls_back_to_fp16_with_a_note():
    t4 = replace(A100, name="T4", compute_capability=(7, 5), bf16=False)
    plan = make_plan(t4, precision="bf16")
    assert plan.compute_dtype == "float16"
    assert "no bf16 support" in plan.reasons["compute"]


def test_xformers_missing_or_on_cpu_is_a_clear_error():
    with pytest.raises(SetupError, match="pip install xformers"):
        make_plan(H100, attention="xformers")
    with pytest.raises(SetupError, match="needs a CUDA GPU"):
        make_plan(CPU, attention="xformers")
    assert make_plan(replace(H100, xformers=True), attention="xformers").attention == "xformers"


@pytest.mark.parametrize("field, value", [("precision", "int8"), ("t5", "fp4"), ("offload", "disk"),
                                          ("modulation", "fp16"), ("attention", "flash"), ("fp8_matmul", "fast")])
def test_unknown_option_values_are_rejected(field, value):
    with pytest.raises(SetupError, match="choose one of"):
        make_plan(H100, **{field: value})


@pytest.mark.parametrize("offload", ["model", "sequential"])
def test_compiled_fp8_is_never_combined_with_offload(offload):
    plan = make_plan(H100, offload=offload)
    assert plan.placement["transformer"] is planner_where(offload) and plan.compile is False
    assert "known-broken" in plan.reasons["compile"]


def planner_where(offload: str) -> Where:
    return {"model": Where.MODEL_OFFLOAD, "sequential": Where.SEQUENTIAL}[offload]


def test_offload_on_cpu_is_ignored_with_a_note():
    plan = make_plan(CPU, offload="model")
    assert set(plan.placement.values()) == {Where.DEVICE} and plan.offload == "none"
    assert "needs a CUDA GPU" in plan.reasons["placement"]


def test_unknown_architecture_on_cuda_stays_resident_and_says_so():
    plan = make_plan(RTX4090)  # no footprint: the planner has nothing to weigh
    assert plan.offload == "none" and plan.memory is None and plan.compile
    assert "does not know this model's architecture" in plan.reasons["placement"]


def test_max_side_is_checked():
    with pytest.raises(SetupError, match="--max-side must be a multiple of 16"):
        make_plan(CPU, max_side=1000)


def test_labels_say_what_runs():
    assert make_plan(H100).label() == "FP8 E4M3 native matmuls (compiled)"
    assert make_plan(CPU).label() == "FP8 E4M3 weights, bf16 compute"
    assert make_plan(H100, precision="fp16", offload="model").label() == "fp16 (offload model)"


def test_kind_reads_older_manifest_words():
    assert Kind.parse("fp8-dynamic") is Kind.FP8_MATMUL and Kind.parse("fp8-weight-only") is Kind.FP8_WEIGHTS
    assert Kind.parse("16-bit") is Kind.BITS16 and Kind.parse("fp8-matmul") is Kind.FP8_MATMUL


# ---------------------------------------------------------------------------------------------------------------
# The engine carries the plan out and never rewrites it

MACHINES = [("cpu", CPU, None)] + [
    (f"{gib}GiB-cc{cc[0]}.{cc[1]}", cards.card_capabilities(gib * GIB, cc), gib)
    for gib in (8, 12, 16, 24, 80) for cc in ((8, 6), (8, 9), (9, 0))
]


@pytest.fixture(scope="module")
def tiny_pipeline(tiny_config):
    """A real tiny pipeline in host memory: what the loader hands the engine (its precision does not matter here)."""
    from fp8demo.weights import sources

    # every FP8-capable Linear already FP8: whatever plan a row has, the recipe finds nothing left to quantize
    plan = make_plan(CPU, fp8_matmul="native", t5="fp8")
    return sources.load_pipeline(sources.resolve_model("tiny", CPU), plan, tiny_config)


class _CompileError(Exception):
    """What dynamo raises when the compiler fails (recognised by the module its type comes from)."""


_CompileError.__module__ = "torch._dynamo.exc"


@pytest.mark.parametrize("compile_", [True, False], ids=["compile", "no-compile"])
@pytest.mark.parametrize("offload", ["auto", "model"])
@pytest.mark.parametrize("name, caps, gib", MACHINES, ids=[m[0] for m in MACHINES])
def test_the_engine_holds_the_plan_it_was_given(name, caps, gib, offload, compile_, tiny_pipeline, tiny_config,
                                                monkeypatch):
    """Loading, placing, compiling and a compiler failure while serving leave the very plan object in place."""
    from fp8demo.weights import footprint, sources

    cfg = replace(tiny_config, model="random:large", offload=offload, compile=compile_)
    plan = footprint.plan_for(sources.resolve_model(cfg.model, caps), cfg, caps)
    if caps.device == "cuda" and offload == "auto" and gib <= 8:
        assert plan.offload != "none"  # Large does not fit 8 GiB resident: something is offloaded
    placed, compiled = [], []
    monkeypatch.setattr("fp8demo.engine.load_pipeline", lambda source, p, c, devices: copy.deepcopy(tiny_pipeline))
    monkeypatch.setattr(placement, "apply", lambda pipe, p: placed.append(p))
    monkeypatch.setattr(compiler, "activate", lambda cache: None)
    monkeypatch.setattr(compiler, "compile_blocks", lambda transformer, device: compiled.append(device))
    engine = Engine(cfg, caps, plan)
    engine.load()
    assert engine.plan is plan and placed == [plan] and engine.report.plan is plan
    assert compiled == ([plan.device] if plan.compile else [])

    # serving: the compiled transformer fails in the compiler once; the job is served eagerly, the plan stays
    monkeypatch.setattr(compiler, "is_compiled", lambda transformer: True)
    monkeypatch.setattr(compiler, "uncompile", lambda transformer: None)
    calls = []

    def run(job, dtype):
        calls.append(job)
        if len(calls) == 1:
            raise _CompileError("inductor failed")
        return "served"

    monkeypatch.setattr(engine, "_run", run)
    job = Job(GenerationRequest("a cat", seed=1))
    assert engine._denoise(job, engine.pipe.transformer) == "served" and len(calls) == 2
    assert engine.plan is plan and [e.kind for e in engine.events] == ["compile-failed"]
    assert "inductor failed" in engine.info()["events"][0]["message"]
    assert engine.info()["plan"] == plan.as_dict()


def test_the_comparison_side_gets_a_plan_of_its_own(tiny_engine):
    """The comparer decides a second plan (16-bit, no T5) for its transformer; the engine's stays as it was."""
    before = tiny_engine.plan
    cfg = replace(tiny_engine.cfg, precision="bf16", t5="off", offload="none", compile=tiny_engine.plan.compile)
    side = runplan.decide(cfg, tiny_engine.caps)
    assert side.blocks is Kind.BITS16 and side.t5 is None and tiny_engine.plan is before


def test_engine_flags_default_from_the_dataclass():
    import argparse

    parser = argparse.ArgumentParser()
    config.add_engine_arguments(parser)
    assert config.engine_config_from_args(parser.parse_args([])) == config.EngineConfig()
    quant = argparse.ArgumentParser()
    config.add_engine_arguments(quant, ("t5", "modulation"))
    args = quant.parse_args([])
    assert vars(args) == {"t5": "auto", "modulation": "fp8"}  # quantize's defaults are the engine's
