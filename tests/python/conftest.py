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


# ------------------------------------------------------------------------------------------------
# FUSEDOPT_TEST_ARRAY_LIBRARY=torch: every native kernel call receives torch.from_numpy views of the
# test's writable float NumPy arrays (the same memory), so the whole suite runs through the DLPack
# consumer with its assertions unchanged. Arrays torch cannot view (read-only, negative strides,
# non-float) stay NumPy and keep testing the NumPy path.
def _install_array_library_mode() -> None:
    if os.environ.get("FUSEDOPT_TEST_ARRAY_LIBRARY", "numpy") != "torch":
        return
    import warnings as _warnings

    import numpy as _np
    import torch as _torch

    import fusedopt as _fo

    try:
        import ml_dtypes as _ml

        _bf16 = _np.dtype(_ml.bfloat16)
    except ImportError:  # pragma: no cover
        _bf16 = None

    def conv(a):
        if isinstance(a, (list, tuple)):
            return type(a)(conv(x) for x in a)
        if not isinstance(a, _np.ndarray) or not a.flags.writeable:
            return a
        try:
            with _warnings.catch_warnings():
                _warnings.simplefilter("ignore")
                if _bf16 is not None and a.dtype == _bf16:
                    return _torch.from_numpy(a.view(_np.int16)).view(_torch.bfloat16)
                if a.dtype.kind == "f":
                    return _torch.from_numpy(a)
        except (ValueError, TypeError, RuntimeError):
            pass  # e.g. negative strides: torch.from_numpy refuses them
        return a

    def wrap(fn):
        def call(*args, **kwargs):
            converted = [conv(a) for a in args]
            call.last_arg_types = [type(a) for a in converted]  # checked by test_array_library_mode
            return fn(*converted, **kwargs)

        call.__name__ = fn.__name__
        call.last_arg_types = []
        return call

    for name in ("sgd_update", "sgd_mom_update", "mp_sgd_update", "mp_sgd_mom_update",
                 "dcasgd_update", "mp_dcasgd_update", "multi_sgd_update", "multi_sgd_mom_update",
                 "multi_mp_sgd_update", "multi_mp_sgd_mom_update", "multi_sgd_update_states", "sgd_update_rsp",
                 "sgd_mom_update_rsp", "check_sgd_args", "check_sgd_args_rsp", "check_dcasgd_args"):
        setattr(_fo._core, name, wrap(getattr(_fo._core, name)))


try:
    _install_array_library_mode()
except ImportError:
    pass
