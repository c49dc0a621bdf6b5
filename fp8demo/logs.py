"""Logging set-up for the CLI and the app: our messages on stderr, known-harmless library noise silenced."""

from __future__ import annotations

import logging
import sys

# Messages these libraries print at import or load time on every CPU machine, none of them actionable here:
# torchao's CUDA-only kernel libraries that a CPU build cannot load, torch's deprecation note about enums that
# torchao registers, diffusers' torchao-checkpoint note, transformers' torchvision note, and progress bars.
_QUIET = {
    "torchao": logging.ERROR,
    "torchao.kernel.intmm": logging.ERROR,
    "torch.utils._pytree": logging.ERROR,
    "diffusers.quantizers.torchao.torchao_quantizer": logging.ERROR,
    "transformers.utils.import_utils": logging.ERROR,  # image processors we never use want torchvision
    "httpx": logging.WARNING,  # one INFO line per HTTP request Gradio makes to itself
}


def configure(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for name, level in _QUIET.items():
        logging.getLogger(name).setLevel(level)
    try:
        from diffusers.utils import logging as dlog

        dlog.disable_progress_bar()
        from transformers.utils import logging as tlog

        tlog.disable_progress_bar()
    except ImportError:
        pass
