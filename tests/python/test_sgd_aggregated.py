"""Aggregated (multi-tensor) SGD updates (docs/SEMANTICS.md §2 ``aggregate_num``, 5 and 10).

``multi_sgd_update``, ``multi_sgd_mom_update``, ``multi_mp_sgd_update`` and
``multi_mp_sgd_mom_update`` must give, per tensor ``k``, *bitwise* the result of the single-tensor
kernel called with ``lrs[k]`` / ``wds[k]`` (docs/SEMANTICS.md §5: "Results must equal the per-tensor path"), and
match ``reference.py`` within the tolerance table. ``SGD(aggregate_num=k).fused_step`` on a list of
mixed dtypes must equal per-index updates. Whole calls are validated before the first write.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

import reference as ref
from helpers import (
    LOW_DTYPE_NAMES,
    Snapshot,
    assert_bitwise_equal,
    assert_close,
    dtype_param,
    import_fusedopt,
    np_dtype,
    options_id,
    options_product,
    random_array,
)

fusedopt = import_fusedopt()

STEPS = 7
F32 = np.dtype(np.float32)

ALL_DTYPES = [dtype_param(n) for n in ("float16", "bfloat16", "float32", "float64")]
LOW_DTYPES = [dtype_param(n) for n in LOW_DTYPE_NAMES]


@dataclass(frozen=True)
class Kernel:
    name: str
    momentum: bool  # has a momentum buffer
    mp: bool  # has an fp32 master

    @property
    def arity(self) -> int:
        return 2 + self.momentum + self.mp

    @property
    def multi(self):
        return getattr(fusedopt, self.name)


KERNELS = {
    "multi_sgd_update": Kernel("multi_sgd_update", momentum=False, mp=False),
    "multi_sgd_mom_update": Kernel("multi_sgd_mom_update", momentum=True, mp=False),
    "multi_mp_sgd_update": Kernel("multi_mp_sgd_update", momentum=False, mp=True),
    "multi_mp_sgd_mom_update": Kernel("multi_mp_sgd_mom_update", momentum=True, mp=True),
}


def _kernel_dtype_params():
    """(kernel, dtype name): plain kernels for all four dtypes, mp kernels for fp16 / bf16."""
    out = []
    for kname, k in KERNELS.items():
        names = LOW_DTYPE_NAMES if k.mp else ("float16", "bfloat16", "float32", "float64")
        for dn in names:
            marks = [pytest.mark.needs_ml_dtypes] if dn == "bfloat16" else []
            out.append(pytest.param(kname, dn, id=f"{kname}-{dn}", marks=marks))
    return out


KERNEL_DTYPES = _kernel_dtype_params()


@dataclass
class Tensors:
    """Per-tensor arrays of one aggregated call; ``grads[step][k]``."""

    weights: list[np.ndarray]
    moms: list[np.ndarray] | None
    masters: list[np.ndarray] | None
    grads: list[list[np.ndarray]]
    lrs: list[float]
    wds: list[float]

    def copy(self) -> Tensors:
        def c(xs):
            return None if xs is None else [x.copy() for x in xs]

        return Tensors(c(self.weights), c(self.moms), c(self.masters), self.grads,
                       list(self.lrs), list(self.wds))

    def flat(self, step: int) -> list[np.ndarray]:
        out = []
        for k, w in enumerate(self.weights):
            out += [w, self.grads[step][k]]
            if self.moms is not None:
                out.append(self.moms[k])
            if self.masters is not None:
                out.append(self.masters[k])
        return out

    def all_arrays(self) -> list[np.ndarray]:
        return self.weights + (self.moms or []) + (self.masters or [])


def _make(rng, kernel: Kernel, dtype, shapes, steps=STEPS) -> Tensors:
    n = len(shapes)
    weights = [random_array(rng, s, dtype) for s in shapes]
    moms = [random_array(rng, s, F32 if kernel.mp else dtype, 0.1) for s in shapes] \
        if kernel.momentum else None
    # master slightly off the weight: the kernel must read the master
    masters = [w.astype(np.float32) + random_array(rng, w.shape, F32, 1e-3) for w in weights] \
        if kernel.mp else None
    grads = [[random_array(rng, s, dtype, 2.0) for s in shapes] for _ in range(steps)]
    lrs = [float(x) for x in rng.uniform(0.01, 0.2, n)]
    wds = [float(x) for x in rng.uniform(0.0, 0.05, n)]
    wds[::3] = [0.0] * len(wds[::3])
    return Tensors(weights, moms, masters, grads, lrs, wds)


def _run_multi(kernel: Kernel, t: Tensors, opts, steps=STEPS):
    kw = dict(lrs=t.lrs, wds=t.wds, rescale_grad=opts["rescale_grad"],
              clip_gradient=opts["clip_gradient"])
    if kernel.momentum:
        kw["momentum"] = opts["momentum"]
    for step in range(steps):
        assert kernel.multi(t.flat(step), **kw) is None


def _run_single(kernel: Kernel, t: Tensors, opts, steps=STEPS):
    common = dict(rescale_grad=opts["rescale_grad"], clip_gradient=opts["clip_gradient"])
    for step in range(steps):
        for k, w in enumerate(t.weights):
            g = t.grads[step][k]
            kw = dict(common, lr=t.lrs[k], wd=t.wds[k])
            if kernel.momentum:
                kw["momentum"] = opts["momentum"]
            if kernel.mp and kernel.momentum:
                fusedopt.mp_sgd_mom_update(w, g, t.moms[k], t.masters[k], **kw)
            elif kernel.mp:
                fusedopt.mp_sgd_update(w, g, t.masters[k], **kw)
            elif kernel.momentum:
                fusedopt.sgd_mom_update(w, g, t.moms[k], **kw)
            else:
                fusedopt.sgd_update(w, g, **kw)


def _check(kernel: Kernel, dtype, t0: Tensors, got: Tensors, per_tensor: Tensors, opts,
           steps=STEPS):
    """Aggregated == per-tensor bitwise; both close to the reference."""
    for k in range(len(t0.weights)):
        assert_bitwise_equal(got.weights[k], per_tensor.weights[k], f"weight {k} vs single call")
        if kernel.momentum:
            assert_bitwise_equal(got.moms[k], per_tensor.moms[k], f"momentum {k} vs single call")
        if kernel.mp:
            assert_bitwise_equal(got.masters[k], per_tensor.masters[k],
                                 f"master {k} vs single call")
        exp = ref.run_sgd(t0.weights[k], [t0.grads[s][k] for s in range(steps)], lr=t0.lrs[k],
                          wd=t0.wds[k], momentum=opts.get("momentum", 0.0) if kernel.momentum
                          else 0.0, rescale_grad=opts["rescale_grad"],
                          clip_gradient=opts["clip_gradient"], multi_precision=kernel.mp,
                          mom=t0.moms[k] if kernel.momentum else None,
                          weight32=t0.masters[k] if kernel.mp else None)
        assert_close(got.weights[k], exp.weight, dtype, multi_precision=kernel.mp,
                     err_msg=f"weight {k}")
        if kernel.momentum:
            assert_close(got.moms[k], exp.mom, dtype, role="state", multi_precision=kernel.mp,
                         err_msg=f"momentum {k}")
        if kernel.mp:
            assert_close(got.masters[k], exp.weight32, dtype, role="master",
                         multi_precision=True, err_msg=f"master {k}")
            assert_bitwise_equal(got.weights[k], got.masters[k].astype(dtype),
                                 f"weight {k} != cast(master)")


def _aggregate_vs_single(rng, kname, dtype_name, shapes, opts, steps=STEPS):
    kernel = KERNELS[kname]
    dtype = np_dtype(dtype_name)
    t0 = _make(rng, kernel, dtype, shapes, steps)
    got, single = t0.copy(), t0.copy()
    grads_before = [[g.copy() for g in gs] for gs in t0.grads]
    _run_multi(kernel, got, opts, steps)
    for s in range(steps):
        for k, g in enumerate(t0.grads[s]):
            assert_bitwise_equal(g, grads_before[s][k], "the gradient must not be modified")
    _run_single(kernel, single, opts, steps)
    _check(kernel, dtype, t0, got, single, opts, steps)
    return t0, got


RICH = dict(momentum=0.9, rescale_grad=0.5, clip_gradient=0.3)


@pytest.mark.parametrize("kname,dtype_name", KERNEL_DTYPES)
def test_many_tiny_tensors_plus_one_large(rng, kname, dtype_name):
    """161 tiny tensors of random sizes 1..300 and one of 300001 elements, in one call."""
    sizes = [int(s) for s in rng.integers(1, 301, 161)]
    shapes = [(s,) for s in sizes]
    shapes.insert(97, (300001,))
    _aggregate_vs_single(rng, kname, dtype_name, shapes, RICH, steps=3)


ODD_SHAPES = [(1,), (7,), (8,), (15,), (16,), (17,), (31,), (33,), (4097,), (3, 5, 7), (2, 1, 9),
              (65, 3)]


def _option_params():
    """(kernel, dtype, options): momentum x rescale x clip; momentum only for mom kernels."""
    out = []
    for p in KERNEL_DTYPES:
        kname, dn = p.values
        moms = [0.0, 0.9] if KERNELS[kname].momentum else [None]
        for opts in options_product(momentum=moms, rescale_grad=[1.0, 0.5],
                                    clip_gradient=[None, 0.3]):
            if opts["momentum"] is None:
                del opts["momentum"]
            out.append(pytest.param(kname, dn, opts, marks=p.marks,
                                    id=f"{p.id}-{options_id(opts)}"))
    return out


@pytest.mark.parametrize("kname,dtype_name,opts", _option_params())
def test_odd_sizes_option_product(rng, kname, dtype_name, opts):
    _aggregate_vs_single(rng, kname, dtype_name, ODD_SHAPES, opts)


ZERO_LAYOUTS = {
    "first": [(0,), (5,), (17,), (33,)],
    "middle": [(5,), (17,), (0,), (33,)],
    "last": [(5,), (17,), (33,), (0,)],
    "first-middle-last": [(0,), (5,), (3, 0), (17,), (0,), (33,), (0, 4)],
    "only": [(0,)],
}


@pytest.mark.parametrize("layout", list(ZERO_LAYOUTS))
@pytest.mark.parametrize("kname,dtype_name", KERNEL_DTYPES)
def test_zero_size_tensors_are_skipped(rng, kname, dtype_name, layout):
    """Zero-size tensors anywhere in the list are no-ops; the others are still updated."""
    shapes = ZERO_LAYOUTS[layout]
    t0, got = _aggregate_vs_single(rng, kname, dtype_name, shapes, RICH)
    for k, s in enumerate(shapes):
        assert got.weights[k].shape == s
        if got.weights[k].size:
            assert got.weights[k].tobytes() != t0.weights[k].tobytes(), f"tensor {k} not updated"


@pytest.mark.parametrize("kname", list(KERNELS))
def test_per_tensor_lrs_and_wds_are_used(kname):
    """Exact numbers: w = 1, g = 1 (float64), lr_k = 2**-k, wd_k = k/4 -> w = 1 - lr_k*(1 + wd_k).

    For the mp kernels (float16 weights) the master gets the same exact values.
    """
    kernel = KERNELS[kname]
    n = 5
    dtype = np.dtype(np.float16) if kernel.mp else np.dtype(np.float64)
    lrs = [2.0 ** -k for k in range(n)]
    wds = [k / 4 for k in range(n)]
    ws = [np.ones(3, dtype=dtype) for _ in range(n)]
    arrays = []
    moms, masters = [], []
    for w in ws:
        arrays += [w, np.ones(3, dtype=dtype)]
        if kernel.momentum:
            moms.append(np.zeros(3, dtype=F32 if kernel.mp else dtype))
            arrays.append(moms[-1])
        if kernel.mp:
            masters.append(np.ones(3, dtype=np.float32))
            arrays.append(masters[-1])
    kw = dict(lrs=lrs, wds=wds)
    if kernel.momentum:
        kw["momentum"] = 0.5
    kernel.multi(arrays, **kw)
    for k in range(n):
        expected = 1.0 - lrs[k] * (1.0 + wds[k])
        target = masters[k] if kernel.mp else ws[k]
        np.testing.assert_array_equal(target, np.full(3, expected, dtype=target.dtype),
                                      err_msg=f"tensor {k}")
        np.testing.assert_array_equal(ws[k], np.full(3, expected, dtype=dtype))
        if kernel.momentum:
            np.testing.assert_array_equal(moms[k], np.full(3, expected - 1.0))


# --------------------------------------------------------------------------------------------
# SGD(aggregate_num=k).fused_step on mixed dtypes == per-index updates
# --------------------------------------------------------------------------------------------
AGG_VALUES = [pytest.param(1, id="agg1"), pytest.param(4, id="agg4"),
              pytest.param(math.inf, id="agginf")]
MIXED_SHAPES = [(17,), (5, 3), (1,), (4097,), (33,), (2, 3, 4), (8,), (15,), (300,), (0,), (31,),
                (7, 7)]


LR_MULT = {1: 0.5, 4: 2.0, 7: 0.0}  # lr 0 is allowed: the momentum still decays
WD_MULT = {0: 0.0, 3: 3.0, 4: 0.5}


def _sgd(agg, momentum, **extra):
    opt = fusedopt.SGD(learning_rate=0.05, momentum=momentum, wd=0.01, rescale_grad=0.5,
                       clip_gradient=0.3, aggregate_num=agg, **extra)
    # different lr / wd per index through the multipliers
    opt.set_lr_mult(dict(LR_MULT))
    opt.set_wd_mult(dict(WD_MULT))
    return opt


def _mixed_params(rng, dtypes):
    ws, grads = [], []
    for k, shape in enumerate(MIXED_SHAPES):
        dt = dtypes[k % len(dtypes)]
        ws.append(random_array(rng, shape, dt))
        grads.append([random_array(rng, shape, dt, 2.0) for _ in range(STEPS)])
    return ws, grads


def _effective_lr_wd(index):
    """lr and wd of ``index`` for the optimizers made by ``_sgd`` (docs/SEMANTICS.md §2 multipliers)."""
    return 0.05 * LR_MULT.get(index, 1.0), 0.01 * WD_MULT.get(index, 1.0)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("agg", AGG_VALUES)
def test_sgd_aggregate_num_fused_step_mixed_dtypes(rng, agg, momentum):
    """float32 and float64 weights interleaved in one list are grouped internally; the result
    equals one fused_step per index (aggregate_num=1) bitwise, and the reference."""
    dtypes = [np.dtype(np.float32), np.dtype(np.float64)]
    ws, grads = _mixed_params(rng, dtypes)
    w0 = [w.copy() for w in ws]
    ws_single = [w.copy() for w in ws]
    n = len(ws)
    opt = _sgd(agg, momentum)
    opt_single = _sgd(1, momentum)
    states = [opt.create_state(i, w) for i, w in enumerate(ws)]
    states_single = [opt_single.create_state(i, w) for i, w in enumerate(ws_single)]
    for step in range(STEPS):
        gs = [g[step] for g in grads]
        opt.fused_step(list(range(n)), ws, gs, states)
        for i in range(n):
            opt_single.fused_step([i], [ws_single[i]], [gs[i]], [states_single[i]])
    for i in range(n):
        assert ws[i].dtype == w0[i].dtype
        assert_bitwise_equal(ws[i], ws_single[i], f"weight {i} ({ws[i].dtype})")
        if momentum:
            assert_bitwise_equal(states[i], states_single[i], f"momentum {i}")
        lr, wd = _effective_lr_wd(i)
        exp = ref.run_sgd(w0[i], grads[i], lr=lr, wd=wd, momentum=momentum, rescale_grad=0.5,
                          clip_gradient=0.3)
        assert_close(ws[i], exp.weight, err_msg=f"weight {i} ({ws[i].dtype})")
        if momentum:
            assert_close(states[i], exp.mom, role="state", err_msg=f"momentum {i}")


@pytest.mark.needs_ml_dtypes
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("agg", AGG_VALUES)
def test_sgd_aggregate_num_multi_precision_mixed_dtypes(rng, agg, momentum):
    """float16 / bfloat16 (fp32 masters) mixed with float32 / float64 through
    update_multi_precision: grouped by dtype and mp mode, equal to per-index updates."""
    dtypes = [np.dtype(np.float16), np.dtype(np.float32), np_dtype("bfloat16"),
              np.dtype(np.float64)]
    ws, grads = _mixed_params(rng, dtypes)
    w0 = [w.copy() for w in ws]
    ws_single = [w.copy() for w in ws]
    n = len(ws)
    opt = _sgd(agg, momentum, multi_precision=True)
    opt_single = _sgd(1, momentum, multi_precision=True)
    states = [opt.create_state_multi_precision(i, w) for i, w in enumerate(ws)]
    states_single = [opt_single.create_state_multi_precision(i, w)
                     for i, w in enumerate(ws_single)]
    for step in range(STEPS):
        gs = [g[step] for g in grads]
        opt.update_multi_precision(list(range(n)), ws, gs, states)
        for i in range(n):
            opt_single.update_multi_precision([i], [ws_single[i]], [gs[i]], [states_single[i]])
    for i in range(n):
        mp = ref.is_low_precision(ws[i].dtype)
        assert_bitwise_equal(ws[i], ws_single[i], f"weight {i} ({ws[i].dtype})")
        lr, wd = _effective_lr_wd(i)
        exp = ref.run_sgd(w0[i], grads[i], lr=lr, wd=wd, momentum=momentum, rescale_grad=0.5,
                          clip_gradient=0.3, multi_precision=True)
        assert_close(ws[i], exp.weight, multi_precision=mp, err_msg=f"weight {i}")
        if mp:
            w32, mom = states[i]
            assert_bitwise_equal(w32, states_single[i][0], f"master {i}")
            assert_close(w32, exp.weight32, ws[i].dtype, role="master", multi_precision=True,
                         err_msg=f"master {i}")
            assert_bitwise_equal(ws[i], w32.astype(ws[i].dtype), f"weight {i} != cast(master)")
        else:
            mom = states[i]
        if momentum:
            single_mom = states_single[i][1] if mp else states_single[i]
            assert_bitwise_equal(mom, single_mom, f"momentum {i}")
            assert_close(mom, exp.mom, ws[i].dtype, role="state", multi_precision=mp,
                         err_msg=f"momentum {i}")


@pytest.mark.parametrize("agg", [pytest.param(4, id="agg4"), pytest.param(math.inf, id="agginf")])
def test_sgd_aggregate_more_tensors_than_mxnet_limit(agg):
    """More than 60 tensors per fused_step (MXNet's unchecked limit) with exact numbers."""
    n = 130
    opt = fusedopt.SGD(learning_rate=0.25, momentum=0.5, aggregate_num=agg)
    ws = [np.full(k % 5 + 1, 1.0, dtype=np.float32 if k % 2 else np.float64) for k in range(n)]
    gs = [np.full(w.shape, 2.0, dtype=w.dtype) for w in ws]
    states = [opt.create_state(i, w) for i, w in enumerate(ws)]
    opt.fused_step(list(range(n)), ws, gs, states)
    opt.fused_step(list(range(n)), ws, gs, states)
    # step 1: m = -0.5, w = 0.5; step 2: m = 0.5*-0.5 - 0.5 = -0.75, w = -0.25
    for k, (w, m) in enumerate(zip(ws, states)):
        np.testing.assert_array_equal(w, np.full(w.shape, -0.25, dtype=w.dtype), f"w {k}")
        np.testing.assert_array_equal(m, np.full(w.shape, -0.75, dtype=w.dtype), f"m {k}")


# --------------------------------------------------------------------------------------------
# errors: validation of the whole call before the first write
# --------------------------------------------------------------------------------------------
def _valid_call(rng, kname, n=4, dtype_name=None):
    kernel = KERNELS[kname]
    dt = np_dtype(dtype_name or ("float16" if kernel.mp else "float32"))
    t = _make(rng, kernel, dt, [(k + 3,) for k in range(n)], steps=1)
    kw = dict(lrs=t.lrs, wds=t.wds)
    if kernel.momentum:
        kw["momentum"] = 0.9
    return kernel, t, kw


@pytest.mark.parametrize("which,delta", [("lrs", -1), ("lrs", 1), ("wds", -1), ("wds", 1)],
                         ids=["lrs-short", "lrs-long", "wds-short", "wds-long"])
@pytest.mark.parametrize("kname", list(KERNELS))
def test_lrs_wds_length_mismatch(rng, kname, which, delta):
    kernel, t, kw = _valid_call(rng, kname)
    kw[which] = kw[which][:-1] if delta < 0 else kw[which] + [0.1]
    arrays = t.flat(0)
    snap = Snapshot(*arrays)
    with pytest.raises(ValueError, match=which[:-1]):
        kernel.multi(arrays, **kw)
    snap.assert_unchanged()


@pytest.mark.parametrize("extra", [-1, 1], ids=["one-missing", "one-extra"])
@pytest.mark.parametrize("kname", list(KERNELS))
def test_array_count_not_a_multiple(rng, kname, extra):
    kernel, t, kw = _valid_call(rng, kname, n=3)
    arrays = t.flat(0)
    if extra < 0:
        arrays = arrays[:-1]
    else:
        arrays = arrays + [arrays[0].copy()]
    assert len(arrays) % kernel.arity != 0
    snap = Snapshot(*arrays)
    with pytest.raises(ValueError):
        kernel.multi(arrays, **kw)
    snap.assert_unchanged()


@pytest.mark.parametrize("alias", ["same-object", "same-buffer-view"])
@pytest.mark.parametrize("kname", list(KERNELS))
def test_same_weight_twice(rng, kname, alias):
    """A weight appearing twice would be updated twice: ValueError, nothing written."""
    kernel, t, kw = _valid_call(rng, kname, n=4)
    arrays = t.flat(0)
    a = kernel.arity
    # tensor 3 gets the weight of tensor 1 (its own grad / states)
    arrays[3 * a] = arrays[1 * a] if alias == "same-object" else arrays[1 * a][...]
    assert np.shares_memory(arrays[3 * a], arrays[1 * a])
    snap = Snapshot(*t.all_arrays())
    with pytest.raises(ValueError):
        kernel.multi(arrays, **kw)
    snap.assert_unchanged()


def _read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


# (what to break in the LAST tensor, exception type)
BAD_LAST = {
    "grad-shape": lambda t, k, rng: ("grad", random_array(rng, (t.weights[k].size + 1,),
                                                          t.weights[k].dtype), ValueError),
    "grad-dtype": lambda t, k, rng: ("grad", random_array(
        rng, t.weights[k].shape,
        np.float64 if t.weights[k].dtype != np.float64 else np.float32), TypeError),
    "weight-read-only": lambda t, k, rng: ("weight", _read_only(t.weights[k]), ValueError),
    "weight-int32": lambda t, k, rng: ("weight", np.zeros(t.weights[k].shape, np.int32),
                                       TypeError),
    "weight-non-contiguous": lambda t, k, rng: (
        "weight", np.zeros((t.weights[k].size, 2), t.weights[k].dtype)[:, 0], ValueError),
    "mom-dtype": lambda t, k, rng: ("mom", np.zeros(t.weights[k].shape, np.float64
                                                    if t.weights[k].dtype != np.float64
                                                    else np.float32), TypeError),
    "mom-shape": lambda t, k, rng: ("mom", np.zeros(t.weights[k].size + 2, t.moms[k].dtype),
                                    ValueError),
    "master-float16": lambda t, k, rng: ("master", np.zeros(t.weights[k].shape, np.float16),
                                         TypeError),
    "master-float64": lambda t, k, rng: ("master", np.zeros(t.weights[k].shape, np.float64),
                                         TypeError),
    "master-shape": lambda t, k, rng: ("master", np.zeros((1, t.weights[k].size), np.float32),
                                       ValueError),
}


def _bad_last_params():
    out = []
    for kname, kernel in KERNELS.items():
        for bad in BAD_LAST:
            if bad.startswith("mom") and not kernel.momentum:
                continue
            if bad.startswith("master") and not kernel.mp:
                continue
            out.append(pytest.param(kname, bad, id=f"{kname}-{bad}"))
    return out


@pytest.mark.parametrize("kname,bad", _bad_last_params())
def test_bad_last_tensor_nothing_written(rng, kname, bad):
    """docs/SEMANTICS.md §10: validation of every tensor completes before the first write, so an error in the
    LAST tensor leaves the first ones untouched."""
    kernel, t, kw = _valid_call(rng, kname, n=6)
    k = len(t.weights) - 1
    role, replacement, exc = BAD_LAST[bad](t, k, rng)
    arrays = t.flat(0)
    offset = {"weight": 0, "grad": 1, "mom": 2, "master": 2 + kernel.momentum}[role]
    arrays[k * kernel.arity + offset] = replacement
    snap = Snapshot(*arrays)
    with pytest.raises(exc):
        kernel.multi(arrays, **kw)
    snap.assert_unchanged(f"by a multi call rejected for tensor {k} ({bad})")


@pytest.mark.parametrize("kname", list(KERNELS))
def test_bad_hyper_parameter_nothing_written(rng, kname):
    kernel, t, kw = _valid_call(rng, kname)
    kw["lrs"] = kw["lrs"][:-1] + [-0.1]  # the last lr is negative
    arrays = t.flat(0)
    snap = Snapshot(*arrays)
    with pytest.raises(ValueError):
        kernel.multi(arrays, **kw)
    snap.assert_unchanged()


def test_sgd_fused_step_bad_last_grad_nothing_written(rng):
    """The optimizer class validates a whole aggregated list before writing."""
    opt = fusedopt.SGD(learning_rate=0.1, momentum=0.9, aggregate_num=math.inf)
    ws = [random_array(rng, (5,), np.float32) for _ in range(4)]
    gs = [random_array(rng, (5,), np.float32) for _ in range(4)]
    gs[-1] = random_array(rng, (6,), np.float32)  # shape mismatch in the last tensor
    states = [opt.create_state(i, w) for i, w in enumerate(ws)]
    snap = Snapshot(*ws, *states)
    with pytest.raises(ValueError):
        opt.fused_step(list(range(4)), ws, gs, states)
    snap.assert_unchanged()
