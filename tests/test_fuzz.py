"""Fuzzing the estimators with hypothesis: work or a clear error, never a crash.

Each example draws a problem (samples, features, hidden layers, batch size,
dtype, memory layout, activation, solver, target kind, a few special
values) and fits and predicts. Either both work and the outputs have the
right shape and are finite, or the estimator raises a ValueError or
TypeError with a message (predict too: a NaN or infinite output is an
error, not a result). Anything else (another exception, NaN output, a
crash of the process) fails. The examples are derandomized so CI runs the
same ones every time; set CBP_FUZZ_EXAMPLES to run more locally.
"""

import os
import warnings

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sklearn.exceptions import ConvergenceWarning

from cbp import MLPClassifier, MLPRegressor

FUZZ_EXAMPLES = int(os.environ.get("CBP_FUZZ_EXAMPLES", "60"))

TARGETS = ["binary", "multiclass", "one_class", "strings", "multilabel",
           "regression", "multi_regression"]
DTYPES = [np.float64, np.float32, np.float16, np.int64, np.uint8, np.bool_]
SPECIALS = [None, None, None, np.nan, np.inf, -np.inf, 1e30]


@st.composite
def problems(draw):
    n = draw(st.integers(1, 120))
    return dict(
        n_samples=n,
        n_features=draw(st.integers(1, 9)),
        hidden=tuple(draw(st.lists(st.integers(1, 17), max_size=3))),
        batch_size=draw(st.one_of(st.just("auto"), st.integers(1, 2 * n + 5))),
        dtype=draw(st.sampled_from(DTYPES)),
        layout=draw(st.sampled_from(["C", "F", "read-only", "list", "strided"])),
        activation=draw(st.sampled_from(["identity", "logistic", "tanh", "relu"])),
        solver=draw(st.sampled_from(["sgd", "adam", "lbfgs"])),
        target=draw(st.sampled_from(TARGETS)),
        scale=draw(st.sampled_from([1.0, 1e-3, 1e3])),
        special=draw(st.sampled_from(SPECIALS)),
        sample_weight=draw(st.sampled_from([None, "uniform", "with_zeros"])),
        early_stopping=draw(st.booleans()),
        max_iter=draw(st.integers(1, 6)),
        n_jobs=draw(st.sampled_from([1, 2, 3, None])),
        seed=draw(st.integers(0, 2**16)),
        partial=draw(st.booleans()),
    )


def _make(p):
    rng = np.random.RandomState(p["seed"])
    n, f = p["n_samples"], p["n_features"]
    X = rng.normal(size=(n, f)) * p["scale"]
    if p["special"] is not None:
        X[rng.randint(n), rng.randint(f)] = p["special"]
    t = p["target"]
    if t == "binary":
        y = rng.randint(0, 2, n)
    elif t == "multiclass":
        y = rng.randint(0, 4, n)
    elif t == "one_class":
        y = np.full(n, 3)
    elif t == "strings":
        y = np.array(["a", "b", "c"])[rng.randint(0, 3, n)]
    elif t == "multilabel":
        y = rng.randint(0, 2, (n, 3))
    elif t == "regression":
        y = X[:, 0] if np.isfinite(X).all() else rng.normal(size=n)
        y = np.nan_to_num(y, posinf=0, neginf=0)
    else:
        y = rng.normal(size=(n, 2))
    with np.errstate(all="ignore"):
        X = X.astype(p["dtype"])
    if p["layout"] == "F":
        X = np.asfortranarray(X)
    elif p["layout"] == "read-only":
        X.flags.writeable = False
    elif p["layout"] == "list":
        X = X.tolist()
    elif p["layout"] == "strided":
        X = np.repeat(X, 2, axis=1)[:, ::2]
    sw = None
    if p["sample_weight"] == "uniform":
        sw = rng.uniform(0.1, 2.0, n)
    elif p["sample_weight"] == "with_zeros":
        sw = rng.randint(0, 2, n).astype(float)
    return X, y, sw


@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(problems())
def test_fit_predict_work_or_raise_a_clear_error(p):
    X, y, sw = _make(p)
    regression = p["target"] in ("regression", "multi_regression")
    Est = MLPRegressor if regression else MLPClassifier
    est = Est(
        hidden_layer_sizes=p["hidden"], activation=p["activation"], solver=p["solver"],
        batch_size=p["batch_size"], max_iter=p["max_iter"], n_jobs=p["n_jobs"],
        early_stopping=p["early_stopping"], random_state=p["seed"],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)  # batch_size clipped
        warnings.simplefilter("ignore", RuntimeWarning)  # float16 overflow in casts
        try:
            est.fit(X, y, sample_weight=sw)
            if p["partial"] and p["solver"] != "lbfgs" and not p["early_stopping"]:
                est.partial_fit(X, y, sample_weight=sw)
            out = est.predict(X)
            proba = None if regression else est.predict_proba(X)
        except (ValueError, TypeError) as exc:
            assert str(exc), "an error must say what is wrong"
            event(f"{type(exc).__name__}: {str(exc)[:40]}")
            return
    event("fit and predict work")

    n = p["n_samples"]
    n_out = 1 if np.ndim(y) == 1 else np.shape(y)[1]
    assert all(np.isfinite(c).all() for c in est.coefs_ + est.intercepts_)
    assert out.shape == ((n,) if n_out == 1 else (n, n_out))
    if regression:
        assert np.isfinite(out).all()
    else:
        assert proba.shape[0] == n and np.isfinite(proba).all()
        assert ((proba >= 0) & (proba <= 1)).all()
        if p["target"] == "multilabel":
            assert set(np.unique(out)) <= {0, 1}
        else:
            assert set(np.unique(out)) <= set(np.unique(y))
            if len(est.classes_) > 2:
                np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-3)

