"""Linear regression as a network: identity units recover known coefficients.

Data are drawn from ``y = X @ w + b + noise`` with known ``w`` and ``b``.
A network without hidden layers is exactly linear regression, and so is one
whose hidden layer has identity activations: its end-to-end coefficients
are ``W_0 @ W_1`` and ``b_0 @ W_1 + b_1``. Both are fitted with L-BFGS and
no penalty and compared with the true and the least-squares coefficients.

Run: ``python examples/regression.py [--quick]``
"""

import numpy as np

from _common import parser

from cbp import MLPRegressor


def main(argv=None):
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    n = 500 if args.quick else 20_000
    rng = np.random.RandomState(0)
    w_true = np.array([1.5, -2.0, 0.5, 0.0, 3.0])
    b_true = 0.7
    X = rng.normal(size=(n, w_true.size))
    y = X @ w_true + b_true + 0.1 * rng.normal(size=n)
    A = np.c_[X, np.ones(n)]
    lstsq = np.linalg.lstsq(A, y, rcond=None)[0]

    kw = dict(activation="identity", solver="lbfgs", alpha=0.0, tol=1e-12,
              max_iter=5000, random_state=0)
    linear = MLPRegressor(hidden_layer_sizes=(), **kw).fit(X, y)
    w_lin = linear.coefs_[0].ravel()
    b_lin = linear.intercepts_[0][0]
    deep = MLPRegressor(hidden_layer_sizes=(4,), **kw).fit(X, y)
    W0, W1 = deep.coefs_
    b0, b1 = deep.intercepts_
    w_deep = (W0 @ W1).ravel()
    b_deep = (b0 @ W1 + b1)[0]

    print(f"{n} samples, y = X @ w + b + N(0, 0.1²)")
    print("coefficient   true   least squares   no hidden layer   identity hidden (4)")
    names = [f"w[{i}]" for i in range(w_true.size)] + ["b"]
    rows = zip(names, np.r_[w_true, b_true], lstsq, np.r_[w_lin, b_lin],
               np.r_[w_deep, b_deep])
    for name, t, ls, a, d in rows:
        print(f"{name:>11} {t:7.3f} {ls:15.6f} {a:17.6f} {d:21.6f}")
    err_lin = np.abs(np.r_[w_lin, b_lin] - lstsq).max()
    err_deep = np.abs(np.r_[w_deep, b_deep] - lstsq).max()
    print(f"max |network - least squares|: {err_lin:.1e} (no hidden layer), "
          f"{err_deep:.1e} (identity hidden layer)")
    print(f"max |network - true|: {np.abs(np.r_[w_lin, b_lin] - np.r_[w_true, b_true]).max():.3f}"
          " (the noise's share)")
    return err_lin, err_deep


if __name__ == "__main__":
    main()
