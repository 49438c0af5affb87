"""The DLPack consumer: every row of the PITFALLS.md (c) consumer checklist, with real producers
(NumPy >= 2.1 versioned capsules through a forwarding wrapper, so the NumPy fast path is bypassed) and
with hand-made capsules from ``fusedopt._core._testing.make_tensor`` for the edges no real producer
shows (NULL deleter, other major versions, IS_COPIED, NULL data, byte_offset, odd devices and dtypes).

The hand-made producer counts deleter calls, whether each ran with the GIL, the capsule names seen when
its capsules died, and the first element as the deleter saw it (proof that the consumer released the
tensor after the kernel wrote). Torch producers are covered in test_torch.py.
"""
from __future__ import annotations

import ctypes
import gc
from typing import Any

import numpy as np
import pytest

import reference as ref
from helpers import Snapshot, assert_bitwise_equal, import_fusedopt

fo = import_fusedopt()
import fusedopt.cuda  # noqa: E402

T = fo._core._testing

# DLPack codes (dlpack.h): dtype (code, bits, lanes), device types, flags.
F16, BF16, F32, F64 = (2, 16, 1), (4, 16, 1), (2, 32, 1), (2, 64, 1)
CPU, CUDA, CUDA_HOST, ROCM, CUDA_MANAGED = 1, 2, 3, 10, 13
READ_ONLY, IS_COPIED = 1, 2
USED_V, USED = "used_dltensor_versioned", "used_dltensor"
DL_OF = {"float16": F16, "bfloat16": BF16, "float32": F32, "float64": F64}

NUMPY_HAS_V1 = tuple(int(x) for x in np.__version__.split(".")[:2]) >= (2, 1)
needs_numpy_v1 = pytest.mark.skipif(not NUMPY_HAS_V1, reason="NumPy >= 2.1 exports versioned capsules")

_capsule_name = ctypes.pythonapi.PyCapsule_GetName
_capsule_name.restype = ctypes.c_char_p
_capsule_name.argtypes = [ctypes.py_object]


def capsule_name(cap: Any) -> str:
    return _capsule_name(cap).decode()


class Producer:
    """Forwards the DLPack protocol to a NumPy array and keeps the capsules it handed out.

    ``legacy=True`` behaves like a producer older than DLPack 1.0 (TypeError on ``max_version``)."""

    def __init__(self, array: np.ndarray, legacy: bool = False) -> None:
        self.array = array
        self.legacy = legacy
        self.capsules: list[Any] = []
        self.kwargs: list[dict] = []

    def __dlpack__(self, **kw: Any) -> Any:
        self.kwargs.append(dict(kw))
        if self.legacy and "max_version" in kw:
            raise TypeError("__dlpack__() got an unexpected keyword argument 'max_version'")
        cap = self.array.__dlpack__(**kw)
        self.capsules.append(cap)
        return cap

    def __dlpack_device__(self) -> Any:
        return self.array.__dlpack_device__()


def w4(dt: Any = np.float32) -> np.ndarray:
    return np.linspace(0.5, 2.0, 4).astype(dt)


def g4(dt: Any = np.float32) -> np.ndarray:
    return np.full(4, 0.25).astype(dt)


def expected_sgd(w: np.ndarray, g: np.ndarray, **kw: Any) -> np.ndarray:
    """The NumPy fast path's result (the same kernels), for bitwise comparison."""
    out = w.copy()
    fo.sgd_update(out, g, **kw)
    return out


# ===================================================================== real producer: NumPy
@needs_numpy_v1
def test_numpy_versioned_capsule_updates_in_place_and_is_marked_used():
    w, g = w4(), g4()
    expected = expected_sgd(w, g, lr=0.5, wd=0.1)
    pw, pg = Producer(w), Producer(g)
    fo.sgd_update(pw, pg, lr=0.5, wd=0.1)
    assert_bitwise_equal(w, expected)
    for p in (pw, pg):
        assert p.kwargs == [{"max_version": (1, 0)}]  # no stream for host memory
        assert [capsule_name(c) for c in p.capsules] == [USED_V]


@needs_numpy_v1
def test_numpy_read_only_flag_refused_for_weight_accepted_for_grad():
    w, g = w4(), g4()
    g.flags.writeable = False
    expected = expected_sgd(w, g, lr=0.5)
    fo.sgd_update(Producer(w), Producer(g), lr=0.5)  # read-only grad: fine
    assert_bitwise_equal(w, expected)
    assert T.inspect(Producer(g), "grad")["read_only"] is True

    ro = w4()
    ro.flags.writeable = False
    snap = Snapshot(ro)
    with pytest.raises(ValueError, match="weight is read-only"):
        fo.sgd_update(Producer(ro), g4(), lr=0.5)
    snap.assert_unchanged()


@needs_numpy_v1
@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda b: b[::-1], id="negative-stride"),
        pytest.param(lambda b: b[::2], id="step-2"),
        pytest.param(lambda b: np.lib.stride_tricks.as_strided(b, (8,), (0,), writeable=True), id="stride-0"),
    ],
)
def test_numpy_non_contiguous_weight_refused_nothing_written(make):
    base = np.linspace(1.0, 2.0, 8).astype(np.float32)
    w = make(base)
    snap = Snapshot(base)
    with pytest.raises(ValueError, match="weight must be dense"):
        fo.sgd_update(Producer(w), np.ones(w.shape, np.float32), lr=0.5)
    snap.assert_unchanged()


@needs_numpy_v1
def test_numpy_size_one_dims_with_any_stride_are_contiguous():
    base = np.linspace(1.0, 2.0, 12).astype(np.float32)
    w = np.lib.stride_tricks.as_strided(base, (3, 1, 4), (16, 9999, 4), writeable=True)
    info = T.inspect(Producer(w))
    assert info["contiguous"] and info["strides"] is None and info["shape"] == [3, 1, 4]
    g = np.full((3, 1, 4), 0.5, np.float32)
    expected = expected_sgd(base.reshape(3, 1, 4), g, lr=0.25)
    fo.sgd_update(Producer(w), g, lr=0.25)
    assert_bitwise_equal(base.reshape(3, 1, 4), expected)


@needs_numpy_v1
def test_legacy_fallback_on_type_error():
    # An old producer: TypeError on max_version -> the plain call, a legacy capsule.
    w, g = w4(), g4()
    expected = expected_sgd(w, g, lr=0.5)
    pg = Producer(g, legacy=True)
    fo.sgd_update(w, pg, lr=0.5)
    assert pg.kwargs == [{"max_version": (1, 0)}, {}]
    assert [capsule_name(c) for c in pg.capsules] == [USED]
    assert_bitwise_equal(w, expected)


@needs_numpy_v1
def test_legacy_capsule_of_unknown_producer_is_not_written_through():
    # A legacy capsule has no READ_ONLY flag: only known producers (NumPy, torch, CuPy) are trusted.
    w = w4()
    snap = Snapshot(w)
    with pytest.raises(ValueError, match="weight: Producer exported a legacy"):
        fo.sgd_update(Producer(w, legacy=True), g4(), lr=0.5)
    snap.assert_unchanged()
    assert T.inspect(Producer(w, legacy=True), "grad")["read_only"] is True


def test_not_an_array_is_type_error():
    with pytest.raises(TypeError, match="sgd_update: weight must be a NumPy array or a DLPack tensor"):
        fo.sgd_update([1.0, 2.0], g4(), lr=0.1)


class _Returns:
    def __init__(self, value: Any = None, error: Exception | None = None) -> None:
        self.value, self.error = value, error

    def __dlpack__(self, **kw: Any) -> Any:
        if self.error is not None:
            raise self.error
        return self.value

    def __dlpack_device__(self) -> tuple[int, int]:
        return (CPU, 0)


def test_dunder_dlpack_returning_a_non_capsule_is_type_error():
    with pytest.raises(TypeError, match="grad: _Returns.__dlpack__\\(\\) returned int, not a PyCapsule"):
        fo.sgd_update(w4(), _Returns(42), lr=0.1)


def test_producer_error_keeps_its_type_and_names_the_argument():
    with pytest.raises(BufferError, match="sgd_update: weight: _Returns.__dlpack__\\(\\) failed.*nope"):
        fo.sgd_update(_Returns(error=BufferError("nope")), g4(), lr=0.1)


# ============================================================ hand-made capsules: protocol
def _weight(**kw: Any) -> tuple[Any, np.ndarray]:
    base = kw.pop("base", None)
    if base is None:
        base = w4()
    shape = kw.pop("shape", list(base.shape))
    return T.make_tensor(shape, base=base, **kw), base


# (make_tensor kwargs for the weight, exception, message, capsule consumed before the error)
FAILURES = {
    "bad-dtype-int32": (dict(dtype=(0, 32, 1)), TypeError, "weight must have dtype .* got int32", False),
    "bad-dtype-bool": (dict(dtype=(6, 8, 1)), TypeError, "got bool", False),
    "bad-lanes": (dict(dtype=(2, 32, 4)), TypeError, "float32 x 4 lanes", False),
    "device-rocm": (dict(device=(ROCM, 0)), BufferError, "weight is on DLPack device rocm", False),
    "too-many-dims": (dict(shape=[1] * 9, base=np.ones(1, np.float32)), ValueError, "at most 8", False),
    "is-copied": (dict(flags=IS_COPIED), BufferError, "weight is a copy", False),
    "legacy-unknown": (dict(versioned=False), ValueError, "legacy", False),
    "bad-name": (dict(capsule_name="bogus"), BufferError, "capsule named 'bogus'", False),
    "used-name": (dict(capsule_name=USED), BufferError, "cannot be consumed again", False),
    "major-2": (dict(version=(2, 0)), BufferError, "DLPack version 2.0", True),
    "major-0": (dict(version=(0, 9)), BufferError, "DLPack version 0.9", True),
    "negative-dim": (dict(shape=[-4]), ValueError, "negative dimension", False),
    # refused by the C++ API after a successful conversion: the holder releases the tensor
    "read-only": (dict(flags=READ_ONLY), ValueError, "weight is read-only", True),
    "non-contiguous": (dict(base=np.ones(8, np.float32), shape=[4], strides=[2]), ValueError,
                       "C-contiguous", True),
    "shape-mismatch": (dict(base=np.ones(3, np.float32)), ValueError, "shape", True),
    "null-data": (dict(base=None, address=None, shape=[4]), ValueError, "null data pointer", True),
}


@pytest.mark.parametrize("null_deleter", [False, True], ids=["deleter", "null-deleter"])
@pytest.mark.parametrize("case", list(FAILURES))
def test_deleter_called_exactly_once_on_every_error_path(case, null_deleter):
    kw, exc, msg, consumed = FAILURES[case]
    kw = dict(kw)
    if "base" in kw and kw["base"] is None:
        kw.pop("base")
        t = T.make_tensor(kw.pop("shape"), null_deleter=null_deleter, **kw)
        base = None
    else:
        t, base = _weight(null_deleter=null_deleter, **kw)
    snap = Snapshot(*([base] if base is not None else []))
    with pytest.raises(exc, match=msg):
        fo.sgd_update(t, g4(), lr=0.5)
    gc.collect()
    snap.assert_unchanged()
    assert t.calls == 1
    # a capsule that arrives already used belongs to someone else: never deleted by us
    assert t.deleter_calls == (0 if null_deleter or case == "used-name" else 1)
    assert t.deleter_calls_without_gil == 0
    name = kw.get("capsule_name", "dltensor_versioned" if kw.get("versioned", True) else "dltensor")
    # renamed to used_* only when the consumer took the tensor (after success, or to delete it)
    assert t.destroyed_capsule_names == [USED_V if consumed else name]


@pytest.mark.parametrize("versioned", [True, False], ids=["versioned", "legacy"])
@pytest.mark.parametrize("null_deleter", [False, True], ids=["deleter", "null-deleter"])
def test_success_renames_capsule_and_deletes_once_after_the_kernel(versioned, null_deleter):
    # Legacy capsules of an unknown producer are read-only, so the legacy case updates through a grad.
    w, g = w4(np.float64), g4(np.float64)
    expected = expected_sgd(w, g, lr=0.5)
    tg = T.make_tensor([4], base=g, dtype=F64, versioned=versioned, null_deleter=null_deleter)
    if versioned:
        tw = T.make_tensor([4], base=w, dtype=F64, null_deleter=null_deleter)
        fo.sgd_update(tw, tg, lr=0.5)
        tensors = [tw, tg]
    else:
        fo.sgd_update(w, tg, lr=0.5)
        tensors = [tg]
    gc.collect()
    assert_bitwise_equal(w, expected)
    for t in tensors:
        assert t.calls == 1
        assert t.destroyed_capsule_names == [USED_V if versioned else USED]
        assert t.deleter_calls == (0 if null_deleter else 1)
        assert t.deleter_calls_without_gil == 0
    if versioned and not null_deleter:
        # the deleter saw the updated weight: the tensor was kept alive for the whole kernel
        assert tensors[0].value_at_delete == expected[0]


def test_newer_minor_version_is_accepted():
    t, base = _weight(version=(1, 7))
    expected = expected_sgd(base, g4(), lr=0.5)
    fo.sgd_update(t, g4(), lr=0.5)
    assert_bitwise_equal(base, expected)
    assert t.deleter_calls == 1


def test_old_producer_fallback_calls_plain_dlpack():
    g = g4()
    tg = T.make_tensor([4], base=g, accepts_max_version=False)
    w = w4()
    expected = expected_sgd(w, g, lr=0.5)
    fo.sgd_update(w, tg, lr=0.5)
    assert tg.calls == 2
    assert [dict(k) for k in tg.call_kwargs] == [{"max_version": (1, 0)}, {}]
    assert tg.destroyed_capsule_names == [USED]
    assert_bitwise_equal(w, expected)


def test_producer_ignoring_max_version_gets_its_legacy_capsule_checked():
    g = g4()
    tg = T.make_tensor([4], base=g, versioned=False)  # accepts max_version, returns "dltensor"
    w = w4()
    expected = expected_sgd(w, g, lr=0.5)
    fo.sgd_update(w, tg, lr=0.5)
    assert tg.calls == 1 and tg.destroyed_capsule_names == [USED]
    assert_bitwise_equal(w, expected)


# ================================================================ flags: READ_ONLY, IS_COPIED
def test_read_only_flag():
    t, base = _weight(flags=READ_ONLY)
    assert T.inspect(t)["read_only"] is True
    g, w = g4(), w4()
    expected = expected_sgd(w, g, lr=0.5)
    fo.sgd_update(w, T.make_tensor([4], base=g, flags=READ_ONLY), lr=0.5)  # read-only grad: fine
    assert_bitwise_equal(w, expected)
    m = T.make_tensor([4], base=np.zeros(4, np.float32), flags=READ_ONLY)
    with pytest.raises(ValueError, match="mom is read-only"):
        fo.sgd_mom_update(w4(), g4(), m, lr=0.5, momentum=0.9)


@pytest.mark.parametrize("arg", ["weight", "mom"])
def test_is_copied_refused_for_outputs(arg):
    w, m = w4(), np.zeros(4, np.float32)
    snap = Snapshot(w, m)
    args = {"weight": w, "grad": g4(), "mom": m}
    args[arg] = T.make_tensor([4], base=args[arg], flags=IS_COPIED)
    with pytest.raises(BufferError, match=f"sgd_mom_update: {arg} is a copy made by its producer"):
        fo.sgd_mom_update(args["weight"], args["grad"], args["mom"], lr=0.5, momentum=0.9)
    snap.assert_unchanged()


def test_is_copied_grad_is_fine():
    w, g = w4(), g4()
    expected = expected_sgd(w, g, lr=0.5)
    fo.sgd_update(w, T.make_tensor([4], base=g, flags=IS_COPIED | READ_ONLY), lr=0.5)
    assert_bitwise_equal(w, expected)


# ====================================================================================== strides
@pytest.mark.parametrize(
    "shape,strides,contiguous",
    [
        ([2, 3], None, True),  # NULL strides = compact row-major (DLPack < 1.2, old NumPy)
        ([2, 3], [3, 1], True),
        ([3, 1, 4], [4, 12345, 1], True),  # size-1 dims may carry any stride
        ([1, 1], [-7, 0], True),
        ([2, 3], [1, 2], False),  # column-major
        ([4], [2], False),
        ([4], [-1], False),
        ([4], [0], False),  # broadcast: illegal for outputs
        ([2, 0, 3], [9, 9, 9], True),  # no elements: any strides
    ],
)
def test_strides_in_elements_normalised(shape, strides, contiguous):
    t = T.make_tensor(shape, address=0x10000, strides=strides)  # never dereferenced
    info = T.inspect(t)
    assert info["shape"] == shape
    assert info["contiguous"] is contiguous
    if contiguous:
        assert info["strides"] is None
    else:
        assert info["strides"] == strides
    gc.collect()
    assert t.deleter_calls == 1


def test_negative_strides_refused_without_touching_memory():
    base = np.linspace(1.0, 2.0, 4).astype(np.float32)
    # data points at the last element; the array extends below it
    t = T.make_tensor([4], address=base.ctypes.data + 3 * 4, base=base, strides=[-1])
    snap = Snapshot(base)
    with pytest.raises(ValueError, match="weight must be dense"):
        fo.sgd_update(t, g4(), lr=0.5)
    with pytest.raises(ValueError, match="grad must have the strides of weight"):
        fo.sgd_update(w4(), T.make_tensor([4], address=base.ctypes.data + 12, base=base, strides=[-1]), lr=0.5)
    snap.assert_unchanged()


def test_null_strides_update():
    base = np.linspace(1.0, 2.0, 6).astype(np.float32)
    g = np.full((2, 3), 0.5, np.float32)
    expected = expected_sgd(base.reshape(2, 3), g, lr=0.5)
    fo.sgd_update(T.make_tensor([2, 3], base=base), g, lr=0.5)
    assert_bitwise_equal(base.reshape(2, 3), expected)


# ================================================================================== byte_offset
@pytest.mark.parametrize("n", [1, 7, 33, 1000])
@pytest.mark.parametrize("offset", [0, 1, 3])
@pytest.mark.parametrize("dtype_name", ["float16", pytest.param("bfloat16", marks=pytest.mark.needs_ml_dtypes),
                                        "float32", "float64"])
def test_byte_offset_added_and_unaligned_data_works(dtype_name, offset, n, rng):
    dt = ref.resolve_dtype(dtype_name)
    base = ref.round_to(rng.standard_normal(offset + n + 3), dt)
    mom_base = ref.round_to(0.1 * rng.standard_normal(offset + n + 3), dt)
    g = ref.round_to(rng.standard_normal(n), dt)
    expected, expected_mom = base.copy(), mom_base.copy()
    fo.sgd_mom_update(expected[offset:offset + n], g, expected_mom[offset:offset + n], lr=0.1,
                      momentum=0.9, wd=0.01)
    kw = dict(byte_offset=offset * dt.itemsize, dtype=DL_OF[dtype_name])
    tw = T.make_tensor([n], base=base, **kw)
    tm = T.make_tensor([n], base=mom_base, **kw)
    assert T.inspect(tw)["data"] == base.ctypes.data + offset * dt.itemsize
    fo.sgd_mom_update(tw, g, tm, lr=0.1, momentum=0.9, wd=0.01)
    assert_bitwise_equal(base, expected)  # guards before and after untouched too
    assert_bitwise_equal(mom_base, expected_mom)


# ======================================================================================== dtype
@pytest.mark.parametrize(
    "dtype,got",
    [
        ((0, 32, 1), "int32"), ((1, 8, 1), "uint8"), ((6, 8, 1), "bool"), ((5, 64, 1), "complex64"),
        ((2, 8, 1), "float8"), ((10, 8, 1), "float8_e4m3fn"), ((17, 4, 1), "float4_e2m1fn"), ((42, 8, 1), "DLPack type code 42"), ((4, 32, 1), "bfloat32"),
        ((2, 32, 2), "float32 x 2 lanes"), ((2, 16, 4), "float16 x 4 lanes"),
    ],
)
def test_unsupported_dtype_is_type_error_naming_the_argument(dtype, got):
    t = T.make_tensor([4], address=0x10000, dtype=dtype)
    with pytest.raises(TypeError, match=f"sgd_update: grad must have dtype float16, bfloat16, float32 or float64, got {got}"):
        fo.sgd_update(w4(), t, lr=0.5)
    gc.collect()
    assert t.deleter_calls == 1


@pytest.mark.parametrize("dtype_name", list(DL_OF))
def test_supported_dtypes(dtype_name):
    assert T.inspect(T.make_tensor([4], address=0x10000, dtype=DL_OF[dtype_name]))["dtype"] == dtype_name


# ======================================================================================= device
@pytest.mark.parametrize("device_type", [4, 7, 8, ROCM, 11, 12, 14, 15, 99])
def test_unsupported_device_is_buffer_error(device_type):
    t = T.make_tensor([4], address=0x10000, device=(device_type, 0))
    with pytest.raises(BufferError, match="weight is on DLPack device"):
        fo.sgd_update(t, g4(), lr=0.5)
    gc.collect()
    assert t.deleter_calls == 1
    assert "stream" not in t.call_kwargs[0]


@pytest.mark.parametrize("device_type", [CUDA_HOST, CUDA_MANAGED])
def test_host_accessible_cuda_memory_runs_on_the_cpu(device_type):
    w, g = w4(), g4()
    expected = expected_sgd(w, g, lr=0.5)
    tw = T.make_tensor([4], base=w, device=(device_type, 0))
    tg = T.make_tensor([4], base=g, device=(device_type, 0))
    assert T.inspect(tw)["device"] == (device_type, 0)
    fo.sgd_update(tw, tg, lr=0.5)
    assert_bitwise_equal(w, expected)


def test_device_ids_must_match():
    w, g = w4(), g4()
    snap = Snapshot(w, g)
    with pytest.raises(ValueError, match="grad must be on the device of weight"):
        fo.sgd_update(T.make_tensor([4], base=w, device=(CUDA_MANAGED, 0)),
                      T.make_tensor([4], base=g, device=(CUDA_MANAGED, 1)), lr=0.5)
    snap.assert_unchanged()


def test_cuda_tensor_gets_a_stream_and_is_never_dereferenced_on_the_host():
    # A bogus device address: only its (mismatched) device is looked at.
    t = T.make_tensor([4], address=0xDEAD0000, device=(CUDA, 3))
    w = w4()
    snap = Snapshot(w)
    with pytest.raises(ValueError, match="grad must be on the device of weight"):
        fo.sgd_update(w, t, lr=0.5)
    snap.assert_unchanged()
    # unknown producer: the legacy default stream, spelled 1 (never None or 0)
    assert dict(t.call_kwargs[0]) == {"max_version": (1, 0), "stream": 1}
    info = T.inspect(T.make_tensor([4], address=0xDEAD0000, device=(CUDA, 3)))
    assert info["device"] == (CUDA, 3) and info["stream"] == 0  # 0 = fusedopt's default Stream


@pytest.mark.skipif(fusedopt.cuda.built_with_cuda(), reason="this build has CUDA kernels")
def test_cuda_tensor_without_cuda_build_is_value_error():
    tw = T.make_tensor([4], address=0xDEAD0000, device=(CUDA, 0))
    tg = T.make_tensor([4], address=0xDEAE0000, device=(CUDA, 0))
    with pytest.raises(ValueError, match="built without CUDA"):
        fo.sgd_update(tw, tg, lr=0.5)
    gc.collect()
    assert tw.deleter_calls == 1 and tg.deleter_calls == 1


def test_cpu_device_id_is_normalised():
    w, g = w4(), g4()
    expected = expected_sgd(w, g, lr=0.5)
    fo.sgd_update(T.make_tensor([4], base=w, device=(CPU, 5)), g, lr=0.5)
    assert_bitwise_equal(w, expected)


# ============================================================================ sizes and shapes
def test_size_zero_with_null_data_is_a_no_op():
    tw, tg = T.make_tensor([0]), T.make_tensor([0])
    assert T.inspect(T.make_tensor([3, 0, 2]))["data"] == 0
    fo.sgd_update(tw, tg, lr=0.5)
    fo.sgd_mom_update(T.make_tensor([3, 0, 2]), T.make_tensor([3, 0, 2]), T.make_tensor([3, 0, 2]),
                      lr=0.5, momentum=0.9)
    gc.collect()
    assert tw.deleter_calls == 1 and tg.deleter_calls == 1


@pytest.mark.parametrize("position", ["first", "middle", "last"])
def test_size_zero_tensor_in_an_aggregated_call(position, rng):
    ws = [rng.standard_normal(n).astype(np.float32) for n in (5, 17)]
    gs = [rng.standard_normal(n).astype(np.float32) for n in (5, 17)]
    expected = [expected_sgd(w, g, lr=0.1, wd=0.01) for w, g in zip(ws, gs)]
    wt = [T.make_tensor([n], base=w) for n, w in zip((5, 17), ws)]
    empty_w, empty_g = T.make_tensor([0]), T.make_tensor([0])
    pairs = [(wt[0], gs[0]), (wt[1], gs[1])]
    pairs.insert({"first": 0, "middle": 1, "last": 2}[position], (empty_w, empty_g))
    arrays = [a for pair in pairs for a in pair]
    fo.multi_sgd_update(arrays, lrs=[0.1] * 3, wds=[0.01] * 3)
    for w, e in zip(ws, expected):
        assert_bitwise_equal(w, e)
    gc.collect()
    assert all(t.deleter_calls == 1 for t in (*wt, empty_w, empty_g))


def test_zero_dim_tensor_with_null_shape():
    w = np.array(1.5, np.float32)
    g = np.array(0.5, np.float32)
    expected = expected_sgd(w, g, lr=0.5)
    t = T.make_tensor([], base=w)
    assert T.inspect(t)["shape"] == []
    fo.sgd_update(t, g, lr=0.5)
    assert_bitwise_equal(w, expected)


@pytest.mark.parametrize("shape", [[2**62, 4], [2**40, 2**40], [2**62]])
def test_element_and_byte_counts_are_overflow_checked(shape):
    t = T.make_tensor(shape, address=0x10000)
    with pytest.raises(ValueError, match="fit in 64 bits"):
        T.inspect(t)
    gc.collect()
    assert t.deleter_calls == 1


def test_more_than_eight_dims():
    with pytest.raises(ValueError, match="inspect: weight has 9 dimensions; fusedopt supports at most 8"):
        T.inspect(T.make_tensor([1] * 9, address=0x10000))
    assert T.inspect(T.make_tensor([1] * 8, address=0x10000))["shape"] == [1] * 8


# ==================================================================== aliasing and mixing
def test_dlpack_grad_aliasing_the_weight_is_refused():
    w = w4()
    snap = Snapshot(w)
    with pytest.raises(ValueError, match="overlaps"):
        fo.sgd_update(w, T.make_tensor([4], base=w), lr=0.5)
    with pytest.raises(ValueError, match="overlaps"):
        fo.sgd_mom_update(T.make_tensor([4], base=w), g4(), T.make_tensor([4], base=w, flags=0),
                          lr=0.5, momentum=0.9)
    snap.assert_unchanged()


def test_numpy_and_dlpack_arguments_mix():
    w, g, m = w4(), g4(), np.full(4, 0.1, np.float32)
    ew, em = w.copy(), m.copy()
    fo.sgd_mom_update(ew, g, em, lr=0.5, momentum=0.9)
    fo.sgd_mom_update(w, T.make_tensor([4], base=g), T.make_tensor([4], base=m), lr=0.5, momentum=0.9)
    assert_bitwise_equal(w, ew)
    assert_bitwise_equal(m, em)


def test_jax_arrays_are_never_written():
    jnp = pytest.importorskip("jax.numpy")
    w = jnp.ones(4, dtype=jnp.float32)
    with pytest.raises(TypeError, match="immutable"):
        fo.sgd_update(w, g4(), lr=0.5)
    out = w4()
    fo.sgd_update(out, jnp.full(4, 0.25, dtype=jnp.float32), lr=0.5)  # a JAX grad is only read
    assert_bitwise_equal(out, expected_sgd(w4(), g4(), lr=0.5))
