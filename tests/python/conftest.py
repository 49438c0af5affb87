"""Shared pytest configuration and fixtures for the fusedopt Python tests.

* Puts this directory on ``sys.path`` so test modules can ``import reference`` (the independent
  float64 oracle of SPEC.md) and ``from helpers import ...`` under any ``--import-mode``.
* Registers markers for optional dependencies and turns them into skips:
  ``needs_ml_dtypes`` (bfloat16 NumPy arrays), ``needs_torch``, ``needs_cupy``, ``needs_cuda``
  (fusedopt reports a CUDA device), plus ``slow``.
* Fixtures: ``rng`` (seeded per test; ``FUSEDOPT_TEST_SEED`` changes the base seed), the dtype
  fixtures ``dtype_name`` / ``dtype`` (all four), ``float_dtype`` (float32, float64),
  ``low_dtype`` (float16, bfloat16), ``tolerances`` (the table in helpers.TOLERANCES — kept
  there because conftest is not importable), ``fusedopt`` (the module, or skip), ``device``,
  ``cpu_capability`` (forces each supported CPU kernel variant in turn; use it in tests whose
  sizes reach the SIMD body and tail).

Nothing here imports fusedopt at collection time except ``available_devices()`` (guarded), so
``test_reference_goldens.py`` runs without the package.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import zlib

import numpy as np
import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import helpers  # noqa: E402

_OPTIONAL = {
    "needs_ml_dtypes": "ml_dtypes",
    "needs_torch": "torch",
    "needs_cupy": "cupy",
}


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def pytest_configure(config: pytest.Config) -> None:
    for marker, module in _OPTIONAL.items():
        config.addinivalue_line(
            "markers", f"{marker}: skip unless the optional '{module}' package is importable")
    config.addinivalue_line("markers", "needs_cuda: skip unless fusedopt reports a CUDA device")
    config.addinivalue_line("markers", "slow: long-running test (large sizes)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = {m: mod for m, mod in _OPTIONAL.items() if not _have(mod)}
    cuda_ok = None
    for item in items:
        for marker, module in missing.items():
            if item.get_closest_marker(marker) is not None:
                item.add_marker(pytest.mark.skip(reason=f"needs the optional package '{module}'"))
        if item.get_closest_marker("needs_cuda") is not None:
            if cuda_ok is None:
                cuda_ok = "cuda" in helpers.available_devices()
            if not cuda_ok:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------
@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    """A NumPy Generator seeded from the base seed and the test id (reproducible per test,
    different across tests)."""
    base = int(os.environ.get("FUSEDOPT_TEST_SEED", "20240607"))
    return np.random.default_rng([base, zlib.crc32(request.node.nodeid.encode())])


@pytest.fixture(params=[helpers.dtype_param(n) for n in helpers.DTYPE_NAMES])
def dtype_name(request: pytest.FixtureRequest) -> str:
    """Every supported dtype by name: float16, bfloat16 (ml_dtypes), float32, float64."""
    return request.param


@pytest.fixture
def dtype(dtype_name: str) -> np.dtype:
    """``np.dtype`` of ``dtype_name``."""
    return helpers.np_dtype(dtype_name)


@pytest.fixture(params=[helpers.dtype_param(n) for n in helpers.FLOAT_DTYPE_NAMES])
def float_dtype(request: pytest.FixtureRequest) -> np.dtype:
    """float32 and float64 (computed in their own precision)."""
    return helpers.np_dtype(request.param)


@pytest.fixture(params=[helpers.dtype_param(n) for n in helpers.LOW_DTYPE_NAMES])
def low_dtype(request: pytest.FixtureRequest) -> np.dtype:
    """float16 and bfloat16 (fp32 compute; multi_precision keeps an fp32 master)."""
    return helpers.np_dtype(request.param)


@pytest.fixture(scope="session")
def tolerances() -> dict:
    """The (dtype, mode) -> (rtol, atol) table; see helpers.TOLERANCES for the justification and
    helpers.tolerance / helpers.assert_close for lookup by role."""
    return dict(helpers.TOLERANCES)


@pytest.fixture(scope="session")
def fusedopt():
    """The installed fusedopt module (skips when not installed; see helpers.import_fusedopt)."""
    return helpers.import_fusedopt()


@pytest.fixture(params=helpers.cpu_capabilities())
def cpu_capability(request: pytest.FixtureRequest):
    """Force each CPU kernel variant this machine supports (baseline, avx2, avx512) in turn and
    restore the previous one afterwards; "default" (no forcing) without fusedopt."""
    cap = request.param
    if cap == "default":
        yield cap
        return
    fo = helpers.import_fusedopt()
    previous = fo.cpu_capability()
    fo.set_cpu_capability(cap)
    try:
        assert fo.cpu_capability() == cap
        yield cap
    finally:
        fo.set_cpu_capability(previous)


@pytest.fixture(params=helpers.available_devices())
def device(request: pytest.FixtureRequest) -> str:
    """Each device to run on: cpu, plus cuda when available (FUSEDOPT_TEST_DEVICE overrides)."""
    return request.param
