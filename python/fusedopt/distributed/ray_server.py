"""``RayParameterServer``: the parameter server served by Ray actors, sharded and fault tolerant.

Layers above, never beside: each shard actor holds one :class:`~fusedopt.distributed.ParameterServer`
over its subset of the parameters; this module only splits, routes, checkpoints and retries.

Note [whole pushes]
    A push is checked whole on the handle before any shard sees it: the worker id, that this handle
    pulled for that worker, the number of gradients and each one's shape, dtype, device and layout,
    against the specs the shards reported at construction. These are exactly the checks of
    ``ParameterServer.check_push`` that can differ between shards, so a shard cannot refuse a push the
    handle let through, and no push is half applied. The one state a shard can lose is a worker's pull
    record, when it restarts from a checkpoint written before that pull; a restarted shard therefore
    re-pulls (internally, discarding the copies) for each worker before that worker's first push to
    it, so it accepts the pushes the other shards accept. No extra round trip is paid per push.
    The exception: a restarted shard that cannot read its checkpoint refuses every call (ValueError
    naming the file) while the others go on applying; that server must be restored.

Note [copies]
    pull: the shard hands its own weight arrays to Ray (``ParameterServer.pull(copy=False)``) and
    Ray serialises them into the object store: one copy, which the worker reads in place (read-only
    arrays). That copy is the snapshot a pull promises, because Ray takes it before the shard can
    run another call: in Ray 2.60 a method's return value is serialised by the thread that ran the
    method, inside the same task execution (``_raylet.pyx``: ``execute_task`` calls the method, then
    ``CoreWorker.store_task_outputs``, which serialises each return value and writes its bytes into
    the return buffer, inlined or in the object store, with ``SerializedObject.write_to``), and a
    shard actor runs one call at a time (Ray's default ``max_concurrency=1``; no async methods). So
    no push can update the arrays between the return and the end of the copy. A shard given
    ``max_concurrency`` > 1 or ``concurrency_groups`` in ``actor_options`` could run a push during
    that copy: it copies the weights before returning them, as ``ParameterServer.pull`` does by
    default (two copies). CUDA shards copy device -> host once (that host copy is serialised: two).
    With ``backups="worker"`` a pull also copies the weights into the worker's backup on the shard
    (a real copy: the next update reads it). push: the worker's gradients are serialised once into
    the object store, as one object (``ray.put`` of the whole list) whose reference goes to every
    shard; each shard maps it and updates from its own arrays in place (read-only, no copy). One
    object instead of one per shard saves the object store's per-object work on every push: a
    round trip with 1 / 2 / 4 shards (1M parameters, 2 vCPUs) took 4.3 / 5.1 / 8.7 ms against
    5.4 / 6.4 / 10.9 ms with each shard's part passed as its own argument.
    Construction copies the initial parameters once into each shard (the object store's arrays are
    read-only). Checkpoints serialise the shard's state.
"""

from __future__ import annotations

import copy
import math
import os
import time
import warnings
from typing import Any, Sequence

import numpy as np
import ray

from .. import _arrays
from ..optimizer import Optimizer
from ..updater import load_archive, save_archive
from .server import MAX_SEQ, ParameterServer, _check_int

_FORMAT = "fusedopt.ray_parameter_server"
_VERSION = 1


def _as_host_array(x: Any, what: str) -> np.ndarray:
    """A NumPy view of a NumPy array or a torch CPU tensor (no copy); anything else is refused."""
    if isinstance(x, np.ndarray):
        return x
    mod = type(x).__module__
    if mod.startswith("torch"):
        device = str(x.device)
        if device != "cpu":
            raise ValueError(f"{what} is on {device}: the Ray parameter server takes CPU arrays "
                             "(NumPy or torch CPU tensors); copy it to the host first")
        return x.detach().numpy()
    raise TypeError(f"{what} must be a NumPy array or a torch CPU tensor, got {type(x).__name__}")


def balanced_shards(sizes: Sequence[int], num_shards: int) -> list[list[int]]:
    """Splits parameter indices over ``num_shards`` by size: largest first, each to the lightest shard
    (ties to the lowest shard); indices ascending within a shard."""
    loads = [0] * num_shards
    members: list[list[int]] = [[] for _ in range(num_shards)]
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        k = min(range(num_shards), key=lambda s: (loads[s], s))
        members[k].append(i)
        loads[k] += sizes[i]
    return [sorted(m) for m in members]


def _localize(optimizer: Optimizer, indices: list[int]) -> Optimizer:
    """A copy of ``optimizer`` whose per-index tables use the shard's local indices 0..k-1."""
    local = copy.deepcopy(optimizer)
    remap = {g: k for k, g in enumerate(indices)}

    def table(t: dict[Any, Any]) -> dict[Any, Any]:
        # Integer keys are global indices: keep this shard's, renumbered; names stay as they are.
        return {(remap[k] if isinstance(k, int) else k): v for k, v in t.items()
                if not isinstance(k, int) or k in remap}

    local.lr_mult = table(optimizer.lr_mult)
    local.wd_mult = table(optimizer.wd_mult)
    local.idx2name = table(optimizer.idx2name)
    return local


def _write_atomically(path: str, blob: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class _Shard:
    """One Ray actor: a ParameterServer over a subset of the parameters, checkpointed to a file."""

    def __init__(self, shard: int, params_ref: list[Any], optimizer: Optimizer, num_workers: int,
                 backups: str, synchronous: bool, checkpoint_path: str | None,
                 checkpoint_every: int, device: str, serial: bool, indices: list[int],
                 num_params: int) -> None:
        self._shard = shard
        # A push hands every shard the whole gradient list (one object: Note [copies]); this shard
        # updates the parameters at these global indices.
        self._indices = list(indices)
        self._num_params = num_params
        self._device = device
        # Whether a pull may hand the shard's own arrays to Ray's serialiser (Note [copies]).
        self._copy_on_pull = not serial
        self._error: Exception | None = None
        self._template = copy.deepcopy(optimizer)   # a fresh optimizer for set_states' dry run
        self._args = (num_workers, backups, synchronous)
        self._ckpt = checkpoint_path
        self._every = checkpoint_every
        self._t_push = self._t_pull = self._t_ckpt = 0.0
        self._n_ckpt = self._repulls = 0
        self._loaded = False
        with warnings.catch_warnings():     # Ray 2.60's own property reads a deprecated attribute
            warnings.simplefilter("ignore", DeprecationWarning)
            self._restarted = bool(ray.get_runtime_context().was_current_actor_reconstructed)
        # A restarted shard may have lost pull records (Note [whole pushes]).
        self._repull = set(range(num_workers)) if self._restarted else set()
        try:
            # The object store's arrays are read-only: the shard owns one writable copy.
            weights = [self._to_device(np.array(p, copy=True)) for p in ray.get(params_ref[0])]
            self._ps = ParameterServer(weights, optimizer, num_workers, backups=backups,
                                       synchronous=synchronous)
            if checkpoint_path is not None and os.path.exists(checkpoint_path):
                self._load(checkpoint_path)
        except (ValueError, TypeError, OSError) as e:
            # Kept and raised by every call, so the caller gets the typed error.
            self._error = e
            return
        self._ckpt_version = self._ps.version

    def _to_device(self, a: np.ndarray) -> Any:
        if self._device == "cpu":
            return a
        import torch  # CUDA shards (num_gpus > 0) hold torch CUDA tensors; unchecked without a GPU

        return torch.from_numpy(a).to(self._device)

    def _load(self, path: str) -> None:
        try:
            with open(path, "rb") as f:
                blob = f.read()
            self._ps.set_states(blob)
        except (ValueError, TypeError, OSError) as e:
            raise ValueError(f"shard {self._shard}: checkpoint {path!r} cannot be loaded: {e}") from None
        self._loaded = True

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def info(self) -> dict[str, Any]:
        self._check()
        return {"specs": self._ps.param_specs(), "version": self._ps.version, "pid": os.getpid(),
                "loaded_checkpoint": self._loaded}

    def pull(self, worker: int) -> tuple[list[Any], int]:
        self._check()
        t0 = time.perf_counter()
        weights, version = self._ps.pull(worker, copy=self._copy_on_pull)
        if self._device != "cpu":
            weights = [w.cpu().numpy() for w in weights]   # device -> host copy for the wire
        self._t_pull += time.perf_counter() - t0
        self._repull.discard(worker)
        return weights, version

    def push(self, worker: int, grads: list[np.ndarray], seq: int) -> int:
        """``grads``: the gradients of every parameter of the server (this shard takes its own)."""
        self._check()
        if not isinstance(grads, list) or len(grads) != self._num_params:
            raise ValueError(f"shard {self._shard}: expected the {self._num_params} gradients of the "
                             "whole model")
        grads = [grads[i] for i in self._indices]
        if worker in self._repull:
            self._ps.pull(worker, copy=False)      # records the pull; the weights are not used
            self._repull.discard(worker)
            self._repulls += 1
        if self._device != "cpu":
            import torch

            with warnings.catch_warnings():     # torch warns on read-only arrays; they are only read
                warnings.simplefilter("ignore", UserWarning)
                grads = [torch.from_numpy(g).to(self._device) for g in grads]   # host -> device copy
        t0 = time.perf_counter()
        version = self._ps.push(worker, grads, seq=seq)
        self._t_push += time.perf_counter() - t0
        if self._ckpt is not None and self._ps.version - self._ckpt_version >= self._every:
            self.checkpoint()
        return version

    def push_pull(self, worker: int, grads: list[np.ndarray], seq: int) -> tuple[list[Any], int]:
        """A push, then a pull by the same worker, in one call (one round trip for a worker's step)."""
        self.push(worker, grads, seq)
        return self.pull(worker)

    def version(self) -> int:
        self._check()
        return self._ps.version

    def checkpoint(self) -> None:
        self._check()
        if self._ckpt is None:
            return
        t0 = time.perf_counter()
        _write_atomically(self._ckpt, self._ps.get_states())
        self._ckpt_version = self._ps.version
        self._n_ckpt += 1
        self._t_ckpt += time.perf_counter() - t0

    def get_states(self) -> bytes:
        self._check()
        return self._ps.get_states()

    def check_states(self, blob: bytes) -> None:
        """Loads ``blob`` into a scratch server of the same layout: raises what set_states would."""
        self._check()
        scratch = [self._to_device(np.zeros(shape, dtype)) for shape, dtype, _ in self._ps.param_specs()]
        num_workers, backups, synchronous = self._args
        ParameterServer(scratch, copy.deepcopy(self._template), num_workers, backups=backups,
                        synchronous=synchronous).set_states(blob)

    def set_states(self, blob: bytes) -> None:
        self._check()
        self._ps.set_states(blob)
        self._repull.clear()
        self.checkpoint()

    def stats(self) -> dict[str, Any]:
        self._check()
        return {"server": self._ps.stats(), "pid": os.getpid(),
                "node_id": ray.get_runtime_context().get_node_id(), "restarted": self._restarted,
                "loaded_checkpoint": self._loaded, "push_seconds": self._t_push,
                "pull_seconds": self._t_pull, "checkpoint_seconds": self._t_ckpt,
                "checkpoints": self._n_ckpt, "repulls_after_restart": self._repulls}


def _unwrap(refs: Any) -> Any:
    """``ray.get`` that re-raises a shard's ValueError / TypeError as itself at the caller."""
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, (ValueError, TypeError)):
            raise e.cause from None
        raise


class RayParameterServer:
    """A :class:`ParameterServer` served by ``num_shards`` Ray actors in the current Ray cluster.

    Parameters are split over the shards balanced by size; each shard actor holds one
    ``ParameterServer`` over its part (a copy of ``optimizer`` with per-index multipliers renumbered).
    The handle is picklable: pass it to Ray tasks and actors, which then call ``pull`` / ``push``.

    Fault tolerance: with ``checkpoint_dir``, each shard writes its state (the safe format of
    ``ParameterServer.get_states``) to ``checkpoint_dir/shard-<k>-of-<n>.state`` every
    ``checkpoint_every`` updates, atomically (temporary file, fsync, rename). Ray restarts a shard
    whose process dies (up to ``max_restarts`` times) and retries the calls in flight; the restarted
    shard reloads its checkpoint, so it loses the updates applied since it was written (at most
    ``checkpoint_every - 1``). Pushes carry a per-worker sequence number, so a retried push is applied
    once. Without ``checkpoint_dir`` a restarted shard starts again from the initial parameters. A
    directory that already holds this layout's checkpoints is resumed from.

    ``num_gpus`` > 0 places each shard with that many GPUs and keeps its weights as torch CUDA
    tensors (gradients copied to the device on arrival, weights to the host on pull).
    ``actor_options`` are passed to the shard actors' ``.options`` (e.g. ``resources``,
    ``scheduling_strategy``).
    """

    def __init__(self, params: Sequence[Any], optimizer: Optimizer, num_workers: int, *,
                 num_shards: int = 1, backups: str = "worker", synchronous: bool = False,
                 checkpoint_dir: str | os.PathLike[str] | None = None, checkpoint_every: int = 100,
                 max_restarts: int = 3, num_gpus: float = 0,
                 actor_options: dict[str, Any] | None = None) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a fusedopt.Optimizer, got {type(optimizer).__name__}")
        if optimizer.param_dict:
            raise ValueError("optimizer.param_dict is not sent to the shards (optimizers drop it when "
                             "pickled): give the multipliers with set_lr_mult / set_wd_mult")
        if isinstance(params, (str, bytes)) or not isinstance(params, Sequence) or len(params) == 0:
            raise TypeError("params must be a non-empty list of arrays")
        arrays = [_as_host_array(p, f"params[{i}]") for i, p in enumerate(params)]
        num_shards = _check_int("num_shards", num_shards, 1)
        checkpoint_every = _check_int("checkpoint_every", checkpoint_every, 1)
        max_restarts = _check_int("max_restarts", max_restarts, 0)
        if num_shards > len(arrays):
            raise ValueError(f"num_shards={num_shards} exceeds the number of parameters ({len(arrays)})")
        if not (isinstance(num_gpus, (int, float)) and math.isfinite(num_gpus) and num_gpus >= 0):
            raise ValueError(f"num_gpus must be a finite number >= 0, got {num_gpus!r}")
        if not ray.is_initialized():
            raise RuntimeError("Ray is not initialised: call ray.init(...) (or "
                               "fusedopt.distributed.init_local_ray()) first")

        self._assign = balanced_shards([a.nbytes for a in arrays], num_shards)
        ckpt_dir = None if checkpoint_dir is None else os.fspath(checkpoint_dir)
        if ckpt_dir is not None:
            os.makedirs(ckpt_dir, exist_ok=True)
        options = {"max_restarts": max_restarts, "max_task_retries": -1 if max_restarts else 0,
                   "num_cpus": 0, "num_gpus": num_gpus, **(actor_options or {})}
        actor = ray.remote(_Shard).options(**options)
        device = "cuda" if num_gpus > 0 else "cpu"
        # One call at a time in each shard (Ray's default), so a pull needs no copy of its own.
        serial = options.get("max_concurrency", 1) == 1 and not options.get("concurrency_groups")
        self._shards = []
        # The initial parameters stay in the object store as long as this handle lives: a restarted
        # shard runs __init__ again from them. (Passed nested, so Ray does not pin them to the actor.)
        self._param_refs = [ray.put([arrays[i] for i in idx]) for idx in self._assign]
        for k, idx in enumerate(self._assign):
            path = (None if ckpt_dir is None
                    else os.path.join(ckpt_dir, f"shard-{k}-of-{num_shards}.state"))
            self._shards.append(actor.remote(
                k, [self._param_refs[k]], _localize(optimizer, idx), num_workers, backups,
                synchronous, path, checkpoint_every, device, serial, idx, len(arrays)))
        try:
            infos = _unwrap([s.info.remote() for s in self._shards])
        except BaseException:
            self.shutdown()
            raise
        self._specs: list[tuple[tuple[int, ...], str]] = [((), "")] * len(arrays)
        for idx, info in zip(self._assign, infos):
            for i, (shape, dtype, _device) in zip(idx, info["specs"]):
                self._specs[i] = (tuple(shape), str(dtype))
        self.num_workers = num_workers
        self.num_shards = num_shards
        self.synchronous = synchronous
        self._pulled: set[int] = set()
        self._last_seq: dict[int, int] = {}

    # -- pickling: actor handles and specs travel; per-copy pull records and sequence numbers do not
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pulled"] = set()
        state["_last_seq"] = {}
        return state

    @property
    def shard_assignment(self) -> list[list[int]]:
        """The global parameter indices each shard holds."""
        return [list(idx) for idx in self._assign]

    def _check_worker(self, worker: Any) -> int:
        return _check_int("worker", worker, 0, self.num_workers)

    def pull(self, worker: int) -> tuple[list[np.ndarray], int]:
        """Current weights (read-only NumPy arrays in Ray's object store) and the number of updates
        applied on every shard (the least over shards, which differ only after a shard restart)."""
        worker = self._check_worker(worker)
        weights, version = self._gather(_unwrap([s.pull.remote(worker) for s in self._shards]))
        self._pulled.add(worker)
        return weights, version

    def _gather(self, results: list[tuple[list[Any], int]]) -> tuple[list[Any], int]:
        """The shards' pull results in the parameters' order, and the least version."""
        weights: list[Any] = [None] * len(self._specs)
        for idx, (ws, _) in zip(self._assign, results):
            for i, w in zip(idx, ws):
                weights[i] = w
        return weights, min(v for _, v in results)

    def check_push(self, worker: int, grads: Sequence[Any]) -> list[np.ndarray]:
        """Every check of a push (Note [whole pushes]); returns the gradients as NumPy views."""
        worker = self._check_worker(worker)
        if worker not in self._pulled:
            raise ValueError(f"worker {worker} pushed without a pull through this handle: call "
                             "pull(worker) first (each worker pulls and pushes through its own handle)")
        if isinstance(grads, (str, bytes)) or not isinstance(grads, Sequence):
            raise TypeError(f"grads must be a list of arrays, got {type(grads).__name__}")
        if len(grads) != len(self._specs):
            raise ValueError(f"grads has {len(grads)} arrays, the server holds {len(self._specs)} parameters")
        out = []
        for i, (g, (shape, dtype)) in enumerate(zip(grads, self._specs)):
            a = _as_host_array(g, f"grads[{i}]")
            if _arrays.dtype_name(a) != dtype:      # cached names: str(dtype) costs ~5 us a call
                raise TypeError(f"grads[{i}] has dtype {a.dtype}, parameter {i} is {dtype}")
            if a.shape != shape:
                raise ValueError(f"grads[{i}] has shape {a.shape}, parameter {i} has shape {shape}")
            if not a.flags.c_contiguous:
                raise ValueError(f"grads[{i}] is not C-contiguous (it would be copied on the way)")
            out.append(a)
        return out

    def _next_seq(self, worker: int) -> int:
        # Unique per worker across handle copies and processes: nanoseconds, strictly increasing here.
        # Microseconds of the clock: increasing across restarts of a worker, and below the server's
        # MAX_SEQ (2**53, about 285 years of microseconds).
        seq = max(time.time_ns() // 1000, self._last_seq.get(worker, 0) + 1)
        self._last_seq[worker] = seq
        return seq

    def push(self, worker: int, grads: Sequence[Any], *, seq: int | None = None) -> int:
        """One update with ``worker``'s gradients on every shard; returns the version it produced (the
        least over shards). ``seq``: a per-worker increasing number (default: made by the handle,
        from the clock); a push carrying the ``seq`` of that worker's last applied push is not applied
        again and returns that push's version (a retry); an older ``seq`` is a ValueError."""
        arrays, seq = self._checked(worker, grads, seq)
        whole = ray.put(arrays)  # one object for every shard (Note [copies])
        return min(_unwrap([s.push.remote(int(worker), whole, seq) for s in self._shards]))

    def _checked(self, worker: Any, grads: Sequence[Any], seq: Any) -> tuple[list[np.ndarray], int]:
        arrays = self.check_push(worker, grads)
        if seq is None:
            return arrays, self._next_seq(int(worker))
        return arrays, _check_int("seq", seq, 0, MAX_SEQ)

    def push_and_pull(self, worker: int, grads: Sequence[Any], *, seq: int | None = None
                      ) -> tuple[list[np.ndarray], int]:
        """``push(worker, grads)`` then ``pull(worker)`` in one round trip per shard: the worker's
        next weights and the version after its push. Same checks, seq and results as the two calls."""
        arrays, seq = self._checked(worker, grads, seq)
        worker = int(worker)
        whole = ray.put(arrays)  # one object for every shard (Note [copies])
        return self._gather(_unwrap([s.push_pull.remote(worker, whole, seq) for s in self._shards]))

    def version(self) -> int:
        """Updates applied on every shard (the least over shards)."""
        return min(_unwrap([s.version.remote() for s in self._shards]))

    def wait_version(self, version: int, timeout: float = 60.0, poll: float = 0.002) -> int:
        """Waits until every shard has applied ``version`` updates (synchronous training: the round
        a worker pushed into is complete); TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            v = self.version()
            if v >= version:
                return v
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server is at version {v}, {version} not reached in {timeout} s")
            time.sleep(poll)

    def checkpoint(self) -> None:
        """Writes every shard's checkpoint now (no-op without ``checkpoint_dir``)."""
        _unwrap([s.checkpoint.remote() for s in self._shards])

    def stats(self) -> dict[str, Any]:
        """Shard 0's server statistics (every shard sees the same pushes), ``updates`` as the least
        over shards, and per shard: its statistics, pid, restart flag and time split."""
        shards = _unwrap([s.stats.remote() for s in self._shards])
        out = dict(shards[0]["server"])
        out["updates"] = min(s["server"]["updates"] for s in shards)
        out["shards"] = shards
        return out

    def get_states(self) -> bytes:
        """Every shard's state (each in ``ParameterServer``'s format) in one archive of the same
        kind: an ``.npz`` with a JSON manifest (layout) and one byte array per shard; no pickle."""
        blobs = _unwrap([s.get_states.remote() for s in self._shards])
        manifest = dict(self._manifest(), sizes=[len(b) for b in blobs])
        return save_archive(manifest,
                            {f"shard{k}": np.frombuffer(b, np.uint8) for k, b in enumerate(blobs)})

    def _manifest(self) -> dict[str, Any]:
        return {"format": _FORMAT, "version": _VERSION, "assignment": self._assign,
                "specs": [[list(shape), dtype] for shape, dtype in self._specs]}

    def _max_shard_bytes(self, shard: int) -> int:
        """A generous bound on one shard's saved state: its weights, at most four state arrays of
        float32 or wider per weight element, one backup per worker, plus 64 MiB of manifest."""
        elems = sum(math.prod(self._specs[i][0]) for i in self._assign[shard])
        return elems * 8 * (self.num_workers + 6) + (64 << 20)

    def _read_states(self, manifest: dict[str, Any], archive: Any) -> list[bytes]:
        own = self._manifest()
        for key in ("assignment", "specs"):
            if manifest.get(key) != own[key]:
                raise ValueError(f"set_states: the saved server has {key} {manifest.get(key)!r}, "
                                 f"this one {own[key]!r}")
        sizes = manifest.get("sizes")
        if (not isinstance(sizes, list) or len(sizes) != self.num_shards
                or not all(type(n) is int and 0 <= n <= self._max_shard_bytes(k)
                           for k, n in enumerate(sizes))):
            raise ValueError("set_states: malformed or oversized shard sizes")
        # Each part is read bounded by its declared size; its own loader checks it against the shard.
        return [archive.array(f"shard{k}", "uint8", [n], f"shard{k}").tobytes()
                for k, n in enumerate(sizes)]

    def set_states(self, blob: bytes) -> None:
        """Restores ``get_states``' bytes: checked on every shard first (each loads its part into a
        scratch server), then loaded on every shard, so a bad blob is a ValueError / TypeError that
        changes nothing anywhere."""
        parts = load_archive(blob, _FORMAT, _VERSION, self._read_states)
        _unwrap([s.check_states.remote(b) for s, b in zip(self._shards, parts)])
        _unwrap([s.set_states.remote(b) for s, b in zip(self._shards, parts)])

    def shutdown(self) -> None:
        """Kills the shard actors (no restart); checkpoints on disk stay."""
        for s in self._shards:
            ray.kill(s, no_restart=True)
        self._shards = []
        self._param_refs = []


def init_local_ray(num_cpus: int = 2, *, object_store_memory: int | None = None, **kwargs: Any) -> None:
    """Starts a local Ray instance for this process, bound to 127.0.0.1, without the dashboard.

    Token authentication: Ray 2.60 turns it on for new local clusters and writes a token to
    ``~/.ray/auth_token``. A local instance on 127.0.0.1 does not need it, so unless ``RAY_AUTH_MODE``
    is already set this sets ``RAY_AUTH_MODE=disabled`` for this process (and the Ray processes it
    starts). Set ``RAY_AUTH_MODE=token`` beforehand to keep token authentication.
    """
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
             object_store_memory=object_store_memory, _node_ip_address="127.0.0.1",
             **kwargs)
