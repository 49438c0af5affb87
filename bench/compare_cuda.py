#!/usr/bin/env python3
"""compare_cuda.py — fusedopt's CUDA kernels against PyTorch's fused CUDA SGD on the same tensors.

shared/PERF.md's GPU row: "H100 / H200, every rule, 64M and the two lists: >= 85 % of the measured copy
bandwidth; <= 0.9x torch CUDA fused SGD on the same tensors; one launch per list; no host sync per step".

Every case allocates torch CUDA tensors once (values bounded: w in [-1, 1], g in [-0.1, 0.1], momentum in
[-0.01, 0.01]) and every peer updates those very tensors: fusedopt through DLPack (in place, on torch's
current stream), ``torch.optim.SGD(fused=True)`` with its ``momentum_buffer`` state pre-seeded with the
same momentum tensors, and ``torch._fused_sgd_`` on the same lists. The rules differ (MXNet keeps lr
inside the momentum; PyTorch outside) but the memory traffic is the same: each operand read once, each
output written once.

Peers: ``fusedopt`` (the functional operator: ``sgd_update`` / ``sgd_mom_update`` on one tensor, the
aggregated ``multi_*`` operator on a list), ``fusedopt_SGD.update`` and ``fusedopt_prepared``
(``fusedopt.SGD`` with ``aggregate_num=inf``: ``update(...)`` and ``prepare(...).step()``, lists only;
DCASGD: ``dcasgd_update`` / ``multi_dcasgd_update``),
``torch_fused`` (``torch.optim.SGD(fused=True).step()``), ``torch_raw`` (``torch._fused_sgd_``),
``torch_copy`` (``dst.copy_(src)``). Mixed precision (fp16 / bf16 weights with fp32 master and momentum)
and DCASGD are fusedopt only, held against the copy bandwidth.

Method: everything runs on one non-default torch stream. Per case: warm-up, then interleaved rounds A B
C, B C A, ...; a sample is k back-to-back steps between two CUDA events (k makes a sample >= 5 ms), so
host overhead is hidden whenever the host enqueues faster than the device runs (``host us`` shows the
host's cost per step). Reported: median time per step, GB/s on minimal bytes (sgd 12 B/elem, sgd_mom 20,
mp_sgd_mom 22, DCASGD with momentum 28, copy 8), ``x copy`` = GB/s / copy GB/s (the copy bandwidth:
``dst.copy_(src)`` on 64 Mi floats, median of 20, measured at start-up), and ``vs torch_fused`` = the
median of the per-round paired ratios time(peer) / time(torch_fused) (< 1: faster than torch).

No host sync per step (fusedopt peers): the device is put to sleep (``torch.cuda._sleep``) for longer
than the host needs to enqueue 100 steps, then 100 steps are enqueued back to back. A step that waited
for the device (a stream / device synchronisation, a synchronous copy or allocation) could not return
before the sleep ends: ``no_sync`` is True when the first 10 calls returned within half the sleep
(``early`` counts the calls that returned before it ended; a full launch queue, not a sync, can hold
back later ones).
Launches per step (optional, ``--no-profile`` skips): kernels seen by ``torch.profiler`` in one step.

Usage:
    python3 bench/compare_cuda.py [--json out.json] [--quick] [--cases REGEX] [--reps N] [--no-profile]
Exits 0 with a message when torch has no CUDA device (nothing to compare); 1 when fusedopt cannot use the
device torch sees, or when a case failed. ``--device cpu`` runs the same code on CPU tensors with host
timers (a check of the script itself; the numbers mean nothing).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import traceback
from collections import OrderedDict
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MI = 1 << 20
LR, MOMENTUM, WD, LAMDA = 0.01, 0.9, 1e-4, 0.04
SYNC_STEPS = 100


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# Timing backend: CUDA events on one stream, or host timers for --device cpu


class Dev:
    def __init__(self, torch: Any, device: str) -> None:
        self.torch = torch
        self.device = device
        self.cuda = device.startswith("cuda")
        self.cycles_per_s: float | None = None

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.current_stream().synchronize()

    def run(self, fn: Callable[[], Any], k: int) -> tuple[float, float]:
        """k back-to-back calls: (device seconds, host seconds to enqueue them)."""
        if not self.cuda:
            t0 = time.perf_counter()
            for _ in range(k):
                fn()
            dt = time.perf_counter() - t0
            return dt, dt
        ev = self.torch.cuda.Event
        start, end = ev(enable_timing=True), ev(enable_timing=True)
        start.record()
        t0 = time.perf_counter()
        for _ in range(k):
            fn()
        host = time.perf_counter() - t0
        end.record()
        end.synchronize()
        return start.elapsed_time(end) * 1e-3, host

    def sleep_cycles_per_s(self) -> float | None:
        """Calibrates torch.cuda._sleep (GPU clock cycles) once; None when it is not available."""
        if not self.cuda or not hasattr(self.torch.cuda, "_sleep"):
            return None
        if self.cycles_per_s is None:
            cycles = 20_000_000
            self.torch.cuda._sleep(cycles)  # warm-up (module load)
            self.sync()
            secs, _ = self.run(lambda: self.torch.cuda._sleep(cycles), 1)
            self.cycles_per_s = cycles / max(secs, 1e-6)
        return self.cycles_per_s


def no_sync_check(dev: Dev, fn: Callable[[], Any], host_per_step: float) -> dict[str, Any]:
    """Sleeps the device for well over the host time of SYNC_STEPS steps, enqueues the steps behind the
    sleep and notes when each call returned. A step that waits for the device (any host sync) cannot
    return before the sleep ends, so the first 10 returning early proves there is none. Later steps may
    still block once the launch queue is full (the aggregated kernels pass a ~30 KB chunk table by value);
    ``early`` counts the steps that returned before the sleep ended."""
    cps = dev.sleep_cycles_per_s()
    if cps is None:
        return {"no_sync": None, "why": "torch.cuda._sleep unavailable (or not a CUDA run)"}
    sleep_s = min(2.0, max(0.05, 4.0 * SYNC_STEPS * host_per_step))
    torch = dev.torch
    dev.sync()
    ev = torch.cuda.Event
    start, end = ev(enable_timing=True), ev(enable_timing=True)
    returned = []
    start.record()
    torch.cuda._sleep(int(sleep_s * cps))
    t0 = time.perf_counter()
    for _ in range(SYNC_STEPS):
        fn()
        returned.append(time.perf_counter() - t0)
    end.record()
    end.synchronize()
    total = start.elapsed_time(end) * 1e-3
    first = returned[min(10, SYNC_STEPS) - 1]
    return {"no_sync": first < 0.5 * sleep_s, "steps": SYNC_STEPS, "sleep_s": sleep_s,
            "first10_returned_s": first, "all_returned_s": returned[-1],
            "early": sum(1 for r in returned if r < sleep_s), "device_total_s": total}


def count_kernels(dev: Dev, fn: Callable[[], Any]) -> tuple[int | None, dict[str, int]]:
    """Kernels torch.profiler sees in one call of fn, and their names (None when the profiler is
    unusable). Device events that are not kernels (memcpy, memset, synchronisation) are left out."""
    if not dev.cuda:
        return None, {}
    try:
        from torch.profiler import ProfilerActivity, profile

        torch = dev.torch
        dev.sync()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            fn()
            dev.sync()
        cuda_type = torch.autograd.DeviceType.CUDA
        names: dict[str, int] = {}
        for e in prof.events():
            if getattr(e, "device_type", None) != cuda_type:
                continue
            if e.name.startswith(("Memcpy", "Memset")) or re.search(r"\bSync\b", e.name):
                continue
            names[e.name] = names.get(e.name, 0) + 1
        return sum(names.values()), names
    except Exception as e:  # the profiler is optional
        log(f"compare_cuda.py: torch.profiler failed ({type(e).__name__}: {e}); launches not counted")
        return None, {}


# ------------------------------------------------------------------------------------------------
# Cases


class Case:
    def __init__(self, name: str, rule: str, dtype: str, label: str, elems: int, bpe: int, target: bool) -> None:
        self.name, self.rule, self.dtype, self.label = name, rule, dtype, label
        self.elems, self.min_bytes, self.target = elems, bpe * elems, target
        self.peers: OrderedDict[str, Callable[[], Any]] = OrderedDict()
        self.keep: list[Any] = []

    def add(self, name: str, fn: Callable[[], Any]) -> None:
        self.peers[name] = fn


def shapes_list(key: str) -> list[list[int]]:
    path = os.environ.get("FUSEDOPT_PARAM_SHAPES", os.path.join(HERE, "param_shapes.json"))
    with open(path) as f:
        return json.load(f)[key]


def numel(shape: list[int]) -> int:
    return math.prod(shape) if shape else 1


class Env:
    def __init__(self, torch: Any, fo: Any, dev: Dev) -> None:
        self.torch, self.fo, self.dev = torch, fo, dev

    def filled(self, shape: list[int], lo: float, hi: float, dtype: Any = None) -> Any:
        t = self.torch
        x = t.empty(shape, dtype=dtype or t.float32, device=self.dev.device)
        return x.uniform_(lo, hi)


def build_copy(env: Env, n: int, label: str) -> Case:
    case = Case(f"copy/f32/{label}", "copy", "f32", label, n, 8, False)
    src, dst = env.filled([n], -1, 1), env.filled([n], -1, 1)
    case.keep += [src, dst]
    case.add("torch_copy", lambda: dst.copy_(src))
    return case


def build_dense(env: Env, rule: str, dtype: str, shapes: list[list[int]], label: str) -> Case:
    """sgd / sgd_mom (f32, with the torch peers) and mp_sgd_mom (f16/bf16) on one tensor or a list."""
    t, fo = env.torch, env.fo
    mom = rule in ("sgd_mom", "mp_sgd_mom")
    mp = rule.startswith("mp_")
    bpe = {"sgd": 12, "sgd_mom": 20, "mp_sgd_mom": 22}[rule]
    elems = sum(numel(s) for s in shapes)
    case = Case(f"{rule}/{dtype}/{label}", rule, dtype, label, elems, bpe, True)
    wdt = {"f32": t.float32, "f16": t.float16, "bf16": t.bfloat16}[dtype]
    if mp:
        w32 = [env.filled(s, -1, 1) for s in shapes]
        ws = [w.to(wdt) for w in w32]
    else:
        w32 = []
        ws = [env.filled(s, -1, 1, wdt) for s in shapes]
    gs = [env.filled(s, -0.1, 0.1, wdt) for s in shapes]
    ms = [env.filled(s, -0.01, 0.01) for s in shapes] if mom else []
    case.keep += [ws, gs, ms, w32]
    n = len(shapes)
    single = n == 1
    lrs, wds = [LR] * n, [WD] * n

    if rule == "sgd":
        if single:
            case.add("fusedopt", lambda: fo.sgd_update(ws[0], gs[0], lr=LR, wd=WD))
        else:
            flat = [a for pair in zip(ws, gs) for a in pair]
            case.add("fusedopt", lambda: fo.multi_sgd_update(flat, lrs=lrs, wds=wds))
    elif rule == "sgd_mom":
        if single:
            case.add("fusedopt", lambda: fo.sgd_mom_update(ws[0], gs[0], ms[0], lr=LR, momentum=MOMENTUM, wd=WD))
        else:
            flat = [a for tr in zip(ws, gs, ms) for a in tr]
            case.add("fusedopt", lambda: fo.multi_sgd_mom_update(flat, lrs=lrs, wds=wds, momentum=MOMENTUM))
    else:
        if single:
            case.add("fusedopt", lambda: fo.mp_sgd_mom_update(ws[0], gs[0], ms[0], w32[0], lr=LR,
                                                              momentum=MOMENTUM, wd=WD))
        else:
            flat = [a for q in zip(ws, gs, ms, w32) for a in q]
            case.add("fusedopt", lambda: fo.multi_mp_sgd_mom_update(flat, lrs=lrs, wds=wds, momentum=MOMENTUM))
    if not single and not mp:
        opt = fo.SGD(learning_rate=LR, momentum=MOMENTUM if mom else 0.0, wd=WD, aggregate_num=math.inf)
        idx = list(range(n))
        states = ms if mom else [None] * n
        case.add("fusedopt_SGD.update", lambda: opt.update(idx, ws, gs, states))
        if hasattr(opt, "prepare"):
            try:
                prep = opt.prepare(idx, ws, gs, states)
                case.add("fusedopt_prepared", prep.step)
            except Exception as e:
                log(f"compare_cuda.py: {case.name}: SGD.prepare failed ({type(e).__name__}: {e}); no prepared peer")
        case.keep.append(opt)

    if dtype == "f32":
        params = [t.nn.Parameter(w) for w in ws]
        for p, g in zip(params, gs):
            p.grad = g
        topt = t.optim.SGD(params, lr=LR, momentum=MOMENTUM if mom else 0.0, weight_decay=WD, fused=True)
        for p, m in zip(params, ms):
            topt.state[p]["momentum_buffer"] = m  # shared with fusedopt: not a first step
        case.add("torch_fused", topt.step)
        if hasattr(t, "_fused_sgd_"):
            kw = dict(weight_decay=WD, momentum=MOMENTUM if mom else 0.0, lr=LR, dampening=0.0,
                      nesterov=False, maximize=False, is_first_step=False)
            case.add("torch_raw", lambda: t._fused_sgd_(ws, gs, ms, **kw))
        case.keep += [params, topt]
    return case


def build_dcasgd(env: Env, shapes: list[list[int]], label: str) -> Case:
    """DCASGD with momentum (fusedopt only): dcasgd_update on one tensor, multi_dcasgd_update on a list."""
    fo = env.fo
    elems = sum(numel(s) for s in shapes)
    case = Case(f"dcasgd_mom/f32/{label}", "dcasgd_mom", "f32", label, elems, 28, True)
    ws = [env.filled(s, -1, 1) for s in shapes]
    gs = [env.filled(s, -0.1, 0.1) for s in shapes]
    ms = [env.filled(s, -0.01, 0.01) for s in shapes]
    prevs = [env.filled(s, -1, 1) for s in shapes]
    case.keep += [ws, gs, ms, prevs]
    n = len(shapes)
    if n == 1:
        case.add("fusedopt", lambda: fo.dcasgd_update(ws[0], gs[0], ms[0], prevs[0], lr=LR, momentum=MOMENTUM,
                                                      lamda=LAMDA, wd=WD))
    elif hasattr(fo, "multi_dcasgd_update"):
        lrs, wds = [LR] * n, [WD] * n
        case.add("fusedopt", lambda: fo.multi_dcasgd_update(ws, gs, ms, prevs, lrs=lrs, wds=wds, momentum=MOMENTUM,
                                                            lamda=LAMDA))
    else:
        raise RuntimeError("this fusedopt has no multi_dcasgd_update")
    return case


def case_specs(quick: bool) -> list[tuple[str, Callable[[Env], Case]]]:
    n = 4 * MI if quick else 64 * MI
    lab = str(n)
    specs: list[tuple[str, Callable[[Env], Case]]] = [
        (f"copy/f32/{lab}", lambda e: build_copy(e, n, lab)),
        (f"sgd/f32/{lab}", lambda e: build_dense(e, "sgd", "f32", [[n]], lab)),
        (f"sgd_mom/f32/{lab}", lambda e: build_dense(e, "sgd_mom", "f32", [[n]], lab)),
        (f"mp_sgd_mom/f16/{lab}", lambda e: build_dense(e, "mp_sgd_mom", "f16", [[n]], lab)),
        (f"mp_sgd_mom/bf16/{lab}", lambda e: build_dense(e, "mp_sgd_mom", "bf16", [[n]], lab)),
        (f"dcasgd_mom/f32/{lab}", lambda e: build_dcasgd(e, [[n]], lab)),
    ]
    lists = ["resnet50"] if quick else ["resnet50", "bert_base"]
    for lst in lists:
        for rule in ("sgd", "sgd_mom"):
            specs.append((f"{rule}/f32/{lst}",
                          lambda e, r=rule, l=lst: build_dense(e, r, "f32", shapes_list(l), l)))
        specs.append((f"dcasgd_mom/f32/{lst}", lambda e, l=lst: build_dcasgd(e, shapes_list(l), l)))
    for dt in ("f16", "bf16"):
        specs.append((f"mp_sgd_mom/{dt}/resnet50",
                      lambda e, d=dt: build_dense(e, "mp_sgd_mom", d, shapes_list("resnet50"), "resnet50")))
    return specs


# ------------------------------------------------------------------------------------------------
# Measurement


def time_case(dev: Dev, case: Case, reps: int, target_s: float, profile: bool) -> dict[str, Any]:
    names = list(case.peers)
    k: dict[str, int] = {}
    for name in names:
        fn = case.peers[name]
        for _ in range(3):
            fn()
        dev.sync()
        one, _ = dev.run(fn, 1)
        k[name] = max(1, min(1000, int(math.ceil(target_s / max(one, 1e-7)))))
        dev.run(fn, min(k[name], 20))  # settle at the sample length
    dev_s: dict[str, list[float]] = {n: [] for n in names}
    host_s: dict[str, list[float]] = {n: [] for n in names}
    for r in range(reps):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            d, h = dev.run(case.peers[name], k[name])
            dev_s[name].append(d / k[name])
            host_s[name].append(h / k[name])
    copy = case.copy_gbps  # type: ignore[attr-defined]
    out: dict[str, Any] = {}
    for name in names:
        s = dev_s[name]
        med = statistics.median(s)
        gbps = case.min_bytes / med / 1e9
        row: dict[str, Any] = {"median_s": med, "min_s": min(s), "GBps": gbps,
                               "x_copy": gbps / copy if copy else None, "inner": k[name],
                               "host_s_per_step": statistics.median(host_s[name]), "samples_s": s}
        if "torch_fused" in dev_s:
            row["vs_torch_fused"] = statistics.median(a / b for a, b in zip(s, dev_s["torch_fused"]))
        if profile:
            row["launches"], row["kernels"] = count_kernels(dev, case.peers[name])
        if name.startswith("fusedopt"):
            row["sync_check"] = no_sync_check(dev, case.peers[name], row["host_s_per_step"])
        out[name] = row
    dev.sync()
    return out


def measure_copy_gbps(env: Env) -> float:
    n = 64 * MI
    src, dst = env.filled([n], -1, 1), env.filled([n], -1, 1)
    for _ in range(20):  # warm-up: clocks settle
        dst.copy_(src)
    env.dev.sync()
    gbps = []
    for _ in range(20):
        d, _ = env.dev.run(lambda: dst.copy_(src), 1)
        gbps.append(8.0 * n / d / 1e9)
    del src, dst
    return statistics.median(gbps)


# ------------------------------------------------------------------------------------------------
# Output


def fmt(x: Any, spec: str, none: str = "-") -> str:
    return none if x is None else format(x, spec)


def print_table(results: list[dict[str, Any]]) -> None:
    hdr = (f"{'case':26s} {'peer':20s} {'ms/step':>9s} {'GB/s':>8s} {'x copy':>7s} {'vs torch_fused':>14s} "
           f"{'host us':>8s} {'launches':>8s} {'no_sync':>7s}")
    print(hdr)
    print("-" * len(hdr))
    for res in results:
        if "error" in res:
            print(f"{res['case']:26s} ERROR: {res['error']}")
            continue
        for name, p in res["peers"].items():
            sync = p.get("sync_check", {}).get("no_sync")
            print(f"{res['case']:26s} {name:20s} {p['median_s'] * 1e3:9.4f} {p['GBps']:8.1f} "
                  f"{fmt(p['x_copy'], '7.3f'):>7s} {fmt(p.get('vs_torch_fused'), '14.3f'):>14s} "
                  f"{p['host_s_per_step'] * 1e6:8.1f} {fmt(p.get('launches'), '8d'):>8s} "
                  f"{fmt(sync, ''):>7s}")


def targets(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """PERF.md's GPU row, per target case and fusedopt peer."""
    rows = []
    for res in results:
        if not res.get("target") or "error" in res:
            continue
        for name, p in res["peers"].items():
            if not name.startswith("fusedopt"):
                continue
            checks = {"x_copy >= 0.85": p["x_copy"] is not None and p["x_copy"] >= 0.85}
            if p.get("vs_torch_fused") is not None:
                checks["vs torch_fused <= 0.9"] = p["vs_torch_fused"] <= 0.9
            if p.get("launches") is not None and name == "fusedopt":
                checks["one launch"] = p["launches"] == 1
            sync = p.get("sync_check", {}).get("no_sync")
            if sync is not None:
                checks["no host sync"] = bool(sync)
            rows.append({"case": res["case"], "peer": name, "checks": checks,
                         "status": "PASS" if all(checks.values()) else "MISS"})
    return rows


def git_commit() -> str:
    try:
        return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", help="write every sample and the metadata here")
    ap.add_argument("--quick", action="store_true", help="4 Mi elements, ResNet-50 list only, 3 rounds")
    ap.add_argument("--cases", help="only cases whose name matches this regex")
    ap.add_argument("--reps", type=int, default=0, help="interleaved rounds (default 11; --quick 3)")
    ap.add_argument("--no-profile", action="store_true", help="do not count launches with torch.profiler")
    ap.add_argument("--device", default="cuda:0",
                    help="cuda:N (default cuda:0); 'cpu' checks the script itself on CPU tensors")
    args = ap.parse_args()
    reps = args.reps or (3 if args.quick else 11)
    t_start = time.time()

    try:
        import torch  # before fusedopt, as compare.py (one OpenMP runtime)
    except ImportError:
        print("compare_cuda.py: torch is not installed: nothing to compare (pip install torch with CUDA)")
        return 0
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"compare_cuda.py: torch {torch.__version__} sees no CUDA device (torch.cuda.is_available() is "
              f"False; CUDA build: {torch.version.cuda}): nothing to compare")
        return 0
    try:
        import fusedopt as fo
    except ImportError as e:
        print(f"compare_cuda.py: fusedopt is not importable ({e}); install it first (pip install .)")
        return 1
    dev = Dev(torch, args.device)
    if dev.cuda:
        if not fo.cuda.is_available():
            built = "built with CUDA" if fo.cuda.built_with_cuda() else "built WITHOUT CUDA kernels"
            print(f"compare_cuda.py: torch sees {torch.cuda.get_device_name(args.device)} but fusedopt "
                  f"cannot use it ({built}; fusedopt.cuda.device_count() = {fo.cuda.device_count()}); "
                  f"rebuild with FUSEDOPT_CUDA=ON")
            return 1
        torch.cuda.set_device(args.device)
        stream = torch.cuda.Stream()
        ctx: Any = torch.cuda.stream(stream)
        devname = torch.cuda.get_device_name(args.device)
    else:
        import contextlib

        ctx = contextlib.nullcontext()
        devname = f"CPU ({platform.processor() or '?'}) -- script check only, numbers meaningless"
        log("compare_cuda.py: --device cpu: host timers on CPU tensors; this checks the script, not speed")

    env = Env(torch, fo, dev)
    results: list[dict[str, Any]] = []
    failed = False
    with ctx:
        copy_gbps = measure_copy_gbps(env)
        log(f"compare_cuda.py: {devname}: copy {copy_gbps:.1f} GB/s (dst.copy_(src), 64 Mi floats, read + write)")
        rx = re.compile(args.cases) if args.cases else None
        specs = [s for s in case_specs(args.quick) if rx is None or rx.search(s[0])]
        for order, (name, build) in enumerate(specs):
            t0 = time.time()
            res: dict[str, Any] = {"case": name, "order": order}
            try:
                case = build(env)
                case.copy_gbps = copy_gbps  # type: ignore[attr-defined]
                res.update({"rule": case.rule, "dtype": case.dtype, "size": case.label, "elems": case.elems,
                            "min_bytes": case.min_bytes, "target": case.target})
                res["peers"] = time_case(dev, case, reps, 0.002 if args.quick else 0.005, not args.no_profile)
            except Exception as e:
                failed = True
                res["error"] = f"{type(e).__name__}: {e}"
                log(traceback.format_exc())
            finally:
                case = None  # free the tensors before the next case
                gc.collect()
                if dev.cuda:
                    torch.cuda.empty_cache()
            results.append(res)
            log(f"compare_cuda.py: {name}: {time.time() - t0:.1f} s")

    print()
    print(f"fusedopt compare_cuda.py — {datetime.datetime.now().isoformat(timespec='seconds')}, {devname}, "
          f"torch {torch.__version__} (CUDA {torch.version.cuda}), fusedopt {getattr(fo, '__version__', '?')}, "
          f"commit {git_commit()}")
    print(f"  copy bandwidth {copy_gbps:.1f} GB/s; {reps} interleaved rounds; lr {LR}, momentum {MOMENTUM}, wd {WD}")
    print()
    print_table(results)
    trows = targets(results)
    if trows and not args.quick:
        print()
        print("PERF.md GPU row (>= 0.85 x copy, <= 0.9 x torch fused, one launch per list, no host sync):")
        for row in trows:
            checks = ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in row["checks"].items())
            print(f"  {row['case']:26s} {row['peer']:20s} {row['status']:4s}  {checks}")
    elif args.quick:
        print("\n--quick: small sizes, PERF.md's target rows are not evaluated.")
    log(f"compare_cuda.py: total {time.time() - t_start:.0f} s")
    if args.json:
        doc = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "device": devname,
               "torch": torch.__version__, "torch_cuda": torch.version.cuda,
               "fusedopt": getattr(fo, "__version__", "?"), "commit": git_commit(), "command": " ".join(sys.argv),
               "quick": args.quick, "reps": reps, "copy_gbps": copy_gbps,
               "hyper": {"lr": LR, "momentum": MOMENTUM, "wd": WD, "lamda": LAMDA},
               "results": results, "targets": trows}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
        log(f"compare_cuda.py: JSON written to {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
