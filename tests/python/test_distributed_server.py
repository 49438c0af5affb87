"""fusedopt.distributed.ParameterServer against the float64 oracle (reference_distributed.RefServer)
and against plain optimizer updates; refused pushes; saved states."""
from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from helpers import assert_bitwise_equal, assert_close, dtype_param, import_fusedopt, np_dtype
from reference_distributed import RefServer

fusedopt = import_fusedopt()
from fusedopt.distributed import ParameterServer  # noqa: E402

SHAPES = [(3, 5), (37,), (1,), (4, 9)]  # odd sizes: SIMD body and tails, a 1-element tensor


def make_params(rng, dtype="float32", shapes=SHAPES):
    return [rng.standard_normal(s).astype(np_dtype(dtype)) for s in shapes]


def make_grads(rng, params, scale=1.0):
    return [(scale * rng.standard_normal(p.shape)).astype(p.dtype) for p in params]


# Configurations: (optimizer kind, server keywords, optimizer keywords). DC-ASGD rows with
# backups "worker" / "previous", constant and adaptive lamda, momentum on and off, clip, wd.
CONFIGS = {
    "asgd": ("sgd", {}, {}),
    "asgd-mom-wd-clip": ("sgd", {}, {"momentum": 0.9, "wd": 0.01, "clip_gradient": 0.8,
                                     "rescale_grad": 0.5}),
    "ssgd": ("sgd", {"synchronous": True}, {"momentum": 0.5}),
    "dc-worker": ("dcasgd", {"backups": "worker"}, {"lamda": 0.5}),
    "dc-worker-mom-clip": ("dcasgd", {"backups": "worker"},
                           {"lamda": 0.5, "momentum": 0.9, "clip_gradient": 0.8, "wd": 0.01}),
    "dc-worker-adaptive": ("dcasgd", {"backups": "worker"}, {"lamda": 2.0, "adaptive": True}),
    "dc-worker-adaptive-mom": ("dcasgd", {"backups": "worker"},
                               {"lamda": 2.0, "adaptive": True, "momentum": 0.9, "ms_decay": 0.9,
                                "eps": 1e-6, "rescale_grad": 0.5}),
    "dc-previous": ("dcasgd", {"backups": "previous"}, {"lamda": 0.5, "momentum": 0.9}),
    "dc-previous-adaptive": ("dcasgd", {"backups": "previous"}, {"lamda": 2.0, "adaptive": True}),
}


def make_optimizer(kind, lr=0.1, **kw):
    if kind == "sgd":
        return fusedopt.SGD(learning_rate=lr, **kw)
    return fusedopt.DCASGD(learning_rate=lr, use_fused_step=True, **kw)


def make_ref(params, m, kind, server_kw, opt_kw, lr=0.1, store=None):
    kw = dict(opt_kw)
    return RefServer(params, m, rule=kind, lr=lr, store=store, backups=server_kw.get("backups", "worker"),
                     synchronous=server_kw.get("synchronous", False), momentum=kw.pop("momentum", 0.0),
                     wd=kw.pop("wd", 0.0), rescale_grad=kw.pop("rescale_grad", 1.0),
                     clip_gradient=kw.pop("clip_gradient", None), **kw)


def schedule(rng, m, pushes, synchronous=False):
    """A random interleaving of pulls and pushes: each worker pulls, later pushes, pulls again...
    (synchronous: each round every worker pulls once and pushes once, in random order)."""
    events, pending = [], [False] * m
    if synchronous:
        for _ in range(pushes // m):
            events += [("pull", k) for k in rng.permutation(m)]
            events += [("push", k) for k in rng.permutation(m)]
        return events
    n = 0
    while n < pushes:
        k = int(rng.integers(m))
        if pending[k]:
            events.append(("push", k))
            n += 1
        else:
            events.append(("pull", k))
        pending[k] = not pending[k]
    return events


def drive(server, events, rng, ref=None):
    """Runs the events on the server (and the oracle with the same gradients)."""
    for what, k in events:
        if what == "pull":
            ws, v = server.pull(k)
            if ref is not None:
                rws, rv = ref.pull(k)
                assert v == rv
        else:
            grads = make_grads(rng, server.params)
            v = server.push(k, grads)
            if ref is not None:
                assert v == ref.push(k, grads)


def states_of(server):
    stats = server.stats()
    stats.pop("kernel_seconds"), stats.pop("kernel_cpu_seconds")
    return server.get_states(), stats


# ------------------------------------------------------------------------------------ oracle
@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matches_float64_oracle(name, dtype, rng):
    kind, server_kw, opt_kw = CONFIGS[name]
    m = 3
    params = make_params(rng, dtype)
    ref = make_ref(params, m, kind, server_kw, opt_kw, store=np_dtype(dtype))
    server = ParameterServer(params, make_optimizer(kind, **opt_kw), m, **server_kw)
    events = schedule(rng, m, 24, server_kw.get("synchronous", False))
    drive(server, events, rng, ref)
    for p, w in zip(server.params, ref.w):
        assert_close(p, w.astype(p.dtype), dtype)
    assert server.stats()["staleness_hist"] == np.bincount(ref.staleness).tolist()
    assert server.version == ref.version


@pytest.mark.parametrize("name", ["asgd-mom-wd-clip", "dc-worker-mom-clip", "dc-worker-adaptive-mom",
                                  "dc-previous"])
@pytest.mark.parametrize("dtype", [dtype_param("float16"), dtype_param("bfloat16")])
def test_multi_precision_matches_oracle(name, dtype, rng):
    """float16 / bfloat16 weights with float32 masters (backups and mean squares float32 too)."""
    kind, server_kw, opt_kw = CONFIGS[name]
    m = 3
    params = make_params(rng, dtype)
    ref = make_ref(params, m, kind, server_kw, opt_kw, store=np.float32)
    server = ParameterServer(params, make_optimizer(kind, multi_precision=True, **opt_kw), m,
                             **server_kw)
    drive(server, schedule(rng, m, 16), rng, ref)
    for p, w in zip(server.params, ref.w):
        assert_close(p, w.astype(np.float32).astype(p.dtype), dtype, multi_precision=True)


def test_worker_backups_are_what_each_worker_pulled(rng):
    """The paper's rule, by hand: with staleness 2 the compensation uses the weight the worker
    pulled, not the weight before the last update."""
    w0 = np.array([1.0, -2.0, 0.5])
    server = ParameterServer([w0.copy()], make_optimizer("dcasgd", lamda=0.5, lr=0.1), 3)
    for k in range(3):
        server.pull(k)
    g = [np.array([0.3, -0.2, 1.0]), np.array([-0.1, 0.4, 0.2]), np.array([0.5, 0.5, -0.5])]
    w = w0.copy()
    for k in range(3):
        r = g[k]
        w = w - 0.1 * (r + 0.5 * r * r * (w - w0))  # every worker pulled w0
        server.push(k, [g[k].copy()])
    np.testing.assert_allclose(server.params[0], w, rtol=1e-14, atol=1e-15)
    assert server.stats()["staleness_hist"] == [1, 1, 1]


# ------------------------------------------------------------------------ equivalences (bitwise)
@pytest.mark.parametrize("name", ["asgd", "asgd-mom-wd-clip", "dc-worker", "dc-worker-mom-clip",
                                  "dc-worker-adaptive", "dc-worker-adaptive-mom"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_one_worker_equals_sequential_sgd(name, dtype, rng):
    """M = 1: pull, push, pull, push ... equals plain SGD updates bit for bit (DC-ASGD's backup is
    then the current weight, so the compensation term is zero)."""
    kind, server_kw, opt_kw = CONFIGS[name]
    sgd_kw = {k: v for k, v in opt_kw.items() if k not in ("lamda", "adaptive", "ms_decay", "eps")}
    params = make_params(rng, dtype)
    plain = [p.copy() for p in params]
    opt = fusedopt.SGD(learning_rate=0.1, **sgd_kw)
    states = [opt.create_state(i, p) for i, p in enumerate(plain)]
    server = ParameterServer(params, make_optimizer(kind, **opt_kw), 1, **server_kw)
    for _ in range(7):
        ws, _ = server.pull(0)
        grads = make_grads(rng, params)
        server.push(0, grads)
        opt.update(list(range(len(plain))), plain, grads, states)
    for p, q in zip(server.params, plain):
        assert_bitwise_equal(p, q)


@pytest.mark.parametrize("opt_kw", [{"lamda": 0.5}, {"lamda": 0.5, "momentum": 0.9, "wd": 0.01},
                                    {"lamda": 2.0, "adaptive": True},
                                    {"lamda": 2.0, "adaptive": True, "momentum": 0.9}],
                         ids=["constant", "constant-mom", "adaptive", "adaptive-mom"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_two_workers_in_strict_alternation_worker_equals_previous(opt_kw, dtype, rng):
    """pull 0, pull 1, push 0, pull 0, push 1, pull 1, push 0, ...: the weight a worker pulled is
    exactly the weight before the last update, so the two forms agree bit for bit."""
    params = make_params(rng, dtype)
    a = ParameterServer([p.copy() for p in params], make_optimizer("dcasgd", **opt_kw), 2,
                        backups="worker")
    b = ParameterServer([p.copy() for p in params], make_optimizer("dcasgd", **opt_kw), 2,
                        backups="previous")
    for s in (a, b):
        s.pull(0)
        s.pull(1)
    for step in range(9):
        k = step % 2
        grads = make_grads(rng, params)
        a.push(k, grads)
        b.push(k, grads)
        a.pull(k)
        b.pull(k)
    for p, q in zip(a.params, b.params):
        assert_bitwise_equal(p, q)
    assert a.stats()["staleness_hist"] == [1, 8]


def test_synchronous_averages_a_round_and_pull_returns_last_round(rng):
    params = make_params(rng, "float64")
    w0 = [p.copy() for p in params]
    server = ParameterServer(params, fusedopt.SGD(learning_rate=0.5), 3, synchronous=True)
    grads = [make_grads(rng, params) for _ in range(3)]
    for k in range(3):
        server.pull(k)
    assert server.push(0, grads[0]) == 0
    assert server.push(2, grads[2]) == 0
    ws, v = server.pull(0)  # the round is not complete: the weights of the last completed round
    assert v == 0 and all(np.array_equal(a, b) for a, b in zip(ws, w0))
    with pytest.raises(ValueError, match="already pushed in round 0"):
        server.push(0, grads[0])
    assert server.stats()["pending"] == 2
    assert server.push(1, grads[1]) == 1
    for p, w, g0, g1, g2 in zip(server.params, w0, *grads):
        np.testing.assert_allclose(p, w - 0.5 * (g0 + g1 + g2) / 3, rtol=1e-15, atol=1e-15)
    assert server.stats()["pending"] == 0


# --------------------------------------------------------------------------------- refusals
def _bad_pushes(params):
    good = [np.zeros_like(p) for p in params]
    wrong_shape = list(good)
    wrong_shape[1] = np.zeros(36, dtype=params[1].dtype)
    wrong_dtype = list(good)
    wrong_dtype[2] = np.zeros(params[2].shape, dtype=np.float64)
    strided = list(good)
    strided[3] = np.zeros((4, 18), dtype=params[3].dtype)[:, ::2]
    not_array = list(good)
    not_array[0] = [[0.0] * 5] * 3
    sparse = list(good)
    sparse[0] = fusedopt.row_sparse_array((np.zeros((1, 5), np.float32), np.array([0])), (3, 5))
    aliased = list(good)
    aliased[1] = params[1]  # a gradient that is the server's own weight
    return [
        ((0, aliased), {}, ValueError, r"grads\[1\] overlaps"),
        ((3, good), {}, ValueError, "worker"),
        ((-1, good), {}, ValueError, "worker"),
        ((True, good), {}, TypeError, "worker"),
        ((1, good), {}, ValueError, "has not pulled"),
        ((0, good[:3]), {}, ValueError, "grads has 3 arrays"),
        ((0, tuple(good) + (good[0],)), {}, ValueError, "grads has 5 arrays"),
        ((0, good[0]), {}, TypeError, "grads must be a list"),
        ((0, wrong_shape), {}, ValueError, r"grads\[1\] has shape"),
        ((0, wrong_dtype), {}, TypeError, r"grads\[2\] has dtype"),
        ((0, strided), {}, (TypeError, ValueError), r"grads\[3\]"),
        ((0, not_array), {}, TypeError, r"grads\[0\]"),
        ((0, sparse), {}, TypeError, r"grads\[0\] must be a dense array"),
        ((0, good), {"seq": -1}, ValueError, "seq"),
        ((0, good), {"seq": 1.5}, TypeError, "seq"),
    ]


@pytest.mark.parametrize("name", ["asgd-mom-wd-clip", "ssgd", "dc-worker-adaptive-mom",
                                  "dc-previous"])
def test_refused_push_changes_nothing(name, rng):
    kind, server_kw, opt_kw = CONFIGS[name]
    params = make_params(rng, "float32")
    server = ParameterServer(params, make_optimizer(kind, **opt_kw), 3, **server_kw)
    server.pull(0)
    server.pull(2)
    server.push(2, make_grads(rng, params))  # some state to keep: momentum, backups, a round
    before = states_of(server)
    weights = [p.copy() for p in params]
    for args, kw, exc, match in _bad_pushes(params):
        with pytest.raises(exc, match=match):
            server.check_push(*args) if not kw else server.push(*args, **kw)
        with pytest.raises(exc, match=match):
            server.push(*args, **kw)
        assert states_of(server) == before, (args[0], match)
        for p, w in zip(params, weights):
            assert_bitwise_equal(p, w)


def test_push_refused_by_the_optimizer_rolls_back_counts(rng):
    """A scheduler that yields a negative lr: the update is refused after validation; counts,
    version and statistics stay as they were."""

    class Bad(fusedopt.lr_scheduler.LRScheduler):
        def __call__(self, num_update):
            return -1.0 if num_update >= 2 else 0.1

    for kind, server_kw in (("sgd", {}), ("dcasgd", {"backups": "worker"}),
                            ("dcasgd", {"backups": "previous"})):
        params = make_params(rng, "float32")
        opt = make_optimizer(kind, lr=None, lr_scheduler=Bad(base_lr=0.1))
        server = ParameterServer(params, opt, 2, **server_kw)
        server.pull(0)
        server.push(0, make_grads(rng, params))
        stats, counts = server.stats(), dict(opt._index_update_count)
        with pytest.raises(ValueError, match="lr"):
            server.push(0, make_grads(rng, params))
        stats2 = server.stats()
        for st in (stats, stats2):
            st.pop("kernel_seconds"), st.pop("kernel_cpu_seconds")
        assert stats2 == stats and dict(opt._index_update_count) == counts and server.version == 1


def test_read_only_gradients_are_used_and_not_modified(rng):
    params = make_params(rng, "float32")
    server = ParameterServer(params, make_optimizer("dcasgd", lamda=0.5), 2)
    server.pull(0)
    grads = make_grads(rng, params)
    kept = [g.copy() for g in grads]
    for g in grads:
        g.flags.writeable = False
    server.push(0, grads)
    for g, k in zip(grads, kept):
        assert_bitwise_equal(g, k)


def test_seq_makes_retries_idempotent(rng):
    params = make_params(rng, "float64")
    server = ParameterServer(params, fusedopt.SGD(learning_rate=0.1), 2)
    server.pull(0)
    server.pull(1)
    g = make_grads(rng, params)
    assert server.push(0, g, seq=5) == 1
    assert server.push(1, g, seq=5) == 2  # seq is per worker
    after = [p.copy() for p in params]
    assert server.push(0, g, seq=5) == 1  # a retry: not applied, the version it produced
    for p, a in zip(params, after):
        assert_bitwise_equal(p, a)
    assert server.stats()["pushes"] == [1, 1]
    with pytest.raises(ValueError, match="older"):
        server.push(0, g, seq=4)
    assert server.push(0, g, seq=6) == 3
    assert server.push(0, g) == 4  # without seq: always applied


def test_seq_is_bounded_so_it_saves_exactly(rng):
    """Counters are saved as float64: a seq of 2**53 or more is refused (nothing changed), the largest
    accepted one survives get_states / set_states exactly and is still recognised as a retry."""
    params = make_params(rng, "float32")
    server = ParameterServer(params, fusedopt.SGD(learning_rate=0.1), 1)
    server.pull(0)
    g = make_grads(rng, params)
    before = [p.copy() for p in params]
    with pytest.raises(ValueError, match="seq"):
        server.push(0, g, seq=2 ** 53)
    for p, b in zip(params, before):
        assert_bitwise_equal(p, b)
    assert server.push(0, g, seq=2 ** 53 - 1) == 1
    other = ParameterServer(make_params(rng, "float32"), fusedopt.SGD(learning_rate=0.1), 1)
    other.set_states(server.get_states())
    assert other.push(0, g, seq=2 ** 53 - 1) == 1  # a retry, not applied again
    assert other.version == 1


# ----------------------------------------------------------------------------------- saving
@pytest.mark.parametrize("name", ["asgd-mom-wd-clip", "ssgd", "dc-worker-adaptive-mom",
                                  "dc-worker-mom-clip", "dc-previous-adaptive"])
def test_get_set_states_continue_equals_uninterrupted(name, rng):
    kind, server_kw, opt_kw = CONFIGS[name]
    m = 3
    params = make_params(rng, "float32")
    sync = server_kw.get("synchronous", False)
    events = schedule(rng, m, 18, sync)
    cut = len(events) // 2 + 1  # mid-round in synchronous mode
    seed = int(rng.integers(1 << 30))

    def fresh():
        return ParameterServer([p.copy() for p in params], make_optimizer(kind, **opt_kw), m,
                               **server_kw)

    whole = fresh()
    drive(whole, events, np.random.default_rng(seed))
    first = fresh()
    g_rng = np.random.default_rng(seed)
    drive(first, events[:cut], g_rng)
    saved = first.get_states()
    second = fresh()
    second.set_states(saved)
    assert states_of(second) == states_of(first)
    drive(second, events[cut:], g_rng)
    assert states_of(second) == states_of(whole)
    for p, q in zip(second.params, whole.params):
        assert_bitwise_equal(p, q)


def test_set_states_restores_the_optimizer_counts_and_seq(rng):
    params = make_params(rng, "float32")
    opt = make_optimizer("dcasgd", lamda=0.5, lr_scheduler=fusedopt.lr_scheduler.FactorScheduler(
        step=2, factor=0.5, base_lr=0.2), lr=None)
    a = ParameterServer(params, opt, 2)
    a.pull(1)
    for s in range(5):
        a.push(1, make_grads(rng, params), seq=s)
    b = ParameterServer(make_params(rng, "float32"), make_optimizer("dcasgd", lamda=0.5), 2)
    b.set_states(a.get_states())
    assert b.optimizer.num_update == 5 and b.optimizer.learning_rate == a.optimizer.learning_rate
    assert b.push(1, make_grads(rng, params), seq=4) == 5  # the retry is recognised after loading
    assert b.version == 5


def _rewrite(data, fn):
    """The archive with its manifest and arrays passed through fn (a hostile or mismatched save)."""
    with np.load(io.BytesIO(data)) as z:
        arrays = {k: z[k] for k in z.files}
    manifest = json.loads(arrays.pop("manifest").tobytes())
    fn(manifest, arrays)
    out = io.BytesIO()
    np.savez(out, manifest=np.frombuffer(json.dumps(manifest).encode(), np.uint8), **arrays)
    return out.getvalue()


def _entry(manifest, name):
    """The manifest entry (tree) of the saved state named ``name``."""
    return next(tree for key, tree in manifest["states"] if key == {"v": name})


def _counters(fn):
    """A rewrite that passes the server's counter array (float64) through fn."""
    def rewrite(m, a):
        key = _entry(m, "server")["array"]
        a[key] = fn(a[key].copy())
        _entry(m, "server")["shape"] = list(a[key].shape)
        _entry(m, "server")["dtype"] = str(a[key].dtype)
    return rewrite


def _attrs(fn):
    """A rewrite of the saved optimizer's attributes ({name: tagged JSON value})."""
    def rewrite(m, a):
        pairs = m["optimizer"]["attrs"]["d"]
        attrs = {p[0]["v"]: p[1] for p in pairs}
        fn(attrs)
        pairs[:] = [[{"v": k}, v] for k, v in attrs.items()]
    return rewrite


def _set(d, path, value):
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value


def test_set_states_refuses_mismatched_or_hostile_archives(rng):
    params = make_params(rng, "float32")
    opt_kw = {"lamda": 0.5, "momentum": 0.9}
    server = ParameterServer(params, make_optimizer("dcasgd", **opt_kw), 2)
    server.pull(0)
    server.push(0, make_grads(rng, params))
    good = server.get_states()
    target = ParameterServer(make_params(rng, "float32"), make_optimizer("dcasgd", **opt_kw), 2)
    before, weights = states_of(target), [p.copy() for p in target.params]

    def other(**kw):
        p = dict(params=make_params(rng, "float32"), optimizer=make_optimizer("dcasgd", **opt_kw),
                 num_workers=2)
        p.update(kw)
        return ParameterServer(p.pop("params"), p.pop("optimizer"), p.pop("num_workers"),
                               **p).get_states()

    updater = fusedopt.get_updater(make_optimizer("dcasgd", **opt_kw))
    updater(0, np.ones(3, np.float32), np.zeros(3, np.float32))
    cases = [
        (b"not a zip", "not a fusedopt state archive"),
        (pickle.dumps(server.stats()), "pickled states are never loaded"),
        (good[: len(good) // 2], "not a fusedopt state archive"),
        (good[:-30] + b"\0" * 30, "not a"),
        (updater.get_states(dump_optimizer=True), "not the state of a ParameterServer"),
        (other(num_workers=3), "workers"),
        (other(params=make_params(rng, "float32", SHAPES[:3])), "parameters"),
        (other(params=make_params(rng, "float32", SHAPES[:3] + [(4, 8)])), "weights"),
        (other(params=make_params(rng, "float64")), "weights"),
        (other(backups="previous"), "mode"),
        (other(optimizer=make_optimizer("dcasgd", lamda=0.5)), "momentum"),
        (other(optimizer=fusedopt.SGD(momentum=0.9)), "set_states"),
        (other(optimizer=make_optimizer("dcasgd", adaptive=True, **opt_kw)), "adaptive"),
        (_rewrite(good, lambda m, a: _set(m, ("format",), "other")), "not a fusedopt"),
        (_rewrite(good, lambda m, a: _set(m, ("version",), 2)), "version"),
        (_rewrite(good, _counters(lambda c: c.astype(np.float32))), "counters"),
        (_rewrite(good, _counters(lambda c: c[:-1])), "counters"),
        (_rewrite(good, _counters(lambda c: np.where(np.arange(len(c)) == 5, -1.0, c))),
         "counters"),
        (_rewrite(good, _counters(lambda c: np.where(np.arange(len(c)) == 5, 0.5, c))),
         "counters"),
        (_rewrite(good, _counters(lambda c: np.where(np.arange(len(c)) == 8, 99.0, c))),
         "counters"),  # a pulled version beyond the version
        (_rewrite(good, _counters(lambda c: np.concatenate([c, [1.0]]))), "counters"),
        (_rewrite(good, lambda m, a: _set(_entry(m, "backups"), ("tuple",),
                                          _entry(m, "backups")["tuple"][:1])), "backups"),
        (_rewrite(good, lambda m, a: a.__setitem__(_entry(m, "weights")["tuple"][0]["array"],
                                                   np.zeros(10**6, np.float32))), "set_states"),
        (_rewrite(good, lambda m, a: _set(m, ("optimizer", "class"), "sgd")), "set_states"),
        (_rewrite(good, _attrs(lambda d: d.__setitem__("_lamda", {"f": -1.0}))), "lamda"),
        (_rewrite(good, _attrs(lambda d: d.__setitem__("_momentum", {"f": 0.0}))), "momentum"),
        (_rewrite(good, _attrs(lambda d: d.__setitem__("extra", {"i": 0}))), "extra"),
    ]
    for data, match in cases:
        with pytest.raises(ValueError, match=match):
            target.set_states(data)
        assert states_of(target) == before, match
        for p, w in zip(target.params, weights):
            assert_bitwise_equal(p, w)
    with pytest.raises(TypeError, match="bytes"):
        target.set_states("text")
    target.set_states(good)  # and the good one loads
    assert states_of(target) == states_of(server)


# -------------------------------------------------------------------------- construction, api
def test_constructor_errors(rng):
    params = make_params(rng, "float32")
    sgd = fusedopt.SGD()
    with pytest.raises(TypeError, match="optimizer"):
        ParameterServer(params, object(), 2)
    with pytest.raises(ValueError, match="num_workers"):
        ParameterServer(params, sgd, 0)
    with pytest.raises(TypeError, match="num_workers"):
        ParameterServer(params, sgd, 2.0)
    with pytest.raises(ValueError, match="backups"):
        ParameterServer(params, sgd, 2, backups="last")
    with pytest.raises(ValueError, match="synchronous"):
        ParameterServer(params, fusedopt.DCASGD(), 2, synchronous=True)
    with pytest.raises(TypeError, match="params"):
        ParameterServer([], sgd, 2)
    with pytest.raises(TypeError, match=r"params\[1\]"):
        ParameterServer([params[0], [1.0, 2.0]], sgd, 2)
    with pytest.raises(TypeError, match=r"params\[0\]"):
        ParameterServer([np.zeros(3, np.int32)], sgd, 2)
    ro = params[0].copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"params: .*weights\[0\] is read-only"):
        ParameterServer([ro], sgd, 2)
    flat = np.zeros(10, np.float32)
    with pytest.raises(ValueError, match=r"params: .*weights\[1\] overlaps weights\[0\]"):
        ParameterServer([flat[:6], flat[4:]], sgd, 2)
    with pytest.raises(ValueError, match=r"params: .*overlaps"):
        ParameterServer([flat, flat], sgd, 2)


def test_sgd_ignores_backups_and_api(rng):
    params = make_params(rng, "float32")
    a = ParameterServer([p.copy() for p in params], fusedopt.SGD(), 2, backups="previous")
    b = ParameterServer([p.copy() for p in params], fusedopt.SGD(), 2)
    for s in (a, b):
        s.pull(1)
    g = make_grads(rng, params)
    a.push(1, g)
    b.push(1, g)
    for p, q in zip(a.params, b.params):
        assert_bitwise_equal(p, q)
    assert a.num_workers == 2 and a.version == 1 and a.backups == "previous"
    assert a.param_specs() == [(s, "float32", "cpu") for s in SHAPES]
    st = a.stats()
    assert st["updates"] == 1 and st["pushes"] == [0, 1] and st["pulls"] == [0, 1]
    assert st["staleness_mean"] == 0.0 and st["staleness_max"] == 0 and st["staleness_hist"] == [1]
    assert st["kernel_seconds"] >= 0.0 and st["kernel_cpu_seconds"] >= 0.0
    ws, v = a.pull(0)  # copies: writing them does not touch the server
    ws[0][...] = 7.0
    assert not np.any(a.params[0] == 7.0) and v == 1


def test_pull_refreshes_the_backup_in_place(rng):
    params = make_params(rng, "float32")
    server = ParameterServer(params, make_optimizer("dcasgd", lamda=0.5), 2)
    buffers = [id(b) for b in server._bak[0]]
    server.pull(0)
    server.pull(1)
    server.push(1, make_grads(rng, params))
    server.pull(0)
    assert [id(b) for b in server._bak[0]] == buffers
    for b, p in zip(server._bak[0], params):
        assert_bitwise_equal(b, p)


def test_pull_without_copy_hands_out_the_servers_arrays_and_still_refreshes_the_backup(rng):
    params = make_params(rng, "float32")
    server = ParameterServer(params, make_optimizer("dcasgd", lamda=0.5), 2)
    server.pull(1)
    copies, v0 = server.pull(0)
    own, v1 = server.pull(0, copy=False)
    assert v0 == v1 == 0 and all(a is p for a, p in zip(own, params))
    assert not any(np.shares_memory(c, p) for c, p in zip(copies, params))
    for b, p in zip(server._bak[0], params):      # the backup stays a real copy
        assert not np.shares_memory(b, p)
        assert_bitwise_equal(b, p)
    snapshot = [c.copy() for c in copies]
    server.push(1, make_grads(rng, params))
    for c, s, p in zip(copies, snapshot, params):  # a copy is a snapshot; the own arrays move on
        assert_bitwise_equal(c, s)
        assert not np.array_equal(p, s)
    st = server.stats()
    assert st["pulls"] == [2, 1] and st["staleness_hist"] == [1]
    for bad in (0, 1, None, "no"):
        with pytest.raises(TypeError, match="copy must be a bool"):
            server.pull(0, copy=bad)
    assert server.stats()["pulls"] == [2, 1]      # a refused pull records nothing


@pytest.mark.needs_torch
def test_torch_parameters(rng):
    import torch

    params = make_params(rng, "float32")
    tparams = [torch.from_numpy(p.copy()) for p in params]
    opt_kw = {"lamda": 0.5, "momentum": 0.9}
    a = ParameterServer(tparams, make_optimizer("dcasgd", **opt_kw), 2)
    b = ParameterServer([p.copy() for p in params], make_optimizer("dcasgd", **opt_kw), 2)
    for s in (a, b):
        s.pull(0)
        s.pull(1)
    for k in (0, 1, 0):
        g = make_grads(rng, params)
        a.push(k, [torch.from_numpy(x) for x in g])
        b.push(k, g)
    ws, _ = a.pull(0)
    assert isinstance(ws[0], torch.Tensor)
    for t, p in zip(tparams, b.params):
        assert_bitwise_equal(t.numpy(), p)
    assert a.param_specs()[0] == ((3, 5), "float32", "cpu")
    c = ParameterServer([torch.zeros(s) for s in SHAPES], make_optimizer("dcasgd", **opt_kw), 2)
    c.set_states(a.get_states())
    assert states_of(c) == states_of(a)


def test_import_needs_no_ray():
    code = ("import sys, fusedopt; assert 'fusedopt.distributed' not in sys.modules; "
            "import fusedopt.distributed; assert 'ray' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def test_saved_archive_is_an_updater_state_file(rng):
    params = make_params(rng, "float32")
    server = ParameterServer(params, make_optimizer("dcasgd", lamda=0.5), 2)
    data = server.get_states()
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert "manifest.npy" in names and all(n.endswith(".npy") for n in names)
    updater = fusedopt.get_updater(make_optimizer("dcasgd", lamda=0.5))
    updater.set_states(data)  # the Updater reads it: weights, states, backups, counters
    assert set(updater.states) == {"weights", "states", "backups", "acc", "server"}
    assert_bitwise_equal(updater.states["weights"][0], params[0])


def test_corrupted_archives_raise_value_error_only(rng):
    """Single corrupted bytes anywhere: ValueError (zip CRC, npy header, JSON, checks) or, where
    the zip check cannot tell, a load that fits; never another exception."""
    params = make_params(rng, "float32")
    server = ParameterServer(params, fusedopt.SGD(momentum=0.9), 2)
    server.pull(0)
    server.push(0, make_grads(rng, params))
    good = bytearray(server.get_states())
    target = ParameterServer(make_params(rng, "float32"), fusedopt.SGD(momentum=0.9), 2)
    for pos in rng.choice(len(good), size=200, replace=False):
        bad = bytearray(good)
        bad[pos] ^= 0x5A
        try:
            target.set_states(bytes(bad))
        except ValueError:
            pass


def test_threads_share_a_server(rng):
    """Workers on threads: every pull and push is applied whole (counts and histogram agree)."""
    import threading

    params = make_params(rng, "float32")
    server = ParameterServer(params, make_optimizer("dcasgd", lamda=0.5, momentum=0.9), 4)
    grads = make_grads(rng, params, scale=1e-3)
    errors = []

    def work(k):
        try:
            for _ in range(50):
                server.pull(k)
                server.push(k, grads)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and server.version == 200
    st = server.stats()
    assert st["pushes"] == [50] * 4 and st["pulls"] == [50] * 4 and sum(st["staleness_hist"]) == 200
    assert all(np.all(np.isfinite(p)) for p in params)
