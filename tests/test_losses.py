"""Losses: each output's canonical loss and each regression loss of the
core's tables against its formula in ``_reference``; Poisson and Huber
through the estimators."""

import numpy as np
import pytest

from cbp import MLPRegressor, _core

from _network import DTYPES, FD_TOL, central_differences, loss_grad, network, problem
from _network import unpack
from _reference import REGRESSION_LOSSES as REF_LOSSES
from _reference import forward as ref_forward
from _reference import objective as ref_objective
from _support import counts, flat_to_lists, quiet

#: one name per output code of the core: the output activations (with their
#: canonical losses), then the regression losses that add a code of their own
OUTPUT_CODES = list(_core.OUTPUT_ACTIVATIONS) + [
    name for name, code in _core.REGRESSION_LOSSES.items()
    if code not in _core.OUTPUT_ACTIVATIONS.values()]


@pytest.mark.parametrize("out", OUTPUT_CODES)
def test_loss_differenced_gives_the_gradient(out):
    """The core's own loss, differenced, gives the core's gradient (float64)."""
    X, Y, sw, units, _, theta = problem(out, np.float64, "tanh", seed=3)
    kw = dict(loss_param=0.4)
    _, grad = loss_grad(theta, X, Y, sw, units, "tanh", out, 0.1, **kw)
    eps = 1e-6
    for i in range(0, theta.size, 7):
        tp, tm = theta.copy(), theta.copy()
        tp[i] += eps
        tm[i] -= eps
        fp, _ = loss_grad(tp, X, Y, sw, units, "tanh", out, 0.1, **kw)
        fm, _ = loss_grad(tm, X, Y, sw, units, "tanh", out, 0.1, **kw)
        assert abs((fp - fm) / (2 * eps) - grad[i]) < 1e-7 * max(1, abs(grad[i]))


def test_softmax_and_logistic_are_stable_for_huge_logits():
    units = np.array([2, 3], np.intc)
    _, P = _core.param_offsets(units)
    X = np.array([[1000.0, -1000.0], [-1000.0, 1000.0]])
    theta = np.zeros(P)
    theta[:6] = [1, 0, -1, -1, 0, 1]
    for out, Y in (("softmax", np.eye(3)[[0, 2]]), ("logistic", np.eye(3)[[0, 2]])):
        loss, grad = loss_grad(theta, X, Y, np.ones(2), units, "relu", out, 0.0)
        assert np.isfinite(loss) and np.isfinite(grad).all()


def _loss_problem(loss, dtype, hidden="tanh", seed=0):
    X, Y, sw, units, offsets, theta = problem(loss, dtype, hidden, seed=seed)
    if loss == "poisson":
        theta = (theta * 0.5).astype(dtype)  # keep exp(z) moderate
    return X, Y, sw, units, offsets, theta, REF_LOSSES[loss][0]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", ["tanh", "relu", "prelu"])
@pytest.mark.parametrize("loss", list(_core.REGRESSION_LOSSES))
def test_regression_losses_gradient_matches_finite_differences(loss, hidden, dtype):
    X, Y, sw, units, offsets, theta, out = _loss_problem(loss, dtype, hidden)
    delta = 0.4
    alpha = 0.2
    total, grad = loss_grad(theta, X, Y, sw, units, hidden, loss, alpha, rows=5,
                            loss_param=delta)
    t64 = theta.astype(np.float64)
    X64, Y64, sw64 = (a.astype(np.float64) for a in (X, Y, sw))

    def f(t):
        c, b, s = unpack(t, units, offsets)
        return ref_objective(c, b, X64, Y64, sw64, hidden, out, alpha, slopes=s,
                             loss=loss, huber_delta=delta)

    fd = central_differences(f, t64)
    tol = FD_TOL[dtype]
    np.testing.assert_allclose(total, f(t64), rtol=tol)
    np.testing.assert_allclose(grad, fd, rtol=tol, atol=tol * np.abs(fd).max())
    if loss == "huber":
        # both branches of the loss are exercised
        c, b, s = unpack(t64, units, offsets)
        r = np.abs(ref_forward(c, b, X64, hidden, "identity", slopes=s) - Y64)
        assert (r > delta).any() and (r <= delta).any()
    elif loss == "poisson":
        # the y log y - y constant makes the loss the half deviance: >= 0
        data, _ = loss_grad(theta, X, Y, sw, units, hidden, loss, 0.0)
        assert data > 0


def test_huber_with_a_large_threshold_is_squared_error():
    X, Y, sw, units, _, theta, _ = _loss_problem("huber", np.float64)
    results = [loss_grad(theta, X, Y, sw, units, "tanh", loss, 0.1, nt=1, loss_param=param)
               for loss, param in (("huber", 1e6), ("squared_error", 1.0))]
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_network_rejects_bad_huber_threshold():
    units = [5, 7, 6, 3]
    with pytest.raises(ValueError, match="Huber's threshold must be > 0, got 0.0"):
        network(units, "tanh", "huber", np.float64, loss_param=0.0)
    with pytest.raises(ValueError, match="Huber's threshold must be > 0, got nan"):
        network(units, "tanh", "huber", np.float64, loss_param=np.nan)


# ---------------------------------------------------------------------------
# Through the estimators


@pytest.mark.parametrize("solver", ["sgd", "lbfgs"])
def test_poisson_matches_sklearn(solver):
    from sklearn.neural_network import MLPRegressor as SkMLPRegressor

    X, y = counts()
    kw = dict(loss="poisson", hidden_layer_sizes=(8,), solver=solver, max_iter=3,
              batch_size=40, shuffle=False, random_state=0, learning_rate_init=0.01)
    with quiet():
        ours = MLPRegressor(**kw).fit(X, y)
        theirs = SkMLPRegressor(**kw).fit(X, y)
    assert ours.out_activation_ == theirs.out_activation_ == "exp"
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-9)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-9)
    assert (ours.predict(X) > 0).all()


def test_poisson_learns_counts_and_rejects_negative_targets():
    X, y = counts(400)
    with quiet():
        reg = MLPRegressor(loss="poisson", hidden_layer_sizes=(16,), max_iter=300,
                           learning_rate_init=0.01, random_state=0).fit(X, y)
    mu = np.exp(0.6 * X[:, 0] - 0.3 * X[:, 1])
    assert np.corrcoef(reg.predict(X), mu)[0, 1] > 0.9
    with pytest.raises(ValueError, match="non-negative"):
        MLPRegressor(loss="poisson").fit(X, y - 1.0)


def test_poisson_warm_start_from_squared_error_is_an_error():
    X, y = counts()
    with quiet():
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
    with quiet():
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
    with quiet():
        stepped = MLPRegressor(max_iter=1, **kw).fit(X, y)
    # the same initial weights, moved by a step too small to change them
    init = MLPRegressor(max_iter=1, **{**kw, "learning_rate_init": 1e-300})
    with quiet():
        init.fit(X, y)
    t0 = init._theta.copy()

    def f(t):
        c, b, _ = flat_to_lists(stepped, t)
        return ref_objective(c, b, X, y[:, None], np.ones(30), "relu", "identity", 0.1,
                             loss="huber", huber_delta=0.7)

    g = central_differences(f, t0)
    np.testing.assert_allclose(stepped._theta, t0 - 0.5 * g, rtol=1e-6, atol=1e-8)


def test_bad_loss_parameters():
    X, y = np.ones((4, 2)), [0.0, 1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="huber_delta"):
        MLPRegressor(loss="huber", huber_delta=0).fit(X, y)
    with pytest.raises(ValueError, match="loss"):
        MLPRegressor(loss="absolute_error").fit(X, y)


def test_the_core_rejects_unknown_output_codes():
    """A code outside the tables is refused when the network is built and
    by the output kernel, instead of computing some other output."""
    codes = {**_core.OUTPUT_ACTIVATIONS, **_core.REGRESSION_LOSSES}.values()
    for bad in (-1, max(codes) + 1):
        with pytest.raises(ValueError, match="unknown output activation code"):
            _core.Network([3, 4, 2], _core.HIDDEN_ACTIVATIONS["relu"], bad,
                          np.float64)
        Z = np.ones((2, 3))
        with pytest.raises(ValueError, match="unknown output activation code"):
            _core.elementwise_kernel("output", Z, Z.copy(), np.zeros(3),
                                     np.zeros(3), bad)
