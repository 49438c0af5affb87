"""Tests for ``fusedopt.lr_scheduler`` (docs/SEMANTICS.md §8).

Expected values come from docs/SEMANTICS.md: the printed 4-decimal sequences (checked to half a unit of the 4th
decimal, i.e. abs 5e-5; 0.15625 is printed as .1562) and the closed
formulas of section 8 evaluated here in float64 (checked at rel 1e-12).  Schedulers are stateful and assume a
non-decreasing ``num_update``, so every sequence is evaluated in increasing order on one fresh instance.
"""
from __future__ import annotations

import importlib
import math

import pytest

from helpers import import_fusedopt

fusedopt = import_fusedopt()  # skips this module when fusedopt is not installed (unless FUSEDOPT_TEST_REQUIRE=1)
lrs = importlib.import_module("fusedopt.lr_scheduler")

PRINTED = "printed"  # the documented 4-decimal values: |got - printed| <= 5e-5 (+ float slack)
REL_EXACT = 1e-12


def _run(sched, ns):
    return [sched(n) for n in ns]


def _check(got, expected, rel):
    assert len(got) == len(expected)
    for n, (g, e) in enumerate(zip(got, expected)):
        approx = pytest.approx(e, rel=0, abs=5.0001e-5) if rel == PRINTED else pytest.approx(e, rel=rel, abs=1e-15)
        assert g == approx, f"step {n}: got {g!r}, expected {e!r} (all: {got})"


# --------------------------------------------------------------------------------------------------------------
# Independent float64 models of the docs/SEMANTICS.md §8 formulas
# --------------------------------------------------------------------------------------------------------------

def _warmup(n, base, begin, steps, mode):
    if mode == "linear":
        return begin + (base - begin) * n / steps
    return begin


def _factor_model(ns, step, factor, base, stop=1e-8, warmup_steps=0, begin=0.0, mode="linear"):
    out, count, lr = [], 0, base
    for n in ns:
        if n < warmup_steps:
            out.append(_warmup(n, base, begin, warmup_steps, mode))
            continue
        while n > count + step:
            count += step
            lr = max(lr * factor, stop)
        out.append(lr)
    return out


def _multifactor_model(ns, steps, factor, base, warmup_steps=0, begin=0.0, mode="linear"):
    out = []
    for n in ns:
        if n < warmup_steps:
            out.append(_warmup(n, base, begin, warmup_steps, mode))
            continue
        lr = base
        for s in steps:  # applied incrementally: base * factor * factor ...
            if s < n:
                lr *= factor
        out.append(lr)
    return out


def _poly_model(ns, max_update, base, pwr, final, warmup_steps=0, begin=0.0, mode="linear"):
    out, last = [], base
    for n in ns:
        if n < warmup_steps:
            out.append(_warmup(n, base, begin, warmup_steps, mode))
            continue
        if n <= max_update:
            last = final + (base - final) * (1 - (n - warmup_steps) / (max_update - warmup_steps)) ** pwr
        out.append(last)
    return out


def _cosine_model(ns, max_update, base, final, warmup_steps=0, begin=0.0, mode="linear"):
    out, last = [], base
    for n in ns:
        if n < warmup_steps:
            out.append(_warmup(n, base, begin, warmup_steps, mode))
            continue
        if n <= max_update:
            last = final + (base - final) * (1 + math.cos(math.pi * (n - warmup_steps) / (max_update - warmup_steps))) / 2
        out.append(last)
    return out


# --------------------------------------------------------------------------------------------------------------
# The worked sequences printed in docs/SEMANTICS.md §8
# --------------------------------------------------------------------------------------------------------------

def test_factor_spec_sequence():
    s = lrs.FactorScheduler(step=3, factor=0.5, base_lr=1.0)
    ns = range(11)
    got = _run(s, ns)
    _check(got, [1, 1, 1, 1, .5, .5, .5, .25, .25, .25, .125], PRINTED)
    _check(got, _factor_model(ns, 3, 0.5, 1.0), REL_EXACT)


def test_multifactor_spec_sequence():
    s = lrs.MultiFactorScheduler(step=[2, 5], factor=0.1, base_lr=1.0)
    ns = range(8)
    got = _run(s, ns)
    _check(got, [1, 1, 1, .1, .1, .1, .01, .01], PRINTED)
    _check(got, _multifactor_model(ns, [2, 5], 0.1, 1.0), REL_EXACT)


def test_poly_spec_sequence_linear_warmup():
    s = lrs.PolyScheduler(max_update=10, base_lr=1.0, pwr=2, final_lr=0.1, warmup_steps=2, warmup_begin_lr=0.0,
                          warmup_mode="linear")
    ns = range(13)
    got = _run(s, ns)
    _check(got, [0, .5, 1, .7891, .6062, .4516, .325, .2266, .1562, .1141, .1, .1, .1], PRINTED)
    _check(got, _poly_model(ns, 10, 1.0, 2, 0.1, warmup_steps=2, begin=0.0), REL_EXACT)


def test_cosine_spec_sequence_constant_warmup():
    s = lrs.CosineScheduler(max_update=10, base_lr=1.0, final_lr=0.1, warmup_steps=2, warmup_begin_lr=0.5,
                            warmup_mode="constant")
    ns = range(13)
    got = _run(s, ns)
    _check(got, [.5, .5, 1, .9657, .8682, .7222, .55, .3778, .2318, .1343, .1, .1, .1], PRINTED)
    _check(got, _cosine_model(ns, 10, 1.0, 0.1, warmup_steps=2, begin=0.5, mode="constant"), REL_EXACT)


# --------------------------------------------------------------------------------------------------------------
# More configurations against the formulas
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "kw",
    [
        dict(step=1, factor=0.9, base_lr=0.5),
        dict(step=4, factor=0.25, base_lr=2.0),
        dict(step=2, factor=1.0, base_lr=0.3),
        dict(step=5, factor=0.5, base_lr=1.0, warmup_steps=3, warmup_begin_lr=0.1, warmup_mode="linear"),
        dict(step=5, factor=0.5, base_lr=1.0, warmup_steps=3, warmup_begin_lr=0.1, warmup_mode="constant"),
    ],
    ids=["step1_f0.9", "step4_f0.25", "factor_one_constant", "warmup_linear", "warmup_constant"],
)
def test_factor_formula(kw):
    s = lrs.FactorScheduler(**kw)
    ns = range(30)
    got = _run(s, ns)
    expected = _factor_model(ns, kw["step"], kw["factor"], kw["base_lr"], warmup_steps=kw.get("warmup_steps", 0),
                             begin=kw.get("warmup_begin_lr", 0.0), mode=kw.get("warmup_mode", "linear"))
    _check(got, expected, REL_EXACT)


def test_factor_count_starts_at_zero_not_at_end_of_warmup():
    # docs/SEMANTICS.md: "After warmup: while n > count + step" with MXNet's count = 0 at construction. With warmup 2 and step
    # 3, the first decay happens at n = 4 (4 > 0 + 3), not at n = 6.
    s = lrs.FactorScheduler(step=3, factor=0.5, base_lr=1.0, warmup_steps=2, warmup_begin_lr=0.0)
    _check(_run(s, range(8)), [0.0, 0.5, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25], REL_EXACT)


def test_factor_stop_factor_lr_floor():
    s = lrs.FactorScheduler(step=1, factor=0.1, base_lr=1.0, stop_factor_lr=1e-3)
    ns = range(10)
    got = _run(s, ns)
    _check(got, [1, 1, .1, .01, .001, .001, .001, .001, .001, .001], 1e-9)
    _check(got, _factor_model(ns, 1, 0.1, 1.0, stop=1e-3), REL_EXACT)
    assert min(got) >= 1e-3 * (1 - 1e-12)


def test_factor_default_stop_factor_lr_is_1e_8():
    s = lrs.FactorScheduler(step=1, factor=0.01, base_lr=1.0)
    got = _run(s, range(12))
    # 1, 1, 1e-2, 1e-4, 1e-6, 1e-8, then floored at 1e-8
    assert got[-1] == pytest.approx(1e-8, rel=1e-9)
    assert got[-2] == pytest.approx(1e-8, rel=1e-9)
    assert got[4] == pytest.approx(1e-6, rel=1e-9)


@pytest.mark.parametrize(
    "steps,factor,base,warmup",
    [([1], 0.5, 1.0, 0), ([3, 4, 10], 0.5, 0.8, 0), ([2, 5], 0.1, 1.0, 3), ([7], 0.25, 2.0, 7)],
    ids=["single", "three_steps", "warmup3", "warmup_equals_step"],
)
def test_multifactor_formula(steps, factor, base, warmup):
    s = lrs.MultiFactorScheduler(step=list(steps), factor=factor, base_lr=base, warmup_steps=warmup,
                                 warmup_begin_lr=0.0)
    ns = range(20)
    _check(_run(s, ns), _multifactor_model(ns, steps, factor, base, warmup_steps=warmup), REL_EXACT)


@pytest.mark.parametrize(
    "kw",
    [
        dict(max_update=10, base_lr=1.0, pwr=2, final_lr=0.0),
        dict(max_update=7, base_lr=0.5, pwr=1, final_lr=0.05),
        dict(max_update=12, base_lr=0.3, pwr=3, final_lr=0.01, warmup_steps=4, warmup_begin_lr=0.1),
        dict(max_update=12, base_lr=0.3, pwr=0.5, final_lr=0.0, warmup_steps=4, warmup_begin_lr=0.1,
             warmup_mode="constant"),
    ],
    ids=["pwr2_no_warmup", "pwr1", "pwr3_linear_warmup", "pwr_half_constant_warmup"],
)
def test_poly_formula(kw):
    s = lrs.PolyScheduler(**kw)
    ns = range(20)
    expected = _poly_model(ns, kw["max_update"], kw["base_lr"], kw["pwr"], kw["final_lr"],
                           warmup_steps=kw.get("warmup_steps", 0), begin=kw.get("warmup_begin_lr", 0.0),
                           mode=kw.get("warmup_mode", "linear"))
    _check(_run(s, ns), expected, REL_EXACT)


@pytest.mark.parametrize(
    "kw",
    [
        dict(max_update=10, base_lr=1.0, final_lr=0.0),
        dict(max_update=9, base_lr=0.4, final_lr=0.02, warmup_steps=3, warmup_begin_lr=0.1),
        dict(max_update=9, base_lr=0.4, final_lr=0.02, warmup_steps=3, warmup_begin_lr=0.1, warmup_mode="constant"),
    ],
    ids=["no_warmup", "linear_warmup", "constant_warmup"],
)
def test_cosine_formula(kw):
    s = lrs.CosineScheduler(**kw)
    ns = range(16)
    expected = _cosine_model(ns, kw["max_update"], kw["base_lr"], kw["final_lr"],
                             warmup_steps=kw.get("warmup_steps", 0), begin=kw.get("warmup_begin_lr", 0.0),
                             mode=kw.get("warmup_mode", "linear"))
    _check(_run(s, ns), expected, REL_EXACT)


def test_cosine_endpoints():
    s = lrs.CosineScheduler(max_update=8, base_lr=0.6, final_lr=0.1)
    assert s(0) == pytest.approx(0.6, rel=REL_EXACT)
    assert s(4) == pytest.approx(0.35, rel=REL_EXACT)  # cos(pi/2) = 0 -> midpoint
    assert s(8) == pytest.approx(0.1, rel=REL_EXACT)


@pytest.mark.parametrize("cls", ["poly", "cosine"])
def test_beyond_max_update_stays_at_final(cls):
    if cls == "poly":
        s = lrs.PolyScheduler(max_update=5, base_lr=1.0, pwr=2, final_lr=0.2)
    else:
        s = lrs.CosineScheduler(max_update=5, base_lr=1.0, final_lr=0.2)
    got = _run(s, list(range(6)) + [6, 7, 50, 10_000])
    for g in got[5:]:
        assert g == pytest.approx(0.2, rel=REL_EXACT)


# --------------------------------------------------------------------------------------------------------------
# Warm-up
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["linear", "constant"])
@pytest.mark.parametrize("cls", ["factor", "multifactor", "poly", "cosine"])
def test_warmup_values(cls, mode):
    base, begin, w = 0.8, 0.2, 5
    common = dict(base_lr=base, warmup_steps=w, warmup_begin_lr=begin, warmup_mode=mode)
    s = {
        "factor": lambda: lrs.FactorScheduler(step=100, factor=0.5, **common),
        "multifactor": lambda: lrs.MultiFactorScheduler(step=[100], factor=0.5, **common),
        "poly": lambda: lrs.PolyScheduler(max_update=100, pwr=2, final_lr=0.0, **common),
        "cosine": lambda: lrs.CosineScheduler(max_update=100, final_lr=0.0, **common),
    }[cls]()
    got = _run(s, range(w + 1))
    if mode == "linear":
        expected = [begin + (base - begin) * n / w for n in range(w)]
    else:
        expected = [begin] * w
    expected.append(base)  # n == warmup_steps: first post-warmup value is the base lr
    _check(got, expected, REL_EXACT)


def test_linear_warmup_targets_base_lr_at_construction():
    # docs/SEMANTICS.md: linear warm-up goes to base_at_construction, even if base_lr is changed afterwards.
    s = lrs.PolyScheduler(max_update=20, base_lr=1.0, pwr=2, final_lr=0.0, warmup_steps=4, warmup_begin_lr=0.2)
    s.base_lr = 5.0
    assert s(1) == pytest.approx(0.2 + 0.8 * 1 / 4, rel=REL_EXACT)
    assert s(3) == pytest.approx(0.2 + 0.8 * 3 / 4, rel=REL_EXACT)


def test_warmup_begin_equal_to_base_is_allowed():
    s = lrs.FactorScheduler(step=10, base_lr=0.5, warmup_steps=3, warmup_begin_lr=0.5)
    _check(_run(s, range(5)), [0.5] * 5, REL_EXACT)


def test_zero_warmup_steps_allowed():
    s = lrs.FactorScheduler(step=2, factor=0.5, base_lr=1.0, warmup_steps=0)
    _check(_run(s, range(6)), _factor_model(range(6), 2, 0.5, 1.0), REL_EXACT)


# --------------------------------------------------------------------------------------------------------------
# Statefulness (non-decreasing n)
# --------------------------------------------------------------------------------------------------------------

def test_factor_jump_catches_up_like_stepwise():
    # 'while' rather than 'if': a first call at a large n applies every pending decay.
    s = lrs.FactorScheduler(step=3, factor=0.5, base_lr=1.0)
    assert s(10) == pytest.approx(0.125, rel=REL_EXACT)
    assert s(10) == pytest.approx(0.125, rel=REL_EXACT)
    assert s(13) == pytest.approx(0.0625, rel=REL_EXACT)


def test_multifactor_jump_catches_up_like_stepwise():
    s = lrs.MultiFactorScheduler(step=[2, 5], factor=0.1, base_lr=1.0)
    assert s(7) == pytest.approx(0.01, rel=REL_EXACT)
    assert s(100) == pytest.approx(0.01, rel=REL_EXACT)


def test_factor_is_stateful_base_lr_tracks_decay():
    # The decayed value is held by the scheduler (base_lr is updated in place, as in MXNet).
    s = lrs.FactorScheduler(step=2, factor=0.5, base_lr=1.0)
    _run(s, range(6))  # decays at n=3 and n=5
    assert s.base_lr == pytest.approx(0.25, rel=REL_EXACT)


def test_repeated_same_n_gives_same_value():
    s = lrs.FactorScheduler(step=3, factor=0.5, base_lr=1.0)
    vals = [s(n) for n in (0, 4, 4, 4, 7, 7)]
    _check(vals, [1.0, 0.5, 0.5, 0.5, 0.25, 0.25], REL_EXACT)


def test_independent_instances_do_not_share_state():
    a = lrs.FactorScheduler(step=1, factor=0.5, base_lr=1.0)
    b = lrs.FactorScheduler(step=1, factor=0.5, base_lr=1.0)
    assert a(5) == pytest.approx(1.0 / 16, rel=REL_EXACT)
    assert b(0) == pytest.approx(1.0, rel=REL_EXACT)
    assert b(2) == pytest.approx(0.5, rel=REL_EXACT)


# --------------------------------------------------------------------------------------------------------------
# Argument validation
# --------------------------------------------------------------------------------------------------------------

_ALL = {
    "LRScheduler": lambda **kw: lrs.LRScheduler(**kw),
    "Factor": lambda **kw: lrs.FactorScheduler(step=2, **kw),
    "MultiFactor": lambda **kw: lrs.MultiFactorScheduler(step=[2, 4], **kw),
    "Poly": lambda **kw: lrs.PolyScheduler(max_update=10, **kw),
    "Cosine": lambda **kw: lrs.CosineScheduler(max_update=10, **kw),
}


@pytest.mark.parametrize("name", list(_ALL))
@pytest.mark.parametrize("warmup_steps", [-1, 2.5, 2.0, "3"], ids=["negative", "float", "integral_float", "str"])
def test_bad_warmup_steps(name, warmup_steps):
    with pytest.raises(ValueError):
        _ALL[name](base_lr=0.1, warmup_steps=warmup_steps)


@pytest.mark.parametrize("name", list(_ALL))
def test_warmup_begin_lr_above_base_lr(name):
    with pytest.raises(ValueError):
        _ALL[name](base_lr=0.1, warmup_steps=2, warmup_begin_lr=0.2)


@pytest.mark.parametrize("name", list(_ALL))
@pytest.mark.parametrize("mode", ["cosine", "", "exp", None])
def test_bad_warmup_mode(name, mode):
    with pytest.raises(ValueError):
        _ALL[name](base_lr=0.1, warmup_steps=2, warmup_mode=mode)


@pytest.mark.parametrize("name", list(_ALL))
def test_valid_construction(name):
    for mode in ("linear", "constant"):
        _ALL[name](base_lr=0.1, warmup_steps=3, warmup_begin_lr=0.01, warmup_mode=mode)


def test_lrscheduler_defaults():
    s = lrs.LRScheduler()
    assert s.base_lr == pytest.approx(0.01, rel=REL_EXACT)


@pytest.mark.parametrize("step", [0, -1, 0.5], ids=["zero", "negative", "below_one"])
def test_factor_bad_step(step):
    with pytest.raises(ValueError):
        lrs.FactorScheduler(step=step, factor=0.5)


@pytest.mark.parametrize("factor", [1.0000001, 1.5, 2])
def test_factor_bad_factor(factor):
    with pytest.raises(ValueError):
        lrs.FactorScheduler(step=2, factor=factor)


def test_factor_factor_one_allowed():
    s = lrs.FactorScheduler(step=1, factor=1.0, base_lr=0.3)
    _check(_run(s, range(5)), [0.3] * 5, REL_EXACT)


@pytest.mark.parametrize(
    "steps",
    [[], [3, 3], [5, 2], [2, 5, 4], [0, 2], [-1], [0.5, 2]],
    ids=["empty", "repeated", "decreasing", "not_monotone", "zero_element", "negative_element", "below_one_element"],
)
def test_multifactor_bad_step_list(steps):
    with pytest.raises(ValueError):
        lrs.MultiFactorScheduler(step=steps, factor=0.5)


def test_multifactor_valid_minimal_list():
    s = lrs.MultiFactorScheduler(step=[1], factor=0.5, base_lr=1.0)
    _check(_run(s, range(4)), [1.0, 1.0, 0.5, 0.5], REL_EXACT)
