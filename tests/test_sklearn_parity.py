"""cbp against scikit-learn from identical starting weights.

The estimators draw their initial weights, shuffles and validation splits
exactly as scikit-learn does, so with the same ``random_state`` both start
from the same point and see the same batches.
"""

import warnings

import numpy as np
import pytest
from sklearn import neural_network as sk
from sklearn.datasets import load_digits, make_multilabel_classification
from sklearn.exceptions import ConvergenceWarning

import cbp

HIDDEN = ["identity", "logistic", "tanh", "relu"]


def _targets(kind, n, rng):
    if kind == "regression":
        return rng.normal(size=n)
    if kind == "multi-output":
        return rng.normal(size=(n, 3))
    if kind == "binary":
        return rng.choice(["no", "yes"], n)
    if kind == "multiclass":
        return rng.randint(0, 4, n)
    if kind == "multilabel":
        return (rng.uniform(size=(n, 3)) > 0.5).astype(int)
    raise AssertionError(kind)


def _pair(kind, **params):
    if kind in ("regression", "multi-output"):
        return cbp.MLPRegressor(**params), sk.MLPRegressor(**params)
    return cbp.MLPClassifier(**params), sk.MLPClassifier(**params)


def _fit_both(kind, X, y, **params):
    ours, theirs = _pair(kind, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours.fit(X, y)
        theirs.fit(X, y)
    return ours, theirs


def _assert_same_weights(ours, theirs, rtol, atol=0.0):
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


KINDS = ["regression", "multi-output", "binary", "multiclass", "multilabel"]


@pytest.mark.parametrize("activation", HIDDEN)
@pytest.mark.parametrize("kind", KINDS)
def test_one_full_batch_sgd_step_equals_sklearn(kind, activation):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(40, 6))
    y = _targets(kind, 40, rng)
    ours, theirs = _fit_both(
        kind, X, y, hidden_layer_sizes=(8, 5), activation=activation, solver="sgd",
        max_iter=1, batch_size=40, shuffle=False, learning_rate_init=0.1,
        alpha=0.01, random_state=1,
    )
    # the step moved the weights: equality is not the trivial one of no step
    start, _ = _pair(kind, hidden_layer_sizes=(8, 5), activation=activation,
                     solver="sgd", max_iter=1, random_state=1)
    assert ours.n_iter_ == theirs.n_iter_ == 1
    _assert_same_weights(ours, theirs, rtol=1e-10, atol=1e-12)
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-10)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_minibatch_epochs_track_sklearn(kind, solver):
    """Several shuffled mini-batch epochs (momentum/Nesterov or Adam) stay on sklearn's path."""
    rng = np.random.RandomState(1)
    X = rng.normal(size=(300, 10))
    y = _targets(kind, 300, rng)
    ours, theirs = _fit_both(
        kind, X, y, hidden_layer_sizes=(16,), solver=solver, max_iter=5,
        batch_size=32, alpha=1e-3, random_state=0, learning_rate_init=0.01,
    )
    _assert_same_weights(ours, theirs, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-9)
    assert ours.t_ == theirs.t_


@pytest.mark.parametrize("schedule", ["invscaling", "adaptive"])
def test_learning_rate_schedules_match_sklearn(schedule):
    rng = np.random.RandomState(2)
    X = rng.normal(size=(120, 5))
    y = X @ rng.normal(size=5)
    ours, theirs = _fit_both(
        "regression", X, y, solver="sgd", learning_rate=schedule, max_iter=30,
        hidden_layer_sizes=(10,), random_state=0, tol=1e-2, n_iter_no_change=2,
        learning_rate_init=0.05,
    )
    assert ours.n_iter_ == theirs.n_iter_
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-8)


def test_early_stopping_matches_sklearn():
    X, y = load_digits(return_X_y=True)
    X = X / 16
    ours, theirs = _fit_both(
        "multiclass", X, y, hidden_layer_sizes=(32,), early_stopping=True,
        max_iter=40, random_state=0, n_iter_no_change=3,
    )
    assert ours.n_iter_ == theirs.n_iter_
    np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_)
    assert ours.best_validation_score_ == theirs.best_validation_score_
    assert ours.best_loss_ is None and ours.validation_scores_
    _assert_same_weights(ours, theirs, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("kind", ["regression", "multiclass", "multilabel"])
def test_lbfgs_matches_sklearn(kind):
    rng = np.random.RandomState(3)
    X = rng.normal(size=(80, 4))
    y = _targets(kind, 80, rng)
    ours, theirs = _fit_both(kind, X, y, solver="lbfgs", hidden_layer_sizes=(6,),
                             max_iter=60, random_state=0)
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-6)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X) if kind != "regression"
                               else theirs.predict(X), rtol=1e-5, atol=1e-6)


def test_digits_accuracy_matches_sklearn():
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X / 16, y, random_state=0)
    ours, theirs = _fit_both("multiclass", Xtr, ytr, hidden_layer_sizes=(100,),
                             max_iter=50, random_state=0)
    a_ours, a_theirs = ours.score(Xte, yte), theirs.score(Xte, yte)
    assert a_ours > 0.95
    assert abs(a_ours - a_theirs) <= 0.005
    np.testing.assert_allclose(ours.predict_proba(Xte), theirs.predict_proba(Xte),
                               rtol=1e-6, atol=1e-8)


def test_multilabel_predictions_match_sklearn():
    X, Y = make_multilabel_classification(n_samples=200, n_classes=4, random_state=0)
    ours, theirs = _fit_both("multilabel", X, Y, hidden_layer_sizes=(20,),
                             max_iter=20, random_state=0)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
