"""Static activation scales: collected, stored with a checkpoint, and compared with dynamic scaling."""

import json

import pytest
import torch
from conftest import CPU, forward, tiny_transformer
from safetensors.torch import load_file

from fp8demo import calibrate
from fp8demo.__main__ import main
from fp8demo.config import EngineConfig
from fp8demo.engine import Engine
from fp8demo.weights import fp8_format


def test_calibrated_scales_are_stored_and_the_folder_still_loads(tmp_path, tiny_config, capsys):
    out = tmp_path / "cal"
    assert main(["quantize", "--model", "tiny", "--out", str(out), "--calibrate", "2",
                 "--calibration-steps", "1", "--calibration-size", "256"]) == 0
    manifest = json.loads((out / fp8_format.MANIFEST).read_text())
    info = manifest["precision"]["activation_scales"]
    assert info["prompts"] == 2 and info["steps"] == 1 and info["size"] == 256
    assert info["file"] == fp8_format.ACTIVATION_SCALES and fp8_format.ACTIVATION_SCALES in manifest["files"]
    scales = fp8_format.activation_scales(out)  # the sidecar, beside the standard diffusers folder
    assert scales == json.loads((out / fp8_format.ACTIVATION_SCALES).read_text())
    assert "transformer_blocks.0.attn.to_q" in scales
    assert not any("norm1.linear" in k for k in scales)  # modulation never gets FP8 activations
    assert all(isinstance(v, float) and v > 0 for v in scales.values())
    state = load_file(str(out / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert not any("input_scale" in k for k in state)  # the weights file is what save_pretrained writes, no more
    engine = Engine(EngineConfig(model=str(out), cache_dir=tiny_config.cache_dir), CPU).start()
    assert engine.pipe.transformer.transformer_blocks[0].attn.to_q.weight.qdata.dtype == torch.float8_e4m3fn


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_activation_rounding_is_close_but_real(tiny_config, mode):
    tr = tiny_transformer(tiny_config.cache_dir)
    ref = forward(tr, 256)
    with calibrate.record_amax(tr) as amax:
        forward(tr, 256, seed=1)  # calibrate on other inputs than the ones evaluated
    scales = {k: v / calibrate.E4M3_MAX for k, v in amax.items()}
    assert set(scales) == set(calibrate.activation_layers(tr))
    with calibrate.fake_quantize_activations(tr, mode, scales):
        out = forward(tr, 256)
    cos = torch.nn.functional.cosine_similarity(out.float().flatten(), ref.float().flatten(), dim=0).item()
    assert cos > 0.99, cos
    assert not torch.equal(out, ref)  # the rounding happened
    assert torch.equal(forward(tr, 256), ref)  # and the hooks are gone afterwards
