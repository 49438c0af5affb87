"""The suite's array-library mode is really active when requested: with FUSEDOPT_TEST_ARRAY_LIBRARY=torch
every native kernel call receives torch views of the test's NumPy arrays (see conftest.py)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from helpers import import_fusedopt

fusedopt = import_fusedopt()


@pytest.mark.skipif(os.environ.get("FUSEDOPT_TEST_ARRAY_LIBRARY") != "torch", reason="NumPy mode")
def test_kernel_calls_receive_torch_tensors_in_torch_mode():
    torch = pytest.importorskip("torch")
    w, g = np.ones(4, np.float32), np.ones(4, np.float32)
    fusedopt.sgd_update(w, g, lr=0.5)
    assert fusedopt._core.sgd_update.last_arg_types == [torch.Tensor, torch.Tensor]
    np.testing.assert_array_equal(w, np.full(4, 0.5, np.float32))  # updated through the torch view
