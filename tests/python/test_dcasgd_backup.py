"""DC-ASGD as in the paper (docs/SEMANTICS.md §13) against the float64 reference.

Kernels: ``dcasgd_backup_update`` (the anchor is a per-worker backup, only read), its
multi-precision and aggregated forms, and the adaptive lambda (DC-ASGD-a) on both the backup form
and MXNet's previous-weight form (``dcasgd_update(..., mean_square)``, ``DCASGD(adaptive=True)``).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import reference as ref
from helpers import (
    Snapshot,
    assert_bitwise_equal,
    assert_close,
    import_fusedopt,
    make_inputs,
    np_dtype,
    options_id,
    options_product,
    random_array,
    shape_id,
)

fo = import_fusedopt()

LR = 0.05
STEPS = 5
LAMDA = 2.0  # the paper's DC-ASGD-a constant

OPTIONS = options_product(adaptive=[False, True], momentum=[0.0, 0.9], wd=[0.0, 0.01],
                          rescale_grad=[1.0, 0.5], clip_gradient=[None, 0.5])
SMALL_OPTIONS = options_product(adaptive=[False, True], momentum=[0.0, 0.9], wd=[0.01],
                                rescale_grad=[0.5], clip_gradient=[0.5])


def _backups(rng, weight, steps, dtype):
    """One backup per step: the weight some pushes ago, modelled as the weight plus noise."""
    w = np.asarray(weight, dtype=np.float64)
    return [ref.round_to(w + 0.1 * rng.standard_normal(w.shape), dtype) for _ in range(steps)]


def _state(weight, dtype, *, momentum, adaptive):
    mom = np.zeros(weight.shape, dtype) if momentum else None
    ms = np.zeros(weight.shape, dtype) if adaptive else None
    return mom, ms


def _kw(opts):
    return dict(lr=LR, lamda=LAMDA, momentum=opts["momentum"], wd=opts["wd"],
                rescale_grad=opts["rescale_grad"], clip_gradient=opts["clip_gradient"])


def _ref_kw(opts):
    return dict(lr=LR, lamda=LAMDA, momentum=opts["momentum"], wd=opts["wd"],
                rescale_grad=opts["rescale_grad"], clip_gradient=opts["clip_gradient"],
                adaptive=opts["adaptive"])


def _check_plain(dtype, shape, opts, rng, steps=STEPS):
    inp = make_inputs(rng, shape, dtype, steps=steps)
    backups = _backups(rng, inp.weight, steps, dtype)
    for b in backups:
        b.flags.writeable = False  # the backup is only read: read-only arrays are accepted
    exp = ref.run_dcasgd_backup(inp.weight, inp.grads, backups, **_ref_kw(opts))
    w = inp.weight.copy()
    mom, ms = _state(w, dtype, momentum=opts["momentum"], adaptive=opts["adaptive"])
    for g, b in zip(inp.grads, backups):
        snap = Snapshot(g, b)
        fo.dcasgd_backup_update(w, g, b, mom, ms, **_kw(opts))
        snap.assert_unchanged("(grad or backup)")
    assert_close(w, exp.weight, dtype, err_msg="weight")
    if opts["momentum"]:
        assert_close(mom, exp.mom, dtype, role="state", err_msg="momentum")
    if opts["adaptive"]:
        assert_close(ms, exp.mean_square, dtype, role="state", err_msg="mean_square")


@pytest.mark.parametrize("opts", OPTIONS, ids=options_id)
def test_backup_matches_reference(opts, dtype, rng):
    _check_plain(dtype, (3, 5, 7), opts, rng)


@pytest.mark.parametrize("opts", SMALL_OPTIONS, ids=options_id)
@pytest.mark.parametrize("shape", [(1,), (7,), (), (0,), (4097,)], ids=shape_id)
def test_backup_matches_reference_odd_shapes(shape, opts, dtype, rng):
    _check_plain(dtype, shape, opts, rng)


@pytest.mark.parametrize("opts", SMALL_OPTIONS, ids=options_id)
def test_backup_matches_reference_every_capability(opts, dtype, rng, cpu_capability):
    _check_plain(dtype, (1031,), opts, rng, steps=3)


# ------------------------------------------------------------------------------ multi-precision
def _check_mp(dtype, shape, opts, rng, steps=STEPS):
    inp = make_inputs(rng, shape, dtype, steps=steps)
    w32_0 = ref.round_to(np.asarray(inp.weight, np.float64)
                         + 1e-3 * rng.standard_normal(inp.weight.shape), np.float32)
    backups = _backups(rng, w32_0, steps, np.float32)
    exp = ref.run_dcasgd_backup(inp.weight, inp.grads, backups, multi_precision=True,
                                weight32=w32_0, **_ref_kw(opts))
    w, w32 = inp.weight.copy(), w32_0.copy()
    mom, ms = _state(w, np.float32, momentum=opts["momentum"], adaptive=opts["adaptive"])
    for g, b in zip(inp.grads, backups):
        snap = Snapshot(g, b)
        fo.mp_dcasgd_backup_update(w, g, b, w32, mom, ms, **_kw(opts))
        snap.assert_unchanged("(grad or backup)")
    assert_close(w32, exp.weight32, dtype, role="master", err_msg="weight32")
    assert_close(w, exp.weight, dtype, multi_precision=True, err_msg="weight")
    assert_bitwise_equal(w, ref.round_to(w32, w.dtype), "weight must be cast(weight32)")
    if opts["momentum"]:
        assert_close(mom, exp.mom, dtype, role="state", multi_precision=True, err_msg="mom")
    if opts["adaptive"]:
        assert_close(ms, exp.mean_square, dtype, role="state", multi_precision=True,
                     err_msg="mean_square")


@pytest.mark.parametrize("opts", OPTIONS, ids=options_id)
def test_mp_backup_matches_reference(opts, low_dtype, rng):
    _check_mp(low_dtype, (3, 5, 7), opts, rng)


@pytest.mark.parametrize("opts", SMALL_OPTIONS, ids=options_id)
@pytest.mark.parametrize("shape", [(1,), (9,), (4099,)], ids=shape_id)
def test_mp_backup_odd_shapes_every_capability(shape, opts, low_dtype, rng, cpu_capability):
    _check_mp(low_dtype, shape, opts, rng, steps=3)


# ------------------------------------------------------------------ adaptive MXNet form
@pytest.mark.parametrize("opts", options_product(momentum=[0.0, 0.9], wd=[0.0, 0.01],
                                                 clip_gradient=[None, 0.5]), ids=options_id)
@pytest.mark.parametrize("shape", [(3, 5, 7), (4097,)], ids=shape_id)
def test_adaptive_mxnet_form_matches_reference(shape, opts, dtype, rng):
    inp = make_inputs(rng, shape, dtype, steps=STEPS)
    kw = dict(lr=LR, lamda=LAMDA, momentum=opts["momentum"], wd=opts["wd"], rescale_grad=0.5,
              clip_gradient=opts["clip_gradient"], ms_decay=0.9, eps=1e-6)
    exp = ref.run_dcasgd(inp.weight, inp.grads, adaptive=True, **kw)
    w = inp.weight.copy()
    prev = w.copy()
    mom, ms = _state(w, dtype, momentum=opts["momentum"], adaptive=True)
    for g in inp.grads:
        fo.dcasgd_update(w, g, mom, prev, ms, **kw)
    assert_close(w, exp.weight, dtype, err_msg="weight")
    assert_close(prev, exp.prev, dtype, role="state", err_msg="prev")
    assert_close(ms, exp.mean_square, dtype, role="state", err_msg="mean_square")
    if opts["momentum"]:
        assert_close(mom, exp.mom, dtype, role="state", err_msg="momentum")


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_adaptive_mp_mxnet_form_matches_reference(momentum, low_dtype, rng):
    inp = make_inputs(rng, (5, 13), low_dtype, steps=STEPS)
    kw = dict(lr=LR, lamda=LAMDA, momentum=momentum, wd=0.01, clip_gradient=0.5)
    exp = ref.run_dcasgd(inp.weight, inp.grads, adaptive=True, multi_precision=True, **kw)
    w = inp.weight.copy()
    w32 = w.astype(np.float32)
    prev32 = w32.copy()
    mom, ms = _state(w, np.float32, momentum=momentum, adaptive=True)
    for g in inp.grads:
        fo.mp_dcasgd_update(w, g, mom, prev32, w32, ms, **kw)
    assert_close(w32, exp.weight32, low_dtype, role="master")
    assert_close(ms, exp.mean_square, low_dtype, role="state", multi_precision=True)
    assert_close(prev32, exp.prev, low_dtype, role="state", multi_precision=True)
    assert_bitwise_equal(w, ref.round_to(w32, w.dtype))


def test_adaptive_worked_example():
    """One element by hand: g = 1, w = 1, backup = 0.5, ms = 0, lamda = 2, ms_decay = 0.75,
    eps = 0: ms = 0.25, lam_t = 2 / 0.5 = 4, d = 1 + 4 * 1 * 1 * 0.5 = 3, w = 1 - 0.1 * 3 = 0.7."""
    w, g, b, ms = (np.array([x]) for x in (1.0, 1.0, 0.5, 0.0))
    fo.dcasgd_backup_update(w, g, b, None, ms, lr=0.1, lamda=2.0, ms_decay=0.75, eps=1e-300)
    np.testing.assert_allclose([w[0], ms[0]], [0.7, 0.25], rtol=1e-15)


# ------------------------------------------------------------------- backup == weight is SGD
@pytest.mark.parametrize("adaptive", [False, True], ids=["constant", "adaptive"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("shape", [(7,), (3, 5, 7), (70001,)], ids=shape_id)
def test_backup_equal_weight_is_sgd(shape, momentum, adaptive, dtype, rng):
    inp = make_inputs(rng, shape, dtype, steps=3)
    w, w_sgd = inp.weight.copy(), inp.weight.copy()
    mom, ms = _state(w, dtype, momentum=momentum, adaptive=adaptive)
    mom_sgd = None if mom is None else mom.copy()
    kw = dict(lr=LR, wd=0.01, rescale_grad=0.5, clip_gradient=0.5)
    for g in inp.grads:
        fo.dcasgd_backup_update(w, g, w.copy(), mom, ms, lamda=LAMDA, momentum=momentum, **kw)
        if momentum:
            fo.sgd_mom_update(w_sgd, g, mom_sgd, momentum=momentum, **kw)
        else:
            fo.sgd_update(w_sgd, g, **kw)
    assert_bitwise_equal(w, w_sgd, "weight")
    if momentum:
        assert_bitwise_equal(mom, mom_sgd, "momentum")


@pytest.mark.parametrize("adaptive", [False, True], ids=["constant", "adaptive"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_mp_backup_equal_master_is_mp_sgd(momentum, adaptive, low_dtype, rng):
    inp = make_inputs(rng, (1001,), low_dtype, steps=3)
    w, w_sgd = inp.weight.copy(), inp.weight.copy()
    w32, w32_sgd = w.astype(np.float32), w.astype(np.float32)
    mom, ms = _state(w, np.float32, momentum=momentum, adaptive=adaptive)
    mom_sgd = None if mom is None else mom.copy()
    kw = dict(lr=LR, wd=0.01, clip_gradient=0.5)
    for g in inp.grads:
        fo.mp_dcasgd_backup_update(w, g, w32.copy(), w32, mom, ms, lamda=LAMDA, momentum=momentum,
                                   **kw)
        if momentum:
            fo.mp_sgd_mom_update(w_sgd, g, mom_sgd, w32_sgd, momentum=momentum, **kw)
        else:
            fo.mp_sgd_update(w_sgd, g, w32_sgd, **kw)
    assert_bitwise_equal(w32, w32_sgd, "weight32")
    assert_bitwise_equal(w, w_sgd, "weight")


# --------------------------------------------------------------------------- aggregated forms
SHAPES = [(5, 7), (1,), (4099,), (), (0,), (33, 3)]


def _lists(rng, dtypes, *, momentum, adaptive, master=False):
    ws = [random_array(rng, s, dt) for s, dt in zip(SHAPES, dtypes)]
    gs = [random_array(rng, s, dt) for s, dt in zip(SHAPES, dtypes)]
    sdt = [np.dtype(np.float32) if master else np_dtype(dt) for dt in dtypes]
    w32 = [w.astype(np.float32) for w in ws] if master else None
    anchors = [ref.round_to(np.asarray(w if w32 is None else w32[k], np.float64)
                            + 0.1 * rng.standard_normal(w.shape), sdt[k])
               for k, w in enumerate(ws)]
    moms = [random_array(rng, s, d, 0.1) for s, d in zip(SHAPES, sdt)] if momentum else None
    mss = [_nonnegative(random_array(rng, s, d, 0.1)) for s, d in zip(SHAPES, sdt)] if adaptive else None
    return ws, gs, anchors, moms, mss, w32


def _nonnegative(x):
    np.abs(x, out=x)  # in place: keeps 0-d arrays arrays
    return x


def _copies(xs):
    return None if xs is None else [x.copy() for x in xs]


MULTI_OPTIONS = options_product(adaptive=[False, True], momentum=[0.0, 0.9])


@pytest.mark.parametrize("opts", MULTI_OPTIONS, ids=options_id)
@pytest.mark.parametrize("mixed", [False, True], ids=["one-dtype", "mixed-dtypes"])
def test_multi_backup_bitwise_equals_per_tensor(opts, mixed, dtype, rng):
    dtypes = ([dtype, np.float64, dtype, np.float32, dtype, dtype] if mixed
              else [dtype] * len(SHAPES))
    ws, gs, bs, moms, mss, _ = _lists(rng, dtypes, **opts)
    lrs = [0.05, 0.1, 0.02, 0.07, 0.05, 0.03]
    wds = [0.0, 0.01, 0.1, 0.0, 0.02, 0.001]
    kw = dict(momentum=opts["momentum"], lamda=LAMDA, rescale_grad=0.5, clip_gradient=0.5,
              ms_decay=0.9, eps=1e-6)
    one_w, one_m, one_ms = _copies(ws), _copies(moms), _copies(mss)
    for step in range(3):
        snap = Snapshot(*gs, *bs)
        fo.multi_dcasgd_backup_update(ws, gs, bs, moms, mss, lrs=lrs, wds=wds, **kw)
        snap.assert_unchanged("(grads or backups)")
        for k in range(len(ws)):
            fo.dcasgd_backup_update(one_w[k], gs[k], bs[k], None if moms is None else one_m[k],
                                    None if mss is None else one_ms[k], lr=lrs[k], wd=wds[k], **kw)
    for k in range(len(ws)):
        assert_bitwise_equal(ws[k], one_w[k], f"weights[{k}]")
        if moms is not None:
            assert_bitwise_equal(moms[k], one_m[k], f"moms[{k}]")
        if mss is not None:
            assert_bitwise_equal(mss[k], one_ms[k], f"mean_squares[{k}]")


@pytest.mark.parametrize("opts", MULTI_OPTIONS, ids=options_id)
def test_multi_mp_backup_bitwise_equals_per_tensor(opts, low_dtype, rng):
    ws, gs, bs, moms, mss, w32 = _lists(rng, [low_dtype] * len(SHAPES), master=True, **opts)
    lrs = [0.05, 0.1, 0.02, 0.07, 0.05, 0.03]
    wds = [0.0, 0.01, 0.1, 0.0, 0.02, 0.001]
    kw = dict(momentum=opts["momentum"], lamda=LAMDA, clip_gradient=0.5)
    one_w, one_w32, one_m, one_ms = _copies(ws), _copies(w32), _copies(moms), _copies(mss)
    for step in range(3):
        fo.multi_mp_dcasgd_backup_update(ws, gs, bs, w32, moms, mss, lrs=lrs, wds=wds, **kw)
        for k in range(len(ws)):
            fo.mp_dcasgd_backup_update(one_w[k], gs[k], bs[k], one_w32[k],
                                       None if moms is None else one_m[k],
                                       None if mss is None else one_ms[k], lr=lrs[k], wd=wds[k],
                                       **kw)
    for k in range(len(ws)):
        assert_bitwise_equal(ws[k], one_w[k], f"weights[{k}]")
        assert_bitwise_equal(w32[k], one_w32[k], f"weights32[{k}]")
        if mss is not None:
            assert_bitwise_equal(mss[k], one_ms[k], f"mean_squares[{k}]")


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("master", [False, True], ids=["plain", "mp"])
def test_multi_adaptive_mxnet_form_bitwise_equals_per_tensor(master, momentum, dtype, rng):
    if master and np_dtype(dtype).name not in ("float16", "bfloat16"):
        pytest.skip("multi-precision needs float16/bfloat16 weights")
    ws, gs, prevs, moms, mss, w32 = _lists(rng, [dtype] * len(SHAPES), momentum=momentum,
                                           adaptive=True, master=master)
    lrs, wds = [0.05] * len(ws), [0.01] * len(ws)
    kw = dict(momentum=momentum, lamda=LAMDA, clip_gradient=0.5)
    one_w, one_p, one_m, one_ms = _copies(ws), _copies(prevs), _copies(moms), _copies(mss)
    one_w32 = _copies(w32)
    for step in range(3):
        if master:
            fo.multi_mp_dcasgd_update(ws, gs, moms, prevs, w32, mss, lrs=lrs, wds=wds, **kw)
        else:
            fo.multi_dcasgd_update(ws, gs, moms, prevs, mss, lrs=lrs, wds=wds, **kw)
        for k in range(len(ws)):
            m = None if moms is None else one_m[k]
            if master:
                fo.mp_dcasgd_update(one_w[k], gs[k], m, one_p[k], one_w32[k], one_ms[k],
                                    lr=lrs[k], wd=wds[k], **kw)
            else:
                fo.dcasgd_update(one_w[k], gs[k], m, one_p[k], one_ms[k], lr=lrs[k], wd=wds[k],
                                 **kw)
    for k in range(len(ws)):
        assert_bitwise_equal(ws[k], one_w[k], f"weights[{k}]")
        assert_bitwise_equal(prevs[k], one_p[k], f"prevs[{k}]")
        assert_bitwise_equal(mss[k], one_ms[k], f"mean_squares[{k}]")


# ------------------------------------------------------------------------------ bad input
def _arrays(n=6, dtype=np.float32, momentum=True, adaptive=True):
    w = np.linspace(-1, 1, n).astype(dtype)
    g = np.linspace(1, 2, n).astype(dtype)
    b = (w + 0.25).astype(dtype)
    mom = np.full(n, 0.5, dtype) if momentum else None
    ms = np.full(n, 0.25, dtype) if adaptive else None
    return w, g, b, mom, ms


def _call(w, g, b, mom, ms, **over):
    kw = dict(lr=0.1, lamda=LAMDA, momentum=0.9 if mom is not None else 0.0)
    kw.update(over)
    fo.dcasgd_backup_update(w, g, b, mom, ms, **kw)


def _replace(which, value):
    def make():
        arrs = dict(zip(("w", "g", "b", "mom", "ms"), _arrays()))
        arrs[which] = value(arrs) if callable(value) else value
        return arrs
    return make


def _read_only(x):
    x = x.copy()
    x.flags.writeable = False
    return x


BAD_ARRAYS = [
    ("backup-dtype", _replace("b", lambda a: a["b"].astype(np.float64)), TypeError, "backup"),
    ("backup-shape", _replace("b", lambda a: a["b"][:5].copy()), ValueError, "backup"),
    ("backup-strided", _replace("b", lambda a: np.repeat(a["b"], 2)[::2]), ValueError, "backup"),
    ("backup-not-array", _replace("b", lambda a: [0.0] * 6), TypeError, "backup"),
    ("mean_square-dtype", _replace("ms", lambda a: a["ms"].astype(np.float16)), TypeError,
     "mean_square"),
    ("mean_square-shape", _replace("ms", lambda a: a["ms"].reshape(2, 3).copy()), ValueError,
     "mean_square"),
    ("mean_square-read-only", _replace("ms", lambda a: _read_only(a["ms"])), ValueError,
     "mean_square"),
    ("mom-shape", _replace("mom", lambda a: np.zeros(7, np.float32)), ValueError, "mom"),
    ("weight-read-only", _replace("w", lambda a: _read_only(a["w"])), ValueError, "weight"),
    ("grad-dtype", _replace("g", lambda a: a["g"].astype(np.float64)), TypeError, "grad"),
]


@pytest.mark.parametrize("make, exc, name", [pytest.param(m, e, n, id=i) for i, m, e, n in BAD_ARRAYS])
def test_bad_array_names_argument_and_writes_nothing(make, exc, name):
    a = make()
    snap = Snapshot(*(x for x in a.values() if isinstance(x, np.ndarray)))
    with pytest.raises(exc, match=name):
        _call(a["w"], a["g"], a["b"], a["mom"], a["ms"])
    snap.assert_unchanged()


def test_overlaps_are_refused():
    w, g, _, mom, ms = _arrays()
    buf = np.zeros(12, np.float32)
    a, b = buf[:6], buf[6:]
    for args, name in (((w, g, w, mom, ms), "backup"), ((w, g, a, mom, a), "mean_square"),
                       ((w, g, b, ms, ms), "mom|mean_square"), ((w, g, b, mom, w), "mean_square")):
        snap = Snapshot(w, g, mom, ms, buf)
        with pytest.raises(ValueError, match=f"({name}).*overlaps|overlaps.*({name})"):
            _call(*args)
        snap.assert_unchanged()


def test_backup_may_share_memory_with_grad():
    """Both are only read: no write can go through either."""
    w, g, _, mom, ms = _arrays()
    _call(w, g, g, mom, ms)


BAD_SCALARS = [
    ({"lamda": -1.0}, "lamda"), ({"lamda": math.nan}, "lamda"), ({"lamda": math.inf}, "lamda"),
    ({"ms_decay": 1.0}, "ms_decay"), ({"ms_decay": -0.1}, "ms_decay"),
    ({"ms_decay": math.nan}, "ms_decay"), ({"eps": 0.0}, "eps"), ({"eps": -1e-7}, "eps"),
    ({"eps": math.inf}, "eps"), ({"eps": math.nan}, "eps"), ({"lr": -0.1}, "lr"),
    ({"wd": math.nan}, "wd"), ({"momentum": -0.9}, "momentum"),
    ({"rescale_grad": math.inf}, "rescale_grad"), ({"clip_gradient": 0.0}, "clip_gradient"),
]


@pytest.mark.parametrize("over, name", BAD_SCALARS, ids=[options_id(o) for o, _ in BAD_SCALARS])
@pytest.mark.parametrize("adaptive", [False, True], ids=["constant", "adaptive"])
def test_bad_hyper_parameter_names_it_and_writes_nothing(over, name, adaptive):
    w, g, b, mom, ms = _arrays(adaptive=adaptive)
    snap = Snapshot(w, g, b, mom, *( [ms] if ms is not None else []))
    with pytest.raises(ValueError, match=name):
        _call(w, g, b, mom, ms, **over)
    snap.assert_unchanged()


def test_momentum_without_buffer_is_refused():
    w, g, b, _, ms = _arrays()
    snap = Snapshot(w, g, b, ms)
    with pytest.raises(ValueError, match="mom is None"):
        fo.dcasgd_backup_update(w, g, b, None, ms, lr=0.1, lamda=LAMDA, momentum=0.9)
    with pytest.raises(ValueError, match="moms"):
        fo.multi_dcasgd_backup_update([w], [g], [b], None, [ms], lrs=[0.1], wds=[0.0],
                                      lamda=LAMDA, momentum=0.9)
    snap.assert_unchanged()


def test_mp_bad_arguments():
    w = np.ones(6, np.float16)
    g = np.ones(6, np.float16)
    w32 = np.ones(6, np.float32)
    b16, b32 = np.ones(6, np.float16), np.full(6, 0.5, np.float32)
    ms16 = np.zeros(6, np.float16)
    snap = Snapshot(w, g, w32, b16, b32, ms16)
    with pytest.raises(TypeError, match="backup"):
        fo.mp_dcasgd_backup_update(w, g, b16, w32, lr=0.1, lamda=LAMDA)
    with pytest.raises(TypeError, match="mean_square"):
        fo.mp_dcasgd_backup_update(w, g, b32, w32, None, ms16, lr=0.1, lamda=LAMDA)
    with pytest.raises(TypeError, match="weight32"):
        fo.mp_dcasgd_backup_update(w, g, b32, w32.astype(np.float64), lr=0.1, lamda=LAMDA)
    with pytest.raises(TypeError, match="weight"):
        fo.mp_dcasgd_backup_update(w32.copy(), w32.copy(), b32, w32, lr=0.1, lamda=LAMDA)
    snap.assert_unchanged()


def test_multi_bad_item_names_index_and_writes_nothing():
    ws = [np.ones(5, np.float32), np.ones(3, np.float32)]
    gs = [np.ones(5, np.float32), np.ones(3, np.float32)]
    bs = [np.zeros(5, np.float32), np.zeros(4, np.float32)]  # backups[1] has the wrong shape
    mss = [np.zeros(5, np.float32), np.zeros(3, np.float32)]
    snap = Snapshot(*ws, *gs, *bs, *mss)
    with pytest.raises(ValueError, match=r"backups\[1\]"):
        fo.multi_dcasgd_backup_update(ws, gs, bs, None, mss, lrs=[0.1, 0.1], wds=[0, 0],
                                      lamda=LAMDA)
    bs[1] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="mean_squares"):
        fo.multi_dcasgd_backup_update(ws, gs, bs, None, mss[:1], lrs=[0.1, 0.1], wds=[0, 0],
                                      lamda=LAMDA)
    with pytest.raises(ValueError, match="backups"):
        fo.multi_dcasgd_backup_update(ws, gs, bs[:1], None, mss, lrs=[0.1, 0.1], wds=[0, 0],
                                      lamda=LAMDA)
    with pytest.raises(ValueError, match="ms_decay"):
        fo.multi_dcasgd_backup_update(ws, gs, bs, None, mss, lrs=[0.1, 0.1], wds=[0, 0],
                                      lamda=LAMDA, ms_decay=1.0)
    snap.assert_unchanged()


def test_mxnet_form_mean_square_is_validated():
    w, g, prev, mom, ms = _arrays()
    snap = Snapshot(w, g, prev, mom, ms)
    with pytest.raises(TypeError, match="mean_square"):
        fo.dcasgd_update(w, g, mom, prev, ms.astype(np.float64), lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="mean_square.*overlaps|overlaps.*mean_square"):
        fo.dcasgd_update(w, g, mom, prev, prev, lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="eps"):
        fo.dcasgd_update(w, g, mom, prev, ms, lr=0.1, momentum=0.9, eps=0.0)
    snap.assert_unchanged()


def test_check_dcasgd_backup_args_raises_what_the_update_would():
    w, g, b, mom, ms = _arrays()
    snap = Snapshot(w, g, b, mom, ms)
    fo.functional.check_dcasgd_backup_args(w, g, b, None, mom, ms, lamda=LAMDA, momentum=0.9)
    with pytest.raises(ValueError, match="backup"):
        fo.functional.check_dcasgd_backup_args(w, g, b[:3].copy(), None, mom, ms, lamda=LAMDA)
    snap.assert_unchanged()


# ------------------------------------------------------------------------- DCASGD(adaptive)
def _opt(path, **kw):
    fused = path != "step"
    return fo.DCASGD(learning_rate=LR, lamda=LAMDA, adaptive=True, ms_decay=0.9, eps=1e-6,
                     use_fused_step=fused, **kw)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("path", ["step", "fused_step", "update"])
def test_adaptive_class_matches_reference(path, momentum, float_dtype, rng):
    inp = make_inputs(rng, (4, 33), float_dtype, steps=STEPS)
    opt = _opt(path, momentum=momentum, wd=0.01, clip_gradient=0.5)
    w = inp.weight.copy()
    state = opt.create_state(0, w)
    assert len(state) == 3 and state[2].dtype == w.dtype and not state[2].any()
    for g in inp.grads:
        getattr(opt, path)([0], [w], [g], [state])
    exp = ref.run_dcasgd(inp.weight, inp.grads, lr=LR, lamda=LAMDA, momentum=momentum, wd=0.01,
                         clip_gradient=0.5, adaptive=True, ms_decay=0.9, eps=1e-6)
    assert_close(w, exp.weight, float_dtype)
    assert_close(state[1], exp.prev, float_dtype, role="state")
    assert_close(state[2], exp.mean_square, float_dtype, role="state")


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_adaptive_class_multi_precision(momentum, low_dtype, rng):
    inp = make_inputs(rng, (3, 11), low_dtype, steps=STEPS)
    exp = ref.run_dcasgd(inp.weight, inp.grads, lr=LR, lamda=LAMDA, momentum=momentum,
                         adaptive=True, ms_decay=0.9, eps=1e-6, multi_precision=True)
    for path in ("step", "fused_step"):
        opt = _opt(path, momentum=momentum, multi_precision=True)
        w = inp.weight.copy()
        state = opt.create_state_multi_precision(0, w)
        w32, (mom, prev32, ms) = state
        assert ms.dtype == np.float32
        for g in inp.grads:
            opt.update_multi_precision([0], [w], [g], [state])
        assert_close(w32, exp.weight32, low_dtype, role="master", err_msg=path)
        assert_close(ms, exp.mean_square, low_dtype, role="state", multi_precision=True,
                     err_msg=path)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_adaptive_class_list_step_equals_fused_step(momentum, rng):
    shapes = [(3, 4), (17,), (1,)]
    ws = [random_array(rng, s, np.float64) for s in shapes]
    a, b = _opt("step", momentum=momentum), _opt("fused_step", momentum=momentum)
    wa, wb = [w.copy() for w in ws], [w.copy() for w in ws]
    sa = [a.create_state(i, w) for i, w in enumerate(wa)]
    sb = [b.create_state(i, w) for i, w in enumerate(wb)]
    for _ in range(4):
        gs = [random_array(rng, s, np.float64) for s in shapes]
        a.step([0, 1, 2], wa, gs, sa)
        b.fused_step([0, 1, 2], wb, gs, sb)
    for k in range(len(shapes)):
        np.testing.assert_allclose(wa[k], wb[k], rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(sa[k][2], sb[k][2], rtol=1e-13, atol=1e-15)


def test_adaptive_updater_save_load_continue_equals_uninterrupted(rng):
    shapes = [(5, 3), (8,)]
    w0 = [random_array(rng, s, np.float32) for s in shapes]
    grads = [[random_array(rng, s, np.float32) for s in shapes] for _ in range(6)]

    def run(steps, updater, ws):
        for gs in steps:
            updater([0, 1], gs, ws)

    ws_a = [w.copy() for w in w0]
    ua = fo.get_updater(_opt("update", momentum=0.9, wd=0.01))
    run(grads, ua, ws_a)

    ws_b = [w.copy() for w in w0]
    ub = fo.get_updater(_opt("update", momentum=0.9, wd=0.01))
    run(grads[:3], ub, ws_b)
    blob = ub.get_states(dump_optimizer=True)
    uc = fo.get_updater(fo.DCASGD())
    uc.set_states(blob)
    assert uc.optimizer.adaptive and uc.optimizer.ms_decay == 0.9 and uc.optimizer.eps == 1e-6
    run(grads[3:], uc, ws_b)
    for k in range(len(shapes)):
        assert_bitwise_equal(ws_b[k], ws_a[k], f"weight {k}")
        for part in range(3):
            assert_bitwise_equal(uc.states[k][part], ua.states[k][part], f"state {k}[{part}]")


def test_adaptive_state_layout_mismatch_is_refused():
    w = np.ones(4)
    const = fo.DCASGD(learning_rate=0.1)
    ada = fo.DCASGD(learning_rate=0.1, adaptive=True)
    for opt, state in ((ada, const.create_state(0, w)), (const, ada.create_state(0, w))):
        for method in (opt.step, opt.fused_step):
            snap = Snapshot(w, *(s for s in state if s is not None))
            with pytest.raises(ValueError, match="state must be"):
                method([0], [w], [np.ones(4)], [state])
            snap.assert_unchanged()


@pytest.mark.parametrize("kw, exc, name", [
    ({"ms_decay": 1.0}, ValueError, "ms_decay"), ({"ms_decay": math.nan}, ValueError, "ms_decay"),
    ({"eps": 0.0}, ValueError, "eps"), ({"eps": math.inf}, ValueError, "eps"),
    ({"adaptive": "yes"}, TypeError, "adaptive"),
])
def test_adaptive_constructor_errors(kw, exc, name):
    with pytest.raises(exc, match=name):
        fo.DCASGD(**kw)


def test_dcasgd_defaults_to_the_fused_step():
    assert fo.DCASGD().use_fused_step is True
    assert fo.DCASGD(use_fused_step=False).use_fused_step is False


def test_adaptive_prepare_matches_the_oracle(rng):
    """DCASGD(adaptive=True).prepare(): several steps against the float64 reference of the rule
    (test_prepared.py also checks it equals fused_step bit for bit)."""
    opt = fo.DCASGD(learning_rate=0.1, momentum=0.9, lamda=2.0, wd=0.01, adaptive=True,
                    ms_decay=0.9, eps=1e-6)
    w = random_array(rng, (37,), np.float64)
    g = np.zeros_like(w)
    state = opt.create_state(0, w)
    p = opt.prepare([0], [w], [g], [state])
    ref_w, ref_prev = w.copy(), w.copy()
    ref_mom, ref_ms = np.zeros_like(w), np.zeros_like(w)
    for _ in range(4):
        g[...] = random_array(rng, (37,), np.float64)
        p.step()
        r = g + 0.01 * ref_w
        ref_ms = 0.9 * ref_ms + 0.1 * r * r
        d = r + 2.0 / np.sqrt(ref_ms + 1e-6) * r * r * (ref_w - ref_prev)
        ref_mom = 0.9 * ref_mom - 0.1 * d
        ref_prev = ref_w.copy()
        ref_w = ref_w + ref_mom
    np.testing.assert_allclose(w, ref_w, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("adaptive", [False, True])
def test_fused_step_accepts_one_item_not_in_a_list(adaptive, rng):
    """The default path now: ``update(index, weight, grad, state)`` with a tuple state is one item."""
    w = random_array(rng, (5,), np.float32)
    a, b = w.copy(), w.copy()
    g = random_array(rng, (5,), np.float32)
    one, listed = (fo.DCASGD(learning_rate=0.1, momentum=0.9, adaptive=adaptive) for _ in range(2))
    sa, sb = one.create_state(0, a), listed.create_state(0, b)
    one.update(0, a, g, sa)
    listed.update([0], [b], [g], [sb])
    assert_bitwise_equal(a, b)
    assert one.num_update == listed.num_update == 1
