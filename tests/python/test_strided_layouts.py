"""Dense strided layouts on every path (README "Arrays"): weight, gradient and states of one update
that share one dense, non-overlapping layout with identical strides (a transposed or permuted NumPy
array, a torch channels_last tensor) are updated in place as one flat range; different strides,
gaps, overlapping (broadcast) strides and negative strides are refused with a ValueError naming the
argument, and nothing is written.

Expected values come from the float64 reference (reference.py) applied to C-contiguous copies of the
same logical arrays: the layout must not change any element's result.
"""
from __future__ import annotations

import numpy as np
import pytest

import reference as ref
from helpers import Snapshot, assert_close, import_fusedopt, random_array

fusedopt = import_fusedopt()
import fusedopt.functional as F  # noqa: E402

F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
try:
    import ml_dtypes

    BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover
    BF16 = None

def close(actual, expected, dtype, **kw):
    """assert_close of an update's result (any layout) with the float64 reference value."""
    assert_close(np.ascontiguousarray(actual), expected, dtype, check_dtype=False, **kw)


# (logical shape, axes): the array is allocated C-contiguous with the permuted shape and transposed
# back, so its strides are a permutation of the C-contiguous ones.
LAYOUTS = {
    "transposed-2d": ((5, 7), (1, 0)),
    "permuted-3d": ((3, 4, 5), (2, 0, 1)),
    "nchw-as-nhwc": ((2, 3, 4, 5), (0, 3, 1, 2)),  # channels_last of an NCHW array
    "size-one-dims": ((1, 6, 1, 3), (3, 1, 2, 0)),
}


def in_layout(a: np.ndarray, axes) -> np.ndarray:
    """A new array equal to ``a`` whose memory is laid out as ``a.transpose(inverse(axes))``."""
    inv = np.argsort(axes)
    base = np.ascontiguousarray(np.transpose(a, inv))
    out = np.transpose(base, axes)
    assert np.array_equal(out.astype(np.float64), a.astype(np.float64))
    return out


def strided_inputs(rng, layout: str, dt, n_states: int, state_dt=None):
    shape, axes = LAYOUTS[layout]
    arrays = [random_array(rng, shape, dt) for _ in range(2)]
    arrays += [random_array(rng, shape, state_dt or dt) for _ in range(n_states)]
    strided = [in_layout(a, axes) for a in arrays]
    if layout != "size-one-dims":
        assert all(not s.flags.c_contiguous for s in strided)
    return arrays, strided


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("dt", [F16, F32, F64], ids=lambda d: d.name)
def test_sgd_and_sgd_mom(rng, layout, dt):
    (w0, g, m0), (w, gs, m) = strided_inputs(rng, layout, dt, 1)
    ptr_w, ptr_m = w.ctypes.data, m.ctypes.data
    F.sgd_mom_update(w, gs, m, lr=0.1, momentum=0.9, wd=0.01, rescale_grad=0.5, clip_gradient=0.7)
    ew, em = ref.sgd_mom_update(w0, g, m0, lr=0.1, momentum=0.9, wd=0.01, rescale_grad=0.5,
                                clip_gradient=0.7)
    assert w.ctypes.data == ptr_w and m.ctypes.data == ptr_m  # in place
    close(w, ew, dt)
    close(m, em, dt, role="state")
    (w0, g), (w, gs) = strided_inputs(rng, layout, dt, 0)
    for _ in range(3):  # several steps
        F.sgd_update(w, gs, lr=0.05, wd=0.1)
        w0 = ref.round_to(ref.sgd_update(w0, g, lr=0.05, wd=0.1), dt)
    close(w, w0, dt)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("low", ["float16", "bfloat16"])
def test_multi_precision(rng, layout, low):
    if low == "bfloat16" and BF16 is None:
        pytest.skip("ml_dtypes missing")
    dt = F16 if low == "float16" else BF16
    shape, axes = LAYOUTS[layout]
    w32_0 = random_array(rng, shape, F32)
    g0 = random_array(rng, shape, dt)
    m0 = random_array(rng, shape, F32)
    w, g, m, w32 = (in_layout(a, axes) for a in (w32_0.astype(dt), g0, m0, w32_0))
    F.mp_sgd_mom_update(w, g, m, w32, lr=0.1, momentum=0.9, wd=0.01)
    ew, em, ew32 = ref.mp_sgd_mom_update(w32_0.astype(dt), g0, m0, w32_0, lr=0.1, momentum=0.9,
                                         wd=0.01)
    close(w32, ew32, F32)
    close(m, em, F32, role="state")
    close(w, ew, dt)
    w, w32 = in_layout(w32_0.astype(dt), axes), in_layout(w32_0, axes)
    F.mp_sgd_update(w, g, w32, lr=0.1, wd=0.01)
    ew, ew32 = ref.mp_sgd_update(w32_0.astype(dt), g0, w32_0, lr=0.1, wd=0.01)
    close(w32, ew32, F32)
    close(w, ew, dt)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("with_mom", [False, True])
def test_dcasgd(rng, layout, with_mom):
    n = 2 if with_mom else 1
    arrays, strided = strided_inputs(rng, layout, F32, n)
    if with_mom:
        (w0, g, m0, p0), (w, gs, m, p) = arrays, strided
    else:
        (w0, g, p0), (w, gs, p) = arrays, strided
        m0 = m = None
    F.dcasgd_update(w, gs, m, p, lr=0.1, momentum=0.9 if with_mom else 0.0, lamda=0.3, wd=0.01)
    ew, em, ep = ref.dcasgd_update(w0, g, m0, p0, lr=0.1, momentum=0.9 if with_mom else 0.0,
                                   lamda=0.3, wd=0.01)
    close(w, ew, F32)
    close(p, ep, F32)
    if with_mom:
        close(m, em, F32, role="state")


def test_mp_dcasgd(rng):
    shape, axes = LAYOUTS["nchw-as-nhwc"]
    w32_0, p0, m0 = (random_array(rng, shape, F32) for _ in range(3))
    g0 = random_array(rng, shape, F16)
    w, g, m, p, w32 = (in_layout(a, axes) for a in (w32_0.astype(F16), g0, m0, p0, w32_0))
    F.mp_dcasgd_update(w, g, m, p, w32, lr=0.1, momentum=0.9, lamda=0.2)
    ew, em, ep, ew32 = ref.mp_dcasgd_update(w32_0.astype(F16), g0, m0, p0, w32_0, lr=0.1,
                                            momentum=0.9, lamda=0.2)
    close(w32, ew32, F32)
    close(p, ep, F32)
    close(m, em, F32, role="state")
    close(w, ew, F16)


def test_aggregated_mixed_layouts(rng):
    """One aggregated call over tensors of different layouts (each tensor's arrays share theirs)."""
    cases = [(rng, layout, dt) for layout in LAYOUTS for dt in (F32, F64)]
    arrays, strided = zip(*(strided_inputs(r, lay, dt, 1) for r, lay, dt in cases))
    contiguous = [[random_array(rng, (9,), F32) for _ in range(3)]]
    arrays = list(arrays) + contiguous
    strided = list(strided) + [[a.copy() for a in contiguous[0]]]
    lrs = [0.01 * (k + 1) for k in range(len(strided))]
    wds = [0.001 * k for k in range(len(strided))]
    F.multi_sgd_mom_update([a for trio in strided for a in trio], lrs=lrs, wds=wds, momentum=0.8)
    for k, ((w0, g, m0), (w, _, m)) in enumerate(zip(arrays, strided)):
        ew, em = ref.sgd_mom_update(w0, g, m0, lr=lrs[k], momentum=0.8, wd=wds[k])
        close(w, ew, w.dtype)
        close(m, em, w.dtype, role="state")
    # the same through multi_sgd_update and multi_sgd_update_states
    arrays, strided = zip(*(strided_inputs(r, lay, F32, 0) for r, lay, _ in cases))
    F.multi_sgd_update([a for pair in strided for a in pair], lrs=lrs[:len(cases)],
                       wds=wds[:len(cases)])
    for k, ((w0, g), (w, _)) in enumerate(zip(arrays, strided)):
        close(w, ref.sgd_update(w0, g, lr=lrs[k], wd=wds[k]), F32)
    arrays, strided = zip(*(strided_inputs(r, lay, F32, 1) for r, lay, _ in cases))
    assert F.multi_sgd_update_states([s[0] for s in strided], [s[1] for s in strided],
                                     [s[2] for s in strided], lrs=lrs[:len(cases)],
                                     wds=wds[:len(cases)], momentum=0.5)
    for k, ((w0, g, m0), (w, _, m)) in enumerate(zip(arrays, strided)):
        ew, em = ref.sgd_mom_update(w0, g, m0, lr=lrs[k], momentum=0.5, wd=wds[k])
        close(w, ew, F32)
        close(m, em, F32, role="state")


def test_aggregated_mp_and_dcasgd(rng):
    shape, axes = LAYOUTS["permuted-3d"]
    w32_0 = [random_array(rng, shape, F32) for _ in range(2)]
    g0 = [random_array(rng, shape, F16) for _ in range(2)]
    m0 = [random_array(rng, shape, F32) for _ in range(2)]
    flat, keep = [], []
    for k in range(2):
        trio = [in_layout(a, axes) for a in (w32_0[k].astype(F16), g0[k], m0[k], w32_0[k])]
        flat += trio
        keep.append(trio)
    F.multi_mp_sgd_mom_update(flat, lrs=[0.1, 0.2], wds=[0.0, 0.01], momentum=0.9)
    for k in range(2):
        ew, em, ew32 = ref.mp_sgd_mom_update(w32_0[k].astype(F16), g0[k], m0[k], w32_0[k],
                                             lr=[0.1, 0.2][k], momentum=0.9, wd=[0.0, 0.01][k])
        close(keep[k][3], ew32, F32)
        close(keep[k][2], em, F32, role="state")
        close(keep[k][0], ew, F16)
    arrays, strided = zip(*(strided_inputs(rng, lay, F64, 2) for lay in LAYOUTS))
    F.multi_dcasgd_update([s[0] for s in strided], [s[1] for s in strided],
                          [s[2] for s in strided], [s[3] for s in strided],
                          lrs=[0.1] * len(LAYOUTS), wds=[0.01] * len(LAYOUTS), momentum=0.9,
                          lamda=0.5)
    for (w0, g, m0, p0), (w, _, m, p) in zip(arrays, strided):
        ew, em, ep = ref.dcasgd_update(w0, g, m0, p0, lr=0.1, momentum=0.9, lamda=0.5, wd=0.01)
        close(w, ew, F64)
        close(m, em, F64, role="state")
        close(p, ep, F64)


# ------------------------------------------------------------------------------------ refusals
def _gapped(rng):
    return random_array(rng, (6, 8), F32)[:, ::2]


def _overlapping(rng):
    base = random_array(rng, (12,), F32)
    return np.lib.stride_tricks.as_strided(base, (3, 4), (4 * 4, 4 * 2), writeable=True)  # 3x4 over 10 elements


def _broadcast(rng):
    base = random_array(rng, (4,), F32)
    return np.lib.stride_tricks.as_strided(base, (3, 4), (0, 4), writeable=True)


def _negative(rng):
    return random_array(rng, (3, 4), F32)[::-1]


def _negative_transposed(rng):
    return random_array(rng, (4, 3), F32).T[:, ::-1]


@pytest.mark.parametrize("make", [_gapped, _overlapping, _broadcast, _negative,
                                  _negative_transposed],
                         ids=["gaps", "overlapping", "broadcast", "negative", "negative-transposed"])
@pytest.mark.parametrize("role", ["weight", "grad", "mom"])
def test_non_dense_refused_nothing_written(rng, make, role):
    bad = make(rng)
    shape = bad.shape
    arrays = {"weight": random_array(rng, shape, F32), "grad": random_array(rng, shape, F32),
              "mom": random_array(rng, shape, F32)}
    arrays[role] = bad
    snap = Snapshot(*(a.base if a.base is not None else a for a in arrays.values()))
    pattern = rf"sgd_mom_update: {role} must (be dense|have the strides of weight)"
    with pytest.raises(ValueError, match=pattern):
        F.sgd_mom_update(arrays["weight"], arrays["grad"], arrays["mom"], lr=0.1, momentum=0.9)
    snap.assert_unchanged()


@pytest.mark.parametrize("role", ["grad", "mom", "weight32"])
def test_mismatched_strides_refused_nothing_written(rng, role):
    """Each array dense on its own, but with strides other than the weight's."""
    shape, axes = LAYOUTS["permuted-3d"]
    w32 = random_array(rng, shape, F32)
    arrays = {"weight": in_layout(w32.astype(F16), axes),
              "grad": in_layout(random_array(rng, shape, F16), axes),
              "mom": in_layout(random_array(rng, shape, F32), axes),
              "weight32": in_layout(w32, axes)}
    arrays[role] = np.ascontiguousarray(arrays[role])
    snap = Snapshot(*arrays.values())
    with pytest.raises(ValueError, match=rf"mp_sgd_mom_update: {role} must have the strides of "
                                         r"weight \(1, 15, 3\), got \(20, 5, 1\)"):
        F.mp_sgd_mom_update(arrays["weight"], arrays["grad"], arrays["mom"], arrays["weight32"],
                            lr=0.1, momentum=0.9)
    snap.assert_unchanged()


def test_aggregated_refusal_in_last_tensor_writes_nothing(rng):
    good = [strided_inputs(rng, "transposed-2d", F32, 1)[1] for _ in range(3)]
    w, g, m = strided_inputs(rng, "transposed-2d", F32, 1)[1]
    flat = [a for trio in good for a in trio] + [w, np.ascontiguousarray(g), m]
    snap = Snapshot(*flat)
    with pytest.raises(ValueError, match=r"grads\[3\] must have the strides of weights\[3\]"):
        F.multi_sgd_mom_update(flat, lrs=[0.1] * 4, wds=[0.0] * 4, momentum=0.9)
    snap.assert_unchanged()


def test_overlap_between_strided_arrays_refused(rng):
    """Two transposed views of one buffer: dense each, same strides, same memory."""
    w = in_layout(random_array(rng, (4, 6), F32), (1, 0))
    snap = Snapshot(w)
    with pytest.raises(ValueError, match="overlaps"):
        F.sgd_mom_update(w, w.copy(order="K"), w, lr=0.1, momentum=0.9)
    snap.assert_unchanged()


def test_row_sparse_weight_must_be_c_contiguous(rng):
    w = in_layout(random_array(rng, (6, 3), F32), (1, 0))
    grad = fusedopt.row_sparse_array((random_array(rng, (2, 3), F32), [1, 4]), (6, 3))
    snap = Snapshot(w)
    with pytest.raises(ValueError, match="row-sparse gradient must be C-contiguous"):
        F.sgd_update(w, grad, lr=0.1)
    snap.assert_unchanged()


def test_check_sgd_args_accepts_and_refuses_as_the_update(rng):
    (_, _, _), (w, g, m) = strided_inputs(rng, "permuted-3d", F32, 1)
    F.check_sgd_args(w, g, m, None, lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="mom must have the strides of weight"):
        F.check_sgd_args(w, g, np.ascontiguousarray(m), None, lr=0.1, momentum=0.9)


# ------------------------------------------------------------------------ optimizers and states
@pytest.mark.parametrize("multi_precision", [False, True])
@pytest.mark.parametrize("aggregate", [False, True])
def test_optimizer_classes_keep_the_weights_layout(rng, multi_precision, aggregate):
    shape, axes = LAYOUTS["nchw-as-nhwc"]
    dt = F16 if multi_precision else F32
    w0 = [random_array(rng, shape, dt) for _ in range(2)]
    grads = [[random_array(rng, shape, dt) for _ in range(2)] for _ in range(3)]
    ws = [in_layout(w, axes) for w in w0]
    opt = fusedopt.SGD(learning_rate=0.1, momentum=0.9, wd=0.01,
                       multi_precision=multi_precision, aggregate_num=4 if aggregate else 1)
    upd = fusedopt.get_updater(opt)
    for step in range(3):
        upd([0, 1], [in_layout(g, axes) for g in grads[step]], ws)
    for k in range(2):
        run = ref.run_sgd(w0[k], [grads[s][k] for s in range(3)], lr=0.1, momentum=0.9, wd=0.01,
                          multi_precision=multi_precision)
        close(ws[k], run.weight, dt)
        state = upd.states[k]
        mom = state[1] if multi_precision else state
        assert mom.strides == in_layout(np.zeros(shape, mom.dtype), axes).strides
    # saved and loaded states keep working with the strided weights
    blob = upd.get_states()
    upd2 = fusedopt.get_updater(fusedopt.SGD(learning_rate=0.1, momentum=0.9, wd=0.01,
                                             multi_precision=multi_precision))
    upd2.set_states(blob)
    ws2 = [w.copy(order="K") for w in ws]
    upd([0, 1], [in_layout(g, axes) for g in grads[0]], ws)
    upd2([0, 1], [in_layout(g, axes) for g in grads[0]], ws2)
    for a, b in zip(ws, ws2):
        np.testing.assert_array_equal(a, b)


def test_dcasgd_class_and_prepared_step(rng):
    shape, axes = LAYOUTS["transposed-2d"]
    w0 = random_array(rng, shape, F32)
    g0 = [random_array(rng, shape, F32) for _ in range(3)]
    w = in_layout(w0, axes)
    g = in_layout(g0[0], axes)
    opt = fusedopt.DCASGD(learning_rate=0.1, momentum=0.9, lamda=0.1, use_fused_step=True)
    state = opt.create_state(0, w)
    prepared = opt.prepare([0], [w], [g], [state])
    for step in range(3):
        g[...] = g0[step]
        prepared.step()
    run = ref.run_dcasgd(w0, g0, lr=0.1, momentum=0.9, lamda=0.1)
    close(w, run.weight, F32)


def test_prepare_refuses_mismatched_state(rng):
    shape, axes = LAYOUTS["transposed-2d"]
    w = in_layout(random_array(rng, shape, F32), axes)
    g = in_layout(random_array(rng, shape, F32), axes)
    opt = fusedopt.SGD(learning_rate=0.1, momentum=0.9)
    snap = Snapshot(w)
    with pytest.raises(ValueError, match=r"moms\[0\] must have the strides of weights\[0\]"):
        opt.prepare([0], [w], [g], [np.zeros(shape, F32)])
    snap.assert_unchanged()


# ----------------------------------------------------------------------------------------- torch
def _torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_torch_channels_last(rng, dtype):
    torch = _torch()
    tdt = getattr(torch, dtype)
    shape = (2, 3, 4, 5)
    w0 = torch.from_numpy(random_array(rng, shape, F64))
    g0 = torch.from_numpy(random_array(rng, shape, F64))
    m0 = torch.from_numpy(random_array(rng, shape, F64))

    def cl(t, dt=tdt):
        out = t.to(dt).contiguous(memory_format=torch.channels_last)
        assert not out.is_contiguous()
        return out

    if dtype in ("float16", "bfloat16"):
        w, g, m, w32 = cl(w0), cl(g0), cl(m0, torch.float32), cl(w0, torch.float32)
        ptr = w.data_ptr()
        F.mp_sgd_mom_update(w, g, m, w32, lr=0.1, momentum=0.9, wd=0.01)
        np_dt = BF16 if dtype == "bfloat16" else F16
        def as_np(t):
            t = t.contiguous()
            return (t.view(torch.int16).numpy().view(np_dt) if dtype == "bfloat16"
                    else t.numpy())
        ew, em, ew32 = ref.mp_sgd_mom_update(as_np(cl(w0)), as_np(g), m0.float().numpy(),
                                             w0.float().numpy(), lr=0.1, momentum=0.9, wd=0.01)
        assert w.data_ptr() == ptr
        close(w32.contiguous().numpy(), ew32, F32)
        close(m.contiguous().numpy(), em, F32, role="state")
        close(as_np(w), ew, np_dt)
        return
    w, g, m = cl(w0), cl(g0), cl(m0)
    ptr = w.data_ptr()
    F.sgd_mom_update(w, g, m, lr=0.1, momentum=0.9, wd=0.01)
    ew, em = ref.sgd_mom_update(cl(w0).contiguous().numpy(), g.contiguous().numpy(),
                                cl(m0).contiguous().numpy(), lr=0.1, momentum=0.9, wd=0.01)
    assert w.data_ptr() == ptr and w.is_contiguous(memory_format=torch.channels_last)
    np_dt = np.dtype(dtype)
    close(w.contiguous().numpy(), ew, np_dt)
    close(m.contiguous().numpy(), em, np_dt, role="state")
    # a contiguous gradient with a channels_last weight: refused, nothing written
    before = w.clone()
    with pytest.raises(ValueError, match="grad must have the strides of weight"):
        F.sgd_update(w, g.contiguous(), lr=0.1)
    assert torch.equal(w, before)


def test_torch_multi_and_optimizer_states(rng):
    torch = _torch()
    shapes = [(2, 3, 4, 5), (4, 1, 3, 3), (7,)]
    params = []
    for s in shapes:
        t = torch.from_numpy(random_array(rng, s, F32))
        if len(s) == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        params.append(t)
    grads = [torch.from_numpy(random_array(rng, tuple(p.shape), F32)) for p in params]
    grads = [g.contiguous(memory_format=torch.channels_last) if g.dim() == 4 else g for g in grads]
    expected = [p.clone().contiguous().numpy() for p in params]
    opt = fusedopt.SGD(learning_rate=0.1, momentum=0.9, aggregate_num=8)
    upd = fusedopt.get_updater(opt)
    moms = [np.zeros(e.shape) for e in expected]
    for _ in range(2):
        upd(list(range(3)), grads, params)
        for k in range(3):
            expected[k], moms[k] = ref.sgd_mom_update(expected[k], grads[k].contiguous().numpy(),
                                                      moms[k], lr=0.1, momentum=0.9)
    for k in range(3):
        close(params[k].contiguous().numpy(), expected[k], F32)
        assert upd.states[k].stride() == params[k].stride()


def test_dlpack_producer_with_dense_strides(rng):
    """A raw DLPack producer (not NumPy, not torch) with column-major strides."""
    T = fusedopt._core._testing
    wb, gb = random_array(rng, (12,), F32), random_array(rng, (12,), F32)
    w0 = wb.reshape(4, 3).T.copy()  # logical (3, 4) values of the column-major buffers
    g0 = gb.reshape(4, 3).T.copy()
    w = T.make_tensor([3, 4], base=wb, strides=[1, 3])
    g = T.make_tensor([3, 4], base=gb, strides=[1, 3])
    info = T.inspect(T.make_tensor([3, 4], base=wb, strides=[1, 3]))
    assert info["dense"] and not info["contiguous"] and info["strides"] == [1, 3]
    F.sgd_update(w, g, lr=0.25, wd=0.1)
    close(wb.reshape(4, 3).T, ref.sgd_update(w0, g0, lr=0.25, wd=0.1), F32)
    snap = Snapshot(wb)
    with pytest.raises(ValueError, match="grad must have the strides of weight"):
        F.sgd_update(T.make_tensor([3, 4], base=wb, strides=[1, 3]), g0, lr=0.25)
    snap.assert_unchanged()
