"""Digests of the weights that a grid of fits trains, to compare two builds.

A change to the core that should not change any result (a refactor, a
faster kernel that adds in the same order) is checked by running this script
on the build before and after it, on the same machine, and comparing the
output line by line: every line names one fit and the SHA-256 of its trained
parameters (``coefs_``, ``intercepts_`` and, with prelu, the slopes), its
``loss_`` and its ``n_iter_``.

The grid covers every activation, output and loss, every solver, float32
and float64, dropout, weight decay, sparse input, sample and class weights,
early stopping and one and two threads, on small data so that it runs in
about a minute::

    python benchmarks/weights_digest.py > before.txt
    # rebuild
    python benchmarks/weights_digest.py > after.txt
    diff before.txt after.txt && echo unchanged
"""

import argparse
import hashlib
import itertools
import warnings

import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning

from cbp import MLPClassifier, MLPRegressor

ACTIVATIONS = (
    "identity", "logistic", "tanh", "relu", "leaky_relu", "elu", "softplus",
    "prelu",
)
SOLVERS = ("sgd", "adam", "rmsprop", "lbfgs")


def _data(rng, n=173, d=11):
    X = rng.standard_normal((n, d))
    y_multi = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 0.5)
    y_bin = (X[:, 3] > 0).astype(int)
    y_label = np.stack([X[:, 0] > 0, X[:, 4] > 0], axis=1).astype(int)
    y_reg = X[:, :2] @ np.array([[1.0, -0.5], [0.3, 2.0]]) + 0.1 * X[:, 5:7]
    return X, y_multi, y_bin, y_label, y_reg


def _digest(est):
    h = hashlib.sha256()
    for a in list(est.coefs_) + list(est.intercepts_):
        h.update(np.ascontiguousarray(a).tobytes())
    for a in getattr(est, "prelu_slopes_", None) or ():
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(np.float64(est.loss_).tobytes())
    return f"{h.hexdigest()[:24]} n_iter={est.n_iter_}"


def _fits():
    rng = np.random.default_rng(0)
    X, y_multi, y_bin, y_label, y_reg = _data(rng)
    sw = rng.uniform(0.2, 2.0, X.shape[0])
    targets = {
        "multiclass": (MLPClassifier, y_multi, {}),
        "binary": (MLPClassifier, y_bin, {}),
        "multilabel": (MLPClassifier, y_label, {}),
        "squared_error": (MLPRegressor, y_reg, {}),
        "poisson": (MLPRegressor, np.exp(0.3 * y_reg[:, 0]), {"loss": "poisson"}),
        "huber": (MLPRegressor, y_reg, {"loss": "huber"}),
    }
    base = dict(hidden_layer_sizes=(13, 7), max_iter=4, random_state=0,
                batch_size=40, tol=0, n_iter_no_change=100)
    for (target, (cls, y, extra)), act, solver, dtype in itertools.product(
            targets.items(), ACTIVATIONS, SOLVERS, (np.float32, np.float64)):
        params = {**base, **extra, "activation": act, "solver": solver}
        yield f"{target} {act} {solver} {np.dtype(dtype).name}", cls, params, \
            X.astype(dtype), y, {}
    # the options, each on one configuration per solver family
    Xs = sp.random(X.shape[0], 40, density=0.2, format="csr", random_state=1)
    options = [
        ("dropout", dict(dropout=0.3), X, {}),
        ("dropout-per-layer", dict(dropout=[0.1, 0.5]), X, {}),
        ("weight-decay", dict(weight_decay=0.01), X, {}),
        ("nesterov-off", dict(nesterovs_momentum=False), X, {}),
        ("invscaling", dict(learning_rate="invscaling"), X, {}),
        ("alpha", dict(alpha=0.3), X, {}),
        ("sparse", {}, Xs, {}),
        ("sample-weight", {}, X, {"sample_weight": sw}),
        ("early-stopping", dict(early_stopping=True, max_iter=8), X, {}),
        ("no-shuffle", dict(shuffle=False), X, {}),
        ("n_jobs=2", dict(n_jobs=2), X, {}),
        ("n_jobs=1", dict(n_jobs=1), X, {}),
        ("batch-1000", dict(batch_size=1000), X, {}),
    ]
    for (name, opt, Xo, fit_kw), solver, dtype in itertools.product(
            options, ("sgd", "adam", "rmsprop", "lbfgs"),
            (np.float32, np.float64)):
        if solver == "lbfgs" and name in (
                "dropout", "dropout-per-layer", "weight-decay", "nesterov-off",
                "invscaling", "early-stopping", "no-shuffle", "batch-1000"):
            continue
        params = {**base, "activation": "relu", "solver": solver, **opt}
        yield f"option {name} {solver} {np.dtype(dtype).name}", MLPClassifier, \
            params, Xo.astype(dtype), y_multi, fit_kw
        params = {**params, "activation": "prelu"}
        yield f"option {name} prelu {solver} {np.dtype(dtype).name}", \
            MLPRegressor, params, Xo.astype(dtype), y_reg, fit_kw
    for cw in ("balanced", {0: 1.0, 1: 3.0, 2: 0.5}):
        yield f"class_weight {cw}", MLPClassifier, \
            {**base, "solver": "adam", "class_weight": cw}, X, y_multi, {}
    # partial_fit continues the optimizer's state
    yield "partial_fit", "partial_fit", {**base, "solver": "adam"}, X, y_multi, {}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", default="", help="only fits whose name has this")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", ConvergenceWarning)
    # batch_size=1000 is clipped to the data on purpose
    warnings.simplefilter("ignore", UserWarning)
    for name, cls, params, X, y, fit_kw in _fits():
        if args.k not in name:
            continue
        try:
            if cls == "partial_fit":
                est = MLPClassifier(**params)
                for _ in range(3):
                    est.partial_fit(X, y, classes=np.unique(y))
            else:
                est = cls(**params).fit(X, y, **fit_kw)
            print(f"{name}: {_digest(est)}", flush=True)
        except (ValueError, TypeError) as exc:
            print(f"{name}: error {type(exc).__name__}: {exc}", flush=True)


if __name__ == "__main__":
    main()
