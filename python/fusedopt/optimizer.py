"""The Optimizer base class: hyper-parameters, per-index lr/wd multipliers, update counting, the
registry and multi-precision state handling, with Apache MXNet 2.0 semantics (see docs/SEMANTICS.md §2)."""

from __future__ import annotations

import contextlib
import contextvars
import math
import numbers
import warnings
from typing import Any, Callable, ClassVar, Sequence, TypeVar

import numpy as np

from . import _arrays, _core
from . import functional as F
from ._validate import check_clip, check_finite, check_nonnegative

__all__ = ["Optimizer", "create", "register"]

_FP16_WARNING = (
    "Accumulating with float16 in optimizer can lead to poor accuracy or slow convergence. "
    "Consider using multi_precision=True option of the optimizer"
)

T = TypeVar("T", bound=type)

# Set by Updater around a call that stands for one update per index in turn (MXNet's non-aggregated
# Updater): each index's count is taken, then its rates read, before the next index is counted.
_PER_INDEX_COUNTS: contextvars.ContextVar[bool] = contextvars.ContextVar("per_index_counts",
                                                                          default=False)


@contextlib.contextmanager
def per_index_counts() -> Any:
    """Within the block, list updates count and rate their indices one after another (as separate
    per-index calls would), while still being validated and written as one call."""
    reset = _PER_INDEX_COUNTS.set(True)
    try:
        yield
    finally:
        _PER_INDEX_COUNTS.reset(reset)


class _DefaultLearningRate(float):
    """The float 0.1 shown as SGD's / DCASGD's default learning rate, recognisable by identity, so a
    scheduler passed without an explicit learning_rate keeps its own base_lr (docs/SEMANTICS.md §2)."""

    def __repr__(self) -> str:
        return "0.1"


DEFAULT_LEARNING_RATE = _DefaultLearningRate(0.1)


def resolve_default_lr(learning_rate: float | None, lr_scheduler: Any) -> float | None:
    if learning_rate is DEFAULT_LEARNING_RATE:
        return None if lr_scheduler is not None else 0.1
    return learning_rate


def _as_list(x: Any) -> list[Any]:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _same_lengths(op: str, indices: list[Any], weights: list[Any], grads: list[Any],
                  states: list[Any]) -> None:
    if not len(indices) == len(weights) == len(grads) == len(states):
        raise ValueError(f"{op}: indices, weights, grads and states must have the same length, got "
                         f"{len(indices)}, {len(weights)}, {len(grads)} and {len(states)}")


def _call_lists(indices: Any, weights: Any, grads: Any, states: Any
                ) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
    """The four arguments of an update as lists: one index (not a list or tuple) means one item of
    each (a state may itself be a tuple); lists must have the same length."""
    if not isinstance(indices, (list, tuple)):
        return [indices], [weights], [grads], [states]
    out = (_as_list(indices), _as_list(weights), _as_list(grads), _as_list(states))
    _same_lengths("update", *out)
    return out


def _as_call_list(x: Any) -> list[Any]:
    """_as_list for use within one call: a list is returned as is (not copied), since nothing keeps
    it past the call."""
    return x if type(x) is list else _as_list(x)


class Optimizer:
    """Base class of fusedopt optimizers (MXNet 2.0 ``mxnet.optimizer.Optimizer``).

    Parameters
    ----------
    rescale_grad : float
        Multiplies every gradient before clipping (finite).
    param_idx2name : dict, optional
        Index -> parameter name, used by name-keyed ``lr_mult`` / ``wd_mult`` entries.
    wd : float
        Weight decay (>= 0), added to the rescaled, clipped gradient as ``wd * w``.
    clip_gradient : float, optional
        Clip the rescaled gradient to ``[-clip_gradient, clip_gradient]``; None = off; must be > 0.
    learning_rate : float, optional
        Defaults to 0.01 when neither a learning rate nor a scheduler is given.
    lr_scheduler : LRScheduler, optional
        Makes ``learning_rate`` = ``lr_scheduler(num_update)``.
    begin_num_update : int
        The count every index starts from; the first update of an index uses count + 1.
    multi_precision : bool
        Keep float32 master weights for float16 / bfloat16 weights.
    param_dict : dict, optional
        Index -> object with ``lr_mult`` / ``wd_mult`` attributes (first in precedence; not pickled).
    aggregate_num : int or inf, optional
        Up to this many tensors per fused kernel call (None -> 1; ``math.inf`` = all).
    use_fused_step : bool, optional
        ``update`` calls ``fused_step`` (kernels) when True, ``step`` (reference path) otherwise.
    """

    opt_registry: ClassVar[dict[str, type[Optimizer]]] = {}

    def __init__(
        self,
        rescale_grad: float = 1.0,
        param_idx2name: dict[Any, str] | None = None,
        wd: float = 0.0,
        clip_gradient: float | None = None,
        learning_rate: float | None = None,
        lr_scheduler: Any = None,
        begin_num_update: int = 0,
        multi_precision: bool = False,
        param_dict: dict[Any, Any] | None = None,
        aggregate_num: float | None = None,
        use_fused_step: bool | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs:
            name = next(iter(kwargs))
            raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument '{name}'")
        self.rescale_grad = rescale_grad
        self.lr_scheduler = lr_scheduler
        if lr_scheduler is None and learning_rate is None:
            learning_rate = 0.01
        if learning_rate is not None:
            check_nonnegative("learning_rate", learning_rate)
        self.lr = learning_rate
        if lr_scheduler is not None and learning_rate is not None:
            if lr_scheduler.base_lr != learning_rate:
                warnings.warn(
                    "learning rate from ``lr_scheduler`` has been overwritten by "
                    "``learning_rate`` in optimizer.",
                    UserWarning,
                    stacklevel=2,
                )
                lr_scheduler.base_lr = learning_rate
        self.wd = wd
        self.lr_mult: dict[Any, float] = {}
        self.wd_mult: dict[Any, float] = {}
        if isinstance(begin_num_update, bool) or not isinstance(begin_num_update, numbers.Integral):
            raise TypeError(f"begin_num_update must be an int, got {begin_num_update!r}")
        self.begin_num_update = int(begin_num_update)
        self.num_update = int(begin_num_update)
        self._all_index_update_counts: dict[int, dict[Any, int]] = {0: {}}
        self._index_update_count = self._all_index_update_counts[0]
        self.clip_gradient = clip_gradient
        self.multi_precision = bool(multi_precision)
        self.aggregate_num = aggregate_num  # type: ignore[assignment]
        if param_idx2name is None:
            param_idx2name = {}
        if not isinstance(param_idx2name, dict):
            raise TypeError("param_idx2name should be a dict of param indexes to names.")
        self.idx2name = param_idx2name.copy()
        self.param_dict = param_dict if param_dict else {}
        self.use_fused_step = bool(use_fused_step) if use_fused_step is not None else False
        self._warned_low_precision = False

    # ----------------------------------------------------------------------------- hyper-parameters
    @property
    def rescale_grad(self) -> float:
        return self._rescale_grad

    @rescale_grad.setter
    def rescale_grad(self, value: float) -> None:
        self._rescale_grad = check_finite("rescale_grad", value)

    @property
    def wd(self) -> float:
        return self._wd

    @wd.setter
    def wd(self, value: float) -> None:
        self._wd = check_nonnegative("wd", value)

    @property
    def clip_gradient(self) -> float | None:
        return self._clip_gradient

    @clip_gradient.setter
    def clip_gradient(self, value: float | None) -> None:
        self._clip_gradient = check_clip(value)

    @property
    def aggregate_num(self) -> float:
        return self._aggregate_num

    @aggregate_num.setter
    def aggregate_num(self, value: float | None) -> None:
        if value is None:
            self._aggregate_num: float = 1
            return
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"aggregate_num must be an int, math.inf or None, got {value!r}")
        if math.isinf(value) and value > 0:
            self._aggregate_num = math.inf
        elif math.isfinite(value) and float(value).is_integer() and value >= 1:
            self._aggregate_num = int(value)
        else:
            raise ValueError(f"Invalid aggregate_num value: {value!r} (expected an int >= 1 or "
                             "math.inf)")

    @property
    def lr(self) -> float | None:
        """The learning rate without a scheduler (None when only the scheduler sets it)."""
        return self._lr

    @lr.setter
    def lr(self, value: float | None) -> None:
        self._lr = None if value is None else check_nonnegative("lr", value)

    @property
    def learning_rate(self) -> float:
        """``lr_scheduler(num_update)`` when a scheduler is set, else ``lr``."""
        if self.lr_scheduler is not None:
            return float(self.lr_scheduler(self.num_update))
        return float(self.lr)

    def set_learning_rate(self, lr: float) -> None:
        """Sets the learning rate; raises ``UserWarning`` (as MXNet) when a scheduler is in use."""
        if self.lr_scheduler is not None:
            raise UserWarning(
                "LRScheduler of the optimizer has already been defined. Note that "
                "set_learning_rate can mutate the value of the learning rate of the optimizer "
                "only when the LRScheduler of the optimizer is undefined."
            )
        self.lr = check_nonnegative("learning_rate", lr)

    def set_lr_mult(self, args_lr_mult: dict[Any, float]) -> None:
        """Replaces the lr multipliers (keys: indices or parameter names)."""
        self.lr_mult = dict(args_lr_mult)

    def set_wd_mult(self, args_wd_mult: dict[Any, float]) -> None:
        """Replaces the wd multipliers (keys: indices or parameter names). No name-based rule."""
        self.wd_mult = dict(args_wd_mult)

    # ------------------------------------------------------------------------------------ counting
    def _set_current_context(self, device_id: int) -> None:
        if device_id not in self._all_index_update_counts:
            self._all_index_update_counts[device_id] = {}
        self._index_update_count = self._all_index_update_counts[device_id]

    def _update_count(self, index: Any) -> tuple[int, dict[Any, int], list[Any], list[Any]]:
        """Counts one update of each index (first seen: starts at begin_num_update). Returns a token
        for :meth:`_undo_count`, so a call rejected by validation leaves the counts as they were."""
        keys = index if type(index) is list else _as_list(index)
        counts = self._index_update_count
        num_update = self.num_update
        highest, old = F.bump_counts(counts, keys, self.begin_num_update)
        if keys and highest > num_update:
            self.num_update = highest
        return (num_update, counts, keys, old)

    def _undo_count(self, token: Any) -> None:
        if type(token) is list:  # per-index tokens of _count_and_rates: undone newest first
            for t in reversed(token):
                self._undo_count(t)
            return
        num_update, counts, keys, old = token
        for idx, prev in reversed(list(zip(keys, old))):
            if prev is None:
                counts.pop(idx, None)
            else:
                counts[idx] = prev
        self.num_update = num_update

    def _mults(self, indices: Sequence[Any], attr: str, table: dict[Any, float]) -> list[float]:
        """Per-index multipliers: param_dict[index].<attr>, else table[index], else
        table[idx2name[index]], else 1 (first match wins)."""
        out = [1.0] * len(indices)
        if not (self.param_dict or table or self.idx2name):
            return out
        for i, index in enumerate(indices):
            if index in self.param_dict:
                out[i] = getattr(self.param_dict[index], attr)
            elif index in table:
                out[i] = table[index]
            elif index in self.idx2name:
                out[i] = table.get(self.idx2name[index], 1.0)
        return out

    def _get_lrs(self, indices: Sequence[Any]) -> list[float]:
        lr = self.learning_rate
        if not (self.param_dict or self.lr_mult or self.idx2name):
            return [lr] * len(indices)
        return [lr * m for m in self._mults(indices, "lr_mult", self.lr_mult)]

    def _get_wds(self, indices: Sequence[Any]) -> list[float]:
        wd = self.wd
        if not (self.param_dict or self.wd_mult or self.idx2name):
            return [wd] * len(indices)
        return [wd * m for m in self._mults(indices, "wd_mult", self.wd_mult)]

    def _get_wd(self, index: Any) -> float:
        return self._get_wds([index])[0]

    def _checked_rates(self, indices: Sequence[Any]) -> tuple[list[float], list[float]]:
        """lrs and wds of the indices, each checked to be finite and >= 0 (a scheduler or multiplier
        can produce anything)."""
        if not (self.param_dict or self.lr_mult or self.wd_mult or self.idx2name):
            # No multipliers: every index has the same rates; check them once.
            lr, wd = check_nonnegative("lr", self.learning_rate), check_nonnegative("wd", self.wd)
            return [lr] * len(indices), [wd] * len(indices)
        lrs, wds = self._get_lrs(indices), self._get_wds(indices)
        if not (all(map(math.isfinite, lrs)) and all(map(math.isfinite, wds))
                and min(lrs, default=0.0) >= 0 and min(wds, default=0.0) >= 0):
            for lr in lrs:
                check_nonnegative("lr", lr)
            for wd in wds:
                check_nonnegative("wd", wd)
        return lrs, wds

    def _get_lr(self, index: Any) -> float:
        return self._get_lrs([index])[0]

    def _count_and_rates(self, indices: list[Any], per_index: bool = False
                         ) -> tuple[Any, list[float], list[float]]:
        """Counts one update of every index and returns ``(token, lrs, wds)``, the rates checked.
        ``per_index`` (or an Updater's per_index_counts block): each index is counted, then its rates
        read, before the next (the counts and scheduler values that one call per index would see).
        When a rate is refused the counts are restored before raising; otherwise the caller passes
        the token to :meth:`_undo_count` if its own validation refuses the call."""
        # Without a scheduler the rates do not depend on the counts: counting the list at once gives
        # the same counts and rates as counting index after index.
        if (not (per_index or _PER_INDEX_COUNTS.get()) or len(indices) <= 1
                or self.lr_scheduler is None):
            token = self._update_count(indices)
            try:
                lrs, wds = self._checked_rates(indices)
            except BaseException:
                self._undo_count(token)
                raise
            return token, lrs, wds
        tokens: list[Any] = []
        lrs, wds = [], []
        try:
            for index in indices:
                tokens.append(self._update_count([index]))
                (lr,), (wd,) = self._checked_rates([index])
                lrs.append(lr)
                wds.append(wd)
        except BaseException:
            self._undo_count(tokens)
            raise
        return tokens, lrs, wds

    # ---------------------------------------------------------------------- whole-call validation
    def _check(self, weight: Any, grad: Any, state: Any, master: bool, lr: float = 0.0,
               wd: float = 0.0) -> None:
        """Validates one tensor's arguments as its kernel will, writing nothing (subclasses)."""

    def _call_arrays(self, position: int, weight: Any, grad: Any, state: Any, master: bool
                     ) -> list[tuple[Any, str, int, bool]]:
        """``(array, name, position, written)`` of every array one tensor's update reads or writes
        (subclasses; used for the overlap check across a whole call)."""
        return []

    def _check_call(self, op: str, weights: Sequence[Any], grads: Sequence[Any],
                    states: Sequence[Any], lrs: Sequence[float] | None = None,
                    wds: Sequence[float] | None = None, masters: Sequence[bool] | None = None
                    ) -> None:
        """The validation of a whole call that several kernel launches (or reference updates)
        carry out: every tensor checked as its kernel will check it, then every array of every
        tensor checked together for overlaps (a written array sharing memory with any other) and
        for one device. Writes nothing; a call that passes is written completely."""
        n = len(weights)
        if masters is None:
            masters = [self._use_master(w) for w in weights]
        entries: list[tuple[Any, str, int, bool]] = []
        for k in range(n):
            self._check(weights[k], grads[k], states[k], masters[k],
                        0.0 if lrs is None else lrs[k], 0.0 if wds is None else wds[k])
            entries += self._call_arrays(k, weights[k], grads[k], states[k], masters[k])
        if len(entries) > 1:
            _core._check_call_arrays(op, entries)

    # -------------------------------------------------------------------------------------- states
    def create_state(self, index: Any, weight: Any) -> Any:
        """The optimizer state of one weight (None when there is none)."""
        return None

    def _use_master(self, weight: Any) -> bool:
        return self.multi_precision and _arrays.is_low_precision(weight)

    def create_state_multi_precision(self, index: Any, weight: Any) -> Any:
        """``(w32, create_state(index, w32))`` for float16/bfloat16 weights with multi_precision;
        otherwise ``create_state(index, weight)`` (with a warning for low-precision weights)."""
        if self._use_master(weight):
            master = _arrays.astype_float32(weight)
            return (master, self.create_state(index, master))
        if _arrays.is_low_precision(weight):
            warnings.warn(_FP16_WARNING, UserWarning, stacklevel=2)
        return self.create_state(index, weight)

    def _reference_plan(self, indices: Any, weights: Any, grads: Any, states: Any
                        ) -> list[tuple[Any, Any, Any, float, float]]:
        """The plan of a reference ``step``: ``(weight, grad, state, lr, wd)`` per index, arrays as
        NumPy views (torch CPU tensors included), each index counted then rated in turn (MXNet's
        loop), the whole call validated. Nothing is written; a refused call restores the counts."""
        indices, weights, grads, states = _call_lists(indices, weights, grads, states)
        views = [_arrays.numpy_view(item) for item in zip(weights, grads, states)]
        token, lrs, wds = self._count_and_rates(indices, per_index=True)
        try:
            self._check_call("step", [v[0] for v in views], [v[1] for v in views],
                             [v[2] for v in views], lrs, wds, [False] * len(views))
        except BaseException:
            self._undo_count(token)
            raise
        return [(w, g, st, lr, wd) for (w, g, st), lr, wd in zip(views, lrs, wds)]

    # ------------------------------------------------------------------------------------- updates
    def step(self, indices: Any, weights: Any, grads: Any, states: Any) -> None:
        """Reference (unfused) update of lists of weights; subclasses implement it."""
        raise NotImplementedError

    def fused_step(self, indices: Any, weights: Any, grads: Any, states: Any) -> None:
        """Fused-kernel update of lists of weights; subclasses implement it."""
        raise NotImplementedError

    def update(self, indices: Any, weights: Any, grads: Any, states: Any) -> None:
        """``fused_step`` when ``use_fused_step`` else ``step``. Lists, or one item each."""
        if self.use_fused_step:
            self.fused_step(indices, weights, grads, states)
        else:
            self.step(indices, weights, grads, states)

    def update_multi_precision(self, indices: Any, weights: Any, grads: Any, states: Any) -> None:
        """As :meth:`update`; float16/bfloat16 weights with multi_precision are updated through their
        float32 master (state ``(w32, state)``), then written as ``cast(w32)``."""
        if not isinstance(indices, (list, tuple)):
            indices, weights, grads, states = [indices], [weights], [grads], [states]
        if not self.multi_precision or self.use_fused_step:
            self.update(indices, weights, grads, states)
            return
        # The reference path writes the float32 masters, then the weights: the whole call (weights
        # included) is validated first, so a refused call writes neither.
        self._check_call("update_multi_precision", weights, grads, states)
        masters, inner, grads32 = [], [], []
        for weight, grad, state in zip(weights, grads, states):
            if self._use_master(weight):
                masters.append(state[0])
                inner.append(state[1])
                grads32.append(_arrays.astype_float32(grad))
            else:
                masters.append(weight)
                inner.append(state)
                grads32.append(grad)
        self.update(indices, masters, grads32, inner)
        for master, weight in zip(masters, weights):
            if master is not weight:
                _arrays.copy_into(weight, master)

    # ------------------------------------------------------------------------------------ registry
    @staticmethod
    def register(klass: T) -> T:
        """Registers an optimizer class under ``klass.__name__.lower()`` (decorator)."""
        if not isinstance(klass, type):
            raise TypeError(f"register expects a class, got {klass!r}")
        name = klass.__name__.lower()
        if name in Optimizer.opt_registry:
            old = Optimizer.opt_registry[name]
            warnings.warn(
                f"WARNING: New optimizer {klass.__module__}.{klass.__name__} is overriding "
                f"existing optimizer {old.__module__}.{old.__name__}",
                UserWarning,
                stacklevel=2,
            )
        Optimizer.opt_registry[name] = klass  # type: ignore[assignment]
        return klass

    @staticmethod
    def create_optimizer(name: str, **kwargs: Any) -> Optimizer:
        """Instantiates the optimizer registered as ``name`` (case-insensitive)."""
        key = name.lower()
        if key not in Optimizer.opt_registry:
            raise ValueError(f"Cannot find optimizer {name}")
        return Optimizer.opt_registry[key](**kwargs)

    # ------------------------------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("param_dict", None)  # set again by whoever owns the parameters (as MXNet)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "lr" in state:  # pickled before lr became a validated property
            state = dict(state)
            state["_lr"] = state.pop("lr")
        self.__dict__.update(state)
        self.param_dict = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(learning_rate={self.learning_rate}, wd={self.wd})"


register: Callable[[T], T] = Optimizer.register
create = Optimizer.create_optimizer
