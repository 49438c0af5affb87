"""Row-sparse gradients: a few rows of a (rows, ...) matrix, as MXNet's ``row_sparse`` storage."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["RowSparseArray", "row_sparse_array"]


class RowSparseArray:
    """Rows ``indices`` of a dense array of ``shape``; ``data[k]`` is row ``indices[k]``.

    Indices may be in any order; they must be unique and in range (checked by every update, which
    raises ``ValueError`` before writing anything otherwise). Stored rows that are all zeros still
    count as stored (a lazy update touches them).
    """

    __slots__ = ("data", "indices", "shape")

    def __init__(self, data: Any, indices: Any, shape: Sequence[int]) -> None:
        self.shape = tuple(int(s) for s in shape)
        if len(self.shape) < 1:
            raise ValueError(f"row_sparse_array: shape must have at least one dimension, got {self.shape}")
        if not hasattr(data, "dtype") or not hasattr(data, "shape"):
            raise TypeError(f"row_sparse_array: data must be an array, got {type(data).__qualname__}")
        idx = np.asarray(indices)
        if idx.ndim != 1:
            raise ValueError(f"row_sparse_array: indices must be one-dimensional, got shape {idx.shape}")
        if idx.size and idx.dtype.kind not in "iu":
            raise TypeError(f"row_sparse_array: indices must be integers, got dtype {idx.dtype}")
        # Indices are read-only inputs: an int64 copy is harmless and gives the kernels one layout.
        self.indices = np.ascontiguousarray(idx, dtype=np.int64)
        expected = (len(self.indices), *self.shape[1:])
        if tuple(data.shape) != expected:
            raise ValueError(
                f"row_sparse_array: data must have shape (len(indices),) + shape[1:] = {expected}, "
                f"got {tuple(data.shape)}"
            )
        self.data = data

    @property
    def dtype(self) -> Any:
        return self.data.dtype

    @property
    def stype(self) -> str:
        return "row_sparse"

    def todense(self) -> Any:
        """The dense array (NumPy) with zeros in rows that are not stored."""
        dense = np.zeros(self.shape, dtype=self.data.dtype)
        dense[self.indices] = self.data
        return dense

    def __repr__(self) -> str:
        return f"RowSparseArray(shape={self.shape}, dtype={self.dtype}, rows={len(self.indices)})"


def row_sparse_array(arg: tuple[Any, Any], shape: Sequence[int]) -> RowSparseArray:
    """``row_sparse_array((data, indices), shape)`` as in MXNet."""
    if not isinstance(arg, tuple) or len(arg) != 2:
        raise TypeError("row_sparse_array: expected a (data, indices) tuple as the first argument")
    data, indices = arg
    return RowSparseArray(data, indices, shape)
