"""The test oracle (reference.py) against every worked number of docs/SEMANTICS.md §3, 6 and 7.

Needs no fusedopt: it checks that the oracle the other test files use is itself right.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import reference as ref
from helpers import np_dtype


# ------------------------------------------------------------------------------ docs/SEMANTICS.md §3
def test_reference_sgd_momentum_worked_example():
    # w=1, g=1, lr=0.1, mu=0.9, wd=0: step 1 m=-0.1, w=0.9; step 2 m=-0.19, w=0.71
    w, m = ref.sgd_mom_update(1.0, 1.0, 0.0, lr=0.1, momentum=0.9)
    assert math.isclose(float(m), -0.1, abs_tol=1e-15)
    assert math.isclose(float(w), 0.9, abs_tol=1e-15)
    w, m = ref.sgd_mom_update(w, 1.0, m, lr=0.1, momentum=0.9)
    assert math.isclose(float(m), -0.19, abs_tol=1e-15)
    assert math.isclose(float(w), 0.71, abs_tol=1e-15)


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_reference_run_sgd_momentum_worked_example(dtype_name):
    dt = np_dtype(dtype_name)
    tol = 1e-7 if dtype_name == "float32" else 1e-15
    one = np.ones(1, dt)
    r1 = ref.run_sgd(one, [one], lr=0.1, momentum=0.9)
    r2 = ref.run_sgd(one, [one, one], lr=0.1, momentum=0.9)
    assert r2.weight.dtype == dt and r2.mom.dtype == dt
    np.testing.assert_allclose(r1.mom, [-0.1], atol=tol, rtol=0)
    np.testing.assert_allclose(r1.weight, [0.9], atol=tol, rtol=0)
    np.testing.assert_allclose(r2.mom, [-0.19], atol=tol, rtol=0)
    np.testing.assert_allclose(r2.weight, [0.71], atol=tol, rtol=0)


def test_reference_sgd_clip_worked_example():
    w = ref.sgd_update([1, -2, 3, 0.5], [0.3, -0.7, 2, -0.1], lr=0.1, clip_gradient=0.5)
    np.testing.assert_allclose(w, [0.97, -1.95, 2.95, 0.51], rtol=0, atol=1e-15)


def test_reference_clip_semantics():
    x = np.array([np.nan, np.inf, -np.inf, 0.7, -0.7, 0.2, -0.0])
    got = ref.clip(x, 0.5)
    assert np.isnan(got[0])  # NaN passes through
    np.testing.assert_array_equal(got[1:], [0.5, -0.5, 0.5, -0.5, 0.2, -0.0])
    np.testing.assert_array_equal(ref.clip(x, None), x)  # off
    np.testing.assert_array_equal(ref.clip(x, math.inf), x)  # +inf clips nothing
    # clip applies to the rescaled gradient, weight decay is added after and never clipped
    r = ref.preprocess_grad(np.array([10.0]), np.array([4.0]), wd=0.5, rescale_grad=0.5,
                            clip_gradient=1.0)
    np.testing.assert_array_equal(r, [1.0 + 5.0])


def test_reference_lr_inside_momentum_buffer():
    # lr 0.1 then 0.01 with g=1: m1=-0.1, w1=0.9; m2=0.9*-0.1-0.01=-0.1, w2=0.8 (PyTorch: 0.881)
    r = ref.run_sgd(np.ones(1), [np.ones(1)] * 2, lr=[0.1, 0.01], momentum=0.9)
    np.testing.assert_allclose(r.weight, [0.8], rtol=0, atol=1e-15)
    np.testing.assert_allclose(r.mom, [-0.1], rtol=0, atol=1e-15)


@pytest.mark.parametrize("bad", [dict(clip_gradient=0.0), dict(clip_gradient=-1.0),
                                 dict(clip_gradient=math.nan), dict(lr=-0.1), dict(wd=-1.0),
                                 dict(lr=math.nan), dict(rescale_grad=math.inf)],
                         ids=lambda d: "-".join(f"{k}={v}" for k, v in d.items()))
def test_reference_refuses_what_spec_refuses(bad):
    kw = dict(lr=0.1) | bad
    with pytest.raises(ValueError):
        ref.sgd_update(np.ones(2), np.ones(2), **kw)


# ------------------------------------------------------------------------------ docs/SEMANTICS.md §6
W0 = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]], dtype=np.float64)
ROWS = np.array([[1, 2, 3], [-1, -1, -1]], dtype=np.float64)
IDX = np.array([1, 3])


def test_reference_row_sparse_no_momentum_worked_example():
    lazy, _ = ref.sgd_row_sparse_update(W0, ROWS, IDX, lr=0.1, wd=0.5, lazy_update=True)
    np.testing.assert_allclose(lazy, [[0, 1, 2], [2.75, 3.6, 4.45], [6, 7, 8],
                                      [8.65, 9.6, 10.55]], rtol=0, atol=1e-14)
    std, _ = ref.sgd_row_sparse_update(W0, ROWS, IDX, lr=0.1, wd=0.5, lazy_update=False)
    np.testing.assert_allclose(std, [[0, 0.95, 1.9], [2.75, 3.6, 4.45], [5.7, 6.65, 7.6],
                                     [8.65, 9.6, 10.55]], rtol=0, atol=1e-14)


def test_reference_row_sparse_momentum_worked_example():
    m0 = np.ones_like(W0)
    w, m = ref.sgd_row_sparse_update(W0, ROWS, IDX, m0, lr=0.1, wd=0.5, momentum=0.9,
                                     lazy_update=True)
    np.testing.assert_allclose(w, [[0, 1, 2], [3.65, 4.5, 5.35], [6, 7, 8], [9.55, 10.5, 11.45]],
                               rtol=0, atol=1e-14)
    np.testing.assert_allclose(m, [[1, 1, 1], [0.65, 0.5, 0.35], [1, 1, 1], [0.55, 0.5, 0.45]],
                               rtol=0, atol=1e-14)
    w, m = ref.sgd_row_sparse_update(W0, ROWS, IDX, m0, lr=0.1, wd=0.5, momentum=0.9,
                                     lazy_update=False)
    np.testing.assert_allclose(w, [[0.9, 1.85, 2.8], [3.65, 4.5, 5.35], [6.6, 7.55, 8.5],
                                   [9.55, 10.5, 11.45]], rtol=0, atol=1e-14)
    np.testing.assert_allclose(m, [[0.9, 0.85, 0.8], [0.65, 0.5, 0.35], [0.6, 0.55, 0.5],
                                   [0.55, 0.5, 0.45]], rtol=0, atol=1e-14)


def test_reference_row_sparse_unsorted_and_zero_rows():
    # unsorted indices give the same result; a stored all-zero row is still decayed when lazy
    perm = ref.sgd_row_sparse_update(W0, ROWS[::-1], IDX[::-1], lr=0.1, wd=0.5)[0]
    np.testing.assert_array_equal(perm, ref.sgd_row_sparse_update(W0, ROWS, IDX, lr=0.1, wd=0.5)[0])
    w, _ = ref.sgd_row_sparse_update(W0, np.zeros((1, 3)), np.array([2]), lr=0.1, wd=0.5)
    np.testing.assert_allclose(w[2], [5.7, 6.65, 7.6], rtol=0, atol=1e-14)
    np.testing.assert_array_equal(w[[0, 1, 3]], W0[[0, 1, 3]])
    for bad in (np.array([1, 1]), np.array([4, 0]), np.array([-1, 0])):
        with pytest.raises(ValueError):
            ref.sgd_row_sparse_update(W0, ROWS, bad, lr=0.1)


def test_reference_run_sgd_row_sparse_matches_single_step():
    g = ref.RowSparseGrad(ROWS, IDX, W0.shape)
    for lazy in (True, False):
        r = ref.run_sgd(W0, [g], lr=0.1, wd=0.5, momentum=0.9, mom=np.ones_like(W0),
                        lazy_update=lazy)
        w, m = ref.sgd_row_sparse_update(W0, ROWS, IDX, np.ones_like(W0), lr=0.1, wd=0.5,
                                         momentum=0.9, lazy_update=lazy)
        np.testing.assert_array_equal(r.weight, w)
        np.testing.assert_array_equal(r.mom, m)


# ------------------------------------------------------------------------------ docs/SEMANTICS.md §7
# w0=1, g=0.5 each step, lr=0.1, wd=0.1, lam=0.5.
# Exact decimals derived by hand from docs/SEMANTICS.md formula:
#   r1 = 0.6, w1 = 0.94;  r2 = 0.5 + 0.094 = 0.594,
#   d2 = 0.594 + 0.5 * 0.594^2 * (0.94 - 1) = 0.58341492
#   mu=0:   w2 = 0.94 - 0.058341492 = 0.881658508
#   mu=0.9: m1 = -0.06, m2 = -0.054 - 0.058341492 = -0.112341492, w2 = 0.827658508
# docs/SEMANTICS.md prints w2(mu=0.9) as 0.82765853: that is the float32 result, 2.2e-8 from the exact value,
# so the documented printed numbers are checked at 5e-8 and the exact decimals at 1e-15.
DCASGD_KW = dict(lr=0.1, wd=0.1, lamda=0.5)


def test_reference_dcasgd_worked_example_no_momentum():
    w1, m1, p1 = ref.dcasgd_update(1.0, 0.5, None, 1.0, **DCASGD_KW)
    assert m1 is None
    assert math.isclose(float(w1), 0.94, abs_tol=1e-15) and float(p1) == 1.0
    w2, _, p2 = ref.dcasgd_update(w1, 0.5, None, p1, **DCASGD_KW)
    assert math.isclose(float(w2), 0.881658508, abs_tol=1e-15)
    assert math.isclose(float(w2), 0.8816585, abs_tol=5e-8)  # the documented printed value
    assert float(p2) == float(w1)  # prev after step 2 = 0.94


def test_reference_dcasgd_worked_example_momentum():
    w1, m1, p1 = ref.dcasgd_update(1.0, 0.5, 0.0, 1.0, momentum=0.9, **DCASGD_KW)
    assert math.isclose(float(w1), 0.94, abs_tol=1e-15)
    assert math.isclose(float(m1), -0.06, abs_tol=1e-15)
    w2, m2, p2 = ref.dcasgd_update(w1, 0.5, m1, p1, momentum=0.9, **DCASGD_KW)
    assert math.isclose(float(m2), -0.112341492, abs_tol=1e-15)
    assert math.isclose(float(w2), 0.827658508, abs_tol=1e-15)
    assert math.isclose(float(m2), -0.11234149, abs_tol=5e-8)  # the documented printed values
    assert math.isclose(float(w2), 0.82765853, abs_tol=5e-8)
    assert math.isclose(float(p2), 0.94, abs_tol=1e-15)


def test_reference_run_dcasgd_float32_matches_spec_print():
    one = np.ones(1, np.float32)
    r = ref.run_dcasgd(one, [np.full(1, 0.5, np.float32)] * 2, momentum=0.9, **DCASGD_KW)
    assert r.weight.dtype == np.float32 and r.mom.dtype == np.float32 and r.prev.dtype == np.float32
    np.testing.assert_allclose(r.weight, [0.82765853], rtol=0, atol=3e-8)
    np.testing.assert_allclose(r.mom, [-0.11234149], rtol=0, atol=3e-8)
    np.testing.assert_allclose(r.prev, [0.94], rtol=0, atol=3e-8)


def test_reference_dcasgd_first_step_equals_sgd():
    rng = np.random.default_rng(1)
    w, g = rng.standard_normal(50), rng.standard_normal(50)
    for mu in (0.0, 0.9):
        kw = dict(lr=0.1, wd=0.01, rescale_grad=0.5, clip_gradient=0.3)
        d = ref.dcasgd_update(w, g, np.zeros(50) if mu else None, w, momentum=mu, lamda=0.5, **kw)
        if mu:
            sw, sm = ref.sgd_mom_update(w, g, np.zeros(50), momentum=mu, **kw)
            np.testing.assert_array_equal(d[1], sm)
        else:
            sw = ref.sgd_update(w, g, **kw)
        np.testing.assert_array_equal(d[0], sw)
        np.testing.assert_array_equal(d[2], w)


# ------------------------------------------------------------------------------ rounding / mp
def test_reference_round_to_storage_dtypes():
    x = np.array([1.0 + 2.0**-11, 1.0 + 3 * 2.0**-11, 0.1])  # fp16 ties -> nearest even
    h = ref.round_to(x, "float16")
    assert h.dtype == np.float16
    np.testing.assert_array_equal(h.astype(np.float64)[:2], [1.0, 1.0 + 2.0**-9])
    assert ref.round_to(x, "float32").dtype == np.float32
    y = ref.round_to(x, "float64")
    assert y.dtype == np.float64 and not np.shares_memory(x, y)
    np.testing.assert_array_equal(y, x)


@pytest.mark.needs_ml_dtypes
def test_reference_round_to_bfloat16():
    x = np.array([1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8])  # bf16 ties -> nearest even
    b = ref.round_to(x, "bfloat16")
    assert b.dtype.name == "bfloat16"
    np.testing.assert_array_equal(b.astype(np.float64), [1.0, 1.0 + 2.0**-6])


@pytest.mark.parametrize("name", [pytest.param("float16"),
                                  pytest.param("bfloat16", marks=pytest.mark.needs_ml_dtypes)])
def test_reference_multi_precision_master_wins(name):
    dt = np_dtype(name)
    w = ref.round_to(np.array([1.0, -2.0, 0.3]), dt)
    w32 = np.array([1.0, -2.0, 0.3], np.float32)
    g = ref.round_to(np.array([0.5, 0.25, -1.0]), dt)
    # a stale low-precision weight is ignored: the master is the value that is updated
    nw, nw32 = ref.mp_sgd_update(np.zeros_like(w), g, w32, lr=0.1, wd=0.01)
    assert nw.dtype == dt and nw32.dtype == np.float32
    np.testing.assert_array_equal(nw, ref.round_to(nw32, dt))
    np.testing.assert_allclose(nw32, ref.sgd_update(w32, g, lr=0.1, wd=0.01), rtol=1e-7)
    r = ref.run_sgd(w, [g, g], lr=0.1, momentum=0.9, multi_precision=True)
    assert r.mom.dtype == np.float32 and r.weight32.dtype == np.float32 and r.weight.dtype == dt
    np.testing.assert_array_equal(r.weight, ref.round_to(r.weight32, dt))
