"""Row-sparse gradients for SGD (docs/SEMANTICS.md §6, errors of section 10).

``fusedopt.row_sparse_array((data, indices), shape)`` through the functional kernels
(``sgd_update`` / ``sgd_mom_update`` with ``lazy_update``) and ``SGD(lazy_update=...)``.
Expected values: the docs/SEMANTICS.md §6 worked example (golden numbers) and ``reference.py``
(``run_sgd`` with ``RowSparseGrad`` items) for random cases.

Lazy: only stored rows are touched (an all-zero stored row still decays); rows never stored are
bitwise unchanged. Standard: the dense rule with a zero gradient on rows not stored.
"""
from __future__ import annotations

import numpy as np
import pytest

import reference as ref
from helpers import (
    FLOAT_DTYPE_NAMES,
    Snapshot,
    assert_bitwise_equal,
    assert_close,
    dtype_param,
    import_fusedopt,
    np_dtype,
    options_id,
    options_product,
    random_array,
    shape_id,
)

fusedopt = import_fusedopt()

STEPS = 7
LR = 0.1
FLOAT_DTYPES = [dtype_param(n) for n in FLOAT_DTYPE_NAMES]
LAZY = [pytest.param(True, id="lazy"), pytest.param(False, id="standard")]
APIS = ["kernel", "class"]


def _rsp(data, indices, shape):
    return fusedopt.row_sparse_array((data, indices), shape)


def _update(api, w, grad, mom, *, lazy, momentum, lr=LR, wd=0.0, rescale_grad=1.0,
            clip_gradient=None):
    """One update of ``w`` (and ``mom``) with a row-sparse ``grad`` through ``api``.

    ``mom=None``: no momentum buffer. For ``api="class"`` a fresh SGD is used per call, which is
    fine: SGD's rule depends on the step count only through the learning-rate scheduler (none).
    """
    hyper = dict(wd=wd, rescale_grad=rescale_grad, clip_gradient=clip_gradient)
    if api == "kernel":
        if mom is None:
            fusedopt.sgd_update(w, grad, lr=lr, lazy_update=lazy, **hyper)
        else:
            fusedopt.sgd_mom_update(w, grad, mom, lr=lr, momentum=momentum, lazy_update=lazy,
                                    **hyper)
    else:
        assert (mom is None) == (momentum == 0)
        opt = fusedopt.SGD(learning_rate=lr, momentum=momentum, lazy_update=lazy, **hyper)
        opt.update([0], [w], [grad], [mom])


# --------------------------------------------------------------------------------------------
# the container
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("index_dtype", [np.int64, np.int32], ids=["int64", "int32"])
@pytest.mark.parametrize("dtype_name", [dtype_param(n) for n in
                                        ("float16", "bfloat16", "float32", "float64")])
def test_row_sparse_array_attributes(dtype_name, index_dtype):
    dtype = np_dtype(dtype_name)
    data = np.arange(6, dtype=np.float64).reshape(2, 3).astype(dtype)
    idx = np.array([3, 1], dtype=index_dtype)
    rsp = _rsp(data, idx, (5, 3))
    assert isinstance(rsp, fusedopt.RowSparseArray)
    assert tuple(rsp.shape) == (5, 3)
    assert np.dtype(rsp.dtype) == dtype
    got_idx = np.asarray(rsp.indices)
    got_data = np.asarray(rsp.data)
    assert got_data.dtype == dtype and got_data.shape == (2, 3)
    assert np.issubdtype(got_idx.dtype, np.integer) and got_idx.shape == (2,)
    # the row -> data pairing is kept (the storage order itself is not specified)
    assert sorted(got_idx.tolist()) == [1, 3]
    for j, row in zip(got_idx.tolist(), got_data):
        assert_bitwise_equal(row, data[0 if j == 3 else 1], f"row {j}")


def test_row_sparse_array_shape_as_list_and_3d():
    data = np.ones((2, 3, 4), dtype=np.float32)
    rsp = _rsp(data, np.array([0, 6]), [7, 3, 4])
    assert tuple(rsp.shape) == (7, 3, 4)
    assert np.asarray(rsp.data).shape == (2, 3, 4)


# --------------------------------------------------------------------------------------------
# docs/SEMANTICS.md §6 worked example
# --------------------------------------------------------------------------------------------
W_EXAMPLE = [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]
NO_MOM = {
    True: [[0, 1, 2], [2.75, 3.6, 4.45], [6, 7, 8], [8.65, 9.6, 10.55]],
    False: [[0, 0.95, 1.9], [2.75, 3.6, 4.45], [5.7, 6.65, 7.6], [8.65, 9.6, 10.55]],
}
WITH_MOM = {  # mu = 0.9, momentum initialised to ones: (w, m)
    True: ([[0, 1, 2], [3.65, 4.5, 5.35], [6, 7, 8], [9.55, 10.5, 11.45]],
           [[1, 1, 1], [0.65, 0.5, 0.35], [1, 1, 1], [0.55, 0.5, 0.45]]),
    False: ([[0.9, 1.85, 2.8], [3.65, 4.5, 5.35], [6.6, 7.55, 8.5], [9.55, 10.5, 11.45]],
            [[0.9, 0.85, 0.8], [0.65, 0.5, 0.35], [0.6, 0.55, 0.5], [0.55, 0.5, 0.45]]),
}


def _example_grad(dtype, order):
    rows = {1: [1, 2, 3], 3: [-1, -1, -1]}
    idx = [1, 3] if order == "sorted" else [3, 1]
    data = np.array([rows[i] for i in idx], dtype=dtype)
    return data, np.array(idx, dtype=np.int64)


@pytest.mark.parametrize("order", ["sorted", "unsorted"])
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("lazy", LAZY)
@pytest.mark.parametrize("dtype_name", FLOAT_DTYPES)
def test_spec_example_without_momentum(dtype_name, lazy, api, order):
    dtype = np_dtype(dtype_name)
    w = np.array(W_EXAMPLE, dtype=dtype)
    data, idx = _example_grad(dtype, order)
    data_before = data.copy()
    _update(api, w, _rsp(data, idx, (4, 3)), None, lazy=lazy, momentum=0.0, wd=0.5)
    assert_close(w, np.array(NO_MOM[lazy], dtype=dtype))
    if lazy:  # rows 0 and 2 untouched, bitwise
        assert_bitwise_equal(w[[0, 2]], np.array(W_EXAMPLE, dtype=dtype)[[0, 2]])
    assert_bitwise_equal(data, data_before, "the gradient must not be modified")


@pytest.mark.parametrize("order", ["sorted", "unsorted"])
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("lazy", LAZY)
@pytest.mark.parametrize("dtype_name", FLOAT_DTYPES)
def test_spec_example_with_momentum(dtype_name, lazy, api, order):
    dtype = np_dtype(dtype_name)
    w = np.array(W_EXAMPLE, dtype=dtype)
    if api == "class":
        mom = fusedopt.SGD(momentum=0.9).create_state(0, w)
        assert mom.dtype == dtype and mom.shape == w.shape
        mom[...] = 1
    else:
        mom = np.ones((4, 3), dtype=dtype)
    data, idx = _example_grad(dtype, order)
    _update(api, w, _rsp(data, idx, (4, 3)), mom, lazy=lazy, momentum=0.9, wd=0.5)
    exp_w, exp_m = WITH_MOM[lazy]
    assert_close(w, np.array(exp_w, dtype=dtype), err_msg="weight")
    assert_close(mom, np.array(exp_m, dtype=dtype), role="state", err_msg="momentum")
    if lazy:
        assert_bitwise_equal(w[[0, 2]], np.array(W_EXAMPLE, dtype=dtype)[[0, 2]])
        assert_bitwise_equal(mom[[0, 2]], np.ones((2, 3), dtype=dtype))


# --------------------------------------------------------------------------------------------
# random cases vs the reference
# --------------------------------------------------------------------------------------------
def _random_grads(rng, shape, dtype, steps=STEPS, never=(0,)):
    """Row-sparse gradients: a random, unsorted subset of rows per step (rows in ``never`` are
    never stored), one stored row all zeros; returns (fusedopt grads, reference grads)."""
    nrows = shape[0]
    candidates = np.array([r for r in range(nrows) if r not in never])
    grads, ref_grads = [], []
    for _ in range(steps):
        k = min(len(candidates), int(rng.integers(1, max(2, len(candidates) // 2) + 1)))
        idx = rng.permutation(candidates)[:k].astype(np.int64)
        if k > 1 and np.all(np.diff(idx) > 0):
            idx = idx[::-1].copy()  # make sure the order is not sorted
        data = random_array(rng, (k,) + tuple(shape[1:]), dtype, 2.0)
        data[0] = 0  # a stored row that is all zeros
        grads.append(_rsp(data, idx, shape))
        ref_grads.append(ref.RowSparseGrad(data.copy(), idx.copy(), tuple(shape)))
    return grads, ref_grads


def _check_random_case(rng, dtype, shape, opts, api):
    lazy, momentum = opts["lazy_update"], opts["momentum"]
    hyper = dict(wd=opts["wd"], rescale_grad=opts["rescale_grad"],
                 clip_gradient=opts["clip_gradient"])
    w = random_array(rng, shape, dtype)
    w0 = w.copy()
    if momentum == 0:
        mom = None
    elif api == "class":
        mom = fusedopt.SGD(momentum=momentum).create_state(0, w)
        mom[...] = random_array(rng, shape, dtype, 0.1)
    else:
        mom = random_array(rng, shape, dtype, 0.1)
    mom0 = None if mom is None else mom.copy()
    grads, ref_grads = _random_grads(rng, shape, dtype)
    expected = ref.run_sgd(w0, ref_grads, lr=LR, momentum=momentum, mom=mom0,
                           lazy_update=lazy, **hyper)
    if api == "class":
        opt = fusedopt.SGD(learning_rate=LR, momentum=momentum, lazy_update=lazy, **hyper)
        for g in grads:
            opt.update([0], [w], [g], [mom])
    else:
        for g in grads:
            _update("kernel", w, g, mom, lazy=lazy, momentum=momentum, **hyper)
    for g, rg in zip(grads, ref_grads):
        assert_bitwise_equal(np.asarray(g.data), rg.data, "the gradient must not be modified")
    assert_close(w, expected.weight, err_msg="weight")
    if mom is not None:
        assert_close(mom, expected.mom, role="state", err_msg="momentum")
    if lazy:  # row 0 is never stored: untouched bitwise, weight and momentum
        assert_bitwise_equal(w[0], w0[0], "lazy update touched a row not stored")
        if mom is not None:
            assert_bitwise_equal(mom[0], mom0[0], "lazy update touched a momentum row")


RANDOM_OPTIONS = options_product(lazy_update=[True, False], momentum=[0.0, 0.9], wd=[0.0, 0.1],
                                 clip_gradient=[None, 0.3], rescale_grad=[1.0, 0.5])


@pytest.mark.parametrize("opts", [pytest.param(o, id=options_id(o)) for o in RANDOM_OPTIONS])
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("dtype_name", FLOAT_DTYPES)
def test_random_option_product(rng, dtype_name, api, opts):
    _check_random_case(rng, np_dtype(dtype_name), (23, 4), opts, api)


RICH = dict(momentum=0.9, wd=0.1, clip_gradient=0.3, rescale_grad=0.5)


@pytest.mark.parametrize("shape", [pytest.param(s, id=shape_id(s))
                                   for s in [(2,), (13,), (9, 3, 4), (40, 17), (300, 33)]])
@pytest.mark.parametrize("lazy", LAZY)
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("dtype_name", FLOAT_DTYPES)
def test_random_shapes(rng, dtype_name, api, lazy, shape):
    _check_random_case(rng, np_dtype(dtype_name), shape, dict(RICH, lazy_update=lazy), api)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("lazy", LAZY)
@pytest.mark.parametrize("dtype_name", FLOAT_DTYPES)
def test_all_zero_stored_row(dtype_name, lazy, api, momentum):
    """A stored row of zeros is still updated by the lazy rule: it decays (wd) and its momentum
    row is updated; a row not stored is not (lazy) or is (standard)."""
    dtype = np_dtype(dtype_name)
    w = np.full((3, 2), 2.0, dtype=dtype)
    mom = np.full((3, 2), 0.5, dtype=dtype) if momentum else None
    data = np.zeros((1, 2), dtype=dtype)
    _update(api, w, _rsp(data, np.array([1]), (3, 2)), mom, lazy=lazy, momentum=momentum,
            lr=0.25, wd=0.5)
    # r = 0 + 0.5*2 = 1; no momentum: w = 2 - 0.25 = 1.75; momentum: m = 0.45 - 0.25 = 0.2, w = 2.2
    decayed = 1.75 if not momentum else 2.2
    expected_w = np.full((3, 2), decayed if not lazy else 2.0)
    expected_w[1] = decayed
    assert_close(w, expected_w.astype(dtype), err_msg="weight")
    if momentum:
        expected_m = np.full((3, 2), 0.2 if not lazy else 0.5)
        expected_m[1] = 0.2
        assert_close(mom, expected_m.astype(dtype), role="state", err_msg="momentum")


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("lazy", LAZY)
@pytest.mark.parametrize("dtype_name", FLOAT_DTYPES)
def test_empty_index_list(rng, dtype_name, lazy, api, momentum):
    """No stored rows: lazy changes nothing; standard decays every row (dense rule, zero grad)."""
    dtype = np_dtype(dtype_name)
    shape = (6, 3)
    w = random_array(rng, shape, dtype)
    w0 = w.copy()
    mom = random_array(rng, shape, dtype, 0.1) if momentum else None
    if api == "class" and momentum:
        state = fusedopt.SGD(momentum=momentum).create_state(0, w)
        state[...] = mom
        mom = state
    mom0 = None if mom is None else mom.copy()
    data = np.zeros((0, 3), dtype=dtype)
    idx = np.zeros(0, dtype=np.int64)
    _update(api, w, _rsp(data, idx, shape), mom, lazy=lazy, momentum=momentum, wd=0.1)
    if lazy:
        assert_bitwise_equal(w, w0, "lazy update with no stored rows changed the weight")
        if mom is not None:
            assert_bitwise_equal(mom, mom0, "lazy update with no stored rows changed momentum")
    else:
        expected = ref.run_sgd(w0, [ref.RowSparseGrad(data, idx, shape)], lr=LR,
                               momentum=momentum, wd=0.1, mom=mom0, lazy_update=False)
        assert_close(w, expected.weight)
        assert not np.array_equal(w, w0)
        if mom is not None:
            assert_close(mom, expected.mom, role="state")


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64], ids=["int32", "int64"])
@pytest.mark.parametrize("lazy", LAZY)
def test_index_dtypes(rng, lazy, index_dtype):
    shape = (10, 5)
    w = random_array(rng, shape, np.float64)
    w0 = w.copy()
    idx = np.array([7, 2, 9], dtype=index_dtype)
    data = random_array(rng, (3, 5), np.float64)
    fusedopt.sgd_update(w, _rsp(data, idx, shape), lr=LR, wd=0.1, lazy_update=lazy)
    expected = ref.run_sgd(w0, [ref.RowSparseGrad(data, idx.astype(np.int64), shape)], lr=LR,
                           wd=0.1, lazy_update=lazy)
    assert_close(w, expected.weight)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("dtype_name", FLOAT_DTYPES)
def test_dense_grad_ignores_lazy_update(rng, dtype_name, momentum):
    """lazy_update is ignored for a dense gradient: both settings give the dense rule, bitwise."""
    dtype = np_dtype(dtype_name)
    w = random_array(rng, (8, 3), dtype)
    g = random_array(rng, (8, 3), dtype)
    g[2] = 0
    results = []
    for lazy in (True, False):
        wk = w.copy()
        mk = np.full_like(w, 0.25) if momentum else None
        if mk is None:
            fusedopt.sgd_update(wk, g, lr=LR, wd=0.1, lazy_update=lazy)
        else:
            fusedopt.sgd_mom_update(wk, g, mk, lr=LR, momentum=momentum, wd=0.1,
                                    lazy_update=lazy)
        results.append(wk)
    assert_bitwise_equal(results[0], results[1])
    expected = ref.run_sgd(w, [g], lr=LR, wd=0.1, momentum=momentum,
                           mom=np.full_like(w, 0.25) if momentum else None)
    assert_close(results[0], expected.weight)


# --------------------------------------------------------------------------------------------
# errors: nothing written
# --------------------------------------------------------------------------------------------
BAD_INDICES = {
    "duplicate": [1, 3, 1],
    "duplicate-adjacent": [2, 2],
    "out-of-range": [1, 4],
    "far-out-of-range": [100000],
    "negative": [-1, 2],
}


@pytest.mark.parametrize("api", ["kernel", "kernel-mom", "class", "class-mom"])
@pytest.mark.parametrize("lazy", LAZY)
@pytest.mark.parametrize("bad", list(BAD_INDICES))
def test_bad_indices_raise_nothing_written(rng, bad, lazy, api):
    shape = (4, 3)
    w = random_array(rng, shape, np.float32)
    idx = np.array(BAD_INDICES[bad], dtype=np.int64)
    data = random_array(rng, (len(idx), 3), np.float32) + 1
    momentum = 0.9 if api.endswith("mom") else 0.0
    mom = random_array(rng, shape, np.float32, 0.1) if momentum else None
    snap = Snapshot(w, mom, data, idx)
    with pytest.raises(ValueError):  # at construction or at the update
        _update(api.split("-")[0], w, _rsp(data, idx, shape), mom, lazy=lazy,
                momentum=momentum, wd=0.1)
    snap.assert_unchanged(f"by an update with {bad} indices")


BAD_DATA_SHAPES = {
    "too-few-rows": ((1, 3), [0, 2]),
    "too-many-rows": ((3, 3), [0, 2]),
    "wrong-row-width": ((2, 4), [0, 2]),
    "flat": ((6,), [0, 2]),
    "extra-dim": ((2, 3, 1), [0, 2]),
}


@pytest.mark.parametrize("lazy", LAZY)
@pytest.mark.parametrize("bad", list(BAD_DATA_SHAPES))
def test_data_shape_mismatch(rng, bad, lazy):
    """data must have shape (len(indices),) + shape[1:]."""
    shape = (4, 3)
    w = random_array(rng, shape, np.float64)
    data_shape, idx = BAD_DATA_SHAPES[bad]
    data = random_array(rng, data_shape, np.float64)
    snap = Snapshot(w)
    with pytest.raises(ValueError):
        fusedopt.sgd_update(w, _rsp(data, np.array(idx), shape), lr=LR, wd=0.1,
                            lazy_update=lazy)
    snap.assert_unchanged()


@pytest.mark.parametrize("lazy", LAZY)
@pytest.mark.parametrize("grad_shape", [(5, 3), (3, 3), (4, 2), (4, 3, 1)],
                         ids=["more-rows", "fewer-rows", "narrower", "extra-dim"])
def test_gradient_shape_differs_from_weight(rng, grad_shape, lazy):
    w = random_array(rng, (4, 3), np.float32)
    mom = np.zeros((4, 3), np.float32)
    data = random_array(rng, (2,) + grad_shape[1:], np.float32)
    snap = Snapshot(w, mom)
    with pytest.raises(ValueError):
        fusedopt.sgd_mom_update(w, _rsp(data, np.array([0, 1]), grad_shape), mom, lr=LR,
                                momentum=0.9, lazy_update=lazy)
    snap.assert_unchanged()


@pytest.mark.parametrize("lazy", LAZY)
def test_gradient_dtype_differs_from_weight(rng, lazy):
    w = random_array(rng, (4, 3), np.float32)
    data = random_array(rng, (2, 3), np.float64)
    snap = Snapshot(w)
    with pytest.raises(TypeError):
        fusedopt.sgd_update(w, _rsp(data, np.array([0, 1]), (4, 3)), lr=LR, lazy_update=lazy)
    snap.assert_unchanged()


def test_lazy_update_requires_fused_step():
    with pytest.raises(ValueError):
        fusedopt.SGD(lazy_update=True, use_fused_step=False)
    fusedopt.SGD(lazy_update=False, use_fused_step=False)  # fine
    fusedopt.SGD(lazy_update=True)  # use_fused_step defaults to True


def test_lazy_update_excludes_multi_precision():
    with pytest.raises(ValueError):
        fusedopt.SGD(lazy_update=True, multi_precision=True)
