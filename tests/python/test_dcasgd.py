"""DCASGD (docs/SEMANTICS.md §7) against the float64 reference.

Paths: functional ``fusedopt.dcasgd_update``; ``DCASGD(use_fused_step=True/False).update``;
``step``; ``fused_step``. State layout ``(mom or None, prev)``; multi-precision
``(w32, (mom32 or None, prev32))``.
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
    guarded,
    import_fusedopt,
    make_inputs,
    options_id,
    options_product,
    random_array,
    shape_id,
)

fo = import_fusedopt()

PATHS = ("functional", "update-fused", "update-unfused", "step", "fused_step")
CLASS_PATHS = PATHS[1:]
LR = 0.1
STEPS = 7

OPTIONS = options_product(lamda=[0.0, 0.04, 0.5], momentum=[0.0, 0.9], wd=[0.0, 0.01],
                          rescale_grad=[1.0, 0.5], clip_gradient=[None, 0.1, math.inf])
SMALL_SHAPE_OPTIONS = options_product(lamda=[0.5], momentum=[0.0, 0.9], wd=[0.01],
                                      rescale_grad=[0.5], clip_gradient=[None, 0.1])
LARGE_OPTIONS = [
    dict(lamda=0.04, momentum=0.0, wd=0.0, rescale_grad=1.0, clip_gradient=None),
    dict(lamda=0.5, momentum=0.9, wd=0.01, rescale_grad=0.5, clip_gradient=0.1),
    dict(lamda=0.5, momentum=0.0, wd=0.01, rescale_grad=1.0, clip_gradient=math.inf),
]


class Driver:
    """Runs DCASGD updates in place through one of PATHS. ``mom``/``prev`` are the state arrays."""

    def __init__(self, path: str, weight: np.ndarray, *, lr: float = LR, momentum: float = 0.0,
                 lamda: float = 0.04, wd: float = 0.0, rescale_grad: float = 1.0,
                 clip_gradient=None) -> None:
        self.path, self.weight, self.lr = path, weight, lr
        self.kw = dict(momentum=momentum, lamda=lamda, wd=wd, rescale_grad=rescale_grad,
                       clip_gradient=clip_gradient)
        if path == "functional":
            self.opt = None
            self.mom = np.zeros_like(weight) if momentum else None
            self.prev = weight.copy()
            self.state = (self.mom, self.prev)
        else:
            fused = path in ("update-fused", "fused_step")
            self.opt = fo.DCASGD(learning_rate=lr, use_fused_step=fused, **self.kw)
            self.state = self.opt.create_state(0, weight)
            self.mom, self.prev = self.state
            self.method = {"update-fused": self.opt.update, "update-unfused": self.opt.update,
                           "step": self.opt.step, "fused_step": self.opt.fused_step}[path]

    def step(self, grad: np.ndarray) -> None:
        if self.opt is None:
            fo.dcasgd_update(self.weight, grad, self.mom, self.prev, lr=self.lr, **self.kw)
        else:
            self.method([0], [self.weight], [grad], [self.state])


def _check_against_reference(path, dtype, shape, opts, rng, steps=STEPS):
    inp = make_inputs(rng, shape, dtype, steps=steps)
    exp = ref.run_dcasgd(inp.weight, inp.grads, lr=LR, **opts)
    w = inp.weight.copy()
    drv = Driver(path, w, **opts)
    for g in inp.grads:
        drv.step(g)
    assert_close(w, exp.weight, dtype, err_msg="weight")
    assert_close(drv.prev, exp.prev, dtype, role="state", err_msg="prev")
    if opts["momentum"]:
        assert_close(drv.mom, exp.mom, dtype, role="state", err_msg="momentum")
    else:
        assert drv.mom is None


@pytest.mark.parametrize("opts", OPTIONS, ids=options_id)
@pytest.mark.parametrize("path", PATHS)
def test_dcasgd_matches_reference(path, opts, float_dtype, rng):
    _check_against_reference(path, float_dtype, (3, 5, 7), opts, rng)


@pytest.mark.parametrize("opts", SMALL_SHAPE_OPTIONS, ids=options_id)
@pytest.mark.parametrize("shape", [(1,), (7,), ()], ids=shape_id)
@pytest.mark.parametrize("path", PATHS)
def test_dcasgd_matches_reference_small_shapes(path, shape, opts, float_dtype, rng):
    _check_against_reference(path, float_dtype, shape, opts, rng)


LARGE_CASES = (
    [pytest.param((4097,), o, id=f"4097-{options_id(o)}") for o in LARGE_OPTIONS]
    + [pytest.param((278011,), LARGE_OPTIONS[1], id=f"278011-{options_id(LARGE_OPTIONS[1])}")]
)


@pytest.mark.parametrize("shape, opts", LARGE_CASES)
@pytest.mark.parametrize("path", PATHS)
def test_dcasgd_matches_reference_large(path, shape, opts, float_dtype, rng, cpu_capability):
    _check_against_reference(path, float_dtype, shape, opts, rng)


# ------------------------------------------------------------------------------ state layout
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("shape", [(7,), (3, 5, 7), ()], ids=shape_id)
def test_dcasgd_create_state_layout(momentum, shape, float_dtype, rng):
    w = random_array(rng, shape, float_dtype)
    opt = fo.DCASGD(learning_rate=LR, momentum=momentum)
    state = opt.create_state(0, w)
    assert isinstance(state, tuple) and len(state) == 2
    mom, prev = state
    if momentum == 0:
        assert mom is None
    else:
        assert isinstance(mom, np.ndarray) and mom.shape == w.shape and mom.dtype == w.dtype
        assert mom.flags.writeable and mom.flags.c_contiguous
        assert_bitwise_equal(mom, np.zeros(shape, float_dtype))
        assert not np.shares_memory(mom, w)
    assert isinstance(prev, np.ndarray)
    assert_bitwise_equal(prev, w)  # a copy of the weight ...
    assert not np.shares_memory(prev, w)  # ... not a view of it
    assert prev.flags.writeable and prev.flags.c_contiguous


def test_dcasgd_defaults(rng):
    """docs/SEMANTICS.md §1/7: DCASGD(learning_rate=0.1, momentum=0.0, lamda=0.04): the defaults act as those
    values (two updates so that lamda matters)."""
    opt = fo.DCASGD()
    assert opt.learning_rate == pytest.approx(0.1)
    inp = make_inputs(rng, (16,), np.float64, steps=2, grad_scale=3.0)
    w = inp.weight.copy()
    state = opt.create_state(0, w)
    assert state[0] is None
    for g in inp.grads:
        opt.update([0], [w], [g], [state])
    exp = ref.run_dcasgd(inp.weight, inp.grads, lr=0.1, lamda=0.04)
    assert_close(w, exp.weight, np.float64)
    other = ref.run_dcasgd(inp.weight, inp.grads, lr=0.1, lamda=0.0)
    assert np.max(np.abs(other.weight - exp.weight)) > 1e-9  # lamda is visible in the result


# ------------------------------------------------------------------------------ docs/SEMANTICS.md goldens
GOLDEN_KW = dict(lr=0.1, wd=0.1, lamda=0.5)


def _golden_tol(dtype):  # noqa: ARG001 - same for both dtypes
    # docs/SEMANTICS.md prints 8 significant digits (the mu=0.9 w2 is the float32 value 0.82765853; the exact
    # value is 0.827658508, see test_reference_goldens.py), so compare docs/SEMANTICS.md numbers at 5e-8.
    return dict(rtol=0, atol=5e-8)


@pytest.mark.parametrize("path", PATHS)
def test_golden_no_momentum(path, float_dtype):
    """docs/SEMANTICS.md §7, mu=0: w0=1, g=0.5, lr=0.1, wd=0.1, lam=0.5 -> w1=0.94, w2=0.8816585, prev2=0.94."""
    w = np.ones(1, float_dtype)
    g = np.full(1, 0.5, float_dtype)
    drv = Driver(path, w, lr=0.1, wd=0.1, lamda=0.5)
    drv.step(g)
    assert_close(w, np.array([0.94], float_dtype), float_dtype, **_golden_tol(float_dtype))
    assert_bitwise_equal(drv.prev, np.ones(1, float_dtype))
    drv.step(g)
    assert_close(w, np.array([0.8816585], float_dtype), float_dtype, **_golden_tol(float_dtype))
    assert_close(drv.prev, np.array([0.94], float_dtype), float_dtype, **_golden_tol(float_dtype))
    assert drv.mom is None
    if float_dtype == np.float64:  # exact decimals derived by hand from the documented formula
        assert_close(w, np.array([0.881658508]), np.float64)


@pytest.mark.parametrize("path", PATHS)
def test_golden_momentum(path, float_dtype):
    """docs/SEMANTICS.md §7, mu=0.9: w1=0.94, m1=-0.06; w2=0.82765853, m2=-0.11234149; prev2=0.94."""
    w = np.ones(1, float_dtype)
    g = np.full(1, 0.5, float_dtype)
    drv = Driver(path, w, lr=0.1, wd=0.1, lamda=0.5, momentum=0.9)
    drv.step(g)
    tol = _golden_tol(float_dtype)
    assert_close(w, np.array([0.94], float_dtype), float_dtype, **tol)
    assert_close(drv.mom, np.array([-0.06], float_dtype), float_dtype, **tol)
    drv.step(g)
    assert_close(w, np.array([0.82765853], float_dtype), float_dtype, **tol)
    assert_close(drv.mom, np.array([-0.11234149], float_dtype), float_dtype, **tol)
    assert_close(drv.prev, np.array([0.94], float_dtype), float_dtype, **tol)
    if float_dtype == np.float64:
        assert_close(w, np.array([0.827658508]), np.float64)
        assert_close(drv.mom, np.array([-0.112341492]), np.float64, role="state")


# ------------------------------------------------------------------------------ properties
@pytest.mark.parametrize("opts", options_product(lamda=[0.04, 0.5], momentum=[0.0, 0.9],
                                                 wd=[0.0, 0.01], clip_gradient=[None, 0.1]),
                         ids=options_id)
@pytest.mark.parametrize("path", PATHS)
def test_first_update_equals_sgd(path, opts, float_dtype, rng):
    """prev == w before the first update, so the first DCASGD step is the SGD step."""
    inp = make_inputs(rng, (4097,), float_dtype, steps=1)
    w = inp.weight.copy()
    drv = Driver(path, w, rescale_grad=0.5, **opts)
    drv.step(inp.grads[0])
    sgd_kw = {k: v for k, v in opts.items() if k != "lamda"}
    exp = ref.run_sgd(inp.weight, inp.grads, lr=LR, rescale_grad=0.5, **sgd_kw)
    assert_close(w, exp.weight, float_dtype)
    if opts["momentum"]:
        assert_close(drv.mom, exp.mom, float_dtype, role="state")
    # and the functional SGD kernel gives the same result
    w_sgd = inp.weight.copy()
    kw = dict(lr=LR, wd=opts["wd"], rescale_grad=0.5, clip_gradient=opts["clip_gradient"])
    if opts["momentum"]:
        fo.sgd_mom_update(w_sgd, inp.grads[0], np.zeros_like(w_sgd), momentum=opts["momentum"],
                          **kw)
    else:
        fo.sgd_update(w_sgd, inp.grads[0], **kw)
    assert_close(w, w_sgd, float_dtype)


@pytest.mark.parametrize("path", PATHS)
def test_prev_is_weight_before_update(path, float_dtype, rng):
    """After each update prev holds exactly (bitwise) the weight from before that update."""
    inp = make_inputs(rng, (37,), float_dtype, steps=4)
    w = inp.weight.copy()
    drv = Driver(path, w, lamda=0.5, momentum=0.9, wd=0.01)
    for g in inp.grads:
        before = w.copy()
        drv.step(g)
        assert_bitwise_equal(drv.prev, before)
        assert not np.array_equal(w, before)


@pytest.mark.parametrize("path", PATHS)
def test_gradient_is_never_modified(path, float_dtype, rng):
    opts = dict(lamda=0.5, momentum=0.9, wd=0.01, rescale_grad=0.5, clip_gradient=0.1)
    inp = make_inputs(rng, (4097,), float_dtype, steps=3, grad_scale=3.0)
    w = inp.weight.copy()
    drv = Driver(path, w, **opts)
    for g in inp.grads:
        snap = Snapshot(g)
        drv.step(g)
        snap.assert_unchanged(f"(gradient, path {path})")
    assert_close(w, ref.run_dcasgd(inp.weight, inp.grads, lr=LR, **opts).weight, float_dtype)


@pytest.mark.parametrize("path", PATHS)
def test_update_in_place_zero_copy(path, float_dtype, rng, cpu_capability):
    """Weight is a view at an unaligned offset in a guarded buffer; the update reaches it, nothing
    outside is touched, and the state arrays are updated in place."""
    opts = dict(lamda=0.5, momentum=0.9, wd=0.01, rescale_grad=0.5, clip_gradient=0.3)
    inp = make_inputs(rng, (4097,), float_dtype, steps=3)
    gw = guarded(inp.weight, offset=1)
    w = gw.view
    if path == "functional":
        gm = guarded(np.zeros_like(inp.weight), offset=3)
        gp = guarded(inp.weight, offset=2)
        mom, prev = gm.view, gp.view
        for g in inp.grads:
            fo.dcasgd_update(w, g, mom, prev, lr=LR, **opts)
        gm.assert_guards_intact()
        gp.assert_guards_intact()
    else:
        drv = Driver(path, w, **opts)
        mom, prev = drv.mom, drv.prev
        for g in inp.grads:
            drv.step(g)
        assert drv.state[0] is mom and drv.state[1] is prev
    exp = ref.run_dcasgd(inp.weight, inp.grads, lr=LR, **opts)
    gw.assert_guards_intact()
    assert_close(gw.buffer[1:1 + w.size], exp.weight, float_dtype)
    assert_close(mom, exp.mom, float_dtype, role="state")
    assert_close(prev, exp.prev, float_dtype, role="state")


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("shape", [(0,), (2, 0)], ids=shape_id)
@pytest.mark.parametrize("path", PATHS)
def test_zero_size_is_noop(path, shape, momentum, float_dtype):
    w = np.zeros(shape, float_dtype)
    drv = Driver(path, w, momentum=momentum, lamda=0.5, wd=0.01)
    drv.step(np.zeros(shape, float_dtype))
    assert w.shape == shape and drv.prev.shape == shape


@pytest.mark.parametrize("clip_gradient", [0.1, math.inf, None])
@pytest.mark.parametrize("path", PATHS)
def test_nonfinite_gradients(path, clip_gradient, float_dtype, cpu_capability):
    """NaN propagates (and passes clip); +-inf is clipped to +-c with clipping on. Without
    clipping an infinite gradient gives NaN (lam*r*r*(w-prev) = inf*0), as the documented formula does.
    The 4-element pattern is tiled to 259 elements (SIMD body and tail)."""
    reps = 65
    w0 = np.tile(np.array([0.5, -1.0, 2.0, 0.25], float_dtype), reps)[:259]
    g = np.tile(np.array([math.nan, math.inf, -math.inf, 1.0], float_dtype), reps)[:259]
    opts = dict(lamda=0.5, momentum=0.9, wd=0.01, clip_gradient=clip_gradient)
    w = w0.copy()
    drv = Driver(path, w, **opts)
    drv.step(g)
    exp = ref.run_dcasgd(w0, [g], lr=LR, **opts)
    assert_close(w, exp.weight, float_dtype)
    assert_close(drv.mom, exp.mom, float_dtype, role="state")
    assert np.isnan(w[0::4]).all()
    if clip_gradient == 0.1:
        assert np.isfinite(w[1::4]).all() and np.isfinite(w[2::4]).all()


# ------------------------------------------------------------------------------ multi-precision
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("use_fused_step", [False, True])
def test_dcasgd_multi_precision(use_fused_step, momentum, low_dtype, rng):
    """mp state (w32, (mom32 or None, prev32)); update_multi_precision follows the fp32 master."""
    opts = dict(lamda=0.5, momentum=momentum, wd=0.01, rescale_grad=0.5, clip_gradient=0.5)
    inp = make_inputs(rng, (3, 5, 7), low_dtype, steps=STEPS)
    w = inp.weight.copy()
    opt = fo.DCASGD(learning_rate=LR, multi_precision=True, use_fused_step=use_fused_step, **opts)
    state = opt.create_state_multi_precision(0, w)
    assert isinstance(state, tuple) and len(state) == 2
    w32, inner = state
    assert w32.dtype == np.float32 and w32.shape == w.shape
    assert_bitwise_equal(w32, w.astype(np.float32))
    mom32, prev32 = inner
    if momentum:
        assert mom32.dtype == np.float32 and not mom32.any()
    else:
        assert mom32 is None
    assert prev32.dtype == np.float32
    assert_bitwise_equal(prev32, w.astype(np.float32))
    for g in inp.grads:
        opt.update_multi_precision([0], [w], [g], [state])
    exp = ref.run_dcasgd(inp.weight, inp.grads, lr=LR, multi_precision=True, **opts)
    assert_close(w32, exp.weight32, low_dtype, role="master", multi_precision=True)
    assert_close(prev32, exp.prev, low_dtype, role="state", multi_precision=True)
    if momentum:
        assert_close(mom32, exp.mom, low_dtype, role="state", multi_precision=True)
    assert_close(w, exp.weight, low_dtype, multi_precision=True)
    assert_bitwise_equal(w, w32.astype(low_dtype))  # weight = cast(master)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_mp_dcasgd_update_functional(momentum, low_dtype, rng):
    opts = dict(lamda=0.5, momentum=momentum, wd=0.01, rescale_grad=1.0, clip_gradient=None)
    inp = make_inputs(rng, (4097,), low_dtype, steps=STEPS)
    w = inp.weight.copy()
    w32 = w.astype(np.float32)
    prev32 = w32.copy()
    mom32 = np.zeros(w.shape, np.float32) if momentum else None
    for g in inp.grads:
        fo.mp_dcasgd_update(w, g, mom32, prev32, w32, lr=LR, **opts)
    exp = ref.run_dcasgd(inp.weight, inp.grads, lr=LR, multi_precision=True, **opts)
    assert_close(w32, exp.weight32, low_dtype, role="master", multi_precision=True)
    assert_close(prev32, exp.prev, low_dtype, role="state", multi_precision=True)
    if momentum:
        assert_close(mom32, exp.mom, low_dtype, role="state", multi_precision=True)
    assert_close(w, exp.weight, low_dtype, multi_precision=True)


def test_dcasgd_low_precision_without_master_warns(low_dtype):
    """docs/SEMANTICS.md §2: a float16/bfloat16 weight without multi_precision warns (MXNet's text)."""
    opt = fo.DCASGD(learning_rate=LR)
    w = np.ones(4, low_dtype)
    with pytest.warns(UserWarning, match="multi_precision"):
        state = opt.create_state_multi_precision(0, w)
    mom, prev = state
    assert mom is None and prev.dtype == low_dtype
    assert_bitwise_equal(prev, w)
