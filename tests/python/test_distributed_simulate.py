"""fusedopt.distributed.simulate: the schedule it produces, determinism, and the weights it ends
with against the float64 oracle replaying the same pulls and pushes."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import assert_bitwise_equal, assert_close, import_fusedopt
from reference_distributed import RefServer

fusedopt = import_fusedopt()
from fusedopt.distributed import ParameterServer, simulate  # noqa: E402

SHAPES = [(6, 5), (11,)]


def quadratic_grad_fn(log=None):
    """Gradient of 0.5 * |w - t|^2 plus seeded noise; logs (worker, job, pulled weights)."""
    def grad_fn(worker, weights, job, rng):
        if log is not None:
            log.append(("pull", worker, [w.copy() for w in weights]))
        grads = [w - 0.5 + 0.1 * rng.standard_normal(w.shape) for w in weights]
        loss = 0.5 * sum(float(((w - 0.5) ** 2).sum()) for w in weights)
        return loss, grads
    return grad_fn


def server_for(method, m, seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s) for s in SHAPES]
    if method == "asgd":
        return ParameterServer(params, fusedopt.SGD(learning_rate=0.2), m)
    if method == "ssgd":
        return ParameterServer(params, fusedopt.SGD(learning_rate=0.2), m, synchronous=True)
    backups = "previous" if method == "dcasgd-previous" else "worker"
    return ParameterServer(params, fusedopt.DCASGD(learning_rate=0.2, lamda=0.5,
                                                   use_fused_step=True), m, backups=backups)


@pytest.mark.parametrize("m", [1, 2, 5])
def test_staggered_delays_give_round_robin_and_staleness_m_minus_1(m):
    res = simulate(server_for("asgd", m), quadratic_grad_fn(), 4 * m + 3)
    assert res.workers.tolist() == [k % m for k in range(4 * m + 3)]
    assert res.staleness.tolist() == list(range(m)) + [m - 1] * (3 * m + 3)
    assert res.versions.tolist() == list(range(1, 4 * m + 4))
    assert res.jobs.tolist() == list(range(4 * m + 3))
    np.testing.assert_allclose(np.diff(res.times), np.full(4 * m + 2, 1.0 / m), rtol=1e-9)
    assert res.stats["staleness_max"] == m - 1 and res.stats["updates"] == 4 * m + 3
    assert np.all(np.isfinite(res.losses)) and res.sim_time == res.times[-1]


@pytest.mark.parametrize("method", ["asgd", "ssgd", "dcasgd-worker", "dcasgd-previous"])
@pytest.mark.parametrize("delays", ["staggered", "exponential"])
def test_same_seed_same_bits(method, delays):
    runs = []
    for _ in range(2):
        server = server_for(method, 4)
        res = simulate(server, quadratic_grad_fn(), 30, delays=delays, seed=7)
        runs.append((server, res))
    (a, ra), (b, rb) = runs
    for p, q in zip(a.params, b.params):
        assert_bitwise_equal(p, q)
    for field in ("workers", "jobs", "staleness", "versions", "times", "losses"):
        assert_bitwise_equal(getattr(ra, field), getattr(rb, field), field)
    assert a.get_states() == b.get_states()


def test_exponential_delays_depend_on_the_seed():
    a = simulate(server_for("asgd", 4), quadratic_grad_fn(), 40, delays="exponential", seed=1)
    b = simulate(server_for("asgd", 4), quadratic_grad_fn(), 40, delays="exponential", seed=2)
    assert a.workers.tolist() != b.workers.tolist()
    assert np.all(np.diff(a.times) >= 0)


def test_job_rng_depends_on_seed_and_job_only():
    seen = {}

    def grad_fn(worker, weights, job, rng):
        seen.setdefault(job, []).append(rng.integers(1 << 62))
        return None, [np.zeros_like(w) for w in weights]

    simulate(server_for("asgd", 3), grad_fn, 12, seed=3)
    simulate(server_for("asgd", 5), grad_fn, 12, delays="exponential", seed=3)
    assert all(len(set(v)) == 1 for v in seen.values())
    res = simulate(server_for("asgd", 2), grad_fn, 4, seed=3)
    assert np.all(np.isnan(res.losses))


@pytest.mark.parametrize("method", ["asgd", "ssgd", "dcasgd-worker", "dcasgd-previous"])
def test_final_weights_match_the_oracle_replaying_the_schedule(method):
    """The simulator's pulls and pushes, replayed on RefServer with the gradients it pushed."""
    m = 3
    log = []
    server = server_for(method, m)
    ref = RefServer(server.params, m, rule="sgd" if method in ("asgd", "ssgd") else "dcasgd",
                    backups="previous" if method == "dcasgd-previous" else "worker",
                    synchronous=method == "ssgd", lr=0.2, lamda=0.5)
    pushed = []
    orig_push = server.push

    def push(worker, grads, **kw):  # records what the simulator pushes, in order
        log.append(("push", worker, [g.copy() for g in grads]))
        return orig_push(worker, grads, **kw)

    server.push = push
    res = simulate(server, quadratic_grad_fn(log), 25, seed=4)
    for what, worker, arrays in log:
        if what == "pull":
            ws, _ = ref.pull(worker)
            for w, a in zip(ws, arrays):
                assert_close(a, w, np.float64)
        else:
            pushed.append(ref.push(worker, arrays))
    assert pushed == res.versions.tolist()
    assert res.staleness.tolist() == ref.staleness
    for p, w in zip(server.params, ref.w):
        assert_close(p, w, np.float64)


def test_synchronous_rounds():
    m = 4
    res = simulate(server_for("ssgd", m), quadratic_grad_fn(), 4 * m + 2)
    assert res.versions.tolist() == [k // m + (k % m == m - 1) for k in range(4 * m)] + [4, 4]
    assert np.all(res.staleness == 0)
    assert res.stats["pending"] == 2 and res.stats["updates"] == 4
    # every worker of a round starts at the end of the previous round: pushes come in rounds
    assert np.all(res.times[m:2 * m] > res.times[m - 1])


def test_zero_gradients_and_errors():
    res = simulate(server_for("asgd", 2), quadratic_grad_fn(), 0)
    assert len(res.workers) == 0 and res.stats["updates"] == 0
    server = server_for("asgd", 2)
    with pytest.raises(ValueError, match="delays"):
        simulate(server, quadratic_grad_fn(), 3, delays="uniform")
    with pytest.raises(ValueError, match="seed"):
        simulate(server, quadratic_grad_fn(), 3, seed=-1)
    with pytest.raises(TypeError, match="num_gradients"):
        simulate(server, quadratic_grad_fn(), 3.0)
    with pytest.raises(TypeError, match="server"):
        simulate(object(), quadratic_grad_fn(), 3)
    with pytest.raises(TypeError, match="grad_fn"):
        simulate(server, None, 3)
