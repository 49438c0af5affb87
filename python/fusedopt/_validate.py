"""Hyper-parameter checks shared by the optimizer classes (the kernels check again before writing)."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["check_clip", "check_finite", "check_nonnegative", "check_positive", "check_unit_interval"]


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise TypeError(f"{name} must be a real number, got {type(value).__qualname__}")
    return float(value)


def check_nonnegative(name: str, value: Any) -> float:
    """lr, wd, momentum, lamda: a finite number >= 0."""
    v = _as_float(name, value)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"Invalid {name} value: {value!r} (expected a finite number >= 0)")
    return v


def check_positive(name: str, value: Any) -> float:
    """eps: a finite number > 0."""
    v = _as_float(name, value)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"Invalid {name} value: {value!r} (expected a finite number > 0)")
    return v


def check_unit_interval(name: str, value: Any) -> float:
    """ms_decay: a number in [0, 1)."""
    v = _as_float(name, value)
    if not 0 <= v < 1:  # rejects NaN and infinities too
        raise ValueError(f"Invalid {name} value: {value!r} (expected a finite number in [0, 1))")
    return v


def check_finite(name: str, value: Any) -> float:
    """rescale_grad: any finite number."""
    v = _as_float(name, value)
    if not math.isfinite(v):
        raise ValueError(f"Invalid {name} value: {value!r} (expected a finite number)")
    return v


def check_clip(value: Any) -> float | None:
    """clip_gradient: None (off) or a number > 0 (+inf allowed, meaning no clipping)."""
    if value is None:
        return None
    v = _as_float("clip_gradient", value)
    if not v > 0:  # rejects 0, negatives and NaN
        raise ValueError(
            f"Invalid clip_gradient value: {value!r} (expected None for no clipping, or a number > 0)"
        )
    return v
