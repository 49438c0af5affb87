"""Learning-rate schedulers with MXNet 2.0 ``mxnet.lr_scheduler`` semantics.

The arithmetic lives in C++ (``fusedopt/lr_scheduler.h``), shared with the C++ optimizer objects;
these classes hold a C++ scheduler in ``_impl`` and expose MXNet's attributes. Subclass
:class:`LRScheduler` and override ``__call__`` for a custom schedule (a custom scheduler works
with every optimizer, but ``Updater.get_states(dump_optimizer=True)`` saves only the classes of this
module: save a custom scheduler's state yourself). Schedulers are stateful and assume
``num_update`` never decreases between calls.
"""

from __future__ import annotations

import numbers
from typing import Any, ClassVar, Sequence

from . import _core

__all__ = [
    "CosineScheduler",
    "FactorScheduler",
    "LRScheduler",
    "MultiFactorScheduler",
    "PolyScheduler",
]


def _int_arg(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an int, got {value!r}")
    return int(value)


def _mode_arg(mode: Any) -> str:
    if mode not in ("linear", "constant"):
        raise ValueError("Supports only linear and constant modes of warmup")
    return str(mode)


class _Field:
    """An attribute stored on the C++ scheduler."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        value = getattr(obj._impl, self.name)
        return list(value) if isinstance(value, list) else value

    def __set__(self, obj: Any, value: Any) -> None:
        setattr(obj._impl, self.name, value)


class LRScheduler:
    """Base class: ``base_lr`` and an optional warmup of ``warmup_steps`` updates.

    During warmup (``num_update < warmup_steps``) the rate is ``warmup_begin_lr`` ('constant') or
    rises linearly from ``warmup_begin_lr`` to the ``base_lr`` given at construction ('linear').
    """

    # Constructor arguments and mutable state, saved by Updater.get_states(dump_optimizer=True).
    _init_fields: ClassVar[tuple[str, ...]] = ("base_lr", "warmup_steps", "warmup_begin_lr", "warmup_mode")
    _state_fields: ClassVar[tuple[str, ...]] = ("base_lr", "warmup_final_lr")

    base_lr = _Field()
    warmup_steps = _Field()
    warmup_final_lr = _Field()
    warmup_begin_lr = _Field()
    warmup_mode = _Field()

    def __init__(
        self,
        base_lr: float = 0.01,
        warmup_steps: int = 0,
        warmup_begin_lr: float = 0,
        warmup_mode: str = "linear",
    ) -> None:
        self._impl = _core.LRScheduler(
            base_lr, _int_arg("warmup_steps", warmup_steps), warmup_begin_lr, _mode_arg(warmup_mode)
        )

    def get_warmup_lr(self, num_update: int) -> float:
        return float(self._impl.get_warmup_lr(num_update))

    def __call__(self, num_update: int) -> float:
        raise NotImplementedError("must override this")

    # -------------------------------------------------------------------------- pickling / saving
    def _fields(self) -> dict[str, Any]:
        """Constructor arguments and mutable state, plain data only."""
        names = dict.fromkeys(self._init_fields + self._state_fields)
        return {name: getattr(self, name) for name in names}

    @classmethod
    def _from_fields(cls, fields: dict[str, Any]) -> LRScheduler:
        """Rebuilds a scheduler: the constructor re-validates the arguments, then the state is set."""
        obj = cls(**{k: fields[k] for k in cls._init_fields})
        for name in cls._state_fields:
            setattr(obj, name, fields[name])
        return obj

    # Steps the next call may catch up on after a load: a loaded state must not make it loop longer.
    _MAX_CATCH_UP: ClassVar[int] = 1 << 24

    def _check_loaded(self, num_update: int | None) -> None:
        """Raises ValueError when a state read from a file is not one this scheduler can reach (a
        count that would make the next call loop for ages, an index out of range). ``num_update``:
        the optimizer's, when it was loaded with the scheduler."""

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k != "_impl"}
        state["_fusedopt_fields"] = self._fields()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        fields = state.pop("_fusedopt_fields")
        self.__dict__.update(type(self)._from_fields(fields).__dict__)
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_lr={self.base_lr})"


class FactorScheduler(LRScheduler):
    """Multiplies the rate by ``factor`` every ``step`` updates, never below ``stop_factor_lr``."""

    _init_fields = ("step", "factor", "stop_factor_lr", "base_lr", "warmup_steps",
                    "warmup_begin_lr", "warmup_mode")
    _state_fields = ("base_lr", "warmup_final_lr", "count")

    step = _Field()
    factor = _Field()
    stop_factor_lr = _Field()
    count = _Field()

    def __init__(
        self,
        step: int,
        factor: float = 1,
        stop_factor_lr: float = 1e-8,
        base_lr: float = 0.01,
        warmup_steps: int = 0,
        warmup_begin_lr: float = 0,
        warmup_mode: str = "linear",
    ) -> None:
        if not step >= 1:
            raise ValueError("Schedule step must be greater or equal than 1 round")
        self._impl = _core.FactorScheduler(
            int(step), factor, stop_factor_lr, base_lr, _int_arg("warmup_steps", warmup_steps),
            warmup_begin_lr, _mode_arg(warmup_mode),
        )

    def __call__(self, num_update: int) -> float:
        return float(self._impl(num_update))

    def _check_loaded(self, num_update: int | None) -> None:
        # The next call advances count by step until num_update <= count + step: count only ever
        # holds multiples of step from 0, and lags num_update by a bounded number of steps.
        count, step = self.count, self.step
        if count < 0 or count % step != 0:
            raise ValueError(f"FactorScheduler count {count} is not a multiple >= 0 of step {step}")
        if num_update is not None and (num_update - count) // step > self._MAX_CATCH_UP:
            raise ValueError(f"FactorScheduler count {count} is too far behind num_update "
                             f"{num_update} (step {step})")


class MultiFactorScheduler(LRScheduler):
    """Multiplies the rate by ``factor`` after each update count in the increasing list ``step``."""

    _init_fields = ("step", "factor", "base_lr", "warmup_steps", "warmup_begin_lr", "warmup_mode")
    _state_fields = ("base_lr", "warmup_final_lr", "cur_step_ind", "count")

    step = _Field()
    factor = _Field()
    cur_step_ind = _Field()
    count = _Field()

    def __init__(
        self,
        step: Sequence[int],
        factor: float = 1,
        base_lr: float = 0.01,
        warmup_steps: int = 0,
        warmup_begin_lr: float = 0,
        warmup_mode: str = "linear",
    ) -> None:
        if not isinstance(step, (list, tuple)) or len(step) < 1:
            raise ValueError("step must be a non-empty list of update counts")
        for s in step:
            if not s >= 1:
                raise ValueError("Schedule step must be greater or equal than 1 round")
        self._impl = _core.MultiFactorScheduler(
            [int(s) for s in step], factor, base_lr, _int_arg("warmup_steps", warmup_steps),
            warmup_begin_lr, _mode_arg(warmup_mode),
        )

    def __call__(self, num_update: int) -> float:
        return float(self._impl(num_update))

    def _check_loaded(self, num_update: int | None) -> None:
        if not 0 <= self.cur_step_ind <= len(self.step):
            raise ValueError(f"MultiFactorScheduler cur_step_ind {self.cur_step_ind} is outside "
                             f"0..{len(self.step)}")
        if self.count < 0:
            raise ValueError(f"MultiFactorScheduler count {self.count} is negative")


class PolyScheduler(LRScheduler):
    """``final + (base - final) * (1 - (n - warmup) / (max_update - warmup)) ** pwr`` up to
    ``max_update``, then ``final_lr``."""

    _init_fields = ("max_update", "base_lr", "pwr", "final_lr", "warmup_steps", "warmup_begin_lr",
                    "warmup_mode")
    _state_fields = ("base_lr", "warmup_final_lr", "base_lr_orig")

    power = _Field()
    base_lr_orig = _Field()
    max_update = _Field()
    final_lr = _Field()
    max_steps = _Field()

    @property
    def pwr(self) -> float:
        return float(self.power)

    def __init__(
        self,
        max_update: int,
        base_lr: float = 0.01,
        pwr: float = 2,
        final_lr: float = 0,
        warmup_steps: int = 0,
        warmup_begin_lr: float = 0,
        warmup_mode: str = "linear",
    ) -> None:
        self._impl = _core.PolyScheduler(
            _int_arg("max_update", max_update), base_lr, pwr, final_lr,
            _int_arg("warmup_steps", warmup_steps), warmup_begin_lr, _mode_arg(warmup_mode),
        )

    def __call__(self, num_update: int) -> float:
        return float(self._impl(num_update))


class CosineScheduler(LRScheduler):
    """``final + (base - final) * (1 + cos(pi * (n - warmup) / (max_update - warmup))) / 2`` up to
    ``max_update``, then ``final_lr``."""

    _init_fields = ("max_update", "base_lr", "final_lr", "warmup_steps", "warmup_begin_lr",
                    "warmup_mode")
    _state_fields = ("base_lr", "warmup_final_lr", "base_lr_orig")

    base_lr_orig = _Field()
    max_update = _Field()
    final_lr = _Field()
    max_steps = _Field()

    def __init__(
        self,
        max_update: int,
        base_lr: float = 0.01,
        final_lr: float = 0,
        warmup_steps: int = 0,
        warmup_begin_lr: float = 0,
        warmup_mode: str = "linear",
    ) -> None:
        self._impl = _core.CosineScheduler(
            _int_arg("max_update", max_update), base_lr, final_lr,
            _int_arg("warmup_steps", warmup_steps), warmup_begin_lr, _mode_arg(warmup_mode),
        )

    def __call__(self, num_update: int) -> float:
        return float(self._impl(num_update))
