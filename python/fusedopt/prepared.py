"""``PreparedStep``: an optimizer update over a fixed set of parameters where only scalars cross into
the native core per step (the many-small-tensors case; see ``SGD.prepare`` / ``DCASGD.prepare``)."""

from __future__ import annotations

from typing import Any, Sequence

from . import functional as F

__all__ = ["PreparedStep"]


class PreparedStep:
    """``step()`` does exactly what ``opt.fused_step(indices, weights, grads, states)`` does.

    Made by ``opt.prepare(indices, weights, grads, states)``, which converts and validates every array
    once and fixes the lr / wd multipliers of each index. The arrays must keep their memory: refill
    the gradients in place between steps (a new gradient object is not seen), and prepare again after
    changing multipliers (``set_lr_mult``, ``param_dict``) or replacing arrays. Hyper-parameters that
    are not per index (learning rate and scheduler, ``wd``, ``momentum``, ``rescale_grad``,
    ``clip_gradient``, ``lamda``, ``ms_decay``, ``eps``) are read from the optimizer at every step.
    """

    def __init__(self, opt: Any, indices: Sequence[Any], cores: list[Any]) -> None:
        self._opt = opt
        self._indices = list(indices)
        self._cores = cores
        # DCASGD: the cores were built for a constant or an adaptive lambda (with mean squares).
        self._adaptive = getattr(opt, "adaptive", False)
        counts = opt._index_update_count
        seen = {counts.get(i, opt.begin_num_update) for i in self._indices}
        # Lock-step counting: when every index has the same count (the usual case: parameters created
        # together and always updated together), one dict update per step replaces a Python loop.
        self._count = seen.pop() if len(seen) == 1 else None
        self._counts = counts

    def __len__(self) -> int:
        return len(self._indices)

    def step(self) -> None:
        opt = self._opt
        if getattr(opt, "adaptive", False) != self._adaptive:
            raise ValueError(f"PreparedStep: the optimizer's adaptive is now {opt.adaptive}, it was "
                             f"{self._adaptive} when this step was prepared; call prepare() again")
        counts = opt._index_update_count
        c = self._count
        begin = opt.begin_num_update
        indices = self._indices
        num_update = opt.num_update
        lockstep = (
            c is not None
            and counts is self._counts
            and counts.get(indices[0], begin) == c
            and counts.get(indices[-1], begin) == c
        )
        token = None
        if lockstep:
            F.set_counts(counts, indices, c + 1)
            if c + 1 > num_update:
                opt.num_update = c + 1
        else:
            token = opt._update_count(indices)
        try:
            lr = opt.learning_rate
            momentum = getattr(opt, "momentum", 0.0)
            lamda = getattr(opt, "lamda", 0.0)
            ms_decay = getattr(opt, "ms_decay", 0.95)
            eps = getattr(opt, "eps", 1e-7)
            wd, rescale, clip = opt.wd, opt.rescale_grad, opt.clip_gradient
            if len(self._cores) > 1:  # several groups: all checked before the first is stepped
                for core in self._cores:
                    core.check(lr, wd, momentum, rescale, clip, lamda, ms_decay, eps)
            for core in self._cores:
                core.step(lr, wd, momentum, rescale, clip, lamda, ms_decay, eps)
        except BaseException:
            if token is None:
                F.set_counts(counts, indices, c)
                opt.num_update = num_update
            else:
                opt._undo_count(token)
            raise
        if lockstep:
            self._count = c + 1
        else:
            self._counts = counts
            seen = {counts[i] for i in indices}
            self._count = seen.pop() if len(seen) == 1 else None
