"""python -m fusedopt.demo: train a small MLP on generated data with SGD and with DCASGD.

The data is a three-armed spiral (made here, no download). A 2-64-64-3 ReLU network is trained with
softmax cross-entropy in NumPy; fusedopt performs every parameter update in place through an
Updater, with all six tensors in one aggregated kernel call for both optimizers. The demo prints
loss and accuracy per epoch for each optimizer, the time per optimizer step over all parameters,
then, on one large tensor, the effective memory bandwidth of the fused updates next to figures
measured in the same process to compare it with: a plain NumPy copy of the same size (one thread)
and, when torch is installed, torch's SGD with momentum on the same buffers.
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import numpy as np

import fusedopt


def make_spiral(n_per_class: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for c in range(3):
        r = np.linspace(0.05, 1.0, n_per_class)
        t = np.linspace(c * 2 * np.pi / 3, c * 2 * np.pi / 3 + 3.5, n_per_class)
        t += rng.normal(0, 0.15, n_per_class)
        xs.append(np.stack([r * np.cos(t), r * np.sin(t)], axis=1))
        ys.append(np.full(n_per_class, c))
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys)


def init_params(rng: np.random.Generator, sizes: list[int]) -> list[np.ndarray]:
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        params.append((rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)).astype(np.float32))
        params.append(np.zeros(fan_out, np.float32))
    return params


def forward_backward(params: list[np.ndarray], x: np.ndarray, y: np.ndarray
                     ) -> tuple[float, float, list[np.ndarray]]:
    """Loss, accuracy and gradients (summed over the batch: rescale_grad=1/batch does the mean)."""
    acts, h = [x], x
    n_layers = len(params) // 2
    for i in range(n_layers):
        h = h @ params[2 * i] + params[2 * i + 1]
        if i < n_layers - 1:
            h = np.maximum(h, 0)
        acts.append(h)
    logits = acts[-1] - acts[-1].max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    loss = float(-np.log(p[np.arange(len(y)), y] + 1e-12).mean())
    acc = float((p.argmax(axis=1) == y).mean())
    d = p
    d[np.arange(len(y)), y] -= 1
    grads: list[np.ndarray] = [np.empty(0)] * len(params)
    for i in reversed(range(n_layers)):
        grads[2 * i] = (acts[i].T @ d).astype(np.float32)
        grads[2 * i + 1] = d.sum(axis=0).astype(np.float32)
        if i > 0:
            d = (d @ params[2 * i].T) * (acts[i] > 0)
    return loss, acc, grads


def train(name: str, opt: fusedopt.Optimizer, x: np.ndarray, y: np.ndarray, epochs: int,
          batch: int, seed: int) -> tuple[float, int]:
    rng = np.random.default_rng(seed)
    params = init_params(np.random.default_rng(seed), [2, 64, 64, 3])
    updater = fusedopt.get_updater(opt)
    indices = list(range(len(params)))
    update_time, steps = 0.0, 0
    print(f"\n{name}: {type(opt).__name__}(learning_rate={opt.learning_rate}, "
          f"momentum={getattr(opt, 'momentum', 0)}, wd={opt.wd}) on {sum(p.size for p in params)} parameters")
    print(f"{'epoch':>5} {'loss':>8} {'accuracy':>9}")
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(x))
        losses, accs = [], []
        for start in range(0, len(x), batch):
            b = order[start:start + batch]
            opt.rescale_grad = 1.0 / len(b)
            loss, acc, grads = forward_backward(params, x[b], y[b])
            t0 = time.perf_counter()
            updater(indices, grads, params)
            update_time += time.perf_counter() - t0
            steps += 1
            losses.append(loss)
            accs.append(acc)
        print(f"{epoch:>5} {np.mean(losses):>8.4f} {np.mean(accs):>9.3f}")
    us = 1e6 * update_time / steps
    print(f"optimizer step: {us:.1f} us for {len(params)} tensors ({steps} steps, "
          f"num_update={opt.num_update}, final lr={opt.learning_rate:.4g})")
    return us, steps


def _interleaved_medians(fns: list[Callable[[], object]], reps: int) -> list[float]:
    """Median seconds per call of each fn, timed round-robin so that every fn sees the same machine
    load (the figures are compared with each other)."""
    for fn in fns:
        fn()  # warm-up: page faults, thread start
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [float(np.median(ts)) for ts in times]


def _torch_sgd(w: np.ndarray, g: np.ndarray) -> tuple[str, Callable[[], object]] | None:
    """torch's SGD with momentum stepping the same NumPy buffers (shared memory), or None without
    torch. Uses the fused CPU implementation where this torch has one."""
    try:
        import torch
    except ImportError:
        return None
    p = torch.nn.Parameter(torch.from_numpy(w), requires_grad=False)
    p.grad = torch.from_numpy(g)
    for kind in ({"fused": True}, {"foreach": False}):
        try:
            opt = torch.optim.SGD([p], lr=1e-3, momentum=0.9, **kind)
            opt.step()
        except (RuntimeError, TypeError, ValueError):
            continue
        name = "fused" if "fused" in kind else "for-loop"
        return f"torch SGD({name}) momentum", opt.step
    return None


def bandwidth(n: int, reps: int) -> None:
    """Effective bandwidth of fused SGD-momentum and DCASGD updates on n float32 elements, next to
    figures measured in the same process: a NumPy copy of n float32 (8 bytes/element moved, one
    thread) and, when torch is installed, torch's SGD with momentum on the same buffers."""
    rng = np.random.default_rng(0)
    w, g = rng.standard_normal(n, np.float32), rng.standard_normal(n, np.float32)
    m, prev = np.zeros(n, np.float32), w.copy()
    copy_dst = np.empty_like(w)
    rows: list[tuple[str, int, Callable[[], object]]] = [
        ("fusedopt sgd_mom_update", 20, lambda: fusedopt.sgd_mom_update(w, g, m, lr=1e-3, momentum=0.9)),
        ("fusedopt dcasgd_update", 28, lambda: fusedopt.dcasgd_update(w, g, m, prev, lr=1e-3, momentum=0.9)),
        ("numpy copy (1 thread)", 8, lambda: np.copyto(copy_dst, g)),
    ]
    torch_row = _torch_sgd(w, g)
    if torch_row is not None:
        rows.append((torch_row[0], 20, torch_row[1]))
    print(f"{'':>28} {'ms':>7} {'GB/s':>6}   (bytes moved per element; median of {reps}, interleaved)")
    medians = _interleaved_medians([fn for _, _, fn in rows], reps)
    for (label, bytes_per, _), t in zip(rows, medians):
        print(f"{label:>28} {t * 1e3:7.2f} {bytes_per * n / t / 1e9:6.1f}   ({bytes_per} B)")
    if torch_row is None:
        print(f"{'':>28} (torch is not installed: no torch row)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="fewer epochs and a smaller bandwidth test")
    args = ap.parse_args(argv)
    epochs = 3 if args.quick else args.epochs
    x, y = make_spiral(1000, np.random.default_rng(args.seed))
    print(f"fusedopt {fusedopt.__version__} (CPU kernels: {fusedopt.cpu_capability()}, "
          f"threads: {fusedopt._core.cpu_num_threads()})")
    print(f"data: {len(x)} points of a 3-armed spiral, 2 features, 3 classes")
    schedule = fusedopt.lr_scheduler.CosineScheduler(
        max_update=epochs * ((len(x) + args.batch - 1) // args.batch), base_lr=0.2, final_lr=0.01)
    sgd = fusedopt.SGD(momentum=0.9, wd=1e-4, lr_scheduler=schedule, aggregate_num=np.inf)
    train("SGD with momentum, cosine schedule, all 6 tensors in one aggregated kernel call",
          sgd, x, y, epochs, args.batch, args.seed)
    dca = fusedopt.DCASGD(learning_rate=0.1, momentum=0.9, lamda=0.04, wd=1e-4, use_fused_step=True,
                          aggregate_num=np.inf)
    train("DCASGD (delay-compensated), all 6 tensors in one aggregated kernel call",
          dca, x, y, epochs, args.batch, args.seed)
    n = 4_000_000 if args.quick else 16_000_000
    print(f"\nupdate throughput on one tensor of {n // 1_000_000}M float32 (memory-bound: compare "
          "GB/s with the copy and torch rows)")
    bandwidth(n, 5 if args.quick else 15)


if __name__ == "__main__":
    main()
