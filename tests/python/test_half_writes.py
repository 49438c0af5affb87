"""No half-write on any path: a call that is refused writes nothing and leaves the update counts as
they were, whichever path runs it (fused_step in several chunks or groups, the reference step, the
multi-precision reference path, the Updater with or without aggregation, DCASGD's grouped calls).
Every case puts the defect in the LAST tensor / chunk / group, after others that alone would pass."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from helpers import Snapshot, import_fusedopt

fo = import_fusedopt()

RNG = np.random.default_rng(13)


def arrays(n: int, size: int = 7, dtype=np.float32) -> list[np.ndarray]:
    return [RNG.standard_normal(size).astype(dtype) for _ in range(n)]


def counts_of(opt) -> tuple:
    return opt.num_update, copy.deepcopy(opt._all_index_update_counts)


def flat_states(states) -> list:
    out = []
    for s in states:
        if isinstance(s, (tuple, list)):
            out += flat_states(s)
        elif s is not None:
            out.append(s)
    return out


def assert_refused(opt, call, *written, exc=ValueError, match=None):
    """call() raises exc; nothing in `written` changed; the counts are unchanged."""
    snap = Snapshot(*written)
    before = counts_of(opt)
    with pytest.raises(exc, match=match):
        call()
    snap.assert_unchanged("by a refused call")
    assert counts_of(opt) == before


def sgd_inputs(opt, n, dtype=np.float32):
    ws, gs = arrays(n, dtype=dtype), arrays(n, dtype=dtype)
    states = [opt.create_state_multi_precision(i, w) for i, w in enumerate(ws)]
    return list(range(n)), ws, gs, states


def warm(opt, indices, ws, gs, states):
    """One good step first, so the counts are not at their initial values."""
    opt.update_multi_precision(indices, ws, gs, states)


# ----------------------------------------------------------------------------- fused_step chunks
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("aggregate_num", [1, 2, 3])
def test_sgd_chunks_overlap_in_last_chunk(momentum, aggregate_num):
    opt = fo.SGD(learning_rate=0.1, momentum=momentum, aggregate_num=aggregate_num)
    idx, ws, gs, st = sgd_inputs(opt, 5)
    warm(opt, idx, ws, gs, st)
    gs[4] = ws[3]  # the last tensor's gradient is the weight of another tensor of its chunk
    assert_refused(opt, lambda: opt.update(idx, ws, gs, st), *ws, *gs, *flat_states(st),
                   match="overlaps")


@pytest.mark.parametrize("aggregate_num", [1, 2])
def test_sgd_chunks_overlap_across_chunks(aggregate_num):
    opt = fo.SGD(learning_rate=0.1, momentum=0.9, aggregate_num=aggregate_num)
    base = RNG.standard_normal(14).astype(np.float32)
    idx, ws, gs, st = sgd_inputs(opt, 4)
    ws[0], ws[3] = base[:7], base[5:12]  # first and last tensor share memory: different chunks
    st = [opt.create_state(i, w) for i, w in enumerate(ws)]
    assert_refused(opt, lambda: opt.update(idx, ws, gs, st), base, *gs, *st, match="overlaps")


def test_sgd_mixed_dtype_groups_bad_last_group():
    opt = fo.SGD(learning_rate=0.1, momentum=0.9, aggregate_num=4)
    ws = arrays(2, dtype=np.float32) + arrays(2, dtype=np.float64)
    gs = [RNG.standard_normal(7).astype(w.dtype) for w in ws]
    st = [opt.create_state(i, w) for i, w in enumerate(ws)]
    gs[3] = gs[3].astype(np.float32)  # the float64 group's last gradient has the wrong dtype
    assert_refused(opt, lambda: opt.update(list(range(4)), ws, gs, st), *ws, *st, exc=TypeError)


def test_sgd_mixed_state_groups_readonly_last():
    opt = fo.SGD(learning_rate=0.1, momentum=0.9, aggregate_num=8)
    idx, ws, gs, st = sgd_inputs(opt, 4)
    st[0] = None  # a group without momentum buffers first, then the momentum group
    ws[3].flags.writeable = False
    assert_refused(opt, lambda: opt.update(idx, ws, gs, st), *ws, *flat_states(st),
                   match="read-only")


def test_sgd_row_sparse_list_overlap_last():
    opt = fo.SGD(learning_rate=0.1, momentum=0.9, lazy_update=True)
    ws = [RNG.standard_normal((4, 3)).astype(np.float32) for _ in range(3)]
    st = [opt.create_state(i, w) for i, w in enumerate(ws)]
    gs = [fo.row_sparse_array((RNG.standard_normal((2, 3)).astype(np.float32),
                               np.array([0, 2], np.int64)), shape=(4, 3)) for _ in range(3)]
    gs[2] = fo.row_sparse_array((ws[0][:2], np.array([1, 3], np.int64)), shape=(4, 3))
    assert_refused(opt, lambda: opt.update([0, 1, 2], ws, gs, st), *ws, *st, match="overlaps")


# ----------------------------------------------------------------------------- reference step
@pytest.mark.parametrize("cls", ["SGD", "DCASGD"])
@pytest.mark.parametrize("table", ["lr_mult", "wd_mult"])
@pytest.mark.parametrize("bad", [-1.0, float("inf"), float("nan")])
def test_reference_step_bad_multiplier_on_last_index(cls, table, bad):
    opt = getattr(fo, cls)(learning_rate=0.1, momentum=0.9, wd=0.01, use_fused_step=False)
    idx, ws, gs, st = sgd_inputs(opt, 3)
    warm(opt, idx, ws, gs, st)
    getattr(opt, f"set_{table}")({2: bad})
    assert_refused(opt, lambda: opt.update(idx, ws, gs, st), *ws, *flat_states(st))


@pytest.mark.parametrize("cls", ["SGD", "DCASGD"])
def test_reference_step_overlap_across_indices(cls):
    opt = getattr(fo, cls)(learning_rate=0.1, momentum=0.9, use_fused_step=False)
    idx, ws, gs, st = sgd_inputs(opt, 3)
    gs[2] = ws[0]
    assert_refused(opt, lambda: opt.update(idx, ws, gs, st), *ws, *flat_states(st),
                   match="overlaps")


@pytest.mark.parametrize("cls", ["SGD", "DCASGD"])
def test_reference_multi_precision_readonly_low_precision_weight(cls):
    """The reference multi-precision path writes the float32 masters, then the float16 weights:
    a read-only float16 weight at the end refuses the call before either is written."""
    opt = getattr(fo, cls)(learning_rate=0.1, momentum=0.9, multi_precision=True,
                           use_fused_step=False)
    idx, ws, gs, st = sgd_inputs(opt, 3, dtype=np.float16)
    ws[2].flags.writeable = False
    assert_refused(opt, lambda: opt.update_multi_precision(idx, ws, gs, st), *ws,
                   *flat_states(st), match="read-only")


# ----------------------------------------------------------------------------- Updater
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("aggregate_num", [None, 1, 2, float("inf")])
def test_updater_bad_last_gradient(fused, aggregate_num):
    kw = {} if aggregate_num is None else {"aggregate_num": aggregate_num}
    opt = fo.SGD(learning_rate=0.1, momentum=0.9, use_fused_step=fused, **kw)
    upd = fo.get_updater(opt)
    ws, gs = arrays(3), arrays(3)
    upd([0, 1, 2], gs, ws)
    bad = gs[:2] + [np.ones(6, np.float32)]  # wrong shape, last
    assert_refused(opt, lambda: upd([0, 1, 2], bad, ws), *ws, *flat_states(upd.states.values()))


@pytest.mark.parametrize("aggregate_num", [None, 2])
def test_updater_mixed_dtypes_bad_last(aggregate_num):
    opt = fo.DCASGD(learning_rate=0.1, momentum=0.9, use_fused_step=True,
                    aggregate_num=aggregate_num)
    upd = fo.get_updater(opt)
    ws = arrays(2, dtype=np.float64) + arrays(2, dtype=np.float32)
    gs = [RNG.standard_normal(7).astype(w.dtype) for w in ws]
    upd([0, 1, 2, 3], gs, ws)
    gs[3] = ws[1].view(np.float32)[:7]  # aliases the memory of a weight of the other dtype group
    assert_refused(opt, lambda: upd([0, 1, 2, 3], gs, ws), *ws,
                   *flat_states(upd.states.values()), match="overlaps")


def test_updater_per_index_counting_kept():
    """Without aggregation the Updater still counts and rates index after index: with a scheduler
    and indices at different counts, each index gets the rate of its own turn."""
    sched = fo.lr_scheduler.FactorScheduler(step=1, factor=0.5, base_lr=1.0)
    opt = fo.SGD(lr_scheduler=sched)
    upd = fo.get_updater(opt)
    w0, w1 = np.zeros(3, np.float32), np.zeros(3, np.float32)
    g = np.ones(3, np.float32)
    upd(1, g, w1)
    upd(1, g, w1)  # index 1 at count 2, num_update 2
    lr_seen = []
    w0[:] = 0
    w1[:] = 0
    upd([0, 1], [g, g], [w0, w1])
    lr_seen = [-float(w0[0]), -float(w1[0])]
    # index 0: count 1, num_update stays 2 -> lr(2); index 1: count 3 -> num_update 3 -> lr(3)
    assert lr_seen == pytest.approx([0.5, 0.25])


# ----------------------------------------------------------------------------- DCASGD groups
def test_dcasgd_fused_groups_overlap_in_last_group():
    opt = fo.DCASGD(learning_rate=0.1, momentum=0.0, use_fused_step=True)
    idx, ws, gs, st = sgd_inputs(opt, 4)
    st[2] = (np.zeros(7, np.float32), st[2][1])  # a momentum buffer: a second group
    st[3] = (np.zeros(7, np.float32), ws[0])  # its prev aliases a weight of the first group
    assert_refused(opt, lambda: opt.update(idx, ws, gs, st), *ws, *flat_states(st),
                   match="overlaps")


def test_dcasgd_multi_precision_groups_bad_last():
    opt = fo.DCASGD(learning_rate=0.1, momentum=0.9, multi_precision=True, use_fused_step=True)
    ws = arrays(2, dtype=np.float32) + arrays(2, dtype=np.float16)
    gs = [RNG.standard_normal(7).astype(w.dtype) for w in ws]
    st = [opt.create_state_multi_precision(i, w) for i, w in enumerate(ws)]
    gs[3] = np.ones(5, np.float16)
    assert_refused(opt, lambda: opt.update_multi_precision(list(range(4)), ws, gs, st), *ws,
                   *flat_states(st))


def test_dcasgd_prepared_groups_refused_step_writes_nothing():
    """A prepared step over several groups (here: with and without momentum buffers) validates
    every group before stepping any: a momentum the second group cannot take writes nothing."""
    opt = fo.DCASGD(learning_rate=0.1, momentum=0.0, use_fused_step=True)
    idx, ws, gs, st = sgd_inputs(opt, 3)
    st[0] = (np.zeros(7, np.float32), st[0][1])  # the group with buffers comes first
    prep = opt.prepare(idx, ws, gs, st)
    prep.step()
    opt.momentum = 0.9
    assert_refused(opt, prep.step, *ws, *flat_states(st), match="momentum")
