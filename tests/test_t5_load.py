"""T5-XXL from 16-bit files under --t5 fp8: read tensor by tensor, each Linear quantized as it arrives
(weights/streaming.py). The same FP8 tensors and outputs as loading whole and then quantizing, one 16-bit Linear at a
time, and an RSS peak bounded by the FP8 bytes (not by the 16-bit files, which transformers keeps mapped)."""

import gc
import json
import sys
import weakref
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import CPU, make_plan
from transformers import T5EncoderModel

from fp8demo import hardware, planner
from fp8demo.policy import Kind, Layer
from fp8demo.tensors import is_fp8, tensor_bytes, unique_tensors
from fp8demo.weights import footprint, quantize, random_models, sources, streaming

T5 = "text_encoder_3"
IDS = SimpleNamespace(pad_token_id=0, eos_token_id=1)


def _write_t5(folder, spec: dict, vocab: int, dtype, shard: str) -> None:
    """A random T5 encoder saved as `folder`/text_encoder_3 in `dtype`, in shards of at most `shard`."""
    with torch.device("meta"):
        model = random_models.t5_model(spec, IDS, vocab)
    model = model.to_empty(device="cpu").to(dtype)
    model.encoder.embed_tokens = model.shared  # one table, as t5_model makes it (to_empty made two)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(std=spec["d_model"] ** -0.5, generator=generator)
    model.save_pretrained(folder / T5, max_shard_size=shard)


@pytest.fixture(scope="module", params=[torch.bfloat16, torch.float16], ids=["bf16-files", "fp16-files"])
def t5_folder(request, tmp_path_factory):
    """A tiny T5 (64 wide, 2 blocks) in three shards, as a diffusers folder holds it; in bf16, and in fp16 as the
    SD3.5 repos ship T5-XXL (cast to bf16 as it loads)."""
    folder = tmp_path_factory.mktemp("t5")
    _write_t5(folder, dict(d_model=64, d_kv=16, d_ff=160, num_layers=2, num_heads=4), 300, request.param, "100KB")
    assert json.loads((folder / T5 / streaming.INDEX).read_text())["weight_map"]
    return folder


def _same_module(a, b) -> None:
    pa, pb = dict(a.named_parameters(remove_duplicate=False)), dict(b.named_parameters(remove_duplicate=False))
    assert pa.keys() == pb.keys()
    for name, x in pa.items():
        y = pb[name]
        assert (x.requires_grad, x.dtype, is_fp8(x)) == (y.requires_grad, y.dtype, is_fp8(y)), name
        if is_fp8(x):
            assert torch.equal(x.qdata.view(torch.uint8), y.qdata.view(torch.uint8)), name
            assert torch.equal(x.scale, y.scale) and x.block_size == y.block_size, name
        else:
            assert torch.equal(x, y), name
    assert a.encoder.embed_tokens.weight is a.shared.weight  # one table, tied as from_pretrained ties it
    ids = torch.randint(0, 300, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(a(input_ids=ids).last_hidden_state, b(input_ids=ids).last_hidden_state)


def test_streamed_t5_equals_loading_whole_then_quantizing(t5_folder):
    plan = make_plan(CPU, t5="fp8")
    streamed = streaming.load(T5EncoderModel, str(t5_folder), T5, plan, torch.bfloat16, "cpu", {}).eval()
    linears = [m for m in streamed.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(is_fp8(m.weight) and m.weight.scale.shape == (m.weight.shape[0], 1) for m in linears)

    whole = T5EncoderModel.from_pretrained(t5_folder, subfolder=T5, dtype=torch.bfloat16).eval()
    quantize.quantize(whole, T5, plan)
    _same_module(streamed, whole)
    # and what transformers' own quantize-while-loading (the path this replaces) makes
    library = T5EncoderModel.from_pretrained(t5_folder, subfolder=T5, dtype=torch.bfloat16, device_map="cpu",
                                             quantization_config=quantize.library_config(T5, plan)).eval()
    _same_module(streamed, library)


def test_t5_load_holds_one_16bit_linear_at_a_time(t5_folder, monkeypatch):
    """Every 16-bit Linear weight read is gone (quantized, its 16-bit tensor freed) before the next is read."""
    plan = make_plan(CPU, t5="fp8")
    reads, most_alive = [], 0
    read = streaming._read

    def counted(files, name, like, device):
        nonlocal most_alive
        tensor = read(files, name, like, device)
        if tensor.dim() == 2 and name not in ("shared.weight",) and "relative_attention_bias" not in name:
            reads.append(weakref.ref(tensor))
            most_alive = max(most_alive, sum(r() is not None for r in reads))
        return tensor

    monkeypatch.setattr(streaming, "_read", counted)
    model = streaming.load(T5EncoderModel, str(t5_folder), T5, plan, torch.bfloat16, "cpu", {})
    assert len(reads) == sum(isinstance(m, torch.nn.Linear) for m in model.modules()) == 2 * 7
    assert most_alive == 1
    assert all(r() is None for r in reads)


def test_the_pipeline_loader_streams_t5_only_when_it_is_fp8(tiny_config, monkeypatch):
    streamed, load = [], streaming.load
    monkeypatch.setattr(streaming, "load", lambda *a, **k: streamed.append(a[2]) or load(*a, **k))
    folder = str(random_models.ensure_tiny(tiny_config.cache_dir))
    for t5, expect in (("fp8", [T5]), ("bf16", [])):
        streamed.clear()
        plan = make_plan(CPU, t5=t5)
        module = sources._load_component(T5, folder, plan, torch.bfloat16, "cpu", {}, stored_fp8=False)
        assert streamed == expect and not module.training
        assert all(is_fp8(m.weight) == (t5 == "fp8") for m in module.modules() if isinstance(m, torch.nn.Linear))


def test_missing_or_misshapen_tensors_are_refused(t5_folder, tmp_path):
    from safetensors.torch import load_file, save_file

    from fp8demo.errors import ModelAccessError

    plan = make_plan(CPU, t5="fp8")
    index = json.loads((t5_folder / T5 / streaming.INDEX).read_text())["weight_map"]
    tensors = {}
    for file in set(index.values()):
        tensors.update(load_file(t5_folder / T5 / file))
    (tmp_path / T5).mkdir()
    (tmp_path / T5 / "config.json").write_text((t5_folder / T5 / "config.json").read_text())
    for change, message in ((lambda t: t.pop("encoder.final_layer_norm.weight"), "missing"),
                            (lambda t: t.update({"shared.weight": t["shared.weight"][:10]}), "shape")):
        broken = dict(tensors)
        change(broken)
        save_file(broken, tmp_path / T5 / streaming.SINGLE)
        with pytest.raises(ModelAccessError, match=message):
            streaming.load(T5EncoderModel, str(tmp_path), T5, plan, torch.bfloat16, "cpu", {})


# A moderately sized T5 (1024 wide, 12 blocks, T5's vocabulary): 0.35 GiB of bf16 files, 0.21 GiB in FP8.
MEDIUM_T5 = dict(d_model=1024, d_kv=64, d_ff=2816, num_layers=12, num_heads=16)


def _status(key: str) -> int:
    return next(int(line.split()[1]) * 1024 for line in Path("/proc/self/status").open() if line.startswith(key + ":"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads and resets the peak RSS in /proc")
def test_t5_load_peak_rss_is_bounded_by_its_fp8_bytes(tmp_path):
    """RSS grows by no more than the FP8 result and one Linear being quantized. Through transformers' mapped files
    it grew by the 16-bit files on top of that: 0.76-0.79 GiB here, against 0.25 GiB now (bound: 0.28 GiB)."""
    _write_t5(tmp_path / "warm", dict(d_model=64, d_kv=16, d_ff=160, num_layers=1, num_heads=4), 300, torch.bfloat16,
              "1MB")
    _write_t5(tmp_path / "medium", MEDIUM_T5, 32128, torch.bfloat16, "200MB")
    plan = make_plan(CPU, t5="fp8")
    sources._load_component(T5, str(tmp_path / "warm"), plan, torch.bfloat16, "cpu", {}, stored_fp8=False)
    gc.collect()
    hardware.return_freed_host_memory()
    Path("/proc/self/clear_refs").write_text("5")  # the peak RSS (VmHWM) starts again from the RSS
    before = _status("VmRSS")
    module = sources._load_component(T5, str(tmp_path / "medium"), plan, torch.bfloat16, "cpu", {}, stored_fp8=False)
    peak = _status("VmHWM")

    with torch.device("meta"):
        t5 = footprint.component_bytes(T5, random_models.t5_model(MEDIUM_T5, IDS, 32128).to(torch.bfloat16), 1024)
    kinds = {Layer.T5: Kind.FP8_WEIGHTS}
    assert sum(tensor_bytes(t) for t in unique_tensors(module)) == t5.under(kinds)
    transient = t5.quantize_transient(kinds)
    assert transient == MEDIUM_T5["d_model"] * MEDIUM_T5["d_ff"] * planner.QUANTIZE_BYTES_PER_WEIGHT
    slack = 32 * 2**20  # allocator and page rounding
    assert peak - before <= t5.under(kinds) + transient + slack, (peak - before) / 2**30
