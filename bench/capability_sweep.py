#!/usr/bin/env python3
"""capability_sweep.py — every CPU capability side by side, on the same buffers, for every rule and size.

For each rule and size, the buffers are allocated once with NumPy (its placement: large arrays start
16 bytes past a page) and every peer runs on them, interleaved (round r starts at peer r mod P), after
warm-up. Peers: each CPU capability this CPU supports (``fusedopt.set_cpu_capability`` before each
sample; the sample times k back-to-back calls, k chosen so a sample lasts >= 0.5 ms: short samples
are less often cut by another process on a shared machine) and, for the
float32 ``sgd`` / ``sgd_mom`` rules, ``torch._fused_sgd_`` (``torch_raw``) and
``torch.optim.SGD(fused=True).step()`` (``torch_fused``) on the same memory.

Reported per cell: the median time of each peer; ``auto/best`` = the median over rounds of the paired
ratio (the automatically chosen capability / the capability with the lowest median), with its spread
(min-max over rounds) and the ratio of the two peers' lower-quartile times (robust when other
processes preempt some samples); the same for ``avx2/best`` among the capabilities a CPU without AVX-512 has
(baseline, avx2: a proxy measured on this CPU, not a measurement of such a host); and ``auto/torch``.
The automatic choice is ``fusedopt.cpu_capability()`` at import, so ``FUSEDOPT_CPU_CAPABILITY`` must
be unset.

Usage:
    OMP_NUM_THREADS=1 python3 bench/capability_sweep.py [--rules REGEX] [--sizes 32K,1M,64M]
                                                        [--rounds 21] [--caps avx2,avx512] [--json out.json]
``--json`` merges into an existing file (cells keyed by rule and size), so a long sweep can be run in
parts of a few minutes each. Every size of every rule takes about 1-3 s at 1 thread.
``--summary FILE`` prints the cells of a JSON file as Markdown tables (auto/best, avx2/best without
AVX-512, and auto against torch) and exits.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
K = 1 << 10
DEFAULT_SIZES = "32K,128K,512K,1M,4M,16M,64M"
LR, MU, WD, LAMDA = 1e-3, 0.9, 1e-4, 0.04


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_size(s: str) -> int:
    s = s.strip().upper()
    mult = {"K": K, "M": K * K}.get(s[-1], 1)
    return int(s[:-1] if s[-1] in "KM" else s) * mult


def size_label(n: int) -> str:
    return f"{n // (K * K)}M" if n % (K * K) == 0 else (f"{n // K}K" if n % K == 0 else str(n))


class Cell:
    """One rule at one size: step functions per peer on shared buffers."""

    def __init__(self) -> None:
        self.fused: Callable[[], Any] | None = None  # the fusedopt call (capability set by the timer)
        self.peers: dict[str, Callable[[], Any]] = {}  # non-fusedopt peers
        self.keep: list[Any] = []


def filled(np: Any, rng: Any, n: int, lo: float, hi: float, dtype: Any) -> Any:
    block = rng.random(min(n, 1 << 20), dtype=np.float32) * np.float32(hi - lo) + np.float32(lo)
    out = np.empty(n, dtype=dtype)
    for k in range(0, n, block.size):
        seg = out[k:k + block.size]
        seg[...] = block[:seg.size].astype(dtype)
    return out


def list_sizes(n: int) -> list[int]:
    """n elements as 16 tensors of unequal, mostly odd lengths (a model's list is never uniform)."""
    parts = [max(1, n // 16 + (k - 8) * 37) for k in range(15)]
    parts.append(max(1, n - sum(parts)))
    return parts


def build(rule: str, n: int, np: Any, fo: Any, torch: Any, bf16: Any, rng: Any) -> Cell:
    c = Cell()
    base, dt = rule.split("/")
    wdt = {"f32": np.float32, "f64": np.float64, "f16": np.float16, "bf16": bf16}[dt]
    kw = dict(lr=LR, wd=WD)

    def arrs(count: int, size: int, dtype: Any = None) -> list[Any]:
        spec = [(-1, 1), (-0.1, 0.1), (-0.01, 0.01), (-1, 1)]
        return [filled(np, rng, size, *spec[i], dtype if dtype is not None and i != 1 else
                       (wdt if dtype is None else dtype)) for i in range(count)]

    if base.startswith("rsp_"):  # row-sparse sgd_mom, rows of 256, 2 % of the rows in the gradient
        cols = 256
        rows = max(1, n // cols)
        k = max(1, rows * 2 // 100)
        w = filled(np, rng, rows * cols, -1, 1, wdt).reshape(rows, cols)
        m = filled(np, rng, rows * cols, -0.01, 0.01, wdt).reshape(rows, cols)
        data = filled(np, rng, k * cols, -0.1, 0.1, wdt).reshape(k, cols)
        idx = np.sort(np.random.default_rng(42).permutation(rows)[:k]).astype(np.int64)
        g = fo.row_sparse_array((data, idx), (rows, cols))
        lazy = base == "rsp_lazy_sgd_mom"
        c.fused = lambda: fo.sgd_mom_update(w, g, m, momentum=MU, lazy_update=lazy, **kw)
        c.keep += [w, m, data, idx, g]
        return c
    if base.startswith("multi_"):
        sizes = list_sizes(n)
        mp = "mp_" in base
        ws = [filled(np, rng, s, -1, 1, wdt) for s in sizes]
        gs = [filled(np, rng, s, -0.1, 0.1, wdt) for s in sizes]
        ms = [filled(np, rng, s, -0.01, 0.01, np.float32 if mp else wdt) for s in sizes]
        w32 = [w.astype(np.float32) for w in ws] if mp else []
        lrs, wds = [LR] * len(sizes), [WD] * len(sizes)
        if mp:
            flat = [a for q in zip(ws, gs, ms, w32) for a in q]
            c.fused = lambda: fo.multi_mp_sgd_mom_update(flat, lrs=lrs, wds=wds, momentum=MU)
        else:
            flat = [a for q in zip(ws, gs, ms) for a in q]
            c.fused = lambda: fo.multi_sgd_mom_update(flat, lrs=lrs, wds=wds, momentum=MU)
        c.keep += [ws, gs, ms, w32]
        return c
    mp = base.startswith("mp_")
    w = filled(np, rng, n, -1, 1, wdt)
    g = filled(np, rng, n, -0.1, 0.1, wdt)
    sdt = np.float32 if mp else wdt
    m = filled(np, rng, n, -0.01, 0.01, sdt) if "mom" in base else None
    prev = filled(np, rng, n, -1, 1, sdt) if "dcasgd" in base else None
    w32 = w.astype(np.float32) if mp else None
    c.keep += [w, g, m, prev, w32]
    if base == "sgd":
        c.fused = lambda: fo.sgd_update(w, g, **kw)
    elif base == "sgd_mom":
        c.fused = lambda: fo.sgd_mom_update(w, g, m, momentum=MU, **kw)
    elif base == "mp_sgd":
        c.fused = lambda: fo.mp_sgd_update(w, g, w32, **kw)
    elif base == "mp_sgd_mom":
        c.fused = lambda: fo.mp_sgd_mom_update(w, g, m, w32, momentum=MU, **kw)
    elif base == "dcasgd":
        c.fused = lambda: fo.dcasgd_update(w, g, None, prev, lamda=LAMDA, **kw)
    elif base == "dcasgd_mom":
        c.fused = lambda: fo.dcasgd_update(w, g, m, prev, momentum=MU, lamda=LAMDA, **kw)
    elif base == "mp_dcasgd_mom":
        c.fused = lambda: fo.mp_dcasgd_update(w, g, m, prev, w32, momentum=MU, lamda=LAMDA, **kw)
    else:
        raise ValueError(f"unknown rule {rule}")
    if torch is not None and dt == "f32" and base in ("sgd", "sgd_mom"):
        mom = base == "sgd_mom"
        tw, tg = torch.from_numpy(w), torch.from_numpy(g)
        tm = [torch.from_numpy(m)] if mom else []
        tkw = dict(weight_decay=WD, momentum=MU if mom else 0.0, lr=LR, dampening=0.0, nesterov=False,
                   maximize=False, is_first_step=False)
        c.peers["torch_raw"] = lambda: torch._fused_sgd_([tw], [tg], tm, **tkw)
        p = torch.nn.Parameter(tw)
        p.grad = tg
        opt = torch.optim.SGD([p], lr=LR, momentum=MU if mom else 0.0, weight_decay=WD, fused=True)
        if mom:
            opt.state[p]["momentum_buffer"] = tm[0]
        c.peers["torch_fused"] = opt.step
        c.keep += [tw, tg, tm, p, opt]
    return c


def time_cell(fo: Any, cell: Cell, caps: list[str], rounds: int) -> dict[str, list[float]]:
    names = list(caps) + list(cell.peers)

    def runner(name: str) -> Callable[[int], float]:
        fn = cell.peers.get(name)
        if fn is None:
            fused = cell.fused

            def run(k: int) -> float:
                fo.set_cpu_capability(name)
                t0 = time.perf_counter()
                for _ in range(k):
                    fused()
                return (time.perf_counter() - t0) / k
        else:
            def run(k: int) -> float:
                t0 = time.perf_counter()
                for _ in range(k):
                    fn()
                return (time.perf_counter() - t0) / k
        return run

    runs = {nm: runner(nm) for nm in names}
    ks: dict[str, int] = {}
    for nm in names:
        runs[nm](1)
        one = runs[nm](2)
        ks[nm] = max(1, min(2000, math.ceil(0.0005 / max(one, 1e-7))))
        runs[nm](min(ks[nm], 20))
    samples: dict[str, list[float]] = {nm: [] for nm in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for nm in order:
            samples[nm].append(runs[nm](ks[nm]))
    return samples


def quartile1(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=4)[0] if len(xs) > 1 else xs[0]


def paired(a: list[float], b: list[float]) -> dict[str, float]:
    """Median of the per-round ratios a/b with their min-max, and the ratio of the lower quartiles."""
    rs = sorted(x / y for x, y in zip(a, b))
    return {"median": statistics.median(rs), "min": rs[0], "max": rs[-1],
            "q1": quartile1(a) / quartile1(b)}


def summarize(samples: dict[str, list[float]], caps: list[str], auto: str) -> dict[str, Any]:
    med = {nm: statistics.median(s) for nm, s in samples.items()}
    q1 = {nm: quartile1(s) for nm, s in samples.items()}
    best = min(caps, key=lambda c: med[c])
    out: dict[str, Any] = {"median_s": med, "q1_s": q1, "best": best,
                           "auto_over_best": paired(samples[auto], samples[best])}
    no512 = [c for c in caps if c != "avx512"]
    if "avx2" in no512 and "baseline" in no512:
        best2 = min(no512, key=lambda c: med[c])
        out["best_without_avx512"] = best2
        out["avx2_over_best_without_avx512"] = paired(samples["avx2"], samples[best2])
    for c in caps:
        out[f"{c}_over_best"] = paired(samples[c], samples[best])
    for peer in ("torch_raw", "torch_fused"):
        if peer in samples:
            out[f"auto_over_{peer}"] = paired(samples[auto], samples[peer])
            if "avx2" in caps:
                out[f"avx2_over_{peer}"] = paired(samples["avx2"], samples[peer])
    out["samples_s"] = samples
    return out


def machine_meta(np: Any, fo: Any, torch: Any, auto: str) -> dict[str, Any]:
    model = platform.processor()
    flags: list[str] = []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model in ("", "x86_64"):
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip() != ""
    except OSError:
        commit, dirty = "?", False
    return {"cpu": model, "avx512_flags": sorted(f for f in flags if f.startswith("avx512")),
            "nproc": os.cpu_count(), "threads": fo._core.cpu_num_threads(), "auto": auto,
            "capabilities": fo.supported_cpu_capabilities(), "commit": commit + ("+dirty" if dirty else ""),
            "fusedopt": os.path.dirname(fo.__file__), "numpy": np.__version__,
            "torch": torch.__version__ if torch is not None else None, "python": sys.version.split()[0]}


ALL_RULES = ("sgd/f32", "sgd_mom/f32", "sgd/f64", "sgd_mom/f16", "mp_sgd/f16", "mp_sgd/bf16",
             "mp_sgd_mom/f16", "mp_sgd_mom/bf16", "dcasgd/f32", "dcasgd_mom/f32", "mp_dcasgd_mom/f16",
             "multi_sgd_mom/f32", "multi_mp_sgd_mom/bf16", "rsp_lazy_sgd_mom/f32", "rsp_std_sgd_mom/f32")


def dump_compact(data: dict[str, Any]) -> str:
    def rounded(x: Any) -> Any:
        if isinstance(x, float):
            return float(f"{x:.4g}") if abs(x) >= 1e-3 else round(x, 8)
        if isinstance(x, dict):
            return {k: rounded(v) for k, v in x.items()}
        if isinstance(x, list):
            return [rounded(v) for v in x]
        return x

    lines = ['{"runs": [']
    lines.append(",\n".join(json.dumps(r) for r in data["runs"]))
    lines.append('], "cells": {')
    lines.append(",\n".join(f"{json.dumps(k)}: {json.dumps(rounded(v), separators=(',', ':'))}"
                            for k, v in data["cells"].items()))
    lines.append("}}\n")
    return "\n".join(lines)


def print_summary(path: str) -> None:
    with open(path) as f:
        data = json.load(f)
    cells = data["cells"]
    sizes = sorted({c[0]["size"] for c in cells.values()})
    rules = [r for r in ALL_RULES if any(c[0]["rule"] == r for c in cells.values())]

    def lower_quartile_ratio(c: dict[str, Any], peer: str, others: list[str]) -> float | None:
        q = c["q1_s"]
        pool = [p for p in others if p in q]
        return q[peer] / min(q[p] for p in pool) if peer in q and pool else None

    def get(c: dict[str, Any], key: str) -> float | None:
        """A ratio of one run's cell: "key" (paired median) or "q1:<peer>:<others>" (lower quartiles)."""
        if key.startswith("q1:"):
            _, peer, others = key.split(":")
            if peer == "auto":
                peer = data["runs"][c["run"]]["auto"]
            pool = [p for p in c["q1_s"] if p not in ("torch_raw", "torch_fused")] if others == "caps" \
                else others.split(",")
            if others == "no512" and "baseline" not in c["q1_s"]:
                return None
            if others == "no512":
                pool = ["baseline", "avx2"]
            return lower_quartile_ratio(c, peer, pool)
        return c[key]["median"] if key in c else None

    def table(title: str, key: str, rows: list[str]) -> None:
        print(f"\n{title}\n\n| rule | " + " | ".join(size_label(n) for n in sizes) + " | worst |")
        print("|---" * (len(sizes) + 2) + "|")
        for r in rows:
            vals, worst = [], 0.0
            for n in sizes:
                runs = [x for x in (get(c, key) for c in cells.get(f"{r}/{size_label(n)}", [])) if x is not None]
                if not runs:
                    vals.append("")
                    continue
                med = statistics.median(runs)
                worst = max(worst, med)
                spread = f" [{min(runs):.2f}-{max(runs):.2f}]" if len(runs) > 1 else ""
                vals.append(f"{med:.3f}{spread}")
            print(f"| {r} | " + " | ".join(vals) + f" | {worst:.3f} |")

    print("Each cell: median over runs of one run's ratio, [min-max over runs] when there are several; "
          "worst = the largest over sizes. 'paired' = the median of the per-round paired ratios; "
          "'lower quartile' = the ratio of the lower-quartile times (robust when other processes "
          "preempt more than half of the samples).")
    table("auto / fastest capability, paired", "auto_over_best", rules)
    table("auto / fastest capability, lower quartile", "q1:auto:caps", rules)
    table("avx2 / fastest of baseline and avx2 (what a CPU without AVX-512 chooses among; proxy measured "
          "on this CPU), paired", "avx2_over_best_without_avx512", rules)
    table("the same, lower quartile", "q1:avx2:no512", rules)
    tr = [r for r in rules if r in ("sgd/f32", "sgd_mom/f32")]
    table("auto / torch._fused_sgd_ (same buffers), paired", "auto_over_torch_raw", tr)
    table("the same, lower quartile", "q1:auto:torch_raw", tr)
    table("auto / torch.optim.SGD(fused=True).step() (same buffers), paired", "auto_over_torch_fused", tr)
    table("the same, lower quartile", "q1:auto:torch_fused", tr)
    for i, m in enumerate(data["runs"]):
        print(f"\nrun {i}: {m['date']}, {m['cpu']}, commit {m['commit']}, auto {m['auto']}, caps "
              f"{m['capabilities']}, {m['threads']} thread(s), {m['rounds']} rounds, load "
              f"{m['loadavg_before'][0]:.2f} -> {m['loadavg_after'][0]:.2f}")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--summary":
        print_summary(sys.argv[2])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rules", default="", help="regex over rule names " + ", ".join(ALL_RULES))
    ap.add_argument("--sizes", default=DEFAULT_SIZES, help=f"elements, K/M suffixes (default {DEFAULT_SIZES})")
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--caps", default="", help="comma-separated subset of the supported capabilities "
                    "(default all; the automatic choice is always included)")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--json", help="write (merge) results here")
    args = ap.parse_args()
    if os.environ.get("FUSEDOPT_CPU_CAPABILITY"):
        sys.exit("capability_sweep.py: unset FUSEDOPT_CPU_CAPABILITY (the automatic choice is what is measured)")
    torch = None
    if not args.no_torch:
        try:
            import torch  # first: fusedopt then shares torch's libgomp
        except ImportError:
            log("capability_sweep.py: torch not importable; torch peers skipped")
    import numpy as np

    import fusedopt as fo

    if torch is not None:
        torch.set_num_threads(fo._core.cpu_num_threads())
    try:
        import ml_dtypes

        bf16 = ml_dtypes.bfloat16
    except ImportError:
        bf16 = None
    auto = fo.cpu_capability()
    caps = fo.supported_cpu_capabilities()
    if args.caps:
        caps = [c for c in caps if c in args.caps.split(",") or c == auto]
    rx = re.compile(args.rules)
    rules = [r for r in ALL_RULES if rx.search(r) and (bf16 is not None or "bf16" not in r)]
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    meta = machine_meta(np, fo, torch, auto)
    meta["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta["loadavg_before"] = os.getloadavg()
    meta["rounds"] = args.rounds
    log(f"capability_sweep.py: {meta['cpu']}, capabilities {caps}, automatic choice {auto}, "
        f"{meta['threads']} thread(s), load {meta['loadavg_before'][0]:.2f}")
    rng = np.random.default_rng(7)
    cells: dict[str, Any] = {}
    print(f"{'rule':24} {'size':>5}  {'best':>8} {'auto/best':>18} {'avx2/best(no512)':>18}  "
          + "  ".join(f"{c:>9}" for c in caps) + "  auto/torch_raw  auto/torch_fused (median, q: lower-quartile ratio)")
    for rule in rules:
        for n in sizes:
            cell = build(rule, n, np, fo, torch, bf16, rng)
            s = summarize(time_cell(fo, cell, caps, args.rounds), caps, auto)
            fo.set_cpu_capability(auto)
            key = f"{rule}/{size_label(n)}"
            s.update(rule=rule, size=n)
            cells[key] = s

            def fmt(p: dict[str, float] | None) -> str:
                return f"{p['median']:.3f} q{p['q1']:.3f}" if p else "-"

            tr = s.get("auto_over_torch_raw")
            tf = s.get("auto_over_torch_fused")
            print(f"{rule:24} {size_label(n):>5}  {s['best']:>8} {fmt(s['auto_over_best']):>18} "
                  f"{fmt(s.get('avx2_over_best_without_avx512')):>18}  "
                  + "  ".join(f"{s['median_s'][c] * 1e3:9.4f}" for c in caps)
                  + f"  {fmt(tr):>14}  {fmt(tf):>16}", flush=True)
            del cell
    meta["loadavg_after"] = os.getloadavg()
    log(f"capability_sweep.py: load after {meta['loadavg_after'][0]:.2f}")
    if args.json:
        data: dict[str, Any] = {"runs": [], "cells": {}}
        if os.path.exists(args.json):
            with open(args.json) as f:
                data = json.load(f)
        run_id = len(data["runs"])
        data["runs"].append(meta)
        for key, s in cells.items():
            s["run"] = run_id
            data["cells"].setdefault(key, []).append(s)
        with open(args.json, "w") as f:  # one cell per line; samples rounded to 10 ns
            f.write(dump_compact(data))


if __name__ == "__main__":
    main()
