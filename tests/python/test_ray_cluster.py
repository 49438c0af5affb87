"""A two-node Ray cluster on this machine, started with ``ray start`` as a user would: a head node and
a second node offering the custom resource ``worker_node``; the parameter-server shards are pinned to
the head, the workers placed on the second node by that resource, and they train.

Both nodes run ``ray start --block`` as child processes of this module, in their own session, on
127.0.0.1 (which Ray turns into this machine's own address) with token authentication off; the module stops exactly them (never ``ray stop``, which
would stop every Ray on the machine).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from helpers import import_fusedopt
from ray_support import ray, time_limit

fusedopt = import_fusedopt()
from fusedopt.distributed import RayParameterServer, run_workers, workers  # noqa: E402

pytestmark = pytest.mark.ray


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_start(args, env, log):
    return subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--block",
                             "--node-ip-address=127.0.0.1", "--disable-usage-stats",
                             "--object-store-memory=100000000", *args],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)      # --block: stops the node's processes, then exits
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)   # whatever of that node is left (its own session)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def cluster():
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    temp = tempfile.mkdtemp(prefix="fo-ray-", dir="/tmp")   # short: Ray's socket paths are bounded
    port = _free_port()
    log = open(os.path.join(temp, "ray-start.log"), "w")
    procs = []
    try:
        with time_limit(120, "starting a two-node Ray cluster"):
            procs.append(_ray_start(["--head", f"--port={port}", "--num-cpus=1",
                                     "--include-dashboard=false", f"--temp-dir={temp}"], env, log))
            procs.append(_ray_start([f"--address=127.0.0.1:{port}", "--num-cpus=1",
                                     '--resources={"worker_node": 4}'], env, log))
            os.environ["RAY_AUTH_MODE"] = "disabled"
            deadline = time.monotonic() + 100
            while True:
                try:
                    ray.init(address=f"127.0.0.1:{port}", log_to_driver=False)
                    break
                except (ConnectionError, RuntimeError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(1)
            while len([n for n in ray.nodes() if n["Alive"]]) < 2:
                assert time.monotonic() < deadline, "the second node did not join"
                time.sleep(0.5)
        yield port
    finally:
        ray.shutdown()
        for p in reversed(procs):
            _stop(p)
        log.close()
        with open(os.path.join(temp, "ray-start.log")) as f:
            print(f.read()[-2000:])     # shown by pytest when the module fails
        shutil.rmtree(temp, ignore_errors=True)


def test_workers_on_a_second_node_train_against_shards_on_the_head(cluster):
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n["Alive"]]
    worker_node = [n["NodeID"] for n in nodes if n["Resources"].get("worker_node")]
    head = [n["NodeID"] for n in nodes if not n["Resources"].get("worker_node")]
    assert len(worker_node) == 1 and len(head) == 1
    with time_limit(100):
        server = RayParameterServer(
            workers.mlp_init_params(0), fusedopt.SGD(learning_rate=0.5), 2, num_shards=2,
            actor_options={"scheduling_strategy": NodeAffinitySchedulingStrategy(head[0], soft=False)})
        try:
            res = run_workers(server, workers.DigitsMLPWorker, 40,
                              worker_options={"resources": {"worker_node": 1}}, timeout=80)
            assert [r.get("error") for r in res] == [None, None]
            assert {r["node_id"] for r in res} == set(worker_node)
            st = server.stats()
            assert {s["node_id"] for s in st["shards"]} == set(head)
            assert st["updates"] == 80
            assert workers.mlp_evaluate(server.pull(0)[0]) < 20.0
        finally:
            server.shutdown()
