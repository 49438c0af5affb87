"""Workers for :class:`RayParameterServer`: a loop that pulls, computes and pushes, two models, and
:func:`run_workers`, which starts M of them as Ray tasks and gathers their metrics.

A worker model is any picklable object made by ``factory(worker, seed)`` with
``gradients(weights) -> (grads, loss)``: ``weights`` are the pulled (read-only) arrays, ``grads`` one
array per parameter with the parameter's shape and dtype. Two are provided, both on scikit-learn's
digits (``fusedopt.distributed.experiment.load_data``):

* :class:`DigitsMLPWorker`: NumPy, the 64-64-10 tanh MLP of ``fusedopt.distributed.experiment``.
* :class:`DigitsCNNWorker`: PyTorch, a small CNN trained with autograd; its gradients are handed to
  ``push`` as NumPy views of the torch CPU tensors (no copy on the worker's side).
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Sequence

import numpy as np
import ray

from .experiment import evaluate, init_params, load_data, loss_and_grad

__all__ = ["DigitsCNNWorker", "DigitsMLPWorker", "cnn_evaluate", "cnn_init_params",
           "mlp_init_params", "mlp_evaluate", "run_workers", "worker_loop"]


# ------------------------------------------------------------------------------------ NumPy MLP
def mlp_init_params(seed: int) -> list[np.ndarray]:
    """The MLP's initial parameters (float64), as ``experiment.init_params``."""
    return init_params(seed)


def mlp_evaluate(weights: Sequence[np.ndarray]) -> float:
    """Test error of the MLP in percent."""
    data = load_data()
    return evaluate(weights, data.x_test, data.y_test)[1]


class DigitsMLPWorker:
    """Minibatches of ``batch`` drawn from a stream seeded by ``(seed, worker)``; the gradient of the
    mean cross-entropy (``experiment.loss_and_grad``)."""

    def __init__(self, worker: int, seed: int, batch: int = 32) -> None:
        self.data = load_data()
        self.rng = np.random.default_rng([seed, worker])
        self.batch = batch

    def gradients(self, weights: Sequence[np.ndarray]) -> tuple[list[np.ndarray], float]:
        rows = self.rng.integers(0, len(self.data.y_train), self.batch)
        loss, grads = loss_and_grad(weights, self.data.x_train[rows], self.data.y_train[rows])
        return grads, loss


# ---------------------------------------------------------------------------------- PyTorch CNN
def _cnn(seed: int) -> Any:
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),     # 8x8 -> 4x4
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),    # 4x4 -> 2x2
        nn.Flatten(), nn.Linear(16 * 2 * 2, 10))


def cnn_init_params(seed: int) -> list[np.ndarray]:
    """The CNN's initial parameters as float32 NumPy arrays (torch's default initialisation)."""
    return [p.detach().numpy().copy() for p in _cnn(seed).parameters()]


def _images(x: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32).reshape(-1, 1, 8, 8))


def _load_weights(model: Any, weights: Sequence[np.ndarray]) -> None:
    # One copy from the pulled (read-only) arrays into the model's own tensors, through NumPy views.
    for p, w in zip(model.parameters(), weights):
        p.detach().numpy()[...] = w


def cnn_evaluate(weights: Sequence[np.ndarray]) -> float:
    """Test error of the CNN in percent."""
    import torch

    data = load_data()
    model = _cnn(0)
    _load_weights(model, weights)
    with torch.no_grad():
        pred = model(_images(data.x_test)).argmax(dim=1).numpy()
    return 100.0 * float(np.mean(pred != data.y_test))


class DigitsCNNWorker:
    """The CNN on digits with autograd, one torch thread per worker. ``gradients`` returns NumPy
    views of the parameters' ``.grad`` tensors (torch CPU memory, not copied): ``push`` serialises
    them into Ray's object store before the next backward pass replaces them."""

    def __init__(self, worker: int, seed: int, batch: int = 32) -> None:
        import torch

        torch.set_num_threads(1)
        self.torch = torch
        self.model = _cnn(seed)
        data = load_data()
        self.x = _images(data.x_train)
        self.y = torch.from_numpy(data.y_train)
        self.rng = np.random.default_rng([seed, worker])
        self.batch = batch

    def gradients(self, weights: Sequence[np.ndarray]) -> tuple[list[np.ndarray], float]:
        torch = self.torch
        _load_weights(self.model, weights)
        rows = torch.from_numpy(self.rng.integers(0, len(self.y), self.batch))
        self.model.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(self.model(self.x[rows]), self.y[rows])
        loss.backward()
        return [p.grad.numpy() for p in self.model.parameters()], float(loss)


# ------------------------------------------------------------------------------------ the loop
class _Barrier:
    """Counts the workers that are ready, so that all start training together (Ray starts worker
    processes one by one; without it the first would train alone)."""

    def __init__(self) -> None:
        self.ready = 0

    def arrive(self) -> None:
        self.ready += 1

    def count(self) -> int:
        return self.ready


def _wait_for_all(barrier: Any, n: int, timeout: float) -> None:
    ray.get(barrier.arrive.remote())
    deadline = time.monotonic() + timeout
    while ray.get(barrier.count.remote()) < n and time.monotonic() < deadline:
        time.sleep(0.01)


def worker_loop(server: Any, worker: int, factory: Callable[[int, int], Any], steps: int,
                seed: int = 0, wait_timeout: float = 120.0,
                barrier: tuple[Any, int] | None = None) -> dict[str, Any]:
    """Pull, then ``steps`` times: compute, push and pull the next weights (asynchronous: in one
    round trip, ``push_and_pull``; synchronous: push, wait for the round, pull). Returns the worker's
    metrics: losses and the seconds spent pulling, computing, pushing (asynchronous: push and pull
    together) and waiting; ``seconds`` counts from the start of training. ``barrier``: ``(actor,
    n)``, wait (at most ``wait_timeout``) until n workers have built their model."""
    model = factory(worker, seed)
    if barrier is not None:
        _wait_for_all(barrier[0], barrier[1], wait_timeout)
    t = {"pull": 0.0, "compute": 0.0, "push": 0.0, "wait": 0.0}
    losses = []
    start = time.perf_counter()
    t0 = time.perf_counter()
    weights, version = server.pull(worker)
    t["pull"] += time.perf_counter() - t0
    for step in range(steps):
        t1 = time.perf_counter()
        grads, loss = model.gradients(weights)
        del weights     # releases the pulled arrays in the object store
        t2 = time.perf_counter()
        last = step == steps - 1
        if server.synchronous:
            # The round must be complete before the next pull.
            server.push(worker, grads)
            t3 = time.perf_counter()
            server.wait_version(version + 1, timeout=wait_timeout)
            t4 = time.perf_counter()
            weights, version = (None, version) if last else server.pull(worker)
        elif last:
            server.push(worker, grads)
            t3 = t4 = time.perf_counter()
        else:
            # Asynchronous: the push and the next pull in one round trip per shard.
            weights, version = server.push_and_pull(worker, grads)
            t3 = t4 = time.perf_counter()
        t5 = time.perf_counter()
        t["compute"] += t2 - t1
        t["push"] += t3 - t2
        t["wait"] += t4 - t3
        t["pull"] += t5 - t4
        losses.append(loss)
    return {"worker": worker, "steps": steps, "losses": losses,
            "seconds": time.perf_counter() - start, "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
            **{f"{k}_seconds": v for k, v in t.items()}}


def run_workers(server: Any, factory: Callable[[int, int], Any], steps: int, *,
                num_workers: int | None = None, seed: int = 0,
                worker_options: dict[str, Any] | None = None, progress: bool = False,
                timeout: float | None = None) -> list[dict[str, Any]]:
    """Starts ``num_workers`` (default: the server's) workers as Ray tasks running
    :func:`worker_loop`, waits for all of them and returns their metrics, one dict per worker.

    The workers start training together, when all have built their model (each entry's ``seconds``
    counts from there). A worker that fails (an exception, or its process dies) does not stop the
    others (one that fails before it is ready holds them back at most 120 s): its entry
    holds ``error`` (the exception's type and message) instead of metrics. ``worker_options`` go to
    the tasks' ``.options`` (default ``num_cpus=0``, so all M workers run at once, as synchronous
    training needs; e.g. ``resources={"worker_node": 1}`` places them on the nodes offering it).
    ``progress`` shows a bar of the server's version (tqdm when installed). ``timeout`` (seconds)
    bounds the whole run: unfinished workers are cancelled and reported with ``error``.
    """
    m = server.num_workers if num_workers is None else num_workers
    task = ray.remote(max_retries=0)(worker_loop).options(**({"num_cpus": 0, **(worker_options or {})}))
    # All workers start training together, once each has built its model.
    barrier = ray.remote(num_cpus=0)(_Barrier).remote()
    refs = [task.remote(server, k, factory, steps, seed, 120.0, (barrier, m)) for k in range(m)]
    total = steps if server.synchronous else steps * m
    bar = _Progress(total, "updates") if progress else None
    deadline = None if timeout is None else time.monotonic() + timeout
    pending = list(refs)
    while pending:
        _, pending = ray.wait(pending, num_returns=len(pending), timeout=0.25)
        if bar is not None:
            bar.update(server.version())
        if deadline is not None and time.monotonic() > deadline:
            for r in pending:
                ray.cancel(r, force=True)
            break
    if bar is not None:
        bar.close()
    ray.kill(barrier)
    out = []
    for k, r in enumerate(refs):
        try:
            out.append(ray.get(r, timeout=0 if r in pending else None))
        except Exception as e:  # noqa: BLE001 - a worker's failure is reported, not raised
            cause = getattr(e, "cause", None) or e
            out.append({"worker": k, "error": f"{type(cause).__name__}: {cause}"})
    return out


class _Progress:
    """tqdm when installed, else a one-line text bar on stdout."""

    def __init__(self, total: int, unit: str) -> None:
        self.total, self.n = total, 0
        try:
            from tqdm import tqdm
        except ImportError:
            self.bar = None
        else:
            self.bar = tqdm(total=total, unit=unit, leave=False)
        self.start = time.monotonic()

    def update(self, n: int) -> None:
        n = min(n, self.total)
        if self.bar is not None:
            self.bar.update(n - self.n)
        else:
            print(f"\r  {n}/{self.total} updates, {time.monotonic() - self.start:.1f} s", end="",
                  flush=True)
        self.n = n

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        else:
            print()
