"""Concurrent updates of different parameters from several Python threads (the GIL is released while
kernels run) give exactly the results of running them one after another."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from helpers import import_fusedopt

fusedopt = import_fusedopt()

N_THREADS = 4
STEPS = 6


def _make(seed: int, size: int, dtype: type) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(size).astype(dtype), rng.standard_normal(size // 3 + 1).astype(dtype)]
    grads = [[rng.standard_normal(p.shape).astype(dtype) for p in params] for _ in range(STEPS)]
    return params, grads


def _train(kind: str, params: list[np.ndarray], grads: list[list[np.ndarray]]) -> None:
    if kind == "sgd":
        opt: fusedopt.Optimizer = fusedopt.SGD(learning_rate=0.05, momentum=0.9, wd=1e-3, aggregate_num=2)
    elif kind == "dcasgd":
        opt = fusedopt.DCASGD(learning_rate=0.05, momentum=0.9, use_fused_step=True)
    else:
        opt = fusedopt.SGD(learning_rate=0.05, momentum=0.9, clip_gradient=0.5)
    updater = fusedopt.get_updater(opt)
    for step_grads in grads:
        updater([0, 1], step_grads, params)


@pytest.mark.parametrize("kind", ["sgd", "dcasgd", "sgd_clip"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threads_equal_sequential(kind, dtype):
    size = 300_001  # large enough that kernels take the OpenMP path and run long enough to overlap
    jobs = [_make(seed, size, dtype) for seed in range(N_THREADS)]
    expected = [([p.copy() for p in params], grads) for params, grads in jobs]
    for params, grads in expected:
        _train(kind, params, grads)

    errors: list[BaseException] = []
    barrier = threading.Barrier(N_THREADS)

    def worker(params: list[np.ndarray], grads: list[list[np.ndarray]]) -> None:
        try:
            barrier.wait()
            _train(kind, params, grads)
        except BaseException as exc:  # reported below; a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for (params, _), (want, _) in zip(jobs, expected):
        for got, exp in zip(params, want):
            np.testing.assert_array_equal(got, exp)


def test_functional_kernels_from_threads_on_disjoint_slices_of_one_buffer():
    """Threads updating disjoint, contiguous rows of one array never disturb each other."""
    rng = np.random.default_rng(5)
    w = rng.standard_normal((N_THREADS, 200_003)).astype(np.float32)
    g = rng.standard_normal(w.shape).astype(np.float32)
    m = np.zeros_like(w)
    w_seq, m_seq = w.copy(), m.copy()
    for k in range(N_THREADS):
        for _ in range(STEPS):
            fusedopt.sgd_mom_update(w_seq[k], g[k], m_seq[k], lr=0.1, momentum=0.9)

    def worker(k: int) -> None:
        for _ in range(STEPS):
            fusedopt.sgd_mom_update(w[k], g[k], m[k], lr=0.1, momentum=0.9)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_array_equal(w, w_seq)
    np.testing.assert_array_equal(m, m_seq)
