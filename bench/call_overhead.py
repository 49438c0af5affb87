#!/usr/bin/env python3
"""call_overhead.py — per-call cost of fusedopt's Python paths that PERF.md has no row for: PyTorch
tensors through the DLPack C exchange API vs ``__dlpack__``, DCASGD on many small tensors, and the
Updater on torch parameters next to ``torch.optim.SGD(fused=True).step()``.

Each figure is the best of 5 timed loops (after warm-up) of one call, in microseconds. Run with
``OMP_NUM_THREADS=1``; torch is optional (its rows are skipped without it).

Usage: OMP_NUM_THREADS=1 python3 bench/call_overhead.py
"""

from __future__ import annotations

import math
import time

import numpy as np

import fusedopt as fo

N_TINY = 161  # ResNet-50's parameter count
ELEMS = 64


def best_us(fn, n: int) -> float:
    for _ in range(max(10, n // 10)):
        fn()
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t0) / n * 1e6)
    return min(runs)


def row(name: str, us: float) -> None:
    print(f"{name:72s} {us:9.2f} us")


def main() -> None:
    print(f"fusedopt {fo.__version__} [{fo.cpu_capability()}]; {N_TINY} tensors of {ELEMS} float32")
    ws = [np.ones(ELEMS, np.float32) for _ in range(N_TINY)]
    gs = [np.full(ELEMS, 0.1, np.float32) for _ in range(N_TINY)]
    dca = fo.DCASGD(learning_rate=0.01, momentum=0.9, use_fused_step=True)
    states = [dca.create_state(k, w) for k, w in enumerate(ws)]
    idx = list(range(N_TINY))
    row(f"DCASGD(use_fused_step=True).update, {N_TINY} NumPy tensors",
        best_us(lambda: dca.update(idx, ws, gs, states), 300))
    try:
        import torch
    except ImportError:
        print("torch not installed: torch rows skipped")
        return
    T = fo._core._testing
    w, g, m = torch.zeros(ELEMS), torch.ones(ELEMS), torch.zeros(ELEMS)
    one = lambda: fo.sgd_mom_update(w, g, m, lr=0.01, momentum=0.9)  # noqa: E731
    tw = [torch.zeros(ELEMS) for _ in range(N_TINY)]
    tg = [torch.ones(ELEMS) for _ in range(N_TINY)]
    tm = [torch.zeros(ELEMS) for _ in range(N_TINY)]
    flat = [a for trio in zip(tw, tg, tm) for a in trio]
    lrs, wds = [0.01] * N_TINY, [0.0] * N_TINY
    multi = lambda: fo.multi_sgd_mom_update(flat, lrs=lrs, wds=wds, momentum=0.9)  # noqa: E731
    for enabled in (True, False):
        was = T.set_exchange_enabled(enabled)
        how = "C exchange API" if enabled else "__dlpack__ capsules"
        row(f"sgd_mom_update on 3 torch CPU tensors ({how})", best_us(one, 20000 if enabled else 2000))
        row(f"multi_sgd_mom_update on {N_TINY} x 3 torch CPU tensors ({how})",
            best_us(multi, 500 if enabled else 30))
        T.set_exchange_enabled(was)
    params = [torch.nn.Parameter(torch.zeros(ELEMS)) for _ in range(N_TINY)]
    for p in params:
        p.grad = torch.ones(ELEMS)
    grads = [p.grad for p in params]
    upd = fo.get_updater(fo.SGD(learning_rate=0.01, momentum=0.9, wd=1e-4, aggregate_num=math.inf))
    row(f"fusedopt Updater (SGD momentum, aggregate_num=inf), {N_TINY} torch Parameters",
        best_us(lambda: upd(idx, grads, params), 1000))
    topt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4, fused=True)
    row(f"torch.optim.SGD(fused=True).step(), the same {N_TINY} Parameters", best_us(topt.step, 1000))


if __name__ == "__main__":
    main()
