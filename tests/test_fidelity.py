"""The fidelity harness: every prompt x seed with every recipe, scored against the first recipe, on the tiny model.

LPIPS needs torchvision's AlexNet and its ImageNet weights, which CI does not have: there the harness must say why
LPIPS is missing and report the rest. Its code path is exercised with a random AlexNet-shaped stand-in, and the report
must then say that the numbers are not LPIPS."""

import json
import subprocess
import sys
from argparse import Namespace

import pytest
from conftest import CPU, stand_in_lpips
from PIL import Image

from fp8demo import fidelity, fidelity_report, lpips_metric, prompt_sets
from fp8demo.__main__ import _parser, main
from fp8demo.errors import UserError

DONE_WHEN = ["fidelity", "--model", "tiny", "--recipes", "bf16,fp8,fp8+cache=first-block:0.5", "--prompts", "smoke",
             "--seeds", "2", "--json", "--steps", "4", "--size", "256x256"]


def _check_report(report: dict, out, prompts: int, seeds: int) -> None:
    assert [r["recipe"] for r in report["recipes"]] == ["bf16", "fp8", "fp8+cache=first-block:0.5"]
    assert report["reference"] == "bf16" and report["random_weights"] and report["size"] == [256, 256]
    lpips = report["lpips"]
    assert lpips["available"] or lpips["reason"].startswith("LPIPS: ")  # missing: the reason instead
    reference, fp8, cached = report["recipes"]
    assert reference["psnr_db"] == {"mean": "inf", "worst": "inf"} and reference["ssim"]["worst"] == 1.0
    assert reference["lpips"] == ({"mean": 0.0, "worst": 0.0} if lpips["available"] else None)
    assert reference["identical_images"] == prompts * seeds
    for r in report["recipes"]:
        assert r["plan"] and r["seconds_per_image"] > 0 and r["first_image_seconds"] > 0
        assert r["peak_memory_bytes"] > 0 and r["blocks_total_per_image"] == 4 * 2  # 4 steps x tiny's 2 blocks
        assert len(r["images"]) == prompts * seeds and len(r["load_average_1min"]) == 2
        assert all(i["blocks_run"] + i["blocks_skipped"] == i["blocks_total"] for i in r["images"])
    assert fp8["plan"].startswith("FP8") and fp8["blocks_skipped_per_image"] == 0
    assert isinstance(fp8["psnr_db"]["mean"], float) and fp8["ssim"]["worst"] < 1.0
    assert cached["blocks_skipped_per_image"] > 0 and "cache first-block:0.5" in cached["plan"]
    md = (out / "fidelity.md").read_text()
    assert "random weights" in md and md.count("\n| `") == 3 and "(reference)" in md
    assert Image.open(out / "contact-sheet.png").width > 3 * fidelity_report.CELL


def test_the_command_reports_every_recipe_against_the_first(tmp_path, capsys, cache_dir):
    out = tmp_path / "fidelity"
    assert main([*DONE_WHEN, "--limit", "1", "--out", str(out)]) == 0  # one prompt of the smoke set: 6 images
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads((out / "fidelity.json").read_text())
    _check_report(report, out, prompts=1, seeds=2)
    again = _parser().parse_args(["fidelity", *report["argv"], "--out", "elsewhere"])  # the recorded flags redo it
    assert fidelity.setup_from_args(again) == fidelity.setup_from_args(_parser().parse_args(
        [*DONE_WHEN, "--limit", "1", "--out", "x"]))


@pytest.mark.slow
def test_the_done_when_command(tmp_path, cache_dir):
    out = tmp_path / "fidelity"
    done = subprocess.run([sys.executable, "-m", "fp8demo", *DONE_WHEN, "--out", str(out)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    _check_report(json.loads(done.stdout), out, prompts=len(prompt_sets.load("smoke")), seeds=2)


@pytest.mark.parametrize("args, flag", [
    (["--recipes", "bf16,fp8+turbo"], "--recipes"),  # an unknown part
    (["--recipes", "fp9"], "--recipes"),  # an unknown base
    (["--recipes", "bf16,bf16"], "--recipes"),
    (["--recipes", " , "], "--recipes"),
    (["--prompts", "no-such-set"], "--prompts"),
    (["--seeds", "0"], "--seeds"),
    (["--size", "300x256"], "--size"),
    (["--size", "big"], "--size"),
    (["--steps", "0"], "--steps"),
    (["--limit", "0"], "--limit"),
])
def test_bad_input_exits_2_naming_the_flag(args, flag, tmp_path, capsys):
    assert main(["fidelity", "--model", "tiny", "--out", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flag}") and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before anything loaded or was written


def test_lpips_code_path_with_a_stand_in_backbone_is_labelled_not_lpips(monkeypatch, tmp_path, tiny_config):
    stand_in = stand_in_lpips(monkeypatch)
    setup = fidelity.Setup(base=tiny_config, recipes=("fp8", "fp8+cache=first-block:0.5", "fp8+fp8-attention"),
                           prompts=(prompt_sets.load("smoke")[0],), prompt_set="smoke", seeds=(0,), steps=4,
                           size=(256, 256))
    outcome = fidelity.run(setup, CPU, lpips=stand_in)
    report = outcome.report
    assert report["lpips"] == {"available": True, "genuine": False, "backbone": "random AlexNet-shaped stand-in "
                               "(test)", "reason": None}
    reference, cached, refused = report["recipes"]
    assert refused["refused"].startswith("--attention fp8 runs on Hopper GPUs only")  # the others went on
    assert reference["lpips"] == {"mean": 0.0, "worst": 0.0} and reference["psnr_db"]["mean"] == "inf"
    assert cached["lpips"]["worst"] > 0 and cached["images"][0]["lpips"] == cached["lpips"]["worst"]
    files = fidelity.save(outcome, tmp_path / "out")
    md = open(files["markdown"]).read()
    assert "NOT LPIPS" in md and "`fp8+fp8-attention` refused here: --attention fp8" in md


def test_the_harness_refuses_a_reference_that_cannot_run(tiny_config):
    setup = fidelity.setup_from_args(Namespace(
        recipes="fp8-native+fp8-attention,bf16", prompts="smoke", seeds=1, limit=1, size=None, steps=2,
        guidance=None, **{k: getattr(tiny_config, k) for k in ("model", "t5", "modulation", "offload", "base",
                                                               "max_side")}))
    with pytest.raises(UserError, match="--recipes: the reference 'fp8-native\\+fp8-attention' cannot run here"):
        fidelity.run(setup, CPU, lpips=lpips_metric.Missing("LPIPS: not needed here"))
