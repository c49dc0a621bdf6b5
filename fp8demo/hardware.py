"""What the machine can do. The only module that asks torch about the device; everything else takes Capabilities."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import resource
import time
from dataclasses import dataclass

from .errors import SetupError

log = logging.getLogger(__name__)

# FP8 tensor-core matmuls (torch._scaled_mm) exist from Ada (8.9) and Hopper (9.0) on.
FP8_NATIVE_MIN_CC = (8, 9)


@dataclass(frozen=True)
class Capabilities:
    device: str  # "cuda", "mps" or "cpu"
    name: str
    compute_capability: tuple[int, int] | None = None
    total_memory: int | None = None  # bytes of device memory; None on CPU
    free_memory: int | None = None
    bf16: bool = True
    torchao: bool = True
    xformers: bool = False
    flash_attention_3: bool = False  # flash-attn 3's interface is installed (FP8 attention's kernels)
    cpu_count: int = 1
    index: int | None = None  # which CUDA device, on a machine with several; None: the default one

    @property
    def target(self) -> str:
        """The torch device string: "cuda:1", or "cuda", "mps", "cpu"."""
        return self.device if self.index is None else f"{self.device}:{self.index}"

    @property
    def fp8_native(self) -> bool:
        return (
            self.device == "cuda"
            and self.compute_capability is not None
            and tuple(self.compute_capability) >= FP8_NATIVE_MIN_CC
        )

    def describe(self) -> str:
        if self.device == "cuda":
            cc = ".".join(map(str, self.compute_capability or ()))
            gib = (self.total_memory or 0) / 2**30
            return f"{self.name} (compute capability {cc}, {gib:.0f} GiB)"
        return f"{self.name} ({self.cpu_count} cores)" if self.device == "cpu" else self.name


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _common() -> dict:
    return dict(torchao=_installed("torchao"), xformers=_installed("xformers"),
                flash_attention_3=_installed("flash_attn_interface"), cpu_count=os.cpu_count() or 1)


def _cuda(index: int) -> Capabilities:
    import torch

    props = torch.cuda.get_device_properties(index)
    free, total = torch.cuda.mem_get_info(index)
    return Capabilities(device="cuda", name=props.name, compute_capability=(props.major, props.minor),
                        total_memory=total, free_memory=free, bf16=torch.cuda.is_bf16_supported(), index=index,
                        **_common())


def detect(device: str | None = None) -> Capabilities:
    """The device named ("cuda:1", "cuda", "mps", "cpu"), or by default the best one here: the CUDA GPU with FP8
    tensor cores and the most memory, else MPS, else the CPU."""
    import torch

    if device in (None, "cuda") and torch.cuda.is_available():
        gpus = [_cuda(i) for i in range(torch.cuda.device_count())]
        return max(gpus, key=lambda c: (c.fp8_native, c.total_memory or 0))
    if device is not None and device.startswith("cuda:"):
        index = device.partition(":")[2]
        if not torch.cuda.is_available() or not index.isdigit() or int(index) >= torch.cuda.device_count():
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            raise SetupError(f"--devices: there is no {device} here ({count} CUDA devices visible).")
        return _cuda(int(index))
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if device == "mps" or (device is None and mps):
        if not mps:
            raise SetupError("--devices: there is no MPS device here.")
        return Capabilities(device="mps", name="Apple MPS", **_common())
    if device in (None, "cpu"):
        return Capabilities(device="cpu", name=_cpu_name(), **_common())
    raise SetupError(f"--devices: unknown device {device!r}; use cuda:N, cuda, mps or cpu, or all.")


def detect_all(spec: str | None) -> list[Capabilities]:
    """The devices --devices names: "cuda:0,cuda:1", "all" (every visible CUDA device), "cpu,cpu" (two engines on
    the CPU), or nothing for the one best device."""
    import torch

    if not spec:
        return [detect()]
    if spec == "all":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return [_cuda(i) for i in range(count)] or [detect()]
    return [detect(name.strip()) for name in spec.split(",") if name.strip()]


def cpu_capabilities() -> Capabilities:
    """This machine's CPU alone, e.g. to quantize a checkpoint in the portable weight-only format."""
    return Capabilities(device="cpu", name=_cpu_name(), torchao=_installed("torchao"), cpu_count=os.cpu_count() or 1)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "CPU"


# The functions below take a torch device string (Capabilities.target): "cuda:1", "cuda", "mps" or "cpu".


def _is_cuda(device: str) -> bool:
    return device.startswith("cuda")


def free_device_memory(device: str) -> int | None:
    if not _is_cuda(device):
        return None
    import torch

    return torch.cuda.mem_get_info(torch.device(device))[0]


def synchronize(device: str) -> None:
    import torch

    if _is_cuda(device):
        torch.cuda.synchronize(torch.device(device))
    elif device == "mps":
        torch.mps.synchronize()


def reset_peak_memory(device: str) -> None:
    if _is_cuda(device):
        import torch

        torch.cuda.reset_peak_memory_stats(torch.device(device))


@contextlib.contextmanager
def current(device: str):
    """Make `device` ("cuda:N") the thread's current CUDA device while inside, so that kernels, events and streams
    of code that says only "cuda" go there; nothing for any other device. The engines of a pool share threads."""
    if not device.startswith("cuda:"):  # the default device needs no switch
        yield
        return
    import torch

    with torch.cuda.device(torch.device(device)):
        yield


def memory_in_use(device: str) -> int | None:
    """Bytes the allocator holds in tensors on a CUDA device now; None elsewhere (the process's RSS is shared by
    every engine of a CPU pool, so it says nothing about one)."""
    if not _is_cuda(device):
        return None
    import torch

    return torch.cuda.memory_allocated(torch.device(device))


def peak_memory(device: str) -> tuple[int, str]:
    """Peak bytes since the last reset and what they measure (device allocator, or the process on a CPU)."""
    if _is_cuda(device):
        import torch

        return torch.cuda.max_memory_allocated(torch.device(device)), "cuda max_memory_allocated"
    # ru_maxrss is KiB on Linux; it is the process's high-water mark, not per request.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process peak RSS"


def return_freed_host_memory() -> None:
    """Give the pages of freed heap memory back to the operating system (glibc's malloc_trim; elsewhere nothing).

    glibc keeps freed blocks below its mmap threshold in the heap for reuse, and that threshold rises (up to 32 MiB)
    each time a larger mmapped block is freed, so a build that frees one 16-bit layer after another keeps their pages:
    building random:medium's FP8 transformer block by block ended at 6.6 GiB of RSS for 2.1 GiB of live tensors,
    and at 2.6 GiB with a trim after each block (measured, and no slower). Freed memory is reused either way; a
    trim only stops idle pages from counting against the machine.
    """
    import ctypes
    import ctypes.util

    global _LIBC
    if _LIBC is None:
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name) if name else None
        except OSError:
            libc = None
        _LIBC = libc if libc is not None and hasattr(libc, "malloc_trim") else False
    if _LIBC:
        _LIBC.malloc_trim(0)


_LIBC = None  # the C library once looked up; False where it has no malloc_trim (musl, macOS, Windows)


def release_cached_memory(device: str) -> None:
    import gc

    gc.collect()
    return_freed_host_memory()
    if _is_cuda(device):
        import torch

        with torch.cuda.device(torch.device(device)):
            torch.cuda.empty_cache()


def is_out_of_memory(error: BaseException) -> bool:
    import torch

    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()


# Messages of CUDA errors after which the context is unusable: only a new process recovers.
_FATAL_MARKERS = (
    "illegal memory access",
    "device-side assert",
    "unspecified launch failure",
    "cuda error: misaligned address",
    "an illegal instruction",
    "uncorrectable ecc error",
    "cuda driver error",
    "cublas_status_execution_failed",
    "device not ready",
    "gpu is lost",
)


def is_fatal_device_error(error: BaseException) -> bool:
    if is_out_of_memory(error):
        return False  # recoverable: release the cache and go on
    text = str(error).lower()
    return type(error).__name__ == "AcceleratorError" or any(m in text for m in _FATAL_MARKERS)


class StageClock:
    """Time stamps between pipeline stages: CUDA events on a GPU (device time, no sync per stage), else wall time."""

    def __init__(self, device: str):
        self.device = device
        self._marks: list = []

    def mark(self) -> None:
        if _is_cuda(self.device):
            import torch

            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._marks.append(event)
        else:
            synchronize(self.device)
            self._marks.append(time.perf_counter())

    def intervals(self) -> list[float]:
        """Seconds between consecutive marks (waits for the device once)."""
        synchronize(self.device)
        m = self._marks
        if _is_cuda(self.device):
            return [a.elapsed_time(b) / 1000.0 for a, b in zip(m, m[1:], strict=False)]
        return [b - a for a, b in zip(m, m[1:], strict=False)]


def versions() -> dict:
    """Versions of everything that decides numerics and kernels (recorded in benchmarks, checkpoints, doctor)."""
    import platform

    import diffusers
    import torch
    import transformers

    out = {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
           "transformers": transformers.__version__, "cuda": torch.version.cuda}
    for name in ("torchao", "gradio", "triton", "xformers"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = None
    from . import __version__

    out["fp8demo"] = __version__
    return out


def compile_support(caps: Capabilities) -> tuple[bool, str]:
    """Whether torch.compile can build kernels here, and why not (inductor: Triton on GPUs, a C++ compiler on CPUs)."""
    import shutil

    if caps.device == "cuda":
        if not _installed("triton"):
            return False, "Triton is not installed (it comes with CUDA builds of torch on Linux)"
        return True, "inductor with Triton kernels"
    if caps.device == "cpu":
        compiler_ = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
        if compiler_ is None:
            return False, "no C++ compiler for inductor's CPU kernels (apt-get install g++)"
        return True, f"inductor with C++ kernels ({compiler_})"
    return False, f"torch.compile is not supported on {caps.device} by this project"
