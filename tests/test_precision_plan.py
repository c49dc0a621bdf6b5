"""The precision policy for each kind of hardware, from hand-made Capabilities (no GPU needed)."""

from dataclasses import replace

import pytest
from conftest import A100, CPU, H100, MPS, RTX4090

from fp8demo.errors import SetupError
from fp8demo.precision import OFFLOAD_HEADROOM_BYTES, PrecisionOptions, plan_precision, resolve_offload


@pytest.mark.parametrize("caps", [H100, RTX4090], ids=["hopper", "ada"])
def test_fp8_native_on_ada_and_hopper(caps):
    plan = plan_precision(PrecisionOptions(), caps)
    assert plan.mode == "fp8-native"
    assert plan.blocks == "fp8-dynamic"
    assert plan.modulation == "fp8-weight-only"  # never dynamic activations on modulation
    assert plan.compile is True  # FP8 is slower than bf16 unless compiled
    assert plan.t5 == "fp8"
    assert plan.vae_dtype == plan.text_dtype == "bfloat16"
    assert plan.notes == ()


@pytest.mark.parametrize("caps", [A100, CPU, MPS], ids=["ampere", "cpu", "mps"])
def test_fp8_storage_elsewhere_says_why(caps):
    plan = plan_precision(PrecisionOptions(), caps)
    assert plan.mode == "fp8-storage"
    assert plan.blocks == "fp8-weight-only"
    assert plan.compile is False
    assert any("saves memory but not time" in n for n in plan.notes)
    if caps is A100:
        assert "compute capability 8.0" in plan.notes[0]


def test_cpu_keeps_vae_in_float32_and_says_so():
    plan = plan_precision(PrecisionOptions(precision="bf16"), CPU)
    assert plan.vae_dtype == "float32"
    assert any("VAE runs in float32" in n for n in plan.notes)


def test_bf16_baseline_is_all_16_bit():
    plan = plan_precision(PrecisionOptions(precision="bf16"), H100)
    assert (plan.mode, plan.blocks, plan.modulation, plan.t5) == ("bf16", "16-bit", "16-bit", "bf16")
    assert plan.compile is False  # compile defaults on only for native FP8
    assert plan.compute_dtype == "bfloat16"


def test_fp16_keeps_t5_in_bf16():
    plan = plan_precision(PrecisionOptions(precision="fp16"), H100)
    assert plan.compute_dtype == "float16"
    assert plan.t5 == "bf16"
    assert any("T5-XXL computes in bf16" in n for n in plan.notes)


def test_fp16_with_t5_off_has_no_t5_note():
    plan = plan_precision(PrecisionOptions(precision="fp16", t5="off"), H100)
    assert plan.t5 == "off"
    assert not any("T5" in n for n in plan.notes)


def test_modulation_bf16_keeps_modulation_16bit():
    plan = plan_precision(PrecisionOptions(modulation="bf16"), H100)
    assert plan.blocks == "fp8-dynamic" and plan.modulation == "16-bit"


@pytest.mark.parametrize(
    "precision, t5, expected",
    [("fp8", "auto", "fp8"), ("bf16", "auto", "bf16"), ("fp16", "auto", "bf16"), ("bf16", "fp8", "fp8"),
     ("fp8", "bf16", "bf16"), ("fp8", "off", "off")],
)
def test_t5_modes(precision, t5, expected):
    assert plan_precision(PrecisionOptions(precision=precision, t5=t5), H100).t5 == expected


def test_explicit_compile_flags_are_honoured():
    assert plan_precision(PrecisionOptions(compile=False), H100).compile is False
    assert plan_precision(PrecisionOptions(precision="bf16", compile=True), H100).compile is True


def test_no_torchao_is_a_clear_error_for_fp8_only():
    no_ao = replace(H100, torchao=False)
    with pytest.raises(SetupError, match="pip install torchao"):
        plan_precision(PrecisionOptions(), no_ao)
    assert plan_precision(PrecisionOptions(precision="bf16"), no_ao).mode == "bf16"


def test_no_bf16_gpu_falls_back_to_fp16_with_a_note():
    t4 = replace(A100, name="T4", compute_capability=(7, 5), bf16=False)
    plan = plan_precision(PrecisionOptions(precision="bf16"), t4)
    assert plan.compute_dtype == "float16"
    assert "no bf16 support" in plan.notes[0]


def test_xformers_missing_or_on_cpu_is_a_clear_error():
    with pytest.raises(SetupError, match="pip install xformers"):
        plan_precision(PrecisionOptions(attention="xformers"), H100)
    with pytest.raises(SetupError, match="needs a CUDA GPU"):
        plan_precision(PrecisionOptions(attention="xformers"), CPU)
    assert plan_precision(PrecisionOptions(attention="xformers"), replace(H100, xformers=True)).attention == "xformers"


@pytest.mark.parametrize("field, value", [("precision", "int8"), ("t5", "fp4"), ("offload", "disk"),
                                          ("modulation", "fp16"), ("attention", "flash")])
def test_unknown_option_values_are_rejected(field, value):
    with pytest.raises(SetupError, match="choose one of"):
        plan_precision(PrecisionOptions(**{field: value}), H100)


@pytest.mark.parametrize("offload", ["model", "sequential"])
def test_compiled_fp8_is_never_combined_with_offload(offload):
    plan = plan_precision(PrecisionOptions(offload=offload), H100)
    assert plan.offload == offload and plan.compile is False
    assert any("known-broken" in n for n in plan.notes)


def test_offload_on_cpu_is_ignored_with_a_note():
    plan = plan_precision(PrecisionOptions(offload="model"), CPU)
    assert plan.offload == "none"
    assert any("needs a CUDA GPU" in n for n in plan.notes)


def test_auto_offload_stays_resident_when_it_fits():
    plan = plan_precision(PrecisionOptions(), H100)
    assert plan.offload == "auto"
    resolved = resolve_offload(plan, free_bytes=20 * 2**30, resident_bytes=16 * 2**30)
    assert resolved.offload == "none" and resolved.compile is True


def test_auto_offload_offloads_and_drops_compile_when_short():
    plan = plan_precision(PrecisionOptions(), RTX4090)
    free = 16 * 2**30
    resolved = resolve_offload(plan, free_bytes=free, resident_bytes=free - OFFLOAD_HEADROOM_BYTES + 1)
    assert resolved.offload == "model"
    assert resolved.compile is False
    assert any("Model offload" in n for n in resolved.notes) and any("known-broken" in n for n in resolved.notes)


def test_explicit_none_offload_is_not_overridden():
    plan = plan_precision(PrecisionOptions(offload="none"), RTX4090)
    assert resolve_offload(plan, free_bytes=1, resident_bytes=10**12).offload == "none"


def test_labels_say_what_runs():
    assert plan_precision(PrecisionOptions(), H100).label() == "FP8 E4M3 native matmuls (compiled)"
    assert plan_precision(PrecisionOptions(), CPU).label() == "FP8 E4M3 weights, bf16 compute"
    assert plan_precision(PrecisionOptions(precision="fp16", offload="model"), H100).label() == "fp16 (offload model)"
