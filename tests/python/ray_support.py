"""Shared pieces of the Ray tests (``test_ray_*.py``): each module starts and stops its own local Ray.

* ``ray`` is imported with ``pytest.importorskip``: without Ray the modules are skipped.
* ``time_limit(seconds)``: a context manager that turns an overlong block into a failure
  (``signal.alarm``; pytest-timeout is not a dependency).
* ``local_ray()``: a module-scoped generator for fixtures: starts Ray on 127.0.0.1 with token
  authentication off (``fusedopt.distributed.init_local_ray``), a small object store, and shuts it
  down afterwards, whatever happened.
"""
from __future__ import annotations

import contextlib
import signal
from typing import Iterator

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'fusedopt[distributed]')")


class TimeLimit(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: int, what: str = "test") -> Iterator[None]:
    def on_alarm(signum: int, frame: object) -> None:
        raise TimeLimit(f"{what} ran past its {seconds} s limit")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def local_ray(num_cpus: int = 2) -> Iterator[None]:
    from fusedopt.distributed import init_local_ray

    with time_limit(90, "starting Ray"):
        init_local_ray(num_cpus, object_store_memory=256 * 2**20, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
