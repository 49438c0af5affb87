#!/usr/bin/env python3
"""bench_torch_optim.py — ``opt.step()`` of ``fusedopt.torch.SGD`` against ``torch.optim.SGD(fused=True)``
and ``torch.optim.SGD(foreach=True)`` on the same parameters and gradients.

Cases: the ResNet-50 and BERT-base parameter lists (param_shapes.json) and 161 tiny tensors (64
floats each), float32, momentum 0.9, weight decay 1e-4. The three optimizers step the same
``nn.Parameter`` objects (each keeps its own momentum buffers), interleaved: every round times
``--steps`` calls of each, in a rotated order, after warm-up. Reported: the median time per step of
each, and the median over rounds of fusedopt's time divided by each peer's (a ratio measured side by
side, so a busy machine moves both sides). Targets: <= 1.0x fused on the lists, <= 0.5x fused on the
tiny tensors.

Usage: OMP_NUM_THREADS=1 python3 bench/bench_torch_optim.py [--rounds 7] [--steps N] [--cases ...]
       [--cpu-capability avx2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

import fusedopt
import fusedopt.torch as fot

HERE = os.path.dirname(os.path.abspath(__file__))


def shapes_of(case: str) -> list[list[int]]:
    if case == "tiny161":
        return [[64]] * 161
    with open(os.path.join(HERE, "param_shapes.json")) as f:
        return json.load(f)[case]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", nargs="+", default=["tiny161", "resnet50", "bert_base"])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=0, help="steps per timed block (default by case)")
    ap.add_argument("--cpu-capability", default=None, help="force fusedopt's kernel variant")
    args = ap.parse_args()
    if args.cpu_capability:
        fusedopt.set_cpu_capability(args.cpu_capability)
    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads:
        torch.set_num_threads(threads)
    print(f"fusedopt {fusedopt.__version__} [{fusedopt.cpu_capability()}], torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    print(f"{'case':10s} {'fusedopt':>12s} {'torch fused':>12s} {'foreach':>12s} "
          f"{'vs fused':>9s} {'vs foreach':>10s}")
    for case in args.cases:
        torch.manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(s)) for s in shapes_of(case)]
        for p in params:
            p.grad = torch.randn_like(p) * 1e-3
        hp = {"lr": 1e-3, "momentum": 0.9, "weight_decay": 1e-4}
        opts = {
            "fusedopt": fot.SGD(params, **hp),
            "fused": torch.optim.SGD(params, fused=True, **hp),
            "foreach": torch.optim.SGD(params, foreach=True, **hp),
        }
        steps = args.steps or (200 if case == "tiny161" else 3)
        for o in opts.values():
            for _ in range(max(2, steps // 4)):
                o.step()
        names = list(opts)
        times: dict[str, list[float]] = {n: [] for n in names}
        for r in range(args.rounds):
            order = names[r % 3:] + names[:r % 3]
            for n in order:
                step = opts[n].step
                t0 = time.perf_counter()
                for _ in range(steps):
                    step()
                times[n].append((time.perf_counter() - t0) / steps)
        med = {n: statistics.median(v) for n, v in times.items()}
        r_fused = statistics.median(a / b for a, b in zip(times["fusedopt"], times["fused"]))
        r_foreach = statistics.median(a / b for a, b in zip(times["fusedopt"], times["foreach"]))
        unit, k = ("us", 1e6) if case == "tiny161" else ("ms", 1e3)
        print(f"{case:10s} {med['fusedopt'] * k:9.1f} {unit} {med['fused'] * k:9.1f} {unit} "
              f"{med['foreach'] * k:9.1f} {unit} {r_fused:9.3f} {r_foreach:10.3f}", flush=True)
        del opts, params


if __name__ == "__main__":
    main()
