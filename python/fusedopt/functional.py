"""The update operators with MXNet's names, in place. The only module that calls the native core.

Every function validates all of its arguments before writing anything, never modifies ``grad``, and
returns ``None``. Hyper-parameters are keyword-only; ``clip_gradient=None`` means no clipping.
"""

from __future__ import annotations

from typing import Any, Sequence

from . import _core
from .sparse import RowSparseArray

__all__ = [
    "prepare_update",
    "set_counts",
    "bump_counts",
    "check_dcasgd_args",
    "check_dcasgd_backup_args",
    "check_sgd_args",
    "dcasgd_backup_update",
    "dcasgd_update",
    "mp_dcasgd_backup_update",
    "mp_dcasgd_update",
    "mp_sgd_mom_update",
    "mp_sgd_update",
    "multi_dcasgd_backup_update",
    "multi_dcasgd_update",
    "multi_mp_dcasgd_backup_update",
    "multi_mp_dcasgd_update",
    "multi_mp_sgd_mom_update",
    "multi_mp_sgd_update",
    "multi_sgd_mom_update",
    "multi_sgd_update",
    "multi_sgd_update_states",
    "sgd_mom_update",
    "sgd_update",
]


def sgd_update(
    weight: Any,
    grad: Any,
    *,
    lr: float,
    wd: float = 0.0,
    rescale_grad: float = 1.0,
    clip_gradient: float | None = None,
    lazy_update: bool = True,
) -> None:
    """``w = w - lr * (clip(rescale_grad * grad, clip_gradient) + wd * w)``.

    ``grad`` may be a :class:`RowSparseArray`: with ``lazy_update`` only its rows are updated,
    otherwise every row is (with a zero gradient where no row is stored).
    """
    if isinstance(grad, RowSparseArray):
        _core.sgd_update_rsp(
            weight, grad.data, grad.indices, list(grad.shape), lr=lr, wd=wd,
            rescale_grad=rescale_grad, clip_gradient=clip_gradient, lazy_update=lazy_update,
        )
    else:
        _core.sgd_update(
            weight, grad, lr=lr, wd=wd, rescale_grad=rescale_grad, clip_gradient=clip_gradient,
            lazy_update=lazy_update,
        )


def sgd_mom_update(
    weight: Any,
    grad: Any,
    mom: Any,
    *,
    lr: float,
    momentum: float = 0.0,
    wd: float = 0.0,
    rescale_grad: float = 1.0,
    clip_gradient: float | None = None,
    lazy_update: bool = True,
) -> None:
    """``mom = momentum * mom - lr * r; w = w + mom`` with ``r = clip(rescale_grad * grad) + wd * w``.

    The learning rate lives inside the momentum buffer (MXNet), unlike PyTorch's SGD.
    """
    if isinstance(grad, RowSparseArray):
        _core.sgd_mom_update_rsp(
            weight, grad.data, grad.indices, list(grad.shape), mom, lr=lr, momentum=momentum,
            wd=wd, rescale_grad=rescale_grad, clip_gradient=clip_gradient, lazy_update=lazy_update,
        )
    else:
        _core.sgd_mom_update(
            weight, grad, mom, lr=lr, momentum=momentum, wd=wd, rescale_grad=rescale_grad,
            clip_gradient=clip_gradient, lazy_update=lazy_update,
        )


def _dense_only(op: str, grad: Any) -> None:
    if isinstance(grad, RowSparseArray):
        raise TypeError(f"{op}: grad must be dense; row-sparse gradients are supported by "
                        "sgd_update and sgd_mom_update")


def mp_sgd_update(
    weight: Any,
    grad: Any,
    weight32: Any,
    *,
    lr: float,
    wd: float = 0.0,
    rescale_grad: float = 1.0,
    clip_gradient: float | None = None,
    lazy_update: bool = True,
) -> None:
    """:func:`sgd_update` on the float32 master ``weight32``; then ``weight = cast(weight32)``."""
    _dense_only("mp_sgd_update", grad)
    _core.mp_sgd_update(
        weight, grad, weight32, lr=lr, wd=wd, rescale_grad=rescale_grad,
        clip_gradient=clip_gradient, lazy_update=lazy_update,
    )


def mp_sgd_mom_update(
    weight: Any,
    grad: Any,
    mom: Any,
    weight32: Any,
    *,
    lr: float,
    momentum: float = 0.0,
    wd: float = 0.0,
    rescale_grad: float = 1.0,
    clip_gradient: float | None = None,
    lazy_update: bool = True,
) -> None:
    """:func:`sgd_mom_update` on the float32 master and float32 ``mom``; ``weight = cast(weight32)``."""
    _dense_only("mp_sgd_mom_update", grad)
    _core.mp_sgd_mom_update(
        weight, grad, mom, weight32, lr=lr, momentum=momentum, wd=wd, rescale_grad=rescale_grad,
        clip_gradient=clip_gradient, lazy_update=lazy_update,
    )


def dcasgd_update(
    weight: Any,
    grad: Any,
    mom: Any,
    prev: Any,
    mean_square: Any = None,
    *,
    lr: float,
    momentum: float = 0.0,
    lamda: float = 0.04,
    wd: float = 0.0,
    rescale_grad: float = 1.0,
    clip_gradient: float | None = None,
    ms_decay: float = 0.95,
    eps: float = 1e-7,
) -> None:
    """Delay-compensated SGD step (arXiv 1609.08326), MXNet's form (``prev`` is the weight before the
    last update)::

        r = clip(rescale_grad * grad, clip_gradient) + wd * w
        adaptive (mean_square given): ms = ms_decay * ms + (1 - ms_decay) * r * r   (first)
                                      lam_t = lamda / sqrt(ms + eps)
        constant (mean_square None):  lam_t = lamda
        d = r + lam_t * r * r * (w - prev)
        mom = momentum * mom - lr * d   (or step = -lr * d when mom is None)
        prev = w;  w = w + step

    ``0 <= ms_decay < 1`` and ``eps > 0`` (checked whether or not ``mean_square`` is given).
    """
    _dense_only("dcasgd_update", grad)
    _core.dcasgd_update(
        weight, grad, mom, prev, mean_square, lr=lr, momentum=momentum, lamda=lamda, wd=wd,
        rescale_grad=rescale_grad, clip_gradient=clip_gradient, ms_decay=ms_decay, eps=eps,
    )


def mp_dcasgd_update(
    weight: Any,
    grad: Any,
    mom: Any,
    prev32: Any,
    weight32: Any,
    mean_square: Any = None,
    *,
    lr: float,
    momentum: float = 0.0,
    lamda: float = 0.04,
    wd: float = 0.0,
    rescale_grad: float = 1.0,
    clip_gradient: float | None = None,
    ms_decay: float = 0.95,
    eps: float = 1e-7,
) -> None:
    """:func:`dcasgd_update` on the float32 master (float32 ``prev32``, ``mom`` and ``mean_square``);
    weight = cast(weight32)."""
    _dense_only("mp_dcasgd_update", grad)
    _core.mp_dcasgd_update(
        weight, grad, mom, prev32, weight32, mean_square, lr=lr, momentum=momentum, lamda=lamda,
        wd=wd, rescale_grad=rescale_grad, clip_gradient=clip_gradient, ms_decay=ms_decay, eps=eps,
    )


def dcasgd_backup_update(
    weight: Any,
    grad: Any,
    backup: Any,
    mom: Any = None,
    mean_square: Any = None,
    *,
    lr: float,
    lamda: float,
    momentum: float = 0.0,
    wd: float = 0.0,
    rescale_grad: float = 1.0,
    clip_gradient: float | None = None,
    ms_decay: float = 0.95,
    eps: float = 1e-7,
) -> None:
    """DC-ASGD as in the paper (Zheng et al., ICML 2017): the compensation's anchor is ``backup``, the
    weight the pushing worker last pulled, which is only read (it may be a read-only array)::

        r = clip(rescale_grad * grad, clip_gradient) + wd * w
        adaptive (mean_square given): ms = ms_decay * ms + (1 - ms_decay) * r * r   (first)
                                      lam_t = lamda / sqrt(ms + eps)
        constant (mean_square None):  lam_t = lamda
        d = r + lam_t * r * r * (w - backup)
        mom given: mom = momentum * mom - lr * d;  w = w + mom      mom None: w = w - lr * d

    With ``backup == weight`` the step is exactly :func:`sgd_update` / :func:`sgd_mom_update`'s.
    ``momentum > 0`` needs ``mom``; ``0 <= ms_decay < 1``; ``eps > 0``.
    """
    _dense_only("dcasgd_backup_update", grad)
    _core.dcasgd_backup_update(
        weight, grad, backup, None, mom, mean_square, lr=lr, lamda=lamda, momentum=momentum, wd=wd,
        rescale_grad=rescale_grad, clip_gradient=clip_gradient, ms_decay=ms_decay, eps=eps,
    )


def mp_dcasgd_backup_update(
    weight: Any,
    grad: Any,
    backup: Any,
    weight32: Any,
    mom: Any = None,
    mean_square: Any = None,
    *,
    lr: float,
    lamda: float,
    momentum: float = 0.0,
    wd: float = 0.0,
    rescale_grad: float = 1.0,
    clip_gradient: float | None = None,
    ms_decay: float = 0.95,
    eps: float = 1e-7,
) -> None:
    """:func:`dcasgd_backup_update` of a float16/bfloat16 ``weight`` on its float32 master
    ``weight32`` (float32 ``backup``, ``mom`` and ``mean_square``); then weight = cast(weight32)."""
    _dense_only("mp_dcasgd_backup_update", grad)
    _core.mp_dcasgd_backup_update(
        weight, grad, backup, weight32, mom, mean_square, lr=lr, lamda=lamda, momentum=momentum,
        wd=wd, rescale_grad=rescale_grad, clip_gradient=clip_gradient, ms_decay=ms_decay, eps=eps,
    )


def _dense_only_all(op: str, grads: Sequence[Any]) -> None:
    if RowSparseArray not in map(type, grads):  # the common case, without a Python-level loop
        return
    for k, grad in enumerate(grads):
        if isinstance(grad, RowSparseArray):
            raise TypeError(f"{op}: grads[{k}] must be dense; row-sparse gradients are supported by "
                            "sgd_update and sgd_mom_update")


def multi_dcasgd_update(
    weights: Sequence[Any],
    grads: Sequence[Any],
    moms: Sequence[Any] | None,
    prevs: Sequence[Any],
    mean_squares: Sequence[Any] | None = None,
    *,
    lrs: Sequence[float],
    wds: Sequence[float],
    momentum: float = 0.0,
    lamda: float = 0.04,
    rescale_grad: float = 1.0,
    clip_gradient: float | None = None,
    ms_decay: float = 0.95,
    eps: float = 1e-7,
    grad_scale: Any = None,
    found_inf: Any = None,
) -> None:
    """Aggregated :func:`dcasgd_update` of parallel lists (not an MXNet operator): tensor k uses
    ``lrs[k]`` and ``wds[k]``; ``moms`` is None (no momentum; then ``momentum`` must be 0) or one
    buffer per weight; ``mean_squares`` None (constant lamda) or one per weight (adaptive). One
    validation of the whole call before any write, one parallel region."""
    _dense_only_all("multi_dcasgd_update", grads)
    _core.multi_dcasgd_update(
        weights, grads, moms, prevs, None, mean_squares, lrs=lrs, wds=wds, momentum=momentum,
        lamda=lamda, rescale_grad=rescale_grad, clip_gradient=clip_gradient, ms_decay=ms_decay,
        eps=eps,
        grad_scale=grad_scale, found_inf=found_inf,
    )


def multi_mp_dcasgd_update(
    weights: Sequence[Any],
    grads: Sequence[Any],
    moms: Sequence[Any] | None,
    prevs32: Sequence[Any],
    weights32: Sequence[Any],
    mean_squares: Sequence[Any] | None = None,
    *,
    lrs: Sequence[float],
    wds: Sequence[float],
    momentum: float = 0.0,
    lamda: float = 0.04,
    rescale_grad: float = 1.0,
    clip_gradient: float | None = None,
    ms_decay: float = 0.95,
    eps: float = 1e-7,
    grad_scale: Any = None,
    found_inf: Any = None,
) -> None:
    """Aggregated :func:`mp_dcasgd_update` of parallel lists (float32 ``prevs32``, ``weights32`` and
    ``moms`` / ``mean_squares`` when given)."""
    _dense_only_all("multi_mp_dcasgd_update", grads)
    _core.multi_mp_dcasgd_update(
        weights, grads, moms, prevs32, weights32, mean_squares, lrs=lrs, wds=wds,
        momentum=momentum, lamda=lamda, rescale_grad=rescale_grad, clip_gradient=clip_gradient,
        ms_decay=ms_decay, eps=eps,
        grad_scale=grad_scale, found_inf=found_inf,
    )


def multi_dcasgd_backup_update(
    weights: Sequence[Any],
    grads: Sequence[Any],
    backups: Sequence[Any],
    moms: Sequence[Any] | None = None,
    mean_squares: Sequence[Any] | None = None,
    *,
    lrs: Sequence[float],
    wds: Sequence[float],
    momentum: float = 0.0,
    lamda: float,
    rescale_grad: float = 1.0,
    clip_gradient: float | None = None,
    ms_decay: float = 0.95,
    eps: float = 1e-7,
    grad_scale: Any = None,
    found_inf: Any = None,
) -> None:
    """Aggregated :func:`dcasgd_backup_update` of parallel lists: tensor k uses ``lrs[k]`` and
    ``wds[k]``; ``moms`` and ``mean_squares`` are None or one array per weight. One validation of the
    whole call before any write, one parallel region per weight dtype; bitwise equal to per-tensor
    calls."""
    _dense_only_all("multi_dcasgd_backup_update", grads)
    _core.multi_dcasgd_backup_update(
        weights, grads, backups, None, moms, mean_squares, lrs=lrs, wds=wds, momentum=momentum,
        lamda=lamda, rescale_grad=rescale_grad, clip_gradient=clip_gradient, ms_decay=ms_decay,
        eps=eps,
        grad_scale=grad_scale, found_inf=found_inf,
    )


def multi_mp_dcasgd_backup_update(
    weights: Sequence[Any],
    grads: Sequence[Any],
    backups: Sequence[Any],
    weights32: Sequence[Any],
    moms: Sequence[Any] | None = None,
    mean_squares: Sequence[Any] | None = None,
    *,
    lrs: Sequence[float],
    wds: Sequence[float],
    momentum: float = 0.0,
    lamda: float,
    rescale_grad: float = 1.0,
    clip_gradient: float | None = None,
    ms_decay: float = 0.95,
    eps: float = 1e-7,
    grad_scale: Any = None,
    found_inf: Any = None,
) -> None:
    """Aggregated :func:`mp_dcasgd_backup_update` of parallel lists (float32 ``backups``,
    ``weights32`` and ``moms`` / ``mean_squares`` when given)."""
    _dense_only_all("multi_mp_dcasgd_backup_update", grads)
    _core.multi_mp_dcasgd_backup_update(
        weights, grads, backups, weights32, moms, mean_squares, lrs=lrs, wds=wds,
        momentum=momentum, lamda=lamda, rescale_grad=rescale_grad, clip_gradient=clip_gradient,
        ms_decay=ms_decay, eps=eps,
        grad_scale=grad_scale, found_inf=found_inf,
    )


def multi_sgd_update(
    arrays: Sequence[Any],
    *,
    lrs: Sequence[float],
    wds: Sequence[float],
    rescale_grad: float = 1.0,
    clip_gradient: float | None = None,
    grad_scale: Any = None,
    found_inf: Any = None,
) -> None:
    """Aggregated :func:`sgd_update` of ``arrays = [w0, g0, w1, g1, ...]``; tensor k uses lrs[k], wds[k]."""
    _core.multi_sgd_update(
        arrays, lrs=lrs, wds=wds, rescale_grad=rescale_grad, clip_gradient=clip_gradient,
        grad_scale=grad_scale, found_inf=found_inf,
    )


def multi_sgd_mom_update(
    arrays: Sequence[Any],
    *,
    lrs: Sequence[float],
    wds: Sequence[float],
    momentum: float = 0.0,
    rescale_grad: float = 1.0,
    clip_gradient: float | None = None,
    grad_scale: Any = None,
    found_inf: Any = None,
) -> None:
    """Aggregated :func:`sgd_mom_update` of ``arrays = [w0, g0, m0, w1, g1, m1, ...]``."""
    _core.multi_sgd_mom_update(
        arrays, lrs=lrs, wds=wds, momentum=momentum, rescale_grad=rescale_grad,
        clip_gradient=clip_gradient,
        grad_scale=grad_scale, found_inf=found_inf,
    )


def multi_sgd_update_states(
    weights: Sequence[Any],
    grads: Sequence[Any],
    states: Sequence[Any],
    *,
    lrs: Sequence[float],
    wds: Sequence[float],
    momentum: float = 0.0,
    rescale_grad: float = 1.0,
    clip_gradient: float | None = None,
    grad_scale: Any = None,
    found_inf: Any = None,
) -> bool:
    """:func:`multi_sgd_mom_update` (every state an array) or :func:`multi_sgd_update` (every state
    None) of parallel lists, without building a flat list. Returns False and does nothing when the
    states mix None and arrays. The aggregated path of :class:`fusedopt.SGD`."""
    return _core.multi_sgd_update_states(
        weights, grads, states, lrs=lrs, wds=wds, momentum=momentum, rescale_grad=rescale_grad,
        clip_gradient=clip_gradient,
        grad_scale=grad_scale, found_inf=found_inf,
    )


def multi_mp_sgd_update(
    arrays: Sequence[Any],
    *,
    lrs: Sequence[float],
    wds: Sequence[float],
    rescale_grad: float = 1.0,
    clip_gradient: float | None = None,
    grad_scale: Any = None,
    found_inf: Any = None,
) -> None:
    """Aggregated :func:`mp_sgd_update` of ``arrays = [w0, g0, w32_0, ...]``."""
    _core.multi_mp_sgd_update(
        arrays, lrs=lrs, wds=wds, rescale_grad=rescale_grad, clip_gradient=clip_gradient,
        grad_scale=grad_scale, found_inf=found_inf,
    )


def multi_mp_sgd_mom_update(
    arrays: Sequence[Any],
    *,
    lrs: Sequence[float],
    wds: Sequence[float],
    momentum: float = 0.0,
    rescale_grad: float = 1.0,
    clip_gradient: float | None = None,
    grad_scale: Any = None,
    found_inf: Any = None,
) -> None:
    """Aggregated :func:`mp_sgd_mom_update` of ``arrays = [w0, g0, m0, w32_0, ...]``."""
    _core.multi_mp_sgd_mom_update(
        arrays, lrs=lrs, wds=wds, momentum=momentum, rescale_grad=rescale_grad,
        clip_gradient=clip_gradient,
        grad_scale=grad_scale, found_inf=found_inf,
    )


def check_sgd_args(
    weight: Any,
    grad: Any,
    mom: Any = None,
    weight32: Any = None,
    *,
    lr: float = 0.0,
    momentum: float = 0.0,
    wd: float = 0.0,
    rescale_grad: float = 1.0,
    clip_gradient: float | None = None,
    lazy_update: bool = True,
) -> None:
    """Raises exactly what the matching sgd operator would for these arguments, writing nothing
    (``mom``/``weight32`` None select the plain / non-mp operator)."""
    if isinstance(grad, RowSparseArray):
        if weight32 is not None:
            _dense_only("mp_sgd_update", grad)
        _core.check_sgd_args_rsp(
            weight, grad.data, grad.indices, list(grad.shape), mom, lr=lr, momentum=momentum,
            wd=wd, rescale_grad=rescale_grad, clip_gradient=clip_gradient, lazy_update=lazy_update,
        )
    else:
        _core.check_sgd_args(
            weight, grad, mom, weight32, lr=lr, momentum=momentum, wd=wd,
            rescale_grad=rescale_grad, clip_gradient=clip_gradient,
        )


def check_dcasgd_args(
    weight: Any,
    grad: Any,
    mom: Any,
    prev: Any,
    weight32: Any = None,
    mean_square: Any = None,
    *,
    lr: float = 0.0,
    momentum: float = 0.0,
    lamda: float = 0.04,
    wd: float = 0.0,
    rescale_grad: float = 1.0,
    clip_gradient: float | None = None,
    ms_decay: float = 0.95,
    eps: float = 1e-7,
) -> None:
    """Raises exactly what dcasgd_update (mp_dcasgd_update with weight32) would, writing nothing."""
    _dense_only("mp_dcasgd_update" if weight32 is not None else "dcasgd_update", grad)
    _core.check_dcasgd_args(
        weight, grad, mom, prev, weight32, mean_square, lr=lr, momentum=momentum, lamda=lamda,
        wd=wd, rescale_grad=rescale_grad, clip_gradient=clip_gradient, ms_decay=ms_decay, eps=eps,
    )


def check_dcasgd_backup_args(
    weight: Any,
    grad: Any,
    backup: Any,
    weight32: Any = None,
    mom: Any = None,
    mean_square: Any = None,
    *,
    lr: float = 0.0,
    lamda: float = 0.0,
    momentum: float = 0.0,
    wd: float = 0.0,
    rescale_grad: float = 1.0,
    clip_gradient: float | None = None,
    ms_decay: float = 0.95,
    eps: float = 1e-7,
) -> None:
    """Raises exactly what dcasgd_backup_update (mp_dcasgd_backup_update with weight32) would,
    writing nothing."""
    _dense_only("mp_dcasgd_backup_update" if weight32 is not None else "dcasgd_backup_update", grad)
    _core.check_dcasgd_backup_args(
        weight, grad, backup, weight32, mom, mean_square, lr=lr, lamda=lamda, momentum=momentum,
        wd=wd, rescale_grad=rescale_grad, clip_gradient=clip_gradient, ms_decay=ms_decay, eps=eps,
    )


def prepare_update(
    rule: str,
    weights: Sequence[Any],
    grads: Sequence[Any],
    moms: Sequence[Any] | None,
    prevs: Sequence[Any] | None,
    weights32: Sequence[Any] | None,
    lr_mult: Sequence[float],
    wd_mult: Sequence[float],
    mean_squares: Sequence[Any] | None = None,
) -> Any:
    """A native prepared update (``rule`` 'sgd' or 'dcasgd'; 'dcasgd' with ``mean_squares`` is the
    adaptive lambda) over fixed arrays, validated once; its ``step(lr, wd, momentum, rescale_grad,
    clip_gradient, lamda, ms_decay, eps)`` updates tensor k with ``lr * lr_mult[k]`` and
    ``wd * wd_mult[k]``. Used by :class:`fusedopt.prepared.PreparedStep`."""
    return _core.PreparedUpdate(rule, weights, grads, moms, prevs, weights32, list(lr_mult),
                                list(wd_mult), mean_squares)


def set_counts(counts: dict[Any, int], keys: list[Any], value: int) -> None:
    """``counts[k] = value`` for every k in ``keys`` (one native loop; used by PreparedStep)."""
    _core._set_counts(counts, keys, value)


def bump_counts(counts: dict[Any, int], keys: list[Any], begin: int) -> tuple[int, list[Any]]:
    """``counts[k] = counts.get(k, begin) + 1`` for each key in order; returns the highest new count
    and the previous values (None for new keys). One native loop (Optimizer._update_count)."""
    return _core._bump_counts(counts, keys, begin)
