"""The asynchronous-workers part of ``python -m fusedopt.demo`` (also ``python -m fusedopt.distributed.demo``).

M workers train the digits MLP of ``fusedopt.distributed.experiment`` (NumPy) against a
:class:`RayParameterServer` on a local Ray, once per method, and the demo prints per method the test
error, the mean staleness of the pushes and the server's updates per second. When Ray is not
installed the same runs happen on the deterministic simulator (``fusedopt.distributed.simulate``),
and the demo says so. Needs scikit-learn for the digits (``pip install "fusedopt[distributed]"``).

Methods: ``asgd`` (``SGD``), ``dcasgd-c`` (``DCASGD``, per-worker backups, constant lamda),
``dcasgd-a`` (per-worker backups, adaptive lamda with the paper's constants), ``ssgd`` (synchronous:
each round averages one gradient from every worker).
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from typing import Any, Sequence

from . import experiment

METHODS = ("asgd", "dcasgd-c", "dcasgd-a", "ssgd")
LR = 1.0        # the experiment's constant learning rate (minibatches of 32, no momentum)


def _ray_rows(methods: Sequence[str], steps: int, num_workers: int, seed: int, num_shards: int,
              progress: bool) -> list[dict[str, Any]]:
    import ray

    from .ray_server import RayParameterServer, init_local_ray
    from .workers import DigitsMLPWorker, mlp_evaluate, mlp_init_params, run_workers

    started = not ray.is_initialized()
    if started:
        init_local_ray(object_store_memory=256 * 2**20, log_to_driver=False)
    rows = []
    try:
        for method in methods:
            server = RayParameterServer(mlp_init_params(seed), experiment._optimizer(method, LR, 0.04),
                                        num_workers, num_shards=num_shards,
                                        synchronous=method == "ssgd")
            try:
                results = run_workers(server, DigitsMLPWorker, steps, seed=seed, progress=progress)
                failed = [r["error"] for r in results if "error" in r]
                if failed:
                    raise RuntimeError(f"{method}: a worker failed: {failed[0]}")
                seconds = max(r["seconds"] for r in results)    # training, from the common start
                st = server.stats()
                rows.append({"method": method, "test_error": mlp_evaluate(server.pull(0)[0]),
                             "staleness_mean": st["staleness_mean"], "updates": st["updates"],
                             "seconds": seconds, "updates_per_s": st["updates"] / seconds})
            finally:
                server.shutdown()
    finally:
        if started:
            ray.shutdown()
    return rows


def _simulated_rows(methods: Sequence[str], steps: int, num_workers: int, seed: int
                    ) -> list[dict[str, Any]]:
    data = experiment.load_data()
    per_epoch = len(data.y_train) // 32
    epochs = max(1, round(steps * num_workers / per_epoch))
    rows = []
    for method in methods:
        t0 = time.perf_counter()
        r = experiment.run_one(method, num_workers, seed, data, epochs=epochs, lr=LR)
        seconds = time.perf_counter() - t0
        rows.append({"method": method, "test_error": r["test_error"],
                     "staleness_mean": r["staleness_mean"], "updates": r["updates"],
                     "seconds": seconds, "updates_per_s": r["updates"] / seconds})
    return rows


def run(steps: int = 100, num_workers: int = 4, methods: Sequence[str] = METHODS, *, seed: int = 0,
        num_shards: int = 2, progress: bool = True, use_ray: bool | None = None
        ) -> list[dict[str, Any]]:
    """Trains once per method (``steps`` pushes per worker) and returns one row per method:
    ``method``, ``test_error`` (percent), ``staleness_mean``, ``updates``, ``seconds``,
    ``updates_per_s``. On Ray when it is installed (``use_ray=None``): a local Ray is started
    unless one is already initialised, and stopped afterwards."""
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown method {m!r} (one of {', '.join(METHODS)})")
    if use_ray is None:
        use_ray = importlib.util.find_spec("ray") is not None
    if use_ray:
        return _ray_rows(methods, steps, num_workers, seed, num_shards, progress)
    return _simulated_rows(methods, steps, num_workers, seed)


def main_section(quick: bool = False) -> None:
    """The demo's section: a header saying where the workers run, then the table."""
    if importlib.util.find_spec("sklearn") is None:
        print("\nasynchronous workers: skipped (the digits data needs scikit-learn: "
              'pip install "fusedopt[distributed]")')
        return
    use_ray = importlib.util.find_spec("ray") is not None
    steps, workers = (40, 4) if quick else (150, 4)
    where = ("on a local Ray (one process per worker, 2 parameter-server shards)" if use_ray else
             "on the in-process simulator: Ray is not installed "
             '(pip install "fusedopt[distributed]" runs them on Ray)')
    print(f"\nasynchronous training: {workers} workers x {steps} minibatches of 32, the digits MLP, "
          f"{where}")
    rows = run(steps, workers, use_ray=use_ray, progress=True)
    print(f"{'method':>9} {'test error':>11} {'mean staleness':>15} {'updates/s':>10}")
    for r in rows:
        print(f"{r['method']:>9} {r['test_error']:>10.2f}% {r['staleness_mean']:>15.2f} "
              f"{r['updates_per_s']:>10.1f}")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer minibatches per worker")
    main_section(ap.parse_args(argv).quick)


if __name__ == "__main__":
    main()
