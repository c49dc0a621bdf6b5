"""Weights: what --model names and how each source loads (sources), the one FP8 format (fp8_format), the tiny and
random:<arch> builds (random_models) and ComfyUI single files (comfy). Nothing here imports bench or the web faces."""
