"""``opt.prepare(...)``: a PreparedStep's step() equals fused_step on the same arrays, bit for bit,
including update counts, schedulers, multipliers, multi-precision and DCASGD."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import import_fusedopt

fusedopt = import_fusedopt()
ml_dtypes = pytest.importorskip("ml_dtypes")

SHAPES = [(5,), (3, 4), (0,), (1,), (70001,), (2, 2, 2)]


def _arrays(dtype, seed=0):
    rng = np.random.default_rng(seed)
    ws = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    gs = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    return ws, gs


def _make(kind, **kw):
    sched = fusedopt.lr_scheduler.FactorScheduler(step=2, factor=0.5, base_lr=0.2)
    if kind == "sgd":
        return fusedopt.SGD(lr_scheduler=sched, wd=0.01, clip_gradient=1.0, **kw)
    if kind == "dcasgd_adaptive":  # lamda large enough that the compensation term matters
        kw.update(adaptive=True, lamda=2.0, ms_decay=0.9, eps=1e-6)
    return fusedopt.DCASGD(lr_scheduler=sched, wd=0.01, clip_gradient=1.0, use_fused_step=True, **kw)


def _flat_states(states):
    """Every array of a list of (nested) optimizer states."""
    out = []
    for st in states:
        if isinstance(st, (list, tuple)):
            out.extend(_flat_states(st))
        elif st is not None:
            out.append(st)
    return out


@pytest.mark.parametrize("kind", ["sgd", "dcasgd", "dcasgd_adaptive"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("multi_precision", [False, True])
def test_prepared_step_equals_fused_step(kind, momentum, dtype, multi_precision):
    dt = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
    if multi_precision and dtype in ("float32", "float64"):
        pytest.skip("multi_precision only changes float16/bfloat16 weights")
    ws1, gs = _arrays(dt)
    ws2 = [w.copy() for w in ws1]
    idx = list(range(len(ws1)))
    o1 = _make(kind, momentum=momentum, multi_precision=multi_precision)
    o2 = _make(kind, momentum=momentum, multi_precision=multi_precision)
    for o in (o1, o2):
        o.set_lr_mult({1: 0.5, 4: 2.0})
        o.set_wd_mult({2: 0.0})
    with pytest.warns(UserWarning) if dtype in ("float16", "bfloat16") and not multi_precision else _nullcontext():
        s1 = [o1.create_state_multi_precision(i, w) for i, w in zip(idx, ws1)]
        s2 = [o2.create_state_multi_precision(i, w) for i, w in zip(idx, ws2)]
    prepared = o2.prepare(idx, ws2, gs, s2)
    assert len(prepared) == len(idx)
    rng = np.random.default_rng(1)
    for _ in range(5):
        for g in gs:  # gradients refilled in place between steps
            g[...] = rng.standard_normal(g.shape).astype(g.dtype)
        o1.fused_step(idx, ws1, gs, s1)
        prepared.step()
        assert o1.num_update == o2.num_update
        assert o1._index_update_count == o2._index_update_count
        for a, b in zip(ws1, ws2):
            np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))
        for a, b in zip(_flat_states(s1), _flat_states(s2)):  # momentum, prev, masters, mean squares
            np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))
    if kind == "dcasgd_adaptive":  # the mean squares were updated (not left at zero)
        mss = [ms for _, _, _, ms in o2._split_states(ws2, s2)[1]]
        assert all(ms is not None for ms in mss) and any(np.any(ms != 0) for ms in mss)


def test_prepared_adaptive_dcasgd_checks_its_scalars_and_mode():
    """ms_decay / eps are read from the optimizer at each step and checked before any write; an
    optimizer switched between constant and adaptive lambda needs prepare() again."""
    ws, gs = _arrays(np.float32)
    idx = list(range(len(ws)))
    o = _make("dcasgd_adaptive", momentum=0.9)
    states = [o.create_state(i, w) for i, w in zip(idx, ws)]
    p = o.prepare(idx, ws, gs, states)
    p.step()
    before = ([w.copy() for w in ws], [a.copy() for a in _flat_states(states)],
              dict(o._index_update_count), o.num_update)
    o._ms_decay = 1.5  # (past the setter's own check: the kernel's check must hold too)
    with pytest.raises(ValueError, match="ms_decay"):
        p.step()
    o.ms_decay = 0.9
    o._eps = 0.0
    with pytest.raises(ValueError, match="eps"):
        p.step()
    o.eps = 1e-6
    o.adaptive = False
    with pytest.raises(ValueError, match="prepare"):
        p.step()
    for a, b in zip(ws, before[0]):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(_flat_states(states), before[1]):
        np.testing.assert_array_equal(a, b)
    assert o._index_update_count == before[2] and o.num_update == before[3]
    o.adaptive = True
    p.step()
    assert o.num_update == before[3] + 1


def test_prepare_adaptive_refuses_a_mean_square_aliasing_a_weight():
    ws, gs = _arrays(np.float32)
    o = _make("dcasgd_adaptive", momentum=0.0)
    states = [o.create_state(i, w) for i, w in enumerate(ws)]
    mom, prev, ms = states[1]
    states[1] = (mom, prev, ws[1])  # the mean square is the weight itself
    with pytest.raises(ValueError, match="mean_squares\\[1\\]|overlap"):
        o.prepare(list(range(len(ws))), ws, gs, states)


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_counts_that_are_not_in_lock_step():
    ws, gs = _arrays(np.float32)
    idx = list(range(len(ws)))
    o1, o2 = fusedopt.SGD(momentum=0.9, begin_num_update=4), fusedopt.SGD(momentum=0.9, begin_num_update=4)
    s1 = [o1.create_state(i, w) for i, w in enumerate(ws)]
    ws2 = [w.copy() for w in ws]
    s2 = [o2.create_state(i, w) for i, w in enumerate(ws2)]
    for o, w, s in ((o1, ws, s1), (o2, ws2, s2)):
        o.update([0, 2], [w[0], w[2]], [gs[0], gs[2]], [s[0], s[2]])  # counts now differ by index
    p = o2.prepare(idx, ws2, gs, s2)
    for _ in range(3):
        o1.update(idx, ws, gs, s1)
        p.step()
        o1.update([3], [ws[3]], [gs[3]], [s1[3]])  # updates outside the prepared step
        o2.update([3], [ws2[3]], [gs[3]], [s2[3]])
    assert o1._index_update_count == o2._index_update_count and o1.num_update == o2.num_update
    for a, b in zip(ws, ws2):
        np.testing.assert_array_equal(a, b)


def test_rejected_step_writes_nothing_and_keeps_counts():
    class Broken(fusedopt.lr_scheduler.LRScheduler):
        def __call__(self, num_update):
            return -1.0 if num_update >= 2 else 0.1

    ws, gs = _arrays(np.float32)
    o = fusedopt.SGD(momentum=0.9, lr_scheduler=Broken(base_lr=0.1))
    states = [o.create_state(i, w) for i, w in enumerate(ws)]
    p = o.prepare(list(range(len(ws))), ws, gs, states)
    p.step()
    before = [w.copy() for w in ws], dict(o._index_update_count), o.num_update
    with pytest.raises(ValueError, match="lr"):
        p.step()
    for a, b in zip(ws, before[0]):
        np.testing.assert_array_equal(a, b)
    assert o._index_update_count == before[1] and o.num_update == before[2]


@pytest.mark.parametrize("bad", ["shape", "dtype", "readonly", "alias"])
def test_prepare_validates_once_with_the_operators_errors(bad):
    ws, gs = _arrays(np.float32)
    o = fusedopt.SGD(momentum=0.9)
    states = [o.create_state(i, w) for i, w in enumerate(ws)]
    if bad == "shape":
        gs[-1] = np.ones(3, np.float32)
    elif bad == "dtype":
        gs[-1] = gs[-1].astype(np.float64)
    elif bad == "readonly":
        ws[-1].flags.writeable = False
    else:
        states[-1] = ws[0]
    exc = TypeError if bad == "dtype" else ValueError
    with pytest.raises(exc, match=r"grads\[5\]|weights\[5\]|moms\[5\]|overlaps"):
        o.prepare(list(range(len(ws))), ws, gs, states)


def test_prepare_refuses_row_sparse_gradients():
    o = fusedopt.SGD()
    w = np.zeros((4, 2), np.float32)
    g = fusedopt.row_sparse_array((np.ones((1, 2), np.float32), [1]), (4, 2))
    with pytest.raises(TypeError, match="row-sparse"):
        o.prepare([0], [w], [g], [None])
