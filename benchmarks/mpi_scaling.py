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
once per batch costs: the core's ``Network.epoch`` (a whole epoch in one
call) against the per-batch path of data-parallel training
(``Network.batch_grad``, an in-place ``Allreduce`` on ``COMM_SELF``,
``Network.step``), in µs per batch, for a tiny network (where the
difference is the fixed cost of the round trip) and for the MNIST network.
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


def _round_trip(units, batch, n_batches, threads, repeats=7):
    """Median µs per batch: one Network.epoch call vs the per-batch path."""
    from mpi4py import MPI
    from threadpoolctl import threadpool_limits

    from cbp import _core

    _, P = _core.param_offsets(units)
    rng = np.random.RandomState(0)
    n, k = batch * n_batches, int(units[-1])
    X = rng.rand(n, int(units[0])).astype(np.float32)
    Y = np.zeros((n, k), np.float32)
    Y[np.arange(n), rng.randint(0, k, n)] = 1
    sw = np.ones(n, np.float32)
    data = _core.Input(X, Y, sw)
    theta = (rng.randn(P) * 0.05).astype(np.float32)
    buf = np.zeros(P + 1, np.float32)
    grad = buf[:-1]
    order = rng.permutation(n).astype(np.intp)
    comm, in_place = MPI.COMM_SELF, MPI.IN_PLACE
    network = _core.Network(units, _core.HIDDEN_ACTIVATIONS["relu"],
                            _core.OUTPUT_ACTIVATIONS["softmax"], np.float32,
                            n_threads=threads)
    network.set_optimizer(_core.SOLVERS["adam"], np.zeros(P, np.float32),
                          np.zeros(P, np.float32), np.zeros(1, np.intp),
                          learning_rate=1e-3)

    def per_batch():
        for j in range(n_batches):
            rows = order[j * batch:(j + 1) * batch]
            network.batch_grad(theta, grad, data, rows, 1 / batch)
            buf[-1] = 0.0
            comm.Allreduce(in_place, buf)
            network.step(theta, grad, 1e-4 / batch)

    def one_call():
        network.epoch(theta, data, order, batch, 1e-4)

    times = {one_call: [], per_batch: []}
    with threadpool_limits(1, user_api="blas"):
        for _ in range(repeats):
            for f in times:
                t0 = time.perf_counter()
                f()
                times[f].append((time.perf_counter() - t0) / n_batches * 1e6)
    return np.median(times[one_call]), np.median(times[per_batch])


def overhead(args):
    threads = args.threads or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"per-batch cost of returning to Python: {threads} OpenMP thread(s), "
          f"BLAS 1, float32, load average {load:.1f}")
    print(f"{'network':>16} {'batch':>5} {'one core call':>14} "
          f"{'per-batch path':>15} {'difference':>11}")
    cases = [((8, 4, 3), 8, 2000),
             ((784, *args.layers, 10), args.global_batch, 20)]
    for units, batch, n_batches in cases:
        epoch_us, batch_us = _round_trip(units, batch, n_batches, threads)
        name = "-".join(map(str, units))
        print(f"{name:>16} {batch:>5} {epoch_us:>11.1f} us {batch_us:>12.1f} us "
              f"{batch_us - epoch_us:>8.1f} us")


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
        threads = args.threads or max(1, n_cores // K)
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
    parser.add_argument("--threads", type=int, default=None,
                        help="OpenMP threads per rank (default cores / K)")
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
