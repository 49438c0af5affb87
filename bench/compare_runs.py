#!/usr/bin/env python3
"""compare_runs.py — compare Google Benchmark JSON outputs of the fusedopt bench binaries.

    # two runs (e.g. two commits), same binary:
    python3 bench/compare_runs.py before.json after.json
    # two capabilities inside one run (names end in /<capability>):
    python3 bench/compare_runs.py run.json --caps baseline avx2
    # one run as a table (medians when repetitions exist):
    python3 bench/compare_runs.py run.json

Rows are matched by name (the capability suffix removed for --caps). With --benchmark_repetitions the
median aggregate is used, otherwise the single iteration row. Printed: real time of each side, the
ratio B/A (< 1: B is faster) and B's GBps and x_floor counters. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def load(path: str) -> dict[str, dict[str, Any]]:
    """name -> row (median aggregate when repetitions exist). '/real_time' is dropped from names."""
    with open(path) as f:
        doc = json.load(f)
    rows: dict[str, dict[str, Any]] = {}
    medians: dict[str, dict[str, Any]] = {}
    for b in doc.get("benchmarks", []):
        if b.get("error_occurred"):
            continue
        name = b.get("run_name", b["name"]).replace("/real_time", "")
        if b.get("run_type") == "aggregate":
            if b.get("aggregate_name") == "median":
                medians[name] = b
        else:
            rows.setdefault(name, b)
    rows.update(medians)
    return rows


def seconds(row: dict[str, Any]) -> float:
    scale = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[row.get("time_unit", "ns")]
    return float(row["real_time"]) * scale


def fmt(s: float) -> str:
    return f"{s * 1e6:10.2f} us" if s < 1e-3 else f"{s * 1e3:10.3f} ms"


def report(pairs: list[tuple[str, dict[str, Any], dict[str, Any]]], a_label: str, b_label: str) -> None:
    w = max([len(p[0]) for p in pairs] + [10])
    print(f"{'benchmark':{w}s} {a_label:>13s} {b_label:>13s} {'B/A':>7s} {'B GBps':>8s} {'B x_floor':>9s}")
    for name, a, b in pairs:
        ta, tb = seconds(a), seconds(b)
        print(f"{name:{w}s} {fmt(ta)} {fmt(tb)} {tb / ta:7.3f} {b.get('GBps', float('nan')):8.2f} "
              f"{b.get('x_floor', float('nan')):9.3f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a", help="benchmark JSON (--benchmark_out=<file> --benchmark_out_format=json)")
    ap.add_argument("b", nargs="?", help="second JSON to compare against the first")
    ap.add_argument("--caps", nargs=2, metavar=("CAP_A", "CAP_B"), help="compare two capabilities of one run")
    args = ap.parse_args()
    a = load(args.a)
    if args.caps:
        ca, cb = args.caps
        pairs = []
        for name, row in a.items():
            if name.endswith("/" + ca):
                base = name[: -len(ca) - 1]
                other = a.get(base + "/" + cb)
                if other is not None:
                    pairs.append((base, row, other))
        report(pairs, ca, cb)
    elif not args.b:
        w = max([len(n) for n in a] + [10])
        print(f"{'benchmark':{w}s} {'time':>13s} {'GBps':>8s} {'x_floor':>8s}")
        for name in sorted(a):
            r = a[name]
            print(f"{name:{w}s} {fmt(seconds(r))} {r.get('GBps', float('nan')):8.2f} "
                  f"{r.get('x_floor', float('nan')):8.3f}")
    else:
        b = load(args.b)
        report([(n, a[n], b[n]) for n in a if n in b], "A", "B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
