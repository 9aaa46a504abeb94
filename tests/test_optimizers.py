"""Optimizers: each solver of the core's table, fused into the epoch,
against its update in ``_reference``; the optimizer's arguments; rmsprop,
rho and weight decay through the estimators."""

import numpy as np
import pytest

from cbp import MLPClassifier, _core

from _network import epoch, loss_grad, network, problem, set_optimizer
from _reference import step as ref_step
from _support import quiet


def _numpy_epoch(theta, X, Y, sw, units, offsets, hidden, out, alpha, batch, solver, lr,
                 weight_decay):
    """Batches in order, each: the gradient from the core's loss_grad
    (checked against finite differences in test_activations), then the
    reference's update in numpy."""
    theta = theta.astype(np.float64).copy()
    n_coefs = offsets[len(units) - 1]
    state = {}
    for start in range(0, X.shape[0], batch):
        sl = slice(start, start + batch)
        _, g = loss_grad(theta, X[sl], Y[sl], sw[sl], units, hidden, out, alpha)
        theta = ref_step(solver, theta, g, state, lr, n_coefs, weight_decay)
    return theta


@pytest.mark.parametrize("hidden", ["tanh", "prelu"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.3])
@pytest.mark.parametrize("solver", list(_core.SOLVERS))
def test_fused_steps_match_numpy_updates(solver, weight_decay, hidden):
    X, Y, sw, units, offsets, theta0 = problem("softmax", np.float64, hidden, n=40)
    lr, batch, alpha = 0.05, 16, 0.1
    expected = _numpy_epoch(theta0, X, Y, sw, units, offsets, hidden, "softmax", alpha,
                            batch, solver, lr, weight_decay)
    theta = theta0.copy()
    _, _, done, status = epoch(theta, X, Y, sw, None, batch, units, hidden, "softmax",
                               alpha, solver, lr, weight_decay=weight_decay)
    assert done == 40 and status == _core.STATUS_OK
    np.testing.assert_allclose(theta, expected, rtol=1e-10, atol=1e-12)
    assert not np.allclose(theta, theta0)


def test_optimizer_state_is_the_callers_and_goes_on_across_epochs():
    """The state arrays are updated in place: two epochs equal one epoch,
    then a second one on a fresh network given the same state (how
    partial_fit and a pickled estimator go on)."""
    X, Y, sw, units, _, theta0 = problem("softmax", np.float64, n=40)
    twice = theta0.copy()
    net = network(units, "relu", "softmax", np.float64)
    set_optimizer(net, "adam", 0.05)
    data = _core.Input(X, Y, sw)
    net.epoch(twice, data, None, 16, 0.1)
    net.epoch(twice, data, None, 16, 0.1)
    resumed = theta0.copy()
    state = (np.zeros_like(theta0), np.zeros_like(theta0), np.zeros(1, np.intp))
    epoch(resumed, X, Y, sw, None, 16, units, "relu", "softmax", 0.1, "adam", 0.05,
          state=state)
    assert state[2][0] == 3 and state[0].any() and state[1].any()
    epoch(resumed, X, Y, sw, None, 16, units, "relu", "softmax", 0.1, "adam", 0.05,
          state=state)
    assert state[2][0] == 6
    np.testing.assert_array_equal(resumed, twice)


def test_learning_rate_is_settable_between_epochs():
    X, Y, sw, units, _, theta0 = problem("identity", np.float64, n=20)
    net = network(units, "tanh", "identity", np.float64)
    set_optimizer(net, "sgd", 0.1, momentum=0.0)
    assert net.learning_rate == 0.1
    net.learning_rate = 0.0
    assert net.learning_rate == 0.0
    theta = theta0.copy()
    net.epoch(theta, _core.Input(X, Y, sw), None, 20, 0.0)
    np.testing.assert_array_equal(theta, theta0)


def test_set_optimizer_rejects_bad_arguments():
    net = network([5, 7, 3], "relu", "softmax", np.float64)
    P = net.n_params
    ok = np.zeros(P)
    step = np.zeros(1, np.intp)
    with pytest.raises(ValueError, match="unknown solver code 7"):
        net.set_optimizer(7, ok, ok, step, learning_rate=0.1)
    with pytest.raises(ValueError, match=r"rho must be in \[0, 1\), got 1.0"):
        net.set_optimizer(_core.SOLVERS["rmsprop"], ok, ok, step, learning_rate=0.1, rho=1.0)
    with pytest.raises(ValueError, match="weight_decay must be >= 0, got -0.1"):
        net.set_optimizer(_core.SOLVERS["sgd"], ok, ok, step, learning_rate=0.1,
                          weight_decay=-0.1)
    with pytest.raises(ValueError, match=f"state_1 must be a float64 array of {P} entries"):
        net.set_optimizer(_core.SOLVERS["sgd"], ok[:-1], ok, step, learning_rate=0.1)
    with pytest.raises(ValueError, match=f"state_2 must be a float64 array of {P} entries"):
        net.set_optimizer(_core.SOLVERS["adam"], ok, ok.astype(np.float32), step,
                          learning_rate=0.1)
    with pytest.raises(ValueError, match="step must be an intp array holding one counter"):
        net.set_optimizer(_core.SOLVERS["adam"], ok, ok, np.zeros(1), learning_rate=0.1)
    assert not net.has_optimizer
    # sgd and rmsprop keep one state: state_2 is not looked at
    net.set_optimizer(_core.SOLVERS["sgd"], ok, None, step, learning_rate=0.1)
    assert net.has_optimizer


# ---------------------------------------------------------------------------
# Through the estimators


def test_rmsprop_learns_and_supports_partial_fit(digits):
    X, y = digits
    with quiet():
        clf = MLPClassifier(hidden_layer_sizes=(30,), solver="rmsprop", max_iter=30,
                            learning_rate_init=0.01, random_state=0).fit(X, y)
    assert clf.score(X, y) > 0.95
    assert clf._optimizer.state_2.size == 0
    inc = MLPClassifier(hidden_layer_sizes=(30,), solver="rmsprop", random_state=0,
                        shuffle=False)
    full = MLPClassifier(hidden_layer_sizes=(30,), solver="rmsprop", random_state=0,
                         shuffle=False, max_iter=3)
    with quiet():
        full.fit(X, y)
    for _ in range(3):
        inc.partial_fit(X, y, classes=np.unique(y))
    np.testing.assert_allclose(inc._theta, full._theta, rtol=1e-12, atol=1e-14)


def test_rho_changes_rmsprop_only(digits):
    X, y = digits
    kw = dict(hidden_layer_sizes=(10,), max_iter=2, random_state=0)
    with quiet():
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
    with quiet():
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
