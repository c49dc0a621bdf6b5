"""Logging set-up for the CLI and the app: our messages on stderr, known-harmless library noise silenced."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading

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


# Library warnings about a prompt longer than an encoder reads. The pipeline truncates as it should (so transformers'
# "will result in indexing errors" is wrong here) and the engine logs one line of its own saying what each encoder
# does not see, so these are dropped by their exact beginning.
_DROPPED = {
    "transformers.tokenization_utils_base": (
        "Token indices sequence length is longer than the specified maximum sequence length for this model",),
    "diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3": (
        "The following part of your input was truncated because",),
}


class _Drop(logging.Filter):
    def __init__(self, beginnings: tuple[str, ...]):
        super().__init__()
        self.beginnings = beginnings

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.beginnings)


def configure(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for name, level in _QUIET.items():
        logging.getLogger(name).setLevel(level)
    for name, beginnings in _DROPPED.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Drop) for f in logger.filters):
            logger.addFilter(_Drop(beginnings))
    try:
        from diffusers.utils import logging as dlog

        dlog.disable_progress_bar()
        from transformers.utils import logging as tlog

        tlog.disable_progress_bar()
    except ImportError:
        pass


# What torch's profiler library (kineto) writes straight to the process's stderr, with C's fprintf, while
# report.count_fp8_matmuls counts FP8 matmuls at warm-up: an "ERROR" line when the profiler first starts in a thread
# other than the one that imported torch (warm-up runs in the background; kineto then only skips an optional
# callback), and a "USDT" marker at each start and stop. Both are harmless, and no setting turns the first off.
KINETO_NOISE = (
    re.compile(r"ERROR: External init callback must run in same thread as registerClient \(-?\d+ != -?\d+\)"),
    re.compile(r"USDT:.* SyncActivityProfilerHandler\.cpp:\d+\] profiler_(start|stop)"),
)
_native = threading.Lock()


@contextlib.contextmanager
def native_stderr_without(patterns=KINETO_NOISE):
    """While the block runs, file descriptor 2 (where C libraries write) goes through a pipe, and every line is
    passed on to the real stderr but those that match one of `patterns` in full. Python's own stderr writes (the
    log) pass through the same pipe, in order. One block at a time."""
    try:
        sys.stderr.flush()
        real = os.dup(2)
    except (AttributeError, OSError, ValueError):  # no stderr to filter
        yield
        return
    with _native:
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)

        def relay():
            with os.fdopen(read_end, "rb") as pipe:
                for line in pipe:
                    text = line.decode(errors="replace").rstrip("\r\n")
                    if not any(p.fullmatch(text) for p in patterns):
                        view = memoryview(line)
                        while view:
                            view = view[os.write(real, view):]

        thread = threading.Thread(target=relay, name="stderr-filter", daemon=True)
        thread.start()
        try:
            yield
        finally:
            with contextlib.suppress(AttributeError, OSError, ValueError):
                sys.stderr.flush()
            os.dup2(real, 2)  # the pipe's last write end closes: the relay reads to its end and stops
            thread.join(timeout=10)
            os.close(real)
