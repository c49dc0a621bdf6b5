"""The native FP8 path. Needs a CUDA GPU with compute capability >= 8.9; skipped (and reported) elsewhere."""

import pytest
import torch

from fp8demo.config import EngineConfig
from fp8demo.policy import Kind
from fp8demo.request import GenerationRequest

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def native_engine(cache_dir):
    from fp8demo.engine import Engine

    return Engine(EngineConfig(model="tiny", cache_dir=cache_dir, compile=False)).start()


def test_native_plan_uses_dynamic_fp8_on_blocks(native_engine):
    assert native_engine.plan.blocks is Kind.FP8_MATMUL
    tr = native_engine.pipe.transformer
    weight = tr.transformer_blocks[0].attn.to_q.weight
    assert weight.qdata.dtype == torch.float8_e4m3fn
    assert weight.act_quant_kwargs is not None  # activations are quantized too: real FP8 matmuls
    modulation = tr.transformer_blocks[0].norm1.linear.weight
    assert modulation.qdata.dtype == torch.float8_e4m3fn and modulation.act_quant_kwargs is None


def test_native_generation_is_deterministic(native_engine):
    a = native_engine.generate(GenerationRequest("a cat", seed=1, steps=2))
    b = native_engine.generate(GenerationRequest("a cat", seed=1, steps=2))
    assert a.image.tobytes() == b.image.tobytes()
    assert a.peak_memory_kind == "cuda max_memory_allocated"


def test_quantized_folder_feeds_the_native_path(native_engine, tmp_path):
    from fp8demo.__main__ import main
    from fp8demo.engine import Engine

    out = tmp_path / "fp8"
    assert main(["quantize", "--model", "tiny", "--out", str(out)]) == 0
    engine = Engine(EngineConfig(model=str(out), cache_dir=native_engine.cfg.cache_dir, compile=False)).start()
    weight = engine.pipe.transformer.transformer_blocks[0].attn.to_q.weight
    assert weight.act_quant_kwargs is not None and weight.qdata.device.type == "cuda"
    request = GenerationRequest("a cat", seed=3, steps=2)
    a = engine.generate(request).image
    b = native_engine.generate(request).image
    diff = sum(abs(p - q) for p, q in zip(a.tobytes(), b.tobytes(), strict=True)) / len(a.tobytes())
    assert diff < 2.0  # the same FP8 weights, loaded instead of quantized


def test_compiled_native_engine_serves_every_size_without_compiling(cache_dir):
    """The fast path as a kiosk runs it: compiled native FP8, every offered size and CFG, no compile after warm-up."""
    from fp8demo import compiler, config
    from fp8demo.engine import Engine

    engine = Engine(EngineConfig(model="tiny", cache_dir=cache_dir, compile=True, warmup_runs=0)).start()
    try:
        assert engine.plan.blocks is Kind.FP8_MATMUL and engine.compiled
        graphs = compiler.graphs_compiled()
        sizes = list(config.aspect_sizes(engine.preset).values()) + [(256, 1536), (1008, 592)]
        for guidance in (0.0, 4.5):
            for width, height in sizes:
                result = engine.generate(GenerationRequest("a red fox", seed=1, steps=2, width=width, height=height,
                                                           guidance=guidance))
                assert result.image.size == (width, height)
        assert compiler.graphs_compiled() == graphs and not engine.events
        assert engine.compile_cache.state()["mega_cache"]
    finally:
        torch.compiler.set_stance("default")


def test_a_step_cache_on_the_compiled_native_path_skips_blocks_without_compiling(cache_dir):
    """The Large recipe's shape on a GPU: compiled native FP8 with First-Block Cache; a skipped step needs no graph."""
    from fp8demo import compiler
    from fp8demo.engine import Engine

    cfg = EngineConfig(model="tiny", cache_dir=cache_dir, compile=True, cache="first-block:0.5", warmup_runs=0)
    engine = Engine(cfg).start()
    try:
        graphs = compiler.graphs_compiled()
        results = [engine.generate(GenerationRequest("a red fox", seed=1, steps=8, width=w, height=h, guidance=g))
                   for w, h, g in ((1024, 1024, 0.0), (832, 1216, 4.5))]
        assert compiler.graphs_compiled() == graphs and not engine.events
        assert sum(r.blocks_skipped for r in results) > 0
    finally:
        torch.compiler.set_stance("default")


def test_fp8_attention_runs_where_the_plan_allows_it(cache_dir):
    """Hopper with flash-attn 3: FP8 attention through torchao; elsewhere the plan refuses it (tested on the CPU)."""
    from fp8demo import hardware
    from fp8demo.engine import Engine

    caps = hardware.detect()
    if caps.compute_capability[0] != 9 or not caps.flash_attention_3:
        pytest.skip(f"FP8 attention needs Hopper with flash-attn 3; this is {caps.describe()}, flash-attn 3 "
                    f"{'present' if caps.flash_attention_3 else 'absent'}")
    engine = Engine(EngineConfig(model="tiny", cache_dir=cache_dir, attention="fp8", compile=False)).start()
    a = engine.generate(GenerationRequest("a red fox", seed=1, steps=2))
    b = engine.generate(GenerationRequest("a red fox", seed=1, steps=2))
    assert a.image.tobytes() == b.image.tobytes() and "FP8 attention" in a.precision
