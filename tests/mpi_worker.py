"""Run by tests/test_scale_out.py under ``mpiexec -n K``: not a test module.

Usage: ``python mpi_worker.py MODE OUT [DTYPE]`` with MODE ``fit`` (every rank
trains on an uneven contiguous shard of ``make_data()``; rank 0 writes its
weights, loss curve and the largest weight difference between ranks to
OUT), ``features`` (the same for each configuration of
``feature_configs()``, to ``OUT.<name>.npz``), ``interrupt`` (lbfgs; rank 1
gets Ctrl-C during its third loss evaluation: every rank must stop at the
same point and finish), ``diverge`` (lbfgs; rank 1's loss is NaN from its
third evaluation on: every rank must keep the best point and raise),
``diverge_first`` (lbfgs; rank 1's loss is NaN from its first evaluation:
no rank has a finite point, every rank must keep the initial weights and
raise that lbfgs cannot start), ``interrupt_adam`` (adam; rank 1 gets
Ctrl-C during the second batch of the second epoch: every rank must finish
that batch, stop with the same weights and finish), ``interrupt_between``
and ``interrupt_last`` (adam; rank 1 gets Ctrl-C in a callback after the
first epoch, or after the last of two: every rank must stop after the
next batch, or warn at the end of the fit),
``raise`` (rank 1 raises before the first collective step, the other
ranks wait in fit) or ``badrank`` (rank 1 passes data with a wrong number
of features: every rank must raise ValueError, none hang).
"""

import os
import signal
import sys
import warnings
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from mpi4py import MPI

import cbp.mpi
from cbp import MLPClassifier, MLPRegressor

PARAMS = dict(hidden_layer_sizes=(16, 8), batch_size=40, max_iter=4, tol=0.0,
              random_state=0, alpha=1e-3)


def make_data():
    rng = np.random.RandomState(42)
    X = rng.randn(403, 12)
    y = np.digitize(X[:, 0] + 0.5 * X[:, 1], [-0.7, 0.0, 0.7])  # 4 classes
    sw = rng.uniform(0.2, 2.0, X.shape[0])
    return X, y, sw


def make_regression_data():
    rng = np.random.RandomState(7)
    X = rng.randn(311, 6)
    y = np.stack([X[:, 0] - 0.5 * X[:, 1] ** 2, np.abs(X[:, 2])], axis=1)
    counts = rng.poisson(np.exp(0.5 * X[:, 0]))  # poisson targets
    sw = rng.uniform(0.2, 2.0, X.shape[0])
    return X, y, counts, sw


def _sparse(X):
    X = np.where(np.abs(X) > 0.8, X, 0.0)
    return sp.csr_matrix(X)


# each configuration: (estimator class, parameters, data); data is
# (X, y, sample_weight or None); the batch_size given is per rank
_SMALL = dict(hidden_layer_sizes=(9, 5), batch_size=30, max_iter=3, tol=0.0,
              random_state=0, alpha=1e-3, learning_rate_init=0.01)


def feature_configs(dtype="float64"):
    """The configurations that ``features`` fits, by name."""
    X, y, sw = make_data()
    X = X.astype(dtype)
    Xr, yr, counts, swr = make_regression_data()
    Xr = Xr.astype(dtype)
    clf, reg = MLPClassifier, MLPRegressor
    return {
        "rmsprop": (clf, dict(_SMALL, solver="rmsprop"), (X, y, sw)),
        "weight_decay": (clf, dict(_SMALL, weight_decay=0.05), (X, y, sw)),
        "dropout": (clf, dict(_SMALL, solver="sgd", dropout=(0.3, 0.1)), (X, y, sw)),
        "leaky_relu": (clf, dict(_SMALL, activation="leaky_relu",
                                 leaky_relu_slope=0.1), (X, y, sw)),
        "prelu": (clf, dict(_SMALL, activation="prelu"), (X, y, sw)),
        "sparse": (clf, dict(_SMALL), (_sparse(X), y, sw)),
        "balanced": (clf, dict(_SMALL, class_weight="balanced"), (X, y, None)),
        "balanced_sw": (clf, dict(_SMALL, class_weight="balanced"), (X, y, sw)),
        "huber": (reg, dict(_SMALL, loss="huber", huber_delta=0.5), (Xr, yr, swr)),
        "poisson": (reg, dict(_SMALL, loss="poisson"), (Xr, counts, swr)),
        "lbfgs": (clf, dict(_SMALL, solver="lbfgs", max_iter=12), (X, y, sw)),
        "lbfgs_sparse_huber": (reg, dict(_SMALL, solver="lbfgs", max_iter=12,
                                         loss="huber"), (_sparse(Xr), yr, swr)),
        # stops before max_iter (at epoch 4, 6, 7 for 1, 2, 3 ranks)
        "early_stopping": (clf, dict(_SMALL, early_stopping=True, max_iter=10,
                                     n_iter_no_change=1, validation_fraction=0.25),
                           (X, y, sw)),
        "early_stopping_reg": (reg, dict(_SMALL, early_stopping=True,
                                         max_iter=5), (Xr, yr, None)),
        "early_stopping_sparse_dropout": (
            clf, dict(_SMALL, early_stopping=True, max_iter=5, dropout=0.2,
                      solver="rmsprop", activation="prelu"), (_sparse(X), y, None)),
    }


def fit_record(est):
    """What the features tests compare of a fitted estimator."""
    record = dict(theta=est._theta, n_iter=est.n_iter_, loss=est.loss_)
    for name in ("loss_curve_", "validation_scores_", "validation_loss_curve_"):
        value = getattr(est, name, None)
        if value is not None:
            record[name] = np.array(value)
    if getattr(est, "best_validation_score_", None) is not None:
        record["best_validation_score_"] = est.best_validation_score_
    if hasattr(est, "t_"):
        record["t"] = est.t_
    return record


def split_points(n, n_ranks):
    """Uneven shards: rank k gets about (k + 1) / sum shares."""
    w = np.arange(1, n_ranks + 1, dtype=float)
    return np.concatenate([[0], np.round(np.cumsum(w) / w.sum() * n)]).astype(int)


def main(mode, out, dtype="float64"):
    cbp.mpi.abort_on_exception()
    comm = MPI.COMM_WORLD
    rank, K = comm.Get_rank(), comm.Get_size()
    if mode == "features":
        return fit_features(comm, out, dtype)
    if mode in FAULTS:
        return fit_faulty(comm, out, mode)
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


def fit_features(comm, out, dtype):
    rank, K = comm.Get_rank(), comm.Get_size()
    for name, (cls, params, (X, y, sw)) in feature_configs(dtype).items():
        edges = split_points(X.shape[0], K)
        rows = slice(edges[rank], edges[rank + 1])
        est = cls(comm=comm, **params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(X[rows], y[rows], sample_weight=None if sw is None else sw[rows])
        thetas = comm.gather(est._theta, root=0)
        if rank == 0:
            spread = max(float(np.abs(t - thetas[0]).max()) for t in thetas)
            np.savez(f"{out}.{name}.npz", spread=spread, **fit_record(est))


class Fault(NamedTuple):
    """A fault of fit_faulty: the fit's solver and max_iter, and where rank
    1 fails: from its ``evaluation``-th full-batch evaluation on (lbfgs),
    in the second batch of the second epoch (``batch``), or in a callback
    after epoch ``after_epoch``."""

    solver: str
    max_iter: int = 50
    evaluation: int | None = None
    batch: bool = False
    after_epoch: int | None = None


FAULTS = {
    "interrupt": Fault("lbfgs", evaluation=3),
    "diverge": Fault("lbfgs", evaluation=3),
    "diverge_first": Fault("lbfgs", evaluation=1),
    "interrupt_adam": Fault("adam", batch=True),
    "interrupt_between": Fault("adam", after_epoch=1),
    "interrupt_last": Fault("adam", max_iter=2, after_epoch=2),
}


class _FaultyNetwork:
    """A network whose full-batch evaluations on rank 1 fail from the
    ``FAULTS[fault].evaluation``-th on: Ctrl-C during that one
    (``interrupt``), or a NaN loss (``diverge``, ``diverge_first``); or
    whose batch step on rank 1 gets Ctrl-C during its ``batch``-th call
    (``interrupt_adam``)."""

    def __init__(self, network, rank, fault, batch=None):
        self.network, self.rank, self.fault, self.calls = network, rank, fault, 0
        self.batch, self.batches = batch, 0

    def __getattr__(self, name):
        return getattr(self.network, name)

    def loss_grad(self, *args, **kwargs):
        self.calls += 1
        first = FAULTS[self.fault].evaluation
        faulty = self.rank == 1 and self.calls >= first
        if faulty and self.fault == "interrupt" and self.calls == first:
            os.kill(os.getpid(), signal.SIGINT)
        data, penalty = self.network.loss_grad(*args, **kwargs)
        if faulty and self.fault != "interrupt":
            data = np.nan
        return data, penalty

    def batch_grad(self, *args, **kwargs):
        self.batches += 1
        if self.rank == 1 and self.batches == self.batch:
            os.kill(os.getpid(), signal.SIGINT)
        return self.network.batch_grad(*args, **kwargs)


class _FaultyClassifier(MLPClassifier):
    fault = None
    batch = None

    def _network(self, dtype, n_threads=None):
        network = super()._network(dtype, n_threads)
        return _FaultyNetwork(network, self.comm.Get_rank(), self.fault, self.batch)


def batches_per_epoch(n_ranks):
    """Global batches of an epoch of make_data() with _SMALL's batch size."""
    return -(-make_data()[0].shape[0] // (n_ranks * _SMALL["batch_size"]))


def fit_faulty(comm, out, fault):
    """A fit with a fault on rank 1 (``FAULTS``); rank 0 saves what every
    rank ended with: whether it warned of an interrupt, the error it
    raised, and the weights."""
    rank, K = comm.Get_rank(), comm.Get_size()
    X, y, sw = make_data()
    edges = split_points(X.shape[0], K)
    rows = slice(edges[rank], edges[rank + 1])
    spec = FAULTS[fault]

    def ctrl_c(est, info):
        if rank == 1 and info["epoch"] == spec.after_epoch:
            os.kill(os.getpid(), signal.SIGINT)

    est = _FaultyClassifier(
        comm=comm, callbacks=[ctrl_c] if spec.after_epoch else None,
        **dict(_SMALL, solver=spec.solver, max_iter=spec.max_iter),
    )
    est.fault = fault
    if spec.batch:
        # the second batch of the second epoch
        est.batch = batches_per_epoch(K) + 2
    error = ""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            est.fit(X[rows], y[rows], sample_weight=sw[rows])
        except ValueError as exc:
            error = str(exc)
    interrupted = any("interrupted" in str(w.message) for w in caught)
    thetas = comm.gather(est._theta, root=0)
    flags = comm.gather(interrupted, root=0)
    errors = comm.gather(error, root=0)
    if rank == 0:
        spread = max(float(np.abs(t - thetas[0]).max()) for t in thetas)
        np.savez(f"{out}.npz", spread=spread, interrupted=np.array(flags),
                 errors=np.array(errors), **fit_record(est))


if __name__ == "__main__":
    main(*sys.argv[1:])
