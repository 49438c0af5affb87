"""Tests of the Python optimizer classes: SPEC sections 1-2 (plus the SGD / DCASGD rules of sections 3, 4, 7
as seen through the classes).

Expected numbers come from the SPEC's worked examples or from float64 / float32 math written out here.  Most
counting and multiplier tests use float64 weights with values that are exact in binary (powers of two), so the
implementation's result must be bit-exact whatever its operation order (FMA or not).
"""
from __future__ import annotations

import copy
import importlib
import math
import pickle
import types
import uuid
import warnings

import numpy as np
import pytest

from helpers import import_fusedopt

fusedopt = import_fusedopt()  # skips this module when fusedopt is not installed (unless FUSEDOPT_TEST_REQUIRE=1)
lrs = importlib.import_module("fusedopt.lr_scheduler")

try:
    import ml_dtypes

    BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - environment dependent
    ml_dtypes = None
    BF16 = None

needs_bf16 = pytest.mark.skipif(BF16 is None, reason="ml_dtypes not installed")
LOW_DTYPES = [pytest.param(np.dtype(np.float16), id="float16"),
              pytest.param(BF16, id="bfloat16", marks=needs_bf16)]

FP16_WARNING = ("Accumulating with float16 in optimizer can lead to poor accuracy or slow convergence. "
                "Consider using multi_precision=True option of the optimizer")


# --------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------

class Pow2Scheduler(lrs.LRScheduler):
    """lr(n) = 2**-n: a distinct, exactly representable lr for every count (stateless)."""

    def __init__(self):
        super().__init__(base_lr=1.0)

    def __call__(self, num_update):
        return 2.0 ** -num_update


def _bits(a):
    a = np.ascontiguousarray(a)
    return a.view(np.dtype(f"u{a.dtype.itemsize}"))


def assert_bitwise_equal(a, b, what=""):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype, f"{what}: dtype {a.dtype} != {b.dtype}"
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    np.testing.assert_array_equal(_bits(a), _bits(b), err_msg=what)


def assert_same_state(a, b, what="state"):
    if a is None or b is None:
        assert a is None and b is None, f"{what}: {a!r} vs {b!r}"
    elif isinstance(a, (tuple, list)):
        assert isinstance(b, (tuple, list)) and len(a) == len(b), f"{what}: {a!r} vs {b!r}"
        for k, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{what}[{k}]")
    else:
        assert_bitwise_equal(a, b, what)


def _one_sgd_update(opt, index, w, g, state=None, method="update"):
    getattr(opt, method)([index], [w], [g], [state])


def _probe_lr_wd(opt, index, method="update"):
    """Effective (lr, wd) for ``index`` from one SGD(momentum=0) update of w=[0, 1], g=[1, 0].

    w'[0] = 0 - lr*(1 + wd*0) = -lr ; w'[1] = 1 - lr*(0 + wd*1) = 1 - lr*wd.
    """
    w = np.array([0.0, 1.0])
    g = np.array([1.0, 0.0])
    _one_sgd_update(opt, index, w, g, None, method)
    lr = -w[0]
    wd = (1.0 - w[1]) / lr if lr != 0 else float("nan")
    return lr, wd


def _f32_sgd(w32, m32, g, *, lr, mu=0.0, wd=0.0, rg=1.0, c=None):
    """SPEC section 3 rule in float32 arithmetic (the multi-precision compute precision)."""
    f = np.float32
    r = f(rg) * np.asarray(g).astype(np.float32)
    if c is not None:
        r = np.clip(r, -f(c), f(c))
    r = r + f(wd) * w32
    if m32 is None:
        return (w32 - f(lr) * r).astype(np.float32), None
    m = (f(mu) * m32 - f(lr) * r).astype(np.float32)
    return (w32 + m).astype(np.float32), m


def _f64_sgd(w, m, g, *, lr, mu=0.0, wd=0.0, rg=1.0, c=None):
    r = rg * np.asarray(g, dtype=np.float64)
    if c is not None:
        r = np.clip(r, -c, c)
    r = r + wd * w
    if m is None:
        return w - lr * r, None
    m = mu * m - lr * r
    return w + m, m


def _f64_dcasgd(w, m, prev, g, *, lr, mu=0.0, lam=0.04, wd=0.0, rg=1.0, c=None):
    r = rg * np.asarray(g, dtype=np.float64)
    if c is not None:
        r = np.clip(r, -c, c)
    r = r + wd * w
    d = r + lam * r * r * (w - prev)
    if m is None:
        step = -lr * d
    else:
        m = mu * m - lr * d
        step = m
    return w + step, m, w.copy()


# --------------------------------------------------------------------------------------------------------------
# API surface and registry
# --------------------------------------------------------------------------------------------------------------

def test_public_names_exist():
    for name in ("Optimizer", "SGD", "DCASGD", "create", "Updater", "get_updater", "lr_scheduler"):
        assert hasattr(fusedopt, name), name
    assert issubclass(fusedopt.SGD, fusedopt.Optimizer)
    assert issubclass(fusedopt.DCASGD, fusedopt.Optimizer)


@pytest.mark.parametrize("name,cls", [("SGD", "SGD"), ("sgd", "SGD"), ("Sgd", "SGD"), ("sGD", "SGD"),
                                      ("DCASGD", "DCASGD"), ("dcasgd", "DCASGD"), ("DcaSgd", "DCASGD")])
def test_create_is_case_insensitive(name, cls):
    opt = fusedopt.create(name)
    assert type(opt) is getattr(fusedopt, cls)
    opt2 = fusedopt.Optimizer.create_optimizer(name)
    assert type(opt2) is getattr(fusedopt, cls)


def test_create_forwards_keyword_arguments():
    opt = fusedopt.create("sgd", learning_rate=0.25, momentum=0.5)
    assert opt.learning_rate == 0.25
    w = np.zeros(3)
    st = opt.create_state(0, w)
    assert st is not None and st.shape == (3,)  # momentum != 0 -> a buffer
    opt = fusedopt.Optimizer.create_optimizer("DCASGD", learning_rate=0.5, momentum=0.5, lamda=0.1)
    assert opt.learning_rate == 0.5
    m, prev = opt.create_state(0, w)
    assert m is not None and prev is not None


@pytest.mark.parametrize("name", ["adam", "nosuchopt", "", "sgd2"])
def test_create_unknown_name(name):
    with pytest.raises(ValueError, match="Cannot find optimizer"):
        fusedopt.create(name)
    with pytest.raises(ValueError, match="Cannot find optimizer"):
        fusedopt.Optimizer.create_optimizer(name)


def test_create_unknown_keyword_is_type_error():
    with pytest.raises(TypeError):
        fusedopt.create("sgd", not_an_argument=1)


def _unique_class(prefix="FusedoptTestOpt", base=None):
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    return type(name, (base or fusedopt.Optimizer,), {}), name


def test_register_and_create_custom_class():
    cls, name = _unique_class()
    assert fusedopt.Optimizer.register(cls) is cls  # usable as a decorator
    for spelled in (name, name.lower(), name.upper()):
        opt = fusedopt.create(spelled, learning_rate=0.3)
        assert type(opt) is cls
        assert opt.learning_rate == 0.3
        assert type(fusedopt.Optimizer.create_optimizer(spelled)) is cls


def test_register_as_decorator_on_sgd_subclass():
    name = f"FusedoptTestSgd{uuid.uuid4().hex[:12]}"
    cls = fusedopt.Optimizer.register(type(name, (fusedopt.SGD,), {}))
    opt = fusedopt.create(name.lower(), learning_rate=0.5)
    assert isinstance(opt, fusedopt.SGD) and type(opt) is cls
    w, g = np.array([1.0]), np.array([1.0])
    opt.update([0], [w], [g], [opt.create_state(0, w)])
    assert w[0] == 0.5


def test_reregister_warns_and_overrides():
    name = f"FusedoptTestDup{uuid.uuid4().hex[:12]}"
    a = type(name, (fusedopt.Optimizer,), {})
    b = type(name, (fusedopt.Optimizer,), {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the first registration must not warn
        fusedopt.Optimizer.register(a)
    with pytest.warns(UserWarning):
        fusedopt.Optimizer.register(b)
    assert type(fusedopt.create(name)) is b


# --------------------------------------------------------------------------------------------------------------
# Constructor keywords and defaults
# --------------------------------------------------------------------------------------------------------------

BASE_KW = dict(rescale_grad=1.0, param_idx2name=None, wd=0.0, clip_gradient=None, learning_rate=None,
               lr_scheduler=None, begin_num_update=0, multi_precision=False, param_dict=None, aggregate_num=None,
               use_fused_step=None)


def test_base_keywords_accepted_by_optimizer():
    opt = fusedopt.Optimizer(**BASE_KW)
    assert opt.learning_rate == 0.01
    assert opt.num_update == 0
    assert opt.aggregate_num == 1


@pytest.mark.parametrize("cls", ["SGD", "DCASGD"])
def test_base_keywords_accepted_by_subclasses(cls):
    kw = dict(BASE_KW)
    kw.update(learning_rate=0.2, aggregate_num=1, use_fused_step=False)
    opt = getattr(fusedopt, cls)(**kw)
    assert opt.learning_rate == 0.2


@pytest.mark.parametrize("cls", ["Optimizer", "SGD", "DCASGD"])
def test_unknown_keyword_is_type_error(cls):
    with pytest.raises(TypeError):
        getattr(fusedopt, cls)(learning_rate=0.1, bogus_option=3)
    with pytest.raises(TypeError):
        getattr(fusedopt, cls)(lr=0.1)  # MXNet's attribute name, not a constructor keyword


def test_optimizer_default_lr_is_0_01():
    assert fusedopt.Optimizer().learning_rate == 0.01


@pytest.mark.parametrize("cls", ["SGD", "DCASGD"])
def test_sgd_dcasgd_default_lr_is_0_1(cls):
    assert getattr(fusedopt, cls)().learning_rate == 0.1


def test_sgd_defaults_numerically():
    # SGD(): lr 0.1, no momentum, wd 0, rescale 1, no clipping (a large gradient is not clipped).
    opt = fusedopt.SGD()
    w = np.array([1.0, 2.0, -4.0])
    g = np.array([100.0, -3.0, 0.0])
    state = opt.create_state(0, w)
    assert state is None
    opt.update([0], [w], [g], [state])
    np.testing.assert_allclose(w, [1.0 - 0.1 * 100.0, 2.0 + 0.1 * 3.0, -4.0], rtol=1e-15, atol=0)


def test_dcasgd_defaults_numerically():
    # DCASGD(): lr 0.1, lamda 0.04, no momentum. Two steps so that lamda matters.
    opt = fusedopt.DCASGD()
    w = np.array([1.0, -0.5])
    state = opt.create_state(0, w)
    assert state[0] is None
    ew, em, ep = w.copy(), None, w.copy()
    for g in (np.array([2.0, 1.0]), np.array([-1.5, 3.0])):
        opt.update([0], [w], [g], [state])
        ew, em, ep = _f64_dcasgd(ew, em, ep, g, lr=0.1, lam=0.04)
    np.testing.assert_allclose(w, ew, rtol=1e-14)


def test_learning_rate_property_without_scheduler():
    opt = fusedopt.SGD(learning_rate=0.3)
    assert opt.learning_rate == 0.3
    opt.set_learning_rate(0.125)
    assert opt.learning_rate == 0.125
    lr, _ = _probe_lr_wd(opt, 0)
    assert lr == 0.125


def test_learning_rate_property_with_scheduler_follows_num_update():
    opt = fusedopt.SGD(lr_scheduler=Pow2Scheduler(), begin_num_update=2)
    assert opt.num_update == 2
    assert opt.learning_rate == 2.0 ** -2
    _probe_lr_wd(opt, 0)
    assert opt.num_update == 3
    assert opt.learning_rate == 2.0 ** -3


@pytest.mark.parametrize("cls", ["Optimizer", "SGD", "DCASGD"])
def test_set_learning_rate_with_scheduler_raises_userwarning(cls):
    sched = lrs.FactorScheduler(step=10, base_lr=0.3)
    opt = getattr(fusedopt, cls)(lr_scheduler=sched)
    with pytest.raises(UserWarning):
        opt.set_learning_rate(0.5)
    assert opt.learning_rate == pytest.approx(0.3, rel=1e-15)


# --------------------------------------------------------------------------------------------------------------
# SPEC section 2 Decision: scheduler vs learning_rate
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", ["Optimizer", "SGD", "DCASGD"])
def test_scheduler_without_learning_rate_keeps_base_lr(cls):
    sched = lrs.FactorScheduler(step=10, base_lr=0.3)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        opt = getattr(fusedopt, cls)(lr_scheduler=sched)
    assert not [w for w in rec if issubclass(w.category, UserWarning)], [str(w.message) for w in rec]
    assert sched.base_lr == 0.3
    assert opt.learning_rate == pytest.approx(0.3, rel=1e-15)


@pytest.mark.parametrize("cls", ["Optimizer", "SGD", "DCASGD"])
def test_scheduler_and_different_learning_rate_overwrites_with_warning(cls):
    sched = lrs.FactorScheduler(step=10, base_lr=0.3)
    with pytest.warns(UserWarning):
        opt = getattr(fusedopt, cls)(learning_rate=0.5, lr_scheduler=sched)
    assert sched.base_lr == 0.5
    assert opt.learning_rate == pytest.approx(0.5, rel=1e-15)


@pytest.mark.parametrize("cls", ["Optimizer", "SGD", "DCASGD"])
def test_scheduler_and_equal_learning_rate_no_warning(cls):
    sched = lrs.FactorScheduler(step=10, base_lr=0.25)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        opt = getattr(fusedopt, cls)(learning_rate=0.25, lr_scheduler=sched)
    assert not [w for w in rec if issubclass(w.category, UserWarning)], [str(w.message) for w in rec]
    assert sched.base_lr == 0.25
    assert opt.learning_rate == 0.25


def test_scheduler_base_lr_used_by_sgd_update():
    # Numerically: SGD with a scheduler (base 0.25) and no learning_rate steps with 0.25, not 0.1.
    opt = fusedopt.SGD(lr_scheduler=lrs.FactorScheduler(step=100, base_lr=0.25))
    lr, _ = _probe_lr_wd(opt, 0)
    assert lr == 0.25


# --------------------------------------------------------------------------------------------------------------
# Counting (SPEC section 2)
# --------------------------------------------------------------------------------------------------------------

METHODS = ["step", "fused_step", "update"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("begin", [0, 3])
def test_first_update_uses_scheduler_at_begin_plus_one(method, begin):
    opt = fusedopt.SGD(lr_scheduler=Pow2Scheduler(), begin_num_update=begin)
    assert opt.num_update == begin
    lr, _ = _probe_lr_wd(opt, 0, method)
    assert lr == 2.0 ** -(begin + 1)
    assert opt.num_update == begin + 1


@pytest.mark.parametrize("use_fused_step", [False, True])
def test_first_update_with_factor_scheduler_and_begin_num_update(use_fused_step):
    # FactorScheduler(step=1, factor=.5, base 1): lr(3) = .25, lr(4) = .125, lr(5) = .0625.
    opt = fusedopt.SGD(lr_scheduler=lrs.FactorScheduler(step=1, factor=0.5, base_lr=1.0), begin_num_update=3,
                       use_fused_step=use_fused_step)
    assert opt.learning_rate == 0.25
    w, g = np.zeros(5), np.ones(5)
    opt.update([0], [w], [g], [None])
    np.testing.assert_array_equal(w, -0.125)
    opt.update([0], [w], [g], [None])
    np.testing.assert_array_equal(w, -0.1875)


@pytest.mark.parametrize("method", METHODS)
def test_per_index_counts_and_num_update_is_the_max(method):
    opt = fusedopt.SGD(lr_scheduler=Pow2Scheduler(), use_fused_step=(method != "step"))
    seen_lr0 = [_probe_lr_wd(opt, 0, method)[0] for _ in range(3)]
    assert seen_lr0 == [0.5, 0.25, 0.125]
    assert opt.num_update == 3
    # index 1 is new: its own count starts at begin_num_update (0) and goes 1, 2, 3, 4; num_update stays 3 until
    # index 1's count passes it, and the lr is always read at the global num_update.
    seen_lr1, seen_n = [], []
    for _ in range(4):
        seen_lr1.append(_probe_lr_wd(opt, 1, method)[0])
        seen_n.append(opt.num_update)
    assert seen_n == [3, 3, 3, 4]
    assert seen_lr1 == [0.125, 0.125, 0.125, 0.0625]


@pytest.mark.parametrize("begin", [0, 5])
def test_step_counts_each_index_before_its_own_lr(begin):
    # index 0 updated twice -> num_update = begin+2.  step([1, 0]): index 1 (count begin+1) keeps num_update at
    # begin+2 -> lr(begin+2); then index 0 (count begin+3) -> lr(begin+3).
    opt = fusedopt.SGD(lr_scheduler=Pow2Scheduler(), begin_num_update=begin, use_fused_step=False)
    w0 = np.zeros(3)
    for _ in range(2):
        opt.step([0], [w0], [np.ones(3)], [None])
    w0[:] = 0
    w1 = np.zeros(3)
    opt.step([1, 0], [w1, w0], [np.ones(3), np.ones(3)], [None, None])
    np.testing.assert_array_equal(w1, -(2.0 ** -(begin + 2)))
    np.testing.assert_array_equal(w0, -(2.0 ** -(begin + 3)))
    assert opt.num_update == begin + 3


@pytest.mark.parametrize("via_update", [False, True])
@pytest.mark.parametrize("begin", [0, 5])
def test_fused_step_counts_whole_list_before_reading_lrs(via_update, begin):
    opt = fusedopt.SGD(lr_scheduler=Pow2Scheduler(), begin_num_update=begin, use_fused_step=True)
    w0 = np.zeros(3)
    for _ in range(2):
        opt.fused_step([0], [w0], [np.ones(3)], [None])
    w0[:] = 0
    w1 = np.zeros(3)
    call = opt.update if via_update else opt.fused_step
    call([1, 0], [w1, w0], [np.ones(3), np.ones(3)], [None, None])
    np.testing.assert_array_equal(w1, -(2.0 ** -(begin + 3)))
    np.testing.assert_array_equal(w0, -(2.0 ** -(begin + 3)))
    assert opt.num_update == begin + 3


@pytest.mark.parametrize("cls", ["SGD", "DCASGD"])
@pytest.mark.parametrize("use_fused_step", [False, True])
def test_counting_in_dcasgd_and_sgd_same(cls, use_fused_step):
    # First update of both classes equals plain SGD with lr(begin+1) (DCASGD's first step equals SGD's).
    opt = getattr(fusedopt, cls)(lr_scheduler=Pow2Scheduler(), begin_num_update=1, use_fused_step=use_fused_step)
    w, g = np.zeros(4), np.ones(4)
    opt.update([7], [w], [g], [opt.create_state(7, w)])
    np.testing.assert_array_equal(w, -0.25)
    assert opt.num_update == 2


# --------------------------------------------------------------------------------------------------------------
# lr_mult / wd_mult (SPEC section 2)
# --------------------------------------------------------------------------------------------------------------

LR, WD = 0.5, 0.25


def _pd(lr_mult, wd_mult):
    return types.SimpleNamespace(lr_mult=lr_mult, wd_mult=wd_mult)


MULT_CASES = [
    # id, constructor kw, lr_mult dict, wd_mult dict, index, expected (lr_mult, wd_mult)
    ("param_dict_wins_over_everything",
     dict(param_dict={0: _pd(4.0, 0.5)}, param_idx2name={0: "a"}), {0: 2.0, "a": 8.0}, {0: 2.0, "a": 8.0}, 0,
     (4.0, 0.5)),
    ("index_wins_over_name",
     dict(param_idx2name={0: "a"}), {0: 2.0, "a": 8.0}, {0: 0.25, "a": 8.0}, 0, (2.0, 0.25)),
    ("name_used_when_no_index_entry",
     dict(param_idx2name={0: "a"}), {"a": 8.0}, {"a": 2.0}, 0, (8.0, 2.0)),
    ("name_without_mult_entry_is_one",
     dict(param_idx2name={0: "a"}), {"b": 8.0}, {"b": 8.0}, 0, (1.0, 1.0)),
    ("no_entry_is_one", dict(), {}, {}, 3, (1.0, 1.0)),
    ("param_dict_for_other_index_ignored",
     dict(param_dict={1: _pd(4.0, 4.0)}), {0: 2.0}, {0: 0.5}, 0, (2.0, 0.5)),
    ("param_dict_zero_wd_mult",
     dict(param_dict={0: _pd(1.0, 0.0)}), {}, {0: 4.0}, 0, (1.0, 0.0)),
    ("lr_and_wd_mults_independent",
     dict(param_idx2name={0: "a"}), {0: 2.0}, {"a": 4.0}, 0, (2.0, 4.0)),
]


@pytest.mark.parametrize("method", ["step", "fused_step"])
@pytest.mark.parametrize("kw,lr_mult,wd_mult,index,expected", [c[1:] for c in MULT_CASES],
                         ids=[c[0] for c in MULT_CASES])
def test_multiplier_precedence(kw, lr_mult, wd_mult, index, expected, method):
    opt = fusedopt.SGD(learning_rate=LR, wd=WD, use_fused_step=(method == "fused_step"), **kw)
    opt.set_lr_mult(lr_mult)
    opt.set_wd_mult(wd_mult)
    lr, wd = _probe_lr_wd(opt, index, method)
    # all values are powers of two: the result is exact whatever the operation order
    assert (lr, wd) == (LR * expected[0], WD * expected[1])


def test_multipliers_per_index_in_one_fused_call():
    opt = fusedopt.SGD(learning_rate=LR, wd=WD, use_fused_step=True, param_idx2name={2: "c"},
                       param_dict={0: _pd(4.0, 2.0)})
    opt.set_lr_mult({1: 2.0, "c": 0.5})
    opt.set_wd_mult({1: 0.0, "c": 4.0})
    ws = [np.array([0.0, 1.0]) for _ in range(4)]
    gs = [np.array([1.0, 0.0]) for _ in range(4)]
    opt.update([0, 1, 2, 3], ws, gs, [None] * 4)
    for (lm, wm), w in zip([(4.0, 2.0), (2.0, 0.0), (0.5, 4.0), (1.0, 1.0)], ws):
        np.testing.assert_array_equal(w, [-LR * lm, 1.0 - LR * lm * WD * wm])


def test_set_lr_mult_replaces_whole_dict():
    opt = fusedopt.SGD(learning_rate=LR, wd=WD)
    opt.set_lr_mult({0: 2.0})
    opt.set_wd_mult({0: 4.0})
    assert _probe_lr_wd(opt, 0) == (LR * 2.0, WD * 4.0)
    opt.set_lr_mult({1: 0.5})
    opt.set_wd_mult({1: 2.0})
    assert _probe_lr_wd(opt, 0) == (LR, WD)  # the entry for 0 is gone
    assert _probe_lr_wd(opt, 1) == (LR * 0.5, WD * 2.0)


def test_set_mult_dicts_are_copied_or_replace():
    # set_*_mult with an empty dict removes every multiplier.
    opt = fusedopt.SGD(learning_rate=LR, wd=WD, param_idx2name={0: "a"})
    opt.set_lr_mult({"a": 2.0})
    opt.set_wd_mult({"a": 2.0})
    assert _probe_lr_wd(opt, 0) == (LR * 2.0, WD * 2.0)
    opt.set_lr_mult({})
    opt.set_wd_mult({})
    assert _probe_lr_wd(opt, 0) == (LR, WD)


@pytest.mark.parametrize("name", ["fc_bias", "bn_beta", "fc_weight", "bn_gamma", "embedding"])
def test_no_name_based_weight_decay_rule(name):
    # MXNet 1.x zeroed wd for names not ending in _weight/_gamma; fusedopt (like MXNet 2.0) has no such rule.
    opt = fusedopt.SGD(learning_rate=LR, wd=WD, param_idx2name={0: name})
    assert _probe_lr_wd(opt, 0) == (LR, WD)
    opt.set_wd_mult({})
    assert _probe_lr_wd(opt, 0) == (LR, WD)


# --------------------------------------------------------------------------------------------------------------
# multi_precision (SPEC section 2, 4)
# --------------------------------------------------------------------------------------------------------------

def _low_weight(dtype, shape=(7,), seed=0):
    rng = np.random.RandomState(seed)
    return rng.uniform(-2, 2, size=shape).astype(np.float32).astype(dtype)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("dtype", LOW_DTYPES)
def test_sgd_mp_state_layout(dtype, momentum):
    opt = fusedopt.SGD(momentum=momentum, multi_precision=True)
    w = _low_weight(dtype, (3, 4))
    before = w.copy()
    st = opt.create_state_multi_precision(0, w)
    assert isinstance(st, tuple) and len(st) == 2
    w32, inner = st
    assert w32.dtype == np.float32 and w32.shape == w.shape
    np.testing.assert_array_equal(w32, w.astype(np.float32))
    assert not np.shares_memory(w32, w)
    if momentum == 0:
        assert inner is None
    else:
        assert inner.dtype == np.float32 and inner.shape == w.shape
        assert not np.any(inner)
        assert not np.shares_memory(inner, w32)
    assert_bitwise_equal(w, before, "weight untouched by create_state")


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("dtype", LOW_DTYPES)
def test_dcasgd_mp_state_layout(dtype, momentum):
    opt = fusedopt.DCASGD(momentum=momentum, multi_precision=True)
    w = _low_weight(dtype, (5,))
    w32, (m32, prev32) = opt.create_state_multi_precision(0, w)
    assert w32.dtype == np.float32
    np.testing.assert_array_equal(w32, w.astype(np.float32))
    assert prev32.dtype == np.float32
    np.testing.assert_array_equal(prev32, w.astype(np.float32))
    assert not np.shares_memory(prev32, w32)
    if momentum == 0:
        assert m32 is None
    else:
        assert m32.dtype == np.float32 and not np.any(m32)


@pytest.mark.parametrize("cls", ["SGD", "DCASGD"])
def test_mp_with_float32_weight_is_plain_create_state(cls):
    opt = getattr(fusedopt, cls)(momentum=0.9, multi_precision=True)
    w = np.ones(4, dtype=np.float32)
    st = opt.create_state_multi_precision(0, w)
    ref = opt.create_state(0, w)
    assert_same_state(st, ref)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        getattr(fusedopt, cls)(momentum=0.9).create_state_multi_precision(0, w)  # float32: no warning


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("dtype", LOW_DTYPES)
def test_low_precision_without_mp_warns_and_uses_create_state(dtype, momentum):
    opt = fusedopt.SGD(momentum=momentum)
    w = _low_weight(dtype)
    with pytest.warns(UserWarning, match="Accumulating with float16") as rec:
        st = opt.create_state_multi_precision(0, w)
    assert any(FP16_WARNING in str(r.message) for r in rec), [str(r.message) for r in rec]
    if momentum == 0:
        assert st is None
    else:
        assert not isinstance(st, tuple)
        assert st.dtype == dtype and st.shape == w.shape and not np.any(st.astype(np.float32))


@pytest.mark.parametrize("dtype", LOW_DTYPES)
def test_dcasgd_low_precision_without_mp_warns(dtype):
    opt = fusedopt.DCASGD(momentum=0.0)
    w = _low_weight(dtype)
    with pytest.warns(UserWarning, match="Accumulating with float16"):
        m, prev = opt.create_state_multi_precision(0, w)
    assert m is None
    assert prev.dtype == dtype
    assert_bitwise_equal(prev, w, "prev")


MP_HYPER = dict(lr=0.1, mu=0.9, wd=0.01, rg=0.5, c=0.75)


@pytest.mark.parametrize("use_fused_step", [False, True], ids=["step", "fused"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("dtype", LOW_DTYPES)
def test_update_multi_precision_matches_float32_math(dtype, momentum, use_fused_step):
    h = dict(MP_HYPER, mu=momentum)
    opt = fusedopt.SGD(learning_rate=h["lr"], momentum=momentum, wd=h["wd"], rescale_grad=h["rg"],
                       clip_gradient=h["c"], multi_precision=True, use_fused_step=use_fused_step)
    rng = np.random.RandomState(1)
    w = _low_weight(dtype, (33,), seed=2)
    state = opt.create_state_multi_precision(0, w)
    ew32 = w.astype(np.float32)
    em32 = None if momentum == 0 else np.zeros_like(ew32)
    for _ in range(4):
        g = rng.uniform(-3, 3, size=w.shape).astype(np.float32).astype(dtype)
        g_before = g.copy()
        opt.update_multi_precision([0], [w], [g], [state])
        ew32, em32 = _f32_sgd(ew32, em32, g, **h)
        w32, m = state
        assert w32.dtype == np.float32
        np.testing.assert_allclose(w32, ew32, rtol=2e-6, atol=2e-7)
        if momentum:
            np.testing.assert_allclose(m, em32, rtol=2e-6, atol=2e-7)
        assert w.dtype == dtype
        assert_bitwise_equal(w, w32.astype(dtype), "w == cast(w32)")
        assert_bitwise_equal(g, g_before, "gradient unchanged")


@pytest.mark.parametrize("dtype", LOW_DTYPES)
def test_master_wins_over_direct_edit_of_low_precision_weight(dtype):
    opt = fusedopt.SGD(learning_rate=0.25, momentum=0.5, multi_precision=True)
    w = _low_weight(dtype, (6,))
    state = opt.create_state_multi_precision(0, w)
    g = np.full(w.shape, 0.5, dtype=dtype)
    opt.update_multi_precision([0], [w], [g], [state])
    master, mom = state[0].copy(), state[1].copy()
    w[:] = np.asarray(100.0, dtype=dtype)  # user edits the low-precision copy directly
    opt.update_multi_precision([0], [w], [g], [state])
    ew32, _ = _f32_sgd(master, mom, g, lr=0.25, mu=0.5)
    np.testing.assert_allclose(state[0], ew32, rtol=1e-6)
    assert_bitwise_equal(w, state[0].astype(dtype), "w == cast(master)")
    assert np.all(np.abs(w.astype(np.float32)) < 50)


def test_dcasgd_update_multi_precision_matches_float64_model():
    opt = fusedopt.DCASGD(learning_rate=0.1, momentum=0.9, lamda=0.5, wd=0.1, multi_precision=True)
    w = np.full(4, 1.0, dtype=np.float16)
    state = opt.create_state_multi_precision(0, w)
    ew, em, ep = np.full(4, 1.0), np.zeros(4), np.full(4, 1.0)
    for _ in range(2):
        g = np.full(4, 0.5, dtype=np.float16)
        opt.update_multi_precision([0], [w], [g], [state])
        ew, em, ep = _f64_dcasgd(ew, em, ep, g, lr=0.1, mu=0.9, lam=0.5, wd=0.1)
    w32, (m32, prev32) = state
    # SPEC section 7 worked example: w2 = 0.82765853, m2 = -0.11234149, prev = 0.94
    np.testing.assert_allclose(w32, 0.82765853, rtol=2e-6)
    np.testing.assert_allclose(m32, -0.11234149, rtol=2e-6)
    np.testing.assert_allclose(prev32, 0.94, rtol=2e-6)
    np.testing.assert_allclose(w32, ew, rtol=2e-6)
    assert_bitwise_equal(w, w32.astype(np.float16), "w == cast(w32)")


# --------------------------------------------------------------------------------------------------------------
# aggregate_num
# --------------------------------------------------------------------------------------------------------------

def test_aggregate_num_none_is_one():
    assert fusedopt.Optimizer(aggregate_num=None).aggregate_num == 1
    assert fusedopt.Optimizer().aggregate_num == 1


@pytest.mark.parametrize("value", [math.inf, np.inf, float("inf")], ids=["math_inf", "numpy_inf", "float_inf"])
def test_aggregate_num_inf_accepted(value):
    opt = fusedopt.SGD(aggregate_num=value, learning_rate=0.5)
    assert opt.aggregate_num == math.inf
    ws = [np.zeros(3) for _ in range(70)]  # more than MXNet's 60-per-call limit
    opt.update(list(range(70)), ws, [np.ones(3)] * 70, [None] * 70)
    for w in ws:
        np.testing.assert_array_equal(w, -0.5)


@pytest.mark.parametrize("value", [2, 4, 100])
def test_aggregate_num_integer_accepted(value):
    assert fusedopt.SGD(aggregate_num=value).aggregate_num == value


@pytest.mark.parametrize("value", [2.5, 0.5, 1.25])
def test_aggregate_num_non_integer_finite_rejected(value):
    with pytest.raises(ValueError):
        fusedopt.SGD(aggregate_num=value)
    with pytest.raises(ValueError):
        fusedopt.Optimizer(aggregate_num=value)


# --------------------------------------------------------------------------------------------------------------
# update -> step / fused_step dispatch, and both paths give the SPEC numbers
# --------------------------------------------------------------------------------------------------------------

def _spy(cls_name, calls):
    base = getattr(fusedopt, cls_name)

    class Spy(base):
        def step(self, *a, **k):
            calls.append("step")
            return super().step(*a, **k)

        def fused_step(self, *a, **k):
            calls.append("fused_step")
            return super().fused_step(*a, **k)

    return Spy


@pytest.mark.parametrize("use_fused_step", [None, False, True], ids=["default", "False", "True"])
@pytest.mark.parametrize("cls", ["SGD", "DCASGD"])
def test_update_dispatch(cls, use_fused_step):
    calls = []
    kw = {} if use_fused_step is None else {"use_fused_step": use_fused_step}
    opt = _spy(cls, calls)(learning_rate=0.1, momentum=0.9, **kw)
    w = np.ones(3)
    opt.update([0], [w], [np.ones(3)], [opt.create_state(0, w)])
    fused = True if use_fused_step is None else use_fused_step  # both default to the fused kernels
    expected, other = ("fused_step", "step") if fused else ("step", "fused_step")
    assert calls and calls[0] == expected, calls
    assert other not in calls, calls


@pytest.mark.parametrize("method", METHODS)
def test_sgd_spec_worked_example_momentum(method):
    opt = fusedopt.SGD(learning_rate=0.1, momentum=0.9, use_fused_step=(method != "step"))
    w = np.array([1.0])
    m = opt.create_state(0, w)
    assert m.dtype == w.dtype and m.shape == w.shape and m[0] == 0
    g = np.array([1.0])
    getattr(opt, method)([0], [w], [g], [m])
    np.testing.assert_allclose([w[0], m[0]], [0.9, -0.1], rtol=1e-15)
    getattr(opt, method)([0], [w], [g], [m])
    np.testing.assert_allclose([w[0], m[0]], [0.71, -0.19], rtol=1e-14)
    assert g[0] == 1.0


@pytest.mark.parametrize("method", METHODS)
def test_sgd_spec_worked_example_clip(method):
    opt = fusedopt.SGD(learning_rate=0.1, clip_gradient=0.5, use_fused_step=(method != "step"))
    w = np.array([1.0, -2.0, 3.0, 0.5])
    g = np.array([0.3, -0.7, 2.0, -0.1])
    g0 = g.copy()
    getattr(opt, method)([0], [w], [g], [None])
    np.testing.assert_allclose(w, [0.97, -1.95, 2.95, 0.51], rtol=1e-14)
    np.testing.assert_array_equal(g, g0)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_dcasgd_spec_worked_examples_both_paths(momentum):
    results = {}
    for fused in (False, True):
        opt = fusedopt.DCASGD(learning_rate=0.1, wd=0.1, lamda=0.5, momentum=momentum, use_fused_step=fused)
        w = np.array([1.0])
        state = opt.create_state(0, w)
        m, prev = state
        assert (m is None) == (momentum == 0)
        np.testing.assert_array_equal(prev, w)
        assert not np.shares_memory(prev, w)
        traj = []
        for _ in range(2):
            g = np.array([0.5])
            opt.update([0], [w], [g], [state])
            assert g[0] == 0.5
            traj.append((w[0], None if state[0] is None else state[0][0], state[1][0]))
        results[fused] = traj
        if momentum == 0:
            np.testing.assert_allclose([traj[0][0], traj[1][0]], [0.94, 0.8816585], rtol=1e-7)
        else:
            np.testing.assert_allclose([traj[0][0], traj[0][1], traj[1][0], traj[1][1]],
                                       [0.94, -0.06, 0.82765853, -0.11234149], rtol=1e-7)
        np.testing.assert_allclose(traj[1][2], 0.94, rtol=1e-14)
    a, b = results[False], results[True]
    for x, y in zip(a, b):
        np.testing.assert_allclose([v for v in x if v is not None], [v for v in y if v is not None], rtol=1e-14)


@pytest.mark.parametrize("cls", ["SGD", "DCASGD"])
def test_step_and_fused_step_agree_with_float64_math(cls):
    rng = np.random.RandomState(5)
    h = dict(lr=0.05, mu=0.8, wd=0.02, rg=0.7, c=1.5)
    shapes = [(3, 4), (17,), (2, 3, 5)]
    w_init = [rng.uniform(-1, 1, s) for s in shapes]
    grads = [[rng.uniform(-3, 3, s) for s in shapes] for _ in range(3)]
    out = {}
    for fused in (False, True):
        kw = dict(learning_rate=h["lr"], momentum=h["mu"], wd=h["wd"], rescale_grad=h["rg"], clip_gradient=h["c"],
                  use_fused_step=fused)
        if cls == "DCASGD":
            kw["lamda"] = 0.3
        opt = getattr(fusedopt, cls)(**kw)
        ws = [w.copy() for w in w_init]
        states = [opt.create_state(i, w) for i, w in enumerate(ws)]
        for gs in grads:
            gcopy = [g.copy() for g in gs]
            opt.update(list(range(len(ws))), ws, gs, states)
            for g, g0 in zip(gs, gcopy):
                np.testing.assert_array_equal(g, g0)
        out[fused] = (ws, states)
    # float64 model
    for i, w0 in enumerate(w_init):
        ew, em, ep = w0.copy(), np.zeros_like(w0), w0.copy()
        for gs in grads:
            if cls == "SGD":
                ew, em = _f64_sgd(ew, em, gs[i], **h)
            else:
                ew, em, ep = _f64_dcasgd(ew, em, ep, gs[i], lam=0.3, **h)
        for fused in (False, True):
            np.testing.assert_allclose(out[fused][0][i], ew, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(out[False][0][i], out[True][0][i], rtol=1e-14, atol=1e-15)


def test_update_accepts_single_items():
    opt = fusedopt.SGD(learning_rate=0.5)
    w, g = np.zeros(3), np.ones(3)
    opt.update(0, w, g, None)
    np.testing.assert_array_equal(w, -0.5)


# --------------------------------------------------------------------------------------------------------------
# Pickling
# --------------------------------------------------------------------------------------------------------------

def _pickle_cases():
    return {
        "sgd_plain": lambda: fusedopt.SGD(learning_rate=0.05, wd=0.01),
        "sgd_full": lambda: fusedopt.SGD(learning_rate=0.05, momentum=0.9, wd=0.01, rescale_grad=0.5,
                                         clip_gradient=0.8, use_fused_step=False, begin_num_update=4,
                                         param_idx2name={0: "w0", 1: "w1"}),
        "sgd_scheduler": lambda: fusedopt.SGD(momentum=0.5, lr_scheduler=lrs.FactorScheduler(step=2, factor=0.5,
                                                                                          base_lr=0.2)),
        "sgd_aggregate_inf": lambda: fusedopt.SGD(learning_rate=0.05, momentum=0.9, aggregate_num=math.inf),
        "dcasgd": lambda: fusedopt.DCASGD(learning_rate=0.05, lamda=0.3, wd=0.02),
        "dcasgd_momentum": lambda: fusedopt.DCASGD(learning_rate=0.05, momentum=0.7, lamda=0.3, clip_gradient=1.0,
                                                   rescale_grad=2.0, use_fused_step=True),
    }


@pytest.mark.parametrize("case", list(_pickle_cases()))
def test_pickle_round_trip_continues_identically(case):
    opt = _pickle_cases()[case]()
    opt.set_lr_mult({1: 0.5})
    opt.set_wd_mult({"w0": 2.0})
    rng = np.random.RandomState(3)
    ws = [rng.uniform(-1, 1, (4, 3)), rng.uniform(-1, 1, (5,))]
    states = [opt.create_state(i, w) for i, w in enumerate(ws)]
    for _ in range(3):
        opt.update([0, 1], ws, [rng.uniform(-1, 1, w.shape) for w in ws], states)
    clone = pickle.loads(pickle.dumps(opt))
    assert type(clone) is type(opt)
    assert clone.num_update == opt.num_update
    assert clone.learning_rate == opt.learning_rate
    ws2, states2 = copy.deepcopy(ws), copy.deepcopy(states)
    for _ in range(3):
        gs = [rng.uniform(-1, 1, w.shape) for w in ws]
        opt.update([0, 1], ws, gs, states)
        clone.update([0, 1], ws2, gs, states2)
    for k in range(2):
        assert_bitwise_equal(ws[k], ws2[k], f"weight {k}")
        assert_same_state(states[k], states2[k], f"state {k}")
    assert clone.num_update == opt.num_update


@pytest.mark.parametrize("cls", ["SGD", "DCASGD"])
def test_pickle_drops_param_dict(cls):
    # The param_dict entry is not even picklable (a lambda): it must be dropped, not serialized.
    pd = {0: types.SimpleNamespace(lr_mult=2.0, wd_mult=1.0, hook=lambda: None)}
    opt = getattr(fusedopt, cls)(learning_rate=0.25, param_dict=pd)
    clone = pickle.loads(pickle.dumps(opt))
    assert not getattr(clone, "param_dict", None)
    w, g = np.zeros(3), np.ones(3)
    clone.update([0], [w], [g], [clone.create_state(0, w)])
    np.testing.assert_array_equal(w, -0.25)  # lr_mult from param_dict no longer applies
    w, g = np.zeros(3), np.ones(3)
    opt.update([0], [w], [g], [opt.create_state(0, w)])
    np.testing.assert_array_equal(w, -0.5)  # the original still has it


def test_pickle_keeps_hyper_parameters_of_dcasgd():
    opt = fusedopt.DCASGD(learning_rate=0.1, momentum=0.9, lamda=0.5, wd=0.1)
    clone = pickle.loads(pickle.dumps(opt))
    w = np.array([1.0])
    st = clone.create_state(0, w)
    for _ in range(2):
        clone.update([0], [w], [np.array([0.5])], [st])
    np.testing.assert_allclose([w[0], st[0][0]], [0.82765853, -0.11234149], rtol=1e-7)
