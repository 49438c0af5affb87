"""DCASGD: delay-compensated asynchronous SGD (Zheng et al., arXiv 1609.08326; MXNet 2.0 ``DCASGD``)."""

from __future__ import annotations

import functools
import operator
from typing import Any

import numpy as np

from . import _arrays
from . import functional as F
from ._validate import check_nonnegative
from .optimizer import (DEFAULT_LEARNING_RATE, Optimizer, _as_call_list, _as_list, _same_lengths,
                        register,
                        resolve_default_lr)
from .prepared import PreparedStep
from .sgd import _acc_dtype, _master_state, _preprocess

__all__ = ["DCASGD"]


@register
class DCASGD(Optimizer):
    """Delay-compensated SGD. The state is ``(mom or None, prev)``, ``prev`` the weight before the
    last update (initially a copy of the weight)::

        r = clip(rescale_grad * grad, clip_gradient) + wd * weight
        d = r + lamda * r * r * (weight - prev)
        momentum:    mom = momentum * mom - lr * d;  step = mom
        no momentum: step = -lr * d
        prev = weight;  weight = weight + step

    The first update equals SGD's (``prev == weight``). ``use_fused_step=True`` selects fusedopt's
    fused kernel (MXNet has none); the default ``False`` runs the vectorised NumPy ``step``.
    With ``multi_precision`` the state is ``(w32, (mom32 or None, prev32))``.
    """

    def __init__(
        self,
        learning_rate: float | None = DEFAULT_LEARNING_RATE,
        momentum: float = 0.0,
        lamda: float = 0.04,
        use_fused_step: bool = False,
        **kwargs: Any,
    ) -> None:
        learning_rate = resolve_default_lr(learning_rate, kwargs.get("lr_scheduler"))
        super().__init__(learning_rate=learning_rate, use_fused_step=use_fused_step, **kwargs)
        self.momentum = momentum
        self.lamda = lamda

    @property
    def momentum(self) -> float:
        return self._momentum

    @momentum.setter
    def momentum(self, value: float) -> None:
        self._momentum = check_nonnegative("momentum", value)

    @property
    def lamda(self) -> float:
        return self._lamda

    @lamda.setter
    def lamda(self, value: float) -> None:
        self._lamda = check_nonnegative("lamda", value)

    def create_state(self, index: Any, weight: Any) -> Any:
        mom = None if self.momentum == 0.0 else _arrays.zeros_like(weight)
        return (mom, _arrays.copy_of(weight))

    def _check(self, weight: Any, grad: Any, state: Any, master: bool, lr: float = 0.0,
               wd: float = 0.0) -> None:
        """Validates one tensor's arguments as its kernel will (nothing written)."""
        kw = {"rescale_grad": self.rescale_grad, "clip_gradient": self.clip_gradient,
              "momentum": self.momentum, "lamda": self.lamda, "lr": lr, "wd": wd}
        if master:
            w32, (mom, prev32) = _master_state(state)
            F.check_dcasgd_args(weight, grad, mom, prev32, w32, **kw)
        else:
            mom, prev = _dcasgd_state(state)
            F.check_dcasgd_args(weight, grad, mom, prev, None, **kw)

    def _call_arrays(self, position: int, weight: Any, grad: Any, state: Any, master: bool
                     ) -> list[tuple[Any, str, int, bool]]:
        w32, inner = _master_state(state) if master else (None, state)
        mom, prev = _dcasgd_state(inner)
        out = [(weight, "weights", position, True), (grad, "grads", position, False),
               (prev, "prevs", position, True)]
        if mom is not None:
            out.append((mom, "moms", position, True))
        if w32 is not None:
            out.append((w32, "weights32", position, True))
        return out

    def step(self, indices: Any, weights: Any, grads: Any, states: Any) -> None:
        """Reference path: vectorised NumPy arithmetic in the compute dtype, one index at a time
        (counted, then rated, as MXNet's loop). The whole call is validated before the first write."""
        for weight, grad, state, lr, wd in self._reference_plan(indices, weights, grads, states):
            mom, prev = state
            acc = _acc_dtype(weight)
            with np.errstate(all="ignore"):  # NaN/Inf propagate by design, as in the kernels
                w, r = _preprocess(weight, grad, acc, wd, self.rescale_grad, self.clip_gradient)
                d = r * r
                d *= w - np.array(prev, dtype=acc).reshape(-1)
                d *= acc(self.lamda)
                d += r
                if mom is not None:
                    m = np.array(mom, dtype=acc).reshape(-1)
                    m *= acc(self.momentum)
                    m -= acc(lr) * d
                    mom[...] = m.reshape(mom.shape)
                    step = m
                else:
                    step = d * -acc(lr)
                prev[...] = weight
                weight[...] = (w + step).reshape(weight.shape)

    def prepare(self, indices: Any, weights: Any, grads: Any, states: Any) -> PreparedStep:
        """A :class:`~fusedopt.prepared.PreparedStep` whose ``step()`` equals
        ``fused_step(indices, weights, grads, states)``, with the arrays converted and validated once."""
        indices, weights = _as_list(indices), _as_list(weights)
        grads, states = _as_list(grads), _as_list(states)
        if not len(indices) == len(weights) == len(grads) == len(states):
            raise ValueError("prepare: indices, weights, grads and states must have the same length")
        lr_mult = self._mults(indices, "lr_mult", self.lr_mult)
        wd_mult = self._mults(indices, "wd_mult", self.wd_mult)
        groups, split = self._split_states(weights, states)
        for (_, has_mom), part in groups.items():
            if not has_mom and self.momentum != 0.0:
                raise ValueError(f"prepare: momentum is {self.momentum} but the state of index "
                                 f"{indices[part[0]]!r} has no momentum buffer")
        cores = []
        for (master, has_mom), part in groups.items():
            cores.append(F.prepare_update(
                "dcasgd", [weights[k] for k in part], [grads[k] for k in part],
                [split[k][0] for k in part] if has_mom else None, [split[k][1] for k in part],
                [split[k][2] for k in part] if master else None,
                [lr_mult[k] for k in part], [wd_mult[k] for k in part],
            ))
        return PreparedStep(self, indices, cores)

    def _split_states(self, weights: list[Any], states: list[Any]
                      ) -> tuple[dict[tuple[bool, bool], list[int]], list[tuple[Any, Any, Any]]]:
        """``(groups, split)``: ``split[k] = (mom or None, prev, weight32 or None)`` of tensor k, and the
        tensor indices grouped by ``(uses a master, has a momentum buffer)`` in order of appearance."""
        groups: dict[tuple[bool, bool], list[int]] = {}
        split = []
        for k, (weight, state) in enumerate(zip(weights, states)):
            master = self._use_master(weight)
            if master:
                w32, inner = _master_state(state)
                mom, prev = _dcasgd_state(inner)
            else:
                w32, (mom, prev) = None, _dcasgd_state(state)
            split.append((mom, prev, w32))
            groups.setdefault((master, mom is not None), []).append(k)
        return groups, split

    def fused_step(self, indices: Any, weights: Any, grads: Any, states: Any) -> None:
        """Fused DCASGD kernels. Counts every index first. One tensor: one kernel call. A list: one
        aggregated call (one parallel region) per kind of tensor (master or not, momentum buffer or
        not), the whole list validated before the first write."""
        indices, weights = _as_call_list(indices), _as_call_list(weights)
        grads, states = _as_call_list(grads), _as_call_list(states)
        _same_lengths("fused_step", indices, weights, grads, states)
        token, lrs, wds = self._count_and_rates(indices)
        kw = {"rescale_grad": self.rescale_grad, "clip_gradient": self.clip_gradient,
              "momentum": self.momentum, "lamda": self.lamda}
        try:
            if len(weights) == 1:
                weight, grad, state = weights[0], grads[0], states[0]
                if self._use_master(weight):
                    master, inner = _master_state(state)
                    mom, prev32 = _dcasgd_state(inner)
                    F.mp_dcasgd_update(weight, grad, mom, prev32, master, lr=lrs[0], wd=wds[0], **kw)
                else:
                    mom, prev = _dcasgd_state(state)
                    F.dcasgd_update(weight, grad, mom, prev, lr=lrs[0], wd=wds[0], **kw)
                return
            if (not self.multi_precision and set(map(type, states)) == {tuple}
                    and set(map(len, states)) == {2}):
                # The usual list: (mom or None, prev) tuples, split by C-level iteration; one call
                # when the momentum buffers are all there or all None.
                moms, prevs = (list(c) for c in zip(*states))
                n_none = sum(map(_IS_NONE, moms))
                if n_none in (0, len(moms)):
                    F.multi_dcasgd_update(weights, grads, None if n_none else moms, prevs, lrs=lrs,
                                          wds=wds, **kw)
                    return
            groups, split = self._split_states(weights, states)
            if len(groups) > 1:  # several launches: the whole call is validated before the first
                self._check_call("fused_step", weights, grads, states, lrs, wds)
        except BaseException:
            self._undo_count(token)
            raise
        first = True
        try:
            for (master, has_mom), part in groups.items():
                ws, gs = [weights[k] for k in part], [grads[k] for k in part]
                moms = [split[k][0] for k in part] if has_mom else None
                prevs = [split[k][1] for k in part]
                rates = {"lrs": [lrs[k] for k in part], "wds": [wds[k] for k in part]}
                if master:
                    F.multi_mp_dcasgd_update(ws, gs, moms, prevs, [split[k][2] for k in part],
                                             **rates, **kw)
                else:
                    F.multi_dcasgd_update(ws, gs, moms, prevs, **rates, **kw)
                first = False
        except BaseException:
            if first:
                self._undo_count(token)
            raise


_IS_NONE = functools.partial(operator.is_, None)


def _dcasgd_state(state: Any) -> tuple[Any, Any]:
    """Splits a DCASGD state ``(mom or None, prev)``."""
    if not isinstance(state, (tuple, list)) or len(state) != 2:
        raise ValueError(
            f"a DCASGD state must be (mom or None, prev) as made by create_state, got "
            f"{type(state).__qualname__}"
        )
    return state[0], state[1]
