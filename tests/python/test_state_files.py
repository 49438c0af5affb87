"""State files are data, and bounded: Updater.set_states refuses (ValueError, nothing changed) a
scheduler state that would hang the next update, optimizer attributes that are not the class's own
plain data, and archives whose members decompress past what the manifest declares, with memory
bounded by those declared sizes. Also: dump_optimizer=True loads into the caller's optimizer."""

from __future__ import annotations

import io
import json
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

from helpers import import_fusedopt

fo = import_fusedopt()


def trained_updater(opt=None, n=3):
    opt = opt if opt is not None else fo.SGD(learning_rate=0.1, momentum=0.9)
    u = fo.get_updater(opt)
    ws = [np.ones(5, np.float32) * (k + 1) for k in range(n)]
    gs = [np.full(5, 0.5, np.float32) for _ in range(n)]
    for _ in range(3):
        u(list(range(n)), gs, ws)
    return u


def members(blob: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def read_manifest(blob: bytes) -> dict:
    raw = members(blob)["manifest.npy"]
    arr = np.load(io.BytesIO(raw), allow_pickle=False)
    return json.loads(arr.tobytes().decode())


def rebuild(blob: bytes, manifest: dict | None = None, replace: dict[str, bytes] | None = None,
            compress: dict[str, int] | None = None) -> bytes:
    """The archive with its manifest and/or members replaced (compress: member -> zip method)."""
    parts = members(blob)
    if manifest is not None:
        buf = io.BytesIO()
        np.save(buf, np.frombuffer(json.dumps(manifest).encode(), np.uint8))
        parts["manifest.npy"] = buf.getvalue()
    parts.update(replace or {})
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in parts.items():
            zf.writestr(name, data, compress_type=(compress or {}).get(name, zipfile.ZIP_STORED))
    return out.getvalue()


def optimizer_attrs(manifest: dict) -> dict:
    return {k["v"]: v for k, v in manifest["optimizer"]["attrs"]["d"]}


def set_attr(manifest: dict, name: str, tagged) -> dict:
    pairs = manifest["optimizer"]["attrs"]["d"]
    for pair in pairs:
        if pair[0] == {"v": name}:
            pair[1] = tagged
            break
    else:
        pairs.append([{"v": name}, tagged])
    return manifest


def assert_refused(blob: bytes, match: str | None = None):
    """set_states raises ValueError and leaves the updater and its optimizer as they were."""
    u = trained_updater()
    opt_before = dict(vars(u.optimizer))
    states_before = {k: np.array(v[0] if isinstance(v, tuple) else v) for k, v in u.states.items()
                     if v is not None}
    with pytest.raises(ValueError, match=match):
        u.set_states(blob)
    assert vars(u.optimizer).keys() == opt_before.keys()
    assert u.optimizer.num_update == opt_before["num_update"]
    for k, v in states_before.items():
        got = u.states[k]
        np.testing.assert_array_equal(got[0] if isinstance(got, tuple) else got, v)


# ------------------------------------------------------------------------------- schedulers
def scheduler_blob(sched) -> tuple[bytes, dict]:
    u = trained_updater(fo.SGD(momentum=0.9, lr_scheduler=sched))
    blob = u.get_states(dump_optimizer=True)
    return blob, read_manifest(blob)


def set_field(manifest: dict, name: str, tagged) -> dict:
    for pair in manifest["optimizer"]["lr_scheduler"]["fields"]["d"]:
        if pair[0] == {"v": name}:
            pair[1] = tagged
    return manifest


@pytest.mark.parametrize("count", [-2**62, -1, 3, 2**40])
def test_factor_scheduler_unreachable_count_refused_at_load(count):
    """count = -2**62 would make the first update loop ~2**62 times with the GIL held; a count
    that is not a multiple of step, or far behind num_update, is not a state the scheduler reaches."""
    blob, m = scheduler_blob(fo.lr_scheduler.FactorScheduler(step=2, factor=0.5, base_lr=0.1))
    if count == 2**40:  # ahead of num_update: harmless (no loop), accepted
        fo.get_updater(fo.SGD()).set_states(rebuild(blob, set_field(m, "count", {"i": count})))
        return
    t0 = time.perf_counter()
    assert_refused(rebuild(blob, set_field(m, "count", {"i": count})), match="count")
    assert time.perf_counter() - t0 < 5


def test_factor_scheduler_far_behind_num_update_refused():
    blob, m = scheduler_blob(fo.lr_scheduler.FactorScheduler(step=1, factor=0.9, base_lr=0.1))
    m = set_attr(m, "num_update", {"i": 2**60})
    assert_refused(rebuild(blob, m), match="behind")


def test_factor_scheduler_valid_state_still_loads_and_continues():
    sched = fo.lr_scheduler.FactorScheduler(step=2, factor=0.5, base_lr=0.1)
    u = trained_updater(fo.SGD(momentum=0.9, lr_scheduler=sched))
    blob = u.get_states(dump_optimizer=True)
    u2 = fo.get_updater(fo.SGD())
    u2.set_states(blob)
    assert u2.optimizer.lr_scheduler.count == sched.count
    assert u2.optimizer.learning_rate == u.optimizer.learning_rate


@pytest.mark.parametrize("ind", [-1, 3, 2**40])
def test_multifactor_scheduler_index_out_of_range_refused(ind):
    blob, m = scheduler_blob(fo.lr_scheduler.MultiFactorScheduler(step=[2, 4], factor=0.5))
    assert_refused(rebuild(blob, set_field(m, "cur_step_ind", {"i": ind})))


# ------------------------------------------------------------------------------- attributes
@pytest.mark.parametrize("name,tagged", [
    ("update", {"v": "x"}),                    # would shadow a method
    ("step", {"i": 1}),
    ("__class__", {"v": "SGD"}),
    ("_momentum", {"f": -1.0}),                # fails the property's check
    ("_wd", {"f": "nan"}),
    ("_lr", {"f": "inf"}),
    ("_aggregate_num", {"i": 0}),
    ("num_update", {"f": 1.5}),                # counts are ints
    ("num_update", {"i": 2**70}),
    ("multi_precision", {"i": 1}),             # bool attributes stay bools
    ("lr_mult", {"d": [[{"i": 0}, {"v": "x"}]]}),
    ("idx2name", {"d": [[{"i": 0}, {"i": 5}]]}),
    ("_rescale_grad", {"l": []}),
])
def test_optimizer_attribute_not_plain_data_of_the_class_refused(name, tagged):
    u = trained_updater()
    blob = u.get_states(dump_optimizer=True)
    assert_refused(rebuild(blob, set_attr(read_manifest(blob), name, tagged)))


def test_counts_must_be_ints_in_range():
    u = trained_updater()
    blob = u.get_states(dump_optimizer=True)
    m = read_manifest(blob)
    m["optimizer"]["counts"] = {"d": [[{"i": 0}, {"d": [[{"i": 0}, {"v": "x"}]]}]]}
    assert_refused(rebuild(blob, m), match="count")


def test_attribute_of_older_files_lr_accepted():
    """Files written before lr became a validated property name it 'lr'."""
    u = trained_updater(fo.SGD(learning_rate=0.25))
    blob = u.get_states(dump_optimizer=True)
    m = read_manifest(blob)
    pairs = m["optimizer"]["attrs"]["d"]
    for pair in pairs:
        if pair[0] == {"v": "_lr"}:
            pair[0] = {"v": "lr"}
    u2 = fo.get_updater(fo.SGD())
    u2.set_states(rebuild(blob, m))
    assert u2.optimizer.lr == 0.25


# ------------------------------------------------------------------------------- zip bombs
def deflated_zeros_member(zf: zipfile.ZipFile, name: str, header: bytes, n_bytes: int) -> None:
    """A deflated member of `header` + n_bytes zeros, streamed (never held in memory)."""
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    with zf.open(info, "w") as f:
        f.write(header)
        chunk = bytes(1 << 20)
        left = n_bytes
        while left > 0:
            f.write(chunk[:min(left, len(chunk))])
            left -= len(chunk)


def bomb(blob: bytes, member: str, n_bytes: int) -> bytes:
    parts = members(blob)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in parts.items():
            if name == member:
                deflated_zeros_member(zf, name, data, n_bytes)
            else:
                zf.writestr(name, data)
    return out.getvalue()


def refused_with_bounded_memory(blob: bytes, limit: int):
    tracemalloc.start()
    try:
        with pytest.raises(ValueError):
            fo.get_updater(fo.SGD(momentum=0.9)).set_states(blob)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < limit, f"peak {peak} bytes while refusing a {len(blob)}-byte archive"


def test_array_member_bomb_refused_before_decompressing():
    """An array member that decompresses to 48 MiB where the manifest declares 20 bytes."""
    u = trained_updater()
    blob = bomb(u.get_states(), "a0.npy", 48 << 20)
    assert len(blob) < 1 << 20
    refused_with_bounded_memory(blob, 4 << 20)


def test_manifest_bomb_refused_before_decompressing():
    u = trained_updater()
    blob = bomb(u.get_states(), "manifest.npy", 80 << 20)  # past the 64 MiB manifest limit
    refused_with_bounded_memory(blob, 4 << 20)


def lie_about_size(blob: bytes, member: str, size: int) -> bytes:
    """The archive with `member`'s uncompressed size (local and central headers) set to `size`."""
    data = bytearray(blob)
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        info = zf.getinfo(member)
    data[info.header_offset + 22:info.header_offset + 26] = size.to_bytes(4, "little")
    pos = data.find(b"PK\x01\x02")
    while pos != -1:
        name_len = int.from_bytes(data[pos + 28:pos + 30], "little")
        if data[pos + 46:pos + 46 + name_len] == member.encode():
            data[pos + 24:pos + 28] = size.to_bytes(4, "little")
        pos = data.find(b"PK\x01\x02", pos + 4)
    return bytes(data)


def test_member_with_lying_size_read_bounded():
    """A member whose headers claim 100 bytes but which inflates to 8 MiB: the read stops at the
    declared bound, the archive is refused, memory stays small."""
    u = trained_updater()
    blob = bomb(u.get_states(), "a0.npy", 8 << 20)
    blob = lie_about_size(blob, "a0.npy", 100)
    refused_with_bounded_memory(blob, 4 << 20)


def test_compressed_honest_archive_loads():
    """Deflated members with honest sizes are fine (bounded by what the manifest declares)."""
    u = trained_updater()
    blob = u.get_states()
    names = members(blob)
    packed = rebuild(blob, compress=dict.fromkeys(names, zipfile.ZIP_DEFLATED))
    u2 = fo.get_updater(fo.SGD(momentum=0.9))
    u2.set_states(packed)
    for k, v in u.states.items():
        np.testing.assert_array_equal(u2.states[k], v)


def test_array_header_disagreeing_with_manifest_refused():
    u = trained_updater()
    blob = u.get_states()
    buf = io.BytesIO()
    np.save(buf, np.zeros(1 << 16, np.float32))  # a0 is declared float32[5]
    assert_refused(rebuild(blob, replace={"a0.npy": buf.getvalue()}))


# ------------------------------------------------------------------------------- loading into
def test_dump_optimizer_loads_into_the_callers_optimizer():
    u = trained_updater(fo.SGD(learning_rate=0.05, momentum=0.9, wd=0.01))
    blob = u.get_states(dump_optimizer=True)
    mine = fo.SGD(learning_rate=0.5)
    marker = object()
    mine.param_dict = {0: marker}
    u2 = fo.get_updater(mine)
    u2.set_states(blob)
    assert u2.optimizer is mine
    assert (mine.lr, mine.wd, mine.momentum, mine.num_update) == (0.05, 0.01, 0.9, 3)
    assert mine.param_dict == {0: marker}  # owned by the caller, never in the file


def test_dump_optimizer_of_another_class_refused_and_nothing_changed():
    u = trained_updater(fo.DCASGD(learning_rate=0.05, momentum=0.9))
    blob = u.get_states(dump_optimizer=True)
    mine = fo.SGD(learning_rate=0.5)
    u2 = fo.get_updater(mine)
    with pytest.raises(ValueError, match="DCASGD.*SGD"):
        u2.set_states(blob)
    assert u2.optimizer is mine and mine.lr == 0.5 and u2.states == {}
