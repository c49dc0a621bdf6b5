"""The benchmark tool runs end to end on the tiny model (figures printed, not asserted), the GPU suite's commands
are valid, and docs/performance.md's results section matches the committed results."""

import os
import shlex
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest
from conftest import A100, CPU, H100
from PIL import Image

from fp8demo import bench, fidelity
from fp8demo.__main__ import _parser
from fp8demo.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "benchmarks" / "gpu_suite.sh"


def test_variants_follow_the_device():
    assert [v.name for v in bench.variants_for(CPU)] == ["bf16", "fp16", "fp8-storage"]
    gpu = [v.name for v in bench.variants_for(H100)]
    assert gpu == ["bf16", "fp16", "fp8-native", "bf16+compile", "fp8-native+compile"]


def test_variant_names_resolve_per_device():
    pick = [v.name for v in bench.select_variants(H100, None, "fp8+compile,bf16+compile")]
    assert pick == ["bf16+compile", "fp8-native+compile"]  # the device's order, whatever the list's
    assert [v.name for v in bench.select_variants(A100, None, "fp8+compile")] == ["fp8-storage+compile"]
    assert [v.name for v in bench.select_variants(CPU, None, None)] == ["bf16", "fp16", "fp8-storage"]
    with pytest.raises(UserError, match="fp8-native"):
        bench.select_variants(CPU, None, "bf16,fp8-native")  # a typo or a wrong device is said, not skipped


def test_bench_writes_json_markdown_and_chart(tmp_path, cache_dir):
    args = Namespace(model="tiny", t5="auto", modulation="fp8", offload="auto", variants="bf16,fp8-storage",
                     compile_variants=None, sizes="256x384", steps="2", guidance=None, warmup=0, runs=2,
                     fidelity=True)
    result = bench.run(args)
    assert result["device"]["kind"] == "cpu" and result["versions"]["torch"]
    names = [v["variant"]["name"] for v in result["variants"]]
    assert names == ["bf16", "fp8-storage"]
    assert "own process" in result["config"]["peak_memory_scope"]
    assert all(len(v["load_average_1min"]) == 2 for v in result["variants"])
    again = _parser().parse_args(["bench", *result["config"]["argv"]])  # the recorded command line reproduces it
    assert (again.model, again.variants, again.runs, again.fidelity) == ("tiny", "bf16,fp8-storage", 2, True)
    for v in result["variants"]:
        case = v["cases"][0]
        assert (case["width"], case["height"], case["steps"]) == (256, 384, 2)
        assert case["per_step_s"]["runs"] == 2 and case["per_step_s"]["min"] <= case["per_step_s"]["median"]
        assert case["end_to_end_s"]["min"] > case["denoising_s"]["min"]
        assert set(v["resident_bytes"]) == {"transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "vae"}
    fp8 = result["variants"][1]
    assert fp8["resident_bytes"]["transformer"] < result["variants"][0]["resident_bytes"]["transformer"]
    fid = result["fidelity"]
    assert len(fid["per_step"]) == 2 and all(0.99 < s["cosine_mean"] <= 1.0 for s in fid["per_step"])
    assert all(s["relative_error_mean"] > 0 for s in fid["per_step"])  # the FP8 side really ran
    paths = bench.save(result, tmp_path, "tiny")
    assert "| fp8-storage | 256x384 | 2 |" in open(paths["markdown"]).read()
    assert Image.open(paths["chart"]).size[0] > 500


def test_readme_performance_section_matches_committed_results():
    from benchmarks import report

    assert report.main(["--check"]) == 0, "docs/performance.md's results are stale: run python -m benchmarks.report"


def _suite(*args, **env):
    return subprocess.run(["bash", str(SUITE), *args], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHON=sys.executable, **env))


def test_gpu_suite_commands_parse():
    assert subprocess.run(["bash", "-n", str(SUITE)]).returncode == 0
    done = _suite("--dry-run")
    assert done.returncode == 0, done.stderr
    commands = [shlex.split(line) for line in done.stdout.splitlines() if line.strip()]
    assert all(c[0] == sys.executable and c[1] == "-m" for c in commands)
    assert ["pytest", "-q", "-m", "gpu", "tests"] == commands[0][2:]
    benches = [c[3:] for c in commands if c[2] == "fp8demo" and "bench" in c]
    doctors = [c[3:] for c in commands if c[2] == "fp8demo" and "doctor" in c]
    assert len(doctors) == 1
    doctor_args = _parser().parse_args(doctors[0])
    assert (doctor_args.command, doctor_args.model, doctor_args.json) == ("doctor", "tiny", True)
    cases = {}
    for argv in benches:
        args = _parser().parse_args(argv)
        assert (args.warmup, args.runs, args.sizes) == (3, 10, "1024")
        for caps in (H100, A100):  # each FP8 variant against bf16, both compiled, on any CUDA card
            assert len(bench.select_variants(caps, args.compile_variants, args.variants)) == 2
        assert args.name.startswith(f"bench-{args.model.replace(':', '-')}-")  # named after the device
        cases[args.model] = (args.steps, args.guidance, args.t5)
    assert cases == {"random:large-turbo": ("4", 0.0, "fp8"), "random:large": ("28", 3.5, "fp8"),
                     "random:medium": ("28", 4.5, "auto")}
    fidelities = [_parser().parse_args(c[3:]) for c in commands if c[2] == "fp8demo" and "fidelity" in c]
    assert {a.model: (a.prompts, a.limit, a.seeds, a.steps, a.guidance) for a in fidelities} == {
        "large-turbo": ("parti200", 32, 1, None, None), "large": ("parti200", 8, 1, 28, 3.5)}
    for args in fidelities:
        setup = fidelity.setup_from_args(args)  # every recipe and flag is one the harness takes
        assert setup.recipes[0] == "bf16" and len(setup.recipes) == 6
        assert args.out.startswith(f"benchmarks/results/fidelity-{args.model}-")  # named after the device


def test_gpu_suite_refuses_without_a_gpu(tmp_path):
    out = tmp_path / "results"
    done = _suite(OUT_DIR=str(out), CUDA_VISIBLE_DEVICES="")  # no GPU even where the tests run on one
    assert done.returncode == 2
    assert "no CUDA GPU" in done.stderr and not out.exists()


def test_memory_peaks_read_each_step_process_peak_from_the_kernel():
    """benchmarks.memory --peaks takes a step's peak RSS from wait4 (what /usr/bin/time -v prints)."""
    from benchmarks import memory

    code = "import json; b = bytearray(300 << 20); print('log line'); print(json.dumps({'a': 1}))"
    cmd = [sys.executable, "-c", code]
    out, peak, seconds = memory._run_measured(cmd)
    assert out == {"a": 1} and seconds > 0
    assert 300 << 20 < peak < 1 << 30
    with pytest.raises(SystemExit, match="failed with status 3"):
        memory._run_measured([sys.executable, "-c", "raise SystemExit(3)"])
