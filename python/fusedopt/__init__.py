"""fusedopt: fused SGD and DCASGD optimizer updates with Apache MXNet 2.0 semantics.

C++17 kernels (OpenMP, per-ISA SIMD; CUDA when built) update NumPy arrays in place, zero-copy.
"""

from __future__ import annotations

import os

from . import _core, cuda, lr_scheduler
from .dcasgd import DCASGD
from .functional import (
    dcasgd_backup_update,
    dcasgd_update,
    mp_dcasgd_backup_update,
    mp_dcasgd_update,
    mp_sgd_mom_update,
    mp_sgd_update,
    multi_dcasgd_backup_update,
    multi_dcasgd_update,
    multi_mp_dcasgd_backup_update,
    multi_mp_dcasgd_update,
    multi_mp_sgd_mom_update,
    multi_mp_sgd_update,
    multi_sgd_mom_update,
    multi_sgd_update,
    sgd_mom_update,
    sgd_update,
)
from .optimizer import Optimizer, create, register
from .sgd import SGD
from .sparse import RowSparseArray, row_sparse_array
from .updater import Updater, get_updater

__version__: str = _core.__version__

cpu_capability = _core.cpu_capability
supported_cpu_capabilities = _core.supported_cpu_capabilities
set_cpu_capability = _core.set_cpu_capability



def get_cmake_dir() -> str:
    """Directory of ``fusedoptConfig.cmake`` inside the installed wheel, for
    ``cmake -Dfusedopt_DIR=$(python -c "import fusedopt; print(fusedopt.get_cmake_dir())")``.
    (scikit-build-core projects find it automatically through the ``cmake.root`` entry point.)"""
    here = os.path.dirname(os.path.abspath(__file__))
    for libdir in ("lib", "lib64"):
        path = os.path.join(here, libdir, "cmake", "fusedopt")
        if os.path.isfile(os.path.join(path, "fusedoptConfig.cmake")):
            return path
    raise ImportError("fusedopt's CMake package files are not installed with this copy of fusedopt")


def get_include() -> str:
    """Directory holding the installed C++ headers (``<fusedopt/fusedopt.h>``)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "include")


__all__ = [
    "DCASGD",
    "SGD",
    "Optimizer",
    "RowSparseArray",
    "Updater",
    "__version__",
    "cpu_capability",
    "create",
    "cuda",
    "dcasgd_backup_update",
    "dcasgd_update",
    "get_cmake_dir",
    "get_include",
    "get_updater",
    "lr_scheduler",
    "mp_dcasgd_backup_update",
    "mp_dcasgd_update",
    "mp_sgd_mom_update",
    "mp_sgd_update",
    "multi_dcasgd_backup_update",
    "multi_dcasgd_update",
    "multi_mp_dcasgd_backup_update",
    "multi_mp_dcasgd_update",
    "multi_mp_sgd_mom_update",
    "multi_mp_sgd_update",
    "multi_sgd_mom_update",
    "multi_sgd_update",
    "register",
    "row_sparse_array",
    "set_cpu_capability",
    "sgd_mom_update",
    "sgd_update",
    "supported_cpu_capabilities",
]
