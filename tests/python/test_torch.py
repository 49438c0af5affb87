"""PyTorch tensors end to end: the functional kernels, SGD / DCASGD (fused and reference step),
multi-precision, the Updater's save/load, and the zero-copy rules, each compared with the same run on
NumPy arrays. On the CPU the results must be bitwise equal (the same kernels); on CUDA they agree to the
tolerance table (FMA contraction). The device is parametrised: cpu always, cuda when both torch and
fusedopt see a GPU.
"""
from __future__ import annotations

import threading
import warnings
from typing import Any, Callable

import numpy as np
import pytest

import reference as ref
from helpers import Snapshot, assert_bitwise_equal, assert_close, import_fusedopt

torch = pytest.importorskip("torch")
fo = import_fusedopt()
import fusedopt.cuda  # noqa: E402
from fusedopt import _arrays  # noqa: E402

T = fo._core._testing

HAVE_CUDA = torch.cuda.is_available() and fusedopt.cuda.is_available()
DEVICES = ["cpu"] + (["cuda"] if HAVE_CUDA else [])
needs_cuda = pytest.mark.skipif(not HAVE_CUDA, reason="needs a CUDA device seen by torch and fusedopt")

TORCH_DTYPE = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
               "float64": torch.float64}


def _dtype_param(name: str) -> Any:
    marks = [pytest.mark.needs_ml_dtypes] if name == "bfloat16" else []
    return pytest.param(name, id=name, marks=marks)


ALL_DTYPES = [_dtype_param(n) for n in ("float32", "float64", "float16", "bfloat16")]
LOW_DTYPES = [_dtype_param(n) for n in ("float16", "bfloat16")]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    return request.param


# ------------------------------------------------------------------------------------ helpers
def to_torch(a: np.ndarray, device: str) -> Any:
    """A new torch tensor on ``device`` with a's values (bfloat16 through its bits)."""
    a = np.array(a, copy=True, order="C")
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16).to(device)
    return torch.from_numpy(a).to(device)


def to_np(t: Any) -> np.ndarray:
    return np.array(_arrays.to_numpy(t), copy=True)


def tree_map(fn: Callable[[Any], Any], x: Any) -> Any:
    if x is None:
        return None
    if isinstance(x, (tuple, list)):
        return tuple(tree_map(fn, v) for v in x)
    return fn(x)


def tree_leaves(x: Any) -> list[Any]:
    if x is None:
        return []
    if isinstance(x, (tuple, list)):
        return [leaf for v in x for leaf in tree_leaves(v)]
    return [x]


def check_same(actual: Any, expected: np.ndarray, device: str, weight_dtype: str, *,
               role: str = "weight", mp: bool = False) -> None:
    """Bitwise on the CPU (same kernels); the tolerance table on CUDA."""
    got = to_np(actual)
    if device == "cpu":
        assert_bitwise_equal(got, expected)
    else:
        assert_close(got, expected, ref.resolve_dtype(weight_dtype), role=role, multi_precision=mp)


def rand(rng: np.random.Generator, shape: Any, dtype_name: str, scale: float = 1.0) -> np.ndarray:
    return ref.round_to(scale * rng.standard_normal(shape), ref.resolve_dtype(dtype_name))


class Producer:
    """Forwards the DLPack protocol to a NumPy array (NumPy >= 2.1: versioned capsules)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __dlpack__(self, **kw: Any) -> Any:
        return self.array.__dlpack__(**kw)

    def __dlpack_device__(self) -> Any:
        return self.array.__dlpack_device__()


# ============================================================================ functional kernels
HP = dict(lr=0.1, wd=0.01, rescale_grad=0.5, clip_gradient=1.0)
SIZES = (37, 0, 5)  # a zero-size tensor in the middle of aggregated calls


def _state(rng: np.random.Generator, dtype_name: str) -> dict[str, np.ndarray]:
    s: dict[str, np.ndarray] = {}
    for k, n in enumerate(SIZES):
        s[f"w{k}"] = rand(rng, n, dtype_name)
        s[f"m{k}"] = rand(rng, n, dtype_name, 0.1)
        s[f"prev{k}"] = rand(rng, n, dtype_name)
        s[f"w32_{k}"] = s[f"w{k}"].astype(np.float32)
        s[f"m32_{k}"] = rand(rng, n, "float32", 0.1)
        s[f"prev32_{k}"] = rand(rng, n, "float32")
    return s


def _multi(a: dict, g: list, keys: tuple[str, ...]) -> list[Any]:
    out: list[Any] = []
    for k in range(len(SIZES)):
        out.append(a[f"w{k}"])
        out.append(g[k])
        out += [a[f"{key}{k}"] for key in keys]
    return out


MULTI = dict(lrs=[0.1, 0.2, 0.05], wds=[0.01, 0.0, 0.02], rescale_grad=0.5, clip_gradient=1.0)
DC = dict(lamda=0.04, **HP)
OPS: dict[str, tuple[bool, Callable[[dict, list], None]]] = {
    "sgd_update": (False, lambda a, g: fo.sgd_update(a["w0"], g[0], **HP)),
    "sgd_mom_update": (False, lambda a, g: fo.sgd_mom_update(a["w0"], g[0], a["m0"], momentum=0.9, **HP)),
    "mp_sgd_update": (True, lambda a, g: fo.mp_sgd_update(a["w0"], g[0], a["w32_0"], **HP)),
    "mp_sgd_mom_update": (True, lambda a, g: fo.mp_sgd_mom_update(a["w0"], g[0], a["m32_0"], a["w32_0"],
                                                                  momentum=0.9, **HP)),
    "dcasgd_update": (False, lambda a, g: fo.dcasgd_update(a["w0"], g[0], a["m0"], a["prev0"], momentum=0.9, **DC)),
    "dcasgd_update-nomom": (False, lambda a, g: fo.dcasgd_update(a["w0"], g[0], None, a["prev0"], **DC)),
    "mp_dcasgd_update": (True, lambda a, g: fo.mp_dcasgd_update(a["w0"], g[0], a["m32_0"], a["prev32_0"],
                                                                a["w32_0"], momentum=0.9, **DC)),
    "multi_sgd_update": (False, lambda a, g: fo.multi_sgd_update(_multi(a, g, ()), **MULTI)),
    "multi_sgd_mom_update": (False, lambda a, g: fo.multi_sgd_mom_update(_multi(a, g, ("m",)), momentum=0.9,
                                                                         **MULTI)),
    "multi_mp_sgd_update": (True, lambda a, g: fo.multi_mp_sgd_update(_multi(a, g, ("w32_",)), **MULTI)),
    "multi_mp_sgd_mom_update": (True, lambda a, g: fo.multi_mp_sgd_mom_update(
        _multi(a, g, ("m32_", "w32_")), momentum=0.9, **MULTI)),
}
OP_CASES = [
    pytest.param(op, d.values[0], id=f"{op}-{d.values[0]}", marks=d.marks)
    for op, (mp, _) in OPS.items()
    for d in (LOW_DTYPES if mp else ALL_DTYPES)
]


@pytest.mark.parametrize("op,dtype_name", OP_CASES)
def test_functional_kernels_match_numpy(op, dtype_name, device, rng):
    mp, fn = OPS[op]
    init = _state(rng, dtype_name)
    grads = [[rand(rng, n, dtype_name) for n in SIZES] for _ in range(3)]
    expected = {k: v.copy() for k, v in init.items()}
    tensors = {k: to_torch(v, device) for k, v in init.items()}
    ptrs = {k: t.data_ptr() for k, t in tensors.items()}
    for g in grads:
        fn(expected, g)
        fn(tensors, [to_torch(x, device) for x in g])
    for k, t in tensors.items():
        assert t.data_ptr() == ptrs[k]  # in place
        role = "weight" if k.startswith("w") and not k.startswith("w32") else "state"
        if k.startswith("w32"):
            role = "master"
        check_same(t, expected[k], device, dtype_name, role=role, mp=mp)


# ============================================================================ optimizer classes
OPT_CASES = [
    pytest.param("float32", False, id="float32"),
    pytest.param("float64", False, id="float64"),
    pytest.param("float16", False, id="float16"),
    pytest.param("float16", True, id="float16-mp"),
    pytest.param("bfloat16", False, id="bfloat16", marks=pytest.mark.needs_ml_dtypes),
    pytest.param("bfloat16", True, id="bfloat16-mp", marks=pytest.mark.needs_ml_dtypes),
]
OPTIMIZERS = {
    "sgd": lambda **kw: fo.SGD(learning_rate=0.1, momentum=0.9, wd=0.01, clip_gradient=1.0, **kw),
    "sgd-nomom-agg": lambda **kw: fo.SGD(learning_rate=0.1, wd=0.01, aggregate_num=4, **kw),
    "sgd-agg": lambda **kw: fo.SGD(learning_rate=0.1, momentum=0.9, aggregate_num=4, **kw),
    "dcasgd": lambda **kw: fo.DCASGD(learning_rate=0.1, momentum=0.9, wd=0.01, **kw),
    "dcasgd-nomom": lambda **kw: fo.DCASGD(learning_rate=0.1, lamda=0.1, **kw),
}
SHAPES = [(3, 5), (0,), (7,), ()]


def _run(opt: Any, weights: list, grads: list[list]) -> list[Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # fp16 without multi_precision warns (SPEC)
        states = [opt.create_state_multi_precision(i, w) for i, w in enumerate(weights)]
    idx = list(range(len(weights)))
    for g in grads:
        opt.update_multi_precision(idx, weights, g, states)
    return states


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "step"])
@pytest.mark.parametrize("dtype_name,mp", OPT_CASES)
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_on_torch_matches_numpy(name, dtype_name, mp, fused, device, rng):
    if device != "cpu" and not fused:
        pytest.skip("the reference step is host-only (see test_reference_step_refuses_device_tensors)")
    init = [rand(rng, s, dtype_name) for s in SHAPES]
    grads = [[rand(rng, s, dtype_name) for s in SHAPES] for _ in range(3)]
    np_w = [w.copy() for w in init]
    np_states = _run(OPTIMIZERS[name](multi_precision=mp, use_fused_step=fused), np_w, grads)
    t_w = [to_torch(w, device) for w in init]
    ptrs = [w.data_ptr() for w in t_w]
    t_states = _run(OPTIMIZERS[name](multi_precision=mp, use_fused_step=fused), t_w,
                    [[to_torch(g, device) for g in gs] for gs in grads])
    for w, e, p in zip(t_w, np_w, ptrs):
        assert w.data_ptr() == p
        check_same(w, e, device, dtype_name, mp=mp)
    for st, est, w in zip(t_states, np_states, t_w):
        leaves, eleaves = tree_leaves(st), tree_leaves(est)
        assert len(leaves) == len(eleaves)
        for leaf, e in zip(leaves, eleaves):
            # states live in the weight's library and device, with the NumPy run's dtype
            assert isinstance(leaf, torch.Tensor) and leaf.device == w.device
            assert _arrays.dtype_name(leaf) == e.dtype.name
            check_same(leaf, e, device, dtype_name, role="state", mp=mp)


def test_states_are_torch_tensors_on_the_weights_device(device):
    w = torch.randn(4, 3, dtype=torch.bfloat16, device=device)
    st = fo.SGD(momentum=0.9).create_state(0, w)
    assert isinstance(st, torch.Tensor) and st.dtype == torch.bfloat16 and st.device == w.device
    assert st.shape == w.shape and not st.any()
    w32, mom = fo.SGD(momentum=0.9, multi_precision=True).create_state_multi_precision(0, w)
    assert w32.dtype == mom.dtype == torch.float32 and w32.device == mom.device == w.device
    assert torch.equal(w32, w.float()) and w32.is_contiguous()
    mom, prev = fo.DCASGD(momentum=0.9).create_state(0, w)
    assert torch.equal(prev, w) and prev.data_ptr() != w.data_ptr()


# ================================================================================= nn.Parameter
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "step"])
@pytest.mark.parametrize("opt_name", ["sgd", "dcasgd"])
def test_parameters_update_in_place_after_backward(opt_name, fused, device):
    if device != "cpu" and not fused:
        pytest.skip("the reference step is host-only")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).to(device)
    params = list(model.parameters())
    np_w = [to_np(p) for p in params]
    ptrs = [p.data_ptr() for p in params]
    updater = fo.Updater(OPTIMIZERS[opt_name](use_fused_step=fused))
    np_updater = fo.Updater(OPTIMIZERS[opt_name](use_fused_step=fused))
    idx = list(range(len(params)))
    x = torch.randn(8, 6, device=device)
    for _ in range(3):
        model.zero_grad()
        model(x).pow(2).mean().backward()
        updater(idx, [p.grad for p in params], params)  # Parameters (requires_grad) as weights
        np_updater(idx, [to_np(p.grad) for p in params], np_w)  # the same grads on NumPy copies
        assert all(isinstance(p, torch.nn.Parameter) and p.requires_grad for p in params)
        assert [p.data_ptr() for p in params] == ptrs
        for p, e in zip(params, np_w):
            check_same(p, e, device, "float32")
    for st in updater.states.values():
        assert all(isinstance(leaf, torch.Tensor) and not leaf.requires_grad for leaf in tree_leaves(st))
    model(x).sum().backward()  # autograd still works on the updated parameters


def test_requires_grad_grad_is_accepted_and_not_modified(device):
    w = torch.ones(5, device=device)
    g = torch.full((5,), 0.5, device=device, requires_grad=True)
    fo.sgd_update(w, g, lr=0.5)
    assert g.requires_grad and torch.equal(g.detach(), torch.full((5,), 0.5, device=device))
    assert torch.equal(w, torch.full((5,), 0.75, device=device))
    leaf = torch.nn.Parameter(torch.ones(5, device=device))
    fo.sgd_update(leaf, g * 2, lr=0.5)  # a non-leaf grad that requires grad, a Parameter weight
    assert torch.equal(leaf.detach(), torch.full((5,), 0.5, device=device))


# ================================================================================== Updater
@pytest.mark.parametrize("dtype_name,mp", OPT_CASES)
@pytest.mark.parametrize("opt_name", ["sgd-agg", "dcasgd"])
def test_updater_save_load_continues_exactly(opt_name, dtype_name, mp, device, rng):
    _save_load_roundtrip(opt_name, dtype_name, mp, device, rng, [(3, 5), (0,), (7,)])


def test_updater_save_load_zero_dim_weight(rng):
    _save_load_roundtrip("sgd-agg", "float32", False, "cpu", rng, [(), (3,)])


def _save_load_roundtrip(opt_name: str, dtype_name: str, mp: bool, device: str,
                         rng: np.random.Generator, shapes: list[tuple[int, ...]]) -> None:
    fused = True
    init = [rand(rng, s, dtype_name) for s in shapes]
    grads = [[to_torch(rand(rng, s, dtype_name), device) for s in shapes] for _ in range(4)]
    idx = list(range(len(shapes)))

    def updater() -> Any:
        return fo.Updater(OPTIMIZERS[opt_name](multi_precision=mp, use_fused_step=fused))

    straight = [to_torch(w, device) for w in init]
    u = updater()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for g in grads:
            u(idx, g, straight)
        resumed = [to_torch(w, device) for w in init]
        u1 = updater()
        for g in grads[:2]:
            u1(idx, g, resumed)
        blob = u1.get_states(dump_optimizer=True)
        u2 = updater()
        u2.set_states(blob)
        for g in grads[2:]:
            u2(idx, g, resumed)
    for a, b in zip(resumed, straight):
        assert_bitwise_equal(to_np(a), to_np(b))
    for i, w in enumerate(resumed):
        for leaf in tree_leaves(u2.states[i]):
            assert isinstance(leaf, torch.Tensor) and leaf.device == w.device


# ========================================================================== zero-copy rules
@pytest.mark.parametrize(
    "make,dense",
    [
        pytest.param(lambda t: t.t(), True, id="transpose"),
        pytest.param(lambda t: t[:, ::2], False, id="step-2"),
        pytest.param(lambda t: t[0].expand(6, 8), False, id="expand-stride-0"),
        pytest.param(lambda t: t.reshape(1, 6, 2, 4).contiguous(memory_format=torch.channels_last),
                     True, id="channels-last"),
    ],
)
@pytest.mark.parametrize("arg", ["weight", "grad", "mom"])
def test_non_contiguous_tensor_refused_and_nothing_written(make, dense, arg, device):
    """A non-contiguous array among contiguous ones: a dense layout (transposed, channels_last) is
    fine on its own but must be shared by every array of the update; a gapped or broadcast one is
    refused as a weight."""
    base = torch.arange(48, dtype=torch.float32, device=device).reshape(6, 8) / 7
    view = make(base)
    assert not view.is_contiguous()
    args = {"weight": torch.ones(view.shape, device=device), "grad": torch.ones(view.shape, device=device),
            "mom": torch.zeros(view.shape, device=device)}
    args[arg] = view
    saved = {k: v.clone() for k, v in args.items()}
    base_before = base.clone()
    if arg != "weight":
        expected = f"{arg} must have the strides of weight"
    else:
        expected = "grad must have the strides of weight" if dense else "weight must be dense"
    with pytest.raises(ValueError, match=f"sgd_mom_update: {expected}"):
        fo.sgd_mom_update(args["weight"], args["grad"], args["mom"], lr=0.1, momentum=0.9)
    for k, v in args.items():
        assert torch.equal(v, saved[k])
    assert torch.equal(base, base_before)


def test_contiguous_views_are_accepted(device):
    base = torch.ones(4, 6, device=device)
    for view in (base[1:3], base[2], base.view(24)[5:]):
        assert view.is_contiguous()
        expected = view.clone() - 0.5 * 0.25
        fo.sgd_update(view, torch.full(view.shape, 0.25, device=device), lr=0.5)
        assert torch.equal(view, expected)
    # a size-1 dim with an arbitrary stride
    w = torch.ones(3, 4, device=device).as_strided((3, 1, 4), (4, 1000, 1))
    fo.sgd_update(w, torch.ones(3, 1, 4, device=device), lr=0.5)
    assert torch.equal(w, torch.full((3, 1, 4), 0.5, device=device))


def test_unaligned_slice_matches_numpy(rng):
    data = rand(rng, 1001, "float32")
    g = rand(rng, 1000, "float32")
    expected = data.copy()
    fo.sgd_update(expected[1:], g, lr=0.1, wd=0.01)
    t = torch.from_numpy(data.copy())
    fo.sgd_update(t[1:], torch.from_numpy(g), lr=0.1, wd=0.01)
    assert_bitwise_equal(t.numpy(), expected)


@pytest.mark.skipif(tuple(int(x) for x in np.__version__.split(".")[:2]) < (2, 1),
                    reason="NumPy >= 2.1 exports versioned capsules with READ_ONLY")
def test_read_only_numpy_through_dlpack():
    ro = np.linspace(1, 2, 4).astype(np.float32)
    ro.flags.writeable = False
    snap = Snapshot(ro)
    with pytest.raises(ValueError, match="sgd_update: weight is read-only"):
        fo.sgd_update(Producer(ro), torch.ones(4), lr=0.5)
    snap.assert_unchanged()
    w = torch.ones(4)
    fo.sgd_update(w, Producer(ro), lr=0.5)  # a read-only grad is fine
    assert torch.equal(w, torch.from_numpy(1 - 0.5 * ro.copy()))


def test_torch_legacy_capsule_is_trusted():
    class LegacyTensor(torch.Tensor):
        """A producer from before DLPack 1.0: no max_version, legacy capsules."""

        def __dlpack__(self, stream: Any = None) -> Any:  # noqa: D105
            return torch.Tensor.__dlpack__(self, stream=stream)

    w = torch.ones(4).as_subclass(LegacyTensor)
    fo.sgd_update(w, torch.ones(4), lr=0.5)  # torch tensors are writable: legacy is trusted
    assert torch.equal(w.as_subclass(torch.Tensor), torch.full((4,), 0.5))


@pytest.mark.parametrize(
    "dtype",
    [torch.int32, torch.int64, torch.uint8, torch.bool, torch.complex64, torch.float8_e4m3fn,
     torch.float8_e5m2],
    ids=str,
)
@pytest.mark.parametrize("arg", ["weight", "grad"])
def test_unsupported_torch_dtype_is_type_error(dtype, arg, device):
    w = torch.ones(4, device=device)
    bad = torch.zeros(4, device=device).to(dtype)
    with pytest.raises(TypeError, match=f"sgd_update: {arg} must have dtype float16, bfloat16, float32 or float64"):
        fo.sgd_update(bad if arg == "weight" else w, bad if arg == "grad" else torch.ones(4, device=device),
                      lr=0.5)
    assert torch.equal(w, torch.ones(4, device=device))


def test_shapes_zero_size_zero_dim_and_too_many_dims(device):
    fo.sgd_update(torch.empty(0, device=device), torch.empty(0, device=device), lr=0.5)
    fo.sgd_update(torch.empty(3, 0, device=device), torch.empty(3, 0, device=device), lr=0.5)
    s = torch.tensor(2.0, device=device)
    fo.sgd_update(s, torch.tensor(1.0, device=device), lr=0.5)
    assert s.item() == 1.5
    big = torch.ones([1] * 9, device=device)
    with pytest.raises(ValueError, match="weight has 9 dimensions; fusedopt supports at most 8"):
        fo.sgd_update(big, big.clone(), lr=0.5)


@pytest.mark.parametrize("position", [0, 1, 2])
def test_zero_size_tensor_in_aggregated_sgd(position, device, rng):
    shapes = [(5,), (9, 2)]
    shapes.insert(position, (0,))
    init = [rand(rng, s, "float32") for s in shapes]
    grads = [rand(rng, s, "float32") for s in shapes]
    np_w = [w.copy() for w in init]
    t_w = [to_torch(w, device) for w in init]
    for ws, gs in ((np_w, grads), (t_w, [to_torch(g, device) for g in grads])):
        opt = fo.SGD(learning_rate=0.1, momentum=0.9, aggregate_num=8)
        states = [opt.create_state(i, w) for i, w in enumerate(ws)]
        opt.update(list(range(3)), ws, gs, states)
    for t, e in zip(t_w, np_w):
        check_same(t, e, device, "float32")


def test_aliasing_is_refused(device):
    w = torch.linspace(1, 2, 8, device=device)
    before = w.clone()
    with pytest.raises(ValueError, match="overlaps"):
        fo.sgd_update(w, w, lr=0.5)
    with pytest.raises(ValueError, match="overlaps"):
        fo.sgd_mom_update(w[:4], torch.ones(4, device=device), w[2:6], lr=0.5, momentum=0.9)
    with pytest.raises(ValueError, match="overlaps"):
        fo.multi_sgd_update([w, torch.ones(8, device=device), w, torch.ones(8, device=device)],
                            lrs=[0.1, 0.1], wds=[0.0, 0.0])
    assert torch.equal(w, before)


def test_numpy_and_torch_arguments_mix_on_the_cpu():
    w = torch.ones(4)
    fo.sgd_update(w, np.full(4, 0.5, np.float32), lr=0.5)
    m = np.zeros(4, np.float32)
    fo.sgd_mom_update(np.ones(4, np.float32), torch.ones(4), torch.from_numpy(m), lr=0.5, momentum=0.9)
    assert torch.equal(w, torch.full((4,), 0.75)) and (m == -0.5).all()


@pytest.mark.parametrize("dtype_name", ["float16", _dtype_param("bfloat16"), "float32", "float64"])
def test_numpy_view_shares_memory(dtype_name):
    t = torch.zeros(2, 3, dtype=TORCH_DTYPE[dtype_name], requires_grad=dtype_name == "float32")
    v = _arrays.numpy_view(t)
    assert v.dtype.name == dtype_name and v.shape == (2, 3)
    v[1, 2] = 1.5
    assert t[1, 2].item() == 1.5
    assert _arrays.numpy_view((None, t, (t,)))[2][0].dtype.name == dtype_name


def test_reference_step_refuses_host_inaccessible_tensors():
    # "meta" tensors stand in for device memory on a machine without a GPU.
    m = torch.empty(3, device="meta")
    with pytest.raises(TypeError, match="use use_fused_step=True"):
        _arrays.numpy_view(m)


@needs_cuda
def test_reference_step_refuses_device_tensors():
    w, g = torch.ones(4, device="cuda"), torch.ones(4, device="cuda")
    opt = fo.SGD(learning_rate=0.1, use_fused_step=False)
    with pytest.raises(TypeError, match="use_fused_step=True"):
        opt.update(0, w, g, opt.create_state(0, w))
    d = fo.DCASGD(learning_rate=0.1, use_fused_step=False)
    with pytest.raises(TypeError, match="the default of SGD and DCASGD"):
        d.update(0, w, g, d.create_state(0, w))
    assert torch.equal(w, torch.ones(4, device="cuda"))


@needs_cuda
def test_mixed_devices_are_refused():
    w = torch.ones(4, device="cuda")
    with pytest.raises(ValueError, match="device"):
        fo.sgd_update(w, torch.ones(4), lr=0.5)
    with pytest.raises(ValueError, match="device"):
        fo.sgd_update(torch.ones(4), torch.ones(4, device="cuda"), lr=0.5)
    assert torch.equal(w, torch.ones(4, device="cuda"))


@needs_cuda
def test_cuda_kernels_run_on_the_current_stream():
    n = 1 << 22
    w = torch.ones(n, device="cuda")
    g = torch.full((n,), 0.5, device="cuda")
    assert T.inspect(w)["stream"] == 0  # the default stream: fusedopt's null Stream
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        assert T.inspect(w)["stream"] == s.cuda_stream
        g2 = g * 2  # queued on s; the update must see it without a host sync
        fo.sgd_update(w, g2, lr=0.5)
        w.mul_(2)  # ordered after the update on s
    s.synchronize()
    assert torch.equal(w, torch.zeros(n, device="cuda"))


def test_threads_update_different_parameters(rng):
    ws = [torch.from_numpy(rand(rng, 10000, "float32")) for _ in range(8)]
    gs = [torch.from_numpy(rand(rng, 10000, "float32")) for _ in range(8)]
    expected = [to_np(w) for w in ws]
    for e, g in zip(expected, gs):
        for _ in range(20):
            fo.sgd_update(e, g.numpy(), lr=0.01)

    def work(k: int) -> None:
        for _ in range(20):
            fo.sgd_update(ws[k], gs[k], lr=0.01)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w, e in zip(ws, expected):
        assert_bitwise_equal(to_np(w), e)


# ------------------------------------------------------------------------------------------------
# The DLPack C exchange API (type(t).__dlpack_c_exchange_api__): PyTorch tensors are read through the
# producer's function table, without __dlpack__, a capsule or a deleter per argument. The results,
# the errors and the streams must be those of the __dlpack__ path.

class _exchange_disabled:
    def __enter__(self) -> None:
        self.was = T.set_exchange_enabled(False)

    def __exit__(self, *exc: Any) -> None:
        T.set_exchange_enabled(self.was)


HAS_EXCHANGE = hasattr(torch.Tensor, "__dlpack_c_exchange_api__")
needs_exchange = pytest.mark.skipif(not HAS_EXCHANGE, reason="this torch has no DLPack C exchange API")


@needs_exchange
@pytest.mark.parametrize("kind", ["tensor", "parameter"])
def test_exchange_api_reads_torch_tensors(rng, device, kind):
    """Plain tensors and nn.Parameters (requires_grad) take the exchange path: no __dlpack__ call, same
    bits as the __dlpack__ path, the parameter itself updated in place."""
    w0, g, m0 = (rand(rng, (5, 7), "float32") for _ in range(3))
    results = []
    for enabled in (True, False):
        w, gt, m = to_torch(w0, device), to_torch(g, device), to_torch(m0, device)
        if kind == "parameter":
            w = torch.nn.Parameter(w)
        before = T.exchange_conversions()
        if enabled:
            fo.sgd_mom_update(w, gt, m, lr=0.1, momentum=0.9, wd=0.01)
            assert T.exchange_conversions() - before == 3
        else:
            with _exchange_disabled():
                fo.sgd_mom_update(w, gt, m, lr=0.1, momentum=0.9, wd=0.01)
            assert T.exchange_conversions() == before
        results.append((to_np(w.detach()), to_np(m)))
        assert_bitwise_equal(to_np(gt), g, "grad modified")
    assert_bitwise_equal(results[0][0], results[1][0], "weight")
    assert_bitwise_equal(results[0][1], results[1][1], "mom")


@needs_exchange
def test_exchange_api_not_used_when_dlpack_is_overridden():
    calls = []

    class Custom(torch.Tensor):
        def __dlpack__(self, **kw: Any) -> Any:  # noqa: D105
            calls.append(kw)
            return torch.Tensor.__dlpack__(self, **kw)

    w = torch.ones(4).as_subclass(Custom)
    before = T.exchange_conversions()
    fo.sgd_update(w, torch.ones(4), lr=0.5)
    assert len(calls) == 1 and T.exchange_conversions() - before == 1  # only the plain grad
    assert torch.equal(w.as_subclass(torch.Tensor), torch.full((4,), 0.5))


@needs_exchange
@pytest.mark.parametrize("case", ["transposed", "int32", "complex", "sparse", "shape", "aliased"])
def test_exchange_api_errors_equal_dlpack_path(case):
    """Every refusal reads the same with and without the exchange path, and writes nothing."""
    def make():
        w, g = torch.ones(4, 4), torch.ones(4, 4)
        if case == "transposed":
            w = torch.ones(4, 4).t()
        elif case == "int32":
            w = torch.ones(4, 4, dtype=torch.int32)
        elif case == "complex":
            g = torch.ones(4, 4, dtype=torch.complex64)
        elif case == "sparse":
            g = torch.ones(4, 4).to_sparse()
        elif case == "shape":
            g = torch.ones(4, 5)
        elif case == "aliased":
            g = w[:, :]
        return w, g

    outcomes = []
    for enabled in (True, False):
        w, g = make()
        before = w.clone()
        T.set_exchange_enabled(enabled)
        try:
            with pytest.raises((TypeError, ValueError, BufferError)) as err:
                fo.sgd_update(w, g, lr=0.5)
        finally:
            T.set_exchange_enabled(True)
        assert torch.equal(w, before)
        outcomes.append((err.type, str(err.value)))
    assert outcomes[0] == outcomes[1]


@needs_exchange
def test_exchange_api_aggregated_list_of_parameters(rng):
    """A whole parameter list (the optimizer's aggregated step) through the exchange path equals the
    per-tensor NumPy kernels."""
    shapes = [(3,), (4, 5), (), (0,), (2, 3, 4)]
    w_np = [rand(rng, s, "float32") for s in shapes]
    g_np = [rand(rng, s, "float32") for s in shapes]
    params = [torch.nn.Parameter(torch.from_numpy(w.copy())) for w in w_np]
    grads = [torch.from_numpy(g) for g in g_np]
    opt = fo.SGD(learning_rate=0.1, momentum=0.9, aggregate_num=float("inf"))
    states = [opt.create_state(k, p) for k, p in enumerate(params)]
    before = T.exchange_conversions()
    opt.update(list(range(len(params))), params, grads, states)
    assert T.exchange_conversions() - before == 3 * len(params)
    for k in range(len(shapes)):
        m = np.zeros_like(w_np[k])
        fo.sgd_mom_update(w_np[k], g_np[k], m, lr=0.1, momentum=0.9)
        assert_bitwise_equal(to_np(params[k].detach()), w_np[k], f"weight {k}")
