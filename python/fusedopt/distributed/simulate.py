"""``simulate``: a deterministic event simulation of asynchronous workers over a ParameterServer."""

from __future__ import annotations

import heapq
import math
import numbers
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .server import ParameterServer

__all__ = ["SimulationResult", "simulate"]

DELAYS = ("staggered", "exponential")

GradFn = Callable[[int, list, int, np.random.Generator], "tuple[float | None, Sequence[Any]]"]


@dataclass
class SimulationResult:
    """What :func:`simulate` measured, one entry per push in the order the server received them.

    ``workers``, ``jobs`` (the gradient's number, in the order computations started),
    ``staleness`` (updates applied between the worker's pull and this push), ``versions`` (the
    server's version after the push), ``times`` (simulated time of the push, in units of the mean
    compute time), ``losses`` (what ``grad_fn`` returned; NaN for None). ``sim_time``: simulated
    time of the last push; ``wall_seconds``: real time the simulation took; ``stats``: the server's
    :meth:`~fusedopt.distributed.ParameterServer.stats` at the end.
    """

    workers: np.ndarray
    jobs: np.ndarray
    staleness: np.ndarray
    versions: np.ndarray
    times: np.ndarray
    losses: np.ndarray
    sim_time: float
    wall_seconds: float
    stats: dict[str, Any] = field(default_factory=dict)


def simulate(server: ParameterServer, grad_fn: GradFn, num_gradients: int, *,
             delays: str = "staggered", seed: int = 0,
             on_push: Callable[[int, ParameterServer], None] | None = None) -> SimulationResult:
    """Runs ``server.num_workers`` simulated workers, each looping pull -> compute -> push, until
    ``num_gradients`` gradients have been computed and pushed, and returns what happened.

    ``grad_fn(worker, weights, job, rng) -> (loss, grads)`` computes one gradient: ``weights`` are
    the arrays the worker pulled, ``job`` = 0, 1, 2, ... numbers the gradients in the order their
    computations start (a data loader can map it to a minibatch), ``rng`` is a NumPy Generator
    seeded from ``(seed, job)`` only; ``loss`` is a float or None, ``grads`` one array per parameter.

    Compute times (the mean is the unit of time):

    * ``"staggered"``: every computation takes 1; worker ``w`` starts at ``w / M``. Pushes then
      arrive in round-robin order and, once every worker has pushed, each push has staleness
      ``M - 1`` (the first push of worker ``w`` has staleness ``w``).
    * ``"exponential"``: each computation takes an exponential time of mean 1 drawn from a
      generator seeded from ``seed``; every worker starts at 0.

    Events are processed in order of time, ties broken by the worker id, so the same arguments
    give the same pushes and bit-identical weights (the gradients come from ``grad_fn`` alone).
    With a synchronous server a worker that has pushed waits for the end of the round, then every
    waiting worker pulls, in worker order. ``on_push(index, server)`` is called after each push.
    """
    if not isinstance(server, ParameterServer):
        raise TypeError(f"server must be a ParameterServer, got {type(server).__qualname__}")
    if not callable(grad_fn):
        raise TypeError("grad_fn must be callable")
    if isinstance(num_gradients, bool) or not isinstance(num_gradients, numbers.Integral):
        raise TypeError(f"num_gradients must be an int, got {type(num_gradients).__qualname__}")
    if num_gradients < 0:
        raise ValueError(f"num_gradients must be >= 0, got {num_gradients}")
    if delays not in DELAYS:
        raise ValueError(f"delays must be one of {DELAYS}, got {delays!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    m = server.num_workers
    delay_rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(1,)))
    rec: dict[str, list[Any]] = {k: [] for k in ("workers", "jobs", "staleness", "versions",
                                                  "times", "losses")}
    queue: list[tuple[float, int, int, int, Any, Any]] = []  # (time, worker, job, pulled, loss, grads)
    next_job = 0

    def start(worker: int, now: float) -> None:
        nonlocal next_job
        if next_job >= num_gradients:
            return
        job = next_job
        next_job += 1
        weights, version = server.pull(worker)
        rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(0, job)))
        loss, grads = grad_fn(worker, weights, job, rng)
        duration = 1.0 if delays == "staggered" else float(delay_rng.exponential(1.0))
        heapq.heappush(queue, (now + duration, worker, job, version, loss, grads))

    began = time.perf_counter()
    for w in range(m):
        start(w, w / m if delays == "staggered" else 0.0)
    waiting: list[int] = []
    now = 0.0
    while queue:
        now, worker, job, pulled, loss, grads = heapq.heappop(queue)
        version_before = server.version
        version = server.push(worker, grads)
        rec["workers"].append(worker)
        rec["jobs"].append(job)
        rec["staleness"].append(version_before - pulled)
        rec["versions"].append(version)
        rec["times"].append(now)
        rec["losses"].append(math.nan if loss is None else float(loss))
        if on_push is not None:
            on_push(len(rec["workers"]) - 1, server)
        if not server.synchronous:
            start(worker, now)
        elif version == version_before:
            waiting.append(worker)
        else:
            for w in sorted(waiting + [worker]):
                start(w, now)
            waiting = []
    return SimulationResult(
        workers=np.array(rec["workers"], dtype=np.int64),
        jobs=np.array(rec["jobs"], dtype=np.int64),
        staleness=np.array(rec["staleness"], dtype=np.int64),
        versions=np.array(rec["versions"], dtype=np.int64),
        times=np.array(rec["times"], dtype=np.float64),
        losses=np.array(rec["losses"], dtype=np.float64),
        sim_time=float(now),
        wall_seconds=time.perf_counter() - began,
        stats=server.stats(),
    )
