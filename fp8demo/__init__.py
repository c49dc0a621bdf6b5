"""fp8demo: Stable Diffusion 3.5 with an FP8 (E4M3) transformer behind a Gradio demo.

Importing any module of this package touches no GPU, starts no thread and downloads nothing.
"""

__version__ = "0.1.0"
