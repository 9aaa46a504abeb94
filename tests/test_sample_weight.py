"""Sample and class weights: a weight is a repeated row, zero-weight rows
are ignored, class weights are sample weights."""

import numpy as np
import pytest

from cbp import MLPClassifier, MLPRegressor

from _support import fit_quiet


@pytest.mark.parametrize("solver", ["sgd", "adam", "rmsprop", "lbfgs"])
def test_weight_two_equals_a_duplicated_row(digits, solver):
    """Full-batch training: a sample of weight 2 and the same sample twice
    give the same objective, so the same weights up to rounding."""
    X, y = digits[0][:120], digits[1][:120]
    w = np.ones(len(y))
    w[::3] = 2.0
    X_dup = np.vstack([X, X[::3]])
    y_dup = np.concatenate([y, y[::3]])
    kw = dict(hidden_layer_sizes=(10,), solver=solver, max_iter=5, shuffle=False,
              batch_size=1000, random_state=0, learning_rate_init=0.01)
    weighted = fit_quiet(MLPClassifier(**kw), X, y, sample_weight=w)
    duplicated = fit_quiet(MLPClassifier(**kw), X_dup, y_dup)
    np.testing.assert_allclose(weighted._theta, duplicated._theta, rtol=1e-9, atol=1e-12)
    assert weighted.loss_ == pytest.approx(duplicated.loss_, rel=1e-9)


@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_zero_weights_are_ignored(solver):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(80, 5))
    y = X[:, 0] - 2 * X[:, 1]
    w = np.ones(80)
    w[5::4] = 0.0
    X_bad, y_bad = X.copy(), y.copy()
    y_bad[w == 0] = 1e3  # what zero-weight rows hold must not matter
    kw = dict(hidden_layer_sizes=(7,), solver=solver, max_iter=5, shuffle=False,
              batch_size=1000, random_state=0)
    weighted = fit_quiet(MLPRegressor(**kw), X_bad, y_bad, sample_weight=w)
    kept = fit_quiet(MLPRegressor(**kw), X[w > 0], y[w > 0])
    np.testing.assert_allclose(weighted._theta, kept._theta, rtol=1e-9, atol=1e-12)
    assert weighted.loss_ == pytest.approx(kept.loss_, rel=1e-9)


def test_class_weight_dict_is_sample_weight(digits):
    X, y = digits
    cw = {3: 4.0, 8: 0.5}
    kw = dict(hidden_layer_sizes=(10,), max_iter=3, random_state=0)
    by_class = fit_quiet(MLPClassifier(class_weight=cw, **kw), X, y)
    w = np.array([cw.get(c, 1.0) for c in y])
    by_sample = fit_quiet(MLPClassifier(**kw), X, y, sample_weight=w)
    np.testing.assert_array_equal(by_class._theta, by_sample._theta)
    # both weights multiply
    s = np.random.RandomState(1).uniform(0.5, 1.5, len(y))
    both = fit_quiet(MLPClassifier(class_weight=cw, **kw), X, y, sample_weight=s)
    product = fit_quiet(MLPClassifier(**kw), X, y, sample_weight=w * s)
    np.testing.assert_array_equal(both._theta, product._theta)


def test_class_weight_balanced_string_labels_and_minority_recall():
    from sklearn.utils.class_weight import compute_sample_weight

    rng = np.random.RandomState(0)
    n = 600
    X = rng.normal(size=(n, 2))
    y = np.where(X[:, 0] + 0.5 * rng.normal(size=n) > 1.6, "rare", "common")
    kw = dict(hidden_layer_sizes=(8,), solver="lbfgs", max_iter=200, random_state=0)
    plain = fit_quiet(MLPClassifier(**kw), X, y)
    balanced = fit_quiet(MLPClassifier(class_weight="balanced", **kw), X, y)
    by_sample = fit_quiet(MLPClassifier(**kw), X, y,
                           sample_weight=compute_sample_weight("balanced", y))
    np.testing.assert_array_equal(balanced._theta, by_sample._theta)
    recall = lambda est: (est.predict(X)[y == "rare"] == "rare").mean()  # noqa: E731
    assert (y == "rare").mean() < 0.15
    assert recall(balanced) > recall(plain) + 0.1


def test_class_weight_errors():
    X = np.random.RandomState(0).normal(size=(20, 3))
    y = np.array([0, 1] * 10)
    with pytest.raises(ValueError, match="not classes"):
        MLPClassifier(class_weight={5: 2.0}).fit(X, y)
    with pytest.raises(ValueError, match=">= 0"):
        MLPClassifier(class_weight={0: -1.0}).fit(X, y)
    with pytest.raises(ValueError, match="class_weight"):
        MLPClassifier(class_weight="uniform").fit(X, y)
    with pytest.raises(ValueError, match="partial_fit"):
        MLPClassifier(class_weight="balanced").partial_fit(X, y, classes=[0, 1])
    with pytest.raises(ValueError, match="multilabel"):
        MLPClassifier(class_weight={0: 2.0}).fit(X, np.c_[y, 1 - y])
    # a dict works with partial_fit
    clf = MLPClassifier(class_weight={0: 2.0}, random_state=0)
    clf.partial_fit(X, y, classes=[0, 1])
    assert clf.n_iter_ == 1


@pytest.mark.parametrize("n_jobs", [1, 2, 3])
@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_a_batch_of_zero_weights_is_skipped_as_if_it_were_absent(
        solver, n_jobs, more_threads_than_cpus):
    """A mini-batch whose weights are all zero carries no gradient and is
    skipped (no step, no Adam count): the weights are those of the data
    without it, bit for bit, for any thread count. The epoch's threads
    take each phase's shares from counters that must stay in step with
    the batches when one is skipped."""
    rng = np.random.RandomState(0)
    X = rng.normal(size=(500, 6))
    y = X[:, 0] - 2 * X[:, 1]
    w = np.ones(500)
    w[100:200] = 0.0   # the second batch of 100
    y_bad = y.copy()
    y_bad[w == 0] = 1e3
    kw = dict(hidden_layer_sizes=(50, 20), solver=solver, max_iter=3, shuffle=False,
              batch_size=100, random_state=0, n_jobs=n_jobs, alpha=1e-3)
    weighted = fit_quiet(MLPRegressor(**kw), X, y_bad, sample_weight=w)
    kept = fit_quiet(MLPRegressor(**kw), X[w > 0], y[w > 0])
    for a, b in zip(weighted.coefs_ + weighted.intercepts_,
                    kept.coefs_ + kept.intercepts_):
        np.testing.assert_array_equal(a, b)
