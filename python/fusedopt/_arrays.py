"""Array-library helpers: dtype names, state allocation and casts for the arrays fusedopt updates.

Every optimizer state is created in the weight's own array library and on its device (a NumPy state
for a NumPy weight, a torch tensor on the weight's device for a torch weight, a CuPy array for a CuPy
weight); this module is the one place that knows how. PyTorch and CuPy are never imported here: a
tensor of theirs can only exist once its library has been imported, so ``sys.modules`` tells.

It also holds the adapter the native DLPack consumer calls before exporting a non-NumPy array
(:func:`_dlpack_export`: torch ``.detach()``, the producer's current CUDA stream) and
:func:`numpy_view`, the zero-copy NumPy view the reference ``step`` paths compute on.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

__all__ = [
    "LOW_PRECISION",
    "astype_float32",
    "copy_into",
    "copy_of",
    "device_id",
    "dtype_name",
    "from_numpy_like",
    "is_low_precision",
    "numpy_view",
    "to_numpy",
    "zeros_like",
]

LOW_PRECISION = frozenset({"float16", "bfloat16"})

# Trust levels returned by _dlpack_export (python/src/dlpack.cpp reads them).
_UNKNOWN_PRODUCER = 0  # legacy (unversioned) capsules may be read-only: never written through
_KNOWN_WRITABLE = 1  # NumPy / PyTorch / CuPy: a legacy capsule is a writable array
_IMMUTABLE = 2  # JAX: never written, whatever the capsule says


# ----------------------------------------------------------------------------------- libraries
def _torch_of(a: Any) -> Any:
    """The torch module when ``a`` is a torch.Tensor (nn.Parameter included), else None."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(a, torch.Tensor):
        return torch
    return None


def _cupy_of(a: Any) -> Any:
    """The cupy module when ``a`` is a cupy.ndarray, else None."""
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(a, cupy.ndarray):
        return cupy
    return None


def _is_jax(a: Any) -> bool:
    return type(a).__module__.split(".", 1)[0] in ("jax", "jaxlib")


def _unsupported(a: Any) -> TypeError:
    return TypeError(
        f"unsupported array type {type(a).__qualname__} (fusedopt supports NumPy arrays, torch "
        "tensors and CuPy arrays)"
    )


def _torch_dtype(torch: Any, dtype: Any) -> Any:
    """A torch dtype from a torch dtype, a NumPy dtype (ml_dtypes bfloat16 included) or a name."""
    if isinstance(dtype, torch.dtype):
        return dtype
    name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    name = name[6:] if name.startswith("torch.") else name
    result = getattr(torch, name, None)
    if not isinstance(result, torch.dtype):
        raise TypeError(f"no torch dtype for {dtype!r}")
    return result


def _torch_from_numpy(torch: Any, a: np.ndarray, device: Any) -> Any:
    """A new torch tensor (C-contiguous, own memory) with a's values on ``device``."""
    a = np.array(a, order="C", copy=True)
    if a.dtype.name == "bfloat16":  # ml_dtypes: torch has no NumPy bfloat16; reinterpret the bits
        t = torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    else:
        t = torch.from_numpy(a)
    return t.to(device)


def _torch_numpy_view(torch: Any, t: Any) -> np.ndarray:
    """A NumPy array sharing memory with a CPU tensor (bfloat16 as an ml_dtypes view of the bits)."""
    t = t.detach()
    if t.dtype == torch.bfloat16:
        import ml_dtypes

        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


# ------------------------------------------------------------------------------------- queries
# dtype object -> short name. str(numpy dtype) costs microseconds and this runs per tensor per step.
_DTYPE_NAMES: dict[Any, str] = {}


def dtype_name(a: Any) -> str:
    """'float16', 'bfloat16', 'float32', 'float64' or the library's own name for anything else."""
    dt = getattr(a, "dtype", None)
    if dt is None:
        raise TypeError(f"expected an array, got {type(a).__qualname__}")
    try:
        return _DTYPE_NAMES[dt]
    except KeyError:
        name = str(dt)
        name = name[6:] if name.startswith("torch.") else name
        _DTYPE_NAMES[dt] = name
        return name


def is_low_precision(a: Any) -> bool:
    return dtype_name(a) in LOW_PRECISION


def device_id(a: Any) -> int:
    """The device id of an array (0 for host arrays)."""
    if _torch_of(a) is not None:
        return int(a.device.index or 0) if a.device.type != "cpu" else 0
    if _cupy_of(a) is not None:
        return int(a.device.id)
    return 0


# ---------------------------------------------------------------------------------- allocation
# States are made in the weight's memory layout (order "K" / preserve_format): a dense strided weight
# (a transposed array, channels_last) is updated as one flat range together with its states, which
# needs identical strides; for C-contiguous weights this is the C order.
def zeros_like(a: Any, dtype: Any = None) -> Any:
    """Zeros of a's shape and memory layout in a's library (and device), with a's dtype unless
    `dtype` is given."""
    if isinstance(a, np.ndarray):
        return np.zeros_like(a, dtype=a.dtype if dtype is None else dtype, order="K")
    torch = _torch_of(a)
    if torch is not None:
        dt = a.dtype if dtype is None else _torch_dtype(torch, dtype)
        return torch.zeros_like(a.detach(), dtype=dt, memory_format=torch.preserve_format)
    cupy = _cupy_of(a)
    if cupy is not None:
        with a.device:
            return cupy.zeros_like(a, dtype=a.dtype if dtype is None else dtype, order="K")
    raise _unsupported(a)


def copy_of(a: Any) -> Any:
    """A copy of a in its own library, device and memory layout."""
    if isinstance(a, np.ndarray):
        return np.array(a, copy=True, order="K")
    torch = _torch_of(a)
    if torch is not None:
        return a.detach().clone(memory_format=torch.preserve_format)
    cupy = _cupy_of(a)
    if cupy is not None:
        with a.device:
            return cupy.array(a, copy=True, order="K")
    raise _unsupported(a)


def astype_float32(a: Any) -> Any:
    """A new float32 copy of a in a's memory layout (the master weight of a float16/bfloat16
    weight)."""
    if isinstance(a, np.ndarray):
        return np.array(a, dtype=np.float32, order="K", copy=True)  # (ascontiguousarray makes 0-d 1-d)
    torch = _torch_of(a)
    if torch is not None:
        return a.detach().to(dtype=torch.float32, memory_format=torch.preserve_format, copy=True)
    cupy = _cupy_of(a)
    if cupy is not None:
        with a.device:
            return cupy.array(a, dtype=cupy.float32, order="K", copy=True)
    raise _unsupported(a)


def copy_into(dst: Any, src: Any) -> None:
    """dst[...] = src, casting with round-to-nearest-even (in place, on dst's device)."""
    if isinstance(dst, np.ndarray):
        np.copyto(dst, src, casting="unsafe")
        return
    torch = _torch_of(dst)
    if torch is not None:
        if _torch_of(src) is None:
            src = _torch_from_numpy(torch, to_numpy(src), dst.device)
        with torch.no_grad():
            dst.detach().copy_(src)
        return
    cupy = _cupy_of(dst)
    if cupy is not None:
        with dst.device:
            cupy.copyto(dst, cupy.asarray(src), casting="unsafe")
        return
    raise _unsupported(dst)


# --------------------------------------------------------------------------------- conversions
def to_numpy(a: Any) -> np.ndarray:
    """A NumPy array with a's values: a itself for NumPy arrays, a zero-copy view of a CPU torch
    tensor (bfloat16 through ml_dtypes), a host copy of device arrays."""
    if isinstance(a, np.ndarray):
        return a
    torch = _torch_of(a)
    if torch is not None:
        t = a.detach()
        return _torch_numpy_view(torch, t if t.device.type == "cpu" else t.cpu())
    cupy = _cupy_of(a)
    if cupy is not None:
        return cupy.asnumpy(a)
    raise _unsupported(a)


def from_numpy_like(like: Any, a: np.ndarray) -> Any:
    """`a` in the library, on the device and in the memory layout of `like` (`a` itself for NumPy
    when it already has that layout; a new array otherwise)."""
    if isinstance(like, np.ndarray):
        a = np.asarray(a)
        if a.flags.c_contiguous and like.flags.c_contiguous:
            return a
        out = np.empty_like(like, dtype=a.dtype, order="K")  # keeps 0-d arrays 0-d
        out[...] = a
        return out
    torch = _torch_of(like)
    if torch is not None:
        t = _torch_from_numpy(torch, np.asarray(a), like.device)
        if t.is_contiguous() and like.is_contiguous():
            return t
        out = torch.empty_like(like.detach(), dtype=t.dtype, memory_format=torch.preserve_format)
        out.copy_(t)
        return out
    cupy = _cupy_of(like)
    if cupy is not None:
        with like.device:
            out = cupy.empty_like(like, dtype=np.asarray(a).dtype, order="K")
            out[...] = cupy.asarray(np.asarray(a))
            return out
    raise _unsupported(like)


def numpy_view(a: Any) -> Any:
    """A NumPy array that shares memory with ``a`` — what the reference ``step`` paths compute on and
    write through. ``None`` stays ``None``, tuples/lists map element-wise (to a tuple), and anything
    that is not an array (a RowSparseArray gradient) is returned unchanged.

    NumPy arrays are returned as they are; CPU torch tensors are detached and viewed (bfloat16 as
    ml_dtypes.bfloat16). Device arrays have no host view: ``TypeError`` pointing to the fused kernels.
    """
    if a is None or isinstance(a, np.ndarray):
        return a
    if isinstance(a, (tuple, list)):
        return tuple(numpy_view(x) for x in a)
    torch = _torch_of(a)
    if torch is not None:
        if a.device.type == "cpu":
            return _torch_numpy_view(torch, a)
        raise TypeError(_device_step_message(f"torch tensor on {a.device}"))
    if _cupy_of(a) is not None:
        raise TypeError(_device_step_message(f"CuPy array on cuda:{a.device.id}"))
    if hasattr(a, "__dlpack__") or hasattr(a, "__array__"):
        raise TypeError(
            f"the reference step cannot update a {type(a).__qualname__} in place; use "
            "use_fused_step=True (the fused kernels accept DLPack tensors)"
        )
    return a


def _device_step_message(what: str) -> str:
    return (
        f"the reference step (use_fused_step=False) computes with NumPy on the host and cannot "
        f"update a {what}; use use_fused_step=True (the default of SGD and DCASGD)"
    )


# ------------------------------------------------------------------------------------- DLPack
def _stream_arg(ptr: int) -> int:
    """The ``__dlpack__(stream=...)`` value of a current CUDA stream: 0 (the legacy default stream in
    PyTorch and CuPy) is not allowed by the protocol and becomes 1, its spelling there."""
    ptr = int(ptr)
    return 1 if ptr == 0 else ptr


def _cupy_current_stream(cupy: Any, device: int) -> int:
    try:
        return int(cupy.cuda.get_current_stream(device).ptr)
    except TypeError:  # older CuPy: no device argument
        with cupy.cuda.Device(device):
            return int(cupy.cuda.get_current_stream().ptr)


def _exchange_allowed(tp: type) -> bool:
    """Whether the native consumer may read arrays of type ``tp`` through the producer's DLPack C
    exchange API (``__dlpack_c_exchange_api__``) instead of ``__dlpack__``: PyTorch tensors (and
    subclasses such as nn.Parameter) whose ``__dlpack__`` is torch's own. Those are writable and never
    copied on export, and the table hands over the same memory ``__dlpack__`` would, without a capsule
    per call. Asked once per type."""
    torch = sys.modules.get("torch")
    if torch is None or not issubclass(tp, torch.Tensor):
        return False
    return getattr(tp, "__dlpack__", None) is torch.Tensor.__dlpack__


def _dlpack_export(a: Any) -> tuple[Any, int | None, int]:
    """Called by the native consumer for every non-NumPy argument, before ``__dlpack__``.

    Returns ``(obj, stream, trust)``: the object to call ``__dlpack__`` on (torch tensors that require
    grad — every nn.Parameter — are detached, which shares storage; PyTorch refuses to export them
    otherwise); the ``stream`` argument for CUDA tensors — the producer's *current* stream, on which
    fusedopt then launches, so results are stream-ordered like the producer's own ops (None for host
    memory); and how far a legacy capsule can be trusted to be writable (see the ``_*`` levels above).

    In-place updates through DLPack bypass autograd's version counter: step only after backward.
    """
    torch = _torch_of(a)
    if torch is not None:
        t = a.detach() if a.requires_grad else a
        if t.device.type == "cuda" and getattr(torch.version, "hip", None) is None:
            return t, _stream_arg(torch.cuda.current_stream(t.device).cuda_stream), _KNOWN_WRITABLE
        return t, None, _KNOWN_WRITABLE
    cupy = _cupy_of(a)
    if cupy is not None:
        return a, _stream_arg(_cupy_current_stream(cupy, int(a.device.id))), _KNOWN_WRITABLE
    trust = _IMMUTABLE if _is_jax(a) else _UNKNOWN_PRODUCER
    stream = None
    device = getattr(a, "__dlpack_device__", None)
    if device is not None and int(device()[0]) == 2:  # kDLCUDA: unknown producer, legacy default stream
        stream = 1
    return a, stream, trust
