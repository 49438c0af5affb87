"""Fuzz target: the DLPack consumer. Truthful producers (every addressed byte inside a real buffer)
with fuzzed shape, strides (NULL, zero, negative, non-unit), byte_offset, dtype code/bits/lanes,
device, capsule kind and version, flags, old producers without max_version and NULL deleters. Each
call must update correctly or raise TypeError / ValueError / BufferError (RuntimeError only for a CUDA
device on a machine without one) with nothing written, never crash, and never call a deleter twice.

Run: ``python tests/fuzz/fuzz_dlpack.py -max_total_time=30``.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    import numpy as np

    import fusedopt

make_tensor = fusedopt._core._testing.make_tensor
DTYPES = [(2, 32, 1), (2, 64, 1), (2, 16, 1), (4, 16, 1), (2, 32, 2), (0, 32, 1), (1, 8, 1), (6, 8, 1),
          (5, 64, 1), (2, 8, 1), (7, 8, 1)]
DEVICES = [(1, 0), (3, 0), (13, 0), (2, 0), (10, 0), (8, 1)]


def _producer(fdp: atheris.FuzzedDataProvider, pool: np.ndarray):
    code, bits, lanes = DTYPES[fdp.ConsumeIntInRange(0, len(DTYPES) - 1)]
    item = max(1, bits // 8) * lanes
    ndim = fdp.ConsumeIntInRange(0, 3)
    shape = [fdp.ConsumeIntInRange(0, 5) for _ in range(ndim)]
    strides = None
    if fdp.ConsumeBool():
        strides = [fdp.ConsumeIntInRange(-4, 8) for _ in range(ndim)]
    offset = fdp.ConsumeIntInRange(0, 96)
    if strides is None:  # row-major extent
        lo, hi = offset, offset + item * int(np.prod(shape)) if 0 not in shape else offset
    else:
        lo = offset + sum(min(0, s) * (n - 1) for s, n in zip(strides, shape) if n > 0) * item
        hi = offset + (sum(max(0, s) * (n - 1) for s, n in zip(strides, shape) if n > 0) + 1) * item
    if lo < 0 or hi > pool.nbytes:  # an untruthful producer: nothing a consumer could detect
        shape, strides, offset = [0] * ndim, None, 0
    return make_tensor(
        shape, base=pool, strides=strides, dtype=(code, bits, lanes),
        device=DEVICES[fdp.ConsumeIntInRange(0, len(DEVICES) - 1)] if fdp.ConsumeIntInRange(0, 3) == 0 else (1, 0),
        byte_offset=offset, versioned=fdp.ConsumeBool(),
        version=(fdp.ConsumeIntInRange(0, 2), fdp.ConsumeIntInRange(0, 3)),
        flags=fdp.ConsumeIntInRange(0, 7), accepts_max_version=fdp.ConsumeBool(),
        null_deleter=fdp.ConsumeBool(),
        capsule_name=None if fdp.ConsumeIntInRange(0, 7) else "not_a_dltensor",
    )


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    pools = [np.full(256, 0x3C, np.uint8), np.full(256, 0x3C, np.uint8)]
    producers = [_producer(fdp, pools[fdp.ConsumeIntInRange(0, 1)]) for _ in range(3)]
    before = [p.copy() for p in pools]
    try:
        fusedopt.sgd_mom_update(producers[0], producers[1], producers[2], lr=0.1, momentum=0.9)
    except (TypeError, ValueError, BufferError):
        assert all(np.array_equal(a, b) for a, b in zip(pools, before)), "a rejected call wrote"
    except RuntimeError:  # a CUDA-device tensor on a machine without a GPU
        assert all(np.array_equal(a, b) for a, b in zip(pools, before)), "a failed call wrote"
    for p in producers:
        assert p.deleter_calls <= len(p.call_kwargs), "a deleter ran more than once per capsule"


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
