"""GradScaler operands of the aggregated operators: ``grad_scale=`` and ``found_inf=`` (one-element
float32 arrays on the weights' device, NumPy or DLPack).

With ``grad_scale=s`` a call equals the same call with ``rescale_grad * (1 / s)`` bitwise (the
documented formula) and the float64 reference with ``rescale_grad / s`` within the tolerance table;
with ``found_inf`` non-zero nothing is written; refused operands (dtype, element count, type,
aliasing a written array) raise before anything is written.
"""
from __future__ import annotations

import numpy as np
import pytest

import reference as ref
from helpers import Snapshot, assert_bitwise_equal, assert_close, import_fusedopt, random_array

fusedopt = import_fusedopt()
F = fusedopt.functional

SHAPES = [(5,), (3, 4), (70,)]
HYPER = dict(momentum=0.9, rescale_grad=0.9, clip_gradient=0.6)


def _problem(rng, low=False):
    """Weights (float16 with float32 masters when ``low``), gradients scaled past the clip, states."""
    dt = np.float16 if low else np.float32
    w32 = [random_array(rng, s, np.float32) for s in SHAPES]
    p = {
        "w": [x.astype(dt) for x in w32],
        "g": [(4.0 * random_array(rng, s, np.float32)).astype(dt) for s in SHAPES],
        "m": [0.5 * random_array(rng, s, np.float32) for s in SHAPES],
        "prev": [x + np.float32(0.05) * random_array(rng, x.shape, np.float32) for x in w32],
        "ms": [np.abs(random_array(rng, s, np.float32)) for s in SHAPES],
        "w32": w32,
    }
    if not low:
        p["m"] = [x.astype(dt) for x in p["m"]]
    return p


def _lists(n):
    return {"lrs": [0.05, 0.1, 0.02][:n], "wds": [0.01, 0.0, 0.02][:n]}


def _call(op, p, **kw):
    """Runs aggregated operator ``op`` on problem ``p`` (updated in place)."""
    lw = _lists(len(p["w"]))
    mom = dict(kw)
    if op == "multi_sgd_update":
        F.multi_sgd_update([a for t in zip(p["w"], p["g"]) for a in t], **lw,
                           **{k: v for k, v in mom.items() if k != "momentum"})
    elif op == "multi_sgd_mom_update":
        F.multi_sgd_mom_update([a for t in zip(p["w"], p["g"], p["m"]) for a in t], **lw, **mom)
    elif op == "multi_mp_sgd_update":
        F.multi_mp_sgd_update([a for t in zip(p["w"], p["g"], p["w32"]) for a in t], **lw,
                              **{k: v for k, v in mom.items() if k != "momentum"})
    elif op == "multi_mp_sgd_mom_update":
        F.multi_mp_sgd_mom_update([a for t in zip(p["w"], p["g"], p["m"], p["w32"]) for a in t],
                                  **lw, **mom)
    elif op == "multi_sgd_update_states":
        assert F.multi_sgd_update_states(p["w"], p["g"], p["m"], **lw, **mom)
    elif op == "multi_dcasgd_update":
        F.multi_dcasgd_update(p["w"], p["g"], p["m"], p["prev"], **lw, lamda=0.3, **mom)
    elif op == "multi_dcasgd_update_adaptive":
        F.multi_dcasgd_update(p["w"], p["g"], p["m"], p["prev"], p["ms"], **lw, lamda=0.3, **mom)
    elif op == "multi_mp_dcasgd_update":
        F.multi_mp_dcasgd_update(p["w"], p["g"], p["m"], p["prev"], p["w32"], **lw, lamda=0.3,
                                 **mom)
    elif op == "multi_dcasgd_backup_update":
        F.multi_dcasgd_backup_update(p["w"], p["g"], p["prev"], p["m"], p["ms"], **lw, lamda=0.3,
                                     **mom)
    elif op == "multi_mp_dcasgd_backup_update":
        F.multi_mp_dcasgd_backup_update(p["w"], p["g"], p["prev"], p["w32"], p["m"], **lw,
                                        lamda=0.3, **mom)
    else:
        raise AssertionError(op)


OPS = ["multi_sgd_update", "multi_sgd_mom_update", "multi_mp_sgd_update",
       "multi_mp_sgd_mom_update", "multi_sgd_update_states", "multi_dcasgd_update",
       "multi_dcasgd_update_adaptive", "multi_mp_dcasgd_update", "multi_dcasgd_backup_update",
       "multi_mp_dcasgd_backup_update"]


def _low(op):
    return "_mp_" in op


def _copy(p):
    return {k: [x.copy() for x in v] for k, v in p.items()}


def _written(p):
    return [a for k in ("w", "m", "prev", "ms", "w32") for a in p[k]]


@pytest.mark.parametrize("scale", [1024.0, 3.0, 0.5])
@pytest.mark.parametrize("op", OPS)
def test_grad_scale_is_rescale_times_inverse_scale(rng, op, scale):
    """Three steps with grad_scale=s bitwise equal three with rescale_grad * (1 / s)."""
    a = _problem(rng, _low(op))
    b = _copy(a)
    gs = np.array([scale], dtype=np.float32)
    for _ in range(3):
        _call(op, a, **HYPER, grad_scale=gs, found_inf=np.zeros(1, np.float32))
        _call(op, b, **{**HYPER, "rescale_grad": HYPER["rescale_grad"] * (1.0 / scale)})
    for x, y in zip(_written(a), _written(b)):
        assert_bitwise_equal(x, y)


@pytest.mark.parametrize("scale", [8.0, 3.0])
def test_sgd_mom_grad_scale_matches_reference(rng, scale):
    p = _problem(rng)
    w0, m0 = [x.copy() for x in p["w"]], [x.copy() for x in p["m"]]
    _call("multi_sgd_mom_update", p, **HYPER, grad_scale=np.array([scale], np.float32))
    rg = ref.loss_scaled_rescale(HYPER["rescale_grad"], scale)
    lw = _lists(len(SHAPES))
    for k in range(len(SHAPES)):
        w, m = ref.sgd_mom_update(w0[k], p["g"][k], m0[k], lr=lw["lrs"][k], wd=lw["wds"][k],
                                  momentum=HYPER["momentum"], rescale_grad=rg,
                                  clip_gradient=HYPER["clip_gradient"])
        assert_close(p["w"][k], w, np.float32, check_dtype=False)
        assert_close(p["m"][k], m, np.float32, role="state", check_dtype=False)


@pytest.mark.parametrize("scale", [8.0, 3.0])
def test_dcasgd_grad_scale_matches_reference(rng, scale):
    p = _problem(rng)
    w0, m0, prev0 = ([x.copy() for x in p[k]] for k in ("w", "m", "prev"))
    _call("multi_dcasgd_update", p, **HYPER, grad_scale=np.array([scale], np.float32))
    rg = ref.loss_scaled_rescale(HYPER["rescale_grad"], scale)
    lw = _lists(len(SHAPES))
    for k in range(len(SHAPES)):
        w, m, prev = ref.dcasgd_update(w0[k], p["g"][k], m0[k], prev0[k], lr=lw["lrs"][k],
                                       wd=lw["wds"][k], momentum=HYPER["momentum"], lamda=0.3,
                                       rescale_grad=rg, clip_gradient=HYPER["clip_gradient"])
        assert_close(p["w"][k], w, np.float32, check_dtype=False)
        assert_close(p["m"][k], m, np.float32, role="state", check_dtype=False)
        assert_bitwise_equal(p["prev"][k], w0[k])


@pytest.mark.parametrize("found", [1.0, float("nan"), float("inf"), -1.0])
@pytest.mark.parametrize("op", OPS)
def test_found_inf_writes_nothing(rng, op, found):
    p = _problem(rng, _low(op))
    snap = Snapshot(*_written(p), *p["g"])
    _call(op, p, **HYPER, grad_scale=np.array([2.0], np.float32),
          found_inf=np.array([found], np.float32))
    snap.assert_unchanged(f"by {op} with found_inf={found}")


def test_torch_tensors_are_accepted(rng):
    torch = pytest.importorskip("torch")
    a = _problem(rng)
    b = _copy(a)
    _call("multi_sgd_mom_update", a, **HYPER, grad_scale=torch.tensor([4.0]),
          found_inf=torch.zeros(1))
    _call("multi_sgd_mom_update", b, **{**HYPER, "rescale_grad": HYPER["rescale_grad"] / 4.0})
    for x, y in zip(_written(a), _written(b)):
        assert_bitwise_equal(x, y)
    snap = Snapshot(*_written(a))
    _call("multi_sgd_mom_update", a, **HYPER, found_inf=torch.ones(()))  # 0-d: one element
    snap.assert_unchanged("with found_inf=torch.ones(())")


BAD = [
    ("grad_scale", np.array([2.0], np.float64), TypeError, "grad_scale"),
    ("found_inf", np.array([1.0], np.float16), TypeError, "found_inf"),
    ("grad_scale", np.array([2.0, 2.0], np.float32), ValueError, "one element"),
    ("found_inf", np.zeros((1, 2), np.float32), ValueError, "one element"),
    ("found_inf", np.zeros(0, np.float32), ValueError, "one element"),
    ("grad_scale", 2.0, TypeError, "grad_scale"),
    ("found_inf", [0.0], TypeError, "found_inf"),
]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("name,value,err,match", BAD,
                         ids=[f"{b[0]}-{k}" for k, b in enumerate(BAD)])
def test_bad_operands_write_nothing(rng, op, name, value, err, match):
    p = _problem(rng, _low(op))
    snap = Snapshot(*_written(p), *p["g"])
    with pytest.raises(err, match=match):
        _call(op, p, **HYPER, **{name: value})
    snap.assert_unchanged(f"by a refused {op}")


@pytest.mark.numpy_memory  # aliasing exists only in the caller's memory: the copy modes break it
@pytest.mark.parametrize("op", ["multi_sgd_mom_update", "multi_dcasgd_update"])
def test_operand_aliasing_a_written_array_is_refused(rng, op):
    p = _problem(rng)
    snap = Snapshot(*_written(p))
    alias = p["w"][0][:1]  # (a view of a weight the call writes)
    with pytest.raises(ValueError, match="found_inf"):
        _call(op, p, **HYPER, found_inf=alias)
    snap.assert_unchanged("by a refused call")
