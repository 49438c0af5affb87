"""SGD with momentum, weight decay, gradient rescaling and clipping (MXNet 2.0 ``mxnet.optimizer.SGD``)."""

from __future__ import annotations

import functools
import itertools
import math
import operator
from typing import Any

import numpy as np

from . import _arrays, _core
from . import functional as F
from ._validate import check_nonnegative
from .optimizer import (DEFAULT_LEARNING_RATE, Optimizer, _as_call_list, _as_list, _same_lengths,
                        register,
                        resolve_default_lr)
from .prepared import PreparedStep
from .sparse import RowSparseArray

__all__ = ["SGD"]


_IS_NONE = functools.partial(operator.is_, None)
_DTYPE_OF = operator.attrgetter("dtype")


def _acc_dtype(weight: Any) -> Any:
    """Compute dtype of the reference path: float64 for float64 weights, float32 otherwise."""
    return np.float64 if weight.dtype == np.float64 else np.float32


def _preprocess(weight: Any, grad: Any, acc: Any, wd: float, rescale_grad: float,
                clip_gradient: float | None) -> tuple[Any, Any]:
    """(w, r) in the compute dtype: r = clip(rescale_grad * g, c) + wd * w. New flat (1-d) arrays, so
    0-d weights stay arrays through NumPy arithmetic; the caller's grad is untouched."""
    if isinstance(grad, RowSparseArray):
        grad = grad.todense()
    w = np.array(weight, dtype=acc).reshape(-1)
    r = np.array(grad, dtype=acc).reshape(-1)
    r *= acc(rescale_grad)
    if clip_gradient is not None and not math.isinf(clip_gradient):
        np.clip(r, -clip_gradient, clip_gradient, out=r)
    r += acc(wd) * w
    return w, r


@register
class SGD(Optimizer):
    """Stochastic gradient descent with MXNet's momentum convention.

    Update rule (``r`` is the preprocessed gradient)::

        r = clip(rescale_grad * grad, clip_gradient) + wd * weight
        momentum:    mom = momentum * mom - lr * r;  weight = weight + mom
        no momentum: weight = weight - lr * r

    The learning rate lives inside the momentum buffer, so changing it mid-training only affects new
    gradients (PyTorch's SGD applies lr outside the buffer instead).

    Parameters
    ----------
    learning_rate : float
        Default 0.1. A scheduler given without ``learning_rate`` keeps its own ``base_lr``.
    momentum : float
        >= 0. The state is None when 0, else a zeros array like the weight.
    lazy_update : bool
        With row-sparse gradients, update only the stored rows (needs ``use_fused_step=True``; not
        with ``multi_precision``).
    multi_precision : bool
        float32 master weight and momentum for float16 / bfloat16 weights.
    use_fused_step : bool
        Fused kernels (default) or the NumPy reference ``step``.
    aggregate_num : int or math.inf
        Tensors per aggregated kernel call in ``fused_step`` (1 = one call per tensor).
    **kwargs
        Base :class:`Optimizer` arguments (``wd``, ``rescale_grad``, ``clip_gradient``, ...).
    """

    def __init__(
        self,
        learning_rate: float | None = DEFAULT_LEARNING_RATE,
        momentum: float = 0.0,
        lazy_update: bool = False,
        multi_precision: bool = False,
        use_fused_step: bool = True,
        aggregate_num: float | None = 1,
        **kwargs: Any,
    ) -> None:
        learning_rate = resolve_default_lr(learning_rate, kwargs.get("lr_scheduler"))
        super().__init__(
            learning_rate=learning_rate,
            multi_precision=multi_precision,
            aggregate_num=aggregate_num,
            use_fused_step=use_fused_step,
            **kwargs,
        )
        if not self.use_fused_step and lazy_update:
            raise ValueError("When use_fused_step is set to False, lazy_update has to be turned off.")
        if lazy_update and multi_precision:
            raise ValueError("When lazy_update is set to True, multi_precision has be turned off.")
        self.lazy_update = bool(lazy_update)
        self.momentum = momentum

    @property
    def momentum(self) -> float:
        return self._momentum

    @momentum.setter
    def momentum(self, value: float) -> None:
        self._momentum = check_nonnegative("momentum", value)

    def create_state(self, index: Any, weight: Any) -> Any:
        if self.momentum == 0.0:
            return None
        return _arrays.zeros_like(weight)

    def _check(self, weight: Any, grad: Any, state: Any, master: bool, lr: float = 0.0,
               wd: float = 0.0) -> None:
        """Validates one tensor's arguments as its kernel will (nothing written)."""
        kw = {"rescale_grad": self.rescale_grad, "clip_gradient": self.clip_gradient,
              "momentum": self.momentum, "lazy_update": self.lazy_update, "lr": lr, "wd": wd}
        if master:
            w32, mom = _master_state(state)
            F.check_sgd_args(weight, grad, mom, w32, **kw)
        else:
            F.check_sgd_args(weight, grad, state, None, **kw)

    def _check_call(self, op: str, weights: Any, grads: Any, states: Any, lrs: Any = None,
                    wds: Any = None, masters: Any = None) -> None:
        """Optimizer._check_call in one native pass when every gradient is dense (the usual case)."""
        if RowSparseArray in map(type, grads):
            return super()._check_call(op, weights, grads, states, lrs, wds, masters)
        n = len(weights)
        if masters is None:
            masters = [self._use_master(w) for w in weights]
        moms, masters32 = [], []
        for state, master in zip(states, masters):
            w32, mom = _master_state(state) if master else (None, state)
            moms.append(mom)
            masters32.append(w32)
        zeros = [0.0] * n
        _core._check_sgd_call(op, list(weights), list(grads), moms, masters32,
                              zeros if lrs is None else list(lrs), zeros if wds is None else list(wds),
                              self._momentum, self._rescale_grad, self._clip_gradient)
        return None

    def _call_arrays(self, position: int, weight: Any, grad: Any, state: Any, master: bool
                     ) -> list[tuple[Any, str, int, bool]]:
        mom, w32 = _master_state(state) if master else (state, None)
        out = [(weight, "weights", position, True)]
        if isinstance(grad, RowSparseArray):
            out.append((grad.data, "grads.data", position, False))
            idx = grad.indices
            if isinstance(idx, np.ndarray) and idx.dtype == np.int64 and idx.flags.c_contiguous:
                # Only the memory range matters here; the array checks take float dtypes.
                out.append((idx.view(np.float64), "grads.indices", position, False))
        else:
            out.append((grad, "grads", position, False))
        if mom is not None:
            out.append((mom, "moms", position, True))
        if w32 is not None:
            out.append((w32, "weights32", position, True))
        return out

    def step(self, indices: Any, weights: Any, grads: Any, states: Any) -> None:
        """Reference path: NumPy arithmetic in the compute dtype, one index at a time (each index
        counted, then its rates read, as MXNet's loop). The whole call (every tensor, the rates of
        every index, overlaps across tensors) is validated before the first write."""
        for weight, grad, state, lr, wd in self._reference_plan(indices, weights, grads, states):
            acc = _acc_dtype(weight)
            with np.errstate(all="ignore"):  # NaN/Inf propagate by design, as in the kernels
                w, r = _preprocess(weight, grad, acc, wd, self.rescale_grad, self.clip_gradient)
                if state is not None:
                    m = np.array(state, dtype=acc).reshape(-1)
                    m *= acc(self.momentum)
                    m -= acc(lr) * r
                    w += m
                    state[...] = m.reshape(state.shape)
                else:
                    w -= acc(lr) * r
                weight[...] = w.reshape(weight.shape)

    def fused_step(self, indices: Any, weights: Any, grads: Any, states: Any) -> None:
        """Fused kernels: counts every index first, then one kernel per tensor, or aggregated calls of
        up to ``aggregate_num`` tensors grouped by dtype and precision mode. A call that needs more
        than one kernel launch is validated as a whole first (every tensor, and overlaps across all
        of them), so a rejected call writes nothing and leaves the counts as they were."""
        if not isinstance(indices, (list, tuple)):
            return self._fused_one(indices, weights, grads, states)
        if len(indices) == 1:
            return self._fused_one(indices[0], weights[0], grads[0], states[0])
        indices, weights = _as_call_list(indices), _as_call_list(weights)
        grads, states = _as_call_list(grads), _as_call_list(states)
        _same_lengths("fused_step", indices, weights, grads, states)
        token, lrs, wds = self._count_and_rates(indices)
        try:
            if (not self.multi_precision and 1 < len(weights) <= self.aggregate_num
                    and len(weights) == len(grads) == len(states)):
                # The usual aggregated step, one native call over the parallel lists (it validates
                # everything before writing). It declines mixed None / array states, and row-sparse
                # gradients are not arrays: both take the general path below.
                try:
                    done = F.multi_sgd_update_states(
                        weights, grads, states, lrs=lrs, wds=wds, momentum=self._momentum,
                        rescale_grad=self._rescale_grad, clip_gradient=self._clip_gradient)
                except TypeError:
                    if RowSparseArray not in map(type, grads):
                        raise
                    done = False
                if done:
                    return
            common = {"rescale_grad": self.rescale_grad, "clip_gradient": self.clip_gradient}
            sparse = RowSparseArray in map(type, grads)
            if self.aggregate_num > 1 and not sparse and len(weights) > 1:
                calls = self._aggregated_calls(weights, grads, states, lrs, wds, common)
            else:
                calls = [self._single_call(*args, common) for args in zip(weights, grads, states, lrs, wds)]
            if len(calls) > 1:  # several launches: the whole call is validated before the first
                self._check_call("fused_step", weights, grads, states, lrs, wds)
        except BaseException:
            self._undo_count(token)
            raise
        if len(calls) == 1:
            try:
                calls[0][0](*calls[0][1], **calls[0][2])
            except BaseException:
                self._undo_count(token)
                raise
            return
        for fn, args, kw in calls:
            fn(*args, **kw)

    def _fused_one(self, index: Any, weight: Any, grad: Any, state: Any) -> None:
        """fused_step of one dense index: the same bookkeeping as the general path, written out so a
        tiny update costs little more than the kernel call (the kernel validates lr / wd / arrays and
        the count is rolled back if it refuses)."""
        counts = self._index_update_count
        old = counts.get(index)
        new = (self.begin_num_update if old is None else old) + 1
        counts[index] = new
        num_update = self.num_update
        if new > num_update:
            self.num_update = new
        try:
            lr = self.lr if self.lr_scheduler is None else self.lr_scheduler(self.num_update)
            wd = self.wd
            if self.param_dict or self.lr_mult or self.wd_mult or self.idx2name:
                lr *= self._mults([index], "lr_mult", self.lr_mult)[0]
                wd *= self._mults([index], "wd_mult", self.wd_mult)[0]
            if self.multi_precision or type(grad) is RowSparseArray:
                fn, args, kw = self._single_call(
                    weight, grad, state, lr, wd,
                    {"rescale_grad": self.rescale_grad, "clip_gradient": self.clip_gradient})
                fn(*args, **kw)
            elif state is None:
                F.sgd_update(weight, grad, lr=lr, wd=wd, rescale_grad=self._rescale_grad,
                             clip_gradient=self._clip_gradient, lazy_update=self.lazy_update)
            else:
                F.sgd_mom_update(weight, grad, state, lr=lr, momentum=self._momentum, wd=wd,
                                 rescale_grad=self._rescale_grad,
                                 clip_gradient=self._clip_gradient, lazy_update=self.lazy_update)
        except BaseException:
            if old is None:
                del counts[index]
            else:
                counts[index] = old
            self.num_update = num_update
            raise

    def prepare(self, indices: Any, weights: Any, grads: Any, states: Any) -> PreparedStep:
        """A :class:`~fusedopt.prepared.PreparedStep` whose ``step()`` equals
        ``fused_step(indices, weights, grads, states)``, with the arrays converted and validated once
        (dense gradients only)."""
        indices, weights = _as_list(indices), _as_list(weights)
        grads, states = _as_list(grads), _as_list(states)
        if not len(indices) == len(weights) == len(grads) == len(states):
            raise ValueError("prepare: indices, weights, grads and states must have the same length")
        if any(isinstance(g, RowSparseArray) for g in grads):
            raise TypeError("prepare: row-sparse gradients are not supported; use update()")
        lr_mult = self._mults(indices, "lr_mult", self.lr_mult)
        wd_mult = self._mults(indices, "wd_mult", self.wd_mult)
        groups: dict[tuple[bool, bool], list[int]] = {}
        for k, (weight, state) in enumerate(zip(weights, states)):
            master = self._use_master(weight)
            has_mom = (_master_state(state)[1] if master else state) is not None
            groups.setdefault((master, has_mom), []).append(k)
        cores = []
        for (master, has_mom), part in groups.items():
            inner = [_master_state(states[k]) if master else (None, states[k]) for k in part]
            cores.append(F.prepare_update(
                "sgd", [weights[k] for k in part], [grads[k] for k in part],
                [st[1] for st in inner] if has_mom else None, None,
                [st[0] for st in inner] if master else None,
                [lr_mult[k] for k in part], [wd_mult[k] for k in part],
            ))
        return PreparedStep(self, indices, cores)

    def _single_call(self, weight: Any, grad: Any, state: Any, lr: float, wd: float,
                     common: dict[str, Any]) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
        if self._use_master(weight):
            master, mom = _master_state(state)
            if mom is not None:
                return (F.mp_sgd_mom_update, (weight, grad, mom, master),
                        dict(common, lr=lr, wd=wd, momentum=self.momentum))
            return (F.mp_sgd_update, (weight, grad, master), dict(common, lr=lr, wd=wd))
        if state is not None:
            return (F.sgd_mom_update, (weight, grad, state),
                    dict(common, lr=lr, wd=wd, momentum=self.momentum, lazy_update=self.lazy_update))
        return (F.sgd_update, (weight, grad), dict(common, lr=lr, wd=wd, lazy_update=self.lazy_update))

    def _aggregated_calls(self, weights: list[Any], grads: list[Any], states: list[Any],
                          lrs: list[float], wds: list[float],
                          common: dict[str, Any]) -> list[tuple[Any, tuple[Any, ...], dict[str, Any]]]:
        calls: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = []
        chunk = len(weights) if math.isinf(self.aggregate_num) else int(self.aggregate_num)
        # Fast path (the usual case): one dtype, momentum buffers for all or none, no masters; the
        # flat argument list is built by C-level iteration.
        if not self.multi_precision and len(set(map(_DTYPE_OF, weights))) == 1:
            n_none = sum(map(_IS_NONE, states))  # not list.count: that compares arrays with ==
            if n_none in (0, len(states)):
                has_mom = n_none == 0
                op = F.multi_sgd_mom_update if has_mom else F.multi_sgd_update
                cols = (weights, grads, states) if has_mom else (weights, grads)
                for start in range(0, len(weights), chunk):
                    end = start + chunk
                    arrays = list(itertools.chain.from_iterable(zip(*(c[start:end] for c in cols))))
                    kw = dict(common, lrs=lrs[start:end], wds=wds[start:end])
                    if has_mom:
                        kw["momentum"] = self.momentum
                    calls.append((op, (arrays,), kw))
                return calls
        groups: dict[tuple[str, bool, bool], list[int]] = {}
        for k, (weight, state) in enumerate(zip(weights, states)):
            master = self._use_master(weight)
            has_mom = (_master_state(state)[1] if master else state) is not None
            groups.setdefault((_arrays.dtype_name(weight), master, has_mom), []).append(k)
        for (_, master, has_mom), members in groups.items():
            for start in range(0, len(members), chunk):
                part = members[start:start + chunk]
                arrays: list[Any] = []
                for k in part:
                    arrays += [weights[k], grads[k]]
                    if master:
                        w32, mom = _master_state(states[k])
                        arrays += [mom, w32] if has_mom else [w32]
                    elif has_mom:
                        arrays.append(states[k])
                kw = dict(common, lrs=[lrs[k] for k in part], wds=[wds[k] for k in part])
                if has_mom:
                    kw["momentum"] = self.momentum
                op = {
                    (False, False): F.multi_sgd_update,
                    (False, True): F.multi_sgd_mom_update,
                    (True, False): F.multi_mp_sgd_update,
                    (True, True): F.multi_mp_sgd_mom_update,
                }[(master, has_mom)]
                calls.append((op, (arrays,), kw))
        return calls


def _master_state(state: Any) -> tuple[Any, Any]:
    """Splits a multi-precision state ``(weight32, inner_state)``."""
    if not isinstance(state, (tuple, list)) or len(state) != 2:
        raise ValueError(
            "a multi_precision state must be (weight32, state) as made by "
            f"create_state_multi_precision, got {type(state).__qualname__}"
        )
    return state[0], state[1]
