"""Fuzz target: Python callbacks that run while fusedopt converts a call's arguments and mutate what
was already converted. A ``__dlpack__`` of an element, a ``__float__`` / ``__index__`` of an lrs/wds
item or a ``__hash__`` of an index clears or rewrites the caller's lists, replaces or resizes a torch
tensor's storage (``set_``, ``resize_``, ``untyped_storage().resize_(0)``) or collects garbage. Every
entry point that takes lists (multi_*, multi_sgd_update_states, multi_dcasgd_update, fused_step,
prepare + step, the count helpers) must either finish or raise a Python exception; never crash.

Run: ``python tests/fuzz/fuzz_callbacks.py -max_total_time=30``.
"""

from __future__ import annotations

import gc
import sys

import atheris

with atheris.instrument_imports():
    import numpy as np

    import fusedopt
    import fusedopt.functional as F

try:
    import torch
except ImportError:  # the torch mutations are skipped
    torch = None

ALLOWED = (TypeError, ValueError, BufferError, IndexError, KeyError, RuntimeError)


class Ctx:
    """What the callbacks may mutate: the lists passed to the call and the torch tensors in them."""

    def __init__(self, fdp: atheris.FuzzedDataProvider) -> None:
        self.fdp = fdp
        self.lists: list[list] = []
        self.tensors: list = []

    def mutate(self) -> None:
        fdp = self.fdp
        for _ in range(fdp.ConsumeIntInRange(0, 3)):
            what = fdp.ConsumeIntInRange(0, 7)
            if what <= 2 and self.lists:
                lst = self.lists[fdp.ConsumeIntInRange(0, len(self.lists) - 1)]
                if what == 0:
                    lst.clear()
                elif what == 1 and lst:
                    lst[fdp.ConsumeIntInRange(0, len(lst) - 1)] = np.zeros(3, np.float32)
                elif lst:
                    del lst[fdp.ConsumeIntInRange(0, len(lst) - 1):]
            elif what <= 5 and self.tensors:
                t = self.tensors[fdp.ConsumeIntInRange(0, len(self.tensors) - 1)]
                try:
                    if what == 3:
                        t.set_(torch.zeros(fdp.ConsumeIntInRange(0, 4)))
                    elif what == 4:
                        t.resize_(fdp.ConsumeIntInRange(0, 50))
                    else:
                        t.untyped_storage().resize_(0)
                except RuntimeError:
                    pass
            elif what == 6:
                self.tensors.clear()
            gc.collect()


class Producer:
    """A DLPack producer over `arr` whose __dlpack__ mutates first."""

    def __init__(self, arr, ctx: Ctx) -> None:
        self.arr, self.ctx = arr, ctx

    def __dlpack__(self, **kw):
        self.ctx.mutate()
        return self.arr.__dlpack__(**kw)

    def __dlpack_device__(self):
        return (1, 0)


class Number:
    def __init__(self, value: float, ctx: Ctx) -> None:
        self.value, self.ctx = value, ctx

    def __float__(self) -> float:
        self.ctx.mutate()
        return self.value

    def __index__(self) -> int:
        self.ctx.mutate()
        return int(self.value)


class Key:
    def __init__(self, k: int, ctx: Ctx) -> None:
        self.k, self.ctx = k, ctx

    def __hash__(self) -> int:
        self.ctx.mutate()
        return hash(self.k)

    def __eq__(self, other) -> bool:
        return isinstance(other, Key) and other.k == self.k


def _array(fdp: atheris.FuzzedDataProvider, ctx: Ctx, size: int, dtype=np.float32):
    """A NumPy array, a torch tensor (converted through torch's exchange table, re-checked by
    fusedopt after callbacks) or a hostile producer over a NumPy array (its capsule keeps the array
    alive). Not generated: a producer that re-exports a torch tensor whose storage a callback then
    replaces: torch's capsule does not keep the storage alive and fusedopt cannot re-read a foreign
    producer without calling it again (README, "Hostile callers", not covered)."""
    kind = fdp.ConsumeIntInRange(0, 2)
    if kind == 1 and torch is not None and dtype == np.float32:
        t = torch.ones(size)
        ctx.tensors.append(t)
        return t
    if kind == 2:
        return Producer(np.ones(size, dtype), ctx)
    return np.ones(size, dtype)


def _rates(fdp: atheris.FuzzedDataProvider, ctx: Ctx, n: int, value: float) -> list:
    rates = [value] * n
    for k in range(n):
        if fdp.ConsumeIntInRange(0, 4) == 0:
            rates[k] = Number(value, ctx)
    ctx.lists.append(rates)
    return rates


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    ctx = Ctx(fdp)
    n = fdp.ConsumeIntInRange(1, 6)
    size = fdp.PickValueInList([1, 7, 64, 1000])
    ws = [_array(fdp, ctx, size) for _ in range(n)]
    gs = [_array(fdp, ctx, size) for _ in range(n)]
    ms = [_array(fdp, ctx, size) for _ in range(n)]
    ctx.lists += [ws, gs, ms]
    op = fdp.ConsumeIntInRange(0, 6)
    try:
        if op == 0:
            flat = [a for trio in zip(ws, gs, ms) for a in trio]
            ctx.lists.append(flat)
            F.multi_sgd_mom_update(flat, lrs=_rates(fdp, ctx, n, 0.1), wds=_rates(fdp, ctx, n, 0.0),
                                   momentum=0.9)
        elif op == 1:
            F.multi_sgd_update_states(ws, gs, ms, lrs=_rates(fdp, ctx, n, 0.1),
                                      wds=_rates(fdp, ctx, n, 0.0), momentum=0.9)
        elif op == 2:
            F.multi_dcasgd_update(ws, gs, None, ms, lrs=_rates(fdp, ctx, n, 0.1),
                                  wds=_rates(fdp, ctx, n, 0.0))
        elif op in (3, 4):
            opt = fusedopt.SGD(learning_rate=0.1, momentum=0.9, aggregate_num=8)
            idx = [Key(k, ctx) if fdp.ConsumeBool() else k for k in range(n)]
            ctx.lists.append(idx)
            if op == 3:
                opt.fused_step(idx, ws, gs, ms)
            else:
                step = opt.prepare(idx, ws, gs, ms)
                ctx.mutate()
                step.step()
        elif op == 5:
            keys = [Key(k, ctx) for k in range(n)]
            ctx.lists.append(keys)
            F.bump_counts({}, keys, 0)
        else:
            ctx.lists.clear()
            opt = fusedopt._core.cpp_SGD()
            idx = [Number(k, ctx) for k in range(n)]
            ctx.lists.append(idx)
            opt.update(idx, ws, gs)
    except ALLOWED:
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
