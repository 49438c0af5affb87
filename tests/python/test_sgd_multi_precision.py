"""Multi-precision SGD / DCASGD for float16 and bfloat16 weights (docs/SEMANTICS.md §2, 4, 10).

Covers the functional kernels ``mp_sgd_update``, ``mp_sgd_mom_update``, ``mp_dcasgd_update``, the
optimizer classes with ``multi_precision=True`` (both the ``step`` and the ``fused_step`` path), and
float16 / bfloat16 weights *without* a master (fp32 registers, one rounding on store per step).

Expected values come only from ``reference.py`` (float64 math, rounded where the kernels store):
the low-precision weight at its dtype's "mp" tolerance, the float32 master and float32 momentum /
previous weight at float32 tolerance, and ``weight == cast(master)`` bitwise after every step.
"""
from __future__ import annotations

import warnings

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
    shape_id,
)

fusedopt = import_fusedopt()

STEPS = 7
LR = 0.1
LAMDA = 0.5  # large enough that DCASGD's compensation term matters
F32 = np.dtype(np.float32)
FP16_WARNING = ("Accumulating with float16 in optimizer can lead to poor accuracy or slow "
                "convergence")

LOW_DTYPES = [dtype_param(n) for n in LOW_DTYPE_NAMES]

# Sizes around SIMD widths (8/16 fp32 lanes, 16/32 half lanes), a non-multiple of common chunk
# sizes (4097, 278011) and multi-dimensional shapes; (0,) is a valid no-op (docs/SEMANTICS.md §10).
SIZES = [1, 7, 8, 15, 16, 17, 31, 33, 4097, 278011]
SHAPES = [(n,) for n in SIZES] + [(4, 33), (3, 5, 7), (2, 3, 4, 17), (0,)]

# momentum=None -> the kernel without a momentum buffer (mp_sgd_update); 0.0 -> mp_sgd_mom_update
# with momentum 0 (the buffer is still rewritten: m = 0*m - lr*r).
KERNEL_OPTIONS = options_product(momentum=[None, 0.0, 0.9], wd=[0.0, 0.01],
                                 rescale_grad=[1.0, 0.5], clip_gradient=[None, 0.3])
CLASS_OPTIONS = options_product(momentum=[0.0, 0.9], wd=[0.0, 0.01],
                                rescale_grad=[1.0, 0.5], clip_gradient=[None, 0.3])
RICH = dict(momentum=0.9, wd=0.01, rescale_grad=0.5, clip_gradient=0.3)


def _opts_params(options):
    return [pytest.param(o, id=options_id(o)) for o in options]


def _hyper(opts):
    """Keyword hyper-parameters shared by all kernels (no momentum)."""
    return dict(lr=LR, wd=opts["wd"], rescale_grad=opts["rescale_grad"],
                clip_gradient=opts["clip_gradient"])


def _grads(rng, shape, dtype, steps=STEPS):
    # scale 2: with rescale 0.5 and clip 0.3 a good share of elements is clipped
    return [random_array(rng, shape, dtype, 2.0) for _ in range(steps)]


def _assert_weight_is_cast_of_master(w, w32, what=""):
    assert w32.dtype == F32, f"master dtype {w32.dtype}"
    assert_bitwise_equal(w, w32.astype(w.dtype), f"weight != cast(master) {what}")


# --------------------------------------------------------------------------------------------
# functional kernels with an fp32 master
# --------------------------------------------------------------------------------------------
def _run_mp_sgd(rng, shape, dtype, opts):
    """Run mp_sgd_update / mp_sgd_mom_update for STEPS steps and compare with the reference."""
    w = random_array(rng, shape, dtype)
    w32 = w.astype(np.float32)
    # a non-zero initial master offset: the kernel must read the master, not the weight
    w32 += random_array(rng, shape, F32, 1e-3)
    mom = None if opts["momentum"] is None else random_array(rng, shape, F32, 0.1)
    grads = _grads(rng, shape, dtype)
    expected = ref.run_sgd(w, grads, momentum=opts["momentum"] or 0.0, multi_precision=True,
                           mom=None if mom is None else mom.copy(), weight32=w32.copy(),
                           **_hyper(opts))
    for step, g in enumerate(grads):
        g_before = g.copy()
        if mom is None:
            ret = fusedopt.mp_sgd_update(w, g, w32, **_hyper(opts))
        else:
            ret = fusedopt.mp_sgd_mom_update(w, g, mom, w32, momentum=opts["momentum"],
                                             **_hyper(opts))
        assert ret is None
        _assert_weight_is_cast_of_master(w, w32, f"after step {step}")
        assert_bitwise_equal(g, g_before, "the gradient must not be modified")
    assert_close(w, expected.weight, dtype, multi_precision=True, err_msg="weight")
    assert_close(w32, expected.weight32, dtype, role="master", multi_precision=True,
                 err_msg="master")
    if mom is not None:
        assert mom.dtype == F32
        assert_close(mom, expected.mom, dtype, role="state", multi_precision=True,
                     err_msg="momentum")


def _run_mp_dcasgd(rng, shape, dtype, opts):
    w = random_array(rng, shape, dtype)
    w32 = w.astype(np.float32) + random_array(rng, shape, F32, 1e-3)
    # prev differs from the master, so the compensation term is active from the first step
    prev32 = w32 + random_array(rng, shape, F32, 0.05)
    mom = None if opts["momentum"] is None else random_array(rng, shape, F32, 0.1)
    grads = _grads(rng, shape, dtype)
    expected = ref.run_dcasgd(w, grads, momentum=opts["momentum"] or 0.0, lamda=LAMDA,
                              multi_precision=True, mom=None if mom is None else mom.copy(),
                              prev=prev32.copy(), weight32=w32.copy(), **_hyper(opts))
    for step, g in enumerate(grads):
        fusedopt.mp_dcasgd_update(w, g, mom, prev32, w32, momentum=opts["momentum"] or 0.0,
                                  lamda=LAMDA, **_hyper(opts))
        _assert_weight_is_cast_of_master(w, w32, f"after step {step}")
    assert_close(w, expected.weight, dtype, multi_precision=True, err_msg="weight")
    assert_close(w32, expected.weight32, dtype, role="master", multi_precision=True,
                 err_msg="master")
    assert prev32.dtype == F32
    assert_close(prev32, expected.prev, dtype, role="state", multi_precision=True, err_msg="prev")
    if mom is not None:
        assert_close(mom, expected.mom, dtype, role="state", multi_precision=True,
                     err_msg="momentum")


@pytest.mark.parametrize("opts", _opts_params(KERNEL_OPTIONS))
@pytest.mark.parametrize("dtype_name", LOW_DTYPES)
def test_mp_sgd_kernels_option_product(rng, dtype_name, opts):
    _run_mp_sgd(rng, (1031,), np_dtype(dtype_name), opts)


@pytest.mark.parametrize("opts", _opts_params(
    options_product(momentum=[None, 0.9], wd=[0.0, 0.01], rescale_grad=[1.0, 0.5],
                    clip_gradient=[None, 0.3])))
@pytest.mark.parametrize("dtype_name", LOW_DTYPES)
def test_mp_dcasgd_kernel_option_product(rng, dtype_name, opts):
    _run_mp_dcasgd(rng, (1031,), np_dtype(dtype_name), opts)


@pytest.mark.parametrize("shape", [pytest.param(s, id=shape_id(s)) for s in SHAPES])
@pytest.mark.parametrize("kernel", ["mp_sgd_update", "mp_sgd_mom_update", "mp_dcasgd_update"])
@pytest.mark.parametrize("dtype_name", LOW_DTYPES)
def test_mp_kernels_sizes(rng, dtype_name, kernel, shape):
    dtype = np_dtype(dtype_name)
    if kernel == "mp_sgd_update":
        _run_mp_sgd(rng, shape, dtype, dict(RICH, momentum=None))
    elif kernel == "mp_sgd_mom_update":
        _run_mp_sgd(rng, shape, dtype, RICH)
    else:
        _run_mp_dcasgd(rng, shape, dtype, RICH)


@pytest.mark.parametrize("dtype_name", LOW_DTYPES)
def test_mp_kernels_do_not_warn(dtype_name):
    """The fp16 accuracy warning belongs to the optimizer classes, not to the kernels."""
    dtype = np_dtype(dtype_name)
    w = np.ones(5, dtype=dtype)
    g = np.full(5, 0.5, dtype=dtype)
    w32 = w.astype(np.float32)
    m = np.zeros(5, dtype=np.float32)
    p = w32.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fusedopt.mp_sgd_update(w, g, w32, lr=LR)
        fusedopt.mp_sgd_mom_update(w, g, m, w32, lr=LR, momentum=0.9)
        fusedopt.mp_dcasgd_update(w, g, m, p, w32, lr=LR, momentum=0.9)


@pytest.mark.parametrize("dtype_name", LOW_DTYPES)
def test_mp_sgd_small_updates_accumulate_in_master(dtype_name):
    """Updates below half a low-precision ulp are lost without a master but kept with one.

    w = 1, g = 1, lr = 2**-14: each step moves the fp32 master by 2**-14, far below half an ulp of
    1 in float16 (2**-11) or bfloat16 (2**-8). After 2**k steps the master is 1 - 2**(k-14)
    exactly, and the weight is its cast.
    """
    dtype = np_dtype(dtype_name)
    w = np.ones(9, dtype=dtype)
    g = np.ones(9, dtype=dtype)
    w32 = np.ones(9, dtype=np.float32)
    lr = 2.0 ** -14
    steps = 64
    for _ in range(steps):
        fusedopt.mp_sgd_update(w, g, w32, lr=lr)
    np.testing.assert_array_equal(w32, np.float32(1.0 - steps * lr))
    _assert_weight_is_cast_of_master(w, w32)
    assert np.all(w.astype(np.float64) < 1.0)


# --------------------------------------------------------------------------------------------
# optimizer classes with multi_precision=True
# --------------------------------------------------------------------------------------------
def _class_params(rng, dtype):
    """Two parameters of different shapes, updated together in each call."""
    shapes = [(17,), (4, 33)]
    ws = [random_array(rng, s, dtype) for s in shapes]
    grads = [_grads(rng, s, dtype) for s in shapes]
    return ws, grads


@pytest.mark.parametrize("use_fused_step", [False, True], ids=["step", "fused"])
@pytest.mark.parametrize("opts", _opts_params(CLASS_OPTIONS))
@pytest.mark.parametrize("dtype_name", LOW_DTYPES)
def test_sgd_class_multi_precision(rng, dtype_name, opts, use_fused_step):
    dtype = np_dtype(dtype_name)
    opt = fusedopt.SGD(learning_rate=LR, momentum=opts["momentum"], wd=opts["wd"],
                       rescale_grad=opts["rescale_grad"], clip_gradient=opts["clip_gradient"],
                       multi_precision=True, use_fused_step=use_fused_step)
    ws, grads = _class_params(rng, dtype)
    w0 = [w.copy() for w in ws]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fp16 accuracy warning with multi_precision
        states = [opt.create_state_multi_precision(i, w) for i, w in enumerate(ws)]
    for step in range(STEPS):
        gs = [g[step] for g in grads]
        opt.update_multi_precision([0, 1], ws, gs, states)
        for w, (w32, _) in zip(ws, states):
            _assert_weight_is_cast_of_master(w, w32, f"after step {step}")
    for i, (w, (w32, mom)) in enumerate(zip(ws, states)):
        expected = ref.run_sgd(w0[i], grads[i], momentum=opts["momentum"], multi_precision=True,
                               **_hyper(opts))
        assert w.dtype == dtype
        assert_close(w, expected.weight, dtype, multi_precision=True, err_msg=f"weight {i}")
        assert_close(w32, expected.weight32, dtype, role="master", multi_precision=True,
                     err_msg=f"master {i}")
        if opts["momentum"] == 0:
            assert mom is None
        else:
            assert_close(mom, expected.mom, dtype, role="state", multi_precision=True,
                         err_msg=f"momentum {i}")


@pytest.mark.parametrize("use_fused_step", [False, True], ids=["step", "fused"])
@pytest.mark.parametrize("opts", _opts_params(CLASS_OPTIONS))
@pytest.mark.parametrize("dtype_name", LOW_DTYPES)
def test_dcasgd_class_multi_precision(rng, dtype_name, opts, use_fused_step):
    dtype = np_dtype(dtype_name)
    opt = fusedopt.DCASGD(learning_rate=LR, momentum=opts["momentum"], lamda=LAMDA,
                          wd=opts["wd"], rescale_grad=opts["rescale_grad"],
                          clip_gradient=opts["clip_gradient"], multi_precision=True,
                          use_fused_step=use_fused_step)
    ws, grads = _class_params(rng, dtype)
    w0 = [w.copy() for w in ws]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        states = [opt.create_state_multi_precision(i, w) for i, w in enumerate(ws)]
    for step in range(STEPS):
        opt.update_multi_precision([0, 1], ws, [g[step] for g in grads], states)
        for w, (w32, _) in zip(ws, states):
            _assert_weight_is_cast_of_master(w, w32, f"after step {step}")
    for i, (w, (w32, (mom, prev32))) in enumerate(zip(ws, states)):
        expected = ref.run_dcasgd(w0[i], grads[i], momentum=opts["momentum"], lamda=LAMDA,
                                  multi_precision=True, **_hyper(opts))
        assert_close(w, expected.weight, dtype, multi_precision=True, err_msg=f"weight {i}")
        assert_close(w32, expected.weight32, dtype, role="master", multi_precision=True,
                     err_msg=f"master {i}")
        assert_close(prev32, expected.prev, dtype, role="state", multi_precision=True,
                     err_msg=f"prev {i}")
        if opts["momentum"] == 0:
            assert mom is None
        else:
            assert_close(mom, expected.mom, dtype, role="state", multi_precision=True,
                         err_msg=f"momentum {i}")


@pytest.mark.parametrize("cls", ["SGD", "DCASGD"])
@pytest.mark.parametrize("use_fused_step", [False, True], ids=["step", "fused"])
@pytest.mark.parametrize("dtype_name", LOW_DTYPES)
def test_class_multi_precision_large(rng, dtype_name, use_fused_step, cls):
    """A 278011-element parameter through the class (chunked / SIMD tail paths)."""
    dtype = np_dtype(dtype_name)
    kw = dict(learning_rate=LR, momentum=0.9, wd=0.01, rescale_grad=0.5, clip_gradient=0.3,
              multi_precision=True, use_fused_step=use_fused_step)
    shape = (278011,)
    w = random_array(rng, shape, dtype)
    w0 = w.copy()
    grads = _grads(rng, shape, dtype)
    hyper = dict(lr=LR, wd=0.01, rescale_grad=0.5, clip_gradient=0.3, momentum=0.9)
    if cls == "SGD":
        opt = fusedopt.SGD(**kw)
        expected = ref.run_sgd(w0, grads, multi_precision=True, **hyper)
    else:
        opt = fusedopt.DCASGD(lamda=LAMDA, **kw)
        expected = ref.run_dcasgd(w0, grads, lamda=LAMDA, multi_precision=True, **hyper)
    state = opt.create_state_multi_precision(0, w)
    for g in grads:
        opt.update_multi_precision([0], [w], [g], [state])
    w32 = state[0]
    _assert_weight_is_cast_of_master(w, w32)
    assert_close(w, expected.weight, dtype, multi_precision=True, err_msg="weight")
    assert_close(w32, expected.weight32, dtype, role="master", multi_precision=True,
                 err_msg="master")
    mom = state[1] if cls == "SGD" else state[1][0]
    assert_close(mom, expected.mom, dtype, role="state", multi_precision=True, err_msg="momentum")


# --------------------------------------------------------------------------------------------
# float16 / bfloat16 without a master: fp32 registers, one rounding on store
# --------------------------------------------------------------------------------------------
def _run_plain_low_kernel(kernel, w, grads, mom, prev, opts):
    for g in grads:
        if kernel == "sgd_update":
            fusedopt.sgd_update(w, g, **_hyper(opts))
        elif kernel == "sgd_mom_update":
            fusedopt.sgd_mom_update(w, g, mom, momentum=opts["momentum"], **_hyper(opts))
        else:
            fusedopt.dcasgd_update(w, g, mom, prev, momentum=opts["momentum"] or 0.0,
                                   lamda=LAMDA, **_hyper(opts))


def _expected_plain(kernel, w0, grads, mom0, prev0, opts):
    if kernel == "dcasgd_update":
        return ref.run_dcasgd(w0, grads, momentum=opts["momentum"] or 0.0, lamda=LAMDA,
                              mom=mom0, prev=prev0, **_hyper(opts))
    return ref.run_sgd(w0, grads, momentum=opts["momentum"] or 0.0, mom=mom0, **_hyper(opts))


PLAIN_KERNEL_CASES = [
    pytest.param("sgd_update", dict(RICH, momentum=None), id="sgd_update"),
    pytest.param("sgd_update", dict(momentum=None, wd=0.0, rescale_grad=1.0,
                                    clip_gradient=None), id="sgd_update-plain"),
    pytest.param("sgd_mom_update", RICH, id="sgd_mom_update"),
    pytest.param("sgd_mom_update", dict(RICH, momentum=0.0, clip_gradient=None),
                 id="sgd_mom_update-mom0"),
    pytest.param("dcasgd_update", dict(RICH, momentum=None), id="dcasgd_update"),
    pytest.param("dcasgd_update", RICH, id="dcasgd_update-mom"),
]


@pytest.mark.parametrize("shape", [pytest.param(s, id=shape_id(s))
                                   for s in [(1,), (15,), (33,), (4097,), (3, 5, 7)]])
@pytest.mark.parametrize("kernel,opts", PLAIN_KERNEL_CASES)
@pytest.mark.parametrize("dtype_name", LOW_DTYPES)
def test_low_precision_kernels_without_master(rng, dtype_name, kernel, opts, shape):
    """No master: the weight and a same-dtype momentum / prev are the state; no warning."""
    dtype = np_dtype(dtype_name)
    w = random_array(rng, shape, dtype)
    mom = None if opts["momentum"] is None else random_array(rng, shape, dtype, 0.1)
    prev = (w.astype(np.float32) + random_array(rng, shape, F32, 0.05)).astype(dtype)
    grads = _grads(rng, shape, dtype)
    expected = _expected_plain(kernel, w.copy(), grads, None if mom is None else mom.copy(),
                               prev.copy(), opts)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # functional kernels never warn
        _run_plain_low_kernel(kernel, w, grads, mom, prev, opts)
    assert w.dtype == dtype
    assert_close(w, expected.weight, dtype, err_msg="weight")
    if mom is not None:
        assert mom.dtype == dtype
        assert_close(mom, expected.mom, dtype, role="state", err_msg="momentum")
    if kernel == "dcasgd_update":
        assert prev.dtype == dtype
        assert_close(prev, expected.prev, dtype, role="state", err_msg="prev")


@pytest.mark.parametrize("kernel,opts", [
    pytest.param("sgd_update", dict(RICH, momentum=None), id="sgd_update"),
    pytest.param("sgd_mom_update", RICH, id="sgd_mom_update"),
])
@pytest.mark.parametrize("dtype_name", LOW_DTYPES)
def test_low_precision_without_master_rounds_once_per_step(rng, dtype_name, kernel, opts):
    """docs/SEMANTICS.md §4 decision: one rounding per stored element and step.

    Each step is checked from the kernel's own previous state, against the float64 rule rounded
    once to the storage dtype. fp32 registers differ from that only for values within a few fp32
    ulp of a rounding tie (measured: < 0.05% of elements); rounding after every operation (MXNet)
    changes roughly 4-35% of the elements (measured with an emulation), so at least 99% must
    match bitwise.
    """
    dtype = np_dtype(dtype_name)
    shape = (20011,)
    w = random_array(rng, shape, dtype)
    mom = None if opts["momentum"] is None else random_array(rng, shape, dtype, 0.1)
    for step, g in enumerate(_grads(rng, shape, dtype, steps=3)):
        if mom is None:
            exp_w = ref.round_to(ref.sgd_update(w, g, **_hyper(opts)), dtype)
            exp_m = None
            fusedopt.sgd_update(w, g, **_hyper(opts))
        else:
            w64, m64 = ref.sgd_mom_update(w, g, mom, momentum=opts["momentum"], **_hyper(opts))
            exp_w, exp_m = ref.round_to(w64, dtype), ref.round_to(m64, dtype)
            fusedopt.sgd_mom_update(w, g, mom, momentum=opts["momentum"], **_hyper(opts))
        for name, got, exp in (("weight", w, exp_w), ("momentum", mom, exp_m)):
            if exp is None:
                continue
            assert_close(got, exp, dtype, err_msg=f"{name} step {step}")
            same = np.mean(got.view(np.uint16) == exp.view(np.uint16))
            assert same >= 0.99, f"{name} step {step}: only {same:.4f} of elements rounded once"


@pytest.mark.parametrize("use_fused_step", [False, True], ids=["step", "fused"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("dtype_name", LOW_DTYPES)
def test_sgd_class_low_precision_without_multi_precision(rng, dtype_name, momentum,
                                                         use_fused_step):
    """SGD(multi_precision=False) warns once per new state, then updates in the weight's dtype."""
    dtype = np_dtype(dtype_name)
    opts = dict(RICH, momentum=momentum)
    opt = fusedopt.SGD(learning_rate=LR, momentum=momentum, wd=opts["wd"],
                       rescale_grad=opts["rescale_grad"], clip_gradient=opts["clip_gradient"],
                       use_fused_step=use_fused_step)
    shape = (4, 33)
    w = random_array(rng, shape, dtype)
    w0 = w.copy()
    grads = _grads(rng, shape, dtype)
    with pytest.warns(UserWarning, match=FP16_WARNING):
        state = opt.create_state_multi_precision(0, w)
    if momentum == 0:
        assert state is None
    else:
        assert isinstance(state, np.ndarray) and state.dtype == dtype and state.shape == shape
    for g in grads:
        opt.update_multi_precision([0], [w], [g], [state])
    expected = ref.run_sgd(w0, grads, **_hyper(opts), momentum=momentum)
    assert w.dtype == dtype
    assert_close(w, expected.weight, dtype, err_msg="weight")
    if momentum:
        assert_close(state, expected.mom, dtype, role="state", err_msg="momentum")


@pytest.mark.parametrize("use_fused_step", [False, True], ids=["step", "fused"])
@pytest.mark.parametrize("dtype_name", LOW_DTYPES)
def test_dcasgd_class_low_precision_without_multi_precision(rng, dtype_name, use_fused_step):
    dtype = np_dtype(dtype_name)
    opts = dict(RICH)
    opt = fusedopt.DCASGD(learning_rate=LR, momentum=opts["momentum"], lamda=LAMDA,
                          wd=opts["wd"], rescale_grad=opts["rescale_grad"],
                          clip_gradient=opts["clip_gradient"], use_fused_step=use_fused_step)
    shape = (37,)
    w = random_array(rng, shape, dtype)
    w0 = w.copy()
    grads = _grads(rng, shape, dtype)
    with pytest.warns(UserWarning, match=FP16_WARNING):
        state = opt.create_state_multi_precision(0, w)
    mom, prev = state
    assert mom.dtype == dtype and prev.dtype == dtype
    for g in grads:
        opt.update_multi_precision([0], [w], [g], [state])
    expected = ref.run_dcasgd(w0, grads, lamda=LAMDA, **_hyper(opts),
                              momentum=opts["momentum"])
    assert_close(w, expected.weight, dtype, err_msg="weight")
    assert_close(mom, expected.mom, dtype, role="state", err_msg="momentum")
    assert_close(prev, expected.prev, dtype, role="state", err_msg="prev")


# --------------------------------------------------------------------------------------------
# bad inputs: wrong master / momentum / prev dtype or shape; nothing written
# --------------------------------------------------------------------------------------------
def _bad_array(kind, good, rng):
    """A replacement for a float32 state array ``good``: wrong dtype or wrong shape."""
    if kind == "shape":
        return np.zeros(good.size + 1, dtype=good.dtype)
    if kind == "shape-2d":
        return np.zeros((1, good.size), dtype=good.dtype)
    dt = np_dtype(kind)
    return random_array(rng, good.shape, dt)


BAD_STATE_CASES = []
for _kernel, _args in (("mp_sgd_update", ("weight32",)),
                       ("mp_sgd_mom_update", ("mom", "weight32")),
                       ("mp_dcasgd_update", ("mom", "prev32", "weight32"))):
    for _arg in _args:
        for _kind, _exc in (("float16", TypeError), ("float64", TypeError),
                            ("bfloat16", TypeError), ("shape", ValueError),
                            ("shape-2d", ValueError)):
            _marks = [pytest.mark.needs_ml_dtypes] if _kind == "bfloat16" else []
            BAD_STATE_CASES.append(pytest.param(_kernel, _arg, _kind, _exc, marks=_marks,
                                                id=f"{_kernel}-{_arg}-{_kind}"))


@pytest.mark.parametrize("kernel,bad_arg,kind,exc", BAD_STATE_CASES)
@pytest.mark.parametrize("dtype_name", LOW_DTYPES)
def test_mp_kernels_reject_bad_state(rng, dtype_name, kernel, bad_arg, kind, exc):
    """docs/SEMANTICS.md §4: mom / weight32 (/ prev32) must be float32 of the weight's shape.

    The error names the argument, and nothing (weight, master, momentum, prev) is written.
    """
    dtype = np_dtype(dtype_name)
    shape = (6, 5)
    w = random_array(rng, shape, dtype)
    g = random_array(rng, shape, dtype)
    arrays = {
        "weight32": w.astype(np.float32),
        "mom": random_array(rng, shape, F32, 0.1),
        "prev32": random_array(rng, shape, F32),
    }
    arrays[bad_arg] = _bad_array(kind, arrays[bad_arg], rng)
    snap = Snapshot(w, g, *arrays.values())
    hyper = dict(lr=LR, wd=0.01)
    # "prev32" may be reported as "prev"; "mom" as "mom" / "momentum"
    name_re = {"weight32": "weight32", "mom": "mom", "prev32": "prev"}[bad_arg]
    with pytest.raises(exc, match=name_re):
        if kernel == "mp_sgd_update":
            fusedopt.mp_sgd_update(w, g, arrays["weight32"], **hyper)
        elif kernel == "mp_sgd_mom_update":
            fusedopt.mp_sgd_mom_update(w, g, arrays["mom"], arrays["weight32"], momentum=0.9,
                                       **hyper)
        else:
            fusedopt.mp_dcasgd_update(w, g, arrays["mom"], arrays["prev32"], arrays["weight32"],
                                      momentum=0.9, **hyper)
    snap.assert_unchanged(f"by a rejected {kernel} call")


@pytest.mark.parametrize("dtype_name", LOW_DTYPES)
def test_mp_kernels_valid_call_after_rejected_call(rng, dtype_name):
    """A rejected call leaves everything usable: the same arrays then update normally."""
    dtype = np_dtype(dtype_name)
    w = random_array(rng, (9,), dtype)
    g = random_array(rng, (9,), dtype)
    w32 = w.astype(np.float32)
    mom = np.zeros(9, dtype=np.float32)
    with pytest.raises(TypeError):
        fusedopt.mp_sgd_mom_update(w, g, mom.astype(np.float64), w32, lr=LR, momentum=0.9)
    expected = ref.run_sgd(w.copy(), [g], lr=LR, momentum=0.9, multi_precision=True,
                           mom=mom.copy(), weight32=w32.copy())
    fusedopt.mp_sgd_mom_update(w, g, mom, w32, lr=LR, momentum=0.9)
    assert_close(w32, expected.weight32, dtype, role="master", multi_precision=True)
    assert_close(mom, expected.mom, dtype, role="state", multi_precision=True)
    _assert_weight_is_cast_of_master(w, w32)
