"""CUDA queries: whether fusedopt has CUDA kernels, and whether they can run here.

CUDA tensors (PyTorch, CuPy) are updated in place on the producer's current stream: results are
stream-ordered like the producer's own operations, not host-synchronous.
"""

from __future__ import annotations

from . import _core

__all__ = ["built_with_cuda", "device_count", "is_available"]


def built_with_cuda() -> bool:
    """True when this build of fusedopt contains its CUDA kernels."""
    return bool(_core.built_with_cuda)


def device_count() -> int:
    """Number of CUDA devices fusedopt's kernels can use (0 without CUDA kernels, GPU or driver)."""
    if not built_with_cuda():
        return 0
    count = getattr(_core, "cuda_device_count", None)
    return int(count()) if count is not None else 0


def is_available() -> bool:
    """True when fusedopt can update CUDA tensors on this machine."""
    return device_count() > 0
