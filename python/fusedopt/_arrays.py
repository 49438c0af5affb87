"""Array-library helpers: dtype names, state allocation and casts for the arrays fusedopt updates.

Every optimizer state is created in the weight's own array library (and, for DLPack producers, on its
device); this module is the one place that knows how.
"""

from __future__ import annotations

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
    "to_numpy",
    "zeros_like",
]

LOW_PRECISION = frozenset({"float16", "bfloat16"})


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


def zeros_like(a: Any, dtype: Any = None) -> Any:
    """Zeros of a's shape in a's library (and device), with a's dtype unless `dtype` is given."""
    if isinstance(a, np.ndarray):
        return np.zeros(a.shape, dtype=a.dtype if dtype is None else dtype)
    raise TypeError(f"unsupported array type {type(a).__qualname__}")


def copy_of(a: Any) -> Any:
    """A C-contiguous copy of a in its own library and device."""
    if isinstance(a, np.ndarray):
        return np.array(a, copy=True, order="C")
    raise TypeError(f"unsupported array type {type(a).__qualname__}")


def astype_float32(a: Any) -> Any:
    """A new float32 C-contiguous copy of a (the master weight of a float16/bfloat16 weight)."""
    if isinstance(a, np.ndarray):
        return np.ascontiguousarray(a, dtype=np.float32).copy()
    raise TypeError(f"unsupported array type {type(a).__qualname__}")


def copy_into(dst: Any, src: Any) -> None:
    """dst[...] = src, casting with round-to-nearest-even."""
    if isinstance(dst, np.ndarray):
        np.copyto(dst, src, casting="unsafe")
        return
    raise TypeError(f"unsupported array type {type(dst).__qualname__}")


def device_id(a: Any) -> int:
    """The device id of an array (0 for host arrays)."""
    return 0


def to_numpy(a: Any) -> np.ndarray:
    """A NumPy array with a's values (a itself for NumPy arrays; a host copy otherwise)."""
    if isinstance(a, np.ndarray):
        return a
    raise TypeError(f"unsupported array type {type(a).__qualname__}")


def from_numpy_like(like: Any, a: np.ndarray) -> Any:
    """`a` in the library and on the device of `like` (a C-contiguous NumPy array for NumPy)."""
    if isinstance(like, np.ndarray):
        return np.ascontiguousarray(a)
    raise TypeError(f"unsupported array type {type(like).__qualname__}")
