"""``fusedopt.torch``: fusedopt's SGD and DCASGD as ``torch.optim.Optimizer`` subclasses.

MXNet's rule (the learning rate lives inside the momentum buffer), fusedopt's kernels, PyTorch's
optimizer interface: ``model.parameters()`` or param groups with their own hyper-parameters,
``step(closure=None)``, ``zero_grad()``, ``state_dict()`` / ``load_state_dict()``, every
``torch.optim.lr_scheduler``, ``torch.amp.GradScaler``, sparse ``nn.Embedding`` gradients.

Per step, each param group costs one aggregated kernel call per (device, dtype, precision mode);
parameters whose ``grad`` is None are skipped; the autograd version counter of every updated
parameter is advanced, so a backward pass that still needs the old values raises as with
``torch.optim``. Not imported by ``import fusedopt`` (it imports torch).
"""

from __future__ import annotations

import itertools
import operator
import warnings
from collections import defaultdict
from typing import Any, Callable, Iterable

import torch
from torch.optim import optimizer as _hooks

from . import _arrays
from . import functional as F
from ._validate import check_clip, check_finite, check_nonnegative
from .sparse import RowSparseArray

__all__ = ["DCASGD", "SGD"]

_GRAD = operator.attrgetter("grad")
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_LOW = (torch.float16, torch.bfloat16)
_profiler_enabled = torch._C._autograd._profiler_enabled


def _sparse_rows(grad: torch.Tensor) -> RowSparseArray:
    """A sparse COO gradient (rows of a matrix, as ``nn.Embedding(sparse=True)`` makes) as a
    row-sparse gradient: coalesced (duplicate rows summed, into new tensors; the caller's gradient is
    untouched), never densified."""
    if grad.layout is not torch.sparse_coo or grad.sparse_dim() != 1:
        raise TypeError(f"fusedopt.torch: a sparse gradient must be a sparse COO tensor with one sparse "
                        f"dimension (rows), got layout {grad.layout}")
    g = grad.coalesce()
    return RowSparseArray(g.values(), g.indices()[0].cpu(), tuple(grad.shape))


def _state_like(p: torch.Tensor, dtype: torch.dtype | None = None, src: Any = None) -> torch.Tensor:
    """A new state tensor with ``p``'s shape, device and memory layout (so a channels_last weight gets
    channels_last states: the kernels need identical strides), zeros or a copy of ``src``."""
    t = torch.empty_like(p, dtype=dtype, memory_format=torch.preserve_format, requires_grad=False)
    if src is None:
        t.zero_()
    else:
        t.copy_(src.detach() if isinstance(src, torch.Tensor) else src)
    return t


def _kernel_view(state: torch.Tensor | None) -> Any:
    """What the kernels are handed for a state tensor the optimizer owns: a NumPy view of a CPU tensor
    (the same memory; a NumPy array crosses into the native core several times faster than a tensor
    through DLPack, which matters with many small tensors), the tensor itself on other devices."""
    if state is None or state.device.type != "cpu":
        return state
    try:
        return _arrays.numpy_view(state)
    except ImportError:  # bfloat16 without ml_dtypes
        return state


class _Sub:
    """Parameters of one group sharing device, dtype and precision mode: one kernel call per step."""

    __slots__ = ("idx", "weights", "moms", "prevs", "masters", "mean_squares")

    def __init__(self) -> None:
        self.idx: list[int] = []
        self.weights: list[torch.Tensor] = []
        self.moms: list[Any] = []
        self.prevs: list[Any] = []
        self.masters: list[Any] = []
        self.mean_squares: list[Any] = []


class _Plan:
    """Cached lists of one param group (rebuilt when the group's params, the optimizer's state or
    the need for momentum buffers change)."""

    __slots__ = ("group", "params", "members", "epoch", "has_mom", "mp", "subs", "sub_of", "general",
                 "pending")

    def __init__(self, group: dict, epoch: int, has_mom: bool) -> None:
        self.group = group
        self.params = group["params"]
        self.members = list(self.params)  # the parameters the cached lists were built from
        self.epoch = epoch
        self.has_mom = has_mom
        self.mp = group["multi_precision"]
        self.subs: list[_Sub] = []
        self.sub_of: list[tuple[_Sub, int]] = []
        self.general = False  # None or sparse gradients at the last step: take the general path
        self.pending: list[int] = []  # parameters without a gradient nor a state yet (no state made)


def _read_on_device(t: Any) -> bool:
    """Whether GradScaler's tensor ``t`` goes to the kernels (which read it in device code) instead
    of being read on the host: tensors on a CUDA device."""
    return t is not None and t.device.type == "cuda"


def _scale_for(hyper: dict[str, Any], device: Any) -> tuple[float, dict[str, Any], bool]:
    """``(rescale_grad, kernel keywords, skip)`` of one kernel call on ``device``.

    ``hyper["loss_scale"]`` is GradScaler's ``(grad_scale, found_inf)`` when they live on a CUDA
    device (else None: the step already folded them on the host). A call on that device passes them
    to the kernels, which read them in device code (no host synchronisation); a call elsewhere
    (``device`` None: a single-tensor call) reads them here, on the host."""
    rg = hyper["rescale_grad"]
    ls = hyper.get("loss_scale")
    if ls is None:
        return rg, {}, False
    grad_scale, found_inf = ls
    if device is not None and all(t is None or t.device == device for t in ls):
        return rg, {"grad_scale": grad_scale, "found_inf": found_inf}, False
    if found_inf is not None and bool(found_inf):  # (a host synchronisation)
        return rg, {}, True
    return (rg if grad_scale is None else rg * (1.0 / float(grad_scale))), {}, False


class _Call:
    """One kernel call: ``run()`` updates; ``check()`` raises what ``run()`` would, writing nothing."""

    __slots__ = ("run", "check")

    def __init__(self, run: Callable[[], Any], check: Callable[[], Any]) -> None:
        self.run = run
        self.check = check


_SKIP = _Call(lambda: None, lambda: None)


class _MXNetOptimizer(torch.optim.Optimizer):
    """Shared machinery of :class:`SGD` and :class:`DCASGD` (plans, GradScaler, state_dict)."""

    _step_supports_amp_scaling = True
    _epoch = 0

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        self._plans: dict[int, _Plan] = {}
        self._check_group(defaults, "defaults")
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:  # (pickle, copy.deepcopy)
        super().__setstate__(state)
        self._plans = {}

    # ---------------------------------------------------------------------------- hyper-parameters
    def _check_group(self, group: dict[str, Any], where: str) -> tuple[Any, ...]:
        """Validated ``(lr, momentum, wd, rescale_grad, clip_gradient)`` of a group (or defaults)."""
        try:
            lr = group["lr"]
            lr = check_nonnegative("lr", float(lr) if isinstance(lr, torch.Tensor) else lr)
            momentum = check_nonnegative("momentum", group["momentum"])
            wd = check_nonnegative("weight_decay", group["weight_decay"])
            rg = check_finite("rescale_grad", group["rescale_grad"])
            clip = check_clip(group["clip_gradient"])
        except (TypeError, ValueError) as e:
            raise type(e)(f"{type(self).__name__} {where}: {e}") from None
        if group["lazy_update"] and group["multi_precision"]:
            raise ValueError("When lazy_update is set to True, multi_precision has be turned off.")
        return lr, momentum, wd, rg, clip

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if isinstance(param_group, dict):  # validated before torch adds it (nothing half-added)
            self._check_group({**self.defaults, **param_group}, "param group")
        super().add_param_group(param_group)
        self._epoch += 1

    # ---------------------------------------------------------------------------------- state
    def _state_dtypes(self, group: dict[str, Any], p: torch.Tensor,
                      with_mom: bool) -> dict[str, torch.dtype]:
        """The state tensors of ``p`` and their dtypes (float32 for masters and for every state of a
        multi-precision float16/bfloat16 parameter, else the parameter's dtype)."""
        master = bool(group["multi_precision"]) and p.dtype in _LOW
        dt = torch.float32 if master else p.dtype
        out = {"mom": dt} if with_mom else {}
        if master:
            out["weight32"] = torch.float32
        return out

    def _init_state(self, group: dict[str, Any], p: torch.Tensor, state: dict[str, Any],
                    with_mom: bool) -> None:
        for key, dt in self._state_dtypes(group, p, with_mom).items():
            if key not in state:
                state[key] = self._new_state(key, p, dt, state)

    def _new_state(self, key: str, p: torch.Tensor, dt: torch.dtype, state: dict[str, Any]) -> Any:
        if key == "weight32":
            return _state_like(p, torch.float32, p)
        return _state_like(p, dt)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Loads what :meth:`state_dict` saved (also after ``torch.load(..., weights_only=True)``).
        States keep their own dtypes (float32 masters of bfloat16 parameters stay float32) and take
        each parameter's device and memory layout; a state of the wrong shape, or a key this optimizer
        does not keep (a ``torch.optim.SGD`` ``momentum_buffer``: its buffer has another meaning), is
        a ``ValueError`` and nothing is loaded."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups) or any(
                len(s["params"]) != len(g["params"]) for s, g in zip(saved_groups, self.param_groups)):
            raise ValueError("loaded state dict does not match the optimizer's param groups")
        saved = state_dict["state"]
        new_state: defaultdict[torch.Tensor, dict[str, Any]] = defaultdict(dict)
        for sg, group in zip(saved_groups, self.param_groups):
            merged = {**group, **{k: v for k, v in sg.items() if k != "params"}}
            self._check_group(merged, "loaded param group")
            for pid, p in zip(sg["params"], group["params"]):
                if pid not in saved:
                    continue
                allowed = self._state_dtypes(merged, p, True)
                entry = {}
                for key, value in saved[pid].items():
                    if key not in allowed:
                        raise ValueError(f"{type(self).__name__}.load_state_dict: unexpected state "
                                         f"{key!r} for parameter {pid} (this optimizer keeps "
                                         f"{sorted(allowed)})")
                    if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(p.shape):
                        raise ValueError(f"{type(self).__name__}.load_state_dict: state {key!r} of "
                                         f"parameter {pid} must be a tensor of shape "
                                         f"{tuple(p.shape)}, got {getattr(value, 'shape', value)!r}")
                    entry[key] = _state_like(p, allowed[key], value)
                new_state[p] = entry
        super().load_state_dict({**state_dict, "state": {}})
        self.state = new_state
        self._epoch += 1

    # ----------------------------------------------------------------------------------- plans
    def _plan(self, group: dict[str, Any], momentum: float) -> _Plan:
        plan = self._plans.get(id(group))
        if (plan is not None and plan.group is group and plan.epoch == self._epoch
                and plan.params is group["params"] and len(plan.members) == len(plan.params)
                and all(map(operator.is_, plan.params, plan.members))
                and plan.mp == group["multi_precision"]
                and (plan.has_mom or momentum == 0)):
            return plan
        plan = _Plan(group, self._epoch, momentum != 0)
        # Momentum buffers for every parameter of the group or for none (a loaded state may have some).
        with_mom = momentum != 0 or any("mom" in self.state.get(p, ()) for p in plan.params)
        subs: dict[tuple[Any, ...], _Sub] = {}
        for k, p in enumerate(plan.params):
            if p.dtype not in _FLOATS:
                raise TypeError(f"{type(self).__name__}: parameter {k} of a param group has dtype "
                                f"{p.dtype}; fusedopt updates float16, bfloat16, float32 and float64")
            master = bool(group["multi_precision"]) and p.dtype in _LOW
            if p.dtype in _LOW and not master:
                warnings.warn("Accumulating with float16 in optimizer can lead to poor accuracy or slow "
                              "convergence. Consider using multi_precision=True option of the optimizer",
                              UserWarning, stacklevel=4)
            sub = subs.setdefault((p.device, p.dtype, master), _Sub())
            if p.grad is None and p not in self.state:
                # As torch.optim: no state before a parameter's first gradient (DCASGD's prev is the
                # weight at its first update; frozen parameters cost no memory).
                plan.pending.append(k)
                state = {}
            else:
                state = self.state[p]
                self._init_state(group, p, state, with_mom)
            plan.sub_of.append((sub, len(sub.idx)))
            sub.idx.append(k)
            sub.weights.append(p)
            sub.moms.append(_kernel_view(state.get("mom")))
            sub.prevs.append(_kernel_view(state.get("prev")))
            sub.masters.append(_kernel_view(state.get("weight32")))
            sub.mean_squares.append(_kernel_view(state.get("mean_square")))
        plan.subs = list(subs.values())
        plan.has_mom = with_mom
        plan.general = bool(plan.pending)
        self._plans[id(group)] = plan
        return plan

    def _group_calls(self, group: dict[str, Any], inv_scale: float, calls: list[_Call],
                     touched: list[torch.Tensor], general: bool,
                     loss_scale: tuple[Any, Any] | None = None) -> None:
        """Appends the kernel calls of one group's step (nothing is written here).

        Fast path: every gradient handed to the aggregated kernels as it is (a None or sparse one
        makes the kernel raise before writing, and the step is planned again with ``general``).
        General path: None gradients skipped, sparse gradients as row-sparse updates."""
        params = group["params"]
        if not params:
            return
        lr, momentum, wd, rg, clip = self._check_group(group, "param group")
        plan = self._plan(group, momentum)
        hyper = {"lr": lr, "momentum": momentum, "wd": wd, "rescale_grad": rg * inv_scale,
                 "clip_gradient": clip, "loss_scale": loss_scale}
        grads = list(map(_GRAD, params))
        if not (general or plan.general):
            if len(plan.subs) == 1:
                calls.append(self._dense_call(group, plan.subs[0], None, grads, hyper))
            else:
                for sub in plan.subs:
                    calls.append(self._dense_call(group, sub, None, [grads[k] for k in sub.idx], hyper))
            touched.extend(params)
            return
        if plan.pending and any(grads[k] is not None for k in plan.pending):
            self._plans.pop(id(group))  # a first gradient: make its state, plan again
            plan = self._plan(group, momentum)
        picked: dict[int, tuple[_Sub, list[int], list[Any]]] = {}
        plan.general = bool(plan.pending)
        for k, g in enumerate(grads):
            if g is None:
                plan.general = True
                continue
            sub, j = plan.sub_of[k]
            touched.append(params[k])
            if g.layout is not torch.strided:
                plan.general = True
                calls.append(self._sparse_call(group, sub, j, _sparse_rows(g), hyper))
                continue
            entry = picked.setdefault(id(sub), (sub, [], []))
            entry[1].append(j)
            entry[2].append(g)
        for sub, js, gs in picked.values():
            calls.append(self._dense_call(group, sub, js, gs, hyper))

    def _sparse_call(self, group: dict[str, Any], sub: _Sub, j: int, grad: RowSparseArray,
                     hyper: dict[str, Any]) -> _Call:
        raise TypeError(f"{type(self).__name__}: sparse gradients are not supported (dense only)")

    @staticmethod
    def _dense_call(group: dict[str, Any], sub: _Sub, js: Any, grads: list[Any],
                    hyper: dict[str, Any]) -> _Call:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------ step
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update of every parameter that has a gradient; returns ``closure()``'s loss if given.

        Under ``torch.amp.GradScaler`` (``scaler.step(opt)``) the gradients are still scaled: the
        inverse scale is folded into ``rescale_grad`` (no separate unscale pass; after
        ``scaler.unscale_(opt)`` nothing is folded), and a step with non-finite gradients returns
        without writing anything (weights, momentum, masters, previous weights). On the CPU the
        scale and the found-inf flag are read on the host; when GradScaler keeps them on a CUDA
        device they go to the kernels, which read them in device code (no host synchronisation per
        step; the autograd version counters then advance even on a skipped step).

        Under ``torch.compile`` the update is the custom op ``torch.ops.fusedopt.mxnet_step_`` (one
        call per group and device/dtype/precision mode), so ``fullgraph=True`` works."""
        if (torch.compiler.is_compiling()  # (first: traced, it is a constant)
                or self._optimizer_step_pre_hooks or self._optimizer_step_post_hooks
                or _hooks._global_optimizer_pre_hooks or _hooks._global_optimizer_post_hooks
                or _profiler_enabled()):
            return self._step_with_hooks(closure)
        return self._eager_step(closure)

    # torch.optim.Optimizer wraps a subclass's step() once, in its profile_hook_step: the step pre-
    # and post-hooks (global and per optimizer) and a profiler range ("Optimizer.step#SGD.step").
    # The range costs about 6 us per step even with no profiler running, as much as updating 40
    # small tensors. So step() is marked as wrapped already and goes through torch's own wrapper
    # whenever something can observe it: a hook registered, the profiler on, torch.compile tracing.
    step.hooked = True  # type: ignore[attr-defined]

    def _step(self, closure: Callable[[], Any] | None = None) -> Any:
        """step() without torch's wrapper."""
        if torch.compiler.is_compiling():
            return self._traced_step(closure)
        return self._eager_step(closure)

    _step_with_hooks = torch.optim.Optimizer.profile_hook_step(_step)

    def _traced_step(self, closure: Callable[[], Any] | None) -> Any:
        """The step as torch.compile traces it: plain Python over the groups (no cached plans), the
        kernels behind one custom op per (device, dtype, precision mode). With a sparse gradient the
        eager step runs instead (a graph break)."""
        if any(p.grad is not None and p.grad.layout != torch.strided
               for group in self.param_groups for p in group["params"]):
            return self._eager_step(closure)  # sparse gradients: a graph break, the eager step
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        for group in self.param_groups:
            # The hyper-parameters go to the op unchecked here (traced floats cannot be tested in
            # Python); the kernels validate them before writing.
            momentum = group["momentum"]
            parts: dict[tuple[Any, ...], list[tuple[torch.Tensor, dict[str, Any]]]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                self._init_state(group, p, st, momentum != 0 or "mom" in st)
                parts.setdefault((p.device, p.dtype, "weight32" in st), []).append((p, st))
            hyper = [group["lr"], momentum, group["weight_decay"], group["rescale_grad"],
                     group.get("lamda", 0.0), group.get("ms_decay", 0.95), group.get("eps", 1e-7)]
            clip = group["clip_gradient"]
            for members in parts.values():
                sts = [st for _, st in members]

                def col(key: str, sts: list[dict[str, Any]] = sts) -> list[torch.Tensor]:
                    return [st[key] for st in sts] if key in sts[0] else []

                torch.ops.fusedopt.mxnet_step_(
                    self._RULE, [p for p, _ in members], [p.grad for p, _ in members], col("mom"),
                    col("prev"), col("weight32"), col("mean_square"), hyper, clip, grad_scale,
                    found_inf)
        return loss

    @torch.compiler.disable
    def _eager_step(self, closure: Callable[[], Any] | None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        found_inf = getattr(self, "found_inf", None)
        grad_scale = getattr(self, "grad_scale", None)
        inv_scale = 1.0
        loss_scale = None
        if _read_on_device(grad_scale) or _read_on_device(found_inf):
            loss_scale = (grad_scale, found_inf)  # read by the kernels, on the device
        else:
            if found_inf is not None and bool(found_inf):
                return loss
            if grad_scale is not None:
                inv_scale = 1.0 / float(grad_scale)
        for general in (False, True):
            calls: list[_Call] = []
            touched: list[torch.Tensor] = []
            for group in self.param_groups:
                self._group_calls(group, inv_scale, calls, touched, general, loss_scale)
            try:
                if len(calls) > 1:  # several kernel calls: validate them all before the first write
                    for call in calls:
                        call.check()
                for call in calls:
                    call.run()
                break
            except (TypeError, BufferError):
                # A None or sparse gradient on the fast path (refused before anything was written):
                # plan again on the general path, which raises any genuine error again.
                if general:
                    raise
        if touched:
            torch._C._increment_version(touched)
        return loss


class SGD(_MXNetOptimizer):
    """SGD with MXNet 2.0's rule, as a ``torch.optim.Optimizer``::

        r = clip(rescale_grad * grad, clip_gradient) + weight_decay * w
        momentum:    mom = momentum * mom - lr * r;  w = w + mom     (lr inside the buffer)
        no momentum: w = w - lr * r

    Every argument except ``params`` may be set per param group. ``multi_precision``: float16 and
    bfloat16 parameters keep a float32 master (``state['weight32']``) and float32 momentum.
    ``lazy_update``: with sparse gradients (``nn.Embedding(sparse=True)``) only the rows present are
    updated; otherwise every row is (weight decay and momentum on all rows). State per parameter:
    ``mom`` (when momentum is used) and ``weight32`` (multi-precision).
    """

    _RULE = "sgd"

    def __init__(self, params: Iterable[Any], lr: float = 0.1, momentum: float = 0.0,
                 weight_decay: float = 0.0, *, rescale_grad: float = 1.0,
                 clip_gradient: float | None = None, multi_precision: bool = False,
                 lazy_update: bool = False) -> None:
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                    "rescale_grad": rescale_grad, "clip_gradient": clip_gradient,
                    "multi_precision": bool(multi_precision), "lazy_update": bool(lazy_update)}
        super().__init__(params, defaults)

    @staticmethod
    def _dense_call(group: dict[str, Any], sub: _Sub, js: Any, grads: list[Any],
                    hyper: dict[str, Any]) -> _Call:
        n = len(grads)
        pick = (lambda xs: xs) if js is None else (lambda xs: [xs[j] for j in js])
        ws, moms = pick(sub.weights), pick(sub.moms)
        masters = None if sub.masters[0] is None else pick(sub.masters)
        lrs, wds = [hyper["lr"]] * n, [hyper["wd"]] * n
        momentum = hyper["momentum"]
        rg, scale_kw, skip = _scale_for(hyper, ws[0].device if n else None)
        if skip:
            return _SKIP
        common = {"rescale_grad": rg, "clip_gradient": hyper["clip_gradient"]}

        def check() -> None:
            for k in range(n):
                F.check_sgd_args(ws[k], grads[k], moms[k], None if masters is None else masters[k],
                                 lr=hyper["lr"], momentum=momentum, wd=hyper["wd"], **common)

        run_kw = {**common, **scale_kw}  # (check_sgd_args takes no loss-scale operands)
        if masters is None:
            def run() -> None:
                if not F.multi_sgd_update_states(ws, grads, moms, lrs=lrs, wds=wds, momentum=momentum,
                                                 **run_kw):
                    # (declined before writing: momentum buffers for some tensors and not others)
                    raise RuntimeError("fusedopt.torch: inconsistent momentum states in one call")
        elif n and moms[0] is not None:
            def run() -> None:
                flat = list(itertools.chain.from_iterable(zip(ws, grads, moms, masters)))
                F.multi_mp_sgd_mom_update(flat, lrs=lrs, wds=wds, momentum=momentum, **run_kw)
        else:
            def run() -> None:
                flat = list(itertools.chain.from_iterable(zip(ws, grads, masters)))
                F.multi_mp_sgd_update(flat, lrs=lrs, wds=wds, **run_kw)
        return _Call(run, check)

    def _sparse_call(self, group: dict[str, Any], sub: _Sub, j: int, grad: RowSparseArray,
                     hyper: dict[str, Any]) -> _Call:
        w, mom = sub.weights[j], sub.moms[j]
        if sub.masters[j] is not None:
            raise TypeError("fusedopt.torch.SGD: sparse gradients are not supported with "
                            "multi_precision float16/bfloat16 parameters")
        rg, _, skip = _scale_for(hyper, None)  # (single-tensor calls take no device scale)
        if skip:
            return _SKIP
        kw = {"lr": hyper["lr"], "wd": hyper["wd"], "rescale_grad": rg,
              "clip_gradient": hyper["clip_gradient"], "lazy_update": bool(group["lazy_update"])}
        if mom is None:
            return _Call(lambda: F.sgd_update(w, grad, **kw),
                         lambda: F.check_sgd_args(w, grad, None, None, **kw))
        return _Call(lambda: F.sgd_mom_update(w, grad, mom, momentum=hyper["momentum"], **kw),
                     lambda: F.check_sgd_args(w, grad, mom, None, momentum=hyper["momentum"], **kw))


class DCASGD(_MXNetOptimizer):
    """Delay-compensated SGD (MXNet 2.0 ``DCASGD``) as a ``torch.optim.Optimizer``::

        r = clip(rescale_grad * grad, clip_gradient) + weight_decay * w
        d = r + lamda * r * r * (w - prev)
        momentum:    mom = momentum * mom - lr * d;  step = mom      no momentum: step = -lr * d
        prev = w;  w = w + step

    ``prev`` (``state['prev']``) starts as a copy of the weight at the first step, so the first
    update equals SGD's. ``adaptive=True`` replaces ``lamda`` by ``lamda / sqrt(ms + eps)`` with
    ``ms = ms_decay * ms + (1 - ms_decay) * r * r`` (``state['mean_square']``). Dense gradients only.
    """

    _RULE = "dcasgd"

    def __init__(self, params: Iterable[Any], lr: float = 0.1, momentum: float = 0.0,
                 lamda: float = 0.04, weight_decay: float = 0.0, *, adaptive: bool = False,
                 ms_decay: float = 0.95, eps: float = 1e-7, rescale_grad: float = 1.0,
                 clip_gradient: float | None = None, multi_precision: bool = False) -> None:
        defaults = {"lr": lr, "momentum": momentum, "lamda": lamda, "weight_decay": weight_decay,
                    "adaptive": bool(adaptive), "ms_decay": ms_decay, "eps": eps,
                    "rescale_grad": rescale_grad, "clip_gradient": clip_gradient,
                    "multi_precision": bool(multi_precision), "lazy_update": False}
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any], where: str) -> tuple[Any, ...]:
        out = super()._check_group(group, where)
        try:
            check_nonnegative("lamda", group["lamda"])
            if group["adaptive"]:
                decay = check_nonnegative("ms_decay", group["ms_decay"])
                if decay > 1:
                    raise ValueError(f"Invalid ms_decay value: {decay!r} (expected 0 <= ms_decay <= 1)")
                check_nonnegative("eps", group["eps"])
        except (TypeError, ValueError) as e:
            raise type(e)(f"DCASGD {where}: {e}") from None
        return out

    def _state_dtypes(self, group: dict[str, Any], p: torch.Tensor,
                      with_mom: bool) -> dict[str, torch.dtype]:
        out = super()._state_dtypes(group, p, with_mom)
        dt = torch.float32 if "weight32" in out else p.dtype
        out["prev"] = dt
        if group.get("adaptive"):
            out["mean_square"] = torch.float32 if "weight32" in out else p.dtype
        return out

    def _new_state(self, key: str, p: torch.Tensor, dt: torch.dtype, state: dict[str, Any]) -> Any:
        if key == "prev":  # the weight (its master with multi_precision) before the first update
            return _state_like(p, dt, state.get("weight32", p))
        return super()._new_state(key, p, dt, state)

    def _init_state(self, group: dict[str, Any], p: torch.Tensor, state: dict[str, Any],
                    with_mom: bool) -> None:
        if bool(group["multi_precision"]) and p.dtype in _LOW and "weight32" not in state:
            state["weight32"] = self._new_state("weight32", p, torch.float32, state)  # prev copies it
        super()._init_state(group, p, state, with_mom)

    @staticmethod
    def _dense_call(group: dict[str, Any], sub: _Sub, js: Any, grads: list[Any],
                    hyper: dict[str, Any]) -> _Call:
        n = len(grads)
        pick = (lambda xs: xs) if js is None else (lambda xs: [xs[j] for j in js])
        ws, moms, prevs = pick(sub.weights), pick(sub.moms), pick(sub.prevs)
        masters = None if sub.masters[0] is None else pick(sub.masters)
        if n and moms[0] is None:
            moms = None
        rg, scale_kw, skip = _scale_for(hyper, ws[0].device if n else None)
        if skip:
            return _SKIP
        kw = {"lrs": [hyper["lr"]] * n, "wds": [hyper["wd"]] * n, "momentum": hyper["momentum"],
              "lamda": float(group["lamda"]), "rescale_grad": rg,
              "clip_gradient": hyper["clip_gradient"], **scale_kw}
        if group["adaptive"]:
            kw.update(mean_squares=pick(sub.mean_squares), ms_decay=float(group["ms_decay"]),
                      eps=float(group["eps"]))

        def check() -> None:
            mss = kw.get("mean_squares")
            extra = {k: kw[k] for k in ("ms_decay", "eps") if k in kw}
            for k in range(n):
                F.check_dcasgd_args(ws[k], grads[k], None if moms is None else moms[k], prevs[k],
                                    None if masters is None else masters[k],
                                    None if mss is None else mss[k], lr=hyper["lr"],
                                    momentum=hyper["momentum"], lamda=kw["lamda"], wd=hyper["wd"],
                                    rescale_grad=rg,
                                    clip_gradient=hyper["clip_gradient"], **extra)

        if masters is None:
            def run() -> None:
                F.multi_dcasgd_update(ws, grads, moms, prevs, **kw)
        else:
            def run() -> None:
                F.multi_mp_dcasgd_update(ws, grads, moms, prevs, masters, **kw)
        return _Call(run, check)


_RULES: dict[str, Any] = {"sgd": SGD, "dcasgd": DCASGD}


@torch.library.custom_op("fusedopt::mxnet_step_",
                         mutates_args=("weights", "moms", "prevs", "masters", "mean_squares"))
def _mxnet_step_op(rule: str, weights: list[torch.Tensor], grads: list[torch.Tensor],
                   moms: list[torch.Tensor], prevs: list[torch.Tensor], masters: list[torch.Tensor],
                   mean_squares: list[torch.Tensor], hyper: list[float],
                   clip_gradient: float | None, grad_scale: torch.Tensor | None,
                   found_inf: torch.Tensor | None) -> None:
    """One aggregated update (the kernels of the eager step) for torch.compile graphs. ``hyper`` is
    ``[lr, momentum, weight_decay, rescale_grad, lamda, ms_decay, eps]``; empty state lists mean
    "none of these"; GradScaler's ``grad_scale`` / ``found_inf`` are read by the kernels on a CUDA
    device, on the host otherwise."""
    lr, momentum, wd, rg, lamda, ms_decay, eps = hyper
    loss_scale = None
    if _read_on_device(grad_scale) or _read_on_device(found_inf):
        loss_scale = (grad_scale, found_inf)
    else:
        if found_inf is not None and bool(found_inf):
            return
        if grad_scale is not None:
            rg = rg * (1.0 / float(grad_scale))
    n = len(weights)
    sub = _Sub()
    sub.weights = list(weights)
    sub.moms = list(moms) or [None] * n
    sub.prevs = list(prevs) or [None] * n
    sub.masters = list(masters) or [None] * n
    sub.mean_squares = list(mean_squares) or [None] * n
    group = {"lamda": lamda, "adaptive": bool(mean_squares), "ms_decay": ms_decay, "eps": eps}
    hyp = {"lr": lr, "momentum": momentum, "wd": wd, "rescale_grad": rg, "clip_gradient": clip_gradient,
           "loss_scale": loss_scale}
    _RULES[rule]._dense_call(group, sub, None, list(grads), hyp).run()


@_mxnet_step_op.register_fake
def _(rule, weights, grads, moms, prevs, masters, mean_squares, hyper, clip_gradient, grad_scale,
      found_inf) -> None:
    return None
