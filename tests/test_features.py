"""Estimator features beyond scikit-learn's MLP."""

import contextlib
import pickle
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning

from cbp import MLPClassifier, MLPRegressor

from _reference import objective as ref_objective

NEW_ACTIVATIONS = ["leaky_relu", "elu", "softplus", "prelu"]


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:600] / 16, y[:600]


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _fd_grad(f, t, eps=1e-6):
    return np.array([(f(t + e) - f(t - e)) / (2 * eps) for e in np.eye(t.size) * eps])


def _flat_to_lists(est, t):
    """coefs, intercepts and PReLU slopes of ``est``'s layout at vector t."""
    layout = est._layout()
    coefs, intercepts = layout.views(t)
    return coefs, intercepts, layout.slope_views(t)


# ---------------------------------------------------------------------------
# Activations


@pytest.mark.parametrize("activation", NEW_ACTIVATIONS)
@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
def test_one_full_batch_sgd_step_follows_reference_gradient(Est, activation):
    """One plain SGD step from the initial weights moves theta by -lr * the
    gradient of the numpy reference objective (finite differences)."""
    rng = np.random.RandomState(0)
    X = rng.normal(size=(30, 3))
    y = rng.randint(0, 3, 30) if Est is MLPClassifier else rng.normal(size=30)
    est = Est(hidden_layer_sizes=(4, 3), activation=activation, solver="sgd",
              batch_size=30, shuffle=False, momentum=0.0, learning_rate_init=0.1,
              alpha=0.01, leaky_relu_slope=0.2, random_state=0, max_iter=1,
              warm_start=True)
    with _quiet():
        est.fit(X, y)
        # a known starting point, PReLU slopes of both signs included
        t0 = rng.uniform(-0.8, 0.8, est._theta.size)
        est._theta[:] = t0
        est.fit(X, y)
    if Est is MLPClassifier:
        Y = np.eye(3)[y]
        out = "softmax"
    else:
        Y = y[:, None]
        out = "identity"
    sw = np.ones(30)

    def f(t):
        c, b, s = _flat_to_lists(est, t)
        return ref_objective(c, b, X, Y, sw, activation, out, 0.01, slope=0.2, slopes=s)

    expected = t0 - 0.1 * _fd_grad(f, t0)
    np.testing.assert_allclose(est._theta, expected, rtol=1e-6, atol=1e-8)
    assert not np.allclose(est._theta, t0)


@pytest.mark.parametrize("activation", NEW_ACTIVATIONS)
def test_new_activations_learn_digits(digits, activation):
    X, y = digits
    clf = MLPClassifier(hidden_layer_sizes=(30,), activation=activation, max_iter=40,
                        random_state=0, learning_rate_init=0.01)
    with _quiet():
        clf.fit(X, y)
    assert clf.score(X, y) > 0.95


def test_leaky_relu_with_zero_slope_equals_relu(digits):
    X, y = digits
    kw = dict(hidden_layer_sizes=(20,), max_iter=3, random_state=0)
    with _quiet():
        a = MLPClassifier(activation="relu", **kw).fit(X, y)
        b = MLPClassifier(activation="leaky_relu", leaky_relu_slope=0.0, **kw).fit(X, y)
        c = MLPClassifier(activation="leaky_relu", **kw).fit(X, y)
    np.testing.assert_array_equal(a._theta, b._theta)
    assert not np.array_equal(a._theta, c._theta)


def test_prelu_slopes_are_views_learned_and_kept(digits):
    X, y = digits
    with _quiet():
        clf = MLPClassifier(hidden_layer_sizes=(20, 10), activation="prelu", max_iter=5,
                            random_state=0).fit(X, y)
    assert [s.shape for s in clf.prelu_slopes_] == [(20,), (10,)]
    for s in clf.prelu_slopes_:
        assert np.shares_memory(s, clf._theta)
    assert not np.allclose(np.concatenate(clf.prelu_slopes_), 0.25)
    # the slopes matter for predictions
    p = clf.predict_proba(X)
    clf.prelu_slopes_[0][:] = 0.0
    assert not np.allclose(clf.predict_proba(X), p)
    # replacing the list outright is packed again
    clf.prelu_slopes_ = [np.full(20, 0.5), np.full(10, 0.5)]
    p2 = clf.predict_proba(X)
    assert np.shares_memory(clf.prelu_slopes_[0], clf._theta)
    np.testing.assert_array_equal(clf.prelu_slopes_[1], 0.5)
    # pickling keeps them
    clone = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(clone.predict_proba(X), p2)
    assert np.shares_memory(clone.prelu_slopes_[0], clone._theta)
    # refitting with another activation drops them
    clf.set_params(activation="relu")
    with _quiet():
        clf.fit(X, y)
    assert not hasattr(clf, "prelu_slopes_")


def test_prelu_float32_and_lbfgs(digits):
    X, y = digits
    with _quiet():
        clf = MLPClassifier(hidden_layer_sizes=(15,), activation="prelu", solver="lbfgs",
                            max_iter=50, random_state=0).fit(X.astype(np.float32), y)
    assert clf.prelu_slopes_[0].dtype == np.float32
    assert clf.score(X, y) > 0.95


def test_bad_activation_parameters():
    X, y = np.ones((4, 2)), [0, 1, 0, 1]
    with pytest.raises(ValueError, match="leaky_relu_slope"):
        MLPClassifier(activation="leaky_relu", leaky_relu_slope=-1).fit(X, y)
    with pytest.raises(ValueError, match="activation"):
        MLPRegressor(activation="gelu").fit(X, y)


# ---------------------------------------------------------------------------
# Optimizers


def test_rmsprop_learns_and_supports_partial_fit(digits):
    X, y = digits
    with _quiet():
        clf = MLPClassifier(hidden_layer_sizes=(30,), solver="rmsprop", max_iter=30,
                            learning_rate_init=0.01, random_state=0).fit(X, y)
    assert clf.score(X, y) > 0.95
    assert clf._optimizer.state_2.size == 0
    inc = MLPClassifier(hidden_layer_sizes=(30,), solver="rmsprop", random_state=0,
                        shuffle=False)
    full = MLPClassifier(hidden_layer_sizes=(30,), solver="rmsprop", random_state=0,
                         shuffle=False, max_iter=3)
    with _quiet():
        full.fit(X, y)
    for _ in range(3):
        inc.partial_fit(X, y, classes=np.unique(y))
    np.testing.assert_allclose(inc._theta, full._theta, rtol=1e-12, atol=1e-14)


def test_rho_changes_rmsprop_only(digits):
    X, y = digits
    kw = dict(hidden_layer_sizes=(10,), max_iter=2, random_state=0)
    with _quiet():
        a = MLPClassifier(solver="rmsprop", rho=0.9, **kw).fit(X, y)
        b = MLPClassifier(solver="rmsprop", rho=0.5, **kw).fit(X, y)
        c = MLPClassifier(solver="adam", rho=0.9, **kw).fit(X, y)
        d = MLPClassifier(solver="adam", rho=0.5, **kw).fit(X, y)
    assert not np.allclose(a._theta, b._theta)
    np.testing.assert_array_equal(c._theta, d._theta)


@pytest.mark.parametrize("solver", ["sgd", "adam", "rmsprop"])
def test_weight_decay_shrinks_weights_not_biases(digits, solver):
    X, y = digits
    kw = dict(hidden_layer_sizes=(20,), max_iter=10, random_state=0, solver=solver,
              alpha=0.0, learning_rate_init=0.01)
    with _quiet():
        plain = MLPClassifier(**kw).fit(X, y)
        decayed = MLPClassifier(weight_decay=1.0, **kw).fit(X, y)
    norm = lambda est: sum(float((c**2).sum()) for c in est.coefs_)  # noqa: E731
    assert norm(decayed) < 0.8 * norm(plain)
    # the reported loss has no decay term: it stays the data loss
    assert decayed.loss_ > 0 and decayed.score(X, y) > plain.score(X, y) - 0.1


def test_weight_decay_with_lbfgs_is_an_error():
    X, y = np.ones((4, 2)), [0, 1, 0, 1]
    with pytest.raises(ValueError, match="weight_decay.*lbfgs"):
        MLPClassifier(solver="lbfgs", weight_decay=0.1).fit(X, y)
    with pytest.raises(ValueError, match="rho"):
        MLPClassifier(solver="rmsprop", rho=1.0).fit(X, y)
    with pytest.raises(ValueError, match="solver"):
        MLPClassifier(solver="adagrad").fit(X, y)
