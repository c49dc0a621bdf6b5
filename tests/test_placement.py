"""The engine loads with the run plan and carries out its placement; random builds quantize as they build."""

from dataclasses import replace

import torch
from conftest import CPU, make_plan

from fp8demo import cards, placement, planner
from fp8demo.engine import Engine
from fp8demo.planner import Where
from fp8demo.tensors import is_fp8
from fp8demo.weights import footprint, quantize, random_models, sources

GIB = 2**30


def test_engine_on_a_cpu_reports_the_plan_it_uses(tiny_engine):
    plan = tiny_engine.info()["plan"]
    assert plan["memory"] is None and set(plan["placement"].values()) == {"device"} and plan["device"] == "cpu"
    assert plan["offload"] == tiny_engine.plan.offload == "none"
    assert tiny_engine.report.as_dict()["plan"] == plan  # `python -m fp8demo info` prints the same


class _Recorder:
    def __init__(self):
        self.moves = []

    def to(self, device):
        self.moves.append(device)
        return self


def test_model_offload_keeps_one_visitor_on_the_gpu():
    visits = placement._Visits("cuda")
    clip, t5, transformer = _Recorder(), _Recorder(), _Recorder()
    visits.enter(clip, visitor=True)
    visits.enter(t5, visitor=True)  # the previous visitor leaves first
    visits.enter(transformer, visitor=False)  # a resident component running sends the last visitor out
    visits.enter(transformer, visitor=False)
    assert clip.moves == ["cuda", "cpu"] and t5.moves == ["cuda", "cpu"] and transformer.moves == []


def test_engine_loads_each_component_where_the_plan_puts_it(tiny_config, monkeypatch):
    """An 8 GiB CUDA card (faked): the loader gets the plan's devices, the placement is applied and reported."""
    caps = cards.card_capabilities(8 * GIB, (9, 0))
    cfg = replace(tiny_config, model="random:medium", compile=False)
    plan = footprint.plan_for(sources.resolve_model(cfg.model, caps), cfg, caps)
    assert plan.placement["transformer"] is Where.DEVICE and plan.placement["text_encoder_3"] is not Where.DEVICE
    seen = {}

    def fake_load(src, p, c, devices=None):
        seen["devices"] = devices
        # a real pipeline in host memory stands in for the one the GPU would get
        return sources.load_pipeline(sources.resolve_model("tiny", CPU), make_plan(CPU), replace(c, model="tiny"))

    monkeypatch.setattr("fp8demo.engine.load_pipeline", fake_load)
    monkeypatch.setattr(placement, "apply", lambda pipe, p: seen.update(applied=p))
    engine = Engine(cfg, caps)
    engine.load()
    assert engine.plan == plan and seen["applied"] is engine.plan
    assert seen["devices"] == placement.load_devices(plan)
    assert seen["devices"]["transformer"] == "cuda" and seen["devices"]["text_encoder_3"] == "cpu"
    assert engine.info()["plan"] == plan.as_dict() == engine.report.as_dict()["plan"]
    assert engine.plan.offload != "none" and not engine.plan.compile


def test_group_offload_plan_turns_compile_off():
    caps = cards.card_capabilities(8 * GIB, (9, 0))
    plan = footprint.plan_for(sources.resolve_model("random:large", caps), cards.config.EngineConfig(), caps)
    assert plan.placement["transformer"] is Where.GROUP_OFFLOAD and not plan.compile
    assert "known-broken" in plan.reasons["compile"]
    assert placement.load_devices(plan)["transformer"] == "cpu"  # streamed from host memory


def test_cpu_run_encoder_gets_inputs_moved_to_it(tiny_config):
    plan = make_plan(CPU, precision="bf16")
    pipe = sources.load_pipeline(sources.resolve_model("tiny", CPU), plan, tiny_config)
    where = {c: Where.DEVICE for c in planner.COMPONENTS} | {"text_encoder_3": Where.CPU}
    placement.apply(pipe, replace(plan, placement=where))
    hook = pipe.text_encoder_3._hf_hook
    assert hook.execution_device == "cpu" and hook.io_same_device
    assert not hasattr(pipe.transformer, "_hf_hook")  # resident, nothing visits: no hook at all


def test_random_build_quantizes_block_by_block_to_the_same_weights(monkeypatch):
    """Quantizing each block as soon as it is filled gives the weights of building everything, then quantizing."""
    from diffusers import SD3Transformer2DModel

    arch = random_models.TINY
    plan = make_plan(CPU)
    build = random_models.BuildPrecision(plan, {"default": torch.bfloat16}, 2048)
    seen = []
    original = quantize.quantize

    def recording(module, component, p, prefix=""):
        seen.append(prefix)
        original(module, component, p, prefix)

    monkeypatch.setattr(quantize, "quantize", recording)
    streamed = random_models._construct(lambda: SD3Transformer2DModel(**arch.transformer), True, 0,
                                        "transformer", build)
    monkeypatch.undo()
    assert seen == ["transformer_blocks.0.", "transformer_blocks.1."]  # one block at a time
    whole = random_models._construct(lambda: SD3Transformer2DModel(**arch.transformer), True, 0)
    quantize.quantize(whole, "transformer", plan)
    a, b = streamed.state_dict(), whole.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        x, y = a[key], b[key]
        if is_fp8(x):
            assert torch.equal(x.qdata.view(torch.uint8), y.qdata.view(torch.uint8)) and torch.equal(x.scale, y.scale)
        else:
            assert torch.equal(x, y.to(x.dtype)), key
