"""Hidden and output activations: every row of the core's tables against its
formula in ``_reference``, in prediction and through the gradient, then
through the estimators."""

import pickle

import numpy as np
import pytest
from sklearn.neural_network._base import ACTIVATIONS as SKLEARN_ACTIVATIONS

from cbp import MLPClassifier, MLPRegressor, _core

from _network import DTYPES, FD_TOL, central_differences, epoch, loss_grad, network
from _network import predict, problem, unpack
from _reference import forward as ref_forward
from _reference import objective as ref_objective
from _rounding import assert_equal_to_rounding
from _support import flat_to_lists, quiet

HIDDEN = list(_core.HIDDEN_ACTIVATIONS)
#: the hidden activations scikit-learn's MLP lacks (its own are checked
#: against scikit-learn in test_sklearn_parity)
BEYOND_SKLEARN = [name for name in HIDDEN if name not in SKLEARN_ACTIVATIONS]
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


# ---------------------------------------------------------------------------
# Through the estimators


@pytest.mark.parametrize("activation", HIDDEN)
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
    with quiet():
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
        c, b, s = flat_to_lists(est, t)
        return ref_objective(c, b, X, Y, sw, activation, out, 0.01, slope=0.2, slopes=s)

    expected = t0 - 0.1 * central_differences(f, t0)
    np.testing.assert_allclose(est._theta, expected, rtol=1e-6, atol=1e-8)
    assert not np.allclose(est._theta, t0)


@pytest.mark.parametrize("activation", BEYOND_SKLEARN)
def test_activations_beyond_sklearn_learn_digits(digits, activation):
    X, y = digits
    clf = MLPClassifier(hidden_layer_sizes=(30,), activation=activation, max_iter=40,
                        random_state=0, learning_rate_init=0.01)
    with quiet():
        clf.fit(X, y)
    assert clf.score(X, y) > 0.95


def test_leaky_relu_with_zero_slope_equals_relu(digits):
    X, y = digits
    kw = dict(hidden_layer_sizes=(20,), max_iter=3, random_state=0)
    with quiet():
        a = MLPClassifier(activation="relu", **kw).fit(X, y)
        b = MLPClassifier(activation="leaky_relu", leaky_relu_slope=0.0, **kw).fit(X, y)
        c = MLPClassifier(activation="leaky_relu", **kw).fit(X, y)
    np.testing.assert_array_equal(a._theta, b._theta)
    assert not np.array_equal(a._theta, c._theta)


def test_prelu_slopes_are_views_learned_and_kept(digits):
    X, y = digits
    with quiet():
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
    with quiet():
        clf.fit(X, y)
    assert not hasattr(clf, "prelu_slopes_")


def test_prelu_float32_and_lbfgs(digits):
    X, y = digits
    with quiet():
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
