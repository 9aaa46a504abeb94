"""Hidden and output activations: every row of the core's tables against its
formula in ``_reference``, in prediction and through the gradient."""

import numpy as np
import pytest

from cbp import _core

from _network import DTYPES, FD_TOL, central_differences, epoch, loss_grad, network
from _network import predict, problem, unpack
from _reference import forward as ref_forward
from _reference import objective as ref_objective
from _rounding import assert_equal_to_rounding

HIDDEN = list(_core.HIDDEN_ACTIVATIONS)
OUTPUTS = list(_core.OUTPUT_ACTIVATIONS)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("out", OUTPUTS)
@pytest.mark.parametrize("hidden", HIDDEN)
def test_gradient_matches_finite_differences(hidden, out, dtype):
    """The gradient of every hidden activation x output (with its canonical
    loss) x dtype against central differences of the reference objective;
    PReLU's slopes included."""
    X, Y, sw, units, offsets, theta = problem(out, dtype, hidden)
    alpha = 0.3
    loss, grad = loss_grad(theta, X, Y, sw, units, hidden, out, alpha)
    # finite differences in float64 on the reference objective evaluated at theta
    t64 = theta.astype(np.float64)
    X64, Y64, sw64 = (a.astype(np.float64) for a in (X, Y, sw))

    def f(t):
        c, b, s = unpack(t, units, offsets)
        return ref_objective(c, b, X64, Y64, sw64, hidden, out, alpha, slopes=s)

    fd = central_differences(f, t64)
    tol = FD_TOL[dtype]
    np.testing.assert_allclose(loss, f(t64), rtol=tol)
    # relu's kink is met with probability zero at these random points
    np.testing.assert_allclose(grad, fd, rtol=tol, atol=tol * np.abs(fd).max())
    if hidden == "prelu":
        # the slopes are parameters with a gradient of their own
        n_slopes = sum(units[1:-1])
        assert np.abs(grad[-n_slopes:]).max() > 1e-3


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("out", OUTPUTS)
@pytest.mark.parametrize("hidden", HIDDEN)
def test_predict_matches_numpy(hidden, out, dtype):
    X, _, _, units, offsets, theta = problem(out, dtype, hidden, n=40)
    got = predict(theta, X, units, hidden, out, rows=9)  # several blocks, the last partial
    c, b, s = unpack(theta.astype(np.float64), units, offsets)
    expected = ref_forward(c, b, X.astype(np.float64), hidden, out, slopes=s)
    rtol = {np.float32: 2e-5, np.float64: 1e-12}[dtype]
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("slope_value", [0.0, -0.4])
def test_prelu_gradient_with_zero_or_negative_slopes(slope_value):
    """A learned slope may reach 0 or turn negative: the backward pass uses
    the stored pre-activations, not the sign of the activation."""
    X, Y, sw, units, offsets, theta = problem("identity", np.float64, "prelu", seed=4)
    n_slopes = sum(units[1:-1])
    theta[-n_slopes:] = slope_value
    _, grad = loss_grad(theta, X, Y, sw, units, "prelu", "identity", 0.0)

    def f(t):
        c, b, s = unpack(t, units, offsets)
        return ref_objective(c, b, X, Y, sw, "prelu", "identity", 0.0, slopes=s)

    fd = central_differences(f, theta)
    np.testing.assert_allclose(grad, fd, rtol=1e-7, atol=1e-7 * np.abs(fd).max())


def test_leaky_relu_with_zero_slope_is_relu():
    X, Y, sw, units, _, theta = problem("softmax", np.float64)
    grads = [loss_grad(theta, X, Y, sw, units, hidden, "softmax", 0.1, nt=1, act_param=0.0)[1]
             for hidden in ("relu", "leaky_relu")]
    np.testing.assert_array_equal(grads[0], grads[1])


@pytest.mark.thread_count
def test_prelu_epoch_agrees_across_threads_and_moves_slopes(more_threads_than_cpus):
    rng = np.random.RandomState(0)
    units = np.array([20, 60, 50, 3], np.intc)
    _, P = _core.param_offsets(units, prelu=True)
    n = 250
    X = rng.normal(size=(n, 20))
    Y = np.eye(3)[rng.randint(0, 3, n)]
    sw = np.ones(n)
    theta0 = rng.uniform(-0.2, 0.2, P)
    theta0[-110:] = 0.25
    order = rng.permutation(n).astype(np.intp)

    def run(nt):
        theta = theta0.copy()
        epoch(theta, X, Y, sw, order, 64, units, "prelu", "softmax", 1e-3, "adam", 1e-2,
              nt, act_param=0.0)
        return theta

    ref = run(1)
    for nt in (1, 2, 3):
        theta = run(nt)
        np.testing.assert_array_equal(theta, run(nt))
        assert_equal_to_rounding(theta, ref)
    assert not np.allclose(ref[-110:], 0.25)


def test_network_rejects_bad_activation_arguments():
    X, Y, sw, units, _, theta = problem("identity", np.float64)
    # prelu needs the slopes at the end of theta
    _, n_params = _core.param_offsets(units, prelu=True)
    with pytest.raises(ValueError, match=f"theta must be a float64 array of {n_params} entries"):
        loss_grad(theta, X, Y, sw, units, "prelu", "identity", 0.0)
    with pytest.raises(ValueError, match="slope must be >= 0, got -0.5"):
        network(units, "leaky_relu", "identity", np.float64, act_param=-0.5)
    with pytest.raises(ValueError, match="unknown hidden activation code 99"):
        network(units, 99, "identity", np.float64)
    with pytest.raises(ValueError, match="unknown output activation code 99"):
        network(units, "relu", 99, np.float64)


def test_softmax_exponentials_over_their_whole_range():
    # one layer whose weights are the identity: the logits are X's rows,
    # spread over exp's range: exact to a few ulp, 0 where exp underflows,
    # NaN kept (so that training sees a NaN loss); no infinities: the identity
    # GEMM would turn them into NaN (inf * 0)
    k = 6
    units = np.array([k, k], np.intc)
    _, P = _core.param_offsets(units)
    theta = np.zeros(P)
    theta[: k * k] = np.eye(k).ravel()
    rng = np.random.RandomState(0)
    X = np.vstack([
        -rng.uniform(0, 1, (200, k)) ** 3 * 708,   # exp(z - max) down to e^-708
        -rng.uniform(0, 1e-6, (50, k)),             # close to the maximum
        [[0, -708.3, -708.5, -745, -1e4, -1e300]],
        [[0, 1, 2, 3, 4, np.nan]],
    ])
    X[:250, 0] = 0  # the row maximum, so that z - max spans the range above
    got = predict(theta, X, units, "relu", "softmax", rows=X.shape[0], nt=1)
    e = np.exp(X[:-1] - X[:-1].max(axis=1, keepdims=True))
    expected = e / e.sum(axis=1, keepdims=True)
    normal = expected > 1e-300
    np.testing.assert_allclose(got[:-1][normal], expected[normal], rtol=1e-15, atol=0)
    assert (got[:-1][~normal] < 1e-300).all()
    assert (got[-2, 2:] == 0).all()   # e^-708.5 and below: 0, not subnormal garbage
    assert np.isnan(got[-1]).all()
