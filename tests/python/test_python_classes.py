"""Optimizer-class argument checks made where a value is set (not at the next update), the error
for a scheduler get_states cannot save, and the package namespace."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest

from helpers import import_fusedopt

fo = import_fusedopt()


@pytest.mark.parametrize("cls", ["SGD", "DCASGD"])
@pytest.mark.parametrize("value", [0, -5, -math.inf, 0.0])
def test_aggregate_num_below_one_refused(cls, value):
    with pytest.raises(ValueError, match="aggregate_num"):
        getattr(fo, cls)(aggregate_num=value)
    opt = getattr(fo, cls)()
    with pytest.raises(ValueError, match="aggregate_num"):
        opt.aggregate_num = value
    assert opt.aggregate_num == (1 if cls == "SGD" else opt.aggregate_num)


@pytest.mark.parametrize("value", [1, 2, 7.0, math.inf, None])
def test_aggregate_num_valid_values(value):
    opt = fo.SGD(aggregate_num=value)
    assert opt.aggregate_num == (1 if value is None else value)


@pytest.mark.parametrize("cls", ["SGD", "DCASGD"])
@pytest.mark.parametrize("value,exc", [(-1, ValueError), (math.inf, ValueError),
                                       (math.nan, ValueError), ("0.1", TypeError),
                                       (True, TypeError)])
def test_lr_setter_validates(cls, value, exc):
    opt = getattr(fo, cls)(learning_rate=0.1)
    with pytest.raises(exc, match="lr"):
        opt.lr = value
    assert opt.lr == 0.1
    w, g = np.ones(3, np.float32), np.ones(3, np.float32)
    opt.update(0, w, g, opt.create_state(0, w))  # the optimizer still works with its old lr
    assert opt.num_update == 1


def test_lr_setter_accepts_valid_values():
    opt = fo.SGD(learning_rate=0.1)
    opt.lr = 0
    assert opt.lr == 0.0 and opt.learning_rate == 0.0
    opt.lr = np.float32(0.5)
    assert opt.learning_rate == 0.5
    opt.lr = None  # only meaningful with a scheduler; the base class allows it
    assert opt.lr is None


class MySchedule(fo.lr_scheduler.LRScheduler):
    def __call__(self, num_update):
        return 0.1 / (1 + num_update)


def test_custom_scheduler_works_but_save_names_the_class():
    opt = fo.SGD(lr_scheduler=MySchedule(), momentum=0.9)
    u = fo.get_updater(opt)
    w, g = np.ones(3, np.float32), np.ones(3, np.float32)
    u(0, g, w)
    assert u.get_states()  # states alone: fine
    with pytest.raises(TypeError, match=r"MySchedule.*dump_optimizer=False"):
        u.get_states(dump_optimizer=True)


def test_namespace_is_the_public_api():
    public = {n for n in dir(fo) if not n.startswith("_")} | {"__version__"}
    assert set(fo.__all__) <= public
    extra = public - set(fo.__all__)
    # Only fusedopt's own submodules may appear besides __all__ (they are importable modules).
    for name in extra:
        mod = getattr(fo, name)
        assert isinstance(mod, types.ModuleType) and mod.__name__ == f"fusedopt.{name}", name
    for leak in ("os", "annotations", "np", "numpy", "math"):
        assert not hasattr(fo, leak), leak
    assert len(fo.__all__) == len(set(fo.__all__))


def test_optimizer_pickled_before_lr_was_a_property_still_loads():
    import pickle

    opt = fo.SGD(learning_rate=0.3, momentum=0.9)
    state = opt.__getstate__()
    state["lr"] = state.pop("_lr")  # the attribute name older versions pickled
    old = fo.SGD.__new__(fo.SGD)
    old.__setstate__(state)
    assert old.lr == 0.3 and old.learning_rate == 0.3
    assert pickle.loads(pickle.dumps(old)).lr == 0.3
