"""Dropout: counter-based masks, inverted scaling, the gradient under fixed
masks, masks that do not depend on the thread count; in the core, then
through the estimators."""

import numpy as np
import pytest

from cbp import MLPClassifier, MLPRegressor, _core

from _network import DTYPES, FD_TOL, central_differences, epoch, loss_grad, network
from _network import problem, unpack
from _reference import objective as ref_objective
from _rounding import assert_equal_to_rounding
from _support import fit_quiet, flat_to_lists


def test_dropout_masks_are_a_pure_function_of_seed_row_and_unit():
    keep = _core.dropout_keep(7, 0, 400, 0, 500, 0.3)
    assert keep.shape == (400, 500) and keep.dtype == bool
    assert abs(keep.mean() - 0.7) < 0.01
    # any sub-block is the same bits: no state, no dependence on blocking
    np.testing.assert_array_equal(_core.dropout_keep(7, 100, 50, 20, 30, 0.3),
                                  keep[100:150, 20:50])
    # rows, units and seeds decorrelate
    assert abs((keep[:-1] == keep[1:]).mean() - 0.58) < 0.02
    assert abs((keep[:, :-1] == keep[:, 1:]).mean() - 0.58) < 0.02
    other = _core.dropout_keep(8, 0, 400, 0, 500, 0.3)
    assert abs((keep == other).mean() - 0.58) < 0.02
    assert _core.dropout_keep(7, 0, 10, 0, 10, 0.0).all()
    with pytest.raises(ValueError, match="dropout"):
        _core.dropout_keep(7, 0, 1, 0, 1, 1.0)


def _masks(units, rates, seed, row0, n):
    """The reference's scaled masks for n rows from row counter row0."""
    masks, unit0 = [], 0
    for width, rate in zip(units[1:-1], rates):
        keep = _core.dropout_keep(seed, row0, n, unit0, int(width), rate)
        masks.append(keep / (1 - rate))
        unit0 += int(width)
    return masks


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", list(_core.HIDDEN_ACTIVATIONS))
def test_dropout_gradient_with_fixed_masks_matches_finite_differences(hidden, dtype):
    X, Y, sw, units, offsets, theta = problem("softmax", dtype, hidden, n=23)
    rates = np.array([0.3, 0.5])
    seed, row0 = 12345, 1000
    # blocks of 5 rows over 2 threads: each block's rows take their own masks
    loss, grad = loss_grad(theta, X, Y, sw, units, hidden, "softmax", 0.1, rows=5,
                           dropout=rates, dropout_seed=seed, dropout_row0=row0)
    masks = _masks(units, rates, seed, row0, X.shape[0])
    assert all((m == 0).any() and (m > 0).any() for m in masks)
    t64 = theta.astype(np.float64)
    X64, Y64, sw64 = (a.astype(np.float64) for a in (X, Y, sw))

    def f(t):
        c, b, s = unpack(t, units, offsets)
        return ref_objective(c, b, X64, Y64, sw64, hidden, "softmax", 0.1, slopes=s,
                             masks=masks)

    fd = central_differences(f, t64)
    tol = FD_TOL[dtype]
    np.testing.assert_allclose(loss, f(t64), rtol=tol)
    np.testing.assert_allclose(grad, fd, rtol=tol, atol=tol * np.abs(fd).max())
    plain, _ = loss_grad(theta, X, Y, sw, units, hidden, "softmax", 0.1)
    assert abs(plain - loss) > 1e-3


def _dropout_epoch(nt, dropout, solver="adam", order=True, dtype=np.float64):
    rng = np.random.RandomState(0)
    units = np.array([20, 60, 50, 3], np.intc)
    _, P = _core.param_offsets(units)
    n = 250
    X = rng.normal(size=(n, 20)).astype(dtype)
    Y = np.eye(3, dtype=dtype)[rng.randint(0, 3, n)]
    sw = np.ones(n, dtype)
    theta = rng.uniform(-0.2, 0.2, P).astype(dtype)
    perm = rng.permutation(n).astype(np.intp) if order else None
    out = epoch(theta, X, Y, sw, perm, 64, units, "relu", "softmax", 1e-3, solver, 1e-2, nt,
                dropout=dropout, dropout_seed=99, dropout_row0=500)
    return theta, out


@pytest.mark.thread_count
def test_dropout_epoch_agrees_across_thread_counts(more_threads_than_cpus):
    """The masks depend on the row and unit only: the same for any thread
    count (a mask that moved with the shares would differ far beyond
    rounding)."""
    rates = np.array([0.5, 0.2])
    ref, _ = _dropout_epoch(1, rates)
    for nt in (1, 2, 3):
        theta, _ = _dropout_epoch(nt, rates)
        np.testing.assert_array_equal(theta, _dropout_epoch(nt, rates)[0])
        assert_equal_to_rounding(theta, ref)
    plain, _ = _dropout_epoch(1, None)
    assert not np.allclose(plain, ref)


def test_zero_dropout_rates_are_bit_identical_to_none():
    for dtype in DTYPES:
        a, out_a = _dropout_epoch(2, None, dtype=dtype)
        b, out_b = _dropout_epoch(2, np.zeros(2), dtype=dtype)
        np.testing.assert_array_equal(a, b)
        assert out_a == out_b


def test_set_dropout_none_turns_it_off():
    X, Y, sw, units, _, theta = problem("identity", np.float64, "tanh", n=30)
    data = _core.Input(X, Y, sw)
    grads = []
    for rates in (None, np.array([0.25, 0.4])):
        net = network(units, "tanh", "identity", np.float64, dropout=np.array([0.3, 0.3]),
                      dropout_seed=5)
        net.set_dropout(rates, 6)
        grad = np.empty_like(theta)
        net.loss_grad(theta, grad, data, 0.0, 30)
        grads.append(grad)
    plain = loss_grad(theta, X, Y, sw, units, "tanh", "identity", 0.0)[1]
    other = loss_grad(theta, X, Y, sw, units, "tanh", "identity", 0.0,
                      dropout=np.array([0.25, 0.4]), dropout_seed=6)[1]
    np.testing.assert_array_equal(grads[0], plain)
    np.testing.assert_array_equal(grads[1], other)


def test_dropout_epoch_step_is_the_fixed_mask_gradient():
    """One full-batch sgd step (no momentum) moves theta by -lr times the
    loss_grad gradient under the same masks (row counter dropout_row0)."""
    X, Y, sw, units, _, theta = problem("identity", np.float64, "tanh", n=30)
    rates = np.array([0.25, 0.4])
    _, g = loss_grad(theta, X, Y, sw, units, "tanh", "identity", 0.0, dropout=rates,
                     dropout_seed=5, dropout_row0=77)
    stepped = theta.copy()
    epoch(stepped, X, Y, sw, None, 30, units, "tanh", "identity", 0.0, "sgd", 0.1,
          momentum=0.0, nesterov=False, dropout=rates, dropout_seed=5, dropout_row0=77)
    np.testing.assert_allclose(stepped, theta - 0.1 * g, rtol=1e-12, atol=1e-14)


def test_network_rejects_bad_dropout():
    units = [5, 7, 6, 3]
    net = network(units, "tanh", "identity", np.float64)
    with pytest.raises(ValueError, match=r"one rate per hidden layer \(2\), got 1"):
        net.set_dropout(np.array([0.1]), 0)
    with pytest.raises(ValueError, match=r"dropout rates must be in \[0, 1\), got 1.0"):
        net.set_dropout(np.array([0.1, 1.0]), 0)
    with pytest.raises(ValueError, match=r"dropout rates must be in \[0, 1\), got -0.1"):
        net.set_dropout(np.array([-0.1, 0.0]), 0)


# ---------------------------------------------------------------------------
# Through the estimators


def test_zero_dropout_is_bit_identical_to_none(digits):
    X, y = digits
    kw = dict(hidden_layer_sizes=(20, 10), max_iter=3, random_state=0)
    plain = fit_quiet(MLPClassifier(**kw), X, y)
    for rate in (0.0, [0.0, 0.0]):
        zero = fit_quiet(MLPClassifier(dropout=rate, **kw), X, y)
        np.testing.assert_array_equal(zero._theta, plain._theta)
        assert zero.loss_curve_ == plain.loss_curve_


@pytest.mark.thread_count
def test_dropout_is_reproducible_and_agrees_across_n_jobs(digits, more_threads_than_cpus):
    X, y = digits
    kw = dict(hidden_layer_sizes=(60, 30), max_iter=3, dropout=[0.5, 0.2], batch_size=64)
    a = fit_quiet(MLPClassifier(random_state=0, n_jobs=1, **kw), X, y)
    for n_jobs in (1, 2, 3):
        b = fit_quiet(MLPClassifier(random_state=0, n_jobs=n_jobs, **kw), X, y)
        c = fit_quiet(MLPClassifier(random_state=0, n_jobs=n_jobs, **kw), X, y)
        np.testing.assert_array_equal(b._theta, c._theta)
        assert_equal_to_rounding(b._theta, a._theta)
    other = fit_quiet(MLPClassifier(random_state=1, **kw), X, y)
    assert not np.allclose(a._theta, other._theta)
    plain = fit_quiet(MLPClassifier(random_state=0, **{**kw, "dropout": 0.0}), X, y)
    assert not np.allclose(a._theta, plain._theta)
    # the thinned networks' losses are higher than the whole network's
    assert a.loss_ > plain.loss_


def test_dropout_is_off_at_prediction(digits):
    X, y = digits
    clf = fit_quiet(MLPClassifier(hidden_layer_sizes=(30,), dropout=0.5, max_iter=30,
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
    init = fit_quiet(MLPClassifier(**{**kw, "learning_rate_init": 1e-300}), X, y)
    t0 = init._theta.copy()
    stepped = fit_quiet(MLPClassifier(**{**kw, "learning_rate_init": 0.3}), X, y)
    seed = stepped._dropout_seed
    masks = [_core.dropout_keep(seed, 0, 40, 0, 6, 0.3) / 0.7,
             _core.dropout_keep(seed, 0, 40, 6, 5, 0.5) / 0.5]
    Y = np.eye(3)[y]

    def f(t):
        c, b, s = flat_to_lists(stepped, t)
        return ref_objective(c, b, X, Y, np.ones(40), activation, "softmax", 0.01,
                             slopes=s, masks=masks)

    g = central_differences(f, t0)
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
