"""Asynchronous training without Ray: a parameter server and a deterministic simulation of workers.

* :class:`ParameterServer` holds the parameters and applies a fusedopt optimizer to the gradients
  workers push: ``SGD`` gives ASGD, ``DCASGD`` gives DC-ASGD with per-worker backups (the paper's
  form, the default) or MXNet's single previous weight; ``synchronous=True`` gives SSGD.
* :func:`simulate` runs M asynchronous workers over a server as a deterministic event simulation.
* ``python -m fusedopt.distributed.experiment`` reproduces the paper's claim on scikit-learn's digits.

Nothing here imports Ray, and ``import fusedopt`` does not import this package.
"""

from __future__ import annotations

from .server import ParameterServer
from .simulate import SimulationResult, simulate

__all__ = ["ParameterServer", "SimulationResult", "simulate"]
