"""Inspection and interoperability: summary(), plot_loss_curve, to/from scikit-learn."""

import sys
import warnings

import numpy as np
import pytest
from sklearn import neural_network as sknn
from sklearn.datasets import load_digits, make_regression
from sklearn.exceptions import ConvergenceWarning, NotFittedError

from cbp import MLPClassifier, MLPRegressor, plot_loss_curve
from cbp import _core

from _support import counts, fit_quiet


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:500] / 16, y[:500]


def _fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y)


# ---------------------------------------------------------------- summary


def test_summary_table(digits, capsys):
    X, y = digits
    clf = _fit(MLPClassifier((30, 20), activation="tanh", max_iter=3, random_state=0), X, y)
    table = clf.summary()
    assert capsys.readouterr().out == table + "\n"
    lines = table.splitlines()
    assert lines[0].startswith("MLPClassifier: 3 weight layers, float64")
    rows = {line.split()[0]: line for line in lines[4:8]}
    assert list(rows) == ["input", "hidden_1", "hidden_2", "output"]
    assert "(None, 64)" in rows["input"]
    assert "(None, 30)" in rows["hidden_1"] and "tanh" in rows["hidden_1"]
    assert "(64, 30), (30,)" in rows["hidden_1"]
    assert rows["hidden_1"].split()[-1] == "1,950"  # 64 * 30 + 30
    assert rows["hidden_2"].split()[-1] == "620"
    assert "softmax" in rows["output"] and rows["output"].split()[-1] == "210"
    n = sum(c.size for c in clf.coefs_) + sum(b.size for b in clf.intercepts_)
    assert n == 2780 and f"Total params: {n:,} (21.7 KiB as float64)" in table


def test_summary_regressor_float32_and_print_fn():
    X, y = make_regression(n_samples=50, n_features=3, random_state=0)
    reg = _fit(MLPRegressor(hidden_layer_sizes=(4,), max_iter=2, random_state=0),
               X.astype(np.float32), y / 100)
    captured = []
    table = reg.summary(print_fn=captured.append)
    assert captured == [table]
    assert "identity" in table.splitlines()[-4]  # the output row
    assert "Total params: 21 (84 B as float32)" in table
    assert reg.summary(print_fn=None) == table


def test_summary_before_fit():
    with pytest.raises(NotFittedError, match="summary"):
        MLPClassifier().summary()


# ------------------------------------------------------------ loss curve


def test_plot_loss_curve(digits, tmp_path):
    mpl = pytest.importorskip("matplotlib")
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    X, y = digits
    clf = _fit(MLPClassifier((10,), max_iter=6, early_stopping=True, random_state=0), X, y)
    ax = plot_loss_curve(clf)
    x, loss = ax.lines[0].get_data()
    np.testing.assert_array_equal(x, np.arange(1, 7))
    np.testing.assert_array_equal(loss, clf.loss_curve_)
    right = ax.right_ax
    np.testing.assert_array_equal(right.lines[0].get_ydata(), clf.validation_scores_)
    best = int(np.argmax(clf.validation_scores_))
    assert right.lines[1].get_xdata()[0] == best + 1
    assert ax.get_xlabel() == "epoch" and "accuracy" in right.get_ylabel()
    ax.figure.savefig(tmp_path / "loss.png")
    assert (tmp_path / "loss.png").stat().st_size > 0
    plt.close("all")

    # on given axes, without early stopping: no right axis
    fig, given = plt.subplots()
    reg = _fit(MLPRegressor(hidden_layer_sizes=(5,), max_iter=4, random_state=0), X, y)
    assert plot_loss_curve(reg, ax=given) is given
    assert given.right_ax is None and len(fig.axes) == 1
    plt.close("all")


def test_plot_loss_curve_errors(digits, monkeypatch):
    X, y = digits
    with pytest.raises(NotFittedError):
        plot_loss_curve(MLPClassifier())
    lbfgs = _fit(MLPClassifier((5,), solver="lbfgs", max_iter=5), X, y)
    with pytest.raises(ValueError, match="no loss_curve_"):
        plot_loss_curve(lbfgs)
    # matplotlib missing: a clear ImportError
    clf = _fit(MLPClassifier((5,), max_iter=2), X, y)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"pip install matplotlib"):
        plot_loss_curve(clf)


# ------------------------------------------------------------- interop


def _classification_targets(kind, y):
    if kind == "multiclass":
        return y
    if kind == "binary":
        return np.where(y > 4, "big", "small")
    return np.c_[y > 4, y % 2 == 0]  # multilabel


@pytest.mark.parametrize("kind", ["multiclass", "binary", "multilabel"])
@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_to_sklearn_classifier_predicts_the_same(digits, kind, solver):
    X, y = digits
    y = _classification_targets(kind, y)
    clf = _fit(MLPClassifier((20, 10), activation="tanh", solver=solver, max_iter=20,
                             random_state=0, n_jobs=2), X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing dropped that matters
        sk = clf.to_sklearn()
    assert type(sk) is sknn.MLPClassifier
    assert sk.get_params()["activation"] == "tanh" and sk.solver == solver
    np.testing.assert_allclose(sk.predict_proba(X), clf.predict_proba(X),
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(sk.predict(X), clf.predict(X))
    assert sk.score(X, y) == clf.score(X, y)
    np.testing.assert_array_equal(sk.classes_, clf.classes_)
    # copies, not views of cbp's parameter vector
    sk.coefs_[0][0, 0] += 1
    assert clf.coefs_[0][0, 0] != sk.coefs_[0][0, 0]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_to_sklearn_regressor(dtype):
    X, Y = make_regression(n_samples=200, n_features=5, n_targets=2, random_state=0)
    X = X.astype(dtype)
    reg = _fit(MLPRegressor(hidden_layer_sizes=(8,), max_iter=30, random_state=0),
               X, Y / Y.std())
    sk = reg.to_sklearn()
    assert type(sk) is sknn.MLPRegressor and sk.coefs_[0].dtype == dtype
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(sk.predict(X), reg.predict(X), rtol=rtol, atol=rtol)
    np.testing.assert_array_equal(sk.loss_curve_, reg.loss_curve_)
    assert sk.n_iter_ == reg.n_iter_ and sk.t_ == reg.t_


def test_round_trip(digits):
    X, y = digits
    clf = _fit(MLPClassifier((16,), max_iter=10, early_stopping=True, random_state=0,
                             callbacks=[lambda est, info: None]), X, y)
    back = MLPClassifier.from_sklearn(clf.to_sklearn())
    assert type(back) is MLPClassifier
    for a, b in zip(back.coefs_ + back.intercepts_, clf.coefs_ + clf.intercepts_):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
    assert back.validation_scores_ == clf.validation_scores_
    params = clf.get_params()
    params.pop("callbacks")
    assert {k: v for k, v in back.get_params().items() if k != "callbacks"} == params
    # the packed parameter vector is rebuilt
    assert back.coefs_[0].base is back._theta or back.coefs_[0].base is back._theta.base


def test_from_sklearn_predicts_the_same_and_trains_on(digits):
    X, y = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk = sknn.MLPClassifier((12,), max_iter=10, random_state=0).fit(X, y)
    clf = MLPClassifier.from_sklearn(sk)
    np.testing.assert_allclose(clf.predict_proba(X), sk.predict_proba(X), rtol=1e-12,
                               atol=1e-14)
    # warm start from scikit-learn's weights: one epoch later the loss is lower
    _fit(clf.set_params(warm_start=True, max_iter=1), X, y)
    assert clf.loss_ < sk.loss_
    X_r, y_r = make_regression(n_samples=80, n_features=3, random_state=0)
    sk_r = _fit(sknn.MLPRegressor(hidden_layer_sizes=(4,), solver="lbfgs", max_iter=20,
                                  random_state=0), X_r, y_r)
    reg = MLPRegressor.from_sklearn(sk_r)
    np.testing.assert_allclose(reg.predict(X_r), sk_r.predict(X_r), rtol=1e-12)


def test_from_sklearn_wrong_kind_or_unfitted(digits):
    X, y = digits
    sk = _fit(sknn.MLPRegressor(hidden_layer_sizes=(3,), max_iter=2), X, y)
    with pytest.raises(TypeError, match="from_sklearn takes a fitted"):
        MLPClassifier.from_sklearn(sk)
    with pytest.raises(TypeError):
        MLPRegressor.from_sklearn(object())
    with pytest.raises(NotFittedError):
        MLPRegressor.from_sklearn(sknn.MLPRegressor())
    with pytest.raises(NotFittedError):
        MLPRegressor().to_sklearn()


def test_from_sklearn_poisson(digits):
    X, y = digits
    sk = _fit(sknn.MLPRegressor(hidden_layer_sizes=(5,), loss="poisson", max_iter=5,
                                random_state=0), X, y)
    if "poisson" in MLPRegressor._parameter_constraints["loss"][0].options and (
        "exp" in _core.OUTPUT_ACTIVATIONS
    ):
        reg = MLPRegressor.from_sklearn(sk)
        np.testing.assert_allclose(reg.predict(X), sk.predict(X), rtol=1e-12)
    else:
        with pytest.raises(ValueError, match="cbp cannot express"):
            MLPRegressor.from_sklearn(sk)


@pytest.mark.parametrize(
    "attr, value, match",
    [
        ("activation", "leaky_relu", "cannot express activation='leaky_relu'"),
        ("out_activation_", "exp_other", "no output activation 'exp_other'"),
    ],
)
def test_to_sklearn_refuses_what_sklearn_lacks(digits, attr, value, match):
    X, y = digits
    clf = _fit(MLPClassifier((5,), max_iter=2, random_state=0), X, y)
    # set directly: the check reads the values at run time, whatever cbp offers
    setattr(clf, attr, value)
    with pytest.raises(ValueError, match=match):
        clf.to_sklearn()


def test_to_sklearn_refuses_a_loss_sklearn_lacks(digits):
    X, y = digits
    reg = _fit(MLPRegressor(hidden_layer_sizes=(5,), max_iter=2, random_state=0), X, y)
    reg.loss = "huber"
    with pytest.raises(ValueError, match="cannot express loss='huber'"):
        reg.to_sklearn()


def test_to_sklearn_refuses_extra_trainable_parameters(digits):
    X, y = digits
    clf = _fit(MLPClassifier((5,), max_iter=2, random_state=0), X, y)
    clf._theta = np.concatenate([clf._theta, np.ones(5)])  # e.g. learned slopes
    with pytest.raises(ValueError, match="beyond coefs_ and intercepts_"):
        clf.to_sklearn()


class _WithExtraParameter(MLPClassifier):
    """A cbp classifier with a training parameter scikit-learn lacks."""

    def __init__(self, hidden_layer_sizes=(100,), *, max_iter=200, random_state=None,
                 extra=0.0):
        super().__init__(hidden_layer_sizes, max_iter=max_iter, random_state=random_state)
        self.extra = extra


def test_to_sklearn_warns_about_dropped_training_parameters(digits):
    X, y = digits
    est = _WithExtraParameter((5,), max_iter=2, random_state=0)
    est._parameter_constraints = {**MLPClassifier._parameter_constraints, "extra": [float]}
    _fit(est, X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est.to_sklearn()  # at its default: dropped silently
    est.extra = 0.5
    with pytest.warns(UserWarning, match=r"has no extra=0.5.*train differently"):
        sk = est.to_sklearn()
    np.testing.assert_allclose(sk.predict_proba(X), est.predict_proba(X), rtol=1e-12)


def test_to_sklearn_with_poisson_huber_and_dropout():
    X, y = counts()
    poisson = fit_quiet(MLPRegressor(loss="poisson", hidden_layer_sizes=(6,), max_iter=20,
                                      random_state=0), X, y)
    np.testing.assert_allclose(poisson.to_sklearn().predict(X), poisson.predict(X),
                               rtol=1e-12)
    huber = fit_quiet(MLPRegressor(loss="huber", hidden_layer_sizes=(6,), max_iter=2,
                                    random_state=0), X, y)
    with pytest.raises(ValueError, match="loss='huber'"):
        huber.to_sklearn()
    dropped = fit_quiet(MLPRegressor(dropout=0.2, solver="rmsprop", hidden_layer_sizes=(6,),
                                      max_iter=2, random_state=0), X, y)
    with pytest.warns(UserWarning, match="dropout"):
        sk = dropped.to_sklearn()
    np.testing.assert_allclose(sk.predict(X), dropped.predict(X), rtol=1e-12)
