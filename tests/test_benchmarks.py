"""Every benchmark runs once on the tiny model, so none rots unnoticed. Figures are printed by the benchmarks, never
asserted here: these check that each one runs end to end and writes the result it promises.

(`python -m fp8demo bench` and benchmarks/gpu_suite.sh are covered in test_bench.py; the generated tables by
test_planner.py and test_bench.py.)"""

import json

import pytest

from fp8demo import hardware
from fp8demo.bench import device_slug

SLUG = device_slug({"device": {"name": hardware.cpu_capabilities().name}})


def _result(folder, name: str) -> dict:
    return json.loads((folder / f"{name}-{SLUG}.json").read_text())


def test_memory(tmp_path, cache_dir):
    from benchmarks import memory

    memory.main(["--model", "tiny", "--out", str(tmp_path)])
    result = _result(tmp_path, "memory-tiny")
    variants = result["variants"]
    assert set(variants) == {"bf16", "fp8", "fp8, --modulation bf16"} and result["versions"]["torch"]
    assert variants["fp8"]["transformer_bytes"] < variants["bf16"]["transformer_bytes"]


def test_memory_peaks(tmp_path, cache_dir):
    from benchmarks import memory

    memory.main(["--model", "tiny", "--t5", "off", "--peaks", "--out", str(tmp_path)])
    steps = _result(tmp_path, "memory-peaks-tiny-t5-off")["steps"]
    assert set(steps) == {"build", "quantize", "load"}
    assert all(step["peak_rss_bytes"] > step["resident_bytes"] > 0 for step in steps.values())


@pytest.mark.slow
def test_memory_t5_16bit_load(tmp_path, cache_dir):
    """A full-width T5-XXL cut to one block (0.6 GiB of bf16 files): the folder written, loaded, measured, deleted."""
    from benchmarks import memory

    memory.main(["--t5-16bit", "--t5-layers", "1", "--tmp", str(tmp_path), "--out", str(tmp_path)])
    load = _result(tmp_path, "memory-peaks-t5-16bit-1")["load"]
    assert load["t5_layers"] == 1 and load["t5_fp8_bytes"] == load["t5_fp8_bytes_planner"]
    assert load["peak_rss_bytes"] > load["resident_bytes"] > load["t5_fp8_bytes"] > 0
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []  # the temporary folder is gone


def test_compile_shapes_with_dynamo_alone(tmp_path, cache_dir, monkeypatch):
    from benchmarks import compile_shapes

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    compile_shapes.main(["--mode", "blocks-dynamic", "--backend", "eager", "--requests", "2", "--steps", "1",
                         "--out", str(tmp_path)])
    result = _result(tmp_path, "compile-shapes-blocks-dynamic-eager")
    assert result["backend"] == "eager" and len(result["requests"]) == 2 and result["failed"] == 0


def test_compile_start_eager_start(tmp_path, cache_dir):
    from benchmarks import compile_start

    compile_start.main(["--starts", "eager", "--steps", "1", "--out", str(tmp_path)])
    result = _result(tmp_path, "compile-start")
    assert set(result["runs"]) == {"eager"} and result["runs"]["eager"]["compile"] is False
    assert result["summary"]["eager"]["ready_s"] > 0



def test_app_overhead(tmp_path, cache_dir):
    from benchmarks import app_overhead

    app_overhead.main(["--size", "256", "--warmup", "0", "--runs", "1", "--out", str(tmp_path)])
    result = _result(tmp_path, "app-overhead")
    assert len(result["runs"]) == 1 and result["runs"][0]["image_bytes"] > 0
    assert set(result["overhead_ms"]) == {"min", "median", "max"} and result["framework_floor_ms"]["median"] > 0


def test_image_safety(tmp_path, cache_dir):
    from benchmarks import image_safety

    image_safety.main(["--samples", "2", "--lfw", "1", "--scenes", "2", "--tiny", "1", "--tiny-side", "256",
                       "--runs", "1", "--out", str(tmp_path)])
    result = _result(tmp_path, "image-safety")
    assert result["ordinary_pictures"] == 2 + 1 + 1 + 2 + 1 and result["load_s"] > 0
    assert set(result["cost_ms"]) == {"kiosk picture, 1024 px", "tiny picture, 512 px", "preview frame, 128 px"}
    assert result["groups"]["tiny model (noise)"]["pictures"] == 1 and result["false_positive_rate"] is not None
