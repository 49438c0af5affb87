"""A tensor of more than 2**31 elements updates correctly (64-bit indexing on the CPU).

Needs about 8.6 GB of memory (two float16 arrays of 2**31 + 7 elements); skipped when less is free.
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers import import_fusedopt

fusedopt = import_fusedopt()

N = 2**31 + 7


def _available_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@pytest.mark.skipif(_available_bytes() < 12 * 2**30, reason="needs ~12 GiB of free memory")
def test_sgd_update_beyond_2_pow_31_elements():
    w = np.empty(N, np.float16)
    g = np.empty(N, np.float16)
    # A pattern that differs near the start, around 2**31 and at the very end.
    w.fill(1.0)
    g.fill(0.5)
    tail = slice(2**31 - 3, N)
    w[tail] = np.arange(N - (2**31 - 3), dtype=np.float16)
    g[-1] = -2.0
    probes = np.array([0, 1, 2**31 - 4, 2**31 - 3, 2**31 - 1, 2**31, 2**31 + 1, N - 2, N - 1])
    w0, g0 = w[probes].astype(np.float64), g[probes].astype(np.float64)
    fusedopt.sgd_update(w, g, lr=0.25, wd=0.125)
    expected = (w0 - 0.25 * (g0 + 0.125 * w0)).astype(np.float16)
    np.testing.assert_array_equal(w[probes], expected)
    # Every element was written exactly once: the untouched region holds one value.
    assert np.all(w[1000:2000] == expected[0])
