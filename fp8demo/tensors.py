"""Looking inside tensors: the plain tensors behind a tensor subclass, their bytes and their dtypes.

torchao keeps an FP8 weight as a tensor subclass whose data and scales are inner tensors, named by PyTorch's
__tensor_flatten__ protocol. Every byte count and dtype map in the project walks them here. A leaf module: it imports
nothing of the project, and torch only where a function needs it.
"""

from __future__ import annotations


def inner_tensors(t) -> list:
    """The plain tensors that hold `t`'s data: the inner tensors a tensor subclass names, or `t` itself."""
    if hasattr(t, "__tensor_flatten__"):
        names, _ = t.__tensor_flatten__()
        return [leaf for n in names for leaf in inner_tensors(getattr(t, n))]
    return [t]


def tensor_bytes(t) -> int:
    """Bytes a tensor holds, looking inside tensor subclasses (an FP8 weight: its data plus its scales)."""
    return sum(leaf.numel() * leaf.element_size() for leaf in inner_tensors(t))


def storage_dtype(t) -> str:
    """The dtype a tensor is stored in, e.g. "bfloat16", or "float8_e4m3fn" for a torchao FP8 weight."""
    return str(inner_tensors(t)[0].dtype).replace("torch.", "")


def is_fp8(t) -> bool:
    """A torchao FP8 weight (float8 data inside a tensor subclass)."""
    qdata = getattr(t, "qdata", None)
    return qdata is not None and "float8" in str(qdata.dtype)


def unique_tensors(module):
    """Parameters and buffers of a module, each once (tied weights are one tensor held twice)."""
    seen: set[int] = set()
    for t in list(module.parameters()) + list(module.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            yield t


def module_bytes(module) -> int:
    """Bytes a module's parameters and buffers hold, FP8 tensors and their scales counted as stored."""
    return sum(tensor_bytes(t) for t in unique_tensors(module))


def bytes_by_dtype(module) -> dict[str, dict[str, int]]:
    """{storage dtype: {"tensors": n, "bytes": b}} of a module (the scales of FP8 tensors count under float8)."""
    out: dict[str, dict[str, int]] = {}
    for t in unique_tensors(module):
        d = out.setdefault(storage_dtype(t), {"tensors": 0, "bytes": 0})
        d["tensors"] += 1
        d["bytes"] += tensor_bytes(t)
    return out


def bf16_bytes(module) -> int:
    """Bytes of a module if every floating tensor were bf16 and nothing quantized (the comparison baseline)."""
    total = 0
    for t in unique_tensors(module):
        if hasattr(t, "__tensor_flatten__") or t.is_floating_point():
            total += t.numel() * 2
        else:
            total += t.numel() * t.element_size()
    return total
