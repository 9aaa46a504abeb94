"""Run by tests/test_scale_out.py under ``mpiexec -n K``: not a test module.

Usage: ``python mpi_worker.py MODE OUT [DTYPE]`` with MODE ``fit`` (every rank
trains on an uneven contiguous shard of ``make_data()``; rank 0 writes its
weights, loss curve and the largest weight difference between ranks to
OUT), ``raise`` (rank 1 raises before the first collective step, the other
ranks wait in fit) or ``badrank`` (rank 1 passes data with a wrong number
of features: every rank must raise ValueError, none hang).
"""

import sys

import numpy as np
from mpi4py import MPI

import cbp.mpi
from cbp import MLPClassifier

PARAMS = dict(hidden_layer_sizes=(16, 8), batch_size=40, max_iter=4, tol=0.0,
              random_state=0, alpha=1e-3)


def make_data():
    rng = np.random.RandomState(42)
    X = rng.randn(403, 12)
    y = np.digitize(X[:, 0] + 0.5 * X[:, 1], [-0.7, 0.0, 0.7])  # 4 classes
    sw = rng.uniform(0.2, 2.0, X.shape[0])
    return X, y, sw


def split_points(n, n_ranks):
    """Uneven shards: rank k gets about (k + 1) / sum shares."""
    w = np.arange(1, n_ranks + 1, dtype=float)
    return np.concatenate([[0], np.round(np.cumsum(w) / w.sum() * n)]).astype(int)


def main(mode, out, dtype="float64"):
    cbp.mpi.abort_on_exception()
    comm = MPI.COMM_WORLD
    rank, K = comm.Get_rank(), comm.Get_size()
    X, y, sw = make_data()
    X = X.astype(dtype)
    edges = split_points(X.shape[0], K)
    rows = slice(edges[rank], edges[rank + 1])
    if mode == "raise" and rank == 1:
        raise RuntimeError("rank 1 fails on purpose")
    Xs = X[rows]
    if mode == "badrank" and rank == 1:
        Xs = Xs[:, :-1]
    for solver in ("adam", "sgd"):
        clf = MLPClassifier(solver=solver, comm=comm, **PARAMS)
        try:
            clf.fit(Xs, y[rows], sample_weight=sw[rows])
        except ValueError as exc:
            if mode != "badrank":
                raise
            print(f"rank {rank}: ValueError: {exc}", flush=True)
            return
        thetas = comm.gather(clf._theta, root=0)
        if rank == 0:
            spread = max(float(np.abs(t - thetas[0]).max()) for t in thetas)
            np.savez(f"{out}.{solver}.npz", theta=clf._theta,
                     loss_curve=np.array(clf.loss_curve_), spread=spread,
                     classes=clf.classes_, t=clf.t_)
    if mode == "badrank":
        raise SystemExit("badrank: fit did not raise")


if __name__ == "__main__":
    main(*sys.argv[1:])
