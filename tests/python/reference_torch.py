"""Float64 oracle additions for the fusedopt.torch tests, written from the behaviour specification
(never from the implementation): MXNet's rule driven step by step with per-step hyper-parameters
(what a torch lr scheduler produces), the adaptive DC-ASGD λ, and PyTorch's own SGD rule (for the
table of where the two rules differ). Kept apart from reference.py to avoid merge conflicts.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

import reference as ref


def coalesce_rows(indices: Any, rows: Any, nrows: int) -> ref.RowSparseGrad:
    """A row-sparse gradient from (possibly repeated) row indices: repeated rows summed (float64),
    sorted — what a coalesced sparse COO gradient of an embedding holds."""
    idx = np.asarray(indices, dtype=np.int64)
    rows = np.asarray(rows, dtype=np.float64).reshape(len(idx), -1)
    uniq, inv = np.unique(idx, return_inverse=True)
    summed = np.zeros((len(uniq), rows.shape[1]))
    np.add.at(summed, inv, rows)
    return ref.RowSparseGrad(summed, uniq, (nrows, rows.shape[1]))


def sgd_steps(weight: Any, grads: Sequence[Any | None], *, lrs: Sequence[float],
              momenta: Sequence[float], wd: float = 0.0, rescale_grad: float = 1.0,
              clip_gradient: float | None = None, use_mom: bool = True,
              ) -> tuple[np.ndarray, np.ndarray | None]:
    """MXNet SGD over steps with per-step lr and momentum (``m = mu*m - lr*r; w = w + m``), storage
    rounding to the weight dtype after each step; a ``None`` gradient skips that step (the weight and
    momentum are unchanged). Returns (weight, mom or None)."""
    dt = np.asarray(weight).dtype
    w = np.array(weight, copy=True)
    m = np.zeros(w.shape, dtype=dt) if use_mom else None
    for g, lr, mu in zip(grads, lrs, momenta):
        if g is None:
            continue
        if m is None:
            w = ref.round_to(ref.sgd_update(w, g, lr=lr, wd=wd, rescale_grad=rescale_grad,
                                            clip_gradient=clip_gradient), dt)
        else:
            w64, m64 = ref.sgd_mom_update(w, g, m, lr=lr, momentum=mu, wd=wd,
                                          rescale_grad=rescale_grad, clip_gradient=clip_gradient)
            w, m = ref.round_to(w64, dt), ref.round_to(m64, dt)
    return w, m


def torch_sgd_steps(weight: Any, grads: Sequence[Any], *, lrs: Sequence[float], momentum: float,
                    wd: float = 0.0) -> np.ndarray:
    """PyTorch's SGD rule in float64 (dampening 0, no nesterov): ``g = g + wd*w``; ``b = g`` at the
    first step, then ``b = mu*b + g``; ``w = w - lr*b``. The learning rate is outside the buffer."""
    w = np.array(weight, dtype=np.float64)
    b = None
    for g, lr in zip(grads, lrs):
        d = np.asarray(g, dtype=np.float64) + wd * w
        if momentum != 0:
            b = d.copy() if b is None else momentum * b + d
            d = b
        w = w - lr * d
    return w


def dcasgd_adaptive_update(weight: Any, grad: Any, mom: Any | None, prev: Any, mean_square: Any,
                           *, lr: float, momentum: float = 0.0, lamda: float = 0.04,
                           wd: float = 0.0, rescale_grad: float = 1.0,
                           clip_gradient: float | None = None, ms_decay: float = 0.95,
                           eps: float = 1e-7) -> tuple[np.ndarray, np.ndarray | None, np.ndarray,
                                                       np.ndarray]:
    """DC-ASGD-a, MXNet form (one previous weight): the mean square is updated first
    (``ms = ms_decay*ms + (1-ms_decay)*r*r``), then ``lam_t = lamda / sqrt(ms + eps)`` replaces
    ``lamda`` in ``d = r + lam_t*r*r*(w - prev)``. Returns ``(w, m or None, prev, ms)`` float64."""
    w = np.array(weight, dtype=np.float64)
    r = ref.preprocess_grad(w, grad, wd=wd, rescale_grad=rescale_grad, clip_gradient=clip_gradient)
    ms = ms_decay * np.asarray(mean_square, dtype=np.float64) + (1 - ms_decay) * r * r
    lam = lamda / np.sqrt(ms + eps)
    d = r + lam * r * r * (w - np.asarray(prev, dtype=np.float64))
    if mom is not None:
        m = momentum * np.asarray(mom, dtype=np.float64) - lr * d
        step = m
    else:
        m, step = None, -lr * d
    return w + step, m, w.copy(), ms
