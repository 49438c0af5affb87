"""``ParameterServer``: the server side of asynchronous (and synchronous) data-parallel training.

A plain Python object, no Ray: the one implementation of the server's logic, which
``RayParameterServer`` serves from Ray actors (one server per shard of the parameters).
"""

from __future__ import annotations

import copy
import math
import numbers
import threading
import time
from typing import Any, Callable, Sequence

import numpy as np

from .. import _arrays
from .. import functional as F
from ..dcasgd import DCASGD
from ..optimizer import Optimizer
from ..sgd import SGD
from ..sparse import RowSparseArray
from ..updater import _DTYPES, Updater, _check_tree

__all__ = ["ParameterServer"]

BACKUPS = ("worker", "previous")
_MODES = ("sgd", "previous", "worker")


def _device(a: Any) -> str:
    """'cpu' for host memory, 'cuda:N' for CUDA memory (from the DLPack device of the array)."""
    get = getattr(a, "__dlpack_device__", None)
    if get is None:
        raise TypeError(f"expected an array, got {type(a).__qualname__}")
    kind, index = (int(x) for x in get())
    if kind in (1, 3):  # kDLCPU, kDLCUDAHost
        return "cpu"
    if kind == 2:  # kDLCUDA
        return f"cuda:{index}"
    return f"dlpack-device-{kind}:{index}"


# Sequence numbers are saved exactly in the float64 counters of get_states: below 2**53.
MAX_SEQ = 2 ** 53


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__qualname__}")
    v = int(value)
    if v < low or (high is not None and v >= high):
        span = f">= {low}" if high is None else f"in [{low}, {high})"
        raise ValueError(f"{name} must be {span}, got {v}")
    return v


class ParameterServer:
    """Holds the parameters of a model and applies an optimizer to the gradients workers push.

    Parameters
    ----------
    params : list of arrays
        NumPy arrays or torch tensors (CPU or CUDA), float16 / bfloat16 / float32 / float64, writable
        and C-contiguous. The server owns them from now on and updates them in place.
    optimizer : fusedopt.SGD or fusedopt.DCASGD
        The update rule. The server owns it too (its hyper-parameters, scheduler and counts; the
        parameters are its indices ``0 .. len(params) - 1``) and sets its ``aggregate_num`` to
        ``math.inf``, so a push is one aggregated kernel call per dtype (with ``use_fused_step``).
        ``SGD`` gives ASGD (or SSGD with ``synchronous``); ``DCASGD`` gives DC-ASGD.
    num_workers : int
        Workers ``0 .. num_workers - 1``.
    backups : {"worker", "previous"}
        DC-ASGD's compensation term ``lamda * g * g * (w - backup)``. ``"worker"`` (the paper's form):
        ``backup`` is the weight the pushing worker last pulled, kept per worker by the server
        (updated with ``dcasgd_backup_update``; momentum and, with ``DCASGD(adaptive=True)``, the
        mean square of the gradient are held by the server). ``"previous"`` (MXNet's form): the
        optimizer's own state, the weight before the last update, whoever pushed it. With ``SGD``
        there is nothing to compensate: the value is checked and otherwise ignored.
    synchronous : bool
        SSGD (needs ``SGD``): the pushes of a round are summed, and when every worker has pushed once,
        one update with their average is applied (one version). Until then ``pull`` returns the
        weights of the last completed round, and a second push by a worker in the same round is a
        ``ValueError`` (a worker waits for the round to complete, then pulls).

    Memory: ``backups="worker"`` costs ``num_workers`` copies of the model (float32 copies of
    float16 / bfloat16 weights with ``multi_precision``) on the parameters' device, allocated here;
    ``synchronous`` one more (the sum of the round's gradients; float32 for low-precision weights).

    Calls are serialised by a lock, so threads may share a server; kernels run without the GIL.
    """

    def __init__(self, params: Sequence[Any], optimizer: Optimizer, num_workers: int, *,
                 backups: str = "worker", synchronous: bool = False) -> None:
        if not isinstance(params, (list, tuple)) or not params:
            raise TypeError("params must be a non-empty list of arrays")
        if not isinstance(optimizer, (SGD, DCASGD)):
            raise TypeError(f"optimizer must be a fusedopt.SGD or fusedopt.DCASGD, got "
                            f"{type(optimizer).__qualname__}")
        self._num_workers = _check_int("num_workers", num_workers, 1)
        if backups not in BACKUPS:
            raise ValueError(f"backups must be 'worker' or 'previous', got {backups!r}")
        if not isinstance(synchronous, bool):
            raise TypeError(f"synchronous must be a bool, got {type(synchronous).__qualname__}")
        if synchronous and not isinstance(optimizer, SGD):
            raise ValueError("synchronous=True averages the gradients of a round into one SGD update "
                             "and needs a fusedopt.SGD optimizer (DC-ASGD has no delay to compensate)")
        for i, p in enumerate(params):
            if isinstance(p, RowSparseArray) or not hasattr(p, "dtype") or not hasattr(p, "shape"):
                raise TypeError(f"params[{i}] must be an array, got {type(p).__qualname__}")
            if _arrays.dtype_name(p) not in _DTYPES:
                raise TypeError(f"params[{i}] has dtype {_arrays.dtype_name(p)}; expected one of "
                                f"{', '.join(_DTYPES)}")
        try:  # the kernels' own checks of the whole list (writable, layout, no two overlapping),
            # with scratch gradients; weights[k] in the message is params[k]
            F.prepare_update("sgd", list(params), [_arrays.zeros_like(p) for p in params], None,
                             None, None, [1.0] * len(params), [1.0] * len(params))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"params: {exc}") from None
        devices = {_device(p) for p in params}
        if len(devices) > 1:
            raise ValueError(f"params must all be on one device, got {sorted(devices)}")
        self._params = list(params)
        self._indices = list(range(len(self._params)))
        self._ones = [1.0] * len(self._params)
        self._specs = [(tuple(int(s) for s in p.shape), _arrays.dtype_name(p), _device(p))
                       for p in self._params]
        self._opt = optimizer
        optimizer.aggregate_num = math.inf
        self._synchronous = synchronous
        if isinstance(optimizer, SGD):
            self._mode = "sgd"
        else:
            self._mode = backups
        self._backups = backups
        self._lock = threading.RLock()
        self._kernel_seconds = 0.0
        self._kernel_cpu_seconds = 0.0
        self._states: list[Any] = []
        self._bak: list[list[Any]] = []
        self._acc: list[Any] = []
        if self._mode == "worker":
            self._init_worker_states()
        else:
            self._states = [optimizer.create_state_multi_precision(i, p)
                            for i, p in zip(self._indices, self._params)]
        if synchronous:
            self._acc = [_arrays.zeros_like(p, np.float64 if _arrays.dtype_name(p) == "float64"
                                            else np.float32) for p in self._params]
        self._reset_counters()

    # ------------------------------------------------------------------------------- set-up
    def _init_worker_states(self) -> None:
        """The paper's server: per parameter ``(master or None, mom or None, mean_square or None)``,
        and per worker a backup of every parameter (of its float32 master when it has one)."""
        opt = self._opt
        adaptive = opt.adaptive
        for p in self._params:
            master = _arrays.astype_float32(p) if opt._use_master(p) else None
            ref = p if master is None else master
            mom = None if opt.momentum == 0.0 else _arrays.zeros_like(ref)
            ms = _arrays.zeros_like(ref) if adaptive else None
            self._states.append((master, mom, ms))
        self._bak = [[_arrays.copy_of(p if st[0] is None else st[0])
                      for p, st in zip(self._params, self._states)]
                     for _ in range(self._num_workers)]
        # Kernel groups: parameters with a float32 master, and the others (one call each, per dtype).
        groups: dict[bool, list[int]] = {}
        for i, st in enumerate(self._states):
            groups.setdefault(st[0] is not None, []).append(i)
        self._groups = list(groups.items())

    def _reset_counters(self) -> None:
        m = self._num_workers
        self._version = 0
        self._pulled: list[int | None] = [None] * m
        self._last_seq: list[int | None] = [None] * m
        self._seq_version: list[int | None] = [None] * m
        self._pushes = [0] * m
        self._pulls = [0] * m
        self._hist: list[int] = []
        self._stale_sum = 0
        self._round_pushed = [False] * m

    # --------------------------------------------------------------------------- properties
    @property
    def num_workers(self) -> int:
        return self._num_workers

    @property
    def version(self) -> int:
        """Updates applied so far (completed rounds in synchronous mode)."""
        return self._version

    @property
    def optimizer(self) -> Optimizer:
        return self._opt

    @property
    def backups(self) -> str:
        return self._backups

    @property
    def synchronous(self) -> bool:
        return self._synchronous

    @property
    def params(self) -> list[Any]:
        """The parameter arrays the server updates (the caller's own arrays, not copies)."""
        return list(self._params)

    def param_specs(self) -> list[tuple[tuple[int, ...], str, str]]:
        """``(shape, dtype name, device)`` of each parameter, e.g. ``((64, 10), 'float32', 'cpu')``,
        so a client can check its gradients without the server."""
        return list(self._specs)

    # ------------------------------------------------------------------------------- pull / push
    def _check_worker(self, worker: Any) -> int:
        return _check_int("worker", worker, 0, self._num_workers)

    def pull(self, worker: int, *, copy: bool = True) -> tuple[list[Any], int]:
        """``(weights, version)``: new copies of the current weights (in their own library and
        device) and the number of updates applied so far. With ``backups="worker"`` the weights
        are also copied into the worker's backup (a preallocated buffer; always a real copy).

        ``copy=False`` returns the server's own parameter arrays instead of copies: they are
        updated in place by the next push, so they are a snapshot only until then. For a caller
        that copies them away before any other call reaches the server (``RayParameterServer``'s
        shards hand them to Ray, which serialises them before the shard runs its next call)."""
        if not isinstance(copy, bool):
            raise TypeError(f"copy must be a bool, got {type(copy).__qualname__}")
        with self._lock:
            worker = self._check_worker(worker)
            if self._mode == "worker":
                for bak, p, st in zip(self._bak[worker], self._params, self._states):
                    _arrays.copy_into(bak, p if st[0] is None else st[0])
            out = [_arrays.copy_of(p) for p in self._params] if copy else list(self._params)
            self._pulled[worker] = self._version
            self._pulls[worker] += 1
            return out, self._version

    def check_push(self, worker: int, grads: Sequence[Any]) -> None:
        """Every check of :meth:`push` (worker id, a pull before, in synchronous mode one push per
        round, the number, shapes, dtypes, devices and layouts of the gradients), changing nothing.
        ``ValueError`` / ``TypeError`` naming the argument."""
        with self._lock:
            self._check_push(worker, grads)

    def _check_push(self, worker: Any, grads: Any) -> int:
        worker = self._check_worker(worker)
        if self._pulled[worker] is None:
            raise ValueError(f"push: worker {worker} has not pulled: a worker pulls the weights "
                             "before it pushes gradients")
        if self._synchronous and self._round_pushed[worker]:
            raise ValueError(f"push: worker {worker} already pushed in round {self._version}; in "
                             "synchronous mode a worker pushes once per round (wait for the round "
                             "to complete, then pull)")
        if not isinstance(grads, (list, tuple)):
            raise TypeError(f"push: grads must be a list of arrays, got {type(grads).__qualname__}")
        if len(grads) != len(self._params):
            raise ValueError(f"push: grads has {len(grads)} arrays, the server has "
                             f"{len(self._params)} parameters")
        for i, (g, (shape, dtype, device)) in enumerate(zip(grads, self._specs)):
            if isinstance(g, RowSparseArray) or not hasattr(g, "dtype") or not hasattr(g, "shape"):
                raise TypeError(f"push: grads[{i}] must be a dense array, got {type(g).__qualname__}")
            if tuple(g.shape) != shape:
                raise ValueError(f"push: grads[{i}] has shape {tuple(g.shape)}, parameter {i} has "
                                 f"shape {shape}")
            if _arrays.dtype_name(g) != dtype:
                raise TypeError(f"push: grads[{i}] has dtype {_arrays.dtype_name(g)}, parameter {i} "
                                f"has dtype {dtype}")
            if _device(g) != device:
                raise ValueError(f"push: grads[{i}] is on {_device(g)}, parameter {i} is on {device}")
        try:  # the kernels' own checks of the whole call (layouts, overlaps), writing nothing
            F.prepare_update("sgd", self._params, list(grads), None, None, None, self._ones,
                             self._ones)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"push: {exc}") from None
        return worker

    def push(self, worker: int, grads: Sequence[Any], *, seq: int | None = None) -> int:
        """Applies one update with ``grads`` (one array per parameter, read-only arrays accepted,
        never copied nor modified) and returns the version it produced.

        The push's staleness is the number of updates applied since ``worker``'s last pull.
        ``seq``: an optional per-worker increasing number making retries idempotent: a push whose
        ``seq`` equals the last applied ``seq`` of that worker is not applied again and returns the
        version that push produced; an older ``seq`` is a ``ValueError``. In synchronous mode the
        update happens when the last worker of the round pushes; earlier pushes return the current
        version. A refused push (``ValueError`` / ``TypeError``) changes nothing.
        """
        with self._lock:
            worker = self._check_worker(worker)
            if seq is not None:
                seq = _check_int("seq", seq, 0, MAX_SEQ)
                last = self._last_seq[worker]
                if last is not None and seq <= last:
                    if seq == last:
                        return int(self._seq_version[worker])  # type: ignore[arg-type]
                    raise ValueError(f"push: seq {seq} is older than worker {worker}'s last applied "
                                     f"push (seq {last}); only the last push can be retried")
            self._check_push(worker, grads)
            staleness = self._version - self._pulled[worker]  # type: ignore[operator]
            if self._synchronous:
                self._push_synchronous(worker, grads)
            else:
                start, cpu_start = time.perf_counter(), time.thread_time()
                if self._mode == "worker":
                    self._update_worker(worker, grads)
                else:
                    self._opt._set_current_context(_arrays.device_id(self._params[0]))
                    self._opt.update_multi_precision(self._indices, self._params, list(grads),
                                                     self._states)
                self._kernel_seconds += time.perf_counter() - start
                self._kernel_cpu_seconds += time.thread_time() - cpu_start
                self._version += 1
            self._pushes[worker] += 1
            self._stale_sum += staleness
            if staleness >= len(self._hist):
                self._hist.extend([0] * (staleness + 1 - len(self._hist)))
            self._hist[staleness] += 1
            if seq is not None:
                self._last_seq[worker] = seq
                self._seq_version[worker] = self._version
            return self._version

    def _update_worker(self, worker: int, grads: Sequence[Any]) -> None:
        """The paper's update: ``dcasgd_backup_update`` with the pushing worker's backups, one
        aggregated call per group (float32 master or not); counts rolled back if it is refused."""
        opt = self._opt
        opt._set_current_context(_arrays.device_id(self._params[0]))
        token = opt._update_count(self._indices)
        first = True
        try:
            lrs, wds = opt._checked_rates(self._indices)
            kw = opt._kernel_kw()
            bak = self._bak[worker]
            for master, part in self._groups:
                sts = [self._states[i] for i in part]
                moms = None if sts[0][1] is None else [st[1] for st in sts]
                mss = None if sts[0][2] is None else [st[2] for st in sts]
                ws, gs, bs = ([a[i] for i in part] for a in (self._params, grads, bak))
                rates = {"lrs": [lrs[i] for i in part], "wds": [wds[i] for i in part]}
                if master:
                    F.multi_mp_dcasgd_backup_update(ws, gs, bs, [st[0] for st in sts], moms, mss,
                                                    **rates, **kw)
                else:
                    F.multi_dcasgd_backup_update(ws, gs, bs, moms, mss, **rates, **kw)
                first = False
        except BaseException:
            if first:
                opt._undo_count(token)
            raise

    def _push_synchronous(self, worker: int, grads: Sequence[Any]) -> None:
        """SSGD: the last push of a round applies the average of the round's gradients (computed
        into new arrays, so a refused update leaves the sum untouched); earlier pushes add to it."""
        m = self._num_workers
        if sum(self._round_pushed) + 1 < m:
            for acc, g in zip(self._acc, grads):
                _add_into(acc, g)
            self._round_pushed[worker] = True
            return
        avg = [_average(acc, g, m, p) for acc, g, p in zip(self._acc, grads, self._params)]
        start, cpu_start = time.perf_counter(), time.thread_time()
        self._opt._set_current_context(_arrays.device_id(self._params[0]))
        self._opt.update_multi_precision(self._indices, self._params, avg, self._states)
        self._kernel_seconds += time.perf_counter() - start
        self._kernel_cpu_seconds += time.thread_time() - cpu_start
        for acc in self._acc:
            _arrays.copy_into(acc, np.zeros((), dtype=np.float32))
        self._round_pushed = [False] * m
        self._version += 1

    # ----------------------------------------------------------------------------------- stats
    def stats(self) -> dict[str, Any]:
        """``updates`` (= version), ``pushes`` and ``pulls`` (lists per worker), ``staleness_mean``,
        ``staleness_max``, ``staleness_hist`` (pushes with staleness 0, 1, 2, ...), ``pending``
        (pushes waiting for the end of a synchronous round), ``kernel_seconds`` (wall time
        spent in updates by this process) and ``kernel_cpu_seconds`` (the CPU time of the calling
        thread in those updates: without the time the process waited for a CPU, and without other
        OpenMP threads' time; neither is saved by get_states)."""
        with self._lock:
            total = sum(self._pushes)
            return {
                "updates": self._version,
                "pushes": list(self._pushes),
                "pulls": list(self._pulls),
                "staleness_mean": self._stale_sum / total if total else 0.0,
                "staleness_max": len(self._hist) - 1 if self._hist else 0,
                "staleness_hist": list(self._hist),
                "pending": sum(self._round_pushed),
                "kernel_seconds": self._kernel_seconds,
                "kernel_cpu_seconds": self._kernel_cpu_seconds,
            }

    # -------------------------------------------------------------------------------- saving
    def _trees(self) -> dict[str, Any]:
        return {"weights": tuple(self._params), "states": tuple(self._states),
                "backups": tuple(tuple(b) for b in self._bak), "acc": tuple(self._acc)}

    def _counters(self) -> np.ndarray:
        """The server's counters as one float64 array (integers, exact below 2**53): a header
        ``[1, num_workers, mode, synchronous, len(params), version, staleness sum, len(hist)]``,
        then per worker its pulled version, last seq and that seq's version (-1: none), pushes,
        pulls and whether it pushed in the current round, then the staleness histogram."""
        m = self._num_workers
        none = (lambda v: -1 if v is None else v)
        head = [1, m, _MODES.index(self._mode), int(self._synchronous), len(self._params),
                self._version, self._stale_sum, len(self._hist)]
        cols = ([none(v) for v in self._pulled] + [none(v) for v in self._last_seq]
                + [none(v) for v in self._seq_version] + self._pushes + self._pulls
                + [int(b) for b in self._round_pushed])
        return np.array(head + cols + self._hist, dtype=np.float64)

    def get_states(self) -> bytes:
        """Everything needed to continue exactly: weights, optimizer (hyper-parameters, counts,
        scheduler) and its states, backups, version, each worker's pulled version and last seq,
        push / pull counts and the staleness histogram. The bytes are an ``Updater`` state file
        (``get_states(dump_optimizer=True)``: an ``.npz`` with a JSON manifest, never unpickled)
        whose entries are the server's arrays and counters."""
        with self._lock:
            u = Updater(self._opt)
            u.states = dict(self._trees(), server=self._counters())
            return u.get_states(dump_optimizer=True)

    def set_states(self, states: bytes) -> None:
        """Loads what :meth:`get_states` saved from a server with the same parameters (shapes,
        dtypes), mode, number of workers and optimizer class and state layout; weights and states
        are copied into the server's own arrays, the optimizer's saved state into its optimizer.
        Everything is checked before anything is written: a mismatch or a malformed file is a
        ``ValueError`` and leaves the server as it was."""
        if not isinstance(states, (bytes, bytearray, memoryview)):
            raise TypeError(f"set_states expects bytes, got {type(states).__qualname__}")
        with self._lock:
            u = Updater(copy.copy(self._opt))  # loading may write into this optimizer: a copy
            u.set_states(states)
            loaded, opt = u.states, u.optimizer
            own = self._trees()
            if set(loaded) != set(own) | {"server"} or type(opt) is not type(self._opt):
                raise ValueError("set_states: not the state of a ParameterServer with this "
                                 f"optimizer class ({type(self._opt).__name__})")
            _check_loaded_optimizer(opt, self._opt)
            for attr in ("momentum", "adaptive", "multi_precision"):
                if bool(getattr(opt, attr, False)) != bool(getattr(self._opt, attr, False)):
                    raise ValueError(f"set_states: the saved optimizer's {attr} differs from this "
                                     "server's (its states would not fit)")
            counters = self._read_counters(loaded["server"])
            for key, tree in own.items():
                _check_tree(key, loaded[key], tree, key)
            for key, tree in own.items():
                _map_pairs(tree, loaded[key], _arrays.copy_into)
            param_dict = self._opt.param_dict
            self._opt.__dict__.clear()
            self._opt.__dict__.update(vars(opt))
            self._opt.param_dict = param_dict
            for name, value in counters.items():
                setattr(self, f"_{name}", value)

    def _read_counters(self, a: Any) -> dict[str, Any]:
        """The counters of :meth:`_counters`, checked against this server and for consistency."""
        m, n = self._num_workers, len(self._params)
        fixed = 8 + 6 * m
        if (not isinstance(a, np.ndarray) or a.dtype != np.float64 or a.ndim != 1
                or len(a) < fixed or not np.all(np.isfinite(a)) or not np.all(a == np.round(a))
                or not np.all(np.abs(a) < 2.0 ** 53)):
            raise ValueError("set_states: malformed server counters")
        v = [int(x) for x in a]
        fmt, workers, mode, sync, params, version, stale_sum, n_hist = v[:8]
        expected = [1, m, _MODES.index(self._mode), int(self._synchronous), n]
        if [fmt, workers, mode, sync, params] != expected:
            raise ValueError(f"set_states: the saved server (version, workers, mode, synchronous, "
                             f"parameters) is {[fmt, workers, mode, sync, params]}, this one "
                             f"{expected}")
        cols = [v[8 + k * m: 8 + (k + 1) * m] for k in range(6)]
        hist = v[fixed:]
        pulled, last_seq, seq_version, pushes, pulls, round_pushed = cols
        if (len(hist) != n_hist or version < 0 or min(hist, default=0) < 0
                or min(pushes + pulls) < 0 or sum(hist) != sum(pushes)
                or stale_sum != sum(k * h for k, h in enumerate(hist))
                or not all(-1 <= x <= version for x in pulled + seq_version)
                or min(last_seq) < -1 or not set(round_pushed) <= {0, 1}
                or (self._synchronous and sum(round_pushed) >= m)):
            raise ValueError("set_states: inconsistent server counters")
        none = (lambda x: None if x == -1 else x)
        return {"version": version, "pulled": [none(x) for x in pulled],
                "last_seq": [none(x) for x in last_seq],
                "seq_version": [none(x) for x in seq_version], "pushes": pushes, "pulls": pulls,
                "hist": hist, "stale_sum": stale_sum,
                "round_pushed": [bool(x) for x in round_pushed]}


# ------------------------------------------------------------------------------------ helpers
def _check_loaded_optimizer(opt: Optimizer, own: Optimizer) -> None:
    """The loaded optimizer has the attributes of the server's own and each hyper-parameter passes
    its property's setter (what its constructor would accept)."""
    if set(vars(opt)) != set(vars(own)):
        diff = sorted(set(vars(opt)) ^ set(vars(own)))
        raise ValueError(f"set_states: the saved optimizer's attributes differ from this server's "
                         f"({', '.join(diff)})")
    for name, value in vars(opt).items():
        prop = getattr(type(opt), name[1:], None) if name.startswith("_") else None
        if isinstance(prop, property) and prop.fset is not None:
            try:
                prop.fset(opt, value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"set_states: invalid optimizer attribute {name!r} ({exc})") from None


def _map_pairs(dst: Any, src: Any, fn: Callable[[Any, Any], None]) -> None:
    if dst is None:
        return
    if isinstance(dst, tuple):
        for d, s in zip(dst, src):
            _map_pairs(d, s, fn)
        return
    fn(dst, src)


def _same_library(a: Any, like: Any) -> Any:
    """``a`` as an array of ``like``'s library and device (itself when it already is one)."""
    if isinstance(like, np.ndarray):
        return _arrays.to_numpy(a)
    if type(a) is type(like):
        return a
    return _arrays.from_numpy_like(like, _arrays.to_numpy(a))


def _add_into(acc: Any, g: Any) -> None:
    """acc += g (acc float32 / float64, g of the parameter's dtype)."""
    if isinstance(acc, np.ndarray):
        np.add(acc, _arrays.to_numpy(g), out=acc, casting="unsafe")
    else:
        acc += _same_library(g, acc)


def _average(acc: Any, g: Any, m: int, like: Any) -> Any:
    """A new array ``(acc + g) / m`` in ``like``'s dtype (rounded once from acc's dtype)."""
    s = acc + _same_library(g, acc)
    s /= m
    if isinstance(s, np.ndarray):
        return s.astype(like.dtype, copy=False)
    to = getattr(s, "to", None)
    return to(like.dtype) if to is not None else s.astype(like.dtype)
