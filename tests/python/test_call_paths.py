"""The low-overhead call paths of aggregated updates (issue 4, "low fixed costs"):

* ``multi_sgd_update_states`` (the native call behind ``SGD(aggregate_num=...)``): parallel lists
  instead of a flat one; declines mixed None / array states without touching anything;
* view storage reused between calls (lists of other lengths, ranks and layouts must not see stale
  shapes or strides), including a nested call from inside a producer's ``__dlpack__``;
* ``lrs`` / ``wds`` read as any sequence of numbers, with typed errors naming the item;
* the update-count bookkeeping of ``Optimizer._update_count`` (one shared int per step).

Every result is compared bitwise with the per-tensor kernels and with ``reference.py``.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import reference as ref
from helpers import Snapshot, assert_bitwise_equal, assert_close, import_fusedopt, random_array

fusedopt = import_fusedopt()
import fusedopt.functional  # noqa: E402  (multi_sgd_update_states is not re-exported)

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)


def _tensors(rng, shapes, dtypes, momentum):
    ws = [random_array(rng, s, d) for s, d in zip(shapes, dtypes)]
    gs = [random_array(rng, s, d, 0.1) for s, d in zip(shapes, dtypes)]
    ms = [random_array(rng, s, d, 0.01) for s, d in zip(shapes, dtypes)] if momentum else None
    return ws, gs, ms


def _per_tensor(ws, gs, ms, lrs, wds, momentum, **kw):
    for k in range(len(ws)):
        if ms is None:
            fusedopt.sgd_update(ws[k], gs[k], lr=lrs[k], wd=wds[k], **kw)
        else:
            fusedopt.sgd_mom_update(ws[k], gs[k], ms[k], lr=lrs[k], momentum=momentum, wd=wds[k], **kw)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_states_call_equals_per_tensor_kernels(rng, momentum):
    shapes = [(3, 5), (), (0,), (17,), (2, 3, 4), (1,), (33,)]
    dtypes = [F32, F64, F32, F64, F32, F32, F64]
    ws, gs, ms = _tensors(rng, shapes, dtypes, momentum)
    ws2 = [w.copy() for w in ws]
    ms2 = [m.copy() for m in ms] if ms is not None else None
    w0 = [w.copy() for w in ws]
    m0 = [m.copy() for m in ms] if ms is not None else [None] * len(ws)
    states = ms if ms is not None else [None] * len(ws)
    lrs = [0.1 * (k + 1) for k in range(len(ws))]
    wds = [0.01 * k for k in range(len(ws))]
    kw = dict(rescale_grad=0.5, clip_gradient=0.3)
    grads_before = [g.copy() for g in gs]
    for _ in range(3):
        done = fusedopt.functional.multi_sgd_update_states(ws, gs, states, lrs=lrs, wds=wds,
                                                           momentum=momentum, **kw)
        assert done is True
        _per_tensor(ws2, gs, ms2, lrs, wds, momentum, **kw)
    for k in range(len(ws)):
        assert_bitwise_equal(ws[k], ws2[k], f"weight {k}")
        assert_bitwise_equal(gs[k], grads_before[k], f"grad {k} was modified")
        if ms is not None:
            assert_bitwise_equal(ms[k], ms2[k], f"mom {k}")
        exp = ref.run_sgd(w0[k], [gs[k]] * 3, lr=lrs[k], wd=wds[k], momentum=momentum, mom=m0[k],
                          **kw)
        assert_close(ws[k], exp.weight, err_msg=f"weight {k}")


def test_states_call_declines_mixed_states_and_writes_nothing(rng):
    ws, gs, ms = _tensors(rng, [(4,), (5,), (6,)], [F32] * 3, True)
    states = [ms[0], None, ms[2]]
    snap = Snapshot(*ws, *ms)
    assert fusedopt.functional.multi_sgd_update_states(ws, gs, states, lrs=[0.1] * 3, wds=[0.0] * 3,
                                            momentum=0.9) is False
    snap.assert_unchanged()


def test_states_call_length_mismatch(rng):
    ws, gs, ms = _tensors(rng, [(4,), (5,), (6,)], [F32] * 3, True)
    snap = Snapshot(*ws, *ms)
    with pytest.raises(ValueError, match="same length"):
        fusedopt.functional.multi_sgd_update_states(ws, gs[:2], ms, lrs=[0.1] * 3, wds=[0.0] * 3,
                                                    momentum=0.9)
    with pytest.raises(ValueError, match="lrs"):
        fusedopt.functional.multi_sgd_update_states(ws, gs, ms, lrs=[0.1] * 2, wds=[0.0] * 3,
                                                    momentum=0.9)
    snap.assert_unchanged()


def test_states_call_bad_last_state_writes_nothing(rng):
    ws, gs, ms = _tensors(rng, [(4,), (5,), (6,)], [F32] * 3, True)
    ms[2] = np.zeros(7, np.float32)
    snap = Snapshot(*ws, *ms)
    with pytest.raises(ValueError, match=r"moms\[2\]"):
        fusedopt.functional.multi_sgd_update_states(ws, gs, ms, lrs=[0.1] * 3, wds=[0.0] * 3,
                                                    momentum=0.9)
    snap.assert_unchanged()


def test_views_are_rebuilt_for_every_call(rng):
    """Reused view storage: lists of other lengths, ranks and layouts in turn, each equal to the
    per-tensor kernels; a strided array after contiguous ones is refused, and contiguous ones after
    it are accepted again."""
    layouts = [
        [(2, 3, 4)] * 5,
        [(7,)] * 3,
        [()] * 9,
        [(3, 1, 2, 1, 2, 1, 1, 2)] * 2,
        [(5, 2)] * 6,
        [(1,)],
    ]
    for shapes in layouts:
        for momentum in (0.0, 0.9):
            ws, gs, ms = _tensors(rng, shapes, [F32] * len(shapes), momentum)
            ws2 = [w.copy() for w in ws]
            ms2 = [m.copy() for m in ms] if ms is not None else None
            lrs, wds = [0.05] * len(ws), [0.01] * len(ws)
            if ms is None:
                flat = [a for pair in zip(ws, gs) for a in pair]
                fusedopt.multi_sgd_update(flat, lrs=lrs, wds=wds)
            else:
                flat = [a for trio in zip(ws, gs, ms) for a in trio]
                fusedopt.multi_sgd_mom_update(flat, lrs=lrs, wds=wds, momentum=momentum)
            _per_tensor(ws2, gs, ms2, lrs, wds, momentum)
            for k in range(len(ws)):
                assert_bitwise_equal(ws[k], ws2[k], f"{shapes} weight {k}")
    base = random_array(rng, (6, 4), F32)
    strided = base[:, ::2]
    g = random_array(rng, (6, 2), F32)
    w_ok = random_array(rng, (6, 2), F32)
    snap = Snapshot(base, w_ok)
    with pytest.raises(ValueError, match=r"weights\[1\].*contiguous"):
        fusedopt.multi_sgd_update([w_ok, g, strided, g], lrs=[0.1, 0.1], wds=[0.0, 0.0])
    snap.assert_unchanged()
    w2 = w_ok.copy()
    fusedopt.multi_sgd_update([w_ok, g, w2, g.copy()], lrs=[0.1, 0.1], wds=[0.0, 0.0])
    assert_bitwise_equal(w_ok, w2)


class _ReentrantProducer:
    """A DLPack producer whose __dlpack__ runs another aggregated update first (a nested call on the
    same thread while the outer call is converting its list)."""

    def __init__(self, array, nested):
        self.array, self.nested = array, nested

    def __dlpack__(self, **kwargs):
        self.nested()
        return self.array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.array.__dlpack_device__()


def test_nested_call_from_dlpack_producer(rng):
    outer_w = [random_array(rng, (n,), F32) for n in (3, 4, 5, 6)]
    outer_g = [random_array(rng, (n,), F32) for n in (3, 4, 5, 6)]
    inner_w = [random_array(rng, (n,), F32) for n in (7, 8)]
    inner_g = [random_array(rng, (n,), F32) for n in (7, 8)]
    exp_outer = [w.copy() for w in outer_w]
    exp_inner = [w.copy() for w in inner_w]
    for w, g in zip(exp_outer, outer_g):
        fusedopt.sgd_update(w, g, lr=0.1)
    for w, g in zip(exp_inner, inner_g):
        fusedopt.sgd_update(w, g, lr=0.2)

    def nested():
        fusedopt.multi_sgd_update([inner_w[0], inner_g[0], inner_w[1], inner_g[1]],
                                  lrs=[0.2, 0.2], wds=[0.0, 0.0])

    grads = list(outer_g)
    grads[2] = _ReentrantProducer(outer_g[2], nested)
    flat = [a for pair in zip(outer_w, grads) for a in pair]
    fusedopt.multi_sgd_update(flat, lrs=[0.1] * 4, wds=[0.0] * 4)
    for k in range(4):
        assert_bitwise_equal(outer_w[k], exp_outer[k], f"outer {k}")
    for k in range(2):
        assert_bitwise_equal(inner_w[k], exp_inner[k], f"inner {k}")


@pytest.mark.parametrize("kind", ["list", "tuple", "ndarray", "ints", "numpy-scalars", "range"])
def test_rates_accept_any_sequence_of_numbers(rng, kind):
    ws, gs, _ = _tensors(rng, [(5,), (6,), (7,)], [F32] * 3, False)
    ws2 = [w.copy() for w in ws]
    values = [1.0, 2.0, 0.0]
    lrs = {"list": list(values), "tuple": tuple(values), "ndarray": np.array(values),
           "ints": [1, 2, 0], "numpy-scalars": [np.float32(v) for v in values],
           "range": range(1, 4)}[kind]
    expect = [1.0, 2.0, 0.0] if kind != "range" else [1.0, 2.0, 3.0]
    fusedopt.multi_sgd_update([a for p in zip(ws, gs) for a in p], lrs=lrs, wds=(0.0, 0.0, 0.0))
    _per_tensor(ws2, gs, None, expect, [0.0] * 3, 0.0)
    for k in range(3):
        assert_bitwise_equal(ws[k], ws2[k], f"weight {k}")


@pytest.mark.parametrize("bad,match", [
    (0.1, r"multi_sgd_update: lrs must be a sequence of numbers, got float"),
    ("abc", r"lrs must be a sequence of numbers, got str"),
    ([0.1, "x", 0.1], r"lrs\[1\] must be a real number \(float or int\), got str"),
    ([0.1, None, 0.1], r"lrs\[1\] must be a real number \(float or int\), got NoneType"),
    ([0.1, 0.1, b"1"], r"lrs\[2\] must be a real number \(float or int\), got bytes"),
    ([0.1, True, 0.1], r"lrs\[1\] must be a real number \(float or int\), got bool"),
])
def test_rates_bad_types_are_type_errors(rng, bad, match):
    ws, gs, _ = _tensors(rng, [(5,), (6,), (7,)], [F32] * 3, False)
    snap = Snapshot(*ws)
    with pytest.raises(TypeError, match=match):
        fusedopt.multi_sgd_update([a for p in zip(ws, gs) for a in p], lrs=bad, wds=[0.0] * 3)
    snap.assert_unchanged()


def test_update_counts_shared_and_distinct():
    """counts.get(k, begin) + 1 per key, in order, over mixed histories (new keys, keys at different
    counts, a key listed twice) and many lock-step steps (past the small-int cache)."""
    opt = fusedopt.SGD(learning_rate=0.1, begin_num_update=5)
    expect: dict = {}

    def bump(keys):
        for k in keys:
            expect[k] = expect.get(k, 5) + 1

    for keys in ([0, 1, 2], [1, 2, 3], ["a", 1, "a"], [0, 1, 2, 3, "a"]):
        opt._update_count(list(keys))
        bump(keys)
        assert opt._index_update_count == expect
        assert opt.num_update == max(expect.values())
    for _ in range(300):
        opt._update_count([0, 1, 2, 3])
        bump([0, 1, 2, 3])
    assert opt._index_update_count == expect
    assert opt.num_update == max(expect.values())


def test_sgd_aggregated_fast_path_falls_back(rng):
    """SGD(aggregate_num=inf): mixed None / array states and row-sparse gradients take the general
    path; both equal per-index updates."""
    opt = fusedopt.SGD(learning_rate=0.1, momentum=0.9, aggregate_num=math.inf)
    single = fusedopt.SGD(learning_rate=0.1, momentum=0.9)
    ws = [random_array(rng, (4, 3), F32) for _ in range(3)]
    ws_single = [w.copy() for w in ws]
    states = [opt.create_state(0, ws[0]), None, opt.create_state(2, ws[2])]
    states_single = [s.copy() if s is not None else None for s in states]
    for step in range(3):
        gs = [random_array(rng, (4, 3), F32) for _ in range(3)]
        gs[1] = fusedopt.row_sparse_array((gs[1][[0, 2]], [0, 2]), (4, 3))
        opt.update([0, 1, 2], ws, gs, states)
        for k in range(3):
            single.update(k, ws_single[k], gs[k], states_single[k])
    for k in range(3):
        assert_bitwise_equal(ws[k], ws_single[k], f"weight {k}")
    assert opt._index_update_count == {0: 3, 1: 3, 2: 3}


@pytest.mark.parametrize("clip", [None, 0.05])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("dtype", [F32, F64])
def test_results_do_not_depend_on_how_a_range_is_split(rng, cpu_capability, dtype, momentum, clip):
    """Large ranges take other loop shapes than small ones (two side-by-side streams for plain SGD);
    a tensor updated whole equals the same tensor updated in pieces smaller than any such threshold,
    bitwise."""
    n = 3 * 65536 + 12345
    w = random_array(rng, (n,), dtype)
    g = random_array(rng, (n,), dtype, 0.1)
    m = random_array(rng, (n,), dtype, 0.01)
    w2, m2 = w.copy(), m.copy()
    kw = dict(lr=0.05, wd=0.01, rescale_grad=0.7, clip_gradient=clip)
    for _ in range(2):
        if momentum:
            fusedopt.sgd_mom_update(w, g, m, momentum=momentum, **kw)
        else:
            fusedopt.sgd_update(w, g, **kw)
        for b in range(0, n, 1000):
            e = min(n, b + 1000)
            if momentum:
                fusedopt.sgd_mom_update(w2[b:e], g[b:e], m2[b:e], momentum=momentum, **kw)
            else:
                fusedopt.sgd_update(w2[b:e], g[b:e], **kw)
    assert_bitwise_equal(w, w2)
    assert_bitwise_equal(m, m2)


@pytest.mark.needs_ml_dtypes
@pytest.mark.parametrize("clip", [None, 0.05])
@pytest.mark.parametrize("rule", ["sgd", "sgd_mom", "dcasgd", "dcasgd_mom"])
@pytest.mark.parametrize("low", ["float16", "bfloat16"])
def test_multi_precision_whole_equals_pieces(rng, cpu_capability, low, rule, clip):
    """Multi-precision updates run 8 elements at a time in one pass where the CPU allows, and the last
    < 8 elements through blocks: a tensor updated whole equals the same tensor updated in pieces of 997
    (every piece ends in such a tail), bitwise, NaN and infinite gradients included."""
    from helpers import np_dtype

    dt = np_dtype(low)
    n = 3 * 4096 + 13
    w = random_array(rng, (n,), dt)
    g = random_array(rng, (n,), dt, 0.1)
    g[[5, 777, 4099]] = [np.nan, np.inf, -np.inf]
    w32 = w.astype(np.float32)
    m = random_array(rng, (n,), F32, 0.01)
    prev = w32 + random_array(rng, (n,), F32, 0.01)
    a = [x.copy() for x in (w, w32, m, prev)]
    bb = [x.copy() for x in (w, w32, m, prev)]
    kw = dict(lr=0.05, wd=0.01, rescale_grad=0.7, clip_gradient=clip)
    mom = rule.endswith("_mom")

    def step(ws, sl):
        wv, w32v, mv, pv = (x[sl] for x in ws)
        if rule.startswith("dcasgd"):
            fusedopt.mp_dcasgd_update(wv, g[sl], mv if mom else None, pv, w32v, momentum=0.9 if mom else 0.0,
                                      lamda=0.1, **kw)
        elif mom:
            fusedopt.mp_sgd_mom_update(wv, g[sl], mv, w32v, momentum=0.9, **kw)
        else:
            fusedopt.mp_sgd_update(wv, g[sl], w32v, **kw)

    for _ in range(2):
        step(a, slice(None))
        for s0 in range(0, n, 997):
            step(bb, slice(s0, min(n, s0 + 997)))
    for name, x, y in zip(("weight", "weight32", "mom", "prev32"), a, bb):
        assert_bitwise_equal(x, y, name)
