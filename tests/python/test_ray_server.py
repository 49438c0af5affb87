"""RayParameterServer on a local Ray: the modes against the float64 oracle (reference_distributed),
the handle in Ray tasks, retries, checkpoints, bad input (nothing changed on any shard), a shard
killed mid-training, a worker that dies, and the demo's distributed part.

One local Ray for the whole module (started and stopped here); each test bounded by ``time_limit``.
"""
from __future__ import annotations

import io
import os
import pickle
import signal
import threading
import time

import numpy as np
import pytest

from helpers import import_fusedopt
from ray_support import local_ray, ray, time_limit
from reference_distributed import RefServer

fusedopt = import_fusedopt()
from fusedopt.distributed import RayParameterServer  # noqa: E402

pytestmark = pytest.mark.ray

SHAPES = [(17, 5), (5,), (33,), (3, 4, 5), (1,), (64,)]
needs_backup_kernels = pytest.mark.skipif(
    not hasattr(fusedopt, "dcasgd_backup_update"),
    reason="DC-ASGD per-worker backups need the dcasgd_backup_update kernels")


@pytest.fixture(scope="module", autouse=True)
def _ray():
    yield from local_ray()


@pytest.fixture(autouse=True)
def _limit():
    with time_limit(90):
        yield


def _params(rng, dtype=np.float32):
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


def _grads(rng, params):
    return [rng.standard_normal(p.shape).astype(p.dtype) for p in params]


# ------------------------------------------------------------------------------ modes vs oracle
def _run_interleaved(server, ref, rng, params, order):
    """Pull/push in ``order`` ("p0" pull by worker 0, "g1" push by worker 1); checks versions."""
    for op in order:
        k = int(op[1])
        if op[0] == "p":
            w, v = server.pull(k)
            rw, rv = ref.pull(k)
            assert v == rv
            for a, b in zip(w, rw):
                assert not a.flags.writeable or a.size * a.itemsize < 100_000
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        elif op[0] == "g":
            g = _grads(rng, params)
            assert server.push(k, g) == ref.push(k, g)
        else:       # "x": push_and_pull, one round trip
            g = _grads(rng, params)
            w, v = server.push_and_pull(k, g)
            assert v == ref.push(k, g)
            rw, rv = ref.pull(k)
            assert v == rv
            for a, b in zip(w, rw):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


ORDER = "p0 p1 g0 p0 g1 g0 p1 p0 g1 g0 p1 g1 p0 g0".split()
ORDER_X = "p0 p1 x0 g1 x0 p1 x1 g0 x1 x0 g1".split()


@pytest.mark.parametrize("num_shards", [1, 3])
def test_asgd_momentum_matches_oracle(rng, num_shards):
    params = _params(rng)
    kw = dict(lr=0.05, momentum=0.9, wd=0.01, clip_gradient=1.5, rescale_grad=0.5)
    opt = fusedopt.SGD(learning_rate=kw["lr"], momentum=kw["momentum"], wd=kw["wd"],
                       clip_gradient=kw["clip_gradient"], rescale_grad=kw["rescale_grad"])
    server = RayParameterServer(params, opt, 2, num_shards=num_shards)
    try:
        ref = RefServer(params, 2, rule="sgd", store=np.float32, **kw)
        _run_interleaved(server, ref, rng, params, ORDER + ORDER_X)
        st = server.stats()
        assert st["updates"] == ref.version
        assert st["staleness_hist"] == np.bincount(ref.staleness).tolist()
        assert st["staleness_mean"] == pytest.approx(np.mean(ref.staleness))
        assert len(st["shards"]) == num_shards
    finally:
        server.shutdown()


def test_shards_balanced_by_size_and_lr_mult_follows_the_parameter(rng):
    params = _params(rng)
    opt = fusedopt.SGD(learning_rate=0.1)
    opt.set_lr_mult({5: 0.0, 0: 2.0})   # global indices: parameter 5 frozen, parameter 0 doubled
    server = RayParameterServer(params, opt, 1, num_shards=3)
    try:
        assignment = server.shard_assignment
        assert sorted(i for idx in assignment for i in idx) == list(range(len(params)))
        loads = [sum(params[i].nbytes for i in idx) for idx in assignment]
        assert max(loads) <= max(p.nbytes for p in params) + min(loads)
        server.pull(0)
        g = [np.ones(p.shape, np.float32) for p in params]
        server.push(0, g)
        w, _ = server.pull(0)
        np.testing.assert_allclose(w[5], params[5])
        np.testing.assert_allclose(w[0], params[0] - 0.2, rtol=1e-6)
        np.testing.assert_allclose(w[1], params[1] - 0.1, rtol=1e-6)
    finally:
        server.shutdown()


def test_dcasgd_previous_backups_matches_oracle(rng):
    params = _params(rng)
    opt = fusedopt.DCASGD(learning_rate=0.1, momentum=0.5, lamda=0.5, wd=0.01)
    server = RayParameterServer(params, opt, 2, num_shards=2, backups="previous")
    try:
        ref = RefServer(params, 2, rule="dcasgd", backups="previous", lr=0.1, momentum=0.5,
                        lamda=0.5, wd=0.01, store=np.float32)
        _run_interleaved(server, ref, rng, params, ORDER)
    finally:
        server.shutdown()


@needs_backup_kernels
@pytest.mark.parametrize("adaptive", [False, True])
def test_dcasgd_worker_backups_matches_oracle(rng, adaptive):
    params = _params(rng)
    lam = 2.0 if adaptive else 0.5
    opt = fusedopt.DCASGD(learning_rate=0.1, momentum=0.5, lamda=lam, adaptive=adaptive)
    server = RayParameterServer(params, opt, 2, num_shards=2)
    try:
        ref = RefServer(params, 2, rule="dcasgd", backups="worker", lr=0.1, momentum=0.5,
                        lamda=lam, adaptive=adaptive, store=np.float32)
        _run_interleaved(server, ref, rng, params, ORDER)
    finally:
        server.shutdown()


def test_synchronous_sgd_matches_oracle_and_waits_for_the_round(rng):
    params = _params(rng)
    server = RayParameterServer(params, fusedopt.SGD(learning_rate=0.2, momentum=0.9), 2,
                                num_shards=2, synchronous=True)
    try:
        ref = RefServer(params, 2, rule="sgd", synchronous=True, lr=0.2, momentum=0.9,
                        store=np.float32)
        _run_interleaved(server, ref, rng, params, "p0 p1 g0 g1 p0 p1 g1 g0 p1 p0 g0 g1".split())
        server.pull(0)
        server.push(0, _grads(rng, params))
        with pytest.raises(ValueError, match="already pushed"):
            server.push(0, _grads(rng, params))        # refused by every shard alike
        with pytest.raises(TimeoutError):
            server.wait_version(4, timeout=0.2)
        assert server.stats()["pending"] == 1
    finally:
        server.shutdown()


# ----------------------------------------------------------------------- handle, seq, read-only
@ray.remote(max_retries=0)
def _remote_steps(server, worker, grads, steps):
    for _ in range(steps):
        server.pull(worker)
        server.push(worker, grads)
    return server.stats()["pushes"]


def test_handle_pickles_and_serves_ray_tasks(rng):
    params = _params(rng)
    server = RayParameterServer(params, fusedopt.SGD(learning_rate=0.01), 3, num_shards=2)
    try:
        copy = pickle.loads(pickle.dumps(server))
        assert copy.shard_assignment == server.shard_assignment
        with pytest.raises(ValueError, match="without a pull"):
            copy.push(0, _grads(rng, params))           # pull records are per handle copy
        g = _grads(rng, params)
        pushes = ray.get([_remote_steps.remote(server, k, g, 3) for k in range(3)])
        assert server.stats()["pushes"] == [3, 3, 3]
        assert max(p[0] for p in pushes) == 3
        ref = RefServer(params, 3, rule="sgd", lr=0.01, store=np.float32)
        for _ in range(9):      # ASGD: the order of equal gradients does not matter
            ref.pull(0)
            ref.push(0, g)
        w, v = server.pull(0)
        assert v == 9
        for a, b in zip(w, ref.w):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    finally:
        server.shutdown()


def test_retried_push_is_applied_once_and_read_only_grads_are_used_as_they_are(rng):
    params = _params(rng)
    server = RayParameterServer(params, fusedopt.SGD(learning_rate=0.1), 1, num_shards=2)
    try:
        server.pull(0)
        g = _grads(rng, params)
        for a in g:
            a.flags.writeable = False
        before = [a.copy() for a in g]
        assert server.push(0, g, seq=7) == 1
        assert server.push(0, g, seq=7) == 1           # the retry: not applied again
        with pytest.raises(ValueError, match="older"):
            server.push(0, g, seq=6)
        w, v = server.pull(0)
        assert v == 1
        for a, p, gg, b in zip(w, params, g, before):
            np.testing.assert_allclose(a, p - 0.1 * gg, rtol=1e-6, atol=1e-7)
            np.testing.assert_array_equal(gg, b)       # the gradient is never modified
        assert server.push(0, g) == 2                  # handle-made seq (nanoseconds) is newer
    finally:
        server.shutdown()


@pytest.mark.parametrize("actor_options", [None, {"max_concurrency": 2}])
def test_a_pull_is_a_snapshot_that_later_pushes_do_not_change(rng, actor_options):
    """The shards hand their own arrays to Ray's serialiser (one copy): what a worker pulled stays
    as it was while the server goes on updating, for arrays inlined in the reply (small) and for
    arrays in the object store (large), with pull and with push_and_pull; likewise when the shards
    run calls concurrently (then they copy first)."""
    params = _params(rng) + [rng.standard_normal((256, 300)).astype(np.float32)]
    server = RayParameterServer(params, fusedopt.SGD(learning_rate=0.1, momentum=0.9), 2,
                                num_shards=2, actor_options=actor_options)
    ref = RefServer(params, 2, rule="sgd", lr=0.1, momentum=0.9, store=np.float32)
    try:
        held = []
        w, _ = server.pull(0)
        ref.pull(0)
        held.append((w, [a.copy() for a in w]))
        server.pull(1)
        ref.pull(1)
        for k in (0, 1, 0, 1, 1, 0):
            g = _grads(rng, params)
            w, v = server.push_and_pull(k, g)
            assert v == ref.push(k, g)
            rw, _ = ref.pull(k)
            for a, b in zip(w, rw):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
            held.append((w, [a.copy() for a in w]))
        for w, snapshot in held:
            for a, b in zip(w, snapshot):
                np.testing.assert_array_equal(a, b)
        assert not np.array_equal(held[0][1][-1], held[-1][1][-1])
    finally:
        server.shutdown()


# -------------------------------------------------------------------------------- bad input
def _state(server):
    """Every shard's counters and weights, read without recording anything."""
    st = server.stats()
    return ([(s["server"]["updates"], s["server"]["pushes"], s["server"]["pulls"])
             for s in st["shards"]], server.get_states())


def _same(a, b):
    """Equal counters, and equal weights / states: get_states archives compared array by array."""
    assert a[0] == b[0]
    with np.load(io.BytesIO(a[1])) as za, np.load(io.BytesIO(b[1])) as zb:
        assert za.files == zb.files
        for name in za.files:
            if name.startswith("shard"):
                with np.load(io.BytesIO(za[name].tobytes())) as x, \
                        np.load(io.BytesIO(zb[name].tobytes())) as y:
                    assert x.files == y.files
                    for f in x.files:
                        np.testing.assert_array_equal(x[f], y[f])


def test_bad_pushes_are_refused_whole_and_change_no_shard(rng):
    params = _params(rng)
    server = RayParameterServer(params, fusedopt.SGD(learning_rate=0.1, momentum=0.9), 2, num_shards=3)
    try:
        server.pull(0)
        server.push(0, _grads(rng, params))
        server.pull(0)
        before = _state(server)
        good = _grads(rng, params)
        bad_cases = [
            (ValueError, r"worker must be in \[0, 2\), got 2", dict(worker=2)),
            (ValueError, r"worker must be in \[0, 2\), got -1", dict(worker=-1)),
            (TypeError, "worker must be an int", dict(worker="0")),
            (TypeError, "worker must be an int", dict(worker=True)),
            (ValueError, "without a pull", dict(worker=1)),
            (ValueError, "has 5 arrays", dict(grads=good[:5])),
            (ValueError, "has 7 arrays", dict(grads=good + [good[0]])),
            (ValueError, r"grads\[3\] has shape", dict(grads=good[:3] + [good[3].reshape(3, 20)] + good[4:])),
            (TypeError, r"grads\[4\] has dtype float64", dict(grads=good[:4] + [good[4].astype(np.float64)] + good[5:])),
            (ValueError, r"grads\[0\] is not C-contiguous", dict(grads=[np.asfortranarray(good[0])] + good[1:])),
            (TypeError, r"grads\[1\] must be a NumPy array", dict(grads=[good[0], list(good[1])] + good[2:])),
            (TypeError, "grads must be a list", dict(grads=good[0])),
            (ValueError, r"seq must be in \[0, ", dict(seq=-3)),
            (TypeError, "seq must be an int", dict(seq=2.0)),
        ]
        for exc, match, kw in bad_cases:
            args = {"worker": 0, "grads": good, **kw}
            seq = args.pop("seq", None)
            with pytest.raises(exc, match=match):
                server.push(args["worker"], args["grads"], seq=seq)
        torch = pytest.importorskip("torch")
        with pytest.raises(ValueError, match=r"grads\[2\] is on meta"):
            server.push(0, good[:2] + [torch.empty(good[2].shape, device="meta")] + good[3:])
        with pytest.raises(ValueError, match="worker must be in"):
            server.pull(5)
        _same(before, _state(server))
        # A torch CPU gradient is taken as a NumPy view and applied.
        assert server.push(0, [torch.from_numpy(g) for g in good]) == 2
    finally:
        server.shutdown()


def test_bad_construction_arguments(rng, tmp_path):
    params = _params(rng)
    sgd = fusedopt.SGD()
    for exc, match, args, kw in [
        (ValueError, "num_shards must be >= 1", (params, sgd, 1), dict(num_shards=0)),
        (ValueError, "exceeds the number of parameters", (params, sgd, 1), dict(num_shards=7)),
        (TypeError, "num_shards must be an int", (params, sgd, 1), dict(num_shards=2.0)),
        (ValueError, "checkpoint_every must be >= 1", (params, sgd, 1), dict(checkpoint_every=0)),
        (ValueError, "max_restarts must be >= 0", (params, sgd, 1), dict(max_restarts=-1)),
        (TypeError, "optimizer must be a fusedopt.Optimizer", (params, "sgd", 1), {}),
        (TypeError, "non-empty list", ([], sgd, 1), {}),
        (ValueError, "num_workers must be >= 1", (params, sgd, 0), {}),         # from the shards
        (ValueError, "backups must be", (params, sgd, 1), dict(backups="none")),  # from the shards
        (TypeError, r"params\[1\] must be a NumPy array", ([params[0], "x"], sgd, 1), {}),
    ]:
        with pytest.raises(exc, match=match):
            RayParameterServer(*args, **kw)


def test_corrupted_states_and_checkpoints_are_typed_errors_and_change_nothing(rng, tmp_path):
    params = _params(rng)
    server = RayParameterServer(params, fusedopt.SGD(learning_rate=0.1, momentum=0.9), 1,
                                num_shards=2, checkpoint_dir=tmp_path, checkpoint_every=1)
    try:
        server.pull(0)
        server.push(0, _grads(rng, params))
        blob = server.get_states()
        server.push(0, _grads(rng, params))
        before = _state(server)
        with pytest.raises(ValueError, match="set_states: not a"):
            server.set_states(blob[:-100])
        with pytest.raises(TypeError, match="bytes"):
            server.set_states("state")
        # A valid container whose second shard's part is damaged: the first shard is checked too
        # but nothing is loaded anywhere.
        from fusedopt.updater import load_archive, save_archive

        manifest, parts = load_archive(blob, "fusedopt.ray_parameter_server", 1, lambda m, a: (
            m, {f"shard{k}": a.array(f"shard{k}", "uint8", [n], "test")
                for k, n in enumerate(m["sizes"])}))
        parts["shard1"] = parts["shard1"][: len(parts["shard1"]) // 2]
        with pytest.raises(ValueError, match="set_states"):    # the declared size no longer fits
            server.set_states(save_archive(manifest, parts))
        manifest["sizes"][1] = len(parts["shard1"])
        with pytest.raises(ValueError, match="set_states"):    # the shard's own loader refuses it
            server.set_states(save_archive(manifest, parts))
        manifest["sizes"][1] = 1 << 50
        with pytest.raises(ValueError, match="oversized"):     # never read past a sane bound
            server.set_states(save_archive(manifest, parts))
        _same(before, _state(server))
        server.set_states(blob)                         # the good one loads, on every shard
        assert [s["server"]["updates"] for s in server.stats()["shards"]] == [1, 1]
    finally:
        server.shutdown()
    # The checkpoints on disk: complete files (no temporary left), resumed by a new server...
    files = sorted(os.listdir(tmp_path))
    assert files == ["shard-0-of-2.state", "shard-1-of-2.state"]
    resumed = RayParameterServer(params, fusedopt.SGD(learning_rate=0.1, momentum=0.9), 1,
                                 num_shards=2, checkpoint_dir=tmp_path)
    try:
        assert resumed.version() == 1
        shards = resumed.stats()["shards"]
        assert [s["loaded_checkpoint"] for s in shards] == [True, True]
        # A damaged checkpoint met by a restarted shard: every call to it is a ValueError naming the
        # file (the shard does not go on from wrong weights).
        with open(tmp_path / "shard-1-of-2.state", "r+b") as f:
            f.seek(40)
            f.write(b"\0" * 64)
        os.kill(shards[1]["pid"], signal.SIGKILL)
        for _ in range(2):
            with pytest.raises(ValueError, match="shard-1-of-2.state"):
                resumed.pull(0)
    finally:
        resumed.shutdown()
    # ...and a new server on that directory: a ValueError naming the file, no shard left running.
    with pytest.raises(ValueError, match="shard-1-of-2.state"):
        RayParameterServer(params, fusedopt.SGD(learning_rate=0.1, momentum=0.9), 1,
                           num_shards=2, checkpoint_dir=tmp_path)


# --------------------------------------------------------------------------- fault tolerance
def _mlp_server(tmp_path, **kw):
    from fusedopt.distributed import workers

    return RayParameterServer(workers.mlp_init_params(0), fusedopt.SGD(learning_rate=0.5), 2,
                              num_shards=2, checkpoint_dir=tmp_path, **kw)


def test_a_killed_shard_is_restarted_reloads_its_checkpoint_and_training_converges(tmp_path):
    from fusedopt.distributed import run_workers, workers

    every = 10
    server = _mlp_server(tmp_path, checkpoint_every=every, max_restarts=2)
    try:
        victim = server.stats()["shards"][1]["pid"]
        box = {}
        t = threading.Thread(target=lambda: box.setdefault(
            "res", run_workers(server, workers.DigitsMLPWorker, 120, timeout=80)))
        t.start()
        deadline = time.monotonic() + 60
        while server.version() < 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(victim, signal.SIGKILL)
        t.join(85)
        assert not t.is_alive()
        assert [r.get("error") for r in box["res"]] == [None, None]
        assert [r["steps"] for r in box["res"]] == [120, 120]
        st = server.stats()
        s0, s1 = st["shards"]
        assert s1["restarted"] and s1["loaded_checkpoint"] and s1["pid"] != victim
        assert not s0["restarted"]
        assert s0["server"]["updates"] == 240
        assert s0["checkpoints"] == 240 // every          # every `every` updates, no more
        lost = s0["server"]["updates"] - s1["server"]["updates"]
        assert 0 <= lost <= every - 1
        assert workers.mlp_evaluate(server.pull(0)[0]) < 12.0     # test error, percent
    finally:
        server.shutdown()


def test_a_worker_that_dies_does_not_stop_the_others(tmp_path):
    from fusedopt.distributed import run_workers, workers

    def dying(worker, seed):
        model = workers.DigitsMLPWorker(worker, seed)
        if worker == 1:
            inner, count = model.gradients, [0]

            def gradients(weights):
                count[0] += 1
                if count[0] == 5:
                    os._exit(1)
                return inner(weights)
            model.gradients = gradients
        return model

    server = _mlp_server(tmp_path)
    try:
        res = run_workers(server, dying, 40, timeout=60)
        assert res[0].get("error") is None and res[0]["steps"] == 40
        assert "error" in res[1]
        assert server.stats()["pushes"] == [40, 4]
    finally:
        server.shutdown()


def test_demo_distributed_part_runs():
    from fusedopt.distributed import demo

    rows = demo.run(steps=15, num_workers=2, methods=("asgd", "ssgd"), progress=False)
    assert [r["method"] for r in rows] == ["asgd", "ssgd"]
    for r in rows:
        assert 0.0 <= r["test_error"] <= 100.0 and r["updates_per_s"] > 0
    assert rows[0]["updates"] == 30 and rows[1]["updates"] == 15


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_example_script_trains_numpy_and_torch_workers(model, capsys):
    if model == "cnn":
        pytest.importorskip("torch")
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "distributed", "train_digits.py")
    spec = importlib.util.spec_from_file_location("train_digits", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.main(["--model", model, "--method", "asgd", "--workers", "2", "--steps", "60"])
    assert [r.get("error") for r in out["results"]] == [None, None]
    assert out["updates"] == 120
    assert out["test_error"] < 25.0
