"""Aggregated DCASGD: ``multi_dcasgd_update`` / ``multi_mp_dcasgd_update`` (parallel lists, one
validation and one parallel region per call) and ``DCASGD.fused_step`` on lists, which uses them.

Per tensor the result must equal the single-tensor kernels bitwise and the float64 reference within
the tolerance table; a rejected call writes nothing.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import reference as ref
from helpers import (
    Snapshot,
    assert_bitwise_equal,
    assert_close,
    dtype_param,
    import_fusedopt,
    np_dtype,
    random_array,
)

fusedopt = import_fusedopt()

STEPS = 4
SHAPES = [(0,), (1,), (17,), (3, 5), (), (513,), (4, 0), (70001,), (2, 3, 4)]
KW = dict(lamda=0.1, rescale_grad=0.5, clip_gradient=0.4)


def _lrs_wds(n):
    return [0.05 + 0.01 * k for k in range(n)], [0.01 * (k % 3) for k in range(n)]


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("dtype_names", [("float32",), ("float64",), ("float32", "float64", "float16")],
                         ids=lambda d: "+".join(d))
def test_multi_dcasgd_equals_per_tensor_and_reference(rng, cpu_capability, momentum, dtype_names):
    dts = [np_dtype(dtype_names[k % len(dtype_names)]) for k in range(len(SHAPES))]
    ws = [random_array(rng, s, d) for s, d in zip(SHAPES, dts)]
    prevs = [np.array(w + random_array(rng, w.shape, w.dtype, 0.01), dtype=w.dtype) for w in ws]
    moms = [random_array(rng, w.shape, w.dtype, 0.01) for w in ws] if momentum else None
    w0, p0 = [w.copy() for w in ws], [p.copy() for p in prevs]
    m0 = [m.copy() for m in moms] if moms else [None] * len(ws)
    ws1, ps1 = [w.copy() for w in ws], [p.copy() for p in prevs]
    ms1 = [m.copy() for m in moms] if moms else None
    lrs, wds = _lrs_wds(len(ws))
    grads = [[random_array(rng, w.shape, w.dtype) for _ in range(STEPS)] for w in ws]
    for step in range(STEPS):
        gs = [g[step] for g in grads]
        g_before = [g.copy() for g in gs]
        fusedopt.multi_dcasgd_update(ws, gs, moms, prevs, lrs=lrs, wds=wds, momentum=momentum, **KW)
        for k in range(len(ws)):
            fusedopt.dcasgd_update(ws1[k], gs[k], ms1[k] if ms1 else None, ps1[k], lr=lrs[k],
                                   wd=wds[k], momentum=momentum, **KW)
            assert_bitwise_equal(gs[k], g_before[k], f"grad {k} modified")
    for k in range(len(ws)):
        assert_bitwise_equal(ws[k], ws1[k], f"weight {k}")
        assert_bitwise_equal(prevs[k], ps1[k], f"prev {k}")
        if moms:
            assert_bitwise_equal(moms[k], ms1[k], f"mom {k}")
        if ws[k].dtype == np.float16:
            continue  # stored without a master: rounded every step; the per-tensor tests cover it
        exp = ref.run_dcasgd(w0[k], grads[k], lr=lrs[k], wd=wds[k], momentum=momentum,
                             mom=m0[k], prev=p0[k], **KW)
        assert_close(ws[k], exp.weight, err_msg=f"weight {k}")
        assert_close(prevs[k], exp.prev, role="state", err_msg=f"prev {k}")


@pytest.mark.needs_ml_dtypes
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("low", [dtype_param("float16"), dtype_param("bfloat16")])
def test_multi_mp_dcasgd_equals_per_tensor(rng, momentum, low):
    dt = np_dtype(low)
    shapes = SHAPES[:6]
    ws = [random_array(rng, s, dt) for s in shapes]
    w32s = [w.astype(np.float32) for w in ws]
    p32s = [w.copy() for w in w32s]
    moms = [np.zeros(s, np.float32) for s in shapes] if momentum else None
    ws1, w32s1, p32s1 = [w.copy() for w in ws], [w.copy() for w in w32s], [p.copy() for p in p32s]
    ms1 = [m.copy() for m in moms] if moms else None
    lrs, wds = _lrs_wds(len(ws))
    for _ in range(STEPS):
        gs = [random_array(rng, s, dt) for s in shapes]
        fusedopt.multi_mp_dcasgd_update(ws, gs, moms, p32s, w32s, lrs=lrs, wds=wds,
                                        momentum=momentum, **KW)
        for k in range(len(ws)):
            fusedopt.mp_dcasgd_update(ws1[k], gs[k], ms1[k] if ms1 else None, p32s1[k], w32s1[k],
                                      lr=lrs[k], wd=wds[k], momentum=momentum, **KW)
    for k in range(len(ws)):
        assert_bitwise_equal(ws[k], ws1[k], f"weight {k}")
        assert_bitwise_equal(w32s[k], w32s1[k], f"weight32 {k}")
        assert_bitwise_equal(p32s[k], p32s1[k], f"prev32 {k}")


def _three(rng, momentum=True):
    ws = [random_array(rng, (n,), np.float32) for n in (4, 5, 6)]
    gs = [random_array(rng, (n,), np.float32) for n in (4, 5, 6)]
    ps = [w.copy() for w in ws]
    ms = [np.zeros_like(w) for w in ws] if momentum else None
    return ws, gs, ms, ps


@pytest.mark.parametrize("bad", ["grad-shape", "prev-dtype", "mom-readonly", "prev-aliases-weight",
                                 "lr-nan", "momentum-without-moms", "count", "row-sparse"])
def test_multi_dcasgd_bad_last_tensor_writes_nothing(rng, bad):
    ws, gs, ms, ps = _three(rng)
    lrs, wds = [0.1] * 3, [0.0] * 3
    momentum = 0.9
    err = ValueError
    if bad == "grad-shape":
        gs[2] = random_array(rng, (7,), np.float32)
    elif bad == "prev-dtype":
        ps[2] = ps[2].astype(np.float64)
        err = TypeError
    elif bad == "mom-readonly":
        ms[2].flags.writeable = False
    elif bad == "prev-aliases-weight":
        ps[2] = ws[2]
    elif bad == "lr-nan":
        lrs[2] = float("nan")
    elif bad == "momentum-without-moms":
        ms = None
    elif bad == "count":
        ps = ps[:2]
    elif bad == "row-sparse":
        gs[2] = fusedopt.row_sparse_array((gs[2][None, :2], [0]), (1, 2))
        err = TypeError
    snap = Snapshot(*ws, *(ms or []), *ps)
    with pytest.raises(err):
        fusedopt.multi_dcasgd_update(ws, gs, ms, ps, lrs=lrs, wds=wds, momentum=momentum)
    snap.assert_unchanged()


@pytest.mark.parametrize("mixed_states", [False, True], ids=["uniform-states", "mixed-states"])
@pytest.mark.parametrize("multi_precision", [False, True], ids=["plain", "mp"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_dcasgd_fused_step_list_equals_per_index(rng, momentum, multi_precision, mixed_states):
    """A list mixing float32, float64 and float16 weights (with fp32 masters under multi_precision):
    one aggregated call per kind of tensor, equal to one fused_step per index. `mixed-states` gives
    some tensors a momentum buffer and others none (momentum 0 accepts both)."""
    if mixed_states and momentum:
        pytest.skip("a state without a momentum buffer needs momentum == 0")
    dts = [np.float32, np.float64, np.float16, np.float32, np.float16, np.float64]
    shapes = [(5,), (3, 4), (17,), (), (1,), (70001,)]
    ws = [random_array(rng, s, d) for s, d in zip(shapes, dts)]
    ws1 = [w.copy() for w in ws]
    opt = fusedopt.DCASGD(learning_rate=0.1, momentum=momentum, lamda=0.2, wd=0.01,
                          multi_precision=multi_precision, use_fused_step=True)
    one = fusedopt.DCASGD(learning_rate=0.1, momentum=momentum, lamda=0.2, wd=0.01,
                          multi_precision=multi_precision, use_fused_step=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # float16 without a master warns, by design
        states = [opt.create_state_multi_precision(k, w) for k, w in enumerate(ws)]
        states1 = [one.create_state_multi_precision(k, w) for k, w in enumerate(ws1)]
    if mixed_states:
        def with_mom(state):
            if isinstance(state[1], tuple):  # (w32, (mom, prev32))
                return (state[0], (np.zeros_like(state[1][1]), state[1][1]))
            return (np.zeros_like(state[1]), state[1])
        states = [with_mom(st) if k % 2 else st for k, st in enumerate(states)]
        states1 = [with_mom(st) if k % 2 else st for k, st in enumerate(states1)]
    for _ in range(3):
        gs = [random_array(rng, s, d) for s, d in zip(shapes, dts)]
        opt.update_multi_precision(list(range(len(ws))), ws, gs, states)
        for k in range(len(ws)):
            one.update_multi_precision(k, ws1[k], gs[k], states1[k])
    for k in range(len(ws)):
        assert_bitwise_equal(ws[k], ws1[k], f"weight {k}")
    assert opt._index_update_count == one._index_update_count
    assert opt.num_update == one.num_update


def test_dcasgd_fused_step_rejects_mismatched_lists(rng):
    ws, gs, ms, ps = _three(rng)
    opt = fusedopt.DCASGD(learning_rate=0.1, momentum=0.9, use_fused_step=True)
    states = [opt.create_state(k, w) for k, w in enumerate(ws)]
    snap = Snapshot(*ws)
    with pytest.raises(ValueError, match="same length"):
        opt.update([0, 1, 2], ws, gs[:2], states)
    snap.assert_unchanged()
    assert opt._index_update_count == {}
    # a bad last tensor: nothing written, nothing counted
    gs[2] = random_array(rng, (9,), np.float32)
    with pytest.raises(ValueError):
        opt.update([0, 1, 2], ws, gs, states)
    snap.assert_unchanged()
    assert opt._index_update_count == {}
