"""The suite's array-library mode is really active when requested (see conftest.py):

* FUSEDOPT_TEST_ARRAY_LIBRARY=torch: every native kernel call receives torch views of the test's
  NumPy arrays (the same memory).
* torch-copy / torch-cuda / cupy: every native kernel call receives copies on torch CPU tensors /
  torch CUDA tensors / CuPy arrays, all of the call's float arrays or none, copied back afterwards.

Each test runs only in its mode. The spy fixture replaces the native function behind a wrapper
(``wrapper.__wrapped__``) to see the very arguments a kernel call receives.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import import_fusedopt, np_dtype

fusedopt = import_fusedopt()

MODE = os.environ.get("FUSEDOPT_TEST_ARRAY_LIBRARY") or "numpy"
COPY_MODES = ("torch-copy", "torch-cuda", "cupy")


def only(*modes: str):
    return pytest.mark.skipif(MODE not in modes, reason=f"FUSEDOPT_TEST_ARRAY_LIBRARY={MODE}")


copy_modes = only(*COPY_MODES)


@pytest.fixture
def spy(monkeypatch):
    """``spy(name)`` -> a list that receives the positional arguments of every call of the native
    ``fusedopt._core.<name>`` behind the mode's wrapper; ``spy(name, before=f)`` also runs
    ``f(args)`` inside the call, before the native function."""

    def install(name: str, before=None) -> list:
        wrapper = getattr(fusedopt._core, name)
        native = wrapper.__wrapped__
        calls: list = []

        def record(*args, **kwargs):
            calls.append(args)
            if before is not None:
                before(args)
            return native(*args, **kwargs)

        monkeypatch.setattr(wrapper, "__wrapped__", record)
        return calls

    return install


def library_array_type():
    if MODE == "cupy":
        import cupy

        return cupy.ndarray
    import torch

    return torch.Tensor


def assert_library_copy(x, a: np.ndarray) -> None:
    """``x`` is the mode's library array on the mode's device, with ``a``'s values, in other memory."""
    assert isinstance(x, library_array_type())
    if MODE == "cupy":
        import cupy

        assert x.device.id == cupy.cuda.Device().id
        host = cupy.asnumpy(x)
    else:
        import torch

        assert x.device.type == ("cpu" if MODE == "torch-copy" else "cuda")
        bf16 = x.dtype == torch.bfloat16
        host = (x.view(torch.int16) if bf16 else x).cpu().numpy()
        if MODE == "torch-copy":
            assert not np.shares_memory(host, a)  # a copy, not a view
    assert x.shape == a.shape
    bits = {2: np.int16, 4: np.int32, 8: np.int64}[a.dtype.itemsize]
    assert host.view(bits).tobytes() == a.view(bits).tobytes()


def fill(x, value: float) -> None:
    """Write ``value`` into a library array in place (as a misbehaving kernel would)."""
    if MODE == "cupy":
        x.fill(value)
    else:
        x.fill_(value)


@only("torch")
def test_kernel_calls_receive_torch_tensors_in_torch_mode():
    torch = pytest.importorskip("torch")
    w, g = np.ones(4, np.float32), np.ones(4, np.float32)
    fusedopt.sgd_update(w, g, lr=0.5)
    assert fusedopt._core.sgd_update.last_arg_types == [torch.Tensor, torch.Tensor]
    np.testing.assert_array_equal(w, np.full(4, 0.5, np.float32))  # updated through the torch view


@copy_modes
@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16", "float32", "float64"])
def test_kernel_calls_receive_library_copies_and_results_are_copied_back(spy, dtype_name):
    if MODE == "cupy" and dtype_name == "bfloat16":
        pytest.skip("CuPy has no bfloat16 (test_cupy_mode_leaves_bfloat16_calls_on_numpy)")
    dt = np_dtype(dtype_name)
    w, g, m = np.ones(5, dt), np.ones(5, dt), np.zeros(5, dt)

    def inside(args):
        for x, a in zip(args, (w, g, m)):
            assert_library_copy(x, a)  # ... and w, m still hold their old values here

    calls = spy("sgd_mom_update", before=inside)
    fusedopt.sgd_mom_update(w, g, m, lr=0.5, momentum=0.9)
    assert len(calls) == 1
    t = library_array_type()
    assert fusedopt._core.sgd_mom_update.last_arg_types == [t, t, t]
    np.testing.assert_array_equal(m.astype(np.float32), np.full(5, -0.5, np.float32))  # copied back
    np.testing.assert_array_equal(w.astype(np.float32), np.full(5, 0.5, np.float32))
    np.testing.assert_array_equal(g.astype(np.float32), np.ones(5, np.float32))


@copy_modes
def test_aggregated_lists_are_copied_element_by_element(spy):
    ws = [np.ones(n, np.float32) for n in (3, 17)]
    gs = [np.ones(n, np.float32) for n in (3, 17)]
    calls = spy("multi_sgd_update")
    fusedopt.multi_sgd_update([ws[0], gs[0], ws[1], gs[1]], lrs=[0.5, 0.25], wds=[0.0, 0.0])
    (arrays,) = calls[0]
    assert all(isinstance(x, library_array_type()) for x in arrays)
    np.testing.assert_array_equal(ws[0], np.full(3, 0.5, np.float32))
    np.testing.assert_array_equal(ws[1], np.full(17, 0.75, np.float32))


@copy_modes
def test_row_sparse_indices_stay_numpy(spy):
    w, data = np.ones((4, 3), np.float32), np.ones((2, 3), np.float32)
    calls = spy("sgd_update_rsp")
    fusedopt.sgd_update(w, fusedopt.RowSparseArray(data, [1, 3], (4, 3)), lr=0.5)
    weight, d, indices, _shape = calls[0]
    assert_library_copy(d, data)
    assert isinstance(weight, library_array_type())
    assert type(indices) is np.ndarray and indices.dtype == np.int64
    np.testing.assert_array_equal(w[[1, 3]], np.full((2, 3), 0.5, np.float32))
    np.testing.assert_array_equal(w[[0, 2]], np.ones((2, 3), np.float32))


@copy_modes
def test_a_rejected_call_leaves_the_arrays_unchanged(spy):
    w, g = np.arange(4, dtype=np.float32), np.arange(5, dtype=np.float32)
    before = (w.copy(), g.copy())
    calls = spy("sgd_update")
    with pytest.raises(ValueError):
        fusedopt.sgd_update(w, g, lr=0.5)  # shape mismatch, raised by the kernel on the copies
    assert all(isinstance(x, library_array_type()) for x in calls[0])
    assert w.tobytes() == before[0].tobytes() and g.tobytes() == before[1].tobytes()


@copy_modes
def test_copies_are_written_back_even_when_the_call_raises(spy):
    # What a kernel wrote on the device before failing must reach the NumPy arrays, so that the
    # suite's "nothing written" / "grad never modified" assertions see it.
    w, g = np.ones(4, np.float32), np.ones(4, np.float32)

    def write_grad_then_fail(args):
        fill(args[1], 7.0)
        raise RuntimeError("simulated kernel failure")

    spy("sgd_update", before=write_grad_then_fail)
    with pytest.raises(RuntimeError, match="simulated"):
        fusedopt.sgd_update(w, g, lr=0.5)
    np.testing.assert_array_equal(g, np.full(4, 7.0, np.float32))
    np.testing.assert_array_equal(w, np.ones(4, np.float32))


def _stays_numpy(spy, name: str, call, *arrays: np.ndarray) -> list:
    calls = spy(name)
    call()
    received = [x for arg in calls[0] for x in (arg if isinstance(arg, (list, tuple)) else [arg])]
    for a in arrays:
        assert any(x is a for x in received), "the caller's very array was passed"
    assert not any(isinstance(x, library_array_type()) for x in received)
    assert all(t in (np.ndarray, list, tuple) for t in getattr(fusedopt._core, name).last_arg_types)
    return calls


@copy_modes
def test_a_call_with_a_read_only_array_stays_all_numpy(spy):
    w, g = np.ones(4, np.float32), np.ones(4, np.float32)
    g.flags.writeable = False  # a read-only grad is accepted (never written)
    _stays_numpy(spy, "sgd_update", lambda: fusedopt.sgd_update(w, g, lr=0.5), w, g)
    np.testing.assert_array_equal(w, np.full(4, 0.5, np.float32))  # updated in place, on NumPy


@copy_modes
def test_a_call_with_a_strided_array_stays_all_numpy(spy):
    w, g = np.ones(4, np.float32), np.ones(8, np.float32)[::2]

    def call():
        with pytest.raises(ValueError):
            fusedopt.sgd_update(w, g, lr=0.5)

    _stays_numpy(spy, "sgd_update", call, w, g)


@copy_modes
def test_a_call_with_overlapping_arrays_stays_all_numpy(spy):
    buf = np.ones(6, np.float32)
    w, g = buf[:4], buf[2:]

    def call():
        with pytest.raises(ValueError):
            fusedopt.sgd_update(w, g, lr=0.5)

    _stays_numpy(spy, "sgd_update", call, w, g)
    np.testing.assert_array_equal(buf, np.ones(6, np.float32))


@copy_modes
def test_a_call_with_the_same_array_twice_stays_all_numpy(spy):
    w = np.ones(4, np.float32)

    def call():
        with pytest.raises(ValueError):
            fusedopt.sgd_update(w, w, lr=0.5)

    _stays_numpy(spy, "sgd_update", call, w)


@only("cupy")
def test_cupy_mode_leaves_bfloat16_calls_on_numpy(spy):
    bf16 = np_dtype("bfloat16")
    w, g, w32 = np.ones(4, bf16), np.ones(4, bf16), np.ones(4, np.float32)
    _stays_numpy(spy, "mp_sgd_update", lambda: fusedopt.mp_sgd_update(w, g, w32, lr=0.5), w, g, w32)
    np.testing.assert_array_equal(w32, np.full(4, 0.5, np.float32))


def test_an_unknown_array_library_is_a_usage_error(tmp_path):
    env = dict(os.environ, FUSEDOPT_TEST_ARRAY_LIBRARY="no-such-library")
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only",
         os.path.join(here, "test_array_library_mode.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, proc.stdout + proc.stderr
    assert "FUSEDOPT_TEST_ARRAY_LIBRARY='no-such-library'" in proc.stdout + proc.stderr
