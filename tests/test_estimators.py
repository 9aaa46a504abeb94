"""Behaviour of the estimators beyond parity: dtypes, state, pickling, errors."""

import pickle
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.estimator_checks import parametrize_with_checks

from cbp import MLPClassifier, MLPRegressor


@parametrize_with_checks([MLPClassifier(max_iter=100), MLPRegressor(max_iter=100)])
def test_sklearn_compatible_estimator(estimator, check, monkeypatch):
    # scikit-learn's array-API check skips unless SCIPY_ARRAY_API is set;
    # for an estimator without array API support it checks that NumPy input
    # under array_api_dispatch gives the same results, which applies here
    monkeypatch.setenv("SCIPY_ARRAY_API", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X / 16, y


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_float32_trains_in_float32(digits, solver):
    X, y = digits
    X32 = X.astype(np.float32)
    lr = 0.1 if solver == "sgd" else 0.001
    clf = MLPClassifier(hidden_layer_sizes=(30,), solver=solver, max_iter=30,
                        learning_rate_init=lr, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X32, y)
    assert all(c.dtype == np.float32 for c in clf.coefs_ + clf.intercepts_)
    assert clf.predict_proba(X32).dtype == np.float32
    assert clf.score(X32, y) > 0.9
    # float64 input to a float32 model is computed in float64
    assert clf.predict_proba(X).dtype == np.float64


def test_float32_and_float64_agree(digits):
    X, y = digits
    kw = dict(hidden_layer_sizes=(20,), max_iter=5, random_state=0, shuffle=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = MLPClassifier(**kw).fit(X.astype(np.float32), y)
        b = MLPClassifier(**kw).fit(X, y)
    np.testing.assert_allclose(a.coefs_[0], b.coefs_[0], rtol=1e-3, atol=1e-4)


def test_predict_proba_is_a_distribution(digits):
    X, y = digits
    clf = MLPClassifier(hidden_layer_sizes=(20,), max_iter=20, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    P = clf.predict_proba(X)
    np.testing.assert_allclose(P.sum(axis=1), 1, rtol=1e-12)
    np.testing.assert_allclose(clf.predict_log_proba(X), np.log(P))
    np.testing.assert_array_equal(clf.classes_[P.argmax(1)], clf.predict(X))


def test_string_labels_and_binary():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(200, 3))
    y = np.where(X[:, 0] + X[:, 1] > 0, "pos", "neg")
    clf = MLPClassifier(hidden_layer_sizes=(10,), solver="lbfgs", random_state=0).fit(X, y)
    assert list(clf.classes_) == ["neg", "pos"]
    assert clf.out_activation_ == "logistic" and clf.n_outputs_ == 1
    assert clf.predict_proba(X).shape == (200, 2)
    assert clf.score(X, y) > 0.95


def test_multi_output_regression():
    X, Y = make_regression(n_samples=300, n_features=5, n_targets=3, random_state=0)
    Y = Y / Y.std(axis=0)
    reg = MLPRegressor(hidden_layer_sizes=(30,), solver="lbfgs", max_iter=500,
                       random_state=0).fit(X, Y)
    assert reg.predict(X).shape == (300, 3)
    assert reg.score(X, Y) > 0.95


def test_warm_start_continues_from_current_weights(digits):
    X, y = digits
    kw = dict(hidden_layer_sizes=(20,), max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier(warm_start=True, **kw).fit(X, y)
        w1 = clf.coefs_[0].copy()
        # the user edits a weight in place: training starts from the edited value
        clf.coefs_[0][0, 0] = 5.0
        clf.fit(X, y)
        assert not np.allclose(clf.coefs_[0], w1)
        # replacing the arrays outright works as well
        clf.coefs_ = [c.copy() for c in clf.coefs_]
        before = clf.coefs_[1].copy()
        clf.fit(X, y)
        assert not np.allclose(clf.coefs_[1], before)
        cold = MLPClassifier(**kw).fit(X, y)
        assert not np.allclose(cold.coefs_[0], clf.coefs_[0])


def test_partial_fit_equals_fit_epochs(digits):
    X, y = digits
    kw = dict(hidden_layer_sizes=(20,), random_state=0, shuffle=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        full = MLPClassifier(max_iter=3, **kw).fit(X, y)
    inc = MLPClassifier(**kw)
    for _ in range(3):
        inc.partial_fit(X, y, classes=np.unique(y))
    np.testing.assert_allclose(inc.coefs_[0], full.coefs_[0], rtol=1e-10, atol=1e-12)
    assert inc.t_ == full.t_


def test_partial_fit_rejects_unknown_classes():
    X = np.random.RandomState(0).normal(size=(10, 2))
    clf = MLPClassifier().partial_fit(X, [0, 1] * 5, classes=[0, 1])
    with pytest.raises(ValueError, match="classes not in"):
        clf.partial_fit(X, [0, 2] * 5)
    with pytest.raises(ValueError, match="classes must be passed"):
        MLPClassifier().partial_fit(X, [0, 1] * 5)


def test_partial_fit_unavailable_for_lbfgs():
    assert not hasattr(MLPClassifier(solver="lbfgs"), "partial_fit")


def test_pickle_round_trip_keeps_predictions_and_training(digits):
    X, y = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier(hidden_layer_sizes=(20,), max_iter=5, random_state=0).fit(X, y)
    clone = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(clone.predict_proba(X), clf.predict_proba(X))
    # coefs_ are again views of one flat parameter vector after unpickling
    assert np.shares_memory(clone.coefs_[0], clone._theta)
    clone.partial_fit(X, y)
    clf.partial_fit(X, y)
    np.testing.assert_allclose(clone.coefs_[0], clf.coefs_[0], rtol=1e-12)


def test_pickle_naming_the_optimizer_in_the_estimators_module_loads(digits, monkeypatch):
    # pickles written by builds that defined the optimizer's class in
    # cbp._multilayer_perceptron name it there; they load as the same class
    from cbp._optimizers import _StochasticOptimizer

    X, y = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier(hidden_layer_sizes=(20,), max_iter=5, random_state=0).fit(X, y)
    with monkeypatch.context() as patch:
        patch.setattr(_StochasticOptimizer, "__module__", "cbp._multilayer_perceptron")
        data = pickle.dumps(clf)
    assert b"cbp._multilayer_perceptron" in data and b"cbp._optimizers" not in data
    clone = pickle.loads(data)
    assert type(clone._optimizer) is _StochasticOptimizer
    clone.partial_fit(X, y)
    clf.partial_fit(X, y)
    np.testing.assert_array_equal(clone.coefs_[0], clf.coefs_[0])


def test_same_seed_same_weights(digits):
    X, y = digits
    kw = dict(hidden_layer_sizes=(20,), max_iter=3, random_state=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = MLPClassifier(**kw).fit(X, y)
        b = MLPClassifier(**kw).fit(X, y)
    for u, v in zip(a.coefs_, b.coefs_):
        np.testing.assert_array_equal(u, v)


def test_convergence_warning_and_stopping():
    X, y = make_regression(n_samples=100, n_features=4, random_state=0)
    with pytest.warns(ConvergenceWarning, match="Maximum iterations"):
        MLPRegressor(max_iter=2, random_state=0).fit(X, y)
    reg = MLPRegressor(max_iter=500, tol=10.0, n_iter_no_change=2, random_state=0).fit(X, y)
    assert reg.n_iter_ < 500


def test_no_hidden_layer_is_a_linear_model():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(200, 3))
    y = X @ [1.0, -2.0, 3.0] + 0.5
    reg = MLPRegressor(hidden_layer_sizes=(), solver="lbfgs", alpha=0, tol=1e-10,
                       max_iter=1000).fit(X, y)
    np.testing.assert_allclose(reg.coefs_[0].ravel(), [1, -2, 3], atol=1e-4)
    np.testing.assert_allclose(reg.intercepts_[0], [0.5], atol=1e-4)


def test_divergence_raises_and_keeps_finite_weights():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(200, 5)) * 1e3
    y = X.sum(axis=1) * 1e3
    reg = MLPRegressor(solver="sgd", learning_rate_init=10.0, momentum=0.0,
                       max_iter=50, random_state=0)
    with pytest.raises(ValueError, match="diverged|non-finite"):
        reg.fit(X, y)
    assert all(np.isfinite(c).all() for c in reg.coefs_ + reg.intercepts_)


def test_bad_hyperparameters_give_clear_errors():
    X, y = np.ones((4, 2)), [0, 1, 0, 1]
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        MLPClassifier(hidden_layer_sizes=(3, 0)).fit(X, y)
    with pytest.raises(ValueError, match="learning_rate_init"):
        MLPClassifier(learning_rate_init=0).fit(X, y)
    with pytest.raises(ValueError, match="activation"):
        MLPClassifier(activation="swish").fit(X, y)
    with pytest.raises(ValueError, match="validation_fraction"):
        MLPClassifier(validation_fraction=1.0).fit(X, y)
