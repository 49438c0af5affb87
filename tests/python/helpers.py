"""Reusable test helpers for the fusedopt Python suite (importable: ``from helpers import ...``).

``conftest.py`` puts this directory on ``sys.path``, so ``import helpers`` and ``import reference``
work under every pytest import mode. Nothing here imports ``fusedopt`` at import time.

Contents
--------
* dtypes: ``DTYPE_NAMES``, ``FLOAT_DTYPE_NAMES``, ``LOW_DTYPE_NAMES``, ``dtype_param(name)``,
  ``np_dtype(name)``.
* tolerances: ``TOLERANCES`` (the table), ``tolerance(dtype, role=..., multi_precision=...)``,
  ``assert_close(actual, expected, dtype, ...)``, ``assert_bitwise_equal``.
* inputs: ``make_inputs(rng, shape, dtype, ...)``, ``guarded(...)`` / ``Guarded`` for zero-copy
  and out-of-bounds-write checks, ``Snapshot`` for "nothing was written" checks.
* ids: ``options_product(**lists)``, ``options_id(dict)``, ``shape_id(shape)``.
* ``import_fusedopt()`` (skip when not installed unless ``FUSEDOPT_TEST_REQUIRE=1``),
  ``available_devices()``, ``cpu_capabilities()``.
"""
from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import pytest

import reference as ref

# --------------------------------------------------------------------------------------------
# fusedopt import and devices
# --------------------------------------------------------------------------------------------

def import_fusedopt():
    """Import fusedopt, or skip the calling module when it is not installed.

    With ``FUSEDOPT_TEST_REQUIRE=1`` (CI after installing the wheel) a missing package is an
    error instead of a skip, so a broken install cannot turn the suite green.
    """
    if os.environ.get("FUSEDOPT_TEST_REQUIRE", "") not in ("", "0"):
        import fusedopt  # noqa: PLC0415

        return fusedopt
    return pytest.importorskip("fusedopt", reason="fusedopt is not installed")


def available_devices() -> list[str]:
    """``["cpu"]`` plus ``"cuda"`` when fusedopt reports CUDA; ``FUSEDOPT_TEST_DEVICE`` overrides
    (comma separated, e.g. ``FUSEDOPT_TEST_DEVICE=cuda``)."""
    env = os.environ.get("FUSEDOPT_TEST_DEVICE")
    if env:
        return [d.strip() for d in env.split(",") if d.strip()]
    devices = ["cpu"]
    try:
        import fusedopt  # noqa: PLC0415

        cuda = getattr(fusedopt, "cuda", None)
        if cuda is not None and cuda.is_available():
            devices.append("cuda")
    except Exception:  # noqa: BLE001 - not installed / no CUDA: CPU only
        pass
    return devices


def cpu_capabilities() -> list[str]:
    """CPU kernel variants to force in turn (``fusedopt.supported_cpu_capabilities()``, README);
    ``["default"]`` when fusedopt is not importable or has no such API (then nothing is forced)."""
    try:
        import fusedopt  # noqa: PLC0415

        return list(fusedopt.supported_cpu_capabilities()) or ["default"]
    except Exception:  # noqa: BLE001
        return ["default"]


# --------------------------------------------------------------------------------------------
# dtypes
# --------------------------------------------------------------------------------------------
DTYPE_NAMES = ("float16", "bfloat16", "float32", "float64")
FLOAT_DTYPE_NAMES = ("float32", "float64")  # compute in their own precision
LOW_DTYPE_NAMES = ("float16", "bfloat16")  # fp32 compute, optional fp32 master

HAVE_ML_DTYPES = ref.BFLOAT16 is not None


def np_dtype(name: Any) -> np.dtype:
    """``np.dtype`` for ``"float16"``, ``"bfloat16"`` (ml_dtypes), ``"float32"``, ``"float64"``."""
    return ref.resolve_dtype(name)


def dtype_param(name: str):
    """``pytest.param(name, id=name)`` with the ``needs_ml_dtypes`` marker for bfloat16."""
    marks = [pytest.mark.needs_ml_dtypes] if name == "bfloat16" else []
    return pytest.param(name, id=name, marks=marks)


# --------------------------------------------------------------------------------------------
# tolerances
# --------------------------------------------------------------------------------------------
# (rtol, atol), compared in float64 after converting both sides (np.testing.assert_allclose).
#
# "plain" = the array is computed in its own precision (f32/f64), or for float16/bfloat16 without
# multi_precision: fp32 registers, one rounding on store per step.
# "mp" = a float16/bfloat16 weight that is cast(fp32 master).
#
# * float64 1e-12/1e-12 and float32 1e-5/1e-6: STYLE 6.7 (bitsandbytes); the reference rounds at
#   the same points, so only FMA contraction / op-order differences of a few ulp remain.
# * float16 mp 1e-3/1e-4, bfloat16 mp 1e-2/1e-3: STYLE 6.7 (MXNet, bitsandbytes). The masters
#   agree to ~1 fp32 ulp, so cast(master) differs by at most 1 low-precision ulp
#   (ulp(x)/x <= 2^-10 = 9.8e-4 for fp16, 2^-7 = 7.8e-3 for bf16).
# * float16 / bfloat16 *without* master, 2e-3/2e-3 and 2e-2/2e-2 (about 2 ulp at |x| ~ 1): the
#   kernel rounds an fp32 value, the reference a float64 value, so a stored element occasionally
#   differs by 1 ulp (double rounding near a tie); that 1-ulp difference then persists in absolute
#   terms over later steps, including when later steps move the value towards 0, so an absolute
#   floor of ~2 ulp at the typical magnitude (|w| ~ 1, data drawn N(0, 1)) is needed, not only a
#   relative bound. Measured with an fp32-register emulation of the kernel against reference.py
#   (7 steps, 200k elements, 16 option combinations, lr 0.1): worst excess over rtol=2e-3 was
#   7.3e-4 (fp16); over rtol=2e-2 it was 1.2e-2 (bf16). Tests with weights much larger than 1
#   should scale atol accordingly.
# * masters (float32) and float32 momentum / prev of multi-precision updates use float32's entry.
TOLERANCES: dict[tuple[str, str], tuple[float, float]] = {
    ("float64", "plain"): (1e-12, 1e-12),
    ("float32", "plain"): (1e-5, 1e-6),
    ("float16", "mp"): (1e-3, 1e-4),
    ("bfloat16", "mp"): (1e-2, 1e-3),
    ("float16", "plain"): (2e-3, 2e-3),
    ("bfloat16", "plain"): (2e-2, 2e-2),
}

ROLES = ("weight", "state", "master")


def tolerance(dtype: Any, *, role: str = "weight",
              multi_precision: bool = False) -> tuple[float, float]:
    """``(rtol, atol)`` for comparing an array of an update of a ``dtype`` weight.

    ``role``: ``"weight"`` (the weight itself), ``"state"`` (momentum / prev), ``"master"``
    (fp32 master). With ``multi_precision`` and a float16/bfloat16 weight, states and masters are
    float32 and use float32's entry; without it, states have the weight's dtype and tolerance.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    name = np_dtype(dtype).name
    mp = multi_precision and name in LOW_DTYPE_NAMES
    if role == "master" or (mp and role == "state"):
        return TOLERANCES[("float32", "plain")]
    if mp:
        return TOLERANCES[(name, "mp")]
    return TOLERANCES[(name, "plain")]


def _as_f64(x: Any) -> np.ndarray:
    return np.asarray(x).astype(np.float64)


def assert_close(actual: Any, expected: Any, dtype: Any = None, *, role: str = "weight",
                 multi_precision: bool = False, check_dtype: bool = True,
                 rtol: float | None = None, atol: float | None = None, err_msg: str = "") -> None:
    """Compare with the tolerance table (NaN == NaN, +-inf must match exactly).

    ``dtype`` is the *weight* dtype of the update (defaults to ``expected.dtype``); shapes must be
    equal, and dtypes too unless ``check_dtype=False``. ``rtol``/``atol`` override the table.
    """
    a = np.asarray(actual)
    e = np.asarray(expected)
    if dtype is None:
        dtype = e.dtype
    assert a.shape == e.shape, f"shape {a.shape} != expected {e.shape}. {err_msg}"
    if check_dtype:
        assert a.dtype == e.dtype, f"dtype {a.dtype} != expected {e.dtype}. {err_msg}"
    t_rtol, t_atol = tolerance(dtype, role=role, multi_precision=multi_precision)
    np.testing.assert_allclose(
        _as_f64(a), _as_f64(e),
        rtol=t_rtol if rtol is None else rtol,
        atol=t_atol if atol is None else atol,
        equal_nan=True, err_msg=err_msg,
    )


def assert_bitwise_equal(actual: Any, expected: Any, err_msg: str = "") -> None:
    """Same shape, dtype and bytes (NaN payloads included)."""
    a = np.asarray(actual)
    e = np.asarray(expected)
    assert a.shape == e.shape and a.dtype == e.dtype, (
        f"{a.dtype}{a.shape} != {e.dtype}{e.shape}. {err_msg}")
    assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(e).tobytes(), (
        f"arrays differ bitwise. {err_msg}\nactual={a!r}\nexpected={e!r}")


class Snapshot:
    """Bitwise copies of arrays, to assert later that nothing was written (``assert_unchanged``)."""

    def __init__(self, *arrays: Any) -> None:
        self._items = [(a, np.array(a, copy=True)) for a in arrays if isinstance(a, np.ndarray)]

    def assert_unchanged(self, what: str = "") -> None:
        for k, (arr, before) in enumerate(self._items):
            assert arr.shape == before.shape and arr.dtype == before.dtype
            assert arr.tobytes() == before.tobytes(), (
                f"array #{k} ({arr.dtype}{arr.shape}) was modified {what}")


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------
@dataclass
class Inputs:
    """Initial stored values: weight (dtype), grads (list, grad dtype), mom (or None)."""

    weight: np.ndarray
    grads: list[np.ndarray]
    mom: np.ndarray | None = None
    extra: dict = field(default_factory=dict)


def random_array(rng: np.random.Generator, shape: Sequence[int] | int, dtype: Any,
                 scale: float = 1.0) -> np.ndarray:
    """``scale * N(0, 1)`` rounded to ``dtype`` (a fresh C-contiguous array; 0-d allowed)."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return ref.round_to(scale * rng.standard_normal(shape), np_dtype(dtype))


def make_inputs(rng: np.random.Generator, shape: Sequence[int] | int, dtype: Any, *,
                steps: int = 7, grad_dtype: Any = None, weight_scale: float = 1.0,
                grad_scale: float = 1.0, mom: bool = False) -> Inputs:
    """Random weight, ``steps`` gradients (``grad_dtype`` defaults to ``dtype``) and, with
    ``mom=True``, a random non-zero initial momentum of the weight's dtype."""
    gdt = dtype if grad_dtype is None else grad_dtype
    w = random_array(rng, shape, dtype, weight_scale)
    grads = [random_array(rng, shape, gdt, grad_scale) for _ in range(steps)]
    m = random_array(rng, shape, dtype, 0.1) if mom else None
    return Inputs(weight=w, grads=grads, mom=m)


@dataclass
class Guarded:
    """A C-contiguous ``view`` (possibly at an unaligned offset) inside ``buffer``, with guard
    elements before and after it set to a sentinel, to detect writes out of bounds and to prove
    that an in-place update reached the caller's memory."""

    buffer: np.ndarray
    view: np.ndarray
    offset: int
    pad: int

    def assert_guards_intact(self) -> None:
        n = self.view.size
        head = self.buffer[: self.offset]
        tail = self.buffer[self.offset + n:]
        assert head.tobytes() == self._sentinel(head.size).tobytes(), "write before the array"
        assert tail.tobytes() == self._sentinel(tail.size).tobytes(), "write after the array"

    def _sentinel(self, n: int) -> np.ndarray:
        return np.full(n, 12345.0).astype(np.float64).astype(self.buffer.dtype)


def guarded(values: np.ndarray, *, offset: int = 1, pad: int = 5) -> Guarded:
    """Copy ``values`` into the middle of a larger 1-D buffer with sentinel guards; ``offset``
    elements before (``offset=1`` makes the view start unaligned for SIMD), ``pad`` after."""
    values = np.asarray(values)
    buf = np.full(offset + values.size + pad, 12345.0).astype(np.float64).astype(values.dtype)
    view = buf[offset: offset + values.size].reshape(values.shape)
    view[...] = values
    assert view.flags.c_contiguous and view.flags.writeable and np.shares_memory(view, buf)
    return Guarded(buffer=buf, view=view, offset=offset, pad=pad)


# --------------------------------------------------------------------------------------------
# parametrisation helpers
# --------------------------------------------------------------------------------------------
_SHORT = {"momentum": "mom", "wd": "wd", "rescale_grad": "rg", "clip_gradient": "clip",
          "lamda": "lam", "lr": "lr", "multi_precision": "mp", "lazy_update": "lazy"}


def options_product(**lists: Iterable[Any]) -> list[dict[str, Any]]:
    """``itertools.product`` of keyword lists -> list of dicts (keys in the given order)."""
    keys = list(lists)
    return [dict(zip(keys, vals)) for vals in itertools.product(*(list(v) for v in lists.values()))]


def _fmt(v: Any) -> str:
    if v is None:
        return "None"
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:g}" if isinstance(v, float) else str(v)


def options_id(opts: dict[str, Any]) -> str:
    """Readable id, e.g. ``mom0.9-wd0.01-rg0.5-clipNone``."""
    return "-".join(f"{_SHORT.get(k, k)}{_fmt(v)}" for k, v in opts.items())


def shape_id(shape: Sequence[int] | int) -> str:
    """``(3, 5, 7)`` -> ``3x5x7``; ``()`` -> ``0d``; ``(0,)`` -> ``0``."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return "0d" if shape == () else "x".join(str(s) for s in shape)
