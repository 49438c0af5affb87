"""Asynchronous training without Ray: a parameter server and a deterministic simulation of workers.

* :class:`ParameterServer` holds the parameters and applies a fusedopt optimizer to the gradients
  workers push: ``SGD`` gives ASGD, ``DCASGD`` gives DC-ASGD with per-worker backups (the paper's
  form, the default) or MXNet's single previous weight; ``synchronous=True`` gives SSGD.
* :func:`simulate` runs M asynchronous workers over a server as a deterministic event simulation.
* ``python -m fusedopt.distributed.experiment`` reproduces the paper's claim on scikit-learn's digits.
* :class:`RayParameterServer` (and :func:`init_local_ray`, :func:`run_workers`) serve the same server
  from Ray actors; Ray is imported only when one of these names is first used.

Nothing else here imports Ray, and ``import fusedopt`` does not import this package.
"""

from __future__ import annotations

from typing import Any

from .server import ParameterServer
from .simulate import SimulationResult, simulate

__all__ = ["ParameterServer", "SimulationResult", "simulate"]

# Ray is an optional dependency (pip install "fusedopt[distributed]"): these names import it lazily.
_RAY_NAMES = {"RayParameterServer": "ray_server", "init_local_ray": "ray_server",
              "run_workers": "workers"}


def __getattr__(name: str) -> Any:
    module = _RAY_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".{module}", __name__), name)
