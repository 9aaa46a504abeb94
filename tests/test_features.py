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
from _rounding import assert_equal_to_rounding

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


# ---------------------------------------------------------------------------
# Regression losses


def _counts(n=120, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, 4))
    y = rng.poisson(np.exp(0.6 * X[:, 0] - 0.3 * X[:, 1]))
    return X, y


@pytest.mark.parametrize("solver", ["sgd", "lbfgs"])
def test_poisson_matches_sklearn(solver):
    from sklearn.neural_network import MLPRegressor as SkMLPRegressor

    X, y = _counts()
    kw = dict(loss="poisson", hidden_layer_sizes=(8,), solver=solver, max_iter=3,
              batch_size=40, shuffle=False, random_state=0, learning_rate_init=0.01)
    with _quiet():
        ours = MLPRegressor(**kw).fit(X, y)
        theirs = SkMLPRegressor(**kw).fit(X, y)
    assert ours.out_activation_ == theirs.out_activation_ == "exp"
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-9)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-9)
    assert (ours.predict(X) > 0).all()


def test_poisson_learns_counts_and_rejects_negative_targets():
    X, y = _counts(400)
    with _quiet():
        reg = MLPRegressor(loss="poisson", hidden_layer_sizes=(16,), max_iter=300,
                           learning_rate_init=0.01, random_state=0).fit(X, y)
    mu = np.exp(0.6 * X[:, 0] - 0.3 * X[:, 1])
    assert np.corrcoef(reg.predict(X), mu)[0, 1] > 0.9
    with pytest.raises(ValueError, match="non-negative"):
        MLPRegressor(loss="poisson").fit(X, y - 1.0)


def test_poisson_warm_start_from_squared_error_is_an_error():
    X, y = _counts()
    with _quiet():
        reg = MLPRegressor(max_iter=2, warm_start=True, random_state=0).fit(X, y)
    reg.set_params(loss="poisson")
    with pytest.raises(ValueError, match="warm_start=False"):
        reg.fit(X, y)


def test_huber_is_robust_to_outliers():
    rng = np.random.RandomState(0)
    X = rng.uniform(-1, 1, size=(300, 2))
    y = 2 * X[:, 0] - X[:, 1]
    y_dirty = y.copy()
    y_dirty[:15] += 50.0  # 5% gross outliers
    kw = dict(hidden_layer_sizes=(16,), solver="lbfgs", max_iter=300, random_state=0)
    with _quiet():
        squared = MLPRegressor(**kw).fit(X, y_dirty)
        huber = MLPRegressor(loss="huber", huber_delta=0.5, **kw).fit(X, y_dirty)
    clean = slice(15, None)
    err = lambda est: np.abs(est.predict(X[clean]) - y[clean]).mean()  # noqa: E731
    assert err(huber) < 0.5 * err(squared)
    assert huber.out_activation_ == "identity"


def test_huber_gradient_of_the_estimator_objective():
    """One full-batch sgd step of the estimator moves the weights by the
    finite-difference gradient of the reference Huber objective."""
    rng = np.random.RandomState(1)
    X = rng.normal(size=(30, 3))
    y = 3 * rng.normal(size=30)
    kw = dict(loss="huber", huber_delta=0.7, hidden_layer_sizes=(5,), solver="sgd",
              momentum=0.0, batch_size=30, shuffle=False, alpha=0.1, random_state=0,
              learning_rate_init=0.5)
    with _quiet():
        stepped = MLPRegressor(max_iter=1, **kw).fit(X, y)
    # the same initial weights, moved by a step too small to change them
    init = MLPRegressor(max_iter=1, **{**kw, "learning_rate_init": 1e-300})
    with _quiet():
        init.fit(X, y)
    t0 = init._theta.copy()

    def f(t):
        c, b, _ = _flat_to_lists(stepped, t)
        return ref_objective(c, b, X, y[:, None], np.ones(30), "relu", "identity", 0.1,
                             loss="huber", huber_delta=0.7)

    g = _fd_grad(f, t0)
    np.testing.assert_allclose(stepped._theta, t0 - 0.5 * g, rtol=1e-6, atol=1e-8)


def test_bad_loss_parameters():
    X, y = np.ones((4, 2)), [0.0, 1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="huber_delta"):
        MLPRegressor(loss="huber", huber_delta=0).fit(X, y)
    with pytest.raises(ValueError, match="loss"):
        MLPRegressor(loss="absolute_error").fit(X, y)


# ---------------------------------------------------------------------------
# Sample and class weights


def _fit_quiet(est, X, y, **kw):
    with _quiet():
        # batch_size=1000 (full batch whatever the row count) is clipped
        warnings.filterwarnings("ignore", "Got `batch_size`", UserWarning)
        return est.fit(X, y, **kw)


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
    weighted = _fit_quiet(MLPClassifier(**kw), X, y, sample_weight=w)
    duplicated = _fit_quiet(MLPClassifier(**kw), X_dup, y_dup)
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
    weighted = _fit_quiet(MLPRegressor(**kw), X_bad, y_bad, sample_weight=w)
    kept = _fit_quiet(MLPRegressor(**kw), X[w > 0], y[w > 0])
    np.testing.assert_allclose(weighted._theta, kept._theta, rtol=1e-9, atol=1e-12)
    assert weighted.loss_ == pytest.approx(kept.loss_, rel=1e-9)


def test_class_weight_dict_is_sample_weight(digits):
    X, y = digits
    cw = {3: 4.0, 8: 0.5}
    kw = dict(hidden_layer_sizes=(10,), max_iter=3, random_state=0)
    by_class = _fit_quiet(MLPClassifier(class_weight=cw, **kw), X, y)
    w = np.array([cw.get(c, 1.0) for c in y])
    by_sample = _fit_quiet(MLPClassifier(**kw), X, y, sample_weight=w)
    np.testing.assert_array_equal(by_class._theta, by_sample._theta)
    # both weights multiply
    s = np.random.RandomState(1).uniform(0.5, 1.5, len(y))
    both = _fit_quiet(MLPClassifier(class_weight=cw, **kw), X, y, sample_weight=s)
    product = _fit_quiet(MLPClassifier(**kw), X, y, sample_weight=w * s)
    np.testing.assert_array_equal(both._theta, product._theta)


def test_class_weight_balanced_string_labels_and_minority_recall():
    from sklearn.utils.class_weight import compute_sample_weight

    rng = np.random.RandomState(0)
    n = 600
    X = rng.normal(size=(n, 2))
    y = np.where(X[:, 0] + 0.5 * rng.normal(size=n) > 1.6, "rare", "common")
    kw = dict(hidden_layer_sizes=(8,), solver="lbfgs", max_iter=200, random_state=0)
    plain = _fit_quiet(MLPClassifier(**kw), X, y)
    balanced = _fit_quiet(MLPClassifier(class_weight="balanced", **kw), X, y)
    by_sample = _fit_quiet(MLPClassifier(**kw), X, y,
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


# ---------------------------------------------------------------------------
# Dropout


def test_zero_dropout_is_bit_identical_to_none(digits):
    X, y = digits
    kw = dict(hidden_layer_sizes=(20, 10), max_iter=3, random_state=0)
    plain = _fit_quiet(MLPClassifier(**kw), X, y)
    for rate in (0.0, [0.0, 0.0]):
        zero = _fit_quiet(MLPClassifier(dropout=rate, **kw), X, y)
        np.testing.assert_array_equal(zero._theta, plain._theta)
        assert zero.loss_curve_ == plain.loss_curve_


@pytest.mark.thread_count
def test_dropout_is_reproducible_and_agrees_across_n_jobs(digits, more_threads_than_cpus):
    X, y = digits
    kw = dict(hidden_layer_sizes=(60, 30), max_iter=3, dropout=[0.5, 0.2], batch_size=64)
    a = _fit_quiet(MLPClassifier(random_state=0, n_jobs=1, **kw), X, y)
    for n_jobs in (1, 2, 3):
        b = _fit_quiet(MLPClassifier(random_state=0, n_jobs=n_jobs, **kw), X, y)
        c = _fit_quiet(MLPClassifier(random_state=0, n_jobs=n_jobs, **kw), X, y)
        np.testing.assert_array_equal(b._theta, c._theta)
        assert_equal_to_rounding(b._theta, a._theta)
    other = _fit_quiet(MLPClassifier(random_state=1, **kw), X, y)
    assert not np.allclose(a._theta, other._theta)
    plain = _fit_quiet(MLPClassifier(random_state=0, **{**kw, "dropout": 0.0}), X, y)
    assert not np.allclose(a._theta, plain._theta)
    # the thinned networks' losses are higher than the whole network's
    assert a.loss_ > plain.loss_


def test_dropout_is_off_at_prediction(digits):
    X, y = digits
    clf = _fit_quiet(MLPClassifier(hidden_layer_sizes=(30,), dropout=0.5, max_iter=30,
                                   learning_rate_init=0.01, random_state=0), X, y)
    p1 = clf.predict_proba(X)
    np.testing.assert_array_equal(p1, clf.predict_proba(X))
    whole = clf.set_params(dropout=0.0).predict_proba(X)
    np.testing.assert_array_equal(p1, whole)
    assert clf.score(X, y) > 0.9


def test_dropout_partial_fit_draws_new_masks_each_call(digits):
    X, y = digits
    kw = dict(hidden_layer_sizes=(30,), dropout=0.3, random_state=0, shuffle=False)
    inc = MLPClassifier(**kw)
    inc.partial_fit(X, y, classes=np.unique(y))
    inc.partial_fit(X, y)
    seed, t_before = inc._dropout_seed, inc.t_
    inc.partial_fit(X, y)
    # each call restarts random_state, so calls 2 and 3 draw the same key, but
    # rows are counted on from t_: the masks of the two epochs differ
    assert inc._dropout_seed == seed and t_before == 2 * X.shape[0]
    keep_2 = _core_dropout_keep(seed, X.shape[0], X.shape[0], 30, 0.3)
    keep_3 = _core_dropout_keep(seed, t_before, X.shape[0], 30, 0.3)
    assert 0.5 < (keep_2 == keep_3).mean() < 0.65
    # and partial_fit is reproducible
    again = MLPClassifier(**kw)
    for _ in range(3):
        again.partial_fit(X, y, classes=np.unique(y))
    np.testing.assert_array_equal(again._theta, inc._theta)


def _core_dropout_keep(seed, row0, n, width, rate):
    from cbp import _core

    return _core.dropout_keep(seed, row0, n, 0, width, rate)


@pytest.mark.parametrize("activation", ["relu", "tanh", "prelu"])
def test_dropout_estimator_step_is_the_fixed_mask_gradient(activation):
    """One full-batch sgd step of the estimator == -lr x the finite-difference
    gradient of the reference objective under the masks it drew."""
    from cbp import _core

    rng = np.random.RandomState(0)
    X = rng.normal(size=(40, 4))
    y = rng.randint(0, 3, 40)
    kw = dict(hidden_layer_sizes=(6, 5), activation=activation, solver="sgd",
              momentum=0.0, batch_size=40, shuffle=False, alpha=0.01, max_iter=1,
              random_state=0, dropout=[0.3, 0.5])
    init = _fit_quiet(MLPClassifier(**{**kw, "learning_rate_init": 1e-300}), X, y)
    t0 = init._theta.copy()
    stepped = _fit_quiet(MLPClassifier(**{**kw, "learning_rate_init": 0.3}), X, y)
    seed = stepped._dropout_seed
    masks = [_core.dropout_keep(seed, 0, 40, 0, 6, 0.3) / 0.7,
             _core.dropout_keep(seed, 0, 40, 6, 5, 0.5) / 0.5]
    Y = np.eye(3)[y]

    def f(t):
        c, b, s = _flat_to_lists(stepped, t)
        return ref_objective(c, b, X, Y, np.ones(40), activation, "softmax", 0.01,
                             slopes=s, masks=masks)

    g = _fd_grad(f, t0)
    np.testing.assert_allclose(stepped._theta, t0 - 0.3 * g, rtol=1e-6, atol=1e-8)


def test_bad_dropout_values():
    X, y = np.random.RandomState(0).normal(size=(10, 2)), [0, 1] * 5
    with pytest.raises(ValueError, match="dropout"):
        MLPClassifier(dropout=1.0).fit(X, y)
    with pytest.raises(ValueError, match="one rate per hidden layer"):
        MLPClassifier(hidden_layer_sizes=(5, 5), dropout=[0.1]).fit(X, y)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        MLPClassifier(hidden_layer_sizes=(5,), dropout=[-0.1]).fit(X, y)
    with pytest.raises(ValueError, match="lbfgs"):
        MLPRegressor(solver="lbfgs", dropout=0.2).fit(X, y)


# ---------------------------------------------------------------------------
# Sparse input


def _sparse_digits(digits, fmt="csr"):
    import scipy.sparse as sp

    X, y = digits
    return sp.csr_matrix(X).asformat(fmt), X, y


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_sparse_fit_and_predict_equal_dense(digits, solver):
    Xs, X, y = _sparse_digits(digits)
    kw = dict(hidden_layer_sizes=(20,), solver=solver, max_iter=5, random_state=0,
              batch_size=64)
    dense = _fit_quiet(MLPClassifier(**kw), X, y)
    sparse = _fit_quiet(MLPClassifier(**kw), Xs, y)
    np.testing.assert_allclose(sparse._theta, dense._theta, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(sparse.predict_proba(Xs), dense.predict_proba(X),
                               rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(dense.predict_proba(Xs), dense.predict_proba(X),
                               rtol=1e-12, atol=1e-15)


def test_sparse_regression_float32_early_stopping_and_other_formats(digits):
    Xs, X, y = _sparse_digits(digits, "csc")
    yr = y.astype(float)
    kw = dict(hidden_layer_sizes=(15,), max_iter=8, random_state=0, early_stopping=True,
              dropout=0.1)
    sparse = _fit_quiet(MLPRegressor(**kw), Xs.astype(np.float32), yr)
    dense = _fit_quiet(MLPRegressor(**kw), X.astype(np.float32), yr)
    assert sparse._theta.dtype == np.float32
    np.testing.assert_allclose(sparse._theta, dense._theta, rtol=1e-4, atol=1e-5)
    assert sparse.n_iter_ == dense.n_iter_


def test_sparse_input_is_not_densified():
    """A 3000 x 100000 input (2.4 GB dense) trains and predicts in a few MB."""
    import tracemalloc

    import scipy.sparse as sp

    rng = np.random.RandomState(0)
    n, d = 3000, 100_000
    nnz = 30_000
    X = sp.csr_matrix((rng.uniform(size=nnz), (rng.randint(0, n, nnz), rng.randint(0, d, nnz))),
                      shape=(n, d))
    y = np.asarray(X[:, :50000].sum(axis=1)).ravel() > 0
    tracemalloc.start()
    try:
        clf = _fit_quiet(MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, random_state=0,
                                       n_jobs=1),
                         X, y)
        clf.predict(X)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the parameters, optimizer state and gradient: 4 x 100000 x 8 bytes each
    assert peak < 40e6
    assert clf.coefs_[0].shape == (d, 4)


# ---------------------------------------------------------------------------
# cbp.check_gradients with the features above


@pytest.mark.parametrize("params", [
    dict(loss="huber", huber_delta=0.3),
    dict(loss="poisson"),
    dict(activation="prelu", dropout=0.5),
])
def test_check_gradients_covers_the_new_losses(params, monkeypatch):
    import cbp
    from cbp import _core

    rng = np.random.RandomState(0)
    X = rng.normal(size=(30, 4))
    y = rng.poisson(1.0, 30).astype(float)
    seen = []
    real = _core.loss_grad

    def spy(*args, **kw):
        seen.append(kw)
        return real(*args, **kw)

    monkeypatch.setattr(_core, "loss_grad", spy)
    # a fixed initialisation: with a random one, about 1 in 100 puts a ReLU
    # input or a Huber residual within eps of its kink, and the finite
    # difference crosses it
    est = MLPRegressor(hidden_layer_sizes=(5,), random_state=0, **params)
    errors = cbp.check_gradients(est, X, y)
    assert max(errors.values()) < 1e-5
    if params.get("loss") == "huber":
        # the estimator's threshold, not the core's default
        assert all(kw["loss_param"] == 0.3 for kw in seen)


def test_check_gradients_with_sparse_input():
    import scipy.sparse as sp

    import cbp

    rng = np.random.RandomState(0)
    X = sp.random(40, 12, density=0.3, format="csr", random_state=0)
    y = rng.randint(0, 3, 40)
    # seeded: unseeded initial weights made the error vary from run to run
    # (up to 2.5e-5 in one run of CI's debug build)
    est = MLPClassifier(hidden_layer_sizes=(6,), activation="tanh", random_state=0)
    sparse = cbp.check_gradients(est, X, y)
    dense = cbp.check_gradients(est, X.toarray(), y)
    assert max(sparse.values()) < 1e-5
    assert sparse.keys() == dense.keys()


def test_to_sklearn_with_the_new_parameters():
    X, y = _counts()
    poisson = _fit_quiet(MLPRegressor(loss="poisson", hidden_layer_sizes=(6,), max_iter=20,
                                      random_state=0), X, y)
    np.testing.assert_allclose(poisson.to_sklearn().predict(X), poisson.predict(X),
                               rtol=1e-12)
    huber = _fit_quiet(MLPRegressor(loss="huber", hidden_layer_sizes=(6,), max_iter=2,
                                    random_state=0), X, y)
    with pytest.raises(ValueError, match="loss='huber'"):
        huber.to_sklearn()
    dropped = _fit_quiet(MLPRegressor(dropout=0.2, solver="rmsprop", hidden_layer_sizes=(6,),
                                      max_iter=2, random_state=0), X, y)
    with pytest.warns(UserWarning, match="dropout"):
        sk = dropped.to_sklearn()
    np.testing.assert_allclose(sk.predict(X), dropped.predict(X), rtol=1e-12)
