"""Bad input: a table of (call, exception type, message regex naming the argument).

Per docs/API_CONTRACT.md "Errors", docs/SEMANTICS.md §3 and 10, and PITFALLS (d):
TypeError for wrong/unsupported dtype and non-array arguments; ValueError for shape mismatch,
read-only or non-C-contiguous weight/state, overlapping operands and bad hyper-parameters.
Every case also asserts that NOTHING was written: weight, state and gradient are compared
bitwise with copies taken before the call (validation completes before the first write).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pytest

import reference as ref
from helpers import Snapshot, assert_close, import_fusedopt

fo = import_fusedopt()

F32 = np.float32
F64 = np.float64

# regexes for the argument names
LR = r"\blr\b|learning_rate"
WEIGHT = r"weight"
GRAD = r"grad"
MOM = r"\bmom"
PREV = r"prev"
W32 = r"weight32"
WD = r"\bwd\b"
MOMENTUM = r"momentum"
CLIP = r"clip_gradient"
RG = r"rescale_grad"
LAMDA = r"lamda"
OVERLAP = r"overlap|alias|same memory|shares? memory|grad|weight|mom"


# ------------------------------------------------------------------------------ operands
def W(n: int = 4, dt=F32) -> np.ndarray:
    """A weight with distinct non-zero values (any write would show)."""
    return np.linspace(0.5, 2.0, n).astype(dt)


def G(n: int = 4, dt=F32) -> np.ndarray:
    return np.full(n, 0.25).astype(dt)


def M(n: int = 4, dt=F32) -> np.ndarray:
    return np.full(n, 0.125).astype(dt)


def readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def strided(n: int = 4, dt=F32, fill: float = 1.0) -> np.ndarray:
    """Every second element of a writable buffer: not C-contiguous."""
    return np.full(2 * n, fill).astype(dt)[::2]


def fortran(dt=F32) -> np.ndarray:
    a = np.asfortranarray(np.arange(1.0, 13.0).reshape(3, 4).astype(dt))
    assert not a.flags.c_contiguous
    return a


def broadcast_writable(n: int = 4, dt=F32) -> np.ndarray:
    """A writable stride-0 array: every element is the same memory location."""
    base = np.ones(1, dt)
    return np.lib.stride_tricks.as_strided(base, shape=(n,), strides=(0,), writeable=True)


# ------------------------------------------------------------------------------ the table
@dataclass
class Built:
    call: Callable[[], Any]
    watched: tuple  # arrays that must be bitwise unchanged after the failing call


CASES: list = []


def case(id: str, exc: type, match: str, marks=()):
    """Decorator: register ``build() -> Built`` as an error case."""

    def register(build: Callable[[], Built]):
        CASES.append(pytest.param(build, exc, match, id=id, marks=marks))
        return build

    return register


def _sgd(w, g, **kw):
    return Built(lambda: fo.sgd_update(w, g, **({"lr": 0.1} | kw)), (w, g))


def _mom(w, g, m, **kw):
    return Built(lambda: fo.sgd_mom_update(w, g, m, **({"lr": 0.1, "momentum": 0.9} | kw)),
                 (w, g, m))


def _dca(w, g, m, p, **kw):
    return Built(lambda: fo.dcasgd_update(w, g, m, p, **({"lr": 0.1} | kw)),
                 tuple(a for a in (w, g, m, p) if a is not None))


# --- dtypes (TypeError) ---
case("sgd-grad-f64-weight-f32", TypeError, GRAD)(lambda: _sgd(W(), G(dt=F64)))
case("sgd-grad-f16-weight-f32", TypeError, GRAD)(lambda: _sgd(W(), G(dt=np.float16)))
case("sgd-grad-bf16-weight-f32", TypeError, GRAD, marks=pytest.mark.needs_ml_dtypes)(
    lambda: _sgd(W(), G(dt=ref.BFLOAT16)))
case("sgd-weight-int32", TypeError, WEIGHT)(lambda: _sgd(np.arange(1, 5, dtype=np.int32), G()))
case("sgd-weight-int32-grad-int32", TypeError, WEIGHT + "|" + GRAD)(
    lambda: _sgd(np.arange(1, 5, dtype=np.int32), np.ones(4, np.int32)))
case("sgd-weight-complex64", TypeError, WEIGHT)(
    lambda: _sgd(np.ones(4, np.complex64), np.ones(4, np.complex64)))
case("sgd-weight-bool", TypeError, WEIGHT)(lambda: _sgd(np.ones(4, bool), np.ones(4, bool)))
case("mom-mom-f64-weight-f32", TypeError, MOM)(lambda: _mom(W(), G(), M(dt=F64)))
case("mom-grad-f32-weight-f64", TypeError, GRAD)(lambda: _mom(W(dt=F64), G(), M(dt=F64)))
case("dcasgd-prev-f64-weight-f32", TypeError, PREV)(lambda: _dca(W(), G(), None, W(dt=F64)))
case("dcasgd-mom-f16-weight-f32", TypeError, MOM)(
    lambda: _dca(W(), G(), M(dt=np.float16), W(), momentum=0.9))


@case("mp-weight32-f16", TypeError, W32)
def _():
    w, g, w32 = W(dt=np.float16), G(dt=np.float16), W(dt=np.float16)
    return Built(lambda: fo.mp_sgd_update(w, g, w32, lr=0.1), (w, g, w32))


@case("mp-mom-f16", TypeError, MOM)
def _():
    w, g, m, w32 = W(dt=np.float16), G(dt=np.float16), M(dt=np.float16), W()
    return Built(lambda: fo.mp_sgd_mom_update(w, g, m, w32, lr=0.1, momentum=0.9), (w, g, m, w32))


@case("mp-grad-f32-weight-f16", TypeError, GRAD)
def _():
    w, g, w32 = W(dt=np.float16), G(), W()
    return Built(lambda: fo.mp_sgd_update(w, g, w32, lr=0.1), (w, g, w32))


# --- non-array arguments (TypeError) ---
case("sgd-weight-list", TypeError, WEIGHT)(lambda: _sgd([0.5, 1.0, 1.5, 2.0], G()))
case("sgd-weight-python-float", TypeError, WEIGHT)(lambda: _sgd(1.0, G(1)))
case("sgd-grad-list", TypeError, GRAD)(lambda: _sgd(W(), [0.25] * 4))
case("sgd-grad-None", TypeError, GRAD)(lambda: _sgd(W(), None))
case("sgd-grad-str", TypeError, GRAD)(lambda: _sgd(W(), "grad"))
case("mom-mom-None", TypeError, MOM)(lambda: _mom(W(), G(), None))
case("mom-mom-list", TypeError, MOM)(lambda: _mom(W(), G(), [0.0] * 4))
case("dcasgd-prev-None", TypeError, PREV)(lambda: _dca(W(), G(), None, None))
case("sgd-lr-positional", TypeError, r"argument")(
    lambda: (lambda w, g: Built(lambda: fo.sgd_update(w, g, 0.1), (w, g)))(W(), G()))

# --- shapes (ValueError, no broadcasting, no reshape) ---
case("sgd-grad-longer", ValueError, GRAD)(lambda: _sgd(W(4), G(5)))
case("sgd-grad-broadcastable-1", ValueError, GRAD)(lambda: _sgd(W(4), G(1)))
case("sgd-grad-same-size-other-shape", ValueError, GRAD)(
    lambda: _sgd(W(6).reshape(2, 3), G(6).reshape(3, 2)))
case("sgd-grad-extra-dim", ValueError, GRAD)(lambda: _sgd(W(6), G(6).reshape(1, 6)))
case("sgd-grad-0d-weight-1d", ValueError, GRAD)(lambda: _sgd(W(1), np.array(0.25, F32)))
case("mom-mom-shape", ValueError, MOM)(lambda: _mom(W(4), G(4), M(3)))
case("mom-mom-broadcastable", ValueError, MOM)(lambda: _mom(W(4), G(4), M(1)))
case("dcasgd-prev-shape", ValueError, PREV)(lambda: _dca(W(4), G(4), None, W(5)))
case("dcasgd-mom-shape", ValueError, MOM)(lambda: _dca(W(4), G(4), M(2), W(4), momentum=0.9))
case("dcasgd-grad-shape", ValueError, GRAD)(lambda: _dca(W(4), G(2), None, W(4)))


@case("mp-weight32-shape", ValueError, W32)
def _():
    w, g, w32 = W(dt=np.float16), G(dt=np.float16), W(5)
    return Built(lambda: fo.mp_sgd_update(w, g, w32, lr=0.1), (w, g, w32))


# --- read-only weight / state (ValueError; a read-only grad is fine, see below) ---
case("sgd-weight-readonly", ValueError, WEIGHT)(lambda: _sgd(readonly(W()), G()))
case("mom-weight-readonly", ValueError, WEIGHT)(lambda: _mom(readonly(W()), G(), M()))
case("mom-mom-readonly", ValueError, MOM)(lambda: _mom(W(), G(), readonly(M())))
case("dcasgd-prev-readonly", ValueError, PREV)(lambda: _dca(W(), G(), None, readonly(W())))
case("dcasgd-mom-readonly", ValueError, MOM)(lambda: _dca(W(), G(), readonly(M()), W(),
                                                           momentum=0.9))


@case("mp-weight32-readonly", ValueError, W32)
def _():
    w, g, w32 = W(dt=np.float16), G(dt=np.float16), readonly(W())
    return Built(lambda: fo.mp_sgd_update(w, g, w32, lr=0.1), (w, g, w32))


# --- non-contiguous / overlapping outputs (ValueError, never a silent copy) ---
case("sgd-weight-strided", ValueError, WEIGHT)(lambda: _sgd(strided(), G()))
case("sgd-weight-reversed", ValueError, WEIGHT)(lambda: _sgd(W(8)[::-1], G(8)))
case("sgd-weight-fortran", ValueError, WEIGHT)(lambda: _sgd(fortran(), G(12).reshape(3, 4)))
case("sgd-weight-stride0", ValueError, WEIGHT)(lambda: _sgd(broadcast_writable(), G()))
case("mom-mom-strided", ValueError, MOM)(lambda: _mom(W(), G(), strided(fill=0.125)))
case("dcasgd-prev-strided", ValueError, PREV)(lambda: _dca(W(), G(), None, strided()))
case("dcasgd-weight-fortran", ValueError, WEIGHT)(
    lambda: _dca(fortran(), G(12).reshape(3, 4), None, W(12).reshape(3, 4)))


@case("sgd-weight-is-grad", ValueError, OVERLAP)
def _():
    w = W()
    return Built(lambda: fo.sgd_update(w, w, lr=0.1), (w,))


@case("sgd-weight-overlaps-grad", ValueError, OVERLAP)
def _():
    buf = np.linspace(0.5, 2.0, 8).astype(F32)
    w, g = buf[0:4], buf[2:6]
    return Built(lambda: fo.sgd_update(w, g, lr=0.1), (buf,))


@case("mom-mom-is-weight", ValueError, OVERLAP)
def _():
    w, g = W(), G()
    return Built(lambda: fo.sgd_mom_update(w, g, w, lr=0.1, momentum=0.9), (w, g))


# --- hyper-parameters, functional (ValueError naming the argument) ---
for _v in (0.0, -1.0, math.nan):
    case(f"sgd-clip={_v}", ValueError, CLIP)(lambda v=_v: _sgd(W(), G(), clip_gradient=v))
    case(f"mom-clip={_v}", ValueError, CLIP)(lambda v=_v: _mom(W(), G(), M(), clip_gradient=v))
    case(f"dcasgd-clip={_v}", ValueError, CLIP)(lambda v=_v: _dca(W(), G(), None, W(),
                                                                  clip_gradient=v))
for _v in (-0.1, math.nan):
    case(f"sgd-lr={_v}", ValueError, LR)(lambda v=_v: _sgd(W(), G(), lr=v))
    case(f"sgd-wd={_v}", ValueError, WD)(lambda v=_v: _sgd(W(), G(), wd=v))
    case(f"mom-lr={_v}", ValueError, LR)(lambda v=_v: _mom(W(), G(), M(), lr=v))
    case(f"mom-wd={_v}", ValueError, WD)(lambda v=_v: _mom(W(), G(), M(), wd=v))
    case(f"mom-momentum={_v}", ValueError, MOMENTUM)(lambda v=_v: _mom(W(), G(), M(), momentum=v))
    case(f"dcasgd-lr={_v}", ValueError, LR)(lambda v=_v: _dca(W(), G(), None, W(), lr=v))
    case(f"dcasgd-wd={_v}", ValueError, WD)(lambda v=_v: _dca(W(), G(), None, W(), wd=v))
    case(f"dcasgd-momentum={_v}", ValueError, MOMENTUM)(
        lambda v=_v: _dca(W(), G(), M(), W(), momentum=v))
for _v in (math.inf, -math.inf, math.nan):
    case(f"sgd-rescale_grad={_v}", ValueError, RG)(lambda v=_v: _sgd(W(), G(), rescale_grad=v))
    case(f"mom-rescale_grad={_v}", ValueError, RG)(lambda v=_v: _mom(W(), G(), M(),
                                                                      rescale_grad=v))
    case(f"dcasgd-rescale_grad={_v}", ValueError, RG)(
        lambda v=_v: _dca(W(), G(), None, W(), rescale_grad=v))
case("dcasgd-lamda=nan", ValueError, LAMDA)(lambda: _dca(W(), G(), None, W(), lamda=math.nan))


@case("mp-lr=-0.1", ValueError, LR)
def _():
    w, g, w32 = W(dt=np.float16), G(dt=np.float16), W()
    return Built(lambda: fo.mp_sgd_update(w, g, w32, lr=-0.1), (w, g, w32))


@case("mp-mom-clip=0", ValueError, CLIP)
def _():
    w, g, m, w32 = W(dt=np.float16), G(dt=np.float16), M(), W()
    return Built(lambda: fo.mp_sgd_mom_update(w, g, m, w32, lr=0.1, momentum=0.9,
                                              clip_gradient=0.0), (w, g, m, w32))


# --- optimizer constructors (nothing to write; ValueError / TypeError) ---
def _ctor(cls_name: str, **kw):
    return Built(lambda: getattr(fo, cls_name)(**kw), ())


for _cls in ("SGD", "DCASGD"):
    for _v in (0.0, -1.0, math.nan):
        case(f"{_cls}(clip_gradient={_v})", ValueError, CLIP)(
            lambda c=_cls, v=_v: _ctor(c, clip_gradient=v))
    for _v in (-0.1, math.nan):
        case(f"{_cls}(learning_rate={_v})", ValueError, LR)(
            lambda c=_cls, v=_v: _ctor(c, learning_rate=v))
        case(f"{_cls}(momentum={_v})", ValueError, MOMENTUM)(
            lambda c=_cls, v=_v: _ctor(c, momentum=v))
        case(f"{_cls}(wd={_v})", ValueError, WD)(lambda c=_cls, v=_v: _ctor(c, wd=v))
    for _v in (math.inf, -math.inf, math.nan):
        case(f"{_cls}(rescale_grad={_v})", ValueError, RG)(
            lambda c=_cls, v=_v: _ctor(c, rescale_grad=v))
    case(f"{_cls}(unknown keyword)", TypeError, r"nesterov")(lambda c=_cls: _ctor(c, nesterov=True))
    case(f"{_cls}(misspelled keyword)", TypeError, r"learningrate")(
        lambda c=_cls: _ctor(c, learningrate=0.1))
case("DCASGD(lamda=nan)", ValueError, LAMDA)(lambda: _ctor("DCASGD", lamda=math.nan))
case("SGD(lazy_update, use_fused_step=False)", ValueError, r"lazy_update")(
    lambda: _ctor("SGD", lazy_update=True, use_fused_step=False))
case("SGD(lazy_update, multi_precision)", ValueError, r"lazy_update|multi_precision")(
    lambda: _ctor("SGD", lazy_update=True, multi_precision=True))


# --- optimizer update calls: same validation, nothing written to weight, state or grad ---
def _opt_update(cls_name: str, fused: bool, w, g, *, momentum=0.9, method="update"):
    opt = getattr(fo, cls_name)(learning_rate=0.1, momentum=momentum, use_fused_step=fused,
                                rescale_grad=0.5, wd=0.01)
    # the state comes from a valid weight of the same shape/dtype as the weight where possible
    state = opt.create_state(0, np.array(W(w.size, w.dtype)).reshape(w.shape)
                             if isinstance(w, np.ndarray) and w.dtype.kind == "f" else W())
    arrays = [w, g] + ([state] if isinstance(state, np.ndarray) else
                       [s for s in (state if isinstance(state, tuple) else ()) if s is not None])
    return Built(lambda: getattr(opt, method)([0], [w], [g], [state]), tuple(arrays))


for _cls in ("SGD", "DCASGD"):
    for _fused in (False, True):
        _tag = f"{_cls}(use_fused_step={_fused})"
        case(f"{_tag}.update-grad-shape", ValueError, GRAD)(
            lambda c=_cls, f=_fused: _opt_update(c, f, W(4), G(5)))
        case(f"{_tag}.update-grad-broadcastable", ValueError, GRAD)(
            lambda c=_cls, f=_fused: _opt_update(c, f, W(4), G(1)))
        case(f"{_tag}.update-grad-dtype", TypeError, GRAD)(
            lambda c=_cls, f=_fused: _opt_update(c, f, W(4), G(4, F64)))
        case(f"{_tag}.update-weight-readonly", ValueError, WEIGHT)(
            lambda c=_cls, f=_fused: _opt_update(c, f, readonly(W(4)), G(4)))
        case(f"{_tag}.update-weight-strided", ValueError, WEIGHT)(
            lambda c=_cls, f=_fused: _opt_update(c, f, strided(4), G(4)))
        case(f"{_tag}.update-weight-int32", TypeError, WEIGHT)(
            lambda c=_cls, f=_fused: _opt_update(c, f, np.arange(1, 5, dtype=np.int32), G(4),
                                                 momentum=0.0))
        case(f"{_tag}.update-grad-list", TypeError, GRAD)(
            lambda c=_cls, f=_fused: _opt_update(c, f, W(4), [0.25] * 4))


# --- aggregated calls: the whole call is validated before the first write ---
def _multi(arrays, *, mom=False, **kw):
    kw = {"lrs": [0.1] * (len(arrays) // (3 if mom else 2)),
          "wds": [0.0] * (len(arrays) // (3 if mom else 2))} | kw
    fn = fo.multi_sgd_mom_update if mom else fo.multi_sgd_update
    if mom:
        kw.setdefault("momentum", 0.9)
    return Built(lambda: fn(arrays, **kw), tuple(a for a in arrays if isinstance(a, np.ndarray)))


case("multi-lrs-length", ValueError, r"lrs")(lambda: _multi([W(), G(), W(3), G(3)], lrs=[0.1]))
case("multi-wds-length", ValueError, r"wds")(lambda: _multi([W(), G(), W(3), G(3)],
                                                             wds=[0.0, 0.0, 0.0]))
case("multi-second-grad-dtype", TypeError, GRAD)(lambda: _multi([W(), G(), W(3), G(3, F64)]))
case("multi-last-grad-shape", ValueError, GRAD)(
    lambda: _multi([W(), G(), W(3), G(3), W(2), G(5)]))
case("multi-second-weight-readonly", ValueError, WEIGHT)(
    lambda: _multi([W(), G(), readonly(W(3)), G(3)]))
case("multi-second-lr-negative", ValueError, LR + r"|lrs")(
    lambda: _multi([W(), G(), W(3), G(3)], lrs=[0.1, -0.1]))
case("multi-second-wd-nan", ValueError, WD + r"|wds")(
    lambda: _multi([W(), G(), W(3), G(3)], wds=[0.0, math.nan]))
case("multi-mom-second-mom-shape", ValueError, MOM)(
    lambda: _multi([W(), G(), M(), W(3), G(3), M(2)], mom=True))
case("multi-clip=0", ValueError, CLIP)(lambda: _multi([W(), G(), W(3), G(3)], clip_gradient=0.0))


@case("multi-same-weight-twice", ValueError, r"weight|twice|duplicate|same|overlap|alias")
def _():
    w = W()
    return _multi([w, G(), w, G()])


# --- row-sparse gradients: duplicate / out-of-range indices ---
def _rsp(indices, lazy=True):
    w = W(12).reshape(4, 3)
    data = np.ones((len(indices), 3), F32)
    idx = np.array(indices, dtype=np.int64)
    return Built(lambda: fo.sgd_update(w, fo.row_sparse_array((data, idx), (4, 3)), lr=0.1,
                                       wd=0.1, lazy_update=lazy), (w, data, idx))


for _lazy in (True, False):
    case(f"row-sparse-duplicate-index-lazy={_lazy}", ValueError, r"indic|index|duplicate")(
        lambda lz=_lazy: _rsp([1, 1], lz))
    case(f"row-sparse-index-out-of-range-lazy={_lazy}", ValueError, r"indic|index|range|bound")(
        lambda lz=_lazy: _rsp([0, 4], lz))
    case(f"row-sparse-negative-index-lazy={_lazy}", ValueError,
         r"indic|index|range|bound|negative")(
        lambda lz=_lazy: _rsp([-1, 2], lz))


@pytest.mark.parametrize("build, exc, match", CASES)
def test_bad_input_raises_and_writes_nothing(build, exc, match):
    built = build()
    snap = Snapshot(*built.watched)
    with pytest.raises(exc, match=match):
        built.call()
    snap.assert_unchanged("by a call that raised")


def test_case_ids_are_unique():
    ids = [p.id for p in CASES]
    assert len(ids) == len(set(ids))


# ------------------------------------------------------------------------------ set_learning_rate
@pytest.mark.parametrize("cls_name", ["SGD", "DCASGD"])
@pytest.mark.parametrize("bad", [-0.1, math.nan])
def test_set_learning_rate_rejects_bad_values(cls_name, bad):
    opt = getattr(fo, cls_name)(learning_rate=0.25)
    with pytest.raises(ValueError, match=LR):
        opt.set_learning_rate(bad)
    assert opt.learning_rate == 0.25


# ------------------------------------------------------------------------------ accepted inputs
def _ro_grads(n=5, dt=F32, steps=2):
    rng = np.random.default_rng(7)
    gs = [rng.standard_normal(n).astype(dt) for _ in range(steps)]
    return [readonly(g) for g in gs]


KW = dict(wd=0.01, rescale_grad=0.5, clip_gradient=0.3)


@pytest.mark.parametrize("dt", [F32, F64], ids=["float32", "float64"])
def test_read_only_grad_accepted_functional(dt):
    w0 = np.linspace(-1, 1, 5).astype(dt)
    gs = _ro_grads(dt=dt)
    w, wm, m = w0.copy(), w0.copy(), np.zeros(5, dt)
    wd_, p = w0.copy(), w0.copy()
    for g in gs:
        fo.sgd_update(w, g, lr=0.1, **KW)
        fo.sgd_mom_update(wm, g, m, lr=0.1, momentum=0.9, **KW)
        fo.dcasgd_update(wd_, g, None, p, lr=0.1, lamda=0.5, **KW)
    assert_close(w, ref.run_sgd(w0, gs, lr=0.1, **KW).weight, dt)
    exp = ref.run_sgd(w0, gs, lr=0.1, momentum=0.9, **KW)
    assert_close(wm, exp.weight, dt)
    assert_close(m, exp.mom, dt, role="state")
    assert_close(wd_, ref.run_dcasgd(w0, gs, lr=0.1, lamda=0.5, **KW).weight, dt)


def test_read_only_grad_accepted_aggregated():
    w0s = [np.linspace(-1, 1, 5).astype(F32), np.linspace(2, 3, 3).astype(F32)]
    gs = [_ro_grads(5, steps=1)[0], _ro_grads(3, steps=1)[0]]
    ws = [w.copy() for w in w0s]
    fo.multi_sgd_update([ws[0], gs[0], ws[1], gs[1]], lrs=[0.1, 0.2], wds=[0.0, 0.01])
    assert_close(ws[0], ref.run_sgd(w0s[0], [gs[0]], lr=0.1).weight, F32)
    assert_close(ws[1], ref.run_sgd(w0s[1], [gs[1]], lr=0.2, wd=0.01).weight, F32)


@pytest.mark.parametrize("cls_name", ["SGD", "DCASGD"])
@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
def test_read_only_grad_accepted_optimizer(cls_name, fused):
    w0 = np.linspace(-1, 1, 5).astype(F32)
    gs = _ro_grads()
    w = w0.copy()
    opt = getattr(fo, cls_name)(learning_rate=0.1, momentum=0.9, use_fused_step=fused, **KW)
    state = opt.create_state(0, w)
    for g in gs:
        opt.update([0], [w], [g], [state])
    run = ref.run_sgd if cls_name == "SGD" else ref.run_dcasgd
    assert_close(w, run(w0, gs, lr=0.1, momentum=0.9, **KW).weight, F32)


@pytest.mark.parametrize("clip_gradient", [None, math.inf, 1e-30, 1e30])
def test_edge_hyper_parameters_accepted(clip_gradient):
    """clip None / +inf (off), tiny and huge positive clips, wd=0, momentum=0, lr=0 are valid."""
    w0 = np.linspace(-1, 1, 5).astype(F64)
    g = np.linspace(3, -3, 5).astype(F64)
    w = w0.copy()
    fo.sgd_update(w, g, lr=0.1, wd=0.0, clip_gradient=clip_gradient)
    assert_close(w, ref.run_sgd(w0, [g], lr=0.1, clip_gradient=clip_gradient).weight, F64)
    m = np.zeros(5)
    before = w.copy()
    fo.sgd_mom_update(w, g, m, lr=0.0, momentum=0.0, clip_gradient=clip_gradient)
    np.testing.assert_array_equal(w, before)  # lr=0: m = 0*m - 0*r = 0
    np.testing.assert_array_equal(m, np.zeros(5))
    for cls in (fo.SGD, fo.DCASGD):
        cls(learning_rate=0.0, momentum=0.0, wd=0.0, clip_gradient=clip_gradient)


# ------------------------------------------------------------------------------ strided gradient
@pytest.mark.parametrize("kind", ["every-second", "reversed", "fortran"])
def test_non_contiguous_grad_is_refused_or_correct(kind):
    """docs/SEMANTICS.md §10 requires C-contiguous weights and states but says nothing about a strided
    gradient (PITFALLS (d) 9: a strided kernel or a clear error). Either outcome is accepted;
    a silently wrong result (e.g. reading the buffer as if contiguous) is not."""
    if kind == "fortran":
        w0 = np.arange(1.0, 13.0).reshape(3, 4).astype(F32)
        g = np.asfortranarray(np.linspace(-1, 1, 12).reshape(3, 4).astype(F32))
    elif kind == "reversed":
        w0 = W(8)
        g = np.linspace(-1, 1, 8).astype(F32)[::-1]
    else:
        w0 = W(8)
        g = np.linspace(-1, 1, 16).astype(F32)[::2]
    assert not g.flags.c_contiguous
    w = w0.copy()
    snap = Snapshot(w, g)
    try:
        fo.sgd_update(w, g, lr=0.1, wd=0.01)
    except ValueError as e:
        assert re.search(GRAD, str(e)), f"error does not name the gradient: {e}"
        snap.assert_unchanged("by a call that raised")
        return
    assert_close(w, ref.run_sgd(w0, [np.ascontiguousarray(g)], lr=0.1, wd=0.01).weight, F32)
