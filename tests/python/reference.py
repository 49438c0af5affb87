"""Independent NumPy float64 reference of docs/SEMANTICS.md (SGD, DCASGD, multi-precision, row-sparse;
section 13: DCASGD with per-worker backups and the adaptive lambda of DC-ASGD-a).

Written from docs/SEMANTICS.md alone, for the tests. It never imports ``fusedopt``.

Conventions
-----------
* **Single-step rule functions** (``sgd_update``, ``sgd_mom_update``, ``dcasgd_update``,
  ``sgd_row_sparse_update``) are pure: they copy every input to float64, never modify their
  arguments and return *new, unrounded float64* arrays.
* **Multi-precision single-step functions** (``mp_sgd_update``, ``mp_sgd_mom_update``,
  ``mp_dcasgd_update``) also never modify their arguments, but rounding is part of their
  definition (docs/SEMANTICS.md §4), so they return arrays in their *storage* dtypes: the low-precision
  weight, float32 master, float32 momentum / previous weight.
* **Multi-step simulators** (``run_sgd``, ``run_dcasgd``) take the initial weight in its storage
  dtype and a sequence of gradients and round at exactly the points where the kernels store:

  - float32 / float64 weight: compute in float64 from the stored values, store (round) once per
    step into the weight dtype (weight, momentum, previous weight).
  - float16 / bfloat16 weight without multi_precision: the kernels compute in float32 registers
    and round once on store; we compute in float64 and round through float32 to the weight dtype
    (``round_to``). The momentum / previous weight have the weight dtype.
  - float16 / bfloat16 weight with multi_precision: the float32 master, float32 momentum (and
    float32 previous weight for DCASGD) are the stored state; the weight is ``cast(master)``.

  They return new arrays and never modify their inputs.

Hyper-parameters are used as exact Python floats (float64); for float32 compute the kernels round
them to float32, which the float32 tolerances absorb. NaN / Inf follow IEEE arithmetic on the
formulas exactly as docs/SEMANTICS.md writes them (``clip`` lets a NaN through, clips +-inf to +-c).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np

try:  # bfloat16 for NumPy; optional
    import ml_dtypes as _ml_dtypes

    BFLOAT16: Any = np.dtype(_ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - depends on environment
    _ml_dtypes = None
    BFLOAT16 = None

F16 = np.dtype(np.float16)
F32 = np.dtype(np.float32)
F64 = np.dtype(np.float64)

__all__ = [
    "BFLOAT16",
    "F16",
    "F32",
    "F64",
    "LOW_PRECISION_NAMES",
    "RowSparseGrad",
    "SGDResult",
    "DCASGDResult",
    "clip",
    "dcasgd_adaptive_update",
    "dcasgd_backup_update",
    "dcasgd_update",
    "densify",
    "is_low_precision",
    "mp_dcasgd_update",
    "mp_sgd_mom_update",
    "mp_sgd_update",
    "multi_sgd_update",
    "preprocess_grad",
    "resolve_dtype",
    "round_to",
    "run_dcasgd",
    "run_dcasgd_backup",
    "run_sgd",
    "sgd_mom_update",
    "sgd_row_sparse_update",
    "sgd_update",
]

LOW_PRECISION_NAMES = ("float16", "bfloat16")


# --------------------------------------------------------------------------------------------
# dtypes and rounding
# --------------------------------------------------------------------------------------------
def resolve_dtype(dtype: Any) -> np.dtype:
    """``np.dtype`` for a dtype or one of the names float16 / bfloat16 / float32 / float64."""
    if isinstance(dtype, str) and dtype in ("bfloat16", "bf16"):
        if BFLOAT16 is None:
            raise RuntimeError("bfloat16 needs the ml_dtypes package")
        return BFLOAT16
    return np.dtype(dtype)


def is_low_precision(dtype: Any) -> bool:
    """True for float16 and bfloat16 (the dtypes multi_precision keeps an fp32 master for)."""
    return resolve_dtype(dtype).name in LOW_PRECISION_NAMES


def _f64(x: Any) -> np.ndarray:
    """A float64 copy (works for ml_dtypes.bfloat16 arrays too)."""
    return np.array(x, dtype=np.float64, copy=True)


def round_to(x: Any, dtype: Any) -> np.ndarray:
    """Round ``x`` (any float array) to the storage ``dtype`` and return a new array of it.

    float16 / bfloat16 go through float32 first: the kernels hold the value in an fp32 register
    and round that (round to nearest even) on store.
    """
    dt = resolve_dtype(dtype)
    with np.errstate(all="ignore"):
        a = np.asarray(x)
        if dt.name in LOW_PRECISION_NAMES:
            return np.asarray(a, dtype=np.float64).astype(np.float32).astype(dt)
        return np.array(a, dtype=dt, copy=True)


# --------------------------------------------------------------------------------------------
# single-step rules, float64
# --------------------------------------------------------------------------------------------
def _check_hyper(lr: float, wd: float, rescale_grad: float, clip_gradient: float | None,
                 momentum: float = 0.0) -> None:
    """The reference refuses what docs/SEMANTICS.md refuses, so a wrong test setup cannot pass silently."""
    for name, v in (("lr", lr), ("wd", wd), ("momentum", momentum)):
        if math.isnan(v) or v < 0:
            raise ValueError(f"reference: {name} must be >= 0 and not NaN, got {v}")
    if not math.isfinite(rescale_grad):
        raise ValueError(f"reference: rescale_grad must be finite, got {rescale_grad}")
    if clip_gradient is not None and not (clip_gradient > 0):  # also catches NaN
        raise ValueError(f"reference: clip_gradient must be None or > 0, got {clip_gradient}")


def clip(x: Any, c: float | None) -> np.ndarray:
    """docs/SEMANTICS.md ``clip``: ``c`` if ``x > c``, ``-c`` if ``x < -c``, else ``x`` (NaN passes through).

    ``c=None`` returns a float64 copy unchanged; ``c=inf`` clips nothing.
    """
    x = _f64(x)
    if c is None:
        return x
    c = float(c)
    with np.errstate(invalid="ignore"):
        return np.where(x > c, c, np.where(x < -c, -c, x))


def preprocess_grad(weight: Any, grad: Any, *, wd: float, rescale_grad: float,
                    clip_gradient: float | None) -> np.ndarray:
    """``r = clip(rg * g, c) + wd * w`` in float64 (weight decay is never clipped)."""
    with np.errstate(all="ignore"):
        r = clip(float(rescale_grad) * _f64(grad), clip_gradient)
        return r + float(wd) * _f64(weight)


def loss_scaled_rescale(rescale_grad: float, grad_scale: float) -> float:
    """The rescale factor of an aggregated call given GradScaler's ``grad_scale`` (the gradients
    carry that factor): ``rescale_grad / grad_scale`` in float64. (The library computes
    ``rescale_grad * (1 / grad_scale)`` in double, which may differ from this in the last bit.)"""
    return float(rescale_grad) / float(grad_scale)


def sgd_update(weight: Any, grad: Any, *, lr: float, wd: float = 0.0, rescale_grad: float = 1.0,
               clip_gradient: float | None = None) -> np.ndarray:
    """SGD without momentum: returns the new weight ``w - lr * r`` (float64, unrounded)."""
    _check_hyper(lr, wd, rescale_grad, clip_gradient)
    r = preprocess_grad(weight, grad, wd=wd, rescale_grad=rescale_grad, clip_gradient=clip_gradient)
    with np.errstate(all="ignore"):
        return _f64(weight) - float(lr) * r


def sgd_mom_update(weight: Any, grad: Any, mom: Any, *, lr: float, momentum: float = 0.0,
                   wd: float = 0.0, rescale_grad: float = 1.0,
                   clip_gradient: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """SGD with a momentum buffer: ``m = mu*m - lr*r; w = w + m``. Returns ``(w, m)`` float64."""
    _check_hyper(lr, wd, rescale_grad, clip_gradient, momentum)
    r = preprocess_grad(weight, grad, wd=wd, rescale_grad=rescale_grad, clip_gradient=clip_gradient)
    with np.errstate(all="ignore"):
        m = float(momentum) * _f64(mom) - float(lr) * r
        w = _f64(weight) + m
    return w, m


def dcasgd_update(weight: Any, grad: Any, mom: Any | None, prev: Any, *, lr: float,
                  momentum: float = 0.0, lamda: float = 0.04, wd: float = 0.0,
                  rescale_grad: float = 1.0, clip_gradient: float | None = None,
                  ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """DCASGD (docs/SEMANTICS.md §7). Returns ``(w, m or None, prev)`` as new float64 arrays.

    ``d = r + lam*r*r*(w - prev)`` with ``r`` including weight decay; ``prev`` becomes the weight
    before this update. ``mom=None`` means no momentum (``step = -lr*d``).
    """
    _check_hyper(lr, wd, rescale_grad, clip_gradient, momentum)
    if math.isnan(lamda):
        raise ValueError("reference: lamda must not be NaN")
    if mom is None and momentum != 0:
        raise ValueError("reference: momentum != 0 needs a momentum buffer")
    w = _f64(weight)
    r = preprocess_grad(w, grad, wd=wd, rescale_grad=rescale_grad, clip_gradient=clip_gradient)
    with np.errstate(all="ignore"):
        d = r + float(lamda) * r * r * (w - _f64(prev))
        if mom is not None:
            m = float(momentum) * _f64(mom) - float(lr) * d
            step = m
        else:
            m = None
            step = -float(lr) * d
        new_prev = w.copy()
        new_w = w + step
    return new_w, m, new_prev


def _check_adaptive(lamda: float, ms_decay: float, eps: float) -> None:
    if math.isnan(lamda) or lamda < 0:
        raise ValueError(f"reference: lamda must be >= 0, got {lamda}")
    if not 0 <= ms_decay < 1:
        raise ValueError(f"reference: ms_decay must be in [0, 1), got {ms_decay}")
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"reference: eps must be finite and > 0, got {eps}")


def _compensated(w: np.ndarray, r: np.ndarray, anchor: Any, mean_square: Any | None, *,
                 lamda: float, ms_decay: float, eps: float
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """docs/SEMANTICS.md §13: ``(d, ms or None)`` with ``d = r + lam_t * r * r * (w - anchor)``.

    adaptive (mean_square given): ``ms = ms_decay * ms + (1 - ms_decay) * r * r`` first, then
    ``lam_t = lamda / sqrt(ms + eps)``; constant: ``lam_t = lamda``.
    """
    with np.errstate(all="ignore"):
        if mean_square is None:
            lam: Any = float(lamda)
            ms = None
        else:
            ms = float(ms_decay) * _f64(mean_square) + (1.0 - float(ms_decay)) * r * r
            lam = float(lamda) / np.sqrt(ms + float(eps))
        return r + lam * r * r * (w - _f64(anchor)), ms


def dcasgd_backup_update(weight: Any, grad: Any, backup: Any, mom: Any | None = None,
                         mean_square: Any | None = None, *, lr: float, lamda: float,
                         momentum: float = 0.0, wd: float = 0.0, rescale_grad: float = 1.0,
                         clip_gradient: float | None = None, ms_decay: float = 0.95,
                         eps: float = 1e-7,
                         ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """DC-ASGD with the pushing worker's backup (docs/SEMANTICS.md §13). Returns ``(w, m or None,
    ms or None)`` as new float64 arrays; ``backup`` is only read.

    ``m = mu*m - lr*d; w = w + m`` with ``mom``, else ``w = w - lr*d``.
    """
    _check_hyper(lr, wd, rescale_grad, clip_gradient, momentum)
    _check_adaptive(lamda, ms_decay, eps)
    if mom is None and momentum != 0:
        raise ValueError("reference: momentum != 0 needs a momentum buffer")
    w = _f64(weight)
    r = preprocess_grad(w, grad, wd=wd, rescale_grad=rescale_grad, clip_gradient=clip_gradient)
    d, ms = _compensated(w, r, backup, mean_square, lamda=lamda, ms_decay=ms_decay, eps=eps)
    with np.errstate(all="ignore"):
        if mom is not None:
            m = float(momentum) * _f64(mom) - float(lr) * d
            return w + m, m, ms
        return w - float(lr) * d, None, ms


def dcasgd_adaptive_update(weight: Any, grad: Any, mom: Any | None, prev: Any, mean_square: Any, *,
                           lr: float, momentum: float = 0.0, lamda: float = 0.04, wd: float = 0.0,
                           rescale_grad: float = 1.0, clip_gradient: float | None = None,
                           ms_decay: float = 0.95, eps: float = 1e-7,
                           ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """MXNet's DCASGD form with the adaptive lambda (docs/SEMANTICS.md §13 on ``dcasgd_update``):
    returns ``(w, m or None, prev, ms)`` float64; ``prev`` becomes the weight before the update."""
    _check_adaptive(lamda, ms_decay, eps)
    w = _f64(weight)
    w_new, m, ms = dcasgd_backup_update(w, grad, prev, mom, mean_square, lr=lr, lamda=lamda,
                                        momentum=momentum, wd=wd, rescale_grad=rescale_grad,
                                        clip_gradient=clip_gradient, ms_decay=ms_decay, eps=eps)
    assert ms is not None
    return w_new, m, w, ms


# --------------------------------------------------------------------------------------------
# multi-precision single steps (return storage dtypes)
# --------------------------------------------------------------------------------------------
def _low_dtype_of(weight: Any) -> np.dtype:
    dt = np.asarray(weight).dtype
    if dt.name not in LOW_PRECISION_NAMES:
        raise TypeError(f"reference: multi-precision weight must be float16/bfloat16, got {dt}")
    return dt


def mp_sgd_update(weight: Any, grad: Any, weight32: Any, *, lr: float, wd: float = 0.0,
                  rescale_grad: float = 1.0, clip_gradient: float | None = None,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Multi-precision SGD, no momentum. Returns ``(weight (low dtype), weight32 (float32))``.

    The master is updated in float64 math from its float32 value and ``float(g)``, stored as
    float32; the weight is ``cast(master)``. The old low-precision weight value is not read.
    """
    dt = _low_dtype_of(weight)
    w64 = sgd_update(weight32, grad, lr=lr, wd=wd, rescale_grad=rescale_grad,
                     clip_gradient=clip_gradient)
    w32 = round_to(w64, F32)
    return round_to(w32, dt), w32


def mp_sgd_mom_update(weight: Any, grad: Any, mom: Any, weight32: Any, *, lr: float,
                      momentum: float = 0.0, wd: float = 0.0, rescale_grad: float = 1.0,
                      clip_gradient: float | None = None,
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Multi-precision SGD with momentum. Returns ``(weight, mom (f32), weight32 (f32))``."""
    dt = _low_dtype_of(weight)
    w64, m64 = sgd_mom_update(weight32, grad, mom, lr=lr, momentum=momentum, wd=wd,
                              rescale_grad=rescale_grad, clip_gradient=clip_gradient)
    w32 = round_to(w64, F32)
    return round_to(w32, dt), round_to(m64, F32), w32


def mp_dcasgd_update(weight: Any, grad: Any, mom: Any | None, prev32: Any, weight32: Any, *,
                     lr: float, momentum: float = 0.0, lamda: float = 0.04, wd: float = 0.0,
                     rescale_grad: float = 1.0, clip_gradient: float | None = None,
                     ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """Multi-precision DCASGD. Returns ``(weight, mom32 or None, prev32, weight32)``.

    Computed on the float32 master (``w`` in the formula is ``weight32``); ``prev32`` becomes the
    master before the update.
    """
    dt = _low_dtype_of(weight)
    w64, m64, p64 = dcasgd_update(weight32, grad, mom, prev32, lr=lr, momentum=momentum,
                                  lamda=lamda, wd=wd, rescale_grad=rescale_grad,
                                  clip_gradient=clip_gradient)
    w32 = round_to(w64, F32)
    m32 = None if m64 is None else round_to(m64, F32)
    return round_to(w32, dt), m32, round_to(p64, F32), w32


# --------------------------------------------------------------------------------------------
# row-sparse gradients (docs/SEMANTICS.md §6)
# --------------------------------------------------------------------------------------------
class RowSparseGrad(NamedTuple):
    """Reference-side row-sparse gradient: ``data`` rows stored at ``indices`` of ``shape``."""

    data: np.ndarray
    indices: np.ndarray
    shape: tuple[int, ...]


def _check_rows(indices: Any, nrows: int) -> np.ndarray:
    idx = np.asarray(indices)
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError("reference: indices must be a 1-D integer array")
    if idx.size and (idx.min() < 0 or idx.max() >= nrows):
        raise ValueError("reference: row index out of range")
    if np.unique(idx).size != idx.size:
        raise ValueError("reference: duplicate row index")
    return idx.astype(np.int64)


def densify(data: Any, indices: Any, shape: Sequence[int]) -> np.ndarray:
    """Dense float64 gradient with zeros on rows not stored."""
    shape = tuple(shape)
    idx = _check_rows(indices, shape[0])
    data = _f64(data).reshape((idx.size,) + shape[1:])
    out = np.zeros(shape, dtype=np.float64)
    out[idx] = data
    return out


def sgd_row_sparse_update(weight: Any, data: Any, indices: Any, mom: Any | None = None, *,
                          lr: float, momentum: float = 0.0, wd: float = 0.0,
                          rescale_grad: float = 1.0, clip_gradient: float | None = None,
                          lazy_update: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """SGD with a row-sparse gradient. Returns ``(w, m or None)`` as new float64 arrays.

    lazy: only stored rows are touched (even all-zero ones); other rows of weight and momentum
    are unchanged (no decay). standard: the dense rule with zero gradient on rows not stored.
    ``mom=None`` means the no-momentum rule.
    """
    w = _f64(weight)
    if w.ndim == 0:
        raise ValueError("reference: row-sparse weight needs at least one dimension")
    if not lazy_update:
        g = densify(data, indices, w.shape)
        if mom is None:
            return sgd_update(w, g, lr=lr, wd=wd, rescale_grad=rescale_grad,
                              clip_gradient=clip_gradient), None
        return sgd_mom_update(w, g, mom, lr=lr, momentum=momentum, wd=wd,
                              rescale_grad=rescale_grad, clip_gradient=clip_gradient)
    idx = _check_rows(indices, w.shape[0])
    rows = _f64(data).reshape((idx.size,) + w.shape[1:])
    if mom is None:
        w[idx] = sgd_update(w[idx], rows, lr=lr, wd=wd, rescale_grad=rescale_grad,
                            clip_gradient=clip_gradient)
        return w, None
    m = _f64(mom)
    w[idx], m[idx] = sgd_mom_update(w[idx], rows, m[idx], lr=lr, momentum=momentum, wd=wd,
                                    rescale_grad=rescale_grad, clip_gradient=clip_gradient)
    return w, m


def multi_sgd_update(weights: Sequence[Any], grads: Sequence[Any], moms: Sequence[Any] | None,
                     *, lrs: Sequence[float], wds: Sequence[float], momentum: float = 0.0,
                     rescale_grad: float = 1.0, clip_gradient: float | None = None,
                     ) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Aggregated update = the single-tensor rule per tensor ``k`` with ``lrs[k]``, ``wds[k]``.

    Returns a list of ``(w, m or None)`` float64 pairs. ``moms=None`` means no momentum.
    """
    n = len(weights)
    lengths = [len(grads), len(lrs), len(wds)] + ([] if moms is None else [len(moms)])
    if any(k != n for k in lengths):
        raise ValueError("reference: lengths of weights/grads/moms/lrs/wds differ")
    out = []
    for k in range(n):
        if moms is None:
            out.append((sgd_update(weights[k], grads[k], lr=lrs[k], wd=wds[k],
                                   rescale_grad=rescale_grad, clip_gradient=clip_gradient), None))
        else:
            out.append(sgd_mom_update(weights[k], grads[k], moms[k], lr=lrs[k], momentum=momentum,
                                      wd=wds[k], rescale_grad=rescale_grad,
                                      clip_gradient=clip_gradient))
    return out


# --------------------------------------------------------------------------------------------
# multi-step simulators with storage rounding
# --------------------------------------------------------------------------------------------
@dataclass
class SGDResult:
    """Stored values after ``run_sgd``: weight (weight dtype), mom (None, weight dtype, or
    float32 with multi_precision), weight32 (float32 master or None)."""

    weight: np.ndarray
    mom: np.ndarray | None
    weight32: np.ndarray | None


@dataclass
class DCASGDResult:
    """Stored values after ``run_dcasgd``; ``prev`` has the weight dtype, or float32 with mp;
    ``mean_square`` (adaptive only) likewise. ``run_dcasgd_backup`` leaves ``prev`` None."""

    weight: np.ndarray
    mom: np.ndarray | None
    prev: np.ndarray | None
    weight32: np.ndarray | None
    mean_square: np.ndarray | None = None


def _per_step(value: float | Sequence[float], n: int, name: str) -> list[float]:
    if isinstance(value, (int, float, np.floating, np.integer)):
        return [float(value)] * n
    values = [float(v) for v in value]
    if len(values) != n:
        raise ValueError(f"reference: {name} has {len(values)} entries for {n} steps")
    return values


def _initial(weight: Any, n: int, lr: Any, wd: Any, multi_precision: bool, weight32: Any,
             mom: Any, momentum: float) -> tuple:
    """The starting point of a simulator: ``(lrs, wds, weight dtype, mp, state dtype, w, w32 or
    None, m or None)``; ``mom`` None means zeros when ``momentum != 0``, else no momentum state."""
    lrs = _per_step(lr, n, "lr")
    wds = _per_step(wd, n, "wd")
    w_dt = np.asarray(weight).dtype
    mp = bool(multi_precision) and w_dt.name in LOW_PRECISION_NAMES
    state_dt = F32 if mp else w_dt
    w = np.array(weight, copy=True)
    w32 = None
    if mp:
        w32 = round_to(weight32 if weight32 is not None else w.astype(np.float32), F32)
    if mom is not None:
        m = round_to(mom, state_dt)
    elif momentum != 0:
        m = np.zeros(w.shape, dtype=state_dt)
    else:
        m = None
    return lrs, wds, w_dt, mp, state_dt, w, w32, m


def _initial_mean_square(adaptive: bool, mean_square: Any, shape: tuple, state_dt: Any) -> Any:
    """The adaptive rules' starting mean square (zeros unless given, as ``create_state``)."""
    if not adaptive:
        return None
    if mean_square is not None:
        return round_to(mean_square, state_dt)
    return np.zeros(shape, dtype=state_dt)


def run_sgd(weight: Any, grads: Iterable[Any], *, lr: float | Sequence[float],
            momentum: float = 0.0, wd: float | Sequence[float] = 0.0, rescale_grad: float = 1.0,
            clip_gradient: float | None = None, multi_precision: bool = False,
            mom: Any | None = None, weight32: Any | None = None,
            lazy_update: bool = True) -> SGDResult:
    """Simulate ``len(grads)`` SGD steps from stored values, rounding where the kernels store.

    * ``weight``: initial weight in its storage dtype (float16/bfloat16/float32/float64).
    * ``grads``: dense arrays, or ``RowSparseGrad`` items (``lazy_update`` picks lazy/standard).
    * ``lr`` / ``wd``: a number, or one value per step (e.g. a learning-rate change mid-run).
    * ``mom``: initial momentum; ``None`` -> zeros if ``momentum != 0`` else no momentum state
      (pass zeros explicitly to simulate ``sgd_mom_update`` with ``momentum=0``).
    * ``multi_precision``: only meaningful for float16/bfloat16 weights (as in docs/SEMANTICS.md §2);
      ``weight32`` defaults to ``float32(weight)``.
    """
    grads = list(grads)
    lrs, wds, w_dt, mp, state_dt, w, w32, m = _initial(weight, len(grads), lr, wd, multi_precision,
                                                       weight32, mom, momentum)

    for g, lr_k, wd_k in zip(grads, lrs, wds):
        base = w32 if mp else w
        kw = dict(lr=lr_k, wd=wd_k, rescale_grad=rescale_grad, clip_gradient=clip_gradient)
        if isinstance(g, RowSparseGrad):
            w64, m64 = sgd_row_sparse_update(base, g.data, g.indices, m, momentum=momentum,
                                             lazy_update=lazy_update, **kw)
        elif m is None:
            w64, m64 = sgd_update(base, g, **kw), None
        else:
            w64, m64 = sgd_mom_update(base, g, m, momentum=momentum, **kw)
        if mp:
            w32 = round_to(w64, F32)
            w = round_to(w32, w_dt)
        else:
            w = round_to(w64, w_dt)
        m = None if m64 is None else round_to(m64, state_dt)
    return SGDResult(weight=w, mom=m, weight32=w32)


def run_dcasgd(weight: Any, grads: Iterable[Any], *, lr: float | Sequence[float],
               momentum: float = 0.0, lamda: float = 0.04, wd: float | Sequence[float] = 0.0,
               rescale_grad: float = 1.0, clip_gradient: float | None = None,
               multi_precision: bool = False, mom: Any | None = None, prev: Any | None = None,
               weight32: Any | None = None, adaptive: bool = False,
               mean_square: Any | None = None, ms_decay: float = 0.95,
               eps: float = 1e-7) -> DCASGDResult:
    """Simulate DCASGD steps with storage rounding (see ``run_sgd`` for the conventions).

    ``prev`` defaults to a copy of the weight (float32 copy of the master with mp), as
    ``create_state`` makes it; ``mom`` defaults to zeros if ``momentum != 0`` else None. With
    ``adaptive`` the mean square starts at ``mean_square`` (default zeros, as ``create_state``).
    """
    grads = list(grads)
    lrs, wds, w_dt, mp, state_dt, w, w32, m = _initial(weight, len(grads), lr, wd, multi_precision,
                                                       weight32, mom, momentum)
    p = round_to(prev, state_dt) if prev is not None else np.array(w32 if mp else w, copy=True)
    ms = _initial_mean_square(adaptive, mean_square, w.shape, state_dt)

    for g, lr_k, wd_k in zip(grads, lrs, wds):
        base = w32 if mp else w
        kw = dict(lr=lr_k, momentum=momentum, lamda=lamda, wd=wd_k, rescale_grad=rescale_grad,
                  clip_gradient=clip_gradient)
        if adaptive:
            w64, m64, p64, ms64 = dcasgd_adaptive_update(base, g, m, p, ms, ms_decay=ms_decay,
                                                         eps=eps, **kw)
            ms = round_to(ms64, state_dt)
        else:
            w64, m64, p64 = dcasgd_update(base, g, m, p, **kw)
        if mp:
            w32 = round_to(w64, F32)
            w = round_to(w32, w_dt)
        else:
            w = round_to(w64, w_dt)
        m = None if m64 is None else round_to(m64, state_dt)
        p = round_to(p64, state_dt)
    return DCASGDResult(weight=w, mom=m, prev=p, weight32=w32, mean_square=ms)


def run_dcasgd_backup(weight: Any, grads: Iterable[Any], backups: Iterable[Any], *,
                      lr: float | Sequence[float], lamda: float, momentum: float = 0.0,
                      wd: float | Sequence[float] = 0.0, rescale_grad: float = 1.0,
                      clip_gradient: float | None = None, multi_precision: bool = False,
                      mom: Any | None = None, weight32: Any | None = None,
                      adaptive: bool = False, mean_square: Any | None = None,
                      ms_decay: float = 0.95, eps: float = 1e-7) -> DCASGDResult:
    """Simulate ``dcasgd_backup_update`` steps with storage rounding; step ``k`` uses ``grads[k]``
    and ``backups[k]`` (stored values: the weight's dtype, float32 with multi_precision). ``mom``
    defaults to zeros when ``momentum != 0``; the mean square (adaptive) to zeros."""
    grads, backups = list(grads), list(backups)
    if len(grads) != len(backups):
        raise ValueError("reference: one backup per step")
    lrs, wds, w_dt, mp, state_dt, w, w32, m = _initial(weight, len(grads), lr, wd, multi_precision,
                                                       weight32, mom, momentum)
    ms = _initial_mean_square(adaptive, mean_square, w.shape, state_dt)
    for g, b, lr_k, wd_k in zip(grads, backups, lrs, wds):
        base = w32 if mp else w
        w64, m64, ms64 = dcasgd_backup_update(
            base, g, round_to(b, state_dt), m, ms, lr=lr_k, lamda=lamda, momentum=momentum,
            wd=wd_k, rescale_grad=rescale_grad, clip_gradient=clip_gradient, ms_decay=ms_decay,
            eps=eps)
        if mp:
            w32 = round_to(w64, F32)
            w = round_to(w32, w_dt)
        else:
            w = round_to(w64, w_dt)
        m = None if m64 is None else round_to(m64, state_dt)
        ms = None if ms64 is None else round_to(ms64, state_dt)
    return DCASGDResult(weight=w, mom=m, prev=None, weight32=w32, mean_square=ms)
