"""Throughput of RayParameterServer against a plain NumPy + Ray parameter server, on one local Ray.

    python bench/bench_ps.py                      # both models, the whole grid (a few minutes)
    python bench/bench_ps.py --quick --json out.json
    python bench/bench_ps.py --models resnet50 --seconds 4

Models: "1M" (4 float32 tensors, 1,026,024 elements) and "resnet50" (the 161 ResNet-50 tensors of
bench/param_shapes.json, 25.6M elements). Optimizer: SGD with momentum 0.9 (MXNet's rule), i.e. ASGD.
Workers send fixed random gradients (no model compute), so the figures are the server's and Ray's.

* fusedopt: ``RayParameterServer`` with 1, 2, 4 shards; M worker tasks each loop
  ``pull(k)`` then ``push(k, grads)`` for a fixed time.
* plain: the asynchronous parameter server of Ray's documentation ("Parameter Server" example of
  Ray Core) with NumPy in place of torch: one actor whose ``apply_gradients(*gradients)`` sums the
  gradients with ``np.stack(...).sum(axis=0)``, applies SGD with momentum in NumPy and returns the
  weights; worker actors' ``compute_gradients(weights)`` return their gradients; the driver loop
  ``ray.wait``s for a gradient, applies it and hands the new weights' reference to that worker.

Both count updates per second (each update = one gradient in, one set of weights out). Printed:
pushes/s and pulls/s, the staleness distribution, and for one worker the time split of a step
(kernel / the rest of the shard's push and pull / the rest: Ray's serialisation, transport and
scheduling).

The shard's update against the kernel's floor: ``kernel`` is the shard's own kernel time per update
(``ParameterServer``'s ``kernel_seconds``) over the timed window (warm-up excluded), and ``x floor``
divides it by the floor time of the rule: its minimal bytes (SGD with momentum, fp32: 20 bytes per
element) / the copy bandwidth that ``bench/compare.py`` measures (a plain in-place C/OpenMP loop
over 3 and 4 arrays, best median of 3 allocations), measured in this process with one thread, as
the shards run. ``cpu`` is the same kernel time counted in CPU time of the shard's thread
(``kernel_cpu_seconds``): it leaves out the time the shard's process waited for a CPU while the
workers' processes ran. ``x conc`` divides that CPU time by the floor of shards updating at the
same moment on this host: k = min(shards, cores) shards share the bandwidth of k threads
(measured the same way with k OpenMP threads), so the sum of their CPU times cannot be below
20 B x n x k / bandwidth(k threads). The same update timed in this process through a local
``ParameterServer`` (read-only gradients, one thread), right before each Ray run, is printed
beside it (``local``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

# Ray runs each 0-CPU actor and task with OMP_NUM_THREADS=1 (so do the shards): the in-process
# reference update below uses the same single thread.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import ray  # noqa: E402

import fusedopt  # noqa: E402
from fusedopt.distributed import ParameterServer, RayParameterServer, init_local_ray  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import compare  # noqa: E402  (the floor bandwidth, measured as compare.py does)

LR, MOMENTUM = 1e-4, 0.9
BYTES_PER_ELEM = 20         # sgd_mom fp32: w, g, m read; w, m written (PERF.md)


def model_shapes(name: str) -> list[tuple[int, ...]]:
    if name == "1M":
        return [(512, 1024), (1024,), (512, 976), (1000,)]
    with open(os.path.join(HERE, "param_shapes.json")) as f:
        return [tuple(s) for s in json.load(f)[name]]


def make(shapes, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s, dtype=np.float32) for s in shapes]


# ----------------------------------------------------------------------------------- fusedopt
def _server_times(st):
    """Sums over shards of: kernel seconds, push seconds, pull seconds; updates, pulls; and the
    kernel's CPU seconds (of the shard's thread)."""
    sh = st["shards"]
    return (sum(s["server"]["kernel_seconds"] for s in sh), sum(s["push_seconds"] for s in sh),
            sum(s["pull_seconds"] for s in sh), st["updates"], sum(st["pulls"]),
            sum(s["server"]["kernel_cpu_seconds"] for s in sh))


@ray.remote(num_cpus=0, max_retries=0)
def fused_worker(server, worker, shapes, seconds, warmup, combined):
    """The asynchronous worker's loop of fusedopt.distributed.workers.worker_loop without the model:
    pull once, then per step push the gradients and pull the next weights (``combined``: in one
    call, ``push_and_pull``, as worker_loop does; else two calls)."""
    grads = make(shapes, 100 + worker)
    server.pull(worker)

    def step():
        if combined:
            w, _ = server.push_and_pull(worker, grads)
        else:
            server.push(worker, grads)
            w, _ = server.pull(worker)
        del w

    end_warm = time.perf_counter() + warmup
    while time.perf_counter() < end_warm:
        step()
    # Worker 0 reads the shards' counters at the end of its warm-up, so the server times are
    # those of the timed window (the first updates touch the momentum states' fresh pages).
    before = _server_times(server.stats()) if worker == 0 else None
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        n += 1
    return {"steps": n, "seconds": time.perf_counter() - start, "server_before": before}


def run_fused(shapes, shards, workers, seconds, warmup, combined=True):
    server = RayParameterServer(make(shapes, 0), fusedopt.SGD(learning_rate=LR, momentum=MOMENTUM),
                                workers, num_shards=shards, max_restarts=0)
    try:
        res = ray.get([fused_worker.remote(server, k, shapes, seconds, warmup, combined)
                       for k in range(workers)])
        st = server.stats()
        steps = sum(r["steps"] for r in res)
        wall = max(r["seconds"] for r in res)
        kernel, push, pull, updates, pulls, kernel_cpu = (
            b - a for a, b in zip(res[0]["server_before"], _server_times(st)))
        updates, pulls = max(updates, 1), max(pulls, 1)
        return {
            "pushes_per_s": steps / wall, "pulls_per_s": steps / wall,
            # one worker's step: push + pull, as the worker sees it
            "step_ms": 1e3 * wall * workers / steps,
            # server side, summed over shards, per update / per pull, over the timed window: the
            # kernel call, the rest of ParameterServer.push, and the shard's pull (records the
            # pull, refreshes backups; the weights are serialised by Ray, counted in Ray's part)
            "kernel_ms": 1e3 * kernel / updates,
            # the same, in CPU time of the shard's thread: without the time its process waited
            # for a CPU while other processes (workers serialising) ran
            "kernel_cpu_ms": 1e3 * kernel_cpu / updates,
            "push_other_ms": 1e3 * (push - kernel) / updates,
            "pull_ms": 1e3 * pull / pulls,
            "staleness_mean": st["staleness_mean"], "staleness_max": st["staleness_max"],
            "staleness_hist": st["staleness_hist"],
        }
    finally:
        server.shutdown()


# -------------------------------------------------------------------------------- plain example
@ray.remote(num_cpus=0)
class PlainParameterServer:
    def __init__(self, params):
        self.weights = [p.copy() for p in params]
        self.moms = [np.zeros_like(p) for p in params]

    def apply_gradients(self, *gradients):
        summed = [np.stack(g).sum(axis=0) for g in zip(*gradients)]
        for w, m, g in zip(self.weights, self.moms, summed):
            m *= MOMENTUM
            m -= LR * g
            w += m
        return self.weights

    def get_weights(self):
        return self.weights


@ray.remote(num_cpus=0)
class PlainWorker:
    def __init__(self, shapes, worker):
        self.grads = make(shapes, 100 + worker)

    def compute_gradients(self, weights):
        return self.grads


def run_plain(shapes, workers, seconds, warmup):
    ps = PlainParameterServer.remote(make(shapes, 0))
    ws = [PlainWorker.remote(shapes, k) for k in range(workers)]
    try:
        current = ps.get_weights.remote()
        pending = {w.compute_gradients.remote(current): w for w in ws}
        n, start, measuring = 0, time.perf_counter() + warmup, False
        while True:
            ready, _ = ray.wait(list(pending))
            worker = pending.pop(ready[0])
            current = ps.apply_gradients.remote(*ready)
            pending[worker.compute_gradients.remote(current)] = worker
            now = time.perf_counter()
            if not measuring and now >= start:
                measuring, n, t0 = True, 0, now
            elif measuring:
                n += 1
                if now - t0 >= seconds:
                    break
        ray.get(current)
        wall = time.perf_counter() - t0
        return {"pushes_per_s": n / wall, "pulls_per_s": n / wall}
    finally:
        for a in [ps, *ws]:
            ray.kill(a)


# ------------------------------------------------------------------------- in-process reference
class LocalUpdate:
    """The same SGD-momentum update on the same list, in this process, through a local
    ParameterServer with read-only gradients (what a shard runs)."""

    def __init__(self, shapes):
        w, g = make(shapes, 0), make(shapes, 1)
        self.server = ParameterServer(w, fusedopt.SGD(learning_rate=LR, momentum=MOMENTUM), 1)
        self.server.pull(0)
        for a in g:
            a.flags.writeable = False
        self.g = g
        self.server.push(0, g)      # touches the momentum states' pages

    def time(self, reps=5):
        """Median ms of a push and median ms of its kernel call."""
        times, kernels = [], []
        for _ in range(reps):
            k0 = self.server.stats()["kernel_seconds"]
            t0 = time.perf_counter()
            self.server.push(0, self.g)
            times.append(time.perf_counter() - t0)
            kernels.append(self.server.stats()["kernel_seconds"] - k0)
        return 1e3 * float(np.median(times)), 1e3 * float(np.median(kernels))


def floor_gbps(threads=1):
    """compare.py's floor bandwidth in this process with ``threads`` OpenMP threads (one by
    default: OMP_NUM_THREADS=1 above)."""
    env = compare.Env(argparse.Namespace(quick=False, worker_threads=threads, peers="numpy", lr=LR,
                                         momentum=MOMENTUM, wd=0.0))
    if threads == 1:
        return env.measure_floor()
    import ctypes

    gomp = ctypes.CDLL("libgomp.so.1")  # the C helper's OpenMP runtime
    gomp.omp_set_num_threads(threads)
    try:
        return env.measure_floor()
    finally:
        gomp.omp_set_num_threads(1)


def concurrent_floor_ms(shards, n, floors):
    """The floor of the sum of the shards' kernel CPU times per update when the shards update at
    the same moment on this host: min(shards, cores) of them run together and share the bandwidth
    of that many threads, so each moves its bytes at 1/k of it: the sum is 20 B x n x k / bw(k)."""
    k = min(shards, os.cpu_count() or 1)
    return 1e3 * BYTES_PER_ELEM * n * k / (floors[k]["gbps"] * 1e9)


def machine():
    cpu = platform.processor()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=False).stdout.strip()
        if subprocess.run(["git", "-C", HERE, "status", "--porcelain", "--untracked-files=no"],
                          capture_output=True, text=True, check=False).stdout.strip():
            commit += "+changes"
    except OSError:
        commit = "?"
    return {"cpu": cpu, "cores": os.cpu_count(), "capability": fusedopt.cpu_capability(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": commit,
            "ray": ray.__version__, "python": sys.version.split()[0],
            "loadavg_start": [round(x, 2) for x in os.getloadavg()]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="shorter runs, fewer configurations")
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--models", default="1M,resnet50", help="comma-separated: 1M, resnet50")
    ap.add_argument("--preallocate-plasma", action="store_true",
                    help="start Ray with RAY_preallocate_plasma_memory=1 (both servers)")
    args = ap.parse_args(argv)
    if args.preallocate_plasma:
        # Ray's object store then allocates (and zeroes) its memory once at start-up; each new
        # object still costs a page fault per 4 KiB page in every process that touches it.
        os.environ["RAY_preallocate_plasma_memory"] = "1"
    seconds = args.seconds or (1.0 if args.quick else 2.5)
    warmup = 0.3 if args.quick else 0.7
    grid = {"1M": ([1, 2, 4], [1, 2, 4, 8]), "resnet50": ([1, 2, 4], [1, 2, 4])}
    if args.quick:
        grid = {"1M": ([1, 2], [1, 4]), "resnet50": ([1], [1, 2])}
    grid = {m: grid[m] for m in args.models.split(",")}
    init_local_ray(2, object_store_memory=2 * 2**30, log_to_driver=False)
    info = machine()
    info["ray_preallocate_plasma_memory"] = os.environ.get("RAY_preallocate_plasma_memory", "0")
    print(json.dumps(info))
    rows = []
    try:
        for model, (shard_list, worker_list) in grid.items():
            shapes = model_shapes(model)
            n = sum(int(np.prod(s)) for s in shapes)
            local = LocalUpdate(shapes)
            floor = floor_gbps()
            floor_ms = 1e3 * BYTES_PER_ELEM * n / (floor["gbps"] * 1e9)
            floors = {1: floor}
            for k in range(2, min(max(shard_list), os.cpu_count() or 1) + 1):
                floors[k] = floor_gbps(k)
            print(f"\n== {model}: {len(shapes)} tensors, {n:,} float32 elements; floor "
                  f"{floor['gbps']:.1f} GB/s ({floor['method']}) -> {floor_ms:.2f} ms per update "
                  f"({BYTES_PER_ELEM} B/elem); "
                  + ", ".join(f"{k} threads {f['gbps']:.1f} GB/s" for k, f in floors.items() if k > 1))
            print(f"{'server':>9} {'shards':>6} {'workers':>7} {'push/s':>8} {'pull/s':>8} "
                  f"{'step ms':>8} {'kernel':>7} {'x floor':>7} {'cpu':>6} {'x floor':>7} "
                  f"{'x conc':>6} {'local':>7} {'x floor':>7} "
                  f"{'ps other':>8} {'pull':>6} {'stale mean':>10} {'max':>4}")
            # Untimed: the first large objects of a fresh Ray touch object-store pages no process
            # has mapped yet (a page fault per 4 KiB page), which slowed whichever server ran
            # first (ResNet-50, 1 worker: 8 pushes/s instead of 22-25). Both servers warm up here.
            run_plain(shapes, 1, 1.0, warmup)
            run_fused(shapes, 1, 1, 1.0, warmup)
            for workers in worker_list:
                # interleaved: the plain server, then every shard count, for this worker count
                plain = run_plain(shapes, workers, seconds, warmup)
                rows.append({"model": model, "server": "plain", "shards": 1, "workers": workers, **plain})
                print(f"{'plain':>9} {1:>6} {workers:>7} {plain['pushes_per_s']:>8.1f} "
                      f"{plain['pulls_per_s']:>8.1f}")
                variants = [(shards, True) for shards in shard_list]
                if workers == 1:
                    variants.insert(1, (1, False))      # push and pull as two calls, for the split
                for shards, combined in variants:
                    step_ms, kernel_ms = local.time()   # right before the Ray run, same process
                    r = run_fused(shapes, shards, workers, seconds, warmup, combined)
                    r.update(model=model, server="fusedopt" if combined else "fusedopt-2calls",
                             shards=shards, workers=workers, local_push_ms=step_ms,
                             local_kernel_ms=kernel_ms, floor_ms=floor_ms, floor_gbps=floor["gbps"],
                             kernel_x_floor=r["kernel_ms"] / floor_ms,
                             kernel_cpu_x_floor=r["kernel_cpu_ms"] / floor_ms,
                             concurrent_floor_ms=concurrent_floor_ms(shards, n, floors),
                             kernel_cpu_x_concurrent_floor=(
                                 r["kernel_cpu_ms"] / concurrent_floor_ms(shards, n, floors)),
                             local_x_floor=kernel_ms / floor_ms,
                             vs_plain=r["pushes_per_s"] / plain["pushes_per_s"])
                    rows.append(r)
                    print(f"{r['server']:>9} {shards:>6} {workers:>7} {r['pushes_per_s']:>8.1f} "
                          f"{r['pulls_per_s']:>8.1f} {r['step_ms']:>8.2f} "
                          f"{r['kernel_ms']:>7.2f} {r['kernel_x_floor']:>7.2f} "
                          f"{r['kernel_cpu_ms']:>6.2f} {r['kernel_cpu_x_floor']:>7.2f} "
                          f"{r['kernel_cpu_x_concurrent_floor']:>6.2f} {kernel_ms:>7.2f} "
                          f"{r['local_x_floor']:>7.2f} {r['push_other_ms']:>8.2f} {r['pull_ms']:>6.2f} "
                          f"{r['staleness_mean']:>10.2f} {r['staleness_max']:>4}  "
                          f"({r['vs_plain']:.2f}x plain)")
            del local
    finally:
        ray.shutdown()
    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(f"load average at the end: {info['loadavg_end']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
