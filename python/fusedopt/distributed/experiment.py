"""Does delay compensation close asynchronous SGD's gap? The DC-ASGD paper's claim, measured.

    python -m fusedopt.distributed.experiment --workers 1 4 8 16 32 --seeds 10 \\
        --json results.json --plot results.png

Setup (fixed before any result was seen): scikit-learn's bundled ``load_digits`` (1797 8x8 images,
no download), a stratified 75/25 split (``random_state=0``, the same for every run), features
standardised on the training set; a 64-64-10 tanh MLP with softmax cross-entropy written in NumPy
(float64), Glorot-uniform weights and zero biases drawn from the seed; minibatches of 32 from one
shuffled stream of the training set (a new permutation per epoch, drawn from the seed; the last
partial batch of an epoch is dropped), 20 epochs, i.e. the same number of gradients for every method;
constant learning rate 1.0, no momentum, no weight decay. Workers are simulated by
:func:`fusedopt.distributed.simulate` with fixed staggered compute times (staleness M - 1 in steady
state). The seed sets the initial weights and the batch order; every method sees the same ones.

Methods (the JSON ``method`` names):

* ``sgd``: sequential SGD (one worker).
* ``asgd``: asynchronous SGD over a ``ParameterServer`` with ``fusedopt.SGD``.
* ``dcasgd-c``: DC-ASGD, the paper's per-worker backups, constant ``lamda`` (``--lamda``, default
  0.04, MXNet's default and the paper's DC-ASGD-c value; ``--sweep`` runs other values too).
* ``dcasgd-a``: DC-ASGD-a, per-worker backups, adaptive ``lamda``: the paper's constants
  ``lamda=2, ms_decay=0.95, eps=1e-7``, not tuned.
* ``dcasgd-mxnet``: MXNet's form (one previous weight per parameter), constant ``lamda``.
* ``dcasgd-mxnet-a``: MXNet's form with the adaptive ``lamda`` of DC-ASGD-a (same constants).
* ``ssgd``: synchronous SGD: the M gradients of a round averaged into one update (a gradient
  count that is not a multiple of M leaves the last partial round unapplied).

Needs scikit-learn (and matplotlib for ``--plot``; tqdm for a nicer progress bar):
``pip install "fusedopt[experiment]"``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

import fusedopt

from .server import ParameterServer
from .simulate import simulate

__all__ = ["METHODS", "Data", "load_data", "init_params", "loss_and_grad", "evaluate", "run_one",
           "main"]

HIDDEN = 64
CLASSES = 10
# DC-ASGD-a's constants from the paper (Zheng et al., ICML 2017), used as they are.
ADAPTIVE = {"lamda": 2.0, "ms_decay": 0.95, "eps": 1e-7}
METHODS = ("sgd", "asgd", "dcasgd-c", "dcasgd-a", "dcasgd-mxnet", "dcasgd-mxnet-a", "ssgd")
CONSTANT_METHODS = ("dcasgd-c", "dcasgd-mxnet")
DEFAULT_SWEEP = (0.04, 0.4, 4.0, 40.0)
_EXTRA_HINT = 'pip install "fusedopt[experiment]"'


def _require(module: str, what: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise SystemExit(f"fusedopt.distributed.experiment needs {what} ({module} is not "
                         f"installed): {_EXTRA_HINT}") from None


# --------------------------------------------------------------------------------------- data
@dataclass
class Data:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_data() -> Data:
    """Digits, stratified 75/25 split (``random_state=0``), standardised with the training set's
    mean and standard deviation (features constant in the training set are only centred)."""
    datasets = _require("sklearn.datasets", "scikit-learn")
    model_selection = _require("sklearn.model_selection", "scikit-learn")
    x, y = datasets.load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = model_selection.train_test_split(
        x.astype(np.float64), y.astype(np.int64), test_size=0.25, stratify=y, random_state=0)
    mean, std = x_tr.mean(axis=0), x_tr.std(axis=0)
    std[std == 0] = 1.0
    return Data((x_tr - mean) / std, y_tr, (x_te - mean) / std, y_te)


# -------------------------------------------------------------------------------------- model
def init_params(seed: int, inputs: int = 64) -> list[np.ndarray]:
    """``[W1 (inputs, 64), b1 (64,), W2 (64, 10), b2 (10,)]``: Glorot-uniform weights, zero biases."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    a1, a2 = math.sqrt(6.0 / (inputs + HIDDEN)), math.sqrt(6.0 / (HIDDEN + CLASSES))
    return [rng.uniform(-a1, a1, (inputs, HIDDEN)), np.zeros(HIDDEN),
            rng.uniform(-a2, a2, (HIDDEN, CLASSES)), np.zeros(CLASSES)]


def _forward(params: Sequence[np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w1, b1, w2, b2 = params
    h = np.tanh(x @ w1 + b1)
    z = h @ w2 + b2
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    return h, p


def loss_and_grad(params: Sequence[np.ndarray], x: np.ndarray, y: np.ndarray
                  ) -> tuple[float, list[np.ndarray]]:
    """Mean softmax cross-entropy of the batch and its gradient with respect to each parameter."""
    w1, b1, w2, b2 = params
    h, p = _forward(params, x)
    n = x.shape[0]
    loss = -float(np.mean(np.log(p[np.arange(n), y] + 1e-300)))
    dz = p
    dz[np.arange(n), y] -= 1.0
    dz /= n
    dh = (dz @ w2.T) * (1.0 - h * h)
    return loss, [x.T @ dh, dh.sum(axis=0), h.T @ dz, dz.sum(axis=0)]


def evaluate(params: Sequence[np.ndarray], x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """``(loss, error in percent)`` on a whole set."""
    _, p = _forward(params, x)
    loss = -float(np.mean(np.log(p[np.arange(len(y)), y] + 1e-300)))
    return loss, 100.0 * float(np.mean(p.argmax(axis=1) != y))


# ------------------------------------------------------------------------------------- a run
def _optimizer(method: str, lr: float, lamda: float) -> fusedopt.Optimizer:
    if method in ("sgd", "asgd", "ssgd"):
        return fusedopt.SGD(learning_rate=lr)
    if method in CONSTANT_METHODS:
        return fusedopt.DCASGD(learning_rate=lr, lamda=lamda, use_fused_step=True)
    return fusedopt.DCASGD(learning_rate=lr, adaptive=True, use_fused_step=True, **ADAPTIVE)


def run_one(method: str, workers: int, seed: int, data: Data, *, epochs: int = 20,
            batch: int = 32, lr: float = 1.0, lamda: float = 0.04,
            delays: str = "staggered") -> dict[str, Any]:
    """Trains one model and returns ``test_error`` (percent), ``final_loss`` (training-set loss at
    the end; NaN when the weights overflowed, whose NaN outputs then predict class 0: about 90 %
    error), ``diverged`` (the final training loss is not below the initial one), ``staleness_mean``, ``staleness_max``, ``updates``, ``gradients``, ``sim_time``."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} (one of {', '.join(METHODS)})")
    if method == "sgd" and workers != 1:
        raise ValueError("sgd is sequential: workers must be 1")
    n = len(data.y_train)
    per_epoch = n // batch
    order = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
    perms = [order.permutation(n) for _ in range(epochs)]

    def grad_fn(worker: int, weights: list[np.ndarray], job: int,
                rng: np.random.Generator) -> tuple[float, list[np.ndarray]]:
        rows = perms[job // per_epoch][(job % per_epoch) * batch:(job % per_epoch + 1) * batch]
        return loss_and_grad(weights, data.x_train[rows], data.y_train[rows])

    params = init_params(seed, data.x_train.shape[1])
    with np.errstate(all="ignore"):
        initial_loss, _ = evaluate(params, data.x_train, data.y_train)
    server = ParameterServer(params, _optimizer(method, lr, lamda), workers,
                             backups="previous" if method.startswith("dcasgd-mxnet") else "worker",
                             synchronous=method == "ssgd")
    with np.errstate(all="ignore"):  # a diverging run ends with NaN weights: reported, not warned
        res = simulate(server, grad_fn, epochs * per_epoch, delays=delays, seed=seed)
        final_loss, _ = evaluate(params, data.x_train, data.y_train)
        _, test_error = evaluate(params, data.x_test, data.y_test)
    return {"test_error": test_error, "final_loss": final_loss,
            "diverged": not final_loss <= initial_loss,  # NaN counts as diverged
            "staleness_mean": float(res.staleness.mean()) if len(res.staleness) else 0.0,
            "staleness_max": int(res.staleness.max()) if len(res.staleness) else 0,
            "updates": server.version, "gradients": len(res.workers), "sim_time": res.sim_time}


# ------------------------------------------------------------------------------- experiment
class _Progress:
    """tqdm when installed, else a line on stderr every few runs."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.enabled, self.bar = total, 0, enabled, None
        self.started = time.perf_counter()
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self.bar = tqdm(total=total, unit="run", file=sys.stderr)

    def update(self, label: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(label, refresh=False)
            self.bar.update(1)
        elif self.done == self.total or self.done % max(1, self.total // 50) == 0:
            elapsed = time.perf_counter() - self.started
            print(f"[{self.done}/{self.total}] {elapsed:.0f}s {label}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _summary(method: str, workers: int, lamda: float | None, runs: list[dict[str, Any]],
             seeds: Sequence[int]) -> dict[str, Any]:
    errors = [r["test_error"] for r in runs]
    losses = [r["final_loss"] for r in runs]
    std = (lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0)
    return {
        "method": method, "workers": workers, "lamda": lamda,
        "adaptive": method in ("dcasgd-a", "dcasgd-mxnet-a"),
        "backups": ("previous" if method.startswith("dcasgd-mxnet") else
                    "worker" if method.startswith("dcasgd") else None),
        "seeds": list(seeds),
        "test_error_mean": float(np.mean(errors)), "test_error_std": std(errors),
        "test_errors": errors,
        "final_loss_mean": float(np.mean(losses)), "final_loss_std": std(losses),
        "diverged": sum(r["diverged"] for r in runs),
        "staleness_mean": float(np.mean([r["staleness_mean"] for r in runs])),
        "staleness_max": max(r["staleness_max"] for r in runs),
        "updates": runs[0]["updates"], "gradients": runs[0]["gradients"],
    }


def run_experiment(workers: Sequence[int], seeds: int, *, methods: Sequence[str] = METHODS,
                   epochs: int = 20, batch: int = 32, lr: float = 1.0, lamda: float = 0.04,
                   sweep: Sequence[float] = (), delays: str = "staggered",
                   progress: bool = True, data: Data | None = None) -> dict[str, Any]:
    """Every method at every worker count (``sgd`` at 1 only) over seeds ``0 .. seeds-1``, plus
    the constant-lamda methods at each ``sweep`` value. Returns the JSON document."""
    data = load_data() if data is None else data
    seed_list = list(range(seeds))
    lamdas = sorted(set([lamda, *sweep]))
    plan: list[tuple[str, int, float | None]] = []
    for method in methods:
        for m in ([1] if method == "sgd" else workers):
            if method in CONSTANT_METHODS:
                plan.extend((method, m, lam) for lam in lamdas)
            else:
                plan.append((method, m, ADAPTIVE["lamda"] if method.endswith("-a") else None))
    bar = _Progress(len(plan) * len(seed_list), progress)
    rows: dict[tuple[str, int, float | None], dict[str, Any]] = {}
    try:
        for method, m, lam in plan:
            runs = []
            for seed in seed_list:
                runs.append(run_one(method, m, seed, data, epochs=epochs, batch=batch, lr=lr,
                                    lamda=lamda if lam is None else lam, delays=delays))
                bar.update(f"{method} M={m}" + (f" lamda={lam}" if lam is not None else ""))
            rows[(method, m, lam)] = _summary(method, m, lam, runs, seed_list)
    finally:
        bar.close()
    results = [r for (method, _, lam), r in rows.items()
               if method not in CONSTANT_METHODS or lam == lamda]
    sweep_rows = [r for (method, _, _), r in rows.items() if method in CONSTANT_METHODS]
    return {
        "config": {
            "dataset": "sklearn.datasets.load_digits", "split": "stratified 75/25, random_state=0",
            "train_size": int(len(data.y_train)), "test_size": int(len(data.y_test)),
            "model": "64-64-10 tanh MLP, softmax cross-entropy, float64",
            "workers": list(workers), "seeds": seed_list, "epochs": epochs, "batch": batch,
            "gradients": epochs * (len(data.y_train) // batch), "lr": lr, "momentum": 0.0,
            "delays": delays, "lamda": lamda, "lamda_sweep": lamdas, "adaptive": dict(ADAPTIVE),
            "methods": list(methods), "fusedopt_version": fusedopt.__version__,
            "cpu_capability": fusedopt.cpu_capability(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
        "results": results,
        "lamda_sweep": sweep_rows,
    }


def plot(doc: dict[str, Any], path: str) -> None:
    """Test error against workers, one line per method (mean, error bars: one standard deviation
    over seeds); sequential SGD as a horizontal line."""
    matplotlib = _require("matplotlib", "matplotlib for --plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    styles = {"asgd": "o-", "dcasgd-c": "s-", "dcasgd-a": "D-", "dcasgd-mxnet": "v--",
              "dcasgd-mxnet-a": "^--", "ssgd": "x:"}
    for n, method in enumerate(METHODS):
        rows = sorted((r for r in doc["results"] if r["method"] == method),
                      key=lambda r: r["workers"])
        if not rows:
            continue
        if method == "sgd":
            y, s = rows[0]["test_error_mean"], rows[0]["test_error_std"]
            ax.axhline(y, color="black", lw=1, label=f"sgd (1 worker): {y:.2f} %")
            ax.axhspan(y - s, y + s, color="black", alpha=0.08)
            continue
        lam = rows[0]["lamda"]
        label = method + (f" (lamda={lam:g})" if lam is not None else "")
        shift = 2.0 ** (0.03 * (n - len(METHODS) / 2))  # side by side, so error bars stay apart
        ax.errorbar([r["workers"] * shift for r in rows], [r["test_error_mean"] for r in rows],
                    yerr=[r["test_error_std"] for r in rows], fmt=styles.get(method, "o-"),
                    capsize=3, label=label)
    cfg = doc["config"]
    ax.set_xscale("log", base=2)
    ax.set_xticks(cfg["workers"], [str(w) for w in cfg["workers"]])
    ax.set_xlabel("workers M (staleness M - 1)")
    ax.set_ylabel("test error (%)")
    ax.set_title(f"digits MLP, {cfg['epochs']} epochs, lr {cfg['lr']:g}, {len(cfg['seeds'])} seeds "
                 "(mean ± std)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _table(doc: dict[str, Any]) -> str:
    lines = ["method          M   lamda   test error %     final loss   staleness  diverged"]
    for r in doc["results"] + [r for r in doc["lamda_sweep"] if r not in doc["results"]]:
        lam = "-" if r["lamda"] is None else f"{r['lamda']:g}"
        lines.append(f"{r['method']:<15} {r['workers']:>2}  {lam:>6}  {r['test_error_mean']:6.2f} +- "
                     f"{r['test_error_std']:4.2f}  {r['final_loss_mean']:10.4f}   "
                     f"{r['staleness_mean']:6.2f}  {r['diverged']:>8}")
    return "\n".join(lines)


def _finite_or_null(obj: Any) -> Any:
    """The document with NaN / infinite numbers (the losses of diverged runs) as JSON null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite_or_null(v) for v in obj]
    return obj


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fusedopt.distributed.experiment",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    parser.add_argument("--seeds", type=int, default=10, help="runs per point, seeds 0..N-1")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1.0)
    parser.add_argument("--lamda", type=float, default=0.04,
                        help="constant lamda of dcasgd-c and dcasgd-mxnet")
    parser.add_argument("--sweep", type=float, nargs="*", default=None,
                        help="lamda values also run for the constant methods (default "
                        f"{' '.join(map(str, DEFAULT_SWEEP))}; none with --quick)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--delays", choices=("staggered", "exponential"), default="staggered")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--plot", help="write the plot (PNG) here")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run in seconds: workers 1 2, 1 seed, 1 epoch")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.workers, args.seeds, args.epochs = [1, 2], 1, 1
    if args.sweep is None:
        args.sweep = [] if args.quick else list(DEFAULT_SWEEP)
    if args.seeds < 1 or args.epochs < 1 or args.batch < 1 or min(args.workers) < 1:
        parser.error("--seeds, --epochs, --batch and --workers must be >= 1")
    if args.plot:
        _require("matplotlib", "matplotlib for --plot")
    doc = run_experiment(args.workers, args.seeds, methods=args.methods, epochs=args.epochs,
                         batch=args.batch, lr=args.lr, lamda=args.lamda, sweep=args.sweep,
                         delays=args.delays, progress=not args.no_progress)
    doc["config"]["command"] = "python -m fusedopt.distributed.experiment " + " ".join(
        sys.argv[1:] if argv is None else argv)
    print(_table(doc))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(_finite_or_null(doc), f, indent=1, allow_nan=False)
            f.write("\n")
    if args.plot:
        plot(doc, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
