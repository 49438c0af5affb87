"""``Updater``: applies an optimizer to indexed weights, creating states lazily, and saves / loads
those states in a versioned format that never unpickles.

Saved format (version 1): an uncompressed ``.npz`` archive (``numpy.savez``) holding

* ``manifest``: UTF-8 JSON as a uint8 array — ``{"format": "fusedopt.updater_states", "version": 1,
  "states": [[key, tree], ...], "optimizer": null | {...}}``. Keys and attribute values are tagged
  JSON values (see ``_encode``). A tree is ``{"none": 0}``, ``{"array": i, "dtype": str, "shape": [...]}``
  or ``{"tuple": [tree, ...]}``.
* ``a0``, ``a1``, ...: the state arrays as ``.npy`` (bfloat16 stored as its uint16 bits).

Loading reads only ``.npy`` data (parsed here, never unpickled) and JSON; optimizer and scheduler classes
are looked up in fusedopt's own registries, never imported by name. Loading is bounded: no archive member
is decompressed past the size the manifest declares for it (the manifest itself past 64 MiB), optimizer
attributes are limited to those of the optimizer class, with their types and value checks, and scheduler
states must be ones the scheduler can reach. Anything malformed is a ``ValueError``.
"""

from __future__ import annotations

import io
import json
import math
import warnings
import zipfile
from typing import Any

import numpy as np

from . import _arrays, lr_scheduler
from .optimizer import Optimizer, per_index_counts

__all__ = ["Updater", "get_updater"]


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
    first sight of an index with ``create_state_multi_precision``. The whole list goes to the
    optimizer in one call: with ``aggregate_num > 1`` its kernels update weights grouped by dtype,
    ``aggregate_num`` at a time; otherwise one tensor per kernel, each index counted and rated in turn.
    Either way the call is validated as a whole first: a refused call writes nothing.
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
        # One optimizer call for the whole list: the optimizer splits it into kernel launches
        # (aggregate_num at a time, grouped by dtype) and validates all of them before the first
        # write, so a refused call writes nothing. Without aggregation each index is counted and
        # rated in turn, as one call per index would be.
        st = list(map(states.__getitem__, indices))
        if self.aggregate_updates:
            self.optimizer.update_multi_precision(indices, weights, grads, st)
        else:
            with per_index_counts():
                self.optimizer.update_multi_precision(indices, weights, grads, st)

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
        buf = io.BytesIO()
        payload = np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)
        np.savez(buf, manifest=payload, **arrays)
        return buf.getvalue()

    def set_states(self, states: bytes) -> None:
        """Loads what :meth:`get_states` saved. States move to each weight's device at its next
        update; a state that does not fit its weight raises ``ValueError`` then.

        A file saved with ``dump_optimizer=True`` is loaded into this Updater's own optimizer object
        (hyper-parameters, multipliers, counts, scheduler), which must be of the saved class; its
        ``param_dict`` is kept. Anything malformed or out of range is a ``ValueError`` and changes
        nothing."""
        try:
            new_states, optimizer = _load(states)
        except ValueError:
            raise
        except Exception as exc:  # zipfile, npy header and JSON errors of a corrupted file
            raise ValueError(f"set_states: not a valid fusedopt state archive ({exc})") from None
        if optimizer is not None:
            _load_into(self.optimizer, optimizer)
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


def _tree_from_manifest(node: Any, archive: _Archive, where: str) -> Any:
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
    if not isinstance(key, str) or not key.startswith("a") or not key[1:].isdigit():
        raise ValueError(f"set_states: missing array {key!r} at {where}")
    if dtype not in _DTYPES:
        raise ValueError(f"set_states: unsupported dtype {dtype!r} at {where}")
    if not isinstance(shape, list) or len(shape) > 32 or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise ValueError(f"set_states: malformed shape at {where}")
    stored = "uint16" if dtype == "bfloat16" else dtype
    a = archive.array(key, stored, shape, where)
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
            raise TypeError(
                f"get_states: cannot save the lr_scheduler of class {type(sched).__module__}."
                f"{type(sched).__qualname__}: dump_optimizer=True saves only fusedopt's schedulers "
                f"({', '.join(_SCHEDULERS)}); save the optimizer's states without it "
                "(dump_optimizer=False) and the custom scheduler's state yourself")
        sched_entry = {"class": cls_name, "fields": _encode(sched._fields())}
    return {
        "class": name,
        "attrs": _encode(attrs),
        "counts": _encode(opt._all_index_update_counts),
        "lr_scheduler": sched_entry,
    }


_INT_ATTRS = ("num_update", "begin_num_update")
_MAX_COUNT = 1 << 62
# Saved attributes that hold dicts: what their values must be.
_DICT_VALUES: dict[str, tuple[type, ...]] = {"lr_mult": (int, float), "wd_mult": (int, float),
                                              "idx2name": (str,)}


def _prototype(cls: type[Optimizer]) -> Optimizer:
    """An instance with default arguments: its attributes are the ones a file may set, with their
    kinds; a class whose constructor needs arguments gets the base class's attributes only."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return cls()
        except Exception:
            proto = cls.__new__(cls)
            proto.__dict__.update(vars(Optimizer()))
            return proto


def _kind_ok(name: str, value: Any, default: Any) -> bool:
    """Whether a loaded attribute value has the kind of the class's own (plain data only)."""
    if isinstance(default, bool):
        return isinstance(value, bool)
    if name in _INT_ATTRS:
        return isinstance(value, int) and not isinstance(value, bool) and abs(value) < _MAX_COUNT
    if default is None or isinstance(default, (int, float)):
        return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, dict):
        allowed = _DICT_VALUES.get(name, (int, float, str))
        return isinstance(value, dict) and all(
            isinstance(v, allowed) and not isinstance(v, bool) for v in value.values())
    return False


def _checked_counts(counts: Any) -> dict[int, dict[Any, int]]:
    if not isinstance(counts, dict) or not all(
        isinstance(dev, int) and not isinstance(dev, bool) and isinstance(per, dict)
        for dev, per in counts.items()
    ):
        raise ValueError("set_states: malformed update counts")
    for per in counts.values():
        for v in per.values():
            if isinstance(v, bool) or not isinstance(v, int) or abs(v) >= _MAX_COUNT:
                raise ValueError(f"set_states: update count {v!r} is not an int in range")
    return counts if counts else {0: {}}


def _optimizer_from_manifest(entry: Any) -> Optimizer:
    """A new, fully validated optimizer of the saved class with the saved state."""
    if not isinstance(entry, dict):
        raise ValueError("set_states: malformed optimizer entry")
    cls = Optimizer.opt_registry.get(entry.get("class"))  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"set_states: unknown optimizer {entry.get('class')!r}")
    attrs = _decode(entry.get("attrs"))
    if not isinstance(attrs, dict):
        raise ValueError("set_states: malformed optimizer attributes")
    opt = _prototype(cls)
    allowed = {k: v for k, v in vars(opt).items() if k not in _SPECIAL}
    for name, value in attrs.items():
        if isinstance(name, str) and name not in allowed and f"_{name}" in allowed:
            name = f"_{name}"  # a plain attribute of older files that is now a property (lr)
        if not isinstance(name, str) or name not in allowed:
            raise ValueError(f"set_states: {name!r} is not a saved attribute of {cls.__name__}")
        if not _kind_ok(name, value, allowed[name]):
            raise ValueError(f"set_states: optimizer attribute {name!r} has an invalid value "
                             f"{value!r}")
        # Set through the public property where there is one, so its checks apply.
        public = name[1:] if name.startswith("_") else name
        target = public if isinstance(getattr(cls, public, None), property) else name
        try:
            setattr(opt, target, dict(value) if isinstance(value, dict) else value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"set_states: invalid optimizer attribute {name!r} ({exc})") from None
    opt.param_dict = {}
    opt._all_index_update_counts = _checked_counts(_decode(entry.get("counts")))
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
            opt.lr_scheduler._check_loaded(opt.num_update)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"set_states: invalid lr_scheduler state ({exc})") from None
    return opt


def _load_into(target: Optimizer, loaded: Optimizer) -> None:
    """Makes ``target`` (the caller's optimizer) the loaded one, keeping its param_dict."""
    if type(target) is not type(loaded):
        raise ValueError(
            f"set_states: the file holds a {type(loaded).__name__} optimizer but this Updater's "
            f"optimizer is a {type(target).__name__}; create the Updater with a "
            f"{type(loaded).__name__} to load it")
    param_dict = target.param_dict
    target.__dict__.clear()
    target.__dict__.update(vars(loaded))
    target.param_dict = param_dict


# ----------------------------------------------------------------------------- bounded reading
_MAX_MANIFEST = 64 << 20  # bytes of JSON
_MAX_NPY_HEADER = 1 << 16


def _read_member(zf: zipfile.ZipFile, name: str, limit: int, what: str) -> bytes:
    """The member's bytes, never decompressing more than ``limit`` (its declared size is checked
    first, then the read itself is bounded: a header can lie)."""
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise ValueError(f"set_states: the archive has no {what}") from None
    if info.file_size > limit:
        raise ValueError(f"set_states: {what} is {info.file_size} bytes uncompressed, more than "
                         f"the {limit} the manifest allows")
    with zf.open(info) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"set_states: {what} decompresses past the {limit} bytes the manifest "
                         "allows")
    return data


def _parse_npy(data: bytes, what: str, dtype: str | None = None, shape: list[int] | None = None
               ) -> np.ndarray:
    """An array from .npy bytes, its header checked against the expected dtype and shape before
    anything is allocated; the data must be exactly what the header describes."""
    f = io.BytesIO(data)
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        got_shape, fortran, got_dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        got_shape, fortran, got_dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise ValueError(f"set_states: unsupported .npy version {version} for {what}")
    if got_dtype.hasobject or fortran:
        raise ValueError(f"set_states: {what} is not a plain C-ordered numeric array")
    if (dtype is not None and str(got_dtype) != dtype) or (
            shape is not None and list(got_shape) != shape):
        raise ValueError(f"set_states: {what} is {got_dtype}{list(got_shape)}, manifest says "
                         f"{dtype}{shape}")
    offset = f.tell()
    count = math.prod(got_shape)
    if len(data) - offset != count * got_dtype.itemsize:
        raise ValueError(f"set_states: {what} holds {len(data) - offset} data bytes, its header "
                         f"says {count * got_dtype.itemsize}")
    return np.frombuffer(data, dtype=got_dtype, count=count, offset=offset).reshape(got_shape).copy()


class _Archive:
    """The members of a state archive, each read bounded by the size the manifest declares."""

    def __init__(self, zf: zipfile.ZipFile) -> None:
        self._zf = zf

    def manifest(self) -> Any:
        data = _read_member(self._zf, "manifest.npy", _MAX_MANIFEST + _MAX_NPY_HEADER, "manifest")
        m = _parse_npy(data, "the manifest")
        if m.dtype != np.uint8 or m.ndim != 1:
            raise ValueError("set_states: malformed manifest")
        return json.loads(m.tobytes().decode("utf-8"))

    def array(self, key: str, dtype: str, shape: list[int], where: str) -> np.ndarray:
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        data = _read_member(self._zf, f"{key}.npy", nbytes + _MAX_NPY_HEADER, f"array {key!r}")
        return _parse_npy(data, f"array at {where}", dtype, shape)


def _load(data: bytes) -> tuple[dict[Any, Any], Optimizer | None]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"set_states expects bytes, got {type(data).__qualname__}")
    raw = bytes(data)
    if not zipfile.is_zipfile(io.BytesIO(raw)):
        raise ValueError("set_states: not a fusedopt state archive (expected an .npz zip; pickled "
                         "states are never loaded)")
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        archive = _Archive(zf)
        manifest = archive.manifest()
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ValueError("set_states: not a fusedopt state archive")
        if manifest.get("version") != VERSION:
            raise ValueError(
                f"set_states: unsupported format version {manifest.get('version')!r} "
                f"(this fusedopt reads version {VERSION})"
            )
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
