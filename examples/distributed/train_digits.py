"""Asynchronous training of a digits classifier with M workers against a sharded RayParameterServer.

    python examples/distributed/train_digits.py --model mlp            # NumPy workers (the MLP)
    python examples/distributed/train_digits.py --model cnn            # PyTorch workers (a small CNN)
    python examples/distributed/train_digits.py --address auto         # on a running Ray cluster

Each worker is a Ray task running ``fusedopt.distributed.workers.worker_loop``: pull the weights,
compute a minibatch gradient (NumPy, or torch autograd with the gradients handed over as NumPy views
of the torch tensors), push it. Without ``--address`` a local Ray is started on 127.0.0.1 and
stopped at the end. ``--method`` picks ASGD (``asgd``), DC-ASGD with per-worker backups and a
constant (``dcasgd-c``) or adaptive (``dcasgd-a``) lamda, or synchronous SGD (``ssgd``).
"""

from __future__ import annotations

import argparse

import ray

import fusedopt
from fusedopt.distributed import RayParameterServer, init_local_ray, run_workers, workers

MODELS = {
    "mlp": (workers.mlp_init_params, workers.DigitsMLPWorker, workers.mlp_evaluate, 1.0),
    "cnn": (workers.cnn_init_params, workers.DigitsCNNWorker, workers.cnn_evaluate, 0.1),
}


def optimizer(method: str, lr: float) -> fusedopt.Optimizer:
    if method in ("asgd", "ssgd"):
        return fusedopt.SGD(learning_rate=lr)
    if method == "dcasgd-c":
        return fusedopt.DCASGD(learning_rate=lr, lamda=0.04)
    return fusedopt.DCASGD(learning_rate=lr, adaptive=True, lamda=2.0, ms_decay=0.95, eps=1e-7)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(MODELS), default="mlp")
    ap.add_argument("--method", choices=("asgd", "dcasgd-c", "dcasgd-a", "ssgd"), default="dcasgd-a")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--steps", type=int, default=200, help="minibatches per worker")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--checkpoint-dir", default=None)
    ap.add_argument("--address", default=None, help='a Ray cluster to join, e.g. "auto"')
    args = ap.parse_args(argv)
    init, worker, evaluate, lr = MODELS[args.model]
    started = not ray.is_initialized()
    if started:
        if args.address is None:
            init_local_ray()
        else:
            ray.init(address=args.address)
    try:
        server = RayParameterServer(init(0), optimizer(args.method, args.lr or lr), args.workers,
                                    num_shards=args.shards, synchronous=args.method == "ssgd",
                                    checkpoint_dir=args.checkpoint_dir)
        try:
            print(f"{args.model}, {args.method}: test error before {evaluate(server.pull(0)[0]):.2f}%")
            results = run_workers(server, worker, args.steps, progress=True)
            seconds = max(r.get("seconds", 0.0) for r in results) or float("nan")   # training time
            st = server.stats()
            error = evaluate(server.pull(0)[0])
        finally:
            server.shutdown()
    finally:
        if started:
            ray.shutdown()
    for r in results:
        if "error" in r:
            print(f"worker {r['worker']} failed: {r['error']}")
        else:
            print(f"worker {r['worker']}: {r['steps']} steps, last loss {r['losses'][-1]:.4f}, "
                  f"pull {r['pull_seconds']:.2f} s, compute {r['compute_seconds']:.2f} s, "
                  f"push {r['push_seconds']:.2f} s, wait {r['wait_seconds']:.2f} s")
    print(f"test error after: {error:.2f}%  updates: {st['updates']} in {seconds:.1f} s "
          f"({st['updates'] / seconds:.1f}/s)  staleness mean {st['staleness_mean']:.2f}, "
          f"max {st['staleness_max']}")
    return {"test_error": error, "updates": st["updates"], "results": results}


if __name__ == "__main__":
    main()
