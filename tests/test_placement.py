"""The engine loads with the card plan and carries out its placement; random builds quantize as they build."""

from dataclasses import replace

import pytest
import torch
from conftest import CPU, H100

from fp8demo import hardware, placement, planner
from fp8demo.engine import Engine
from fp8demo.precision import PrecisionOptions, plan_precision
from fp8demo.weights import fp8_format, random_models, sources

GIB = 2**30


def test_engine_on_a_cpu_reports_the_plan_it_uses(tiny_engine):
    card = tiny_engine.info()["card_plan"]
    assert card["planner"] is None and set(card["placement"].values()) == {"cpu"}
    assert card["offload"] == tiny_engine.plan.offload == "none"
    assert tiny_engine.report.as_dict()["card_plan"] == card  # `python -m fp8demo info` prints the same


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


@pytest.fixture(scope="module")
def medium_on_8gib():
    source = sources.resolve_model("random:medium", H100)
    plan = plan_precision(PrecisionOptions(compile=False), H100)
    card = planner.plan_for_engine(source, plan, 8 * GIB)
    return source, plan, card


def test_engine_loads_each_component_where_the_card_plan_puts_it(medium_on_8gib, tiny_config, monkeypatch):
    """An 8 GiB CUDA card (faked): the loader gets the plan's devices, the placement is applied and reported."""
    source, plan, card = medium_on_8gib
    assert card.placement["transformer"] == planner.GPU and card.placement["text_encoder_3"] != planner.GPU
    seen = {}

    def fake_load(src, precision_plan, cfg, devices=None):
        seen["devices"] = devices
        # a real pipeline in host memory stands in for the one the GPU would get
        return sources.load_pipeline(sources.resolve_model("tiny", CPU), replace(precision_plan, device="cpu"),
                                     replace(cfg, model="tiny"))

    monkeypatch.setattr("fp8demo.engine.load_pipeline", fake_load)
    monkeypatch.setattr(hardware, "free_device_memory", lambda device: 8 * GIB)
    monkeypatch.setattr(placement, "apply", lambda pipe, c, device: seen.update(applied=(c, device)))
    engine = Engine(replace(tiny_config, model="random:medium", compile=False), H100)
    engine.load()
    assert engine.card_plan == card
    assert seen["devices"] == placement.load_devices(card, "cuda")
    assert seen["devices"]["transformer"] == "cuda" and seen["devices"]["text_encoder_3"] == "cpu"
    assert seen["applied"] == (card, "cuda")
    assert engine.info()["card_plan"] == card.as_dict() == engine.report.as_dict()["card_plan"]
    assert engine.plan.offload == "model" and not engine.plan.compile


def test_group_offload_plan_turns_compile_off():
    source = sources.resolve_model("random:large", H100)
    plan = plan_precision(PrecisionOptions(), H100)
    assert plan.compile
    card = planner.plan_for_engine(source, plan, 8 * GIB)
    assert card.placement["transformer"] == planner.GROUP_OFFLOAD
    decided = placement.precision_for(plan, card)
    assert decided.offload == "group" and not decided.compile
    assert placement.load_devices(card, "cuda")["transformer"] == "cpu"  # streamed from host memory


def test_cpu_run_encoder_gets_inputs_moved_to_it(tiny_config):
    plan = plan_precision(PrecisionOptions(precision="bf16"), CPU)
    pipe = sources.load_pipeline(sources.resolve_model("tiny", CPU), plan, tiny_config)
    where = {c: planner.GPU for c in placement.COMPONENTS} | {"text_encoder_3": planner.CPU}
    card = planner.CardPlan("tiny", 0, 0, True, where, "bf16", False, "", 0, 0, 0, {}, {}, 0.0)
    placement.apply(pipe, card, "cpu")
    hook = pipe.text_encoder_3._hf_hook
    assert hook.execution_device == "cpu" and hook.io_same_device
    assert not hasattr(pipe.transformer, "_hf_hook")  # resident, nothing visits: no hook at all


def test_random_build_quantizes_block_by_block_to_the_same_weights(monkeypatch):
    """Quantizing each block as soon as it is filled gives the weights of building everything, then quantizing."""
    from diffusers import SD3Transformer2DModel

    arch = random_models.TINY
    plan = plan_precision(PrecisionOptions(), CPU)
    build = random_models.BuildPrecision(plan, {"default": torch.bfloat16}, 2048)
    seen = []
    original = fp8_format.quantize

    def recording(module, component, p, prefix=""):
        seen.append(prefix)
        original(module, component, p, prefix)

    monkeypatch.setattr(fp8_format, "quantize", recording)
    streamed = random_models._construct(lambda: SD3Transformer2DModel(**arch.transformer), True, 0,
                                        "transformer", build)
    monkeypatch.undo()
    assert seen == ["transformer_blocks.0.", "transformer_blocks.1."]  # one block at a time
    whole = random_models._construct(lambda: SD3Transformer2DModel(**arch.transformer), True, 0)
    fp8_format.quantize(whole, "transformer", plan)
    a, b = streamed.state_dict(), whole.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        x, y = a[key], b[key]
        if fp8_format.is_fp8(x):
            assert torch.equal(x.qdata.view(torch.uint8), y.qdata.view(torch.uint8)) and torch.equal(x.scale, y.scale)
        else:
            assert torch.equal(x, y.to(x.dtype)), key
