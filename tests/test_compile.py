"""The GPU fast path, run on this CPU: native FP8 matmuls (torch._scaled_mm) and the compiled transformer.

torchao's dynamic-activation FP8 config refuses to run below compute capability 8.9; `--fp8-matmul native` lifts
that one check on a CPU (weights.quantize.native_fp8_on_cpu), where torch._scaled_mm runs real E4M3 matmuls. So the
code path of an Ada/Hopper GPU is tested here: the FP8 matmuls are counted, their output checked against bf16, and
the compiled engine is walked through every size the app offers.
"""

import copy
import functools
import logging
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch
from conftest import A100, CPU, H100, MPS, make_plan

from fp8demo import compiler, config
from fp8demo.errors import SetupError
from fp8demo.policy import Kind, Layer, layer_of
from fp8demo.report import count_fp8_matmuls
from fp8demo.request import GenerationRequest, Job
from fp8demo.weights import quantize, random_models

# ---- the plan --------------------------------------------------------------------------------------------------


def test_fp8_matmul_auto_is_native_only_on_fp8_gpus():
    assert make_plan(H100).blocks is Kind.FP8_MATMUL
    assert make_plan(A100).blocks is Kind.FP8_WEIGHTS
    assert make_plan(CPU).blocks is Kind.FP8_WEIGHTS


def test_fp8_matmul_native_on_cpu_is_the_test_path_not_compiled_by_default():
    plan = make_plan(CPU, fp8_matmul="native")
    assert (plan.blocks, plan.compile) == (Kind.FP8_MATMUL, False)
    assert "torch._scaled_mm" in plan.reasons["blocks"]
    assert "torch._scaled_mm" in plan.matmul and "torch._scaled_mm" in plan.as_dict()["matmul"]


@pytest.mark.parametrize("caps", [A100, MPS])
def test_fp8_matmul_native_is_refused_where_it_cannot_run(caps):
    with pytest.raises(SetupError, match="--fp8-matmul weight-only"):
        make_plan(caps, fp8_matmul="native")


def test_fp8_matmul_weight_only_on_an_fp8_gpu():
    plan = make_plan(H100, fp8_matmul="weight-only")
    assert plan.blocks is Kind.FP8_WEIGHTS and not plan.compile
    assert "dequantized" in plan.matmul
    assert make_plan(CPU, precision="bf16", fp8_matmul="native").matmul == "bfloat16 matmul"


def test_cli_flag_reaches_the_engine_config():
    import argparse

    parser = argparse.ArgumentParser()
    config.add_engine_arguments(parser)
    args = parser.parse_args(["--fp8-matmul", "native"])
    assert config.engine_config_from_args(args).fp8_matmul == "native"
    assert config.engine_config_from_args(parser.parse_args([])).fp8_matmul == config.EngineConfig().fp8_matmul


# ---- native FP8 matmuls on this CPU ----------------------------------------------------------------------------


def _inputs(tr, latent_side: int, text_tokens: int, batch: int = 1, seed: int = 0):
    c = tr.config
    g = torch.Generator().manual_seed(seed)
    return dict(
        hidden_states=torch.randn(batch, c.in_channels, latent_side, latent_side, generator=g).to(torch.bfloat16),
        encoder_hidden_states=torch.randn(batch, text_tokens, c.joint_attention_dim, generator=g).to(torch.bfloat16),
        pooled_projections=torch.randn(batch, c.pooled_projection_dim, generator=g).to(torch.bfloat16),
        timestep=torch.tensor([500.0] * batch),
        return_dict=False,
    )


def _forward(tr, inputs):
    with torch.inference_mode():
        return tr(**inputs)[0].float()


def _fp8_block_linears(tr) -> int:
    return sum(1 for name, m in tr.named_modules()
               if isinstance(m, torch.nn.Linear) and layer_of("transformer", name) is Layer.BLOCK)


def _native(tr):
    quantize.quantize(tr, "transformer", make_plan(CPU, fp8_matmul="native"))
    return tr


def _check_native(bf16, native, inputs):
    reference = _forward(bf16, inputs)
    _forward(native, inputs)  # compiled: the first call traces and compiles, which the profiler would count too
    calls = count_fp8_matmuls(lambda: _forward(native, inputs))
    out = _forward(native, inputs)
    cosine = torch.nn.functional.cosine_similarity(out.flatten(), reference.flatten(), dim=0).item()
    return calls, cosine


@pytest.fixture(scope="module")
def tiny_pair(tiny_config):
    from diffusers import SD3Transformer2DModel

    path = random_models.ensure_tiny(tiny_config.cache_dir)
    bf16 = SD3Transformer2DModel.from_pretrained(path, subfolder="transformer", dtype=torch.bfloat16).eval()
    return bf16, _native(copy.deepcopy(bf16))


def test_native_weights_quantize_activations_too(tiny_pair):
    _, native = tiny_pair
    weight = native.transformer_blocks[0].attn.to_q.weight
    assert weight.qdata.dtype == torch.float8_e4m3fn and weight.act_quant_kwargs is not None
    modulation = native.transformer_blocks[0].norm1.linear.weight
    assert modulation.qdata.dtype == torch.float8_e4m3fn and modulation.act_quant_kwargs is None  # weight-only


def test_native_fp8_on_tiny_eager_runs_scaled_mm_for_every_block_linear(tiny_pair):
    bf16, native = tiny_pair
    calls, cosine = _check_native(bf16, native, _inputs(bf16, latent_side=32, text_tokens=77))
    assert calls == _fp8_block_linears(native) > 0
    assert cosine >= 0.999


@pytest.mark.slow
def test_native_fp8_on_tiny_compiled(tiny_pair, engine_native):
    bf16, native = tiny_pair
    compiled = engine_native.pipe.transformer  # the compiled engine's own: its graphs are warm
    assert compiler.is_compiled(compiled)
    inputs = _inputs(bf16, latent_side=32, text_tokens=77)
    calls, cosine = _check_native(bf16, compiled, inputs)
    assert calls == _fp8_block_linears(compiled)  # inductor calls the same FP8 kernel
    assert cosine >= 0.999


def test_engine_report_counts_the_fp8_matmuls_that_ran(tiny_config):
    from fp8demo.engine import Engine

    native = Engine(replace(tiny_config, fp8_matmul="native", warmup_runs=0), CPU).start()
    assert native.fp8_matmuls_per_forward == _fp8_block_linears(native.pipe.transformer) > 0
    assert native.info()["fp8_matmuls_per_forward"] == native.fp8_matmuls_per_forward
    assert "torch._scaled_mm" in native.report.as_dict()["plan"]["matmul"]
    weight_only = Engine(replace(tiny_config, fp8_matmul="weight-only", warmup_runs=0), CPU).start()
    assert weight_only.fp8_matmuls_per_forward == 0


@pytest.fixture(scope="module")
def medium_pair():
    bf16 = torch.nn.Module.to(random_models.build_random_transformer("medium", 2), torch.bfloat16).eval()
    return bf16, _native(copy.deepcopy(bf16))


def test_native_fp8_on_medium_width_eager(medium_pair):
    bf16, native = medium_pair
    # a small latent keeps 30x-slower CPU FP8 matmuls cheap; widths and block structure are SD3.5 Medium's
    calls, cosine = _check_native(bf16, native, _inputs(bf16, latent_side=8, text_tokens=16))
    assert calls == _fp8_block_linears(native) == 29
    assert cosine >= 0.999


def test_native_fp8_on_medium_width_compiled(medium_pair):
    bf16, native = medium_pair
    compiled = copy.deepcopy(native)
    compiler.compile_blocks(compiled, "cpu")
    with compiler.stance("default"):  # a compiled engine of another test may have set the serving stance
        calls, cosine = _check_native(bf16, compiled, _inputs(bf16, latent_side=8, text_tokens=16))
    assert calls == _fp8_block_linears(compiled)
    assert cosine >= 0.999


# ---- the compiled engine: every size, no compile after warm-up, never a compiler error -------------------------


def _every_offered_request(engine):
    sizes = list(config.aspect_sizes(engine.preset).values()) + [(256, 1536), (1008, 592)]
    requests = [GenerationRequest("a red fox", seed=1, steps=1, width=w, height=h) for w, h in sizes]
    requests.append(GenerationRequest("a red fox", seed=1, steps=1, guidance=4.5, width=1008, height=592))
    return requests


def _compiled_engine(tiny_config, folder, fp8_matmul, backend="inductor"):
    from fp8demo.engine import Engine

    cfg = replace(tiny_config, compile=True, fp8_matmul=fp8_matmul, warmup_runs=0, cache_dir=folder)
    random_models.ensure_tiny(cfg.cache_dir)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compiler, "compile_blocks", functools.partial(compiler.compile_blocks, backend=backend))
        return Engine(cfg, CPU).start()


@pytest.fixture(scope="module")
def engine_native(tiny_config, tmp_path_factory):
    yield _compiled_engine(tiny_config, tmp_path_factory.mktemp("compile-native"), "native")
    torch.compiler.set_stance("default")


@pytest.fixture(scope="module")
def engine_weight_only(tiny_config, tmp_path_factory):
    yield _compiled_engine(tiny_config, tmp_path_factory.mktemp("compile-weight-only"), "weight-only")
    torch.compiler.set_stance("default")


@pytest.fixture(scope="module")
def engine_dynamo(tiny_config, tmp_path_factory):
    """Compiled as the engine compiles, but dynamo alone (backend "eager"): the same graphs, guards and recompiles,
    no kernels, so the rules about shapes are checked in seconds."""
    yield _compiled_engine(tiny_config, tmp_path_factory.mktemp("compile-dynamo"), "weight-only", backend="eager")
    torch.compiler.set_stance("default")


# Inductor's engines compile their kernels (a minute or more on 2 cores each): they run with `pytest -m slow`. The
# default run walks every size through dynamo's graphs, and compiles FP8 blocks with inductor on random:medium:2.
@pytest.fixture(params=[pytest.param("engine_native", marks=pytest.mark.slow),
                        pytest.param("engine_weight_only", marks=pytest.mark.slow), "engine_dynamo"])
def compiled_engine(request):
    return request.getfixturevalue(request.param)


def test_compiled_engine_serves_every_size_without_compiling(compiled_engine):
    assert compiled_engine.plan.compile and compiled_engine.compiled
    expected = Kind.FP8_MATMUL if compiled_engine.cfg.fp8_matmul == "native" else Kind.FP8_WEIGHTS
    assert compiled_engine.plan.blocks is expected
    graphs = compiler.graphs_compiled()
    for request in _every_offered_request(compiled_engine):
        result = compiled_engine.generate(request)
        assert result.image.size == (request.width, request.height)
    assert compiler.graphs_compiled() == graphs, "a request after warm-up paid for a compile"
    assert compiled_engine.compiled and not compiled_engine.events, "compilation was given up"


@pytest.mark.slow
def test_compile_cache_is_saved_and_keyed(engine_weight_only):
    compiled_engine = engine_weight_only
    cache = compiled_engine.compile_cache
    state = cache.state()
    assert state["mega_cache"] and state["files"] > 1
    ident = cache.identity
    assert ident["model"] == "tiny" and ident["torch"] == torch.__version__
    assert compiler.cache_for(compiled_engine.cfg.cache_dir, dict(ident, device="NVIDIA H100")).folder != cache.folder
    assert compiler.cache_for(compiled_engine.cfg.cache_dir, dict(ident)).folder == cache.folder


def test_a_graph_missing_after_warm_up_is_served_without_compiling(engine_dynamo, caplog):
    """A transformer whose graphs were never warmed (here a bf16 one) runs at once, compiled where it can."""
    from diffusers import SD3Transformer2DModel

    path = random_models.ensure_tiny(engine_dynamo.cfg.cache_dir)
    other = SD3Transformer2DModel.from_pretrained(path, subfolder="transformer", dtype=torch.bfloat16).eval()
    compiler.compile_blocks(other, "cpu", backend="eager")
    with caplog.at_level(logging.WARNING, logger="fp8demo.engine"):
        for _ in range(2):
            engine_dynamo.run(Job(GenerationRequest("a cat", seed=2, steps=1), transformer=other))
    assert sum("without compiling" in r.getMessage() for r in caplog.records) == 1  # logged once
    assert [e.kind for e in engine_dynamo.events] == ["recompile-refused"]
    engine_dynamo.events.clear()  # the engine's own graphs are intact: other tests see it as it was


def test_a_compiler_failure_falls_back_to_eager_once(tiny_config, tmp_path, caplog):
    from fp8demo.engine import Engine

    def broken_backend(gm, example_inputs):
        raise RuntimeError("simulated inductor crash")

    engine = Engine(replace(tiny_config, warmup_runs=0), CPU).start()
    compiler.compile_blocks(engine.pipe.transformer, "cpu", backend=broken_backend)
    with caplog.at_level(logging.WARNING, logger="fp8demo.engine"), compiler.stance("default"):
        a = engine.generate(GenerationRequest("a cat", seed=3, steps=1))
        b = engine.generate(GenerationRequest("a cat", seed=3, steps=1))
    assert a.image.tobytes() == b.image.tobytes()
    assert not compiler.is_compiled(engine.pipe.transformer) and not engine.compiled
    assert sum("runs eagerly" in r.getMessage() for r in caplog.records) == 1
    assert "simulated inductor crash" not in str(a.warnings)
    assert [e.kind for e in engine.events] == ["compile-failed"]
    assert "simulated inductor crash" in engine.info()["events"][0]["message"]


@pytest.mark.slow  # compiles a second transformer: minutes on 2 cores
def test_compare_compiles_its_16bit_side_too(engine_weight_only):
    from fp8demo.compare import Comparer

    comparer = Comparer(engine_weight_only)
    first = comparer.compare(Job(GenerationRequest("a cat", seed=4, steps=1)))
    assert "compiled" in first.baseline.precision and "compiled" in first.fp8.precision
    graphs = compiler.graphs_compiled()
    again = comparer.compare(Job(GenerationRequest("a cat", seed=4, steps=1, width=640, height=448, guidance=4.5)))
    assert compiler.graphs_compiled() == graphs, "the 16-bit side compiled during a comparison"
    assert again.baseline.request.width == 640


@pytest.mark.slow  # a second process compiles from the cache: half a minute on 2 cores
def test_second_start_reuses_the_compile_cache(engine_weight_only):
    """A new process with the same cache folder loads the saved artifacts (timings: benchmarks/compile_start.py)."""
    folder = engine_weight_only.cfg.cache_dir
    code = (
        "from fp8demo import logs; logs.configure(True)\n"
        "from fp8demo.config import EngineConfig; from fp8demo.engine import Engine\n"
        "from fp8demo.hardware import Capabilities\n"
        f"e = Engine(EngineConfig(model='tiny', compile=True, fp8_matmul='weight-only', warmup_runs=0, "
        f"cache_dir=r'{folder}'), Capabilities(device='cpu', name='{CPU.name}', cpu_count={CPU.cpu_count})).start()\n"
        "print('READY', e.compile_cache.folder)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split()[-1] == str(engine_weight_only.compile_cache.folder)
    assert "compile cache: loaded" in run.stderr


def test_with_compile_the_first_comparison_after_ready_compiles_nothing(tiny_config, tmp_path):
    """The Compare tab's default baseline is loaded, compiled and warmed before the service is ready: the first
    comparison loads and compiles nothing and takes no longer than twice the second (dynamo only, as above)."""
    from fp8demo.web.service import DemoService

    cfg = replace(tiny_config, compile=True, fp8_matmul="weight-only", warmup_runs=0, cache_dir=tmp_path)
    random_models.ensure_tiny(cfg.cache_dir)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compiler, "compile_blocks", functools.partial(compiler.compile_blocks, backend="eager"))
        service = DemoService(config.AppConfig(engine=cfg), caps=CPU, compare_baseline="bf16")
        service.start(background=False)
    try:
        assert service.ready
        request = GenerationRequest("a cat", seed=4, steps=2, width=384, height=256)
        graphs = compiler.graphs_compiled()
        t0 = time.perf_counter()
        first = service.compare(request, "bf16")
        t1 = time.perf_counter()
        second = service.compare(replace(request, seed=5), "bf16")
        t2 = time.perf_counter()
        assert compiler.graphs_compiled() == graphs, "the first comparison compiled"
        assert first.load_seconds == 0 and "compiled" in first.baseline.precision
        assert t1 - t0 <= 2 * (t2 - t1) + 0.5, (t1 - t0, t2 - t1)
        assert second.load_seconds == 0
    finally:
        torch.compiler.set_stance("default")
