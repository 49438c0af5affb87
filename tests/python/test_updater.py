"""Tests of ``fusedopt.Updater`` / ``get_updater`` and the saved-state format (docs/SEMANTICS.md §9, PITFALLS (d)
rows 30-31).

The hostile-input tests assume nothing about the saved format beyond docs/SEMANTICS.md: they use random bytes, truncation,
pickle payloads and generic zip archives.  Where a test mutates a *valid* archive (a zip member, a JSON field
named like "version"), it only does so when the archive really is a zip / has such a field, and skips otherwise.
Every malformed input must be answered with ``ValueError`` and must never run code.
"""
from __future__ import annotations

import copy
import importlib
import io
import json
import math
import pickle
import struct
import warnings
import zipfile

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

F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
needs_bf16 = pytest.mark.skipif(BF16 is None, reason="ml_dtypes not installed")


# --------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------

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


def assert_same_states(sa, sb):
    assert set(sa) == set(sb), (sorted(map(repr, sa)), sorted(map(repr, sb)))
    for k in sa:
        assert_same_state(sa[k], sb[k], f"state[{k!r}]")


class _Quiet:
    """Ignore the documented float16-accumulation warning (fp16 weights without multi_precision)."""

    def __enter__(self):
        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.filterwarnings("ignore", message="Accumulating with float16", category=UserWarning)

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


def _weights(specs, seed=0):
    rng = np.random.RandomState(seed)
    return [rng.uniform(-1, 1, size=shape).astype(np.float32).astype(dt) for shape, dt in specs]


def _grad_seq(specs, steps, seed=1):
    rng = np.random.RandomState(seed)
    return [[rng.uniform(-2, 2, size=shape).astype(np.float32).astype(dt) for shape, dt in specs]
            for _ in range(steps)]


def _run(updater, indices, ws, grad_seq):
    with _Quiet():
        for gs in grad_seq:
            updater(list(indices), list(gs), list(ws))


# --------------------------------------------------------------------------------------------------------------
# Updater basics
# --------------------------------------------------------------------------------------------------------------

def test_get_updater_returns_updater():
    opt = fusedopt.SGD(learning_rate=0.1)
    u = fusedopt.get_updater(opt)
    assert isinstance(u, fusedopt.Updater)
    assert u.optimizer is opt
    assert fusedopt.Updater(opt).optimizer is opt


def test_call_order_is_index_grad_weight():
    u = fusedopt.Updater(fusedopt.SGD(learning_rate=0.5))
    w = np.array([1.0, 2.0, 3.0])
    g = np.array([1.0, -1.0, 0.5])
    u(0, g, w)
    np.testing.assert_array_equal(w, [0.5, 2.5, 2.75])
    np.testing.assert_array_equal(g, [1.0, -1.0, 0.5])  # the gradient is never written


def test_bytes_indices_are_decoded_and_equal_str_indices():
    """MXNet passes bytes parameter names; they key the same states as the str names."""
    rng = np.random.default_rng(5)
    ws = [rng.standard_normal(7).astype(np.float32) for _ in range(3)]
    ws2 = [w.copy() for w in ws]
    a = fusedopt.Updater(fusedopt.SGD(learning_rate=0.1, momentum=0.9, aggregate_num=math.inf))
    b = fusedopt.Updater(fusedopt.SGD(learning_rate=0.1, momentum=0.9, aggregate_num=math.inf))
    for _ in range(3):
        gs = [rng.standard_normal(7).astype(np.float32) for _ in range(3)]
        a([b"w0", b"w1", "w2"], gs, ws)
        b(["w0", "w1", "w2"], gs, ws2)
    assert sorted(a.states) == ["w0", "w1", "w2"]
    for w, w2 in zip(ws, ws2):
        np.testing.assert_array_equal(w, w2)


def test_partly_synced_states_after_load():
    """After set_states, a call on some indices syncs those; a later call on all indices syncs the
    rest and continues exactly like an updater that never saved."""
    rng = np.random.default_rng(6)
    ws = [rng.standard_normal(5).astype(np.float32) for _ in range(4)]
    ref_ws = [w.copy() for w in ws]
    opt = lambda: fusedopt.SGD(learning_rate=0.1, momentum=0.9, aggregate_num=math.inf)  # noqa: E731
    u, ref = fusedopt.Updater(opt()), fusedopt.Updater(opt())
    grads = [[rng.standard_normal(5).astype(np.float32) for _ in range(4)] for _ in range(4)]
    u(list(range(4)), grads[0], ws)
    ref(list(range(4)), grads[0], ref_ws)
    u.set_states(u.get_states())
    u([1, 2], grads[1][1:3], ws[1:3])
    ref([1, 2], grads[1][1:3], ref_ws[1:3])
    for step in (2, 3):
        u(list(range(4)), grads[step], ws)
        ref(list(range(4)), grads[step], ref_ws)
    for w, r in zip(ws, ref_ws):
        np.testing.assert_array_equal(w, r)


def test_non_array_weight_is_type_error():
    u = fusedopt.Updater(fusedopt.SGD(learning_rate=0.1, aggregate_num=math.inf))
    with pytest.raises(TypeError):
        u([0, 1], [np.ones(3, np.float32)] * 2, [np.ones(3, np.float32), [1.0, 2.0, 3.0]])


def test_states_created_lazily():
    opt = fusedopt.SGD(learning_rate=0.1, momentum=0.9)
    u = fusedopt.Updater(opt)
    assert len(u.states) == 0
    w0, w1, w2 = np.ones(3), np.ones((2, 2), dtype=np.float32), np.ones(5)
    g = np.zeros
    u(0, g(3), w0)
    assert set(u.states) == {0}
    assert u.states[0].shape == (3,) and u.states[0].dtype == F64
    u([1, 2], [g((2, 2), dtype=np.float32), g(5)], [w1, w2])
    assert set(u.states) == {0, 1, 2}
    assert u.states[1].dtype == F32 and u.states[1].shape == (2, 2)
    # an existing state is reused, not re-created: the momentum keeps accumulating
    u(0, np.ones(3), w0)
    np.testing.assert_allclose(u.states[0], -0.1, rtol=1e-15)
    u(0, np.ones(3), w0)
    np.testing.assert_allclose(u.states[0], -0.19, rtol=1e-14)
    np.testing.assert_allclose(w0, 1.0 - 0.1 - 0.19, rtol=1e-14)


def test_states_use_create_state_multi_precision():
    u = fusedopt.Updater(fusedopt.SGD(learning_rate=0.1, momentum=0.9, multi_precision=True))
    w = np.ones(4, dtype=np.float16)
    u(3, np.zeros(4, dtype=np.float16), w)
    w32, m = u.states[3]
    assert w32.dtype == F32 and m.dtype == F32
    np.testing.assert_array_equal(w32, 1.0)


def test_single_items_equal_list_calls():
    specs = [((3, 2), F32), ((5,), F64)]
    grads = _grad_seq(specs, 3)
    outs = []
    for as_list in (False, True):
        u = fusedopt.Updater(fusedopt.SGD(learning_rate=0.1, momentum=0.9, wd=0.01))
        ws = _weights(specs)
        for gs in grads:
            if as_list:
                u([0, 1], gs, ws)
            else:
                for i in range(2):
                    u(i, gs[i], ws[i])
        outs.append((ws, u.states))
    for a, b in zip(outs[0][0], outs[1][0]):
        assert_bitwise_equal(a, b, "weight")
    assert_same_states(outs[0][1], outs[1][1])


def test_updater_matches_float64_sgd_math():
    lr, mu, wd = 0.1, 0.9, 0.01
    u = fusedopt.Updater(fusedopt.SGD(learning_rate=lr, momentum=mu, wd=wd))
    w = np.array([1.0, -0.5, 0.25])
    ew, em = w.copy(), np.zeros(3)
    for g in (np.array([0.3, 0.2, -1.0]), np.array([-0.1, 0.4, 0.0])):
        u(0, g, w)
        r = g + wd * ew
        em = mu * em - lr * r
        ew = ew + em
    np.testing.assert_allclose(w, ew, rtol=1e-14)
    np.testing.assert_allclose(u.states[0], em, rtol=1e-14)


MIXED_SPECS = [((4, 3), F32), ((7,), F64), ((5,), F16), ((2, 2), F32), ((9,), F64), ((3,), F16), ((6,), F32),
               ((1,), F32)]


@pytest.mark.parametrize("aggregate_num", [2, 3, 100, math.inf, np.inf],
                         ids=["agg2", "agg3", "agg100", "math_inf", "numpy_inf"])
@pytest.mark.parametrize("cls", ["SGD", "DCASGD"])
def test_grouped_updates_equal_per_index_updates(cls, aggregate_num):
    def make(agg):
        kw = dict(learning_rate=0.1, momentum=0.9, wd=0.01, rescale_grad=0.5, clip_gradient=0.8,
                  multi_precision=True, aggregate_num=agg, use_fused_step=True)
        if cls == "DCASGD":
            kw["lamda"] = 0.2
        return getattr(fusedopt, cls)(**kw)

    grads = _grad_seq(MIXED_SPECS, 3)
    idx = list(range(len(MIXED_SPECS)))
    ref_u, ref_w = fusedopt.Updater(make(1)), _weights(MIXED_SPECS)
    agg_u, agg_w = fusedopt.Updater(make(aggregate_num)), _weights(MIXED_SPECS)
    _run(ref_u, idx, ref_w, grads)
    _run(agg_u, idx, agg_w, grads)
    for k, (a, b) in enumerate(zip(ref_w, agg_w)):
        assert_bitwise_equal(a, b, f"weight {k}")
    assert_same_states(ref_u.states, agg_u.states)
    # and the numbers are right: float64 model of the float32/float64 tensors
    w0 = _weights(MIXED_SPECS)
    for k, (shape, dt) in enumerate(MIXED_SPECS):
        if dt == F16:
            continue
        ew, em, ep = w0[k].astype(np.float64), np.zeros(shape), w0[k].astype(np.float64)
        for gs in grads:
            r = np.clip(0.5 * gs[k].astype(np.float64), -0.8, 0.8) + 0.01 * ew
            if cls == "DCASGD":
                r = r + 0.2 * r * r * (ew - ep)
            ep = ew.copy()
            em = 0.9 * em - 0.1 * r
            ew = ew + em
        tol = 1e-13 if dt == F64 else 2e-6
        np.testing.assert_allclose(agg_w[k], ew, rtol=tol, atol=tol)


def test_grouped_updates_many_tensors_in_one_group():
    # More tensors than MXNet's 60-per-call limit in one dtype group.
    n = 75
    specs = [((3,), F32)] * n
    grads = _grad_seq(specs, 2)
    ws_a, ws_b = _weights(specs), _weights(specs)
    ua = fusedopt.Updater(fusedopt.SGD(learning_rate=0.1, momentum=0.5, aggregate_num=math.inf))
    ub = fusedopt.Updater(fusedopt.SGD(learning_rate=0.1, momentum=0.5, aggregate_num=1))
    _run(ua, range(n), ws_a, grads)
    _run(ub, range(n), ws_b, grads)
    for a, b in zip(ws_a, ws_b):
        assert_bitwise_equal(a, b)


# --------------------------------------------------------------------------------------------------------------
# get_states / set_states: save, load, continue == uninterrupted
# --------------------------------------------------------------------------------------------------------------

NON_MP = [((4, 3), F32), ((7,), F64), ((2, 2, 2), F32)]
MP16 = [((4, 3), F16), ((7,), F32), ((5,), F16)]
MPBF = [((4, 3), BF16), ((6,), BF16)] if BF16 is not None else []

# name -> (factory(begin_num_update) -> optimizer, weight specs, marks)
SAVE_CASES = {
    "sgd": (lambda b: fusedopt.SGD(learning_rate=0.1, wd=0.01, begin_num_update=b), NON_MP, ()),
    "sgd_momentum": (lambda b: fusedopt.SGD(learning_rate=0.1, momentum=0.9, wd=0.01, rescale_grad=0.5,
                                            clip_gradient=0.7, begin_num_update=b), NON_MP, ()),
    "sgd_momentum_step_path": (lambda b: fusedopt.SGD(learning_rate=0.1, momentum=0.9, use_fused_step=False,
                                                      begin_num_update=b), NON_MP, ()),
    "sgd_momentum_aggregate": (lambda b: fusedopt.SGD(learning_rate=0.1, momentum=0.9, aggregate_num=2,
                                                      begin_num_update=b), NON_MP, ()),
    "dcasgd": (lambda b: fusedopt.DCASGD(learning_rate=0.1, lamda=0.3, wd=0.01, begin_num_update=b), NON_MP, ()),
    "dcasgd_momentum": (lambda b: fusedopt.DCASGD(learning_rate=0.1, momentum=0.9, lamda=0.3,
                                                  begin_num_update=b), NON_MP, ()),
    "dcasgd_momentum_fused": (lambda b: fusedopt.DCASGD(learning_rate=0.1, momentum=0.9, lamda=0.3,
                                                        use_fused_step=True, begin_num_update=b), NON_MP, ()),
    "sgd_mp_fp16": (lambda b: fusedopt.SGD(learning_rate=0.1, momentum=0.9, multi_precision=True,
                                           begin_num_update=b), MP16, ()),
    "sgd_mp_fp16_no_momentum": (lambda b: fusedopt.SGD(learning_rate=0.1, multi_precision=True,
                                                       begin_num_update=b), MP16, ()),
    "sgd_mp_fp16_aggregate": (lambda b: fusedopt.SGD(learning_rate=0.1, momentum=0.9, multi_precision=True,
                                                     aggregate_num=math.inf, begin_num_update=b), MP16, ()),
    "sgd_mp_bf16": (lambda b: fusedopt.SGD(learning_rate=0.1, momentum=0.9, multi_precision=True,
                                           begin_num_update=b), MPBF, (needs_bf16,)),
    "dcasgd_mp_fp16": (lambda b: fusedopt.DCASGD(learning_rate=0.1, momentum=0.9, lamda=0.3, multi_precision=True,
                                                 begin_num_update=b), MP16, ()),
    "sgd_fp16_without_mp": (lambda b: fusedopt.SGD(learning_rate=0.1, momentum=0.9, begin_num_update=b), MP16, ()),
    "sgd_scheduler": (lambda b: fusedopt.SGD(momentum=0.9, lr_scheduler=lrs.FactorScheduler(step=2, factor=0.5,
                                                                                         base_lr=0.2),
                                             begin_num_update=b), NON_MP, ()),
    "dcasgd_scheduler": (lambda b: fusedopt.DCASGD(momentum=0.5, lr_scheduler=lrs.MultiFactorScheduler(
        step=[7, 9, 10], factor=0.5, base_lr=0.2), begin_num_update=b), NON_MP, ()),
}
BEGIN = 5
K, TOTAL = 3, 6


def _save_case_params():
    return [pytest.param(name, marks=list(marks), id=name) for name, (_, _, marks) in SAVE_CASES.items()]


@pytest.mark.parametrize("dump_optimizer", [False, True], ids=["states_only", "dump_optimizer"])
@pytest.mark.parametrize("case", _save_case_params())
def test_save_load_continue_is_bitwise_identical(case, dump_optimizer):
    make, specs, _ = SAVE_CASES[case]
    idx = list(range(len(specs)))
    grads = _grad_seq(specs, TOTAL)

    # uninterrupted run
    u_ref = fusedopt.Updater(make(BEGIN))
    ws_ref = _weights(specs)
    _run(u_ref, idx, ws_ref, grads)

    # run K steps, save (weights are the user's: copied), load into a fresh Updater + fresh optimizer, continue
    u1 = fusedopt.Updater(make(BEGIN))
    ws1 = _weights(specs)
    _run(u1, idx, ws1, grads[:K])
    blob = u1.get_states(dump_optimizer=dump_optimizer)
    assert isinstance(blob, bytes)
    ws2 = [w.copy() for w in ws1]
    del u1, ws1
    # Without the optimizer in the file the caller resumes counting with begin_num_update (MXNet practice);
    # with dump_optimizer=True the counts come from the file.
    fresh = make(BEGIN + K) if not dump_optimizer else make(BEGIN)
    u2 = fusedopt.Updater(fresh)
    u2.set_states(blob)
    if dump_optimizer:
        assert u2.optimizer.num_update == BEGIN + K
    _run(u2, idx, ws2, grads[K:])

    for k, (a, b) in enumerate(zip(ws_ref, ws2)):
        assert_bitwise_equal(a, b, f"weight {k}")
    assert_same_states(u_ref.states, u2.states)
    assert u2.optimizer.num_update == u_ref.optimizer.num_update == BEGIN + TOTAL


def test_get_states_is_repeatable_and_does_not_disturb_training():
    specs = NON_MP
    grads = _grad_seq(specs, 4)
    u_a, ws_a = fusedopt.Updater(fusedopt.SGD(learning_rate=0.1, momentum=0.9)), _weights(specs)
    u_b, ws_b = fusedopt.Updater(fusedopt.SGD(learning_rate=0.1, momentum=0.9)), _weights(specs)
    _run(u_a, range(3), ws_a, grads[:2])
    _run(u_b, range(3), ws_b, grads[:2])
    b1 = u_a.get_states()
    b2 = u_a.get_states()
    u_a.get_states(dump_optimizer=True)
    _run(u_a, range(3), ws_a, grads[2:])
    _run(u_b, range(3), ws_b, grads[2:])
    for a, b in zip(ws_a, ws_b):
        assert_bitwise_equal(a, b)
    # both snapshots describe the same state: loading either one gives the same result
    outs = []
    for blob in (b1, b2):
        u = fusedopt.Updater(fusedopt.SGD(learning_rate=0.1, momentum=0.9))
        u.set_states(blob)
        ws = _weights(specs, seed=9)
        _run(u, range(3), ws, grads[2:])
        outs.append(ws)
    for a, b in zip(*outs):
        assert_bitwise_equal(a, b)


def test_empty_updater_round_trip():
    blob = fusedopt.Updater(fusedopt.SGD()).get_states()
    assert isinstance(blob, bytes)
    u = fusedopt.Updater(fusedopt.SGD(learning_rate=0.5))
    u.set_states(blob)
    assert len(u.states) == 0
    w = np.ones(2)
    u(0, np.ones(2), w)
    np.testing.assert_array_equal(w, 0.5)


def test_loaded_states_equal_saved_states():
    specs = MP16 + NON_MP
    u = fusedopt.Updater(fusedopt.SGD(learning_rate=0.1, momentum=0.9, multi_precision=True))
    ws = _weights(specs)
    _run(u, range(len(specs)), ws, _grad_seq(specs, 2))
    saved = copy.deepcopy(u.states)
    u2 = fusedopt.Updater(fusedopt.SGD(learning_rate=0.1, momentum=0.9, multi_precision=True))
    u2.set_states(u.get_states())
    # States may be materialized lazily (at the next update, on the weight's device), so update both with
    # identical inputs and compare everything afterwards.
    g = _grad_seq(specs, 1, seed=4)
    ws_a = [w.copy() for w in ws]
    ws_b = [w.copy() for w in ws]
    _run(u, range(len(specs)), ws_a, g)
    _run(u2, range(len(specs)), ws_b, g)
    for a, b in zip(ws_a, ws_b):
        assert_bitwise_equal(a, b)
    assert_same_states(u.states, u2.states)
    assert set(saved) == set(u2.states)


@pytest.mark.parametrize("cls", ["SGD", "DCASGD"])
def test_dump_optimizer_restores_hyper_parameters_and_counts(cls):
    if cls == "SGD":
        saved_kw = dict(learning_rate=0.05, momentum=0.9, wd=0.01, rescale_grad=0.5, clip_gradient=1.0)
    else:
        saved_kw = dict(learning_rate=0.05, momentum=0.5, lamda=0.3, wd=0.02, rescale_grad=0.5, clip_gradient=1.0)
    make = getattr(fusedopt, cls)
    specs = NON_MP
    grads = _grad_seq(specs, TOTAL)
    u_ref, ws_ref = fusedopt.Updater(make(**saved_kw)), _weights(specs)
    _run(u_ref, range(3), ws_ref, grads)

    u1, ws1 = fusedopt.Updater(make(**saved_kw)), _weights(specs)
    _run(u1, range(3), ws1, grads[:K])
    blob = u1.get_states(dump_optimizer=True)
    u2 = fusedopt.Updater(make())  # default hyper-parameters: everything must come from the file
    u2.set_states(blob)
    assert u2.optimizer.learning_rate == 0.05
    assert u2.optimizer.num_update == K
    _run(u2, range(3), ws1, grads[K:])
    for a, b in zip(ws_ref, ws1):
        assert_bitwise_equal(a, b)
    assert_same_states(u_ref.states, u2.states)


def test_dump_optimizer_restores_lr_and_wd_multipliers():
    def make():
        opt = fusedopt.SGD(learning_rate=0.1, wd=0.1, param_idx2name={0: "a", 1: "b"})
        opt.set_lr_mult({"a": 0.5, 2: 2.0})
        opt.set_wd_mult({"b": 0.0})
        return opt

    specs = NON_MP
    grads = _grad_seq(specs, 4)
    u_ref, ws_ref = fusedopt.Updater(make()), _weights(specs)
    _run(u_ref, range(3), ws_ref, grads)
    u1, ws1 = fusedopt.Updater(make()), _weights(specs)
    _run(u1, range(3), ws1, grads[:2])
    u2 = fusedopt.Updater(fusedopt.SGD(learning_rate=0.1, wd=0.1))
    u2.set_states(u1.get_states(dump_optimizer=True))
    _run(u2, range(3), ws1, grads[2:])
    for a, b in zip(ws_ref, ws1):
        assert_bitwise_equal(a, b)


# --------------------------------------------------------------------------------------------------------------
# set_states on hostile / malformed input: ValueError, never code execution
# --------------------------------------------------------------------------------------------------------------

_PWN_ATTR = "_fusedopt_test_pwned"


class _ExecPayload:
    """Unpickling this object runs ``exec(code)``."""

    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


class _GlobalFlagPayload:
    """Unpickling this object sets ``builtins._fusedopt_test_pwned``."""

    def __reduce__(self):
        return (exec, (f"import builtins; builtins.{_PWN_ATTR} = True",))


def _pwned():
    import builtins

    return getattr(builtins, _PWN_ATTR, False)


def _marker_code(path):
    return f"open({str(path)!r}, 'w').write('pwned')"


def _make_valid_blob(dump_optimizer=False):
    u = fusedopt.Updater(fusedopt.SGD(learning_rate=0.1, momentum=0.9, multi_precision=True))
    specs = [((40, 25), F32), ((300,), F64), ((64,), F16)]
    ws = _weights(specs)
    _run(u, range(3), ws, _grad_seq(specs, 2))
    return u.get_states(dump_optimizer=dump_optimizer)


@pytest.fixture(scope="module")
def valid_blob():
    return _make_valid_blob()


@pytest.fixture(scope="module")
def valid_blob_dump():
    return _make_valid_blob(dump_optimizer=True)


def _fresh_updater():
    return fusedopt.Updater(fusedopt.SGD(learning_rate=0.1, momentum=0.9, multi_precision=True))


def _assert_rejected(blob):
    u = _fresh_updater()
    with pytest.raises(ValueError):
        u.set_states(blob)


def _zip(members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _zip_members(blob):
    """Members of ``blob`` if it is a zip archive (as the documented example format is), else None."""
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            return {info.filename: zf.read(info.filename) for info in zf.infolist()}
    except zipfile.BadZipFile:
        return None


def _json_text(data):
    """The JSON document held by a zip member, as raw JSON text or as a uint8 ``.npy`` array of JSON text
    (two generic ways to keep a manifest in an npz); None if the member holds no JSON."""
    candidates = [data]
    if data.startswith(b"\x93NUMPY"):
        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
            if arr.dtype == np.uint8 or arr.dtype.kind == "S":
                candidates.append(arr.tobytes())
        except Exception:  # noqa: BLE001 - not an array we understand
            pass
    for c in candidates:
        try:
            return json.loads(c.decode("utf-8")), (c is not data)
        except (UnicodeDecodeError, ValueError):
            continue
    return None


def _json_members(members):
    """name -> (JSON object, stored_as_npy) for the members that hold a JSON document."""
    out = {}
    for name, data in members.items():
        found = _json_text(data)
        if found is not None:
            out[name] = found
    return out


def _encode_like(text, stored_as_npy):
    """``text`` (bytes) in the container the original JSON member used."""
    if stored_as_npy:
        return _npy_bytes(np.frombuffer(text, dtype=np.uint8).copy())
    return text


def _npy_bytes(arr, allow_pickle=False):
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def _evil_npy(path):
    arr = np.empty(1, dtype=object)
    arr[0] = _ExecPayload(_marker_code(path))
    return _npy_bytes(arr, allow_pickle=True)


def test_valid_blob_is_accepted(valid_blob, valid_blob_dump):
    # positive control for the rejection tests below
    _fresh_updater().set_states(valid_blob)
    _fresh_updater().set_states(valid_blob_dump)


@pytest.mark.parametrize("n", [0, 1, 7, 100, 4096, 100_000])
def test_random_bytes_rejected(n):
    rng = np.random.RandomState(n + 11)
    _assert_rejected(rng.bytes(n))


@pytest.mark.parametrize("prefix", [b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY", b"\x80\x04", b"{", b"\x00"])
def test_random_bytes_with_magic_prefix_rejected(prefix):
    rng = np.random.RandomState(len(prefix))
    _assert_rejected(prefix + rng.bytes(500))


@pytest.mark.parametrize("frac", [0.0, 0.1, 0.5, 0.9, 0.99], ids=lambda f: f"keep{f}")
def test_truncated_rejected(valid_blob, frac):
    _assert_rejected(valid_blob[: int(len(valid_blob) * frac)])


@pytest.mark.parametrize("cut", [1, 2, 10, 22, 23])
def test_truncated_tail_rejected(valid_blob, cut):
    _assert_rejected(valid_blob[:-cut])


def test_truncated_dump_optimizer_blob_rejected(valid_blob_dump):
    for frac in (0.3, 0.7, 0.98):
        _assert_rejected(valid_blob_dump[: int(len(valid_blob_dump) * frac)])


def test_corrupted_all_bytes_inverted(valid_blob):
    _assert_rejected(bytes(b ^ 0xFF for b in valid_blob))


@pytest.mark.parametrize("n", [4, 8, 64])
def test_corrupted_header_rejected(valid_blob, n):
    rng = np.random.RandomState(n)
    _assert_rejected(rng.bytes(n) + valid_blob[n:])


def test_corrupted_zip_member_data_rejected(valid_blob):
    """A byte flipped inside the data of the largest zip member (the zip's CRC-32 catches it)."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(valid_blob))
    except zipfile.BadZipFile:
        pytest.skip("saved format is not a zip archive")
    info = max(zf.infolist(), key=lambda i: i.compress_size)
    off = info.header_offset
    name_len, extra_len = struct.unpack("<HH", valid_blob[off + 26: off + 30])
    pos = off + 30 + name_len + extra_len + info.compress_size // 2
    corrupted = valid_blob[:pos] + bytes([valid_blob[pos] ^ 0x5A]) + valid_blob[pos + 1:]
    _assert_rejected(corrupted)


@pytest.mark.parametrize("protocol", list(range(0, pickle.HIGHEST_PROTOCOL + 1)))
def test_pickle_payload_never_executes(tmp_path, protocol):
    marker = tmp_path / "pwned"
    assert not _pwned()
    for payload in (_ExecPayload(_marker_code(marker)), _GlobalFlagPayload(),
                    {0: _ExecPayload(_marker_code(marker))},
                    ({0: np.zeros(3)}, _GlobalFlagPayload())):
        _assert_rejected(pickle.dumps(payload, protocol=protocol))
        assert not marker.exists(), "set_states ran code from a pickle"
        assert not _pwned(), "set_states ran code from a pickle"


def test_mxnet_style_pickled_states_rejected():
    # What MXNet's get_states produces (a pickled dict of arrays / (states, optimizer)): not loadable here.
    _assert_rejected(pickle.dumps({0: np.zeros(3, dtype=np.float32), 1: None}))
    _assert_rejected(pickle.dumps(({0: np.zeros(3, dtype=np.float32)}, None)))


def test_npz_with_object_array_never_unpickles(tmp_path, valid_blob):
    marker = tmp_path / "pwned"
    evil = _evil_npy(marker)
    blobs = [
        _zip({"manifest.json": b"{}", "0.npy": evil}),
        _zip({"0.npy": evil, "states.npy": evil}),
    ]
    members = _zip_members(valid_blob)
    if members is not None:
        # the real archive with every .npy member replaced by a pickled object array
        blobs.append(_zip({n: (evil if n.endswith(".npy") else d) for n, d in members.items()}))
        # ... and with every non-JSON member replaced
        js = _json_members(members)
        blobs.append(_zip({n: (d if n in js else evil) for n, d in members.items()}))
    for blob in blobs:
        _assert_rejected(blob)
        assert not marker.exists(), "set_states unpickled an object array"


@pytest.mark.parametrize("manifest", [b"", b"{not json", b"null", b"[]", b"42", b'"states"', b"{}",
                                      b'{"version": 999999, "states": []}', b"\xff\xfe\x00garbage"],
                         ids=["empty", "bad_json", "null", "list", "number", "string", "empty_obj",
                              "future_version", "binary"])
def test_generic_zip_with_garbage_manifest_rejected(manifest):
    _assert_rejected(_zip({"manifest.json": manifest}))
    _assert_rejected(_zip({"manifest.json": manifest, "0.npy": _npy_bytes(np.zeros(3, dtype=np.float32))}))


def test_empty_zip_rejected():
    _assert_rejected(_zip({}))


@pytest.mark.parametrize("junk", [b"{not json", b"null", b"[]", b"{}", b'{"a": 1}'],
                         ids=["bad_json", "null", "list", "empty_obj", "unrelated_obj"])
def test_real_archive_with_garbage_json_member_rejected(valid_blob, junk):
    members = _zip_members(valid_blob)
    if members is None:
        pytest.skip("saved format is not a zip archive")
    js = _json_members(members)
    if not js:
        pytest.skip("no JSON member in the saved archive")
    for name, (_, as_npy) in js.items():
        _assert_rejected(_zip({**members, name: _encode_like(junk, as_npy)}))
        _assert_rejected(_zip({**members, name: junk}))


def _bump_versions(obj, value):
    found = False
    if isinstance(obj, dict):
        for k in list(obj):
            if "version" in str(k).lower():
                obj[k] = value
                found = True
            else:
                found |= _bump_versions(obj[k], value)
    elif isinstance(obj, list):
        for v in obj:
            found |= _bump_versions(v, value)
    return found


def test_rebuilt_archive_is_accepted_positive_control(valid_blob):
    """The archive rebuilt by this file's generic zip writer (JSON members re-serialized) still loads: the
    rejections of mutated archives above and below are caused by the mutation, not by the rebuilding."""
    members = _zip_members(valid_blob)
    if members is None:
        pytest.skip("saved format is not a zip archive")
    js = _json_members(members)
    rebuilt = {n: (_encode_like(json.dumps(js[n][0]).encode(), js[n][1]) if n in js else d)
               for n, d in members.items()}
    specs = [((40, 25), F32), ((300,), F64), ((64,), F16)]
    grads = _grad_seq(specs, 1, seed=7)
    outs = []
    for blob in (valid_blob, _zip(rebuilt)):
        u = _fresh_updater()
        u.set_states(blob)
        ws = _weights(specs, seed=3)
        _run(u, range(3), ws, grads)
        outs.append(ws)
    for a, b in zip(*outs):
        assert_bitwise_equal(a, b)


@pytest.mark.parametrize("value", [999_999, -1, "999.0", None], ids=["future", "negative", "string", "null"])
def test_wrong_version_rejected(valid_blob, value):
    members = _zip_members(valid_blob)
    if members is None:
        pytest.skip("saved format is not a zip archive")
    js = _json_members(members)
    changed = {}
    for name, (obj, as_npy) in js.items():
        obj = copy.deepcopy(obj)
        if _bump_versions(obj, value):
            changed[name] = _encode_like(json.dumps(obj).encode(), as_npy)
    if not changed:
        pytest.skip("no JSON field named like 'version' in the saved archive")
    _assert_rejected(_zip({**members, **changed}))


def test_real_archive_without_array_members_rejected(valid_blob):
    members = _zip_members(valid_blob)
    if members is None:
        pytest.skip("saved format is not a zip archive")
    js = _json_members(members)
    arrays = [n for n in members if n.endswith(".npy") and n not in js]
    if not arrays:
        pytest.skip("no array member in the saved archive")
    _assert_rejected(_zip({n: d for n, d in members.items() if n not in arrays}))


def test_real_archive_with_wrong_array_contents_does_not_crash(valid_blob):
    """Every .npy member replaced by an array of another dtype and shape: a ValueError at load or at the next
    update, never a crash or a silent success."""
    members = _zip_members(valid_blob)
    if members is None:
        pytest.skip("saved format is not a zip archive")
    js = _json_members(members)
    arrays = [n for n in members if n.endswith(".npy") and n not in js]
    if not arrays:
        pytest.skip("no array member in the saved archive")
    bogus = _npy_bytes(np.arange(7, dtype=np.int32))
    blob = _zip({n: (bogus if n in arrays else d) for n, d in members.items()})
    u = _fresh_updater()
    specs = [((40, 25), F32), ((300,), F64), ((64,), F16)]
    ws = _weights(specs)
    before = [w.copy() for w in ws]
    with pytest.raises(ValueError):
        u.set_states(blob)
        _run(u, range(3), ws, _grad_seq(specs, 1))
    for a, b in zip(ws, before):
        assert_bitwise_equal(a, b, "weights untouched")


def _array_member_variants(valid_blob):
    members = _zip_members(valid_blob)
    if members is None:
        return None, []
    js = _json_members(members)
    out = []
    for name, data in members.items():
        if name in js or not name.endswith(".npy"):
            continue
        arr = np.load(io.BytesIO(data), allow_pickle=False)
        out.append((name, "one_element_short", arr.reshape(-1)[:-1].copy()))
        out.append((name, "extra_dim", arr.reshape((1,) + arr.shape).copy()))
        other = np.float64 if arr.dtype != np.float64 else np.float32
        out.append((name, "other_dtype", arr.astype(other)))
    return members, out


@pytest.mark.parametrize("kind", ["one_element_short", "extra_dim", "other_dtype"])
def test_real_archive_with_one_mismatched_array_is_value_error(valid_blob, kind):
    """One array member of a valid archive replaced by a well-formed array of another shape or dtype: the
    saved state no longer matches its weight -> ValueError at load or at the next update."""
    members, variants = _array_member_variants(valid_blob)
    if members is None:
        pytest.skip("saved format is not a zip archive")
    variants = [v for v in variants if v[1] == kind]
    if not variants:
        pytest.skip("no array member in the saved archive")
    specs = [((40, 25), F32), ((300,), F64), ((64,), F16)]
    for name, _, arr in variants:
        blob = _zip({**members, name: _npy_bytes(arr)})
        u = _fresh_updater()
        with pytest.raises(ValueError):
            u.set_states(blob)
            _run(u, range(3), _weights(specs), _grad_seq(specs, 1))


def test_rejected_load_leaves_no_code_path_open(tmp_path):
    # A zip whose members are all pickles: nothing may be unpickled even when member names look plausible.
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_ExecPayload(_marker_code(marker)))
    for name in ("manifest.json", "states.pkl", "optimizer.pkl", "0.npy", "data.pkl"):
        _assert_rejected(_zip({name: payload}))
    assert not marker.exists()


# --------------------------------------------------------------------------------------------------------------
# A state that does not match its weight (PITFALLS (d) row 30): ValueError at load or at the next update
# --------------------------------------------------------------------------------------------------------------

def _sgd_mom(**kw):
    return fusedopt.SGD(learning_rate=0.1, momentum=0.9, **kw)


def _dcasgd_mom(**kw):
    return fusedopt.DCASGD(learning_rate=0.1, momentum=0.9, **kw)


MISMATCH_CASES = {
    # name: (saving optimizer, saved weight (shape, dtype), loading optimizer, weight at the next update)
    "shape_longer": (_sgd_mom, ((3,), F32), _sgd_mom, ((4,), F32)),
    "shape_shorter": (_sgd_mom, ((4,), F32), _sgd_mom, ((3,), F32)),
    "shape_same_size_transposed": (_sgd_mom, ((2, 3), F32), _sgd_mom, ((3, 2), F32)),
    "shape_extra_dim": (_sgd_mom, ((6,), F32), _sgd_mom, ((6, 1), F32)),
    "dtype_f32_to_f64": (_sgd_mom, ((5,), F32), _sgd_mom, ((5,), F64)),
    "dtype_f64_to_f32": (_sgd_mom, ((5,), F64), _sgd_mom, ((5,), F32)),
    "dtype_f16_to_f32": (_sgd_mom, ((5,), F16), _sgd_mom, ((5,), F32)),
    "mp_state_for_f32_weight": (lambda: _sgd_mom(multi_precision=True), ((5,), F16),
                                lambda: _sgd_mom(multi_precision=True), ((5,), F32)),
    "f32_state_for_mp_f16_weight": (lambda: _sgd_mom(multi_precision=True), ((5,), F32),
                                    lambda: _sgd_mom(multi_precision=True), ((5,), F16)),
    "mp_master_shape": (lambda: _sgd_mom(multi_precision=True), ((5,), F16),
                        lambda: _sgd_mom(multi_precision=True), ((6,), F16)),
    "dcasgd_state_for_sgd": (_dcasgd_mom, ((5,), F32), _sgd_mom, ((5,), F32)),
    "sgd_state_for_dcasgd": (_sgd_mom, ((5,), F32), _dcasgd_mom, ((5,), F32)),
    "dcasgd_shape": (_dcasgd_mom, ((5,), F64), _dcasgd_mom, ((2, 5), F64)),
    "dcasgd_dtype": (_dcasgd_mom, ((5,), F64), _dcasgd_mom, ((5,), F32)),
}


@pytest.mark.parametrize("case", list(MISMATCH_CASES))
def test_state_not_matching_weight_is_value_error(case):
    make_saver, (s_shape, s_dt), make_loader, (l_shape, l_dt) = MISMATCH_CASES[case]
    u1 = fusedopt.Updater(make_saver())
    with _Quiet():
        u1(0, np.ones(s_shape, dtype=s_dt), np.ones(s_shape, dtype=s_dt))
    blob = u1.get_states()

    u2 = fusedopt.Updater(make_loader())
    w = np.full(l_shape, 0.5, dtype=l_dt)
    g = np.ones(l_shape, dtype=l_dt)
    w_before = w.copy()
    with pytest.raises(ValueError), _Quiet():
        u2.set_states(blob)
        u2(0, g, w)
    assert_bitwise_equal(w, w_before, "weight must not be written when the state is rejected")


def test_matching_state_positive_control():
    # Same pipeline as the mismatch test, with a matching weight: must load and update fine.
    u1 = fusedopt.Updater(_sgd_mom())
    u1(0, np.ones(5, dtype=np.float32), np.ones(5, dtype=np.float32))
    m_saved = u1.states[0].copy()
    u2 = fusedopt.Updater(_sgd_mom())
    u2.set_states(u1.get_states())
    w = np.full(5, 0.5, dtype=np.float32)
    u2(0, np.ones(5, dtype=np.float32), w)
    expected_m = np.float32(0.9) * m_saved - np.float32(0.1) * np.float32(1.0)
    np.testing.assert_allclose(u2.states[0], expected_m, rtol=1e-6)
    np.testing.assert_allclose(w, 0.5 + expected_m, rtol=1e-6)
