"""Independent float64 NumPy oracle of the parameter server (ASGD, SSGD, DC-ASGD as in the paper
and in MXNet's form), written from the specification for the tests. It never imports fusedopt.

``RefServer`` mirrors the server's protocol (``pull`` / ``push``) on float64 copies of the
parameters. With ``store`` set to a dtype, every stored value (weight, momentum, mean square,
previous weight) is rounded to it after each update, as the kernels store them; the arithmetic of
one update is float64.

The rule of one update with gradient ``g`` (a worker's own, or the average of a synchronous round)::

    r = clip(rescale_grad * g, c) + wd * w
    SGD:             d = r
    DC-ASGD:         adaptive: ms = ms_decay * ms + (1 - ms_decay) * r * r   (first)
                               lam = lamda / sqrt(ms + eps)          else lam = lamda
                     d = r + lam * r * r * (w - b)
                     b = the weight the pushing worker last pulled ("worker"), or the weight before
                         the last update, initially w itself ("previous")
    momentum:    m = mu * m - lr * d ; w = w + m        else w = w - lr * d
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def _clip(x: np.ndarray, c: float | None) -> np.ndarray:
    if c is None:
        return x
    return np.where(x > c, c, np.where(x < -c, -c, x))


class RefServer:
    def __init__(self, params: Sequence[Any], num_workers: int, *, rule: str = "sgd",
                 backups: str = "worker", synchronous: bool = False, lr: float = 0.1,
                 momentum: float = 0.0, wd: float = 0.0, rescale_grad: float = 1.0,
                 clip_gradient: float | None = None, lamda: float = 0.04, adaptive: bool = False,
                 ms_decay: float = 0.95, eps: float = 1e-7, store: Any = None) -> None:
        assert rule in ("sgd", "dcasgd") and backups in ("worker", "previous")
        self.w = [np.array(p, dtype=np.float64) for p in params]
        self.m = num_workers
        self.rule, self.backups, self.synchronous = rule, backups, synchronous
        self.lr, self.mu, self.wd, self.rg, self.c = lr, momentum, wd, rescale_grad, clip_gradient
        self.lamda, self.adaptive, self.ms_decay, self.eps = lamda, adaptive, ms_decay, eps
        self.store = store
        self.mom = [np.zeros_like(w) for w in self.w]
        self.ms = [np.zeros_like(w) for w in self.w]
        self.prev = [w.copy() for w in self.w]
        self.bak: list[list[np.ndarray] | None] = [None] * num_workers
        self.pulled: list[int | None] = [None] * num_workers
        self.version = 0
        self.round: dict[int, list[np.ndarray]] = {}
        self.staleness: list[int] = []

    def _round(self, a: np.ndarray) -> np.ndarray:
        """``a`` rounded to the storage dtype (through float32 for 16-bit ones), back in float64."""
        if self.store is None:
            return a
        dt = np.dtype(self.store)
        if dt.itemsize < 4:
            a = a.astype(np.float32)
        return a.astype(dt).astype(np.float64)

    def pull(self, worker: int) -> tuple[list[np.ndarray], int]:
        self.bak[worker] = [w.copy() for w in self.w]
        self.pulled[worker] = self.version
        return [w.copy() for w in self.w], self.version

    def push(self, worker: int, grads: Sequence[Any]) -> int:
        assert self.pulled[worker] is not None
        self.staleness.append(self.version - self.pulled[worker])
        grads = [np.array(g, dtype=np.float64) for g in grads]
        if self.synchronous:
            assert worker not in self.round
            self.round[worker] = grads
            if len(self.round) < self.m:
                return self.version
            grads = [sum(gs[i] for gs in self.round.values()) / self.m
                     for i in range(len(self.w))]
            self.round = {}
        for i, g in enumerate(grads):
            w = self.w[i]
            r = _clip(self.rg * g, self.c) + self.wd * w
            d = r
            if self.rule == "dcasgd":
                b = self.bak[worker][i] if self.backups == "worker" else self.prev[i]
                lam = self.lamda
                if self.adaptive:
                    self.ms[i] = self._round(self.ms_decay * self.ms[i] + (1 - self.ms_decay) * r * r)
                    lam = self.lamda / np.sqrt(self.ms[i] + self.eps)
                d = r + lam * r * r * (w - b)
                self.prev[i] = w.copy()
            if self.mu != 0.0:
                self.mom[i] = self._round(self.mu * self.mom[i] - self.lr * d)
                self.w[i] = self._round(w + self.mom[i])
            else:
                self.w[i] = self._round(w - self.lr * d)
        self.version += 1
        return self.version

