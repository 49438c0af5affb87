"""The Python optimizers and the C++ ``fusedopt::SGD`` / ``fusedopt::DCASGD`` objects agree bit for bit.

Both share the kernels and the schedulers; the bookkeeping (counting order, multipliers, scheduler
overwrite, master weights, aggregation) is implemented on each side, so this test runs identical
training sequences through both and compares weights and states exactly.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from helpers import import_fusedopt

fusedopt = import_fusedopt()
_core = fusedopt._core

SHAPES = [(7,), (3, 5), (1,), (0,), (33,)]


def _schedulers():
    return [
        None,
        lambda: fusedopt.lr_scheduler.FactorScheduler(step=2, factor=0.5, base_lr=0.3),
        lambda: fusedopt.lr_scheduler.MultiFactorScheduler(step=[2, 5], factor=0.1, base_lr=0.2,
                                                            warmup_steps=1),
        lambda: fusedopt.lr_scheduler.PolyScheduler(max_update=8, base_lr=0.2, pwr=2, final_lr=0.01,
                                                    warmup_steps=2, warmup_mode="constant",
                                                    warmup_begin_lr=0.05),
        lambda: fusedopt.lr_scheduler.CosineScheduler(max_update=8, base_lr=0.2, final_lr=0.01),
    ]


def _run(py_opt, cpp_opt, dtype, steps, rng, mults, multi_precision):
    n = len(SHAPES)
    w0 = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    w_py = [w.copy() for w in w0]
    w_cpp = [w.copy() for w in w0]
    indices = list(range(n))
    if mults:
        py_opt.set_lr_mult({1: 0.5, 3: 2.0})
        py_opt.set_wd_mult({2: 0.0, 4: 3.0})
        cpp_opt.set_lr_mult({1: 0.5, 3: 2.0})
        cpp_opt.set_wd_mult({2: 0.0, 4: 3.0})
    updater = fusedopt.get_updater(py_opt)
    for step in range(steps):
        grads = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
        # Alternate between a whole-list update and a partial one, so counts diverge per index.
        sel = indices if step % 3 != 2 else [0, 2, 4]
        updater(sel, [grads[i] for i in sel], [w_py[i] for i in sel])
        cpp_opt.update(sel, [w_cpp[i] for i in sel], [grads[i] for i in sel])
        assert py_opt.num_update == cpp_opt.num_update
        assert py_opt.learning_rate == cpp_opt.learning_rate
        for i in indices:
            np.testing.assert_array_equal(w_py[i], w_cpp[i], err_msg=f"step {step} index {i}")
    return updater, w_py


@pytest.mark.parametrize("sched", range(5), ids=["none", "factor", "multifactor", "poly", "cosine"])
@pytest.mark.parametrize(("momentum", "aggregate_num", "mults"),
                         list(itertools.product([0.0, 0.9], [1, 3, 0], [False, True])))
def test_sgd_python_and_cpp_agree(sched, momentum, aggregate_num, mults):
    rng = np.random.default_rng(7)
    make = _schedulers()[sched]
    kw = dict(momentum=momentum, wd=0.01, rescale_grad=0.5, clip_gradient=1.5, begin_num_update=3)
    py_opt = fusedopt.SGD(aggregate_num=np.inf if aggregate_num == 0 else aggregate_num,
                          lr_scheduler=make() if make else None, **kw)
    cpp_opt = _core.cpp_SGD(aggregate_num=aggregate_num, lr_scheduler=make()._impl if make else None,
                            learning_rate=None if make else 0.1, **kw)
    updater, _ = _run(py_opt, cpp_opt, np.float32, 9, rng, mults, False)
    for i, state in updater.states.items():
        if state is not None:
            np.testing.assert_array_equal(state, cpp_opt.state(i, "mom"))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("sched", [0, 1, 4], ids=["none", "factor", "cosine"])
def test_dcasgd_python_and_cpp_agree(dtype, momentum, sched):
    rng = np.random.default_rng(11)
    make = _schedulers()[sched]
    kw = dict(momentum=momentum, lamda=0.5, wd=0.02, clip_gradient=2.0)
    py_opt = fusedopt.DCASGD(use_fused_step=True, lr_scheduler=make() if make else None, **kw)
    cpp_opt = _core.cpp_DCASGD(lr_scheduler=make()._impl if make else None,
                               learning_rate=None if make else 0.1, **kw)
    updater, _ = _run(py_opt, cpp_opt, dtype, 7, rng, True, False)
    for i, (mom, prev) in updater.states.items():
        np.testing.assert_array_equal(prev, cpp_opt.state(i, "prev"))
        if mom is not None:
            np.testing.assert_array_equal(mom, cpp_opt.state(i, "mom"))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_adaptive_dcasgd_python_and_cpp_agree(dtype, momentum):
    rng = np.random.default_rng(13)
    kw = dict(momentum=momentum, lamda=2.0, wd=0.02, clip_gradient=2.0, adaptive=True,
              ms_decay=0.9, eps=1e-6)
    py_opt = fusedopt.DCASGD(learning_rate=0.05, **kw)
    cpp_opt = _core.cpp_DCASGD(learning_rate=0.05, **kw)
    updater, _ = _run(py_opt, cpp_opt, dtype, 7, rng, True, False)
    for i, (mom, prev, ms) in updater.states.items():
        np.testing.assert_array_equal(prev, cpp_opt.state(i, "prev"))
        np.testing.assert_array_equal(ms, cpp_opt.state(i, "mean_square"))
        assert np.all(ms > 0)
        if mom is not None:
            np.testing.assert_array_equal(mom, cpp_opt.state(i, "mom"))


def test_adaptive_dcasgd_constructor_errors_agree():
    for kw, match in (({"ms_decay": 1.0}, "ms_decay"), ({"ms_decay": -0.5}, "ms_decay"),
                      ({"eps": 0.0}, "eps"), ({"eps": float("inf")}, "eps")):
        with pytest.raises(ValueError, match=match):
            fusedopt.DCASGD(adaptive=True, **kw)
        with pytest.raises(ValueError, match=match):
            _core.cpp_DCASGD(adaptive=True, **kw)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_multi_precision_float16_agrees(momentum):
    rng = np.random.default_rng(3)
    py_opt = fusedopt.SGD(learning_rate=0.05, momentum=momentum, multi_precision=True, aggregate_num=2)
    cpp_opt = _core.cpp_SGD(learning_rate=0.05, momentum=momentum, multi_precision=True, aggregate_num=2)
    updater, w_py = _run(py_opt, cpp_opt, np.float16, 6, rng, False, True)
    for i, (w32, mom) in updater.states.items():
        np.testing.assert_array_equal(w32, cpp_opt.state(i, "weight32"))


def test_explicit_learning_rate_overwrites_scheduler_in_both():
    py_sched = fusedopt.lr_scheduler.FactorScheduler(step=1, base_lr=1.0)
    cpp_sched = fusedopt.lr_scheduler.FactorScheduler(step=1, base_lr=1.0)
    with pytest.warns(UserWarning, match="overwritten"):
        fusedopt.SGD(learning_rate=0.25, lr_scheduler=py_sched)
    _core.cpp_SGD(learning_rate=0.25, lr_scheduler=cpp_sched._impl)
    assert py_sched.base_lr == cpp_sched.base_lr == 0.25


@pytest.mark.parametrize(("kw", "match"), [
    ({"momentum": -0.1}, "momentum"), ({"wd": float("nan")}, "wd"), ({"clip_gradient": 0.0}, "clip_gradient"),
    ({"rescale_grad": float("inf")}, "rescale_grad"), ({"learning_rate": -1.0}, "learning_rate"),
])
def test_same_constructor_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        fusedopt.SGD(**kw)
    with pytest.raises(ValueError, match=match):
        _core.cpp_SGD(**kw)


def test_rejected_update_leaves_counts_and_weights_in_both():
    w = np.ones(4, np.float32)
    bad = np.ones(5, np.float32)
    py_opt, cpp_opt = fusedopt.SGD(momentum=0.9), _core.cpp_SGD(momentum=0.9)
    state = py_opt.create_state(0, w)
    with pytest.raises(ValueError, match="grad"):
        py_opt.update([0], [w], [bad], [state])
    with pytest.raises(ValueError, match="grad"):
        cpp_opt.update([0], [w], [bad])
    assert py_opt.num_update == cpp_opt.num_update == 0
    np.testing.assert_array_equal(w, np.ones(4, np.float32))
