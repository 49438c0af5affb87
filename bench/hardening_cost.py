#!/usr/bin/env python3
"""hardening_cost.py — per-call cost of the checks against hostile callers (bench/RESULTS.md §7): a
prepared step (which re-checks every array's memory before each step) and one aggregated call, over 161
parameters of 64 float32 with momentum, as NumPy arrays and as CPU torch tensors (torch optional).

Each figure is the best of 15 loops of 300 calls, in microseconds. Run with ``OMP_NUM_THREADS=1``.

Usage: OMP_NUM_THREADS=1 python3 bench/hardening_cost.py
"""

from __future__ import annotations

import timeit

import numpy as np

import fusedopt

N, ELEMS = 161, 64


def best_us(fn, n: int = 300) -> float:
    return min(timeit.repeat(fn, number=n, repeat=15)) / n * 1e6


def rows(kind: str, weights: list, grads: list) -> None:
    opt = fusedopt.SGD(learning_rate=0.1, momentum=0.9)
    states = [opt.create_state(i, w) for i, w in enumerate(weights)]
    step = opt.prepare(list(range(N)), weights, grads, states)
    flat = [a for trio in zip(weights, grads, states) for a in trio]
    lrs, wds = [0.1] * N, [0.0] * N
    print(f"prepared step, {N} {kind} parameters: {best_us(step.step):8.2f} us")
    multi = lambda: fusedopt.multi_sgd_mom_update(flat, lrs=lrs, wds=wds, momentum=0.9)  # noqa: E731
    print(f"multi_sgd_mom_update, {N} x 3 {kind} arrays: {best_us(multi):8.2f} us")


def main() -> None:
    print(f"fusedopt {fusedopt.__version__} [{fusedopt.cpu_capability()}]")
    rows("NumPy", [np.ones(ELEMS, np.float32) for _ in range(N)],
         [np.ones(ELEMS, np.float32) for _ in range(N)])
    try:
        import torch
    except ImportError:
        print("torch not installed: torch rows skipped")
        return
    rows("torch", [torch.ones(ELEMS) for _ in range(N)], [torch.ones(ELEMS) for _ in range(N)])


if __name__ == "__main__":
    main()
