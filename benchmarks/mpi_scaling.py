#!/usr/bin/env python
"""Data-parallel scaling over MPI: seconds per MNIST epoch at 1, 2, ... ranks.

For each rank count K the script launches ``mpiexec -n K`` (the one beside
this Python, from ``pip install cbp[mpi]``) on itself in worker mode. Every
rank loads the MNIST training set, keeps its contiguous shard
(``cbp.mpi.shard``) and fits ``MLPClassifier(comm=MPI.COMM_WORLD)``; the
global batch is the same at every K (``--global-batch``, default 200, as in
``run.py``: each rank trains on ``global_batch / K`` rows per batch), so every
K does the same arithmetic and, to rounding, reaches the same weights. Each
rank runs ``cores / K`` OpenMP threads (``OMP_NUM_THREADS``), BLAS one.

An epoch's time is measured as in ``run.py``: ``fit`` with ``max_iter=1``
and with ``max_iter=1+E``, the difference divided by E, best of
``--rounds``. The table gives s/epoch, the speed-up over the first K and the
efficiency (speed-up / K).

More ranks than cores (e.g. 4 ranks on 2 cores) only time-slice the cores
and measure the scheduler, not cbp: the script refuses them unless
``--oversubscribe`` is given.

``--overhead`` measures instead, in one process, what returning to Python
once per batch costs: ``fit`` with ``comm=MPI.COMM_SELF`` (per batch: the
core's ``batch_loss_grad``, an in-place ``Allreduce`` on one rank,
``optimizer_step``) against the ordinary ``fit`` (the whole epoch in one
core call), on the same data, same threads, bit-identical results.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_MNIST = HERE.parent.parent / "shared" / "data" / "mnist.npz"


def cores():
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def load_mnist(path, n_samples=None):
    with np.load(path) as data:
        X = data["X_train"][:n_samples].astype(np.float32) / np.float32(255.0)
        y = data["y_train"][:n_samples].astype(np.int64)
    return X, y


def epoch_seconds(make, X, y, epochs, rounds):
    """Best over rounds of (fit(1 + E epochs) - fit(1 epoch)) / E."""
    from sklearn.exceptions import ConvergenceWarning

    best = np.inf
    for _ in range(rounds):
        times = []
        for n_iter in (1, 1 + epochs):
            est = make(n_iter)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                t0 = time.perf_counter()
                est.fit(X, y)
                times.append(time.perf_counter() - t0)
        best = min(best, (times[1] - times[0]) / epochs)
    return best, est


def params(args, batch_size, **extra):
    return dict(hidden_layer_sizes=tuple(args.layers), solver="adam",
                batch_size=batch_size, tol=0.0, n_iter_no_change=10**9,
                random_state=0, **extra)


def worker(args):
    from mpi4py import MPI

    import cbp.mpi
    from cbp import MLPClassifier

    cbp.mpi.abort_on_exception()
    comm = MPI.COMM_WORLD
    K = comm.Get_size()
    X, y = load_mnist(args.mnist, args.n_samples)
    rows = cbp.mpi.shard(X.shape[0], comm)
    Xs, ys = np.ascontiguousarray(X[rows]), y[rows]
    local = args.global_batch // K

    def make(n_iter):
        return MLPClassifier(max_iter=n_iter, comm=comm, **params(args, local))

    comm.Barrier()
    seconds, _ = epoch_seconds(make, Xs, ys, args.epochs, args.rounds)
    worst = comm.allreduce(seconds, op=MPI.MAX)  # the slowest rank's epoch
    if comm.Get_rank() == 0:
        print(json.dumps({"ranks": K, "seconds": worst, "local_batch": local,
                          "n_samples": int(X.shape[0])}))


def overhead(args):
    from mpi4py import MPI

    from cbp import MLPClassifier

    X, y = load_mnist(args.mnist, args.n_samples)
    n_batches = -(-X.shape[0] // args.global_batch)
    print(f"per-batch cost of returning to Python ({n_batches} batches of "
          f"{args.global_batch}, layers {args.layers}, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'default')})")
    rows = []
    for name, comm in (("one core call per epoch", None),
                       ("core + Allreduce + core per batch", MPI.COMM_SELF)):
        def make(n_iter, comm=comm):
            return MLPClassifier(max_iter=n_iter, comm=comm,
                                 **params(args, args.global_batch))
        seconds, est = epoch_seconds(make, X, y, args.epochs, args.rounds)
        rows.append((name, seconds, est._theta.copy()))
    same = np.array_equal(rows[0][2], rows[1][2])
    for name, seconds, _ in rows:
        print(f"  {name:36s} {seconds:8.4f} s/epoch")
    extra = (rows[1][1] - rows[0][1]) / n_batches
    print(f"  difference per batch: {extra * 1e6:.1f} us "
          f"({100 * (rows[1][1] / rows[0][1] - 1):+.1f} % of an epoch); "
          f"weights bit-identical: {same}")


def driver(args):
    n_cores = cores()
    ranks = [int(k) for k in args.ranks.split(",")]
    too_many = [k for k in ranks if k > n_cores]
    if too_many and not args.oversubscribe:
        sys.exit(f"{too_many} ranks > {n_cores} cores: oversubscribed runs time "
                 "the scheduler, not cbp (pass --oversubscribe to run anyway)")
    mpiexec = Path(sys.executable).parent / "mpiexec"
    results = []
    for K in ranks:
        threads = max(1, n_cores // K)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads),
                   OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        cmd = [str(mpiexec if mpiexec.exists() else "mpiexec"), "-n", str(K),
               sys.executable, __file__, "--worker", "--mnist", str(args.mnist),
               "--global-batch", str(args.global_batch), "--epochs",
               str(args.epochs), "--rounds", str(args.rounds), "--layers",
               *map(str, args.layers)]
        if args.n_samples:
            cmd += ["--n-samples", str(args.n_samples)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                              timeout=args.timeout)
        if proc.returncode != 0:
            sys.exit(f"{K} ranks failed:\n{proc.stdout}\n{proc.stderr}")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        res["threads"] = threads
        results.append(res)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"MNIST {results[0]['n_samples']} images, layers {args.layers}, adam, "
          f"global batch {args.global_batch}, float32; {n_cores} cores, "
          f"load average {load:.1f}")
    print(f"{'ranks':>5} {'threads/rank':>12} {'local batch':>11} "
          f"{'s/epoch':>9} {'speed-up':>8} {'efficiency':>10}")
    for res in results:
        speedup = results[0]["seconds"] / res["seconds"]
        eff = speedup * results[0]["ranks"] / res["ranks"]
        print(f"{res['ranks']:>5} {res['threads']:>12} {res['local_batch']:>11} "
              f"{res['seconds']:>9.3f} {speedup:>8.2f} {eff:>10.2f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", default="1,2",
                        help="comma-separated rank counts (default 1,2)")
    parser.add_argument("--mnist", type=Path,
                        default=Path(os.environ.get("CBP_MNIST", DEFAULT_MNIST)))
    parser.add_argument("--n-samples", type=int, default=None,
                        help="use the first N images (default all 60,000)")
    parser.add_argument("--layers", type=int, nargs="+", default=[256, 128])
    parser.add_argument("--global-batch", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=1,
                        help="E: timed epochs per fit difference")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--oversubscribe", action="store_true")
    parser.add_argument("--overhead", action="store_true",
                        help="measure the per-batch Python round trip instead")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.mnist.is_file():
        sys.exit(f"MNIST not found at {args.mnist} (pass --mnist or set CBP_MNIST)")
    if args.worker:
        worker(args)
    elif args.overhead:
        overhead(args)
    else:
        driver(args)


if __name__ == "__main__":
    main()
