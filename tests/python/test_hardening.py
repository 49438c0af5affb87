"""Hostile callers (README "Reliability"): nothing a Python caller does may crash the process, and
nothing is silently read as other numbers.

* Crashes, by class: list arguments mutated while they are converted (a ``__dlpack__`` of an element,
  a ``__float__`` of an lrs item, a ``__hash__`` / ``__index__`` of an index that clears the caller's
  list); storage freed under a view (a torch weight whose storage another argument's ``__dlpack__``
  replaces or resizes, a storage resized to 0 bytes, a prepared step after ``model.double()`` or
  ``p.data = ...``); row-sparse indices that share memory with the weight. Each runs in a subprocess,
  so a crash fails the test instead of killing pytest.
* Silent wrong results: non-native byte order, torch tensors with the negative bit, replaced
  ``RowSparseArray.indices``, a prepared step whose effective learning rate overflows.
* Smaller ones: zero-width row-sparse weights of 2**40 rows, lrs/wds errors naming the entry,
  ints too large for a float, bools and None as hyper-parameters, an invalid
  ``FUSEDOPT_CPU_CAPABILITY`` with an explicit ``set_cpu_capability``.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import reference as ref
from helpers import Snapshot, assert_close, import_fusedopt

fusedopt = import_fusedopt()
import fusedopt.functional as F  # noqa: E402

F32 = np.dtype(np.float32)

# Defined in every subprocess: producers and numbers whose callbacks mutate their surroundings.
PRELUDE = """
import gc, sys
import numpy as np
import fusedopt, fusedopt.functional as F

class Wrap:
    '''A DLPack producer over a NumPy array whose __dlpack__ first runs `hook`.'''
    def __init__(self, arr, hook):
        self.arr, self.hook = arr, hook
    def __dlpack__(self, **kw):
        self.hook()
        gc.collect()
        return self.arr.__dlpack__(**kw)
    def __dlpack_device__(self):
        return (1, 0)

class Num:
    '''A number whose __float__ / __index__ first runs `hook`.'''
    def __init__(self, value, hook):
        self.value, self.hook = value, hook
    def __float__(self):
        self.hook(); gc.collect(); return float(self.value)
    def __index__(self):
        self.hook(); gc.collect(); return int(self.value)

class Key:
    '''A dict key whose __hash__ first runs `hook`.'''
    def __init__(self, k, hook):
        self.k, self.hook = k, hook
    def __hash__(self):
        self.hook(); gc.collect(); return hash(self.k)
    def __eq__(self, other):
        return isinstance(other, Key) and other.k == self.k

def arrays(n, size=1000, value=1.0):
    return [np.full(size, value, np.float32) for _ in range(n)]

def outcome(fn):
    try:
        fn()
    except (TypeError, ValueError, BufferError, IndexError, RuntimeError) as e:
        print("RAISED", type(e).__name__, e)
    else:
        print("DONE")
"""


def run_isolated(body: str, env: dict | None = None) -> str:
    """Runs PRELUDE + body in a fresh interpreter; fails on a crash (signal / non-zero exit)."""
    code = PRELUDE + textwrap.dedent(body)
    full_env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=full_env)
    assert proc.returncode == 0, (
        f"the subprocess died (returncode {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def _torch():
    return pytest.importorskip("torch")


# ------------------------------------------------------------------------ lists mutated in calls
LIST_CASES = {
    "multi_sgd_update-dlpack": """
        flat = arrays(40)
        flat[5] = Wrap(np.ones(1000, np.float32), lambda: flat.clear())
        outcome(lambda: F.multi_sgd_update(flat, lrs=[0.1] * 20, wds=[0.0] * 20))
    """,
    "multi_sgd_mom_update-float": """
        flat = arrays(60)
        lrs = [0.1] * 20
        lrs[3] = Num(0.1, lambda: (flat.clear(), lrs.clear()))
        outcome(lambda: F.multi_sgd_mom_update(flat, lrs=lrs, wds=[0.0] * 20, momentum=0.9))
    """,
    "multi_mp_sgd_update-wds-float": """
        flat = []
        for _ in range(10):
            flat += [np.ones(100, np.float16), np.ones(100, np.float16), np.ones(100, np.float32)]
        wds = [0.0] * 10
        wds[9] = Num(0.0, lambda: (flat.clear(), wds.clear()))
        outcome(lambda: F.multi_mp_sgd_update(flat, lrs=[0.1] * 10, wds=wds))
    """,
    "multi_sgd_update_states-dlpack": """
        ws, gs, ms = arrays(30), arrays(30), arrays(30, value=0.0)
        gs[2] = Wrap(np.ones(1000, np.float32), lambda: (ws.clear(), ms.clear(), gs.clear()))
        outcome(lambda: F.multi_sgd_update_states(ws, gs, ms, lrs=[0.1] * 30, wds=[0.0] * 30,
                                                  momentum=0.9))
    """,
    "multi_dcasgd_update-dlpack": """
        ws, gs, ps = arrays(20), arrays(20), arrays(20)
        gs[7] = Wrap(np.ones(1000, np.float32), lambda: (ws.clear(), ps.clear()))
        outcome(lambda: F.multi_dcasgd_update(ws, gs, None, ps, lrs=[0.1] * 20, wds=[0.0] * 20))
    """,
    "prepare-dlpack": """
        opt = fusedopt.SGD(learning_rate=0.1, momentum=0.9)
        ws, gs = arrays(20), arrays(20)
        states = [opt.create_state(i, w) for i, w in enumerate(ws)]
        gs[4] = Wrap(np.ones(1000, np.float32), lambda: (ws.clear(), states.clear()))
        outcome(lambda: opt.prepare(list(range(20)), ws, gs, states).step())
    """,
    "fused_step-dlpack": """
        opt = fusedopt.SGD(learning_rate=0.1, momentum=0.9, aggregate_num=64)
        ws, gs = arrays(20), arrays(20)
        states = [opt.create_state(i, w) for i, w in enumerate(ws)]
        gs[4] = Wrap(np.ones(1000, np.float32), lambda: (ws.clear(), states.clear(), gs.clear()))
        outcome(lambda: opt.fused_step(list(range(20)), ws, gs, states))
    """,
    "fused_step-hash": """
        opt = fusedopt.SGD(learning_rate=0.1, momentum=0.9)
        ws, gs = arrays(20), arrays(20)
        idx = []
        idx.extend(Key(i, lambda: idx.clear()) for i in range(20))
        states = [opt.create_state(k, w) for k, w in zip(list(idx), ws)]
        outcome(lambda: opt.fused_step(idx, ws, gs, states))
    """,
    "bump_counts-hash": """
        keys = []
        keys.extend(Key(i, lambda: keys.clear()) for i in range(100))
        outcome(lambda: F.bump_counts({}, keys, 0))
        keys.extend(Key(i, lambda: keys.clear()) for i in range(100))
        outcome(lambda: F.set_counts({}, keys, 3))
    """,
    "cpp_optimizer-index": """
        opt = fusedopt._core.cpp_SGD()
        ws, gs = arrays(10), arrays(10)
        idx = [0] * 10
        idx[:] = [Num(i, lambda: (idx.clear(), ws.clear(), gs.clear())) for i in range(10)]
        outcome(lambda: opt.update(idx, ws, gs))
    """,
}


@pytest.mark.parametrize("case", list(LIST_CASES))
def test_lists_mutated_during_conversion_do_not_crash(case):
    out = run_isolated(LIST_CASES[case])
    assert out.strip().splitlines()[-1].startswith(("DONE", "RAISED")), out


def test_list_cleared_by_a_callback_still_updates_the_snapshot():
    """The call sees the list as it was passed: every array is updated as the reference says."""
    ws = [np.full(7, 1.0 + k, np.float32) for k in range(6)]
    gs = [np.full(7, 0.5, np.float32) for _ in range(6)]
    flat = [a for pair in zip(ws, gs) for a in pair]
    lrs = [0.1] * 6

    class ClearingNumber:
        def __float__(self):
            flat.clear()
            lrs.clear()
            return 0.25

    lrs[2] = ClearingNumber()
    F.multi_sgd_update(flat, lrs=lrs, wds=[0.0] * 6)
    for k in range(6):
        lr = 0.25 if k == 2 else 0.1
        assert_close(ws[k], ref.round_to(ref.sgd_update(np.full(7, 1.0 + k, F32), gs[k], lr=lr),
                                         F32), F32)


# --------------------------------------------------------------------- storage freed under a view
STORAGE_CASES = {
    "set_-from-dlpack": """
        import torch
        w = torch.ones(100000); g = torch.ones(100000)
        other = Wrap(np.ones(100000, np.float32), lambda: w.set_(torch.zeros(1)))
        outcome(lambda: F.multi_sgd_update([w, g, torch.ones(100000), other], lrs=[0.1, 0.1],
                                           wds=[0.0, 0.0]))
    """,
    "resize_-from-dlpack": """
        import torch
        w = torch.ones(100000); g = torch.ones(100000)
        other = Wrap(np.ones(100000, np.float32), lambda: w.resize_(3))
        outcome(lambda: F.sgd_mom_update(w, g, other, lr=0.1, momentum=0.9))
        print(tuple(w.shape))
    """,
    "storage-resized-to-0-with-offset": """
        import torch
        base = torch.ones(200000); w = base[100000:]
        w.untyped_storage().resize_(0)
        outcome(lambda: F.sgd_update(w, torch.ones(100000), lr=0.1))
    """,
    "storage-resized-to-0": """
        import torch
        w = torch.ones(100000)
        w.untyped_storage().resize_(0)
        outcome(lambda: F.sgd_update(w, torch.ones(100000), lr=0.1))
    """,
    "prepared-after-model.double": """
        import torch
        m = torch.nn.Sequential(torch.nn.Linear(300, 300), torch.nn.Linear(300, 10))
        for p in m.parameters(): p.grad = torch.ones_like(p)
        ps = list(m.parameters())
        opt = fusedopt.SGD(learning_rate=0.1, momentum=0.9)
        states = [opt.create_state(i, p) for i, p in enumerate(ps)]
        step = opt.prepare(list(range(len(ps))), ps, [p.grad for p in ps], states)
        step.step()
        m.double(); gc.collect(); junk = torch.ones(10**6)
        outcome(step.step)
    """,
    "prepared-after-p.data": """
        import torch
        p = torch.nn.Parameter(torch.ones(100000)); p.grad = torch.ones(100000)
        opt = fusedopt.SGD(learning_rate=0.1, momentum=0.9)
        step = opt.prepare([0], [p], [p.grad], [opt.create_state(0, p)])
        p.data = torch.zeros(100000); gc.collect()
        outcome(step.step)
    """,
    "prepared-after-numpy-resize": """
        w = np.ones(100000, np.float32); g = np.ones(100000, np.float32)
        opt = fusedopt.SGD(learning_rate=0.1)
        step = opt.prepare([0], [w], [g], [opt.create_state(0, w)])
        w.resize(10, refcheck=False); gc.collect()
        outcome(step.step)
    """,
    "indices-alias-weight": """
        w = np.ones((4, 2), np.float32)
        idx = w.reshape(-1)[:2].view(np.int64)
        idx[0] = 1
        g = fusedopt.RowSparseArray(np.ones((1, 2), np.float32), [1], (4, 2))
        g.indices = idx[:1]
        outcome(lambda: F.sgd_update(w, g, lr=0.1))
    """,
}

STORAGE_EXPECT = {
    "set_-from-dlpack": "was changed while the call's arguments were converted",
    "resize_-from-dlpack": "was changed while the call's arguments were converted",
    "storage-resized-to-0-with-offset": "the storage has 0",
    "storage-resized-to-0": "weight",
    "prepared-after-model.double": "no longer has the memory it was prepared with",
    "prepared-after-p.data": "no longer has the memory it was prepared with",
    "prepared-after-numpy-resize": "no longer has the memory it was prepared with",
    "indices-alias-weight": "grad.indices overlaps weight",
}


@pytest.mark.parametrize("case", list(STORAGE_CASES))
def test_freed_or_replaced_storage_raises_instead_of_crashing(case):
    if "torch" in STORAGE_CASES[case]:
        _torch()
    out = run_isolated(STORAGE_CASES[case])
    assert "RAISED ValueError" in out and STORAGE_EXPECT[case] in out, out


def test_storage_replaced_by_callback_writes_nothing():
    torch = _torch()
    w = torch.ones(1000)
    g = torch.ones(1000)
    kept = w  # same object; its storage is swapped by the callback
    replacement = torch.full((1000,), 7.0)

    class Swapper:
        def __dlpack__(self, **kw):
            w.set_(replacement)
            return np.zeros(1000, np.float32).__dlpack__(**kw)

        def __dlpack_device__(self):
            return (1, 0)

    with pytest.raises(ValueError, match=r"weight was changed while"):
        F.sgd_mom_update(w, g, Swapper(), lr=0.5, momentum=0.9)
    assert torch.equal(kept, torch.full((1000,), 7.0))  # the new storage was not written


# ----------------------------------------------------------------------------- silent wrong results
@pytest.mark.parametrize("dtype", [">f4", ">f2", ">f8", "bf16-big"])
@pytest.mark.parametrize("role", ["weight", "grad"])
def test_non_native_byte_order_is_a_type_error(dtype, role):
    if dtype == "bf16-big":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        dt = np.dtype(ml_dtypes.bfloat16).newbyteorder(">")
    else:
        dt = np.dtype(dtype)
    args = {"weight": np.ones(5, dt.newbyteorder("=")), "grad": np.ones(5, dt.newbyteorder("="))}
    args[role] = np.ones(5, dt)
    snap = Snapshot(*args.values())
    with pytest.raises(TypeError, match=rf"sgd_update: {role} must be in native byte order"):
        F.sgd_update(args["weight"], args["grad"], lr=0.1)
    snap.assert_unchanged()


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "capsule"])
@pytest.mark.parametrize("make", ["conj-imag", "neg-view"])
def test_torch_negative_bit_is_refused(exchange, make):
    torch = _torch()
    T = fusedopt._core._testing
    if make == "conj-imag":
        neg = torch.tensor([1 + 2j, 3 - 1j], dtype=torch.complex64).conj().imag
    else:
        neg = torch.tensor([2.0, -1.0])._neg_view()
    assert neg.is_neg()
    w = torch.ones(2)
    before = T.set_exchange_enabled(exchange)
    try:
        with pytest.raises(TypeError, match=r"sgd_update: grad is a torch tensor with the negative bit"):
            F.sgd_update(w, neg, lr=0.5)
        with pytest.raises(TypeError, match=r"sgd_update: weight is a torch tensor with the negative"):
            F.sgd_update(neg, torch.ones(2), lr=0.5)
    finally:
        T.set_exchange_enabled(before)
    assert torch.equal(w, torch.ones(2))
    F.sgd_update(w, neg.resolve_neg(), lr=0.5)  # resolved: the values as torch shows them
    np.testing.assert_allclose(w.numpy(), 1.0 - 0.5 * neg.resolve_neg().numpy())


@pytest.mark.parametrize("bad", ["strided", "int32", "float64", "2-d", "big-endian"])
def test_replaced_row_sparse_indices_are_validated(bad):
    w = np.arange(12, dtype=np.float32).reshape(6, 2)
    g = fusedopt.RowSparseArray(np.ones((2, 2), np.float32), [1, 4], (6, 2))
    g.indices = {
        "strided": np.array([1, 9, 4, 9], np.int64)[::2],
        "int32": np.array([1, 4], np.int32),
        "float64": np.array([1.0, 4.0]),
        "2-d": np.array([[1, 4]], np.int64),
        "big-endian": np.array([1, 4], ">i8"),
    }[bad]
    snap = Snapshot(w)
    with pytest.raises((TypeError, ValueError), match=r"sgd_update: grad.indices must be"):
        F.sgd_update(w, g, lr=0.1, lazy_update=True)
    snap.assert_unchanged()


def test_prepared_step_checks_the_effective_rates_like_fused_step():
    ws = [np.ones(5, F32), np.ones(5, F32)]
    gs = [np.ones(5, F32), np.ones(5, F32)]
    for path in ("fused", "prepared"):
        opt = fusedopt.SGD(learning_rate=1e10, momentum=0.9)
        opt.set_lr_mult({1: 1e300})  # 1e10 * 1e300 overflows to inf
        states = [opt.create_state(i, w) for i, w in enumerate(ws)]
        snap = Snapshot(*ws, *states)
        match = (r"lr \* lr_mult\[1\] must be a finite number >= 0, got inf" if path == "prepared"
                 else r"inf")
        with pytest.raises(ValueError, match=match):
            if path == "fused":
                opt.fused_step([0, 1], ws, gs, states)
            else:
                opt.prepare([0, 1], ws, gs, states).step()
        snap.assert_unchanged()
        assert opt.num_update == 0


# -------------------------------------------------------------------------------------- smaller ones
@pytest.mark.parametrize("lazy", [True, False])
def test_zero_width_row_sparse_update_of_2_40_rows(lazy):
    rows = 2**40
    w = np.empty((rows, 0), np.float32)
    m = np.empty((rows, 0), np.float32)
    g = fusedopt.RowSparseArray(np.empty((2, 0), np.float32), [rows - 1, 5], (rows, 0))
    F.sgd_mom_update(w, g, m, lr=0.1, momentum=0.9, lazy_update=lazy)
    dup = fusedopt.RowSparseArray(np.empty((3, 0), np.float32), [7, rows - 1, 7], (rows, 0))
    with pytest.raises(ValueError, match=r"grad.indices has row 7 twice \(at 0 and 2\)"):
        F.sgd_update(w, dup, lr=0.1, lazy_update=lazy)
    out = fusedopt.RowSparseArray(np.empty((1, 0), np.float32), [rows], (rows, 0))
    with pytest.raises(ValueError, match=r"grad.indices\[0\] = 1099511627776 is out of range"):
        F.sgd_update(w, out, lr=0.1, lazy_update=lazy)


@pytest.mark.parametrize("name", ["lrs", "wds"])
def test_rate_errors_name_the_entry(name):
    ws = [np.ones(3, F32) for _ in range(3)]
    flat = [a for w in ws for a in (w, np.ones(3, F32))]
    rates = {"lrs": [0.1] * 3, "wds": [0.0] * 3}
    snap = Snapshot(*ws)
    rates[name] = [0.1, 0.1, -1.0]
    with pytest.raises(ValueError, match=rf"multi_sgd_update: {name}\[2\] must be a finite number >= 0, got -1"):
        F.multi_sgd_update(flat, **rates)
    rates[name] = [0.1, 10**400, 0.1]
    with pytest.raises(ValueError, match=rf"{name}\[1\] is an int too large to convert to a float"):
        F.multi_sgd_update(flat, **rates)
    rates[name] = [0.1, 0.1, True]
    with pytest.raises(TypeError, match=rf"{name}\[2\] must be a real number \(float or int\), got bool"):
        F.multi_sgd_update(flat, **rates)
    snap.assert_unchanged()


@pytest.mark.parametrize("kwargs", [dict(lr=True), dict(lr=0.1, wd=False), dict(lr=None),
                                    dict(lr=0.1, lazy_update=None), dict(lr=0.1, lazy_update=1),
                                    dict(lr="0.1"), dict(lr=10**400), dict(lr=0.1, clip_gradient=True)])
def test_functional_kernels_refuse_bools_and_none_as_numbers(kwargs):
    w, g = np.ones(4, F32), np.ones(4, F32)
    snap = Snapshot(w)
    with pytest.raises(TypeError):
        F.sgd_update(w, g, **kwargs)
    with pytest.raises(TypeError):
        F.sgd_mom_update(w, g, np.zeros(4, F32), **kwargs)
    snap.assert_unchanged()
    F.sgd_update(w, g, lr=np.float32(0.5), wd=np.int64(0))  # NumPy numbers are numbers
    np.testing.assert_array_equal(w, np.full(4, 0.5, F32))


def test_dcasgd_functional_refuses_bool_hyper_parameters():
    w, g, p = np.ones(4, F32), np.ones(4, F32), np.ones(4, F32)
    with pytest.raises(TypeError):
        F.dcasgd_update(w, g, None, p, lr=0.1, lamda=True)
    with pytest.raises(TypeError):
        F.multi_dcasgd_update([w], [g], None, [p], lrs=[0.1], wds=[0.0], momentum=False)


def test_invalid_capability_variable_does_not_block_an_explicit_choice():
    out = run_isolated("""
        try:
            F.sgd_update(np.ones(3, np.float32), np.ones(3, np.float32), lr=0.5)
        except ValueError as e:
            print("ENV", e)
        fusedopt.set_cpu_capability("baseline")
        w = np.ones(3, np.float32)
        F.sgd_update(w, np.ones(3, np.float32), lr=0.5)
        print("CAP", fusedopt.cpu_capability(), w.tolist())
    """, env={"FUSEDOPT_CPU_CAPABILITY": "bogus"})
    assert "ENV FUSEDOPT_CPU_CAPABILITY: unknown CPU capability 'bogus'" in out
    assert "CAP baseline [0.5, 0.5, 0.5]" in out
