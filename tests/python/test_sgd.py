"""Dense SGD on float32 / float64 weights against the float64 reference (docs/SEMANTICS.md §3).

Paths (one test body each):
  functional      fusedopt.sgd_update / sgd_mom_update
  update-fused    SGD(use_fused_step=True).update   (-> fused_step)
  update-unfused  SGD(use_fused_step=False).update  (-> step)
  step            SGD(use_fused_step=False).step
  fused_step      SGD(use_fused_step=True).fused_step
Expected values come only from reference.py or from the documented worked numbers.
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
    shape_id,
)

fo = import_fusedopt()

PATHS = ("functional", "update-fused", "update-unfused", "step", "fused_step")
CLASS_PATHS = PATHS[1:]
LR = 0.1
STEPS = 7

OPTIONS = options_product(momentum=[0.0, 0.9], wd=[0.0, 0.01], rescale_grad=[1.0, 0.5],
                          clip_gradient=[None, 0.1, math.inf])
# Large sizes: a subset of combinations keeps the suite fast.
LARGE_OPTIONS = [
    dict(momentum=0.0, wd=0.0, rescale_grad=1.0, clip_gradient=None),
    dict(momentum=0.9, wd=0.01, rescale_grad=0.5, clip_gradient=0.1),
    dict(momentum=0.9, wd=0.0, rescale_grad=1.0, clip_gradient=math.inf),
    dict(momentum=0.0, wd=0.01, rescale_grad=0.5, clip_gradient=0.1),
]
SMALL_SHAPES = [(1,), (7,), (3, 5, 7), ()]
# (shape, options): 4097 / 17x241 with the subset above; 278011 (apex's non-multiple of the chunk)
# only with everything off and everything on, to keep the suite fast.
LARGE_CASES = (
    [pytest.param(s, o, id=f"{shape_id(s)}-{options_id(o)}") for s in [(4097,), (17, 241)]
     for o in LARGE_OPTIONS]
    + [pytest.param((278011,), o, id=f"278011-{options_id(o)}") for o in LARGE_OPTIONS[:2]]
)


class Driver:
    """Runs SGD updates in place on ``weight`` through one of PATHS; ``state`` is the momentum
    array (or None) that the path keeps."""

    def __init__(self, path: str, weight: np.ndarray, *, lr: float = LR, momentum: float = 0.0,
                 wd: float = 0.0, rescale_grad: float = 1.0, clip_gradient=None,
                 mom: np.ndarray | None = None) -> None:
        self.path, self.weight, self.lr = path, weight, lr
        self.kw = dict(wd=wd, rescale_grad=rescale_grad, clip_gradient=clip_gradient)
        self.momentum = momentum
        if path == "functional":
            self.opt = None
            self.state = mom if mom is not None else (np.zeros_like(weight) if momentum else None)
        else:
            fused = path in ("update-fused", "fused_step")
            self.opt = fo.SGD(learning_rate=lr, momentum=momentum, use_fused_step=fused, **self.kw)
            self.state = self.opt.create_state(0, weight)
            if mom is not None:
                self.state[...] = mom
            self.method = {"update-fused": self.opt.update, "update-unfused": self.opt.update,
                           "step": self.opt.step, "fused_step": self.opt.fused_step}[path]

    def step(self, grad: np.ndarray, lr: float | None = None) -> None:
        if lr is not None and lr != self.lr:
            self.lr = lr
            if self.opt is not None:
                self.opt.set_learning_rate(lr)
        if self.opt is None:
            if self.state is None:
                fo.sgd_update(self.weight, grad, lr=self.lr, **self.kw)
            else:
                fo.sgd_mom_update(self.weight, grad, self.state, lr=self.lr,
                                  momentum=self.momentum, **self.kw)
        else:
            self.method([0], [self.weight], [grad], [self.state])


def _check_against_reference(path, dtype, shape, opts, rng, steps=STEPS):
    inp = make_inputs(rng, shape, dtype, steps=steps)
    expected = ref.run_sgd(inp.weight, inp.grads, lr=LR, **opts)
    w = inp.weight.copy()
    drv = Driver(path, w, **opts)
    for k, g in enumerate(inp.grads):
        drv.step(g)
        if k == 0 and w.size < 1000:  # a wrong first step, reported with a clearer message
            first = ref.run_sgd(inp.weight, inp.grads[:1], lr=LR, **opts)
            assert_close(w, first.weight, dtype, err_msg="after step 1")
    assert_close(w, expected.weight, dtype, err_msg=f"weight after {steps} steps")
    if opts["momentum"]:
        assert drv.state is not None
        assert_close(drv.state, expected.mom, dtype, role="state", err_msg="momentum")
    else:
        assert drv.state is None


@pytest.mark.parametrize("opts", OPTIONS, ids=options_id)
@pytest.mark.parametrize("shape", SMALL_SHAPES, ids=shape_id)
@pytest.mark.parametrize("path", PATHS)
def test_sgd_matches_reference(path, shape, opts, float_dtype, rng):
    _check_against_reference(path, float_dtype, shape, opts, rng)


@pytest.mark.parametrize("shape, opts", LARGE_CASES)
@pytest.mark.parametrize("path", PATHS)
def test_sgd_matches_reference_large(path, shape, opts, float_dtype, rng, cpu_capability):
    _check_against_reference(path, float_dtype, shape, opts, rng)


@pytest.mark.parametrize("shape", [(7,), (4097,)], ids=shape_id)
def test_sgd_mom_update_with_zero_momentum(shape, float_dtype, rng):
    """sgd_mom_update with momentum=0: m = -lr*r, w = w + m (the buffer is still written)."""
    inp = make_inputs(rng, shape, float_dtype, mom=True)
    w, m = inp.weight.copy(), inp.mom.copy()
    for g in inp.grads:
        fo.sgd_mom_update(w, g, m, lr=LR, momentum=0.0, wd=0.01, clip_gradient=0.5)
    exp = ref.run_sgd(inp.weight, inp.grads, lr=LR, momentum=0.0, wd=0.01, clip_gradient=0.5,
                      mom=inp.mom)
    assert_close(w, exp.weight, float_dtype)
    assert_close(m, exp.mom, float_dtype, role="state")


# ------------------------------------------------------------------------------ states
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("shape", [(7,), (3, 5, 7), ()], ids=shape_id)
def test_sgd_create_state(momentum, shape, float_dtype, rng):
    w = make_inputs(rng, shape, float_dtype, steps=0).weight
    opt = fo.SGD(learning_rate=LR, momentum=momentum)
    state = opt.create_state(0, w)
    if momentum == 0:
        assert state is None
        return
    assert isinstance(state, np.ndarray)
    assert state.shape == w.shape and state.dtype == w.dtype
    assert state.flags.c_contiguous and state.flags.writeable
    assert not np.shares_memory(state, w)
    assert_bitwise_equal(state, np.zeros(shape, float_dtype))


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_create_state_multi_precision_float32_weight(momentum, float_dtype, rng):
    """multi_precision only applies to float16/bfloat16: float32/64 weights get the plain state."""
    w = make_inputs(rng, (5,), float_dtype, steps=0).weight
    opt = fo.SGD(learning_rate=LR, momentum=momentum, multi_precision=True)
    state = opt.create_state_multi_precision(0, w)
    if momentum == 0:
        assert state is None
    else:
        assert isinstance(state, np.ndarray) and state.dtype == w.dtype and state.shape == w.shape
        assert not state.any()


# ------------------------------------------------------------------------------ docs/SEMANTICS.md goldens
@pytest.mark.parametrize("path", PATHS)
def test_golden_momentum_two_steps(path, float_dtype):
    """docs/SEMANTICS.md §3: w=1, g=1, lr=0.1, mu=0.9: step 1 m=-0.1, w=0.9; step 2 m=-0.19, w=0.71."""
    w = np.ones(1, float_dtype)
    g = np.ones(1, float_dtype)
    drv = Driver(path, w, lr=0.1, momentum=0.9)
    drv.step(g)
    assert_close(drv.state, np.array([-0.1], float_dtype), float_dtype, role="state")
    assert_close(w, np.array([0.9], float_dtype), float_dtype)
    drv.step(g)
    assert_close(drv.state, np.array([-0.19], float_dtype), float_dtype, role="state")
    assert_close(w, np.array([0.71], float_dtype), float_dtype)


@pytest.mark.parametrize("path", PATHS)
def test_golden_clip(path, float_dtype):
    """docs/SEMANTICS.md §3: w=[1,-2,3,0.5], g=[0.3,-0.7,2,-0.1], lr=0.1, c=0.5 -> [0.97,-1.95,2.95,0.51]."""
    w = np.array([1, -2, 3, 0.5], float_dtype)
    g = np.array([0.3, -0.7, 2, -0.1], float_dtype)
    Driver(path, w, lr=0.1, clip_gradient=0.5).step(g)
    assert_close(w, np.array([0.97, -1.95, 2.95, 0.51], float_dtype), float_dtype)


@pytest.mark.parametrize("path", PATHS)
def test_golden_zero_d(path, float_dtype):
    """0-d arrays work: w=1, g=1, lr=0.1 -> 0.9 (and momentum -0.1)."""
    w = np.array(1.0, float_dtype)
    g = np.array(1.0, float_dtype)
    drv = Driver(path, w, lr=0.1, momentum=0.9)
    drv.step(g)
    assert w.shape == () and drv.state.shape == ()
    assert_close(w, np.array(0.9, float_dtype), float_dtype)
    assert_close(drv.state, np.array(-0.1, float_dtype), float_dtype, role="state")


@pytest.mark.parametrize("path", PATHS)
def test_float64_hyper_parameters_are_exact(path, rng):
    """docs/SEMANTICS.md §3: float64 weights use exact double hyper-parameters (MXNet rounds to float32).

    The float64 tolerance (1e-12) is far below the effect of float32-rounded lr/wd/rg/mu
    (~1e-9 here), which this test proves before comparing."""
    opts = dict(momentum=0.9, wd=0.01, rescale_grad=0.3, clip_gradient=None)
    inp = make_inputs(rng, (64,), np.float64, steps=3)
    exact = ref.run_sgd(inp.weight, inp.grads, lr=LR, **opts)
    f32 = lambda v: float(np.float32(v))  # noqa: E731
    rounded = ref.run_sgd(inp.weight, inp.grads, lr=f32(LR), momentum=f32(0.9), wd=f32(0.01),
                          rescale_grad=f32(0.3))
    assert np.max(np.abs(rounded.weight - exact.weight)) > 1e-10  # the check discriminates
    w = inp.weight.copy()
    drv = Driver(path, w, **opts)
    for g in inp.grads:
        drv.step(g)
    assert_close(w, exact.weight, np.float64)
    assert_close(drv.state, exact.mom, np.float64, role="state")


# ------------------------------------------------------------------------------ learning rate
@pytest.mark.parametrize("path", PATHS)
def test_lr_change_acts_on_new_gradients_only_golden(path, float_dtype):
    """lr lives inside the momentum buffer: lr 0.1 then 0.01, g=1, mu=0.9, w=1:
    m1=-0.1, w1=0.9; m2 = 0.9*(-0.1) - 0.01*1 = -0.1, w2 = 0.8 (PyTorch's form would give 0.881)."""
    w = np.ones(3, float_dtype)
    g = np.ones(3, float_dtype)
    drv = Driver(path, w, lr=0.1, momentum=0.9)
    drv.step(g)
    drv.step(g, lr=0.01)
    assert_close(w, np.full(3, 0.8, float_dtype), float_dtype)
    assert_close(drv.state, np.full(3, -0.1, float_dtype), float_dtype, role="state")


@pytest.mark.parametrize("path", PATHS)
def test_lr_change_mid_training_matches_reference(path, float_dtype, rng):
    lrs = [0.1, 0.1, 0.02, 0.02, 0.3, 0.0, 0.05]
    opts = dict(momentum=0.9, wd=0.01, rescale_grad=0.5, clip_gradient=0.4)
    inp = make_inputs(rng, (33,), float_dtype, steps=len(lrs))
    exp = ref.run_sgd(inp.weight, inp.grads, lr=lrs, **opts)
    w = inp.weight.copy()
    drv = Driver(path, w, lr=lrs[0], **opts)
    for g, lr in zip(inp.grads, lrs):
        drv.step(g, lr=lr)
    assert_close(w, exp.weight, float_dtype)
    assert_close(drv.state, exp.mom, float_dtype, role="state")


@pytest.mark.parametrize("path", PATHS)
def test_lr_zero_keeps_weight_but_decays_momentum(path, float_dtype, rng):
    """lr=0 is allowed: without momentum the weight is unchanged; with momentum the buffer
    decays (m = mu*m) and the weight still moves by it (PITFALLS (d) 18)."""
    inp = make_inputs(rng, (9,), float_dtype, steps=2)
    w = inp.weight.copy()
    drv = Driver(path, w, lr=0.1, momentum=0.9, wd=0.01)
    drv.step(inp.grads[0])
    drv.step(inp.grads[1], lr=0.0)
    exp = ref.run_sgd(inp.weight, inp.grads, lr=[0.1, 0.0], momentum=0.9, wd=0.01)
    assert_close(w, exp.weight, float_dtype)
    assert_close(drv.state, exp.mom, float_dtype, role="state")

    w2 = inp.weight.copy()
    Driver(path, w2, lr=0.0, wd=0.01).step(inp.grads[0])
    assert_bitwise_equal(w2, inp.weight)


@pytest.mark.parametrize("rescale_grad", [0.0, -1.0, 1e-3, 1e3])
@pytest.mark.parametrize("path", PATHS)
def test_rescale_grad_any_finite_value(path, rescale_grad, float_dtype, rng):
    """rescale_grad only has to be finite; 0 and negative values are applied as written."""
    opts = dict(momentum=0.9, wd=0.01, rescale_grad=rescale_grad, clip_gradient=0.5)
    inp = make_inputs(rng, (11,), float_dtype, steps=3)
    exp = ref.run_sgd(inp.weight, inp.grads, lr=LR, **opts)
    w = inp.weight.copy()
    drv = Driver(path, w, **opts)
    for g in inp.grads:
        drv.step(g)
    assert_close(w, exp.weight, float_dtype)


# ------------------------------------------------------------------------------ buffers
GRAD_OPTS = dict(momentum=0.9, wd=0.01, rescale_grad=0.5, clip_gradient=0.1)


@pytest.mark.parametrize("path", PATHS)
def test_gradient_is_never_modified(path, float_dtype, rng):
    """docs/SEMANTICS.md §3: the gradient passed in is never modified (MXNet's step rescales/clips it)."""
    inp = make_inputs(rng, (4097,), float_dtype, steps=3, grad_scale=3.0)
    w = inp.weight.copy()
    drv = Driver(path, w, **GRAD_OPTS)
    for g in inp.grads:
        snap = Snapshot(g)
        drv.step(g)
        snap.assert_unchanged(f"(gradient, path {path})")
    exp = ref.run_sgd(inp.weight, inp.grads, lr=LR, **GRAD_OPTS)
    assert_close(w, exp.weight, float_dtype)


@pytest.mark.parametrize("path", PATHS)
def test_read_only_gradient_is_accepted(path, float_dtype, rng):
    inp = make_inputs(rng, (13,), float_dtype, steps=2)
    for g in inp.grads:
        g.flags.writeable = False
    w = inp.weight.copy()
    drv = Driver(path, w, **GRAD_OPTS)
    for g in inp.grads:
        drv.step(g)
    assert_close(w, ref.run_sgd(inp.weight, inp.grads, lr=LR, **GRAD_OPTS).weight, float_dtype)


@pytest.mark.parametrize("offset", [0, 1, 3])
@pytest.mark.parametrize("shape", [(7,), (4097,), (3, 5, 7)], ids=shape_id)
@pytest.mark.parametrize("path", PATHS)
def test_update_is_in_place_zero_copy(path, shape, offset, float_dtype, rng, cpu_capability):
    """The caller's memory is updated (same object, a view into a larger buffer, starting at an
    unaligned offset), nothing outside it is touched, and the state object is updated in place."""
    inp = make_inputs(rng, shape, float_dtype, steps=3)
    gw = guarded(inp.weight, offset=offset)
    w = gw.view
    w_id = id(w)
    if path == "functional":
        gm = guarded(np.zeros(shape, float_dtype), offset=offset + 1)
        drv = Driver(path, w, mom=gm.view, **GRAD_OPTS)
        assert drv.state is gm.view
    else:
        drv = Driver(path, w, **GRAD_OPTS)
    state = drv.state
    weights_list, states_list = [w], [state]
    for g in inp.grads:
        if path == "functional":
            drv.step(g)
        else:
            drv.method([0], weights_list, [g], states_list)
    exp = ref.run_sgd(inp.weight, inp.grads, lr=LR, **GRAD_OPTS)
    assert id(w) == w_id and weights_list[0] is w and states_list[0] is state
    assert np.shares_memory(w, gw.buffer)
    flat = gw.buffer[offset: offset + w.size].reshape(shape)
    assert_close(flat, exp.weight, float_dtype, err_msg="update not visible in caller's buffer")
    gw.assert_guards_intact()
    assert_close(state, exp.mom, float_dtype, role="state")
    if path == "functional":
        gm.assert_guards_intact()


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("path", CLASS_PATHS)
def test_update_accepts_single_items(path, momentum, float_dtype, rng):
    """update/step/fused_step accept a single index/array as a list of one."""
    opts = dict(momentum=momentum, wd=0.01, rescale_grad=1.0, clip_gradient=None)
    inp = make_inputs(rng, (6,), float_dtype, steps=2)
    w = inp.weight.copy()
    drv = Driver(path, w, **opts)
    for g in inp.grads:
        drv.method(0, w, g, drv.state)
    exp = ref.run_sgd(inp.weight, inp.grads, lr=LR, **opts)
    assert_close(w, exp.weight, float_dtype)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 4)], ids=shape_id)
@pytest.mark.parametrize("path", PATHS)
def test_zero_size_is_noop(path, shape, momentum, float_dtype):
    w = np.zeros(shape, float_dtype)
    g = np.zeros(shape, float_dtype)
    drv = Driver(path, w, momentum=momentum, wd=0.01, clip_gradient=0.1)
    drv.step(g)
    drv.step(g)
    assert w.shape == shape and w.dtype == float_dtype
    if momentum:
        assert drv.state.shape == shape and drv.state.dtype == float_dtype
    else:
        assert drv.state is None


@pytest.mark.parametrize("path", CLASS_PATHS)
def test_several_parameters_in_one_call(path, float_dtype, rng):
    """A list of several indices (different shapes, one zero-size) in one call equals per-index."""
    shapes = [(5,), (0,), (3, 4), (), (4097,)]
    opts = dict(momentum=0.9, wd=0.01, rescale_grad=0.5, clip_gradient=0.2)
    inps = [make_inputs(rng, s, float_dtype, steps=3) for s in shapes]
    fused = path in ("update-fused", "fused_step")
    opt = fo.SGD(learning_rate=LR, use_fused_step=fused, **opts)
    ws = [i.weight.copy() for i in inps]
    states = [opt.create_state(k, w) for k, w in enumerate(ws)]
    method = {"update-fused": opt.update, "update-unfused": opt.update,
              "step": opt.step, "fused_step": opt.fused_step}[path]
    for s in range(3):
        method(list(range(len(ws))), ws, [i.grads[s] for i in inps], states)
    for k, inp in enumerate(inps):
        exp = ref.run_sgd(inp.weight, inp.grads, lr=LR, **opts)
        assert_close(ws[k], exp.weight, float_dtype, err_msg=f"parameter {k}")
        assert_close(states[k], exp.mom, float_dtype, role="state", err_msg=f"parameter {k}")


# ------------------------------------------------------------------------------ NaN / Inf
# A 7-element pattern tiled to 259 elements, so SIMD bodies and scalar tails both see every case.
NONFINITE_W = [0.5, -1.0, 2.0, 0.25, 1.0, -3.0, 0.75]
NONFINITE_G = [math.nan, math.inf, -math.inf, 1.0, -0.5, 0.0, 0.05]
REPS = 37


@pytest.mark.parametrize("opts", options_product(momentum=[0.0, 0.9], wd=[0.0, 0.01],
                                                 clip_gradient=[None, 0.1, math.inf]),
                         ids=options_id)
@pytest.mark.parametrize("path", PATHS)
def test_nonfinite_gradients_propagate(path, opts, float_dtype, cpu_capability):
    """NaN/Inf in the gradient propagate as IEEE arithmetic on the documented formula; NaN passes clip,
    +-inf is clipped to +-c when clipping is on (c = inf clips nothing)."""
    w0 = np.tile(np.array(NONFINITE_W, float_dtype), REPS)
    g1 = np.tile(np.array(NONFINITE_G, float_dtype), REPS)
    w = w0.copy()
    drv = Driver(path, w, **opts)
    drv.step(g1)
    exp1 = ref.run_sgd(w0, [g1], lr=LR, **opts)
    assert_close(w, exp1.weight, float_dtype)  # NaN where expected, same infinities
    if opts["momentum"]:
        assert_close(drv.state, exp1.mom, float_dtype, role="state")
    assert np.isnan(w[0::7]).all(), "a NaN gradient must not be clipped away"
    if opts["clip_gradient"] == 0.1:
        assert np.isfinite(w.reshape(REPS, 7)[:, 1:]).all(), "+-inf must be clipped to +-c"
    else:
        assert np.isinf(w[1::7]).all() and np.isinf(w[2::7]).all()

    # A second, finite step: NaN stays NaN, elements that stayed finite follow the reference.
    # (Elements already +-inf are not compared: 0*inf in the decay term is formula-dependent.)
    g2 = np.tile(np.array([0.1, 0.2, -0.3, 0.4, -0.5, 0.6, -0.7], float_dtype), REPS)
    finite_before = np.isfinite(w) & (np.isfinite(drv.state) if opts["momentum"] else True)
    exp2 = ref.run_sgd(w0, [g1, g2], lr=LR, **opts)
    drv.step(g2)
    assert np.isnan(w[0::7]).all()
    assert_close(w[finite_before], exp2.weight[finite_before], float_dtype)
