"""``Updater``: applies an optimizer to indexed weights, creating states lazily, and saves / loads
those states in a versioned format that never unpickles (SPEC.md §9).

Saved format (version 1): an uncompressed ``.npz`` archive (``numpy.savez``) holding

* ``manifest``: UTF-8 JSON as a uint8 array — ``{"format": "fusedopt.updater_states", "version": 1,
  "states": [[key, tree], ...], "optimizer": null | {...}}``. Keys and attribute values are tagged
  JSON values (see ``_encode``). A tree is ``{"none": 0}``, ``{"array": i, "dtype": str, "shape": [...]}``
  or ``{"tuple": [tree, ...]}``.
* ``a0``, ``a1``, ...: the state arrays as ``.npy`` (bfloat16 stored as its uint16 bits).

Loading reads only ``.npy`` data with ``allow_pickle=False`` and JSON; optimizer and scheduler classes are
looked up in fusedopt's own registries, never imported by name. Anything malformed is a ``ValueError``.
"""

from __future__ import annotations

import io
import json
import math
import operator
import warnings
import zipfile
from typing import Any, Callable, TypeVar

import numpy as np

from . import _arrays, lr_scheduler
from ._validate import check_finite, check_nonnegative
from .optimizer import Optimizer

__all__ = ["Updater", "get_updater"]

_DTYPE_OF = operator.attrgetter("dtype")
T = TypeVar("T")

FORMAT = "fusedopt.updater_states"
VERSION = 1
_DTYPES = ("float16", "bfloat16", "float32", "float64")
_SCHEDULERS = {
    cls.__name__: cls
    for cls in (
        lr_scheduler.LRScheduler,
        lr_scheduler.FactorScheduler,
        lr_scheduler.MultiFactorScheduler,
        lr_scheduler.PolyScheduler,
        lr_scheduler.CosineScheduler,
    )
}
# Attributes that are not plain data and are saved (or dropped) specially.
_SPECIAL = ("param_dict", "lr_scheduler", "_all_index_update_counts", "_index_update_count")


class Updater:
    """Calls ``optimizer.update_multi_precision`` for ``updater(index, grad, weight)``.

    ``index``, ``grad`` and ``weight`` are single items or equal-length lists. States are created on
    first sight of an index with ``create_state_multi_precision``. With ``aggregate_num > 1`` weights
    are grouped by dtype and updated ``aggregate_num`` at a time; otherwise one index per call.
    """

    def __init__(self, optimizer: Optimizer) -> None:
        self.optimizer = optimizer
        self.states: dict[Any, Any] = {}
        self.states_synced: dict[Any, bool] = {}

    @property
    def aggregate_updates(self) -> bool:
        return self.optimizer.aggregate_num > 1

    def __call__(self, index: Any, grad: Any, weight: Any) -> None:
        if isinstance(index, (list, tuple)):
            indices, grads, weights = list(index), list(grad), list(weight)
            if not len(indices) == len(grads) == len(weights):
                raise ValueError(
                    f"Updater: index, grad and weight must have the same length, got "
                    f"{len(indices)}, {len(grads)} and {len(weights)}"
                )
        else:
            indices, grads, weights = [index], [grad], [weight]
        if not indices:
            return
        self.optimizer._set_current_context(_arrays.device_id(weights[0]))
        states, synced = self.states, self.states_synced
        if bytes in map(type, indices):
            indices = [i.decode() if isinstance(i, bytes) else i for i in indices]
        if not (all(map(states.__contains__, indices)) and False not in synced.values()):
            for i, idx in enumerate(indices):  # first sight of an index, or states loaded from bytes
                if idx not in states:
                    states[idx] = self.optimizer.create_state_multi_precision(idx, weights[i])
                    synced[idx] = True
                elif not synced[idx]:
                    states[idx] = self._sync_state(idx, states[idx], weights[i])
                    synced[idx] = True
        if not self.aggregate_updates:
            for i, w, g in zip(indices, weights, grads):
                self.optimizer.update_multi_precision([i], [w], [g], [self.states[i]])
            return
        chunk = self.optimizer.aggregate_num
        try:
            dtypes = list(map(_DTYPE_OF, weights))
        except AttributeError:  # not an array: the grouping below raises the proper error
            dtypes = [None, weights]
        if math.isinf(chunk) and dtypes.count(dtypes[0]) == len(dtypes):
            # One dtype (the usual case): one group, one call; same as the loop below.
            self.optimizer.update_multi_precision(indices, weights, grads,
                                                  list(map(states.__getitem__, indices)))
            return
        by_dtype: dict[str, list[int]] = {}
        for k, w in enumerate(weights):
            by_dtype.setdefault(_arrays.dtype_name(w), []).append(k)
        for members in by_dtype.values():
            size = len(members) if math.isinf(chunk) else int(chunk)
            for start in range(0, len(members), size):
                part = members[start:start + size]
                self.optimizer.update_multi_precision(
                    [indices[k] for k in part],
                    [weights[k] for k in part],
                    [grads[k] for k in part],
                    [self.states[indices[k]] for k in part],
                )

    # ----------------------------------------------------------------------------------- loading
    def _sync_state(self, index: Any, state: Any, weight: Any) -> Any:
        """Moves a loaded state to the weight's library/device after checking it fits the weight."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = self.optimizer.create_state_multi_precision(index, weight)
        _check_tree(index, state, expected, "state")
        return _map_tree(state, lambda a, e: _arrays.from_numpy_like(e, a), expected)

    def get_states(self, dump_optimizer: bool = False) -> bytes:
        """The states (and, with ``dump_optimizer``, the optimizer) as bytes; see the module doc."""
        arrays: dict[str, np.ndarray] = {}
        entries = [[_encode(idx), _tree_to_manifest(st, arrays)] for idx, st in self.states.items()]
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "states": entries,
            "optimizer": _optimizer_to_manifest(self.optimizer) if dump_optimizer else None,
        }
        return save_archive(manifest, arrays)

    def set_states(self, states: bytes) -> None:
        """Loads what :meth:`get_states` saved. States move to each weight's device at its next
        update; a state that does not fit its weight raises ``ValueError`` then."""
        new_states, optimizer = _load(states)
        if optimizer is not None:
            self.optimizer = optimizer
        self.states = new_states
        self.states_synced = dict.fromkeys(self.states, False)


def get_updater(optimizer: Optimizer) -> Updater:
    """An :class:`Updater` for ``optimizer``."""
    return Updater(optimizer)


# --------------------------------------------------------------------------------------- trees
def _tree_to_manifest(state: Any, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    if state is None:
        return {"none": 0}
    if isinstance(state, (tuple, list)):
        return {"tuple": [_tree_to_manifest(s, arrays) for s in state]}
    dtype = _arrays.dtype_name(state)
    if dtype not in _DTYPES:
        raise TypeError(f"get_states: cannot save a state array of dtype {dtype}")
    a = np.array(_arrays.to_numpy(state), order="C")  # not ascontiguousarray: it makes 0-d 1-d
    key = f"a{len(arrays)}"
    arrays[key] = a.view(np.uint16) if dtype == "bfloat16" else a
    return {"array": key, "dtype": dtype, "shape": list(a.shape)}


def _tree_from_manifest(node: Any, archive: Any, where: str) -> Any:
    if not isinstance(node, dict) or len(node) not in (1, 3):
        raise ValueError(f"set_states: malformed state entry at {where}")
    if "none" in node:
        return None
    if "tuple" in node:
        items = node["tuple"]
        if not isinstance(items, list):
            raise ValueError(f"set_states: malformed tuple at {where}")
        return tuple(_tree_from_manifest(n, archive, f"{where}[{i}]") for i, n in enumerate(items))
    key, dtype, shape = node.get("array"), node.get("dtype"), node.get("shape")
    if not isinstance(key, str) or not key.startswith("a") or key not in archive.files:
        raise ValueError(f"set_states: missing array {key!r} at {where}")
    if dtype not in _DTYPES:
        raise ValueError(f"set_states: unsupported dtype {dtype!r} at {where}")
    if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise ValueError(f"set_states: malformed shape at {where}")
    a = archive[key]  # allow_pickle=False: object arrays are refused by numpy
    stored = "uint16" if dtype == "bfloat16" else dtype
    if str(a.dtype) != stored or list(a.shape) != shape:
        raise ValueError(
            f"set_states: array at {where} is {a.dtype}{list(a.shape)}, manifest says {dtype}{shape}"
        )
    if dtype == "bfloat16":
        import ml_dtypes

        a = a.view(ml_dtypes.bfloat16)
    return np.array(a, order="C")


def _check_tree(index: Any, got: Any, expected: Any, where: str) -> None:
    if expected is None or got is None:
        if (expected is None) != (got is None):
            raise ValueError(
                f"loaded state of index {index!r} does not match its weight at {where}: expected "
                f"{'None' if expected is None else 'an array'}, got {'None' if got is None else 'an array'}"
            )
        return
    if isinstance(expected, tuple):
        if not isinstance(got, tuple) or len(got) != len(expected):
            raise ValueError(f"loaded state of index {index!r} does not match its weight at {where}")
        for i, (g, e) in enumerate(zip(got, expected)):
            _check_tree(index, g, e, f"{where}[{i}]")
        return
    if isinstance(got, tuple):
        raise ValueError(f"loaded state of index {index!r} does not match its weight at {where}")
    if tuple(got.shape) != tuple(expected.shape) or _arrays.dtype_name(got) != _arrays.dtype_name(expected):
        raise ValueError(
            f"loaded state of index {index!r} at {where} is {_arrays.dtype_name(got)}{tuple(got.shape)}, "
            f"but its weight needs {_arrays.dtype_name(expected)}{tuple(expected.shape)}"
        )


def _map_tree(got: Any, fn: Any, expected: Any) -> Any:
    if got is None:
        return None
    if isinstance(got, tuple):
        return tuple(_map_tree(g, fn, e) for g, e in zip(got, expected))
    return fn(got, expected)


# ------------------------------------------------------------------------------ tagged values
def _encode(v: Any) -> Any:
    """JSON-safe tagged value: keeps int vs str keys, tuples, inf/nan."""
    if v is None or isinstance(v, (bool, str)):
        return {"v": v}
    if isinstance(v, (int, np.integer)):
        return {"i": int(v)}
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return {"f": f if math.isfinite(f) else repr(f)}
    if isinstance(v, (list, tuple)):
        return {"l" if isinstance(v, list) else "t": [_encode(x) for x in v]}
    if isinstance(v, dict):
        return {"d": [[_encode(k), _encode(x)] for k, x in v.items()]}
    raise TypeError(f"get_states: cannot save a value of type {type(v).__qualname__}")


def _decode(node: Any) -> Any:
    if not isinstance(node, dict) or len(node) != 1:
        raise ValueError("set_states: malformed value in manifest")
    (tag, val), = node.items()
    if tag == "v" and (val is None or isinstance(val, (bool, str))):
        return val
    if tag == "i" and isinstance(val, int) and not isinstance(val, bool):
        return val
    if tag == "f":
        if isinstance(val, (int, float)) and not isinstance(val, bool):
            return float(val)
        if val in ("inf", "-inf", "nan"):
            return float(val)
    if tag in ("l", "t") and isinstance(val, list):
        items = [_decode(x) for x in val]
        return items if tag == "l" else tuple(items)
    if tag == "d" and isinstance(val, list):
        out = {}
        for pair in val:
            if not isinstance(pair, list) or len(pair) != 2:
                raise ValueError("set_states: malformed dict in manifest")
            k = _decode(pair[0])
            if isinstance(k, (list, dict)):
                raise ValueError("set_states: malformed dict key in manifest")
            out[k] = _decode(pair[1])
        return out
    raise ValueError(f"set_states: malformed value {tag!r} in manifest")


# --------------------------------------------------------------------------------- optimizer
def _optimizer_to_manifest(opt: Optimizer) -> dict[str, Any]:
    name = type(opt).__name__.lower()
    if Optimizer.opt_registry.get(name) is not type(opt):
        raise TypeError(f"get_states: optimizer class {type(opt).__qualname__} is not registered")
    attrs = {k: v for k, v in vars(opt).items() if k not in _SPECIAL}
    sched = opt.lr_scheduler
    sched_entry = None
    if sched is not None:
        cls_name = type(sched).__name__
        if _SCHEDULERS.get(cls_name) is not type(sched):
            raise TypeError(f"get_states: cannot save scheduler class {type(sched).__qualname__}")
        sched_entry = {"class": cls_name, "fields": _encode(sched._fields())}
    return {
        "class": name,
        "attrs": _encode(attrs),
        "counts": _encode(opt._all_index_update_counts),
        "lr_scheduler": sched_entry,
    }


def _optimizer_from_manifest(entry: Any) -> Optimizer:
    if not isinstance(entry, dict):
        raise ValueError("set_states: malformed optimizer entry")
    cls = Optimizer.opt_registry.get(entry.get("class"))  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"set_states: unknown optimizer {entry.get('class')!r}")
    attrs = _decode(entry.get("attrs"))
    counts = _decode(entry.get("counts"))
    if not isinstance(attrs, dict) or not isinstance(counts, dict) or not all(
        isinstance(k, str) and k not in _SPECIAL for k in attrs
    ):
        raise ValueError("set_states: malformed optimizer attributes")
    if not all(isinstance(v, dict) for v in counts.values()):
        raise ValueError("set_states: malformed update counts")
    opt = cls.__new__(cls)
    opt.__dict__.update(attrs)
    _check_optimizer_attrs(cls, opt, attrs)
    opt.param_dict = {}
    opt._all_index_update_counts = counts if counts else {0: {}}
    first = next(iter(opt._all_index_update_counts))
    opt._index_update_count = opt._all_index_update_counts.get(0, opt._all_index_update_counts[first])
    opt.lr_scheduler = None
    sched = entry.get("lr_scheduler")
    if sched is not None:
        if not isinstance(sched, dict) or sched.get("class") not in _SCHEDULERS:
            raise ValueError("set_states: unknown lr_scheduler class")
        fields = _decode(sched.get("fields"))
        scls = _SCHEDULERS[sched["class"]]
        needed = set(scls._init_fields) | set(scls._state_fields)
        if not isinstance(fields, dict) or set(fields) != needed:
            raise ValueError("set_states: malformed lr_scheduler fields")
        try:
            opt.lr_scheduler = scls._from_fields(fields)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"set_states: invalid lr_scheduler state ({exc})") from None
    return opt


# ----------------------------------------------------------------------------------- archives
def save_archive(manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    """An uncompressed ``.npz`` holding ``manifest`` (JSON, as a uint8 array) and ``arrays`` (keys
    ``a0``, ``a1``, ... as filled by ``_tree_to_manifest``). Shared by every saved-state format."""
    buf = io.BytesIO()
    payload = np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)
    np.savez(buf, manifest=payload, **arrays)
    return buf.getvalue()


def load_archive(data: Any, fmt: str, version: int, read: Callable[[dict[str, Any], Any], T],
                 max_manifest_bytes: int | None = None) -> T:
    """Opens what :func:`save_archive` wrote, checks its ``format`` and ``version`` and returns
    ``read(manifest, archive)`` (``archive``: the open ``numpy.load`` object, ``allow_pickle=False``).
    Anything malformed, including zip, ``.npy`` header and JSON errors, is a ``ValueError``; so is a
    manifest larger than ``max_manifest_bytes`` (checked before it is read)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"set_states expects bytes, got {type(data).__qualname__}")
    raw = bytes(data)
    if not zipfile.is_zipfile(io.BytesIO(raw)):
        raise ValueError("set_states: not a fusedopt state archive (expected an .npz zip; pickled "
                         "states are never loaded)")
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as archive:
            if "manifest" not in archive.files:
                raise ValueError("set_states: the archive has no manifest")
            if (max_manifest_bytes is not None
                    and archive.zip.getinfo("manifest.npy").file_size > max_manifest_bytes):
                raise ValueError("set_states: the manifest is larger than this state can be")
            m = archive["manifest"]
            if m.dtype != np.uint8 or m.ndim != 1:
                raise ValueError("set_states: malformed manifest")
            manifest = json.loads(m.tobytes().decode("utf-8"))
            if not isinstance(manifest, dict) or manifest.get("format") != fmt:
                raise ValueError(f"set_states: not a {fmt} archive")
            if manifest.get("version") != version:
                raise ValueError(
                    f"set_states: unsupported format version {manifest.get('version')!r} "
                    f"(this fusedopt reads version {version})"
                )
            return read(manifest, archive)
    except ValueError:
        raise
    except Exception as exc:  # zipfile, npy header and JSON errors of a corrupted file
        raise ValueError(f"set_states: not a valid fusedopt state archive ({exc})") from None


def _read_updater_states(manifest: dict[str, Any], archive: Any
                         ) -> tuple[dict[Any, Any], Optimizer | None]:
    entries = manifest.get("states")
    if not isinstance(entries, list):
        raise ValueError("set_states: malformed states list")
    states: dict[Any, Any] = {}
    for n, entry in enumerate(entries):
        if not isinstance(entry, list) or len(entry) != 2:
            raise ValueError(f"set_states: malformed state entry {n}")
        key = _decode(entry[0])
        if isinstance(key, (list, dict)) or key in states:
            raise ValueError(f"set_states: bad or repeated index {key!r}")
        states[key] = _tree_from_manifest(entry[1], archive, f"index {key!r}")
    opt_entry = manifest.get("optimizer")
    optimizer = _optimizer_from_manifest(opt_entry) if opt_entry is not None else None
    return states, optimizer


def _check_optimizer_attrs(cls: type, opt: Optimizer, attrs: dict[str, Any]) -> None:
    """The attributes loaded into ``opt`` are those a ``cls()`` has (an attribute with a class-level
    default may be missing: an option newer than the saved state), of the same kinds, and every
    hyper-parameter passes its property's setter, so a loaded optimizer is one its constructor could
    have made. ``ValueError`` otherwise."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = {k: v for k, v in vars(cls()).items() if k not in _SPECIAL}
    except Exception:  # a registered class that needs arguments: setters only
        ref = None
    if ref is not None:
        for k in ref.keys() - attrs.keys():
            if not hasattr(cls, k):
                raise ValueError(f"set_states: the saved optimizer has no {k!r}")
        for k, v in attrs.items():
            if k not in ref:
                raise ValueError(f"set_states: unknown optimizer attribute {k!r}")
            d = ref[k]
            kind_ok = (isinstance(v, bool) if isinstance(d, bool) else
                       isinstance(v, dict) if isinstance(d, dict) else
                       isinstance(v, int) and not isinstance(v, bool)
                       if k in ("num_update", "begin_num_update") else
                       v is None or isinstance(v, (int, float)) and not isinstance(v, bool))
            if not kind_ok:
                raise ValueError(f"set_states: the saved optimizer's {k!r} is {v!r}")
    try:
        for k, v in attrs.items():
            prop = getattr(cls, k[1:], None) if k.startswith("_") else None
            if isinstance(prop, property) and prop.fset is not None:
                prop.fset(opt, v)
        if attrs.get("lr") is not None:
            check_nonnegative("learning_rate", attrs["lr"])
        for k in ("num_update", "begin_num_update"):
            if k in attrs and attrs[k] < 0:
                raise ValueError(f"{k} must be >= 0")
        for k in ("lr_mult", "wd_mult"):
            for m in attrs.get(k, {}).values():
                check_finite(k, m)
        if not all(isinstance(n, str) for n in attrs.get("idx2name", {}).values()):
            raise ValueError("idx2name values must be names")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"set_states: invalid optimizer state ({exc})") from None


def _load(data: bytes) -> tuple[dict[Any, Any], Optimizer | None]:
    return load_archive(data, FORMAT, VERSION, _read_updater_states)
