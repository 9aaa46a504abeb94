"""Losses: each output's canonical loss and each regression loss of the
core's tables against its formula in ``_reference``."""

import numpy as np
import pytest

from cbp import _core

from _network import DTYPES, FD_TOL, central_differences, loss_grad, network, problem
from _network import unpack
from _reference import REGRESSION_LOSSES as REF_LOSSES
from _reference import forward as ref_forward
from _reference import objective as ref_objective

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
