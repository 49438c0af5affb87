"""Fuzz target: the array conversion and validation of the update kernels. Arbitrary dtypes, shapes,
strides (including zero and negative), offsets, read-only flags and aliasing between operands must
either update correctly or raise ``TypeError`` / ``ValueError`` with NOTHING written; never crash.

Run: ``python tests/fuzz/fuzz_arrays.py -max_total_time=30``.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    import numpy as np

    import fusedopt

DTYPES = [np.float16, np.float32, np.float64, np.int32, np.uint8, np.complex64, np.bool_]
try:
    import ml_dtypes

    DTYPES.append(ml_dtypes.bfloat16)
except ImportError:
    pass


def _array(fdp: atheris.FuzzedDataProvider, pool: np.ndarray) -> np.ndarray:
    """A view into `pool` (bytes) with fuzzed dtype, shape, strides and offset."""
    dtype = np.dtype(DTYPES[fdp.ConsumeIntInRange(0, len(DTYPES) - 1)])
    ndim = fdp.ConsumeIntInRange(0, 3)
    shape = [fdp.ConsumeIntInRange(0, 6) for _ in range(ndim)]
    strides = [fdp.ConsumeIntInRange(-3, 12) * dtype.itemsize + fdp.ConsumeIntInRange(0, 1) for _ in range(ndim)]
    offset = fdp.ConsumeIntInRange(0, 64)
    # Keep every addressed byte inside the pool (negative strides reach below the offset).
    lo = offset + sum(min(0, s) * (n - 1) for s, n in zip(strides, shape) if n > 0)
    hi = offset + sum(max(0, s) * (n - 1) for s, n in zip(strides, shape) if n > 0) + dtype.itemsize
    if lo < 0 or hi > pool.nbytes or (0 in shape):
        return np.zeros(shape, dtype)
    view = np.ndarray(shape, dtype, buffer=pool, offset=offset, strides=strides)
    if fdp.ConsumeBool():
        view.flags.writeable = False
    return view


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    pool = np.full(512, 0x3C, np.uint8)  # 0x3C3C.. is a finite value in every float dtype
    second = np.ones(512, np.uint8)
    arrays = []
    for _ in range(4):
        src = pool if fdp.ConsumeBool() else second
        arrays.append(_array(fdp, src))
    before = (pool.copy(), second.copy(), [a.copy() for a in arrays])
    op = fdp.ConsumeIntInRange(0, 4)
    kw = {"lr": 0.1, "wd": 0.01, "clip_gradient": fdp.PickValueInList([None, 1.0, float("inf")])}
    try:
        if op == 0:
            fusedopt.sgd_update(arrays[0], arrays[1], **kw)
        elif op == 1:
            fusedopt.sgd_mom_update(arrays[0], arrays[1], arrays[2], momentum=0.9, **kw)
        elif op == 2:
            fusedopt.mp_sgd_mom_update(arrays[0], arrays[1], arrays[2], arrays[3], momentum=0.9, **kw)
        elif op == 3:
            fusedopt.dcasgd_update(arrays[0], arrays[1], arrays[2], arrays[3], momentum=0.9, **kw)
        else:
            fusedopt.multi_sgd_mom_update(arrays[:3] + [arrays[3], arrays[1], arrays[2]],
                                          lrs=[0.1, 0.1], wds=[0.0, 0.0], momentum=0.9)
    except (TypeError, ValueError):
        assert np.array_equal(pool, before[0]) and np.array_equal(second, before[1]), \
            "a rejected call wrote to its arrays"


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
