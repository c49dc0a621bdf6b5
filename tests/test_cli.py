"""The command line: JSON output, PNG metadata, and messages instead of tracebacks."""

import json
import subprocess
import sys

import pytest

from fp8demo.__main__ import main
from fp8demo.imageio import read_parameters


def test_generate_writes_png_with_parameters_and_prints_json(tmp_path, capsys, cache_dir):
    out = tmp_path / "out.png"
    rc = main(["generate", "a prompt", "--model", "tiny", "--precision", "fp8", "--seed", "7", "--out", str(out),
               "--steps", "2", "--width", "384", "--height", "256", "--negative", "blurry", "--guidance", "3"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (data["seed"], data["width"], data["height"], data["steps"], data["guidance"]) == (7, 384, 256, 2, 3.0)
    assert set(data["timings"]) == {"text_encoding", "denoising", "vae_decode", "total"}
    assert data["precision"]["plan"]["blocks"] == "fp8-weights"
    assert data["precision"]["components"]["transformer"]["fp8_linears"] > 0
    params = read_parameters(out)
    assert params.startswith("a prompt\nNegative prompt: blurry\n")
    assert "Steps: 2" in params and "Seed: 7" in params and "Size: 384x256" in params and "CFG scale: 3" in params


def test_info_prints_the_precision_report(capsys, cache_dir):
    assert main(["info", "--model", "tiny", "--precision", "bf16", "--t5", "off"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["plan"]["precision"], data["plan"]["blocks"], data["plan"]["t5"]) == ("bf16", "16-bit", "off")
    assert data["components"]["text_encoder_3"]["bytes"] == 0
    assert data["transformer_ratio_vs_bf16"] == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize(
    "args, message",
    [
        (["generate", ""], "prompt is empty"),
        (["generate", "x", "--width", "500"], "multiple of 16"),
        (["generate", "x", "--steps", "0"], "Steps must be"),
        (["generate", "x", "--guidance", "99"], "Guidance must be"),
        (["generate", "x", "--seed", "-3"], "seed must be"),
        (["generate", "x", "--model", "random:nope"], "Unknown model"),
        (["info", "--model", "no/such-model-here", "--precision", "bf16"], ""),
    ],
)
def test_user_mistakes_exit_2_with_a_message(args, message, capsys, cache_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(args + ["--model", "tiny"] if "--model" not in args else args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert "Traceback" not in err


def test_real_entry_point_has_no_traceback(cache_dir):
    proc = subprocess.run([sys.executable, "-m", "fp8demo", "generate", "x", "--height", "1000"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "error: The height must be a multiple of 16" in proc.stderr and "Traceback" not in proc.stderr


def test_doctor_checks_the_machine_and_makes_one_image(capsys, cache_dir):
    assert main(["doctor", "--model", "tiny", "--json"]) == 0
    data = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert data["ok"] and data["verdict"].startswith("READY: tiny on ")
    assert data["device"]["kind"] == "cpu" and data["versions"]["torch"]
    assert data["plan"]["t5"] == "fp8-weights" and "matmul" in data["fp8"] and data["plan"]["reasons"]["blocks"]
    assert data["events"] == [] and data["compiled"] is False
    assert data["model"]["reachable"] and data["model"]["random_weights"]
    assert set(data["generation"]["timings"]) == {"text_encoding", "denoising", "vae_decode", "total"}
    assert data["fp8"]["scaled_mm_calls_per_forward"] == 0  # weight-only on a CPU: no FP8 matmul ran


def test_doctor_names_what_to_do_when_the_weights_cannot_be_had(capsys, cache_dir):
    # no network here (and no licence anywhere in CI): the gated repo cannot be reached, and doctor says so
    assert main(["doctor", "--model", "large-turbo", "--no-generate"]) == 1
    out = capsys.readouterr().out
    assert "NOT REACHABLE" in out.upper() and out.strip().splitlines()[-1].startswith("NOT READY: ")
    assert "stabilityai/stable-diffusion-3.5-large-turbo" in out.splitlines()[-1]
