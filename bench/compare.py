#!/usr/bin/env python3
"""compare.py — fusedopt against its peers on the same buffers, interleaved (shared/PERF.md).

For every case the peers run on the very same arrays (``torch.from_numpy`` and MXNet's zero-copy
``from_numpy`` share memory), interleaved A B C, B C A, ... after warm-up; the reported time is the
median of the samples and the ratio ``fusedopt / peer`` is the median of the per-round paired ratios
(< 1: fusedopt is faster). Each thread count runs in its own subprocess with ``OMP_NUM_THREADS`` set
(fusedopt and PyTorch then share one libgomp: torch is imported first). MXNet 1.9.1 needs
``numpy<1.24`` and so runs in its own virtualenv (``--mxnet-python``), in a third subprocess that times
fusedopt and MXNet there, again on shared buffers.

Peers: ``torch_fused`` = ``torch.optim.SGD(fused=True).step()``; ``torch_raw`` = ``torch._fused_sgd_``;
``numpy`` = in-place ufuncs with ``out=`` and one scratch array; ``c_loop`` = a plain fused OpenMP loop
compiled here (``cc -O3 -march=native -fopenmp``), PERF.md's "plain fused C loop"; ``mxnet`` = the
MXNet 1.9.1 operator (per tensor; its DCASGD is its Python optimizer's NDArray expression).

Floor: ``x floor = time / (minimal bytes / measured bandwidth)``, with the bandwidth of a plain in-place
loop over 3 and over 4 arrays (the C helper; 16 Mi floats per array, median of 5, best of 3 fresh
allocations), the larger of the two, measured in each worker at its thread count. Minimal bytes per element as PERF.md: sgd 12,
sgd_mom 20, mp_sgd_mom 22, DCASGD with momentum 28; row-sparse: 20 × touched elements + 8 × rows.

Usage:
    python3 bench/compare.py [--quick] [--threads 1,2] [--json out.json] [--plot out.png]
                             [--cases REGEX] [--reps N] [--mxnet-python PATH | --no-mxnet]
``--quick`` (small sizes, 3 rounds) finishes in well under a minute; the full run takes minutes.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import gc
import hashlib
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MI = 1 << 20
DEFAULT_MXNET_PY = "/tmp/mxvenv/bin/python"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# The C helper: floor streams, the plain fused loop, LLC flush

C_SRC = r"""
#include <stdint.h>
void stream3(float* restrict a, const float* restrict b, float* restrict c, int64_t n) {
  const float s = 0.999f, t = 1e-3f;
  #pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) { float ai = a[i] * s + b[i] * t; a[i] = ai; c[i] = c[i] * s + ai * t; }
}
void stream4(float* restrict a, const float* restrict b, float* restrict c, float* restrict d, int64_t n) {
  const float s = 0.999f, t = 1e-3f;
  #pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    float ai = a[i] * s + b[i] * t; c[i] = c[i] * s + (ai - d[i]) * t; d[i] = a[i]; a[i] = ai;
  }
}
void sgd_mom(float* restrict w, const float* restrict g, float* restrict m, int64_t n, float lr, float mu,
             float wd) {
  #pragma omp parallel for schedule(static) if (n >= 65536)
  for (int64_t i = 0; i < n; ++i) { float r = g[i] + wd * w[i]; float mi = mu * m[i] - lr * r; m[i] = mi; w[i] += mi; }
}
unsigned touch(const unsigned char* p, int64_t bytes) {
  unsigned s = 0;
  for (int64_t i = 0; i < bytes; i += 64) s += p[i];
  return s;
}
"""


def build_c_helper() -> Any:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        return None
    tag = hashlib.sha1((C_SRC + cc).encode()).hexdigest()[:12]
    so = os.path.join(tempfile.gettempdir(), f"fusedopt_bench_cloop_{tag}_{os.getuid()}.so")
    if not os.path.exists(so):
        src = so[:-3] + ".c"
        with open(src, "w") as f:
            f.write(C_SRC)
        tmp = so + f".{os.getpid()}"
        cmd = [cc, "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-o", tmp, src]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            log(f"compare.py: C helper did not compile ({' '.join(cmd)}): {r.stderr.strip()[:300]}")
            return None
        os.replace(tmp, so)
    lib = ctypes.CDLL(so)
    P, I, F = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
    lib.stream3.argtypes = [P, P, P, I]
    lib.stream4.argtypes = [P, P, P, P, I]
    lib.sgd_mom.argtypes = [P, P, P, I, F, F, F]
    lib.touch.argtypes = [P, I]
    lib.touch.restype = ctypes.c_uint
    return lib


# ------------------------------------------------------------------------------------------------
# Worker: one process, one thread count, one set of peers


class Env:
    """What one worker can use."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick = args.quick
        self.threads = args.worker_threads
        self.torch = None
        self.mx = None
        want = set(args.peers.split(","))
        if "torch" in want:
            try:
                import torch  # noqa: F401  (first: fusedopt then shares torch's libgomp)

                torch.set_num_threads(self.threads)
                self.torch = torch
            except ImportError:
                log("compare.py: torch not importable; torch peers skipped")
        if "mxnet" in want:
            import mxnet  # the mxnet worker exists only when this import works

            self.mx = mxnet
        import numpy as np

        self.np = np
        try:
            import ml_dtypes

            self.bf16 = ml_dtypes.bfloat16
        except ImportError:
            self.bf16 = None
        import fusedopt

        self.fo = fusedopt
        self.use_numpy = "numpy" in want
        self.use_c = "c" in want
        self.c = build_c_helper()
        self.lr, self.mu, self.wd, self.lamda = args.lr, args.momentum, args.wd, 0.04
        self.rng = np.random.default_rng(12345)
        self.flush_buf = np.ones(64 * MI, dtype=np.uint8)

    # -- arrays ----------------------------------------------------------------------------------
    def filled(self, n: int, lo: float, hi: float, dtype: Any = None) -> Any:
        """n values in [lo, hi): a random 1 Mi block tiled (fast for 100 M elements)."""
        np = self.np
        block = self.rng.random(min(n, MI), dtype=np.float32) * np.float32(hi - lo) + np.float32(lo)
        out = np.empty(n, dtype=np.float32 if dtype is None else dtype)
        reps = -(-n // block.size)
        for k in range(reps):
            seg = out[k * block.size:(k + 1) * block.size]
            seg[...] = block[:seg.size].astype(out.dtype) if out.dtype != np.float32 else block[:seg.size]
        return out

    def flush(self) -> None:
        if self.c is not None:
            self.c.touch(self.flush_buf.ctypes.data, self.flush_buf.nbytes)
        else:
            int(self.flush_buf[::64].sum())

    def mx_share(self, a: Any) -> Any:
        """An MXNet NDArray on the memory of NumPy array `a` (which stays writable for fusedopt)."""
        m = self.mx.nd.from_numpy(a, zero_copy=True)
        a.setflags(write=True)
        return m

    # -- floor -----------------------------------------------------------------------------------
    def measure_floor(self) -> dict[str, Any]:
        np = self.np
        n = (8 if self.quick else 16) * MI
        reps = 3 if self.quick else 5
        out: dict[str, Any] = {}
        if self.c is not None:
            # Bandwidth depends on where an allocation lands (±15 % here): the best median over 3 fresh
            # allocations is the floor (what a plain loop reaches; x floor errs on the strict side).
            for _alloc in range(1 if self.quick else 3):
                arrs = [self.filled(n, -1, 1) for _ in range(4)]
                ptr = [a.ctypes.data for a in arrs]
                for name, fn, bpe in (("inplace3", lambda: self.c.stream3(ptr[0], ptr[1], ptr[2], n), 20),
                                      ("inplace4", lambda: self.c.stream4(ptr[0], ptr[1], ptr[2], ptr[3], n), 28)):
                    fn()
                    fn()
                    ts = []
                    for _ in range(reps):
                        t0 = time.perf_counter()
                        fn()
                        ts.append(time.perf_counter() - t0)
                    out[name] = max(out.get(name, 0.0), bpe * n / statistics.median(ts) / 1e9)
                del arrs
            out["method"] = "C in-place loop over 3 and 4 arrays (OpenMP), best median of 3 allocations"
            out["gbps"] = max(out["inplace3"], out["inplace4"])
        elif self.torch is not None:
            t = self.torch
            a, b, c = (t.from_numpy(self.filled(n, -1, 1)) for _ in range(3))
            ts = []
            for _ in range(reps + 2):
                t0 = time.perf_counter()
                a.addcmul_(b, c, value=1e-3)
                ts.append(time.perf_counter() - t0)
            out["method"] = "torch addcmul_ in place (no C compiler)"
            out["gbps"] = 16 * n / statistics.median(ts[2:]) / 1e9
        else:
            a, b = self.filled(n, -1, 1), self.filled(n, -1, 1)
            ts = []
            for _ in range(reps + 2):
                t0 = time.perf_counter()
                np.add(a, b, out=a)
                ts.append(time.perf_counter() - t0)
            out["method"] = "numpy add out= (no C compiler, no torch)"
            out["gbps"] = 12 * n / statistics.median(ts[2:]) / 1e9
        return out


class Case:
    """A built case: peers (name -> step function) on shared buffers and the minimal bytes."""

    def __init__(self, name: str, rule: str, dtype: str, size: str, elems: int, min_bytes: float,
                 mode: str, group: str) -> None:
        self.name, self.rule, self.dtype, self.size = name, rule, dtype, size
        self.elems, self.min_bytes, self.mode, self.group = elems, min_bytes, mode, group
        self.peers: OrderedDict[str, Callable[[], Any]] = OrderedDict()
        self.keep: list[Any] = []  # buffers that must outlive the peers

    def add(self, name: str, fn: Callable[[], Any]) -> None:
        self.peers[name] = fn


def shapes_list(key: str) -> list[list[int]]:
    path = os.environ.get("FUSEDOPT_PARAM_SHAPES", os.path.join(HERE, "param_shapes.json"))
    with open(path) as f:
        return json.load(f)[key]


def numel(shape: list[int]) -> int:
    return math.prod(shape) if shape else 1


# -- builders -------------------------------------------------------------------------------------


def build_dense(env: Env, rule: str, shapes: list[list[int]], label: str, mode: str, group: str,
                dtype: str = "f32") -> Case:
    """sgd / sgd_mom (f32) and mp_sgd_mom (f16/bf16) on one tensor or a list of tensors."""
    np, fo, t, mx = env.np, env.fo, env.torch, env.mx
    lr, mu, wd = env.lr, env.mu, env.wd
    mom = rule in ("sgd_mom", "mp_sgd_mom")
    mp = rule.startswith("mp_")
    bpe = {"sgd": 12, "sgd_mom": 20, "mp_sgd": 14, "mp_sgd_mom": 22}[rule]
    elems = sum(numel(s) for s in shapes)
    prefix = "sweep/" if group == "sweep" else ""
    case = Case(f"{prefix}{rule}/{dtype}/{label}", rule, dtype, label, elems, bpe * elems, mode, group)
    wdt = {"f32": np.float32, "f16": np.float16, "bf16": env.bf16}[dtype]
    if wdt is None:
        raise RuntimeError("bfloat16 needs ml_dtypes")
    ws = [env.filled(numel(s), -1, 1, wdt).reshape(s) for s in shapes]
    gs = [env.filled(numel(s), -0.1, 0.1, wdt).reshape(s) for s in shapes]
    ms = [env.filled(numel(s), -0.01, 0.01).reshape(s) for s in shapes] if mom else []
    w32 = [w.astype(np.float32) for w in ws] if mp else []
    case.keep += [ws, gs, ms, w32]
    n = len(shapes)
    single = n == 1
    lrs, wds = [lr] * n, [wd] * n

    # fusedopt: one call (the aggregated operator for a list)
    if rule == "sgd":
        if single:
            case.add("fusedopt", lambda: fo.sgd_update(ws[0], gs[0], lr=lr, wd=wd))
        else:
            flat = [a for pair in zip(ws, gs) for a in pair]
            case.add("fusedopt", lambda: fo.multi_sgd_update(flat, lrs=lrs, wds=wds))
    elif rule == "sgd_mom":
        if single:
            case.add("fusedopt", lambda: fo.sgd_mom_update(ws[0], gs[0], ms[0], lr=lr, momentum=mu, wd=wd))
        else:
            flat = [a for tr in zip(ws, gs, ms) for a in tr]
            case.add("fusedopt", lambda: fo.multi_sgd_mom_update(flat, lrs=lrs, wds=wds, momentum=mu))
    elif rule == "mp_sgd_mom":
        if single:
            case.add("fusedopt", lambda: fo.mp_sgd_mom_update(ws[0], gs[0], ms[0], w32[0], lr=lr,
                                                              momentum=mu, wd=wd))
        else:
            flat = [a for q in zip(ws, gs, ms, w32) for a in q]
            case.add("fusedopt", lambda: fo.multi_mp_sgd_mom_update(flat, lrs=lrs, wds=wds, momentum=mu))
    if not single and rule in ("sgd", "sgd_mom"):
        opt = fo.SGD(learning_rate=lr, momentum=mu if mom else 0.0, wd=wd, aggregate_num=math.inf)
        idx = list(range(n))
        states = ms if mom else [None] * n
        case.add("fusedopt_SGD.update", lambda: opt.update(idx, ws, gs, states))
        if hasattr(opt, "prepare"):
            prep = opt.prepare(idx, ws, gs, states)
            case.add("fusedopt_prepared", prep.step)

    if t is not None and dtype == "f32":
        params = [t.nn.Parameter(t.from_numpy(w)) for w in ws]
        for p, g in zip(params, gs):
            p.grad = t.from_numpy(g)
        topt = t.optim.SGD(params, lr=lr, momentum=mu if mom else 0.0, weight_decay=wd, fused=True)
        for p, m in zip(params, ms):
            topt.state[p]["momentum_buffer"] = t.from_numpy(m)
        case.add("torch_fused", topt.step)
        tw = [t.from_numpy(w) for w in ws]
        tg = [t.from_numpy(g) for g in gs]
        tm = [t.from_numpy(m) for m in ms]
        if hasattr(t, "_fused_sgd_"):
            kw = dict(weight_decay=wd, momentum=mu if mom else 0.0, lr=lr, dampening=0.0, nesterov=False,
                      maximize=False, is_first_step=False)
            case.add("torch_raw", lambda: t._fused_sgd_(tw, tg, tm, **kw))
        case.keep += [params, topt, tw, tg, tm]

    if env.use_numpy:
        big = max(numel(s) for s in shapes)
        tmp = np.empty(big, dtype=np.float32)
        case.keep.append(tmp)

        def np_step() -> None:
            for k in range(n):
                w, g = ws[k].reshape(-1), gs[k].reshape(-1)
                s = tmp[:w.size]
                if rule == "sgd":
                    if wd:
                        w *= np.float32(1 - lr * wd)
                    np.multiply(g, np.float32(lr), out=s)
                    np.subtract(w, s, out=w)
                    continue
                m = ms[k].reshape(-1)
                tgt = w32[k].reshape(-1) if mp else w
                m *= np.float32(mu)
                np.multiply(g, np.float32(lr), out=s, casting="unsafe")
                m -= s
                if wd:
                    np.multiply(tgt, np.float32(lr * wd), out=s)
                    m -= s
                tgt += m
                if mp:
                    np.copyto(w, tgt, casting="unsafe")

        case.add("numpy", np_step)

    if env.use_c and env.c is not None and rule == "sgd_mom" and single and dtype == "f32":
        pw, pg, pm = ws[0].ctypes.data, gs[0].ctypes.data, ms[0].ctypes.data
        ne = ws[0].size
        case.add("c_loop", lambda: env.c.sgd_mom(pw, pg, pm, ne, lr, mu, wd))

    if mx is not None and dtype in ("f32", "f16"):
        mw = [env.mx_share(w) for w in ws]
        mg = [env.mx_share(g) for g in gs]
        mm = [env.mx_share(m) for m in ms]
        m32 = [env.mx_share(a) for a in w32]
        case.keep += [mw, mg, mm, m32]
        nd = mx.nd

        def mx_step() -> None:
            for k in range(n):
                if rule == "sgd":
                    nd.sgd_update(mw[k], mg[k], lr=lr, wd=wd, out=mw[k])
                elif rule == "sgd_mom":
                    nd.sgd_mom_update(mw[k], mg[k], mm[k], lr=lr, momentum=mu, wd=wd, out=mw[k])
                else:
                    nd.mp_sgd_mom_update(mw[k], mg[k], mm[k], m32[k], lr=lr, momentum=mu, wd=wd, out=mw[k])
            nd.waitall()

        case.add("mxnet", mx_step)
    return case


def build_dcasgd(env: Env, shapes: list[list[int]], label: str, group: str) -> Case:
    np, fo, mx = env.np, env.fo, env.mx
    lr, mu, wd, lam = env.lr, env.mu, env.wd, env.lamda
    elems = sum(numel(s) for s in shapes)
    case = Case(f"dcasgd_mom/f32/{label}", "dcasgd_mom", "f32", label, elems, 28 * elems, "hot", group)
    ws = [env.filled(numel(s), -1, 1).reshape(s) for s in shapes]
    gs = [env.filled(numel(s), -0.1, 0.1).reshape(s) for s in shapes]
    ms = [env.filled(numel(s), -0.01, 0.01).reshape(s) for s in shapes]
    ps = [env.filled(numel(s), -1, 1).reshape(s) for s in shapes]
    case.keep += [ws, gs, ms, ps]
    n = len(shapes)

    def fo_step() -> None:
        for k in range(n):
            fo.dcasgd_update(ws[k], gs[k], ms[k], ps[k], lr=lr, momentum=mu, lamda=lam, wd=wd)

    case.add("fusedopt", fo_step)
    if n > 1:
        # use_fused_step=True: DCASGD's default (as in MXNet 2.0) is the NumPy reference step
        opt = fo.DCASGD(learning_rate=lr, momentum=mu, lamda=lam, wd=wd, use_fused_step=True)
        idx = list(range(n))
        states = list(zip(ms, ps))
        case.add("fusedopt_DCASGD.update", lambda: opt.update(idx, ws, gs, states))
        if hasattr(opt, "prepare"):
            popt = fo.DCASGD(learning_rate=lr, momentum=mu, lamda=lam, wd=wd, use_fused_step=True)
            prep = popt.prepare(idx, ws, gs, states)
            case.add("fusedopt_prepared", prep.step)

    if env.use_numpy:
        tmp = np.empty(max(numel(s) for s in shapes), dtype=np.float32)
        tmp2 = np.empty_like(tmp)
        case.keep += [tmp, tmp2]

        def np_step() -> None:
            for k in range(n):
                w, g, m, p = (a.reshape(-1) for a in (ws[k], gs[k], ms[k], ps[k]))
                r, d = tmp[:w.size], tmp2[:w.size]
                if wd:
                    np.multiply(w, np.float32(wd), out=r)
                    r += g
                else:
                    r = g
                np.subtract(w, p, out=d)  # d = r + lamda * r * r * (w - prev)
                d *= r
                d *= r
                d *= np.float32(lam)
                d += r
                m *= np.float32(mu)
                d *= np.float32(lr)
                m -= d
                np.copyto(p, w)
                w += m

        case.add("numpy", np_step)

    if mx is not None:
        nd = mx.nd
        mw, mg, mm, mp_ = ([env.mx_share(a) for a in arrs] for arrs in (ws, gs, ms, ps))
        case.keep += [mw, mg, mm, mp_]

        def mx_step() -> None:  # mxnet.optimizer.DCASGD.update (1.9.1), rescale 1, no clipping
            for k in range(n):
                w, g, m, p = mw[k], mg[k], mm[k], mp_[k]
                m[:] *= mu
                m[:] += -lr * (g + wd * w + lam * g * g * (w - p))
                p[:] = w
                w[:] += m
            nd.waitall()

        case.add("mxnet", mx_step)
    return case


def build_rsp(env: Env, mode: str, rows: int, group: str) -> Case:
    np, fo, t, mx = env.np, env.fo, env.torch, env.mx
    lr, mu, wd = env.lr, env.mu, env.wd
    cols = 768
    k = rows * 2 // 100
    case = Case(f"rsp_lazy_sgd_mom/f32/{rows}x{cols}/rows{k}/{mode}", "rsp_lazy_sgd_mom", "f32",
                f"{rows}x{cols}", k * cols, 20 * k * cols + 8 * k, mode, group)
    w = env.filled(rows * cols, -1, 1).reshape(rows, cols)
    m = env.filled(rows * cols, -0.01, 0.01).reshape(rows, cols)
    data = env.filled(k * cols, -0.1, 0.1).reshape(k, cols)
    idx = np.random.default_rng(42).permutation(rows)[:k].astype(np.int64)
    rsp = fo.row_sparse_array((data, idx), (rows, cols))
    tmp = np.empty_like(data)
    case.keep += [w, m, data, idx, rsp, tmp]
    case.add("fusedopt", lambda: fo.sgd_mom_update(w, rsp, m, lr=lr, momentum=mu, wd=wd, lazy_update=True))
    if t is not None:
        tw, tm, td, ti = t.from_numpy(w), t.from_numpy(m), t.from_numpy(data), t.from_numpy(idx)
        case.keep += [tw, tm, td, ti]

        def torch_step() -> None:  # the same lazy rule with index ops (torch has no fused sparse SGD)
            mr = tm.index_select(0, ti)
            mr.mul_(mu).sub_(td, alpha=lr)
            if wd:
                mr.sub_(tw.index_select(0, ti), alpha=lr * wd)
            tm.index_copy_(0, ti, mr)
            tw.index_add_(0, ti, mr)

        case.add("torch_index_ops", torch_step)
    if env.use_numpy:
        def np_step() -> None:
            mr = m[idx]
            mr *= np.float32(mu)
            np.multiply(data, np.float32(lr), out=tmp)
            mr -= tmp
            if wd:
                mr -= np.float32(lr * wd) * w[idx]
            m[idx] = mr
            w[idx] += mr

        case.add("numpy", np_step)
    if mx is not None:
        nd = mx.nd
        mw, mm = env.mx_share(w), env.mx_share(m)
        g = nd.sparse.row_sparse_array((nd.array(data), nd.array(idx, dtype="int64")), shape=(rows, cols))
        case.keep += [mw, mm, g]

        def mx_step() -> None:
            nd.sgd_mom_update(mw, g, mm, lr=lr, momentum=mu, wd=wd, lazy_update=True, out=mw)
            nd.waitall()

        case.add("mxnet", mx_step)
    return case


def build_tiny(env: Env, count: int, elems: int, group: str) -> Case:
    """One (count=1) or `count` tiny float32 tensors, sgd_mom: call overhead."""
    np, fo, t, mx = env.np, env.fo, env.torch, env.mx
    lr, mu, wd = env.lr, env.mu, env.wd
    label = f"tiny{count}x{elems}"
    case = Case(f"sgd_mom/f32/{label}", "sgd_mom", "f32", label, count * elems, 20 * count * elems, "hot",
                group)
    ws = [env.filled(elems, -1, 1) for _ in range(count)]
    gs = [env.filled(elems, -0.1, 0.1) for _ in range(count)]
    ms = [env.filled(elems, -0.01, 0.01) for _ in range(count)]
    case.keep += [ws, gs, ms]
    core = fo._core
    if count == 1:
        w, g, m = ws[0], gs[0], ms[0]
        case.add("fusedopt", lambda: fo.sgd_mom_update(w, g, m, lr=lr, momentum=mu, wd=wd))
        case.add("fusedopt._core", lambda: core.sgd_mom_update(w, g, m, lr=lr, momentum=mu, wd=wd))
        opt = fo.SGD(learning_rate=lr, momentum=mu, wd=wd)
        case.add("fusedopt_SGD.update", lambda: opt.update(0, w, g, m))
    else:
        flat = [a for tr in zip(ws, gs, ms) for a in tr]
        lrs, wds = [lr] * count, [wd] * count
        case.add("fusedopt", lambda: fo.multi_sgd_mom_update(flat, lrs=lrs, wds=wds, momentum=mu))
        opt = fo.SGD(learning_rate=lr, momentum=mu, wd=wd, aggregate_num=math.inf)
        idx = list(range(count))
        case.add("fusedopt_SGD.update", lambda: opt.update(idx, ws, gs, ms))
        if hasattr(opt, "prepare"):
            popt = fo.SGD(learning_rate=lr, momentum=mu, wd=wd, aggregate_num=math.inf)
            prep = popt.prepare(idx, ws, gs, ms)
            case.add("fusedopt_prepared", prep.step)

        def per_tensor() -> None:
            for k in range(count):
                core.sgd_mom_update(ws[k], gs[k], ms[k], lr=lr, momentum=mu, wd=wd)

        case.add("fusedopt_per_tensor", per_tensor)
    if t is not None:
        params = [t.nn.Parameter(t.from_numpy(w)) for w in ws]
        for p, g in zip(params, gs):
            p.grad = t.from_numpy(g)
        topt = t.optim.SGD(params, lr=lr, momentum=mu, weight_decay=wd, fused=True)
        for p, m in zip(params, ms):
            topt.state[p]["momentum_buffer"] = t.from_numpy(m)
        case.add("torch_fused", topt.step)
        tw, tg, tm = ([t.from_numpy(a) for a in arrs] for arrs in (ws, gs, ms))
        kw = dict(weight_decay=wd, momentum=mu, lr=lr, dampening=0.0, nesterov=False, maximize=False,
                  is_first_step=False)
        case.add("torch_raw", lambda: t._fused_sgd_(tw, tg, tm, **kw))
        case.keep += [params, topt, tw, tg, tm]
    if mx is not None:
        nd = mx.nd
        mw, mg, mm = ([env.mx_share(a) for a in arrs] for arrs in (ws, gs, ms))
        case.keep += [mw, mg, mm]

        def mx_step() -> None:
            for k in range(count):
                nd.sgd_mom_update(mw[k], mg[k], mm[k], lr=lr, momentum=mu, wd=wd, out=mw[k])
            nd.waitall()

        case.add("mxnet", mx_step)
    return case


def case_specs(quick: bool) -> list[tuple[str, Callable[[Env], Case]]]:
    """(name, builder) in run order. Quick mode shrinks sizes; names keep the real size labels."""
    res = shapes_list("resnet50")
    bert = shapes_list("bert_base")
    if quick:
        res = res[:60]  # 60 tensors, 1.4 M elements
        bert = [s for s in bert if numel(s) <= 1 << 21][:10]  # 10 tensors of <= 2 Mi elements
    M = MI
    s16, s64, s1 = (2 * M, 4 * M, M // 4) if quick else (16 * M, 64 * M, M)
    rl = "resnet50" + ("[:60]" if quick else "")
    bl = "bert_base" + ("[:small]" if quick else "")
    specs: list[tuple[str, Callable[[Env], Case]]] = []
    add = specs.append
    for rule in ("sgd", "sgd_mom"):
        for n in (s16, s64):
            add((f"{rule}/f32/{n}", lambda e, r=rule, n=n: build_dense(e, r, [[n]], str(n), "hot", "target")))
        add((f"{rule}/f32/{rl}", lambda e, r=rule: build_dense(e, r, res, rl, "hot", "target")))
        add((f"{rule}/f32/{bl}", lambda e, r=rule: build_dense(e, r, bert, bl, "hot", "target")))
    for mode in ("hot", "cold"):
        add((f"sgd_mom/f32/{s1}/{mode}",
             lambda e, m=mode: build_dense(e, "sgd_mom", [[s1]], f"{s1}/{m}", m, "target")))
    for dt in ("f16", "bf16"):
        add((f"mp_sgd_mom/{dt}/{s64}",
             lambda e, d=dt: build_dense(e, "mp_sgd_mom", [[s64]], str(s64), "hot", "target", d)))
        add((f"mp_sgd_mom/{dt}/{rl}",
             lambda e, d=dt: build_dense(e, "mp_sgd_mom", res, rl, "hot", "target", d)))
    add((f"dcasgd_mom/f32/{s64}", lambda e: build_dcasgd(e, [[s64]], str(s64), "target")))
    add((f"dcasgd_mom/f32/{rl}", lambda e: build_dcasgd(e, res, rl, "target")))
    rows = 4096 if quick else 30522
    for mode in ("cold", "hot"):
        add((f"rsp_lazy_sgd_mom/{mode}", lambda e, m=mode: build_rsp(e, m, rows, "target")))
    add(("sgd_mom/f32/tiny1x64", lambda e: build_tiny(e, 1, 64, "target")))
    add(("sgd_mom/f32/tiny161x64", lambda e: build_tiny(e, 161, 64, "target")))
    # size sweep for the plot
    sweep = [1 << p for p in ((16, 20) if quick else range(14, 27, 2))]
    for n in sweep:
        add((f"sweep/sgd_mom/f32/{n}", lambda e, n=n: build_dense(e, "sgd_mom", [[n]], str(n), "hot", "sweep")))
    return specs


def time_case(env: Env, case: Case, reps: int) -> dict[str, Any]:
    """Interleaved rounds; each sample is one step (cold: after an LLC flush) or the mean of k hot
    steps (k chosen so one sample lasts >= 2-5 ms)."""
    names = list(case.peers)
    target = 0.001 if env.quick else 0.005
    k: dict[str, int] = {}
    for name in names:
        fn = case.peers[name]
        fn()
        t0 = time.perf_counter()
        fn()
        one = time.perf_counter() - t0
        if case.mode == "cold":
            k[name] = 1
        else:
            k[name] = max(1, min(5000, int(math.ceil(target / max(one, 1e-7)))))
            for _ in range(min(k[name], 50)):
                fn()
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(reps):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            fn, kk = case.peers[name], k[name]
            if case.mode == "cold":
                env.flush()
                t0 = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - t0)
            else:
                t0 = time.perf_counter()
                for _ in range(kk):
                    fn()
                samples[name].append((time.perf_counter() - t0) / kk)
    out: dict[str, Any] = {"peers": {}, "ratios": {}}
    for name in names:
        s = samples[name]
        out["peers"][name] = {"median_s": statistics.median(s), "min_s": min(s), "inner": k[name],
                              "samples_s": s}
    if "fusedopt" in samples:
        base = samples["fusedopt"]
        for name in names:
            if name != "fusedopt":
                out["ratios"][name] = statistics.median(b / p for b, p in zip(base, samples[name]))
    return out


def worker_specs(args: argparse.Namespace, mxnet_worker: bool) -> list[tuple[str, Callable[[Env], Case]]]:
    specs = case_specs(args.quick)
    if args.cases:
        rx = re.compile(args.cases)
        specs = [s for s in specs if rx.search(s[0])]
    if mxnet_worker:  # no size sweep in the MXNet worker (the plot shows the main worker's peers)
        specs = [s for s in specs if not s[0].startswith("sweep/")]
    return specs


def worker_main(args: argparse.Namespace) -> None:
    """Writes JSON lines to --worker-out: one "meta" line, then one line per finished case, so that a
    crash (a peer library's, or a package replaced under our feet) loses only the case it hit."""
    env = Env(args)
    out = open(args.worker_out, "a")

    def emit(kind: str, payload: Any) -> None:
        out.write(json.dumps({kind: payload}) + "\n")
        out.flush()

    floor = env.measure_floor()
    log(f"  [{args.worker_label}] floor {floor['gbps']:.1f} GB/s ({floor['method']})")
    emit("meta", {"floor": floor, "threads": env.threads, "python": sys.version.split()[0],
                  "numpy": env.np.__version__, "fusedopt": getattr(env.fo, "__version__", "?"),
                  "fusedopt_path": os.path.dirname(env.fo.__file__),
                  "fusedopt_capability": env.fo.cpu_capability(),
                  "torch": env.torch.__version__ if env.torch is not None else None,
                  "mxnet": env.mx.__version__ if env.mx is not None else None})
    specs = worker_specs(args, env.mx is not None)
    for i, (name, build) in enumerate(specs):
        if i < args.start:
            continue
        log(f"  [{args.worker_label}] {i + 1:2d}/{len(specs)} {name} ...")
        emit("starting", {"index": i, "case": name})
        t0 = time.time()
        try:
            case = build(env)
        except Exception as e:  # a peer library without this dtype, ...
            log(f"  [{args.worker_label}] {i + 1:2d}/{len(specs)} {name}: skipped ({e})")
            continue
        if env.mx is not None:  # the MXNet worker: fusedopt and MXNet only
            if "mxnet" not in case.peers:
                del case
                gc.collect()
                continue
            case.peers = OrderedDict((k, v) for k, v in case.peers.items() if k in ("fusedopt", "mxnet"))
        reps = args.reps or (3 if args.quick else (7 if case.group == "sweep" else 11))
        res = time_case(env, case, reps)
        floor_s = case.min_bytes / (floor["gbps"] * 1e9)
        for p in res["peers"].values():
            p["gbps"] = case.min_bytes / p["median_s"] / 1e9
            p["x_floor"] = p["median_s"] / floor_s
        emit("result", {"order": i, "case": case.name, "rule": case.rule, "dtype": case.dtype,
                        "size": case.size, "elems": case.elems, "min_bytes": case.min_bytes,
                        "mode": case.mode, "group": case.group, "threads": env.threads, "reps": reps,
                        "floor_gbps": floor["gbps"], **res})
        fo_ms = res["peers"].get("fusedopt", {}).get("median_s", float("nan")) * 1e3
        log(f"  [{args.worker_label}] {i + 1:2d}/{len(specs)} {case.name}: fusedopt {fo_ms:.4g} ms "
            f"({time.time() - t0:.1f} s)")
        del case
        gc.collect()
    emit("done", True)
    out.close()


# ------------------------------------------------------------------------------------------------
# Parent: subprocesses, table, targets, JSON, plot


def run_worker(python: str, threads: int, peers: str, label: str, args: argparse.Namespace,
               extra_env: dict[str, str]) -> dict[str, Any] | None:
    """Runs one worker; if it dies, records the case it died in and restarts after that case."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               MXNET_CPU_WORKER_NTHREADS=str(threads), MXNET_OMP_MAX_THREADS=str(threads))
    env.update(extra_env)
    t0 = time.time()
    log(f"compare.py: worker {label} ({threads} thread{'s' if threads > 1 else ''}, peers {peers}) ...")
    meta: dict[str, Any] | None = None
    results: list[dict[str, Any]] = []
    crashed: list[dict[str, Any]] = []
    start = 0
    while True:
        fd, out = tempfile.mkstemp(suffix=".jsonl", prefix="fusedopt_compare_")
        os.close(fd)
        cmd = [python, os.path.abspath(__file__), "--worker", "--worker-threads", str(threads), "--peers",
               peers, "--worker-out", out, "--worker-label", label, "--lr", str(args.lr), "--momentum",
               str(args.momentum), "--wd", str(args.wd), "--start", str(start)]
        if args.quick:
            cmd.append("--quick")
        if args.cases:
            cmd += ["--cases", args.cases]
        if args.reps:
            cmd += ["--reps", str(args.reps)]
        r = subprocess.run(cmd, env=env)
        done, current = False, None
        with open(out) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    break
                if "meta" in rec:
                    meta = meta or rec["meta"]
                elif "starting" in rec:
                    current = rec["starting"]
                elif "result" in rec:
                    results.append(rec["result"])
                    current = None
                elif "done" in rec:
                    done = True
        os.unlink(out)
        if r.returncode == 0 and done:
            break
        where = current["case"] if current else "start-up"
        log(f"compare.py: worker {label} died (exit status {r.returncode}) in {where}")
        crashed.append({"case": where, "exit_status": r.returncode})
        if current is None:
            break
        start = current["index"] + 1
    log(f"compare.py: worker {label} done in {time.time() - t0:.0f} s")
    if meta is None:
        return None
    meta["crashed"] = crashed
    return {"meta": meta, "results": results}


def snapshot_fusedopt() -> tuple[str, dict[str, Any]]:
    """Copies the importable fusedopt package to a private directory that every worker imports from,
    so that a concurrent `pip install` cannot swap the extension under a running worker (that crashes
    it) or mix two builds in one comparison."""
    import fusedopt

    pkg = os.path.dirname(os.path.abspath(fusedopt.__file__))
    snap = tempfile.mkdtemp(prefix="fusedopt_compare_pkg_")
    shutil.copytree(pkg, os.path.join(snap, "fusedopt"), ignore=shutil.ignore_patterns("__pycache__"))
    info: dict[str, Any] = {"source": pkg, "snapshot": snap}
    for name in os.listdir(pkg):
        if name.startswith("_core") and name.endswith(".so"):
            p = os.path.join(pkg, name)
            with open(p, "rb") as f:
                info["core_sha1"] = hashlib.sha1(f.read()).hexdigest()[:12]
            info["core_mtime"] = datetime.datetime.fromtimestamp(os.path.getmtime(p)).isoformat(
                timespec="seconds")
    return snap, info


def mxnet_python(args: argparse.Namespace, snap: str) -> tuple[str | None, dict[str, str], str]:
    """The MXNet interpreter and the environment that lets it import the fusedopt snapshot, or why not.
    Only the snapshot directory goes on the venv's path (not this site-packages: its NumPy is too new)."""
    if args.no_mxnet:
        return None, {}, "disabled (--no-mxnet)"
    py = args.mxnet_python
    if not py or not os.path.exists(py):
        return None, {}, f"no MXNet interpreter at {py} (see bench/README.md)"
    env = {"PYTHONPATH": snap}
    probe = subprocess.run([py, "-c", "import mxnet, fusedopt; print(mxnet.__version__)"],
                           env=dict(os.environ, **env), capture_output=True, text=True)
    if probe.returncode != 0:
        return None, {}, f"{py} cannot import mxnet and fusedopt: {probe.stderr.strip().splitlines()[-1:]}"
    return py, env, f"MXNet {probe.stdout.strip()} via {py}"


def fmt_time(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:8.2f} us"
    return f"{s * 1e3:8.3f} ms"


def merge(results: list[dict[str, Any]], mx_results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Adds the MXNet worker's mxnet row and its paired ratio to the main results."""
    by_key = {(r["case"], r["threads"]): r for r in mx_results}
    for r in results:
        m = by_key.get((r["case"], r["threads"]))
        if m and "mxnet" in m["peers"]:
            row = dict(m["peers"]["mxnet"])
            row["note"] = "separate process (MXNet venv); ratio paired with fusedopt there"
            row["fusedopt_same_process_median_s"] = m["peers"]["fusedopt"]["median_s"]
            r["peers"]["mxnet"] = row
            r["ratios"]["mxnet"] = m["ratios"]["mxnet"]
    return results


def print_table(results: list[dict[str, Any]]) -> None:
    hdr = f"{'case':44s} {'thr':>3s} {'peer':22s} {'time':>11s} {'GB/s':>7s} {'x floor':>7s} {'fusedopt/peer':>13s}"
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        first = True
        for name, p in r["peers"].items():
            ratio = "" if name == "fusedopt" else f"{r['ratios'].get(name, float('nan')):13.3f}"
            print(f"{(r['case'] if first else ''):44s} {r['threads']:3d} {name:22s} {fmt_time(p['median_s'])} "
                  f"{p['gbps']:7.2f} {p['x_floor']:7.3f} {ratio}")
            first = False


def targets(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """PERF.md's target rows evaluated on the results (1 thread unless the row says otherwise)."""
    rows: list[dict[str, Any]] = []
    get = {(r["case"], r["threads"]): r for r in results}

    def chk(label: str, ok: bool | None, measured: str, target: str) -> None:
        rows.append({"row": label, "measured": measured, "target": target,
                     "status": "n/a" if ok is None else ("met" if ok else "MISSED")})

    for r in results:
        if r["group"] != "target":
            continue
        fo = r["peers"].get("fusedopt")
        if fo is None:
            continue
        t, c = r["threads"], r["case"]
        x = fo["x_floor"]
        tr = r["ratios"].get("torch_fused")
        if r["rule"] in ("sgd", "sgd_mom") and not c.startswith("sgd_mom/f32/tiny") and r["mode"] == "hot" \
                and "/1048576" not in c and "/262144" not in c and t == 1:
            chk(f"{c} 1 thr: x floor", x <= 1.10, f"{x:.3f}", "<= 1.10")
            if tr is not None:
                chk(f"{c} 1 thr: vs torch fused", tr <= 0.95, f"{tr:.3f}", "<= 0.95")
        if r["rule"] == "sgd_mom" and ("/1048576" in c or "/262144" in c or c.startswith("sgd_mom/f32/16777216")
                                       or c.startswith("sgd_mom/f32/2097152")) and t == 1 and tr is not None:
            chk(f"{c} 1 thr: vs torch fused (PERF row 2)", tr <= 0.75, f"{tr:.3f}", "<= 0.75")
        if r["rule"] == "mp_sgd_mom" and t == 1:
            chk(f"{c} 1 thr: x floor", x <= 1.15, f"{x:.3f}", "<= 1.15")
        if r["rule"] == "dcasgd_mom" and t == 1:
            chk(f"{c} 1 thr: x floor", x <= 1.15, f"{x:.3f}", "<= 1.15")
        if r["rule"] == "rsp_lazy_sgd_mom" and t == 1:
            chk(f"{c} 1 thr: x floor of touched rows", x <= 1.3, f"{x:.3f}", "<= 1.3")
        if c == "sgd_mom/f32/tiny1x64" and t == 1:
            raw = fo["median_s"] * 1e6
            chk(f"{c}: raw call (fusedopt.sgd_mom_update)", raw <= 2.0, f"{raw:.2f} us", "<= 2 us")
            u = r["peers"].get("fusedopt_SGD.update")
            if u:
                d = u["median_s"] * 1e6 - raw
                chk(f"{c}: SGD.update above raw call", d <= 2.0, f"{d:.2f} us", "<= 2 us")
        if c == "sgd_mom/f32/tiny161x64" and t == 1:
            us = fo["median_s"] * 1e6
            chk(f"{c}: one aggregated call (multi_sgd_mom_update)", us <= 20, f"{us:.2f} us", "<= 20 us")
            u = r["peers"].get("fusedopt_SGD.update")
            if u:
                chk(f"{c}: SGD.update(aggregate_num=inf)", u["median_s"] * 1e6 <= 20,
                    f"{u['median_s'] * 1e6:.2f} us", "<= 20 us")
            u = r["peers"].get("fusedopt_prepared")
            if u:
                chk(f"{c}: prepared parameter group (SGD.prepare().step())", u["median_s"] * 1e6 <= 8,
                    f"{u['median_s'] * 1e6:.2f} us", "<= 8 us")
        if t == 2 and r["rule"] in ("sgd", "sgd_mom") and tr is not None and "tiny" not in c:
            chk(f"{c} 2 thr: vs torch fused", tr <= 0.95, f"{tr:.3f}", "<= 0.95")
            one = get.get((c, 1))
            if one:
                sp = one["peers"]["fusedopt"]["median_s"] / fo["median_s"]
                chk(f"{c}: 2 thr speed-up over own 1 thr (unpaired)", sp >= 1.5, f"{sp:.2f}x",
                    ">= 1.5x when the host gives two cores")
    return rows


def plot(results: list[dict[str, Any]], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("compare.py: matplotlib not installed (pip install matplotlib); no plot")
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    series: dict[tuple[str, int], list[tuple[float, float]]] = {}
    floors = {}
    for r in results:
        if r["group"] != "sweep":
            continue
        for name, p in r["peers"].items():
            series.setdefault((name, r["threads"]), []).append((r["elems"] * 20 / 2**20, p["gbps"]))
        floors[r["threads"]] = r.get("floor_gbps")
    names = sorted({name for name, _ in series})
    colours = {n: f"C{i % 10}" for i, n in enumerate(names)}
    for (name, thr), pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if thr == 1 else "s",
                linestyle="-" if thr == 1 else "--", color=colours[name], label=f"{name} ({thr} thr)")
    xs = [p[0] for pts in series.values() for p in pts]
    for thr, f in floors.items():
        if f and xs:
            ax.axhline(f, color="gray", linestyle=":" if thr == 1 else "-.", linewidth=1)
            ax.text(min(xs), f, f"floor {thr} thr {f:.0f} GB/s", fontsize=7, va="bottom", color="gray")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("minimal bytes per step (MiB), sgd_mom float32 (20 B/elem)")
    ax.set_ylabel("GB/s (minimal bytes / median time)")
    ax.set_title("sgd_mom fp32: fusedopt vs peers, same buffers (solid 1 thread, dashed 2; L3 32 MiB)",
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    log(f"compare.py: plot written to {path}")


def git_commit() -> str:
    try:
        return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip() or "?"
    except OSError:
        return "?"


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, 3 rounds (< 60 s)")
    ap.add_argument("--threads", default=None,
                    help="thread counts, one subprocess each (default 1,2; --quick: 1)")
    ap.add_argument("--json", help="write all results and metadata here")
    ap.add_argument("--plot", help="write a PNG of GB/s vs size (the sgd_mom sweep) here")
    ap.add_argument("--cases", help="only cases whose name matches this regex")
    ap.add_argument("--reps", type=int, default=0, help="interleaved rounds (default 11; quick 3)")
    ap.add_argument("--mxnet-python", default=os.environ.get("FUSEDOPT_MXNET_PYTHON", DEFAULT_MXNET_PY),
                    help="interpreter of a venv with mxnet==1.9.1 and numpy<1.24")
    ap.add_argument("--no-mxnet", action="store_true")
    ap.add_argument("--from-json", help="print the table, targets and plot of an earlier --json file; no run")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--wd", type=float, default=0.0,
                    help="weight decay for every peer (default 0: NumPy then needs no extra passes)")
    # worker-only
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--worker-threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    ap.add_argument("--worker-label", default="", help=argparse.SUPPRESS)
    ap.add_argument("--peers", default="torch,numpy,c", help=argparse.SUPPRESS)
    ap.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker_main(args)
        return

    if args.from_json:
        with open(args.from_json) as f:
            doc = json.load(f)
        print(f"compare.py results of {doc['date']}, {doc['machine']}, commit {doc['commit']}: {doc['command']}")
        print_table(doc["results"])
        print()
        for row in doc.get("targets", []):
            print(f"{row['row']:70s} {row['measured']:>12s} {row['target']:>12s}  {row['status']}")
        if args.plot:
            plot(doc["results"], args.plot)
        return

    t_start = time.time()
    threads = [int(x) for x in (args.threads or ("1" if args.quick else "1,2")).split(",") if x]
    main_peers = "numpy,c" if args.no_torch else "torch,numpy,c"
    snap, snap_info = snapshot_fusedopt()
    log(f"compare.py: fusedopt snapshot of {snap_info['source']} (_core sha1 {snap_info.get('core_sha1')}, "
        f"built {snap_info.get('core_mtime')})")
    pp = os.environ.get("PYTHONPATH")
    main_env = {"PYTHONPATH": snap + (os.pathsep + pp if pp else "")}
    mx_py, mx_env, mx_note = mxnet_python(args, snap)
    log(f"compare.py: MXNet: {mx_note}")
    try:
        results: list[dict[str, Any]] = []
        mx_results: list[dict[str, Any]] = []
        metas = {}
        for t in threads:
            data = run_worker(sys.executable, t, main_peers, f"main/{t}thr", args, main_env)
            if data:
                results += data["results"]
                metas[f"main/{t}thr"] = data["meta"]
            if mx_py:
                data = run_worker(mx_py, t, "mxnet", f"mxnet/{t}thr", args, mx_env)
                if data:
                    mx_results += data["results"]
                    metas[f"mxnet/{t}thr"] = data["meta"]
    finally:
        shutil.rmtree(snap, ignore_errors=True)
    results.sort(key=lambda r: (r["group"] == "sweep", r["order"], r["threads"]))
    results = merge(results, mx_results)
    print()
    print(f"fusedopt compare.py — {datetime.datetime.now().isoformat(timespec='seconds')}, {cpu_model()}, "
          f"{os.cpu_count()} CPUs, commit {git_commit()}")
    for k, m in metas.items():
        print(f"  {k}: floor {m['floor']['gbps']:.2f} GB/s ({m['floor']['method']}); numpy {m['numpy']}, "
              f"torch {m['torch']}, mxnet {m['mxnet']}, fusedopt {m['fusedopt']} [{m['fusedopt_capability']}]")
    print(f"  MXNet: {mx_note}")
    print(f"  fusedopt package: {snap_info['source']} (_core sha1 {snap_info.get('core_sha1')}, built "
          f"{snap_info.get('core_mtime')}), imported from a private snapshot")
    for k, m in metas.items():
        for c in m.get("crashed", []):
            print(f"  {k}: worker died in {c['case']} (exit status {c['exit_status']}); resumed after it")
    print()
    print_table(results)
    trows = [] if args.quick else targets(results)
    print()
    if args.quick:
        print("--quick: sizes are shrunk (they fit in cache), so PERF.md's target rows are not evaluated.")
    else:
        print(f"{'PERF.md target row':70s} {'measured':>12s} {'target':>12s}  status")
        for row in trows:
            print(f"{row['row']:70s} {row['measured']:>12s} {row['target']:>12s}  {row['status']}")
    log(f"compare.py: total {time.time() - t_start:.0f} s")
    if args.json:
        doc = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": cpu_model(),
               "cpus": os.cpu_count(), "commit": git_commit(), "command": " ".join(sys.argv),
               "quick": args.quick, "hyper": {"lr": args.lr, "momentum": args.momentum, "wd": args.wd},
               "mxnet": mx_note, "fusedopt_package": snap_info, "workers": metas, "results": results, "targets": trows}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
        log(f"compare.py: JSON written to {args.json}")
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
