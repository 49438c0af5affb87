"""Shared pytest configuration and fixtures for the fusedopt Python tests.

* Puts this directory on ``sys.path`` so test modules can ``import reference`` (the independent
  float64 oracle of docs/SEMANTICS.md) and ``from helpers import ...`` under any ``--import-mode``.
* Registers markers for optional dependencies and turns them into skips:
  ``needs_ml_dtypes`` (bfloat16 NumPy arrays), ``needs_torch``, ``needs_cupy``, ``needs_cuda``
  (fusedopt reports a CUDA device), plus ``slow``.
* Fixtures: ``rng`` (seeded per test; ``FUSEDOPT_TEST_SEED`` changes the base seed), the dtype
  fixtures ``dtype_name`` / ``dtype`` (all four), ``float_dtype`` (float32, float64),
  ``low_dtype`` (float16, bfloat16), ``tolerances`` (the table in helpers.TOLERANCES — kept
  there because conftest is not importable), ``fusedopt`` (the module, or skip), ``device``,
  ``cpu_capability`` (forces each supported CPU kernel variant in turn; use it in tests whose
  sizes reach the SIMD body and tail).
* ``FUSEDOPT_TEST_ARRAY_LIBRARY=torch|torch-copy|torch-cuda|cupy`` runs every native kernel call on
  another array library's arrays (see the section at the end); ``numpy_memory`` marks the tests
  that cannot run on copies.

Nothing here imports fusedopt at collection time except ``available_devices()`` (guarded) and a
FUSEDOPT_TEST_ARRAY_LIBRARY mode other than numpy, so ``test_reference_goldens.py`` runs without
the package.
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
    config.addinivalue_line(
        "markers", "numpy_memory: checks the very NumPy memory a kernel call receives (zero-copy); "
        "skipped when FUSEDOPT_TEST_ARRAY_LIBRARY passes copies (torch-copy, torch-cuda, cupy)")
    if _ARRAY_LIBRARY not in _ARRAY_LIBRARY_MODES:
        raise pytest.UsageError(
            f"FUSEDOPT_TEST_ARRAY_LIBRARY={_ARRAY_LIBRARY!r} is not one of {', '.join(_ARRAY_LIBRARY_MODES)}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = {m: mod for m, mod in _OPTIONAL.items() if not _have(mod)}
    cuda_ok = None
    for item in items:
        if _ARRAY_LIBRARY_SKIP is not None:
            item.add_marker(pytest.mark.skip(reason=_ARRAY_LIBRARY_SKIP))
            continue
        if _ARRAY_LIBRARY in _COPY_MODES and item.get_closest_marker("numpy_memory") is not None:
            item.add_marker(pytest.mark.skip(
                reason=f"checks the NumPy memory a kernel call receives; "
                       f"FUSEDOPT_TEST_ARRAY_LIBRARY={_ARRAY_LIBRARY} passes copies"))
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
# FUSEDOPT_TEST_ARRAY_LIBRARY: the whole suite, assertions unchanged, with every native kernel call
# (the functions in _WRAPPED) receiving another array library's arrays instead of the test's NumPy
# arrays:
#
#   numpy (default)  nothing is wrapped.
#   torch            torch.from_numpy views of the writable float arrays (the same memory), so the
#                    calls go through the DLPack consumer. Arrays torch cannot view (read-only,
#                    negative strides, non-float) stay NumPy, array by array.
#   torch-copy       copies on fresh torch CPU tensors, copied back after the call: the copy
#                    machinery of the two CUDA modes, runnable (and validated) without a GPU.
#   torch-cuda       the same onto torch CUDA tensors (cuda:0).
#   cupy             the same onto CuPy arrays (current device); CuPy has no bfloat16.
#
# The copy modes are all-or-nothing per call (_copy_plan): the call's float arrays are copied only
# when every one is writable, aligned, C-contiguous, of a dtype the library has, and no two share
# memory, and the call holds no other array-like (a torch tensor, a DLPack producer); otherwise the
# whole call runs on NumPy, so tests of read-only, strided, overlapping or badly typed arguments
# still test what they mean. Integer arrays (row-sparse indices) always stay NumPy. Every copy is
# written back bitwise in a `finally`, grads included: a rejected call leaves the bytes as they were
# unless the kernel wrote on the device before failing, which the suite's "nothing written" and
# "grad never modified" assertions then catch. A test that checks the very memory a kernel call
# receives (zero-copy) must be marked numpy_memory: it is skipped in the copy modes (as is
# test_loss_scale.py's aliasing test: aliasing between operands exists only in the caller's memory).
#
# Not wrapped: fusedopt._core.PreparedUpdate (opt.prepare(...)) and the C++ optimizers
# (_core.cpp_SGD / cpp_DCASGD). Two files compare such an unwrapped CPU path bit for bit with
# wrapped calls: test_prepared.py (PreparedStep.step() vs fused_step / update) and
# test_cpp_agreement.py (the C++ optimizers vs the Python ones). In torch-copy mode both sides run
# on the CPU; in the CUDA modes the wrapped side runs on the GPU, whose results may differ from the
# CPU kernels in the last bit where FMA contraction differs: look there first on a GPU run.
_ARRAY_LIBRARY_MODES = ("numpy", "torch", "torch-copy", "torch-cuda", "cupy")
_COPY_MODES = ("torch-copy", "torch-cuda", "cupy")
_ARRAY_LIBRARY = os.environ.get("FUSEDOPT_TEST_ARRAY_LIBRARY", "") or "numpy"
_ARRAY_LIBRARY_SKIP: str | None = None  # why every test is skipped (the mode cannot run here)

_WRAPPED = ("sgd_update", "sgd_mom_update", "mp_sgd_update", "mp_sgd_mom_update", "dcasgd_update",
            "mp_dcasgd_update", "multi_sgd_update", "multi_sgd_mom_update", "multi_mp_sgd_update",
            "multi_mp_sgd_mom_update", "multi_sgd_update_states", "multi_dcasgd_update",
            "multi_mp_dcasgd_update", "sgd_update_rsp",
            "sgd_mom_update_rsp", "check_sgd_args", "check_sgd_args_rsp", "check_dcasgd_args",
            "dcasgd_backup_update", "mp_dcasgd_backup_update", "multi_dcasgd_backup_update",
            "multi_mp_dcasgd_backup_update", "check_dcasgd_backup_args")

_BITS = {2: np.int16, 4: np.int32, 8: np.int64}  # bitwise copies through integer views
_SCALARS = (bool, int, float, complex, str, bytes, np.generic)


def _bf16():
    try:
        import ml_dtypes
    except ImportError:  # pragma: no cover
        return None
    return np.dtype(ml_dtypes.bfloat16)


def _torch_views(torch):
    """FUSEDOPT_TEST_ARRAY_LIBRARY=torch: a wrapper calling its ``__wrapped__`` with torch.from_numpy
    views, array by array."""
    import warnings

    bf16 = _bf16()

    def conv(a):
        if isinstance(a, (list, tuple)):
            return type(a)(conv(x) for x in a)
        if not isinstance(a, np.ndarray) or not a.flags.writeable:
            return a
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if bf16 is not None and a.dtype == bf16:
                    return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
                if a.dtype.kind == "f":
                    return torch.from_numpy(a)
        except (ValueError, TypeError, RuntimeError):
            pass  # e.g. negative strides: torch.from_numpy refuses them
        return a

    def call(*args, **kwargs):
        converted = [conv(a) for a in args]
        call.last_arg_types = [type(a) for a in converted]  # checked by test_array_library_mode
        return call.__wrapped__(*converted, **kwargs)

    return call


def _copy_plan(args, supported) -> list:
    """The NumPy arrays of a call to copy to the library: all of its float arrays, or [] when the
    call must run on NumPy (see the rules above)."""
    arrays = []

    def walk(x) -> bool:
        if isinstance(x, np.ndarray):
            if x.dtype.kind not in "iub":
                arrays.append(x)
            return True
        if isinstance(x, (list, tuple)):
            return all(walk(y) for y in x)
        return x is None or isinstance(x, _SCALARS)  # anything else (a tensor...): stay NumPy

    if not all(walk(a) for a in args) or not arrays:
        return []
    spans = []
    for a in arrays:
        if not (a.dtype in supported and a.flags.writeable and a.flags.c_contiguous
                and a.flags.aligned):
            return []
        if a.nbytes:
            spans.append((a.ctypes.data, a.ctypes.data + a.nbytes))
    if len({id(a) for a in arrays}) != len(arrays):
        return []  # the same array twice: it aliases itself
    # A C-contiguous array's bytes are exactly [data, data + nbytes), so overlapping spans are
    # exactly np.shares_memory (tests pass overlapping views on purpose to check the overlap errors).
    spans.sort()
    for (_, end), (start, _) in zip(spans, spans[1:]):
        if start < end:
            return []
    return arrays


def _torch_copies(torch, device: str):
    """(supported dtypes, to_library, to_numpy) for copies on torch tensors of ``device``."""
    bf16 = _bf16()
    supported = {np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)}
    if bf16 is not None:
        supported.add(bf16)

    def to_library(a):
        if a.dtype == bf16:
            return torch.from_numpy(a.view(np.int16)).to(device, copy=True).view(torch.bfloat16)
        return torch.from_numpy(a).to(device, copy=True)

    def to_numpy(t):
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        return t.cpu().numpy()

    return supported, to_library, to_numpy


def _cupy_copies(cupy):
    """(supported dtypes, to_library, to_numpy) for copies on CuPy arrays (no bfloat16)."""
    supported = {np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)}
    return supported, cupy.asarray, cupy.asnumpy


def _library_copies(supported, to_library, to_numpy):
    """A wrapper calling its ``__wrapped__`` with library copies of the call's arrays (all or none),
    copied back afterwards."""

    def substitute(x, copies):
        if isinstance(x, (list, tuple)):
            return type(x)(substitute(y, copies) for y in x)
        hit = copies.get(id(x)) if isinstance(x, np.ndarray) else None
        return x if hit is None else hit[1]

    def call(*args, **kwargs):
        copies = {}
        try:
            for a in _copy_plan(args, supported):
                copies[id(a)] = (a, to_library(a))
        except (ValueError, TypeError, RuntimeError):
            copies = {}  # e.g. torch refuses a negative stride of a size-1 dimension: all NumPy
        converted = [substitute(a, copies) for a in args] if copies else list(args)
        call.last_arg_types = [type(a) for a in converted]  # checked by test_array_library_mode
        try:
            return call.__wrapped__(*converted, **kwargs)
        finally:
            for a, copy in copies.values():
                bits = _BITS[a.dtype.itemsize]
                a.view(bits)[...] = to_numpy(copy).view(bits)

    return call


def _install_array_library_mode() -> str | None:
    """Wraps the kernel functions for FUSEDOPT_TEST_ARRAY_LIBRARY; returns why every test must be
    skipped instead (the library or the CUDA device is missing), or None."""
    mode = _ARRAY_LIBRARY
    if mode == "numpy" or mode not in _ARRAY_LIBRARY_MODES:
        return None  # an unknown mode is a usage error (pytest_configure)
    need = f"FUSEDOPT_TEST_ARRAY_LIBRARY={mode} needs"
    try:
        import fusedopt
    except ImportError:
        if os.environ.get("FUSEDOPT_TEST_REQUIRE", "") not in ("", "0"):
            raise
        return f"{need} fusedopt installed"
    lib = "cupy" if mode == "cupy" else "torch"
    cuda = f" a CUDA device seen by {lib} and fusedopt" if mode in ("torch-cuda", "cupy") else ""
    try:
        if mode == "cupy":
            import cupy
        else:
            import torch
    except ImportError:
        return f"{need}{cuda} ({lib} is not installed)" if cuda else f"{need} torch installed"
    if cuda:
        lib_cuda = cupy.cuda.is_available() if mode == "cupy" else torch.cuda.is_available()
        if not lib_cuda:
            return f"{need}{cuda} ({lib} sees none)"
        if not fusedopt.cuda.is_available():
            built = "built with CUDA" if fusedopt.cuda.built_with_cuda() else "built without CUDA"
            return f"{need}{cuda} (fusedopt sees none: {built})"

    for name in _WRAPPED:
        fn = getattr(fusedopt._core, name)
        fn = getattr(fn, "__wrapped__", fn)  # never wrap twice
        if mode == "torch":
            call = _torch_views(torch)
        elif mode == "cupy":
            call = _library_copies(*_cupy_copies(cupy))
        else:
            call = _library_copies(*_torch_copies(torch, "cpu" if mode == "torch-copy" else "cuda:0"))
        call.__name__ = fn.__name__
        call.__wrapped__ = fn  # the native function; tests may put a spy here
        call.last_arg_types = []
        setattr(fusedopt._core, name, call)
    return None


_ARRAY_LIBRARY_SKIP = _install_array_library_mode()
