"""The compiled core against finite differences and a numpy reference."""

import numpy as np
import pytest

from cbp import _core

from _reference import forward as ref_forward
from _reference import objective as ref_objective
from _rounding import assert_equal_to_rounding

HIDDEN = ["identity", "logistic", "tanh", "relu"]
OUTPUTS = ["identity", "logistic", "softmax"]
DTYPES = [np.float32, np.float64]


def _problem(out, dtype, units=(5, 7, 6, 3), n=13, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, units[0]))
    k = units[-1]
    if out == "identity":
        Y = rng.normal(size=(n, k))
    elif out == "logistic":
        Y = (rng.uniform(size=(n, k)) > 0.5).astype(float)
    else:
        Y = np.eye(k)[rng.randint(0, k, n)]
    sw = rng.uniform(0.5, 2.0, n)
    offsets, n_params = _core.param_offsets(units)
    theta = rng.uniform(-0.7, 0.7, n_params)
    cast = lambda a: np.ascontiguousarray(a, dtype=dtype)  # noqa: E731
    return cast(X), cast(Y), cast(sw), np.asarray(units, np.intc), offsets, cast(theta)


def _unpack(theta, units, offsets):
    L = len(units) - 1
    coefs = [theta[offsets[i] : offsets[i] + units[i] * units[i + 1]].reshape(units[i], units[i + 1]) for i in range(L)]
    intercepts = [theta[offsets[L + i] : offsets[L + i] + units[i + 1]] for i in range(L)]
    return coefs, intercepts


def _loss_grad(theta, X, Y, sw, units, offsets, hidden, out, alpha, rows=None):
    rows = rows or X.shape[0]
    grad = np.empty_like(theta)
    work = np.empty(_core.train_workspace_size(units, rows), dtype=theta.dtype)
    data, pen = _core.loss_grad(
        theta, grad, X, Y, sw, units, offsets, _core.HIDDEN_ACTIVATIONS[hidden],
        _core.OUTPUT_ACTIVATIONS[out], alpha, work, rows, 2,
    )
    return data + pen, grad


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("out", OUTPUTS)
@pytest.mark.parametrize("hidden", HIDDEN)
def test_gradient_matches_finite_differences(hidden, out, dtype):
    """Analytic gradient of every activation x output layer x dtype vs central differences."""
    X, Y, sw, units, offsets, theta = _problem(out, dtype)
    alpha = 0.3
    loss, grad = _loss_grad(theta, X, Y, sw, units, offsets, hidden, out, alpha)
    # finite differences in float64 on the reference objective evaluated at theta
    t64 = theta.astype(np.float64)
    X64, Y64, sw64 = (a.astype(np.float64) for a in (X, Y, sw))

    def f(t):
        c, b = _unpack(t, units, offsets)
        return ref_objective(c, b, X64, Y64, sw64, hidden, out, alpha)

    eps = 1e-6
    fd = np.empty_like(t64)
    for i in range(t64.size):
        e = np.zeros_like(t64)
        e[i] = eps
        fd[i] = (f(t64 + e) - f(t64 - e)) / (2 * eps)
    tol = {np.float32: 2e-3, np.float64: 1e-7}[dtype]
    np.testing.assert_allclose(loss, f(t64), rtol=tol)
    # relu's kink is met with probability zero at these random points
    np.testing.assert_allclose(grad, fd, rtol=tol, atol=tol * np.abs(fd).max())


@pytest.mark.parametrize("units, out", [
    (units, out) for units in [(4, 1, 3, 1), (3, 5, 1, 2), (6, 2)] for out in OUTPUTS
    # softmax needs two outputs
    if not (out == "softmax" and units[-1] == 1)
])
def test_gradient_with_width_one_layers(units, out):
    """Layers of one unit take the gemv / outer-product routes of the BLAS wrapper."""
    X, Y, sw, units, offsets, theta = _problem(out, np.float64, units=units, n=11)
    loss, grad = _loss_grad(theta, X, Y, sw, units, offsets, "tanh", out, 0.2)

    def f(t):
        c, b = _unpack(t, units, offsets)
        return ref_objective(c, b, X, Y, sw, "tanh", out, 0.2)

    eps = 1e-6
    fd = np.array([(f(theta + e) - f(theta - e)) / (2 * eps)
                   for e in np.eye(theta.size) * eps])
    np.testing.assert_allclose(loss, f(theta), rtol=1e-10)
    np.testing.assert_allclose(grad, fd, rtol=1e-7, atol=1e-7 * np.abs(fd).max())
    rows = 4
    work = np.empty(_core.predict_workspace_size(units, rows, 2))
    got = np.empty((X.shape[0], units[-1]))
    _core.forward(theta, X, got, units, offsets, 2, _core.OUTPUT_ACTIVATIONS[out],
                  work, rows, 2)
    c, b = _unpack(theta, units, offsets)
    np.testing.assert_allclose(got, ref_forward(c, b, X, "tanh", out), rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("out", OUTPUTS)
def test_core_loss_gradient_self_consistent(out, dtype):
    """The core's own loss, differenced, gives the core's gradient (float64)."""
    X, Y, sw, units, offsets, theta = _problem(out, np.float64, seed=3)
    _, grad = _loss_grad(theta, X, Y, sw, units, offsets, "tanh", out, 0.1)
    eps = 1e-6
    for i in range(0, theta.size, 7):
        tp, tm = theta.copy(), theta.copy()
        tp[i] += eps
        tm[i] -= eps
        fp, _ = _loss_grad(tp, X, Y, sw, units, offsets, "tanh", out, 0.1)
        fm, _ = _loss_grad(tm, X, Y, sw, units, offsets, "tanh", out, 0.1)
        assert abs((fp - fm) / (2 * eps) - grad[i]) < 1e-7 * max(1, abs(grad[i]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_blocked_gradient_equals_whole_batch(dtype):
    """Accumulating the gradient over row blocks gives the whole-batch result."""
    X, Y, sw, units, offsets, theta = _problem("softmax", dtype, n=50)
    l1, g1 = _loss_grad(theta, X, Y, sw, units, offsets, "relu", "softmax", 0.2)
    l2, g2 = _loss_grad(theta, X, Y, sw, units, offsets, "relu", "softmax", 0.2, rows=7)
    rtol = {np.float32: 1e-5, np.float64: 1e-12}[dtype]
    np.testing.assert_allclose(l1, l2, rtol=rtol)
    np.testing.assert_allclose(g1, g2, rtol=rtol, atol=rtol * np.abs(g1).max())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("out", OUTPUTS)
@pytest.mark.parametrize("hidden", HIDDEN)
def test_forward_matches_numpy(hidden, out, dtype):
    X, _, _, units, offsets, theta = _problem(out, dtype, n=40)
    rows = 9  # several blocks, the last one partial
    work = np.empty(_core.predict_workspace_size(units, rows, 2), dtype=dtype)
    got = np.empty((X.shape[0], units[-1]), dtype=dtype)
    _core.forward(theta, X, got, units, offsets, _core.HIDDEN_ACTIVATIONS[hidden],
                  _core.OUTPUT_ACTIVATIONS[out], work, rows, 2)
    c, b = _unpack(theta.astype(np.float64), units, offsets)
    expected = ref_forward(c, b, X.astype(np.float64), hidden, out)
    rtol = {np.float32: 2e-5, np.float64: 1e-12}[dtype]
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol)


def test_softmax_and_logistic_are_stable_for_huge_logits():
    units = np.array([2, 3], np.intc)
    offsets, P = _core.param_offsets(units)
    X = np.array([[1000.0, -1000.0], [-1000.0, 1000.0]])
    theta = np.zeros(P)
    theta[:6] = [1, 0, -1, -1, 0, 1]
    for out, Y in (("softmax", np.eye(3)[[0, 2]]), ("logistic", np.eye(3)[[0, 2]])):
        loss, grad = _loss_grad(theta, X, Y, np.ones(2), units, offsets, "relu", out, 0.0)
        assert np.isfinite(loss) and np.isfinite(grad).all()


def test_softmax_exponentials_over_their_whole_range():
    # one layer whose weights are the identity: the logits are X's rows,
    # spread over exp's range: exact to a few ulp, 0 where exp underflows,
    # NaN kept (so that training sees a NaN loss); no infinities: the identity
    # GEMM would turn them into NaN (inf * 0)
    k = 6
    units = np.array([k, k], np.intc)
    offsets, P = _core.param_offsets(units)
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
    got = np.empty_like(X)
    work = np.empty(_core.predict_workspace_size(units, X.shape[0], 1))
    _core.forward(theta, X, got, units, offsets, 3, _core.OUTPUT_ACTIVATIONS["softmax"],
                  work, X.shape[0], 1)
    e = np.exp(X[:-1] - X[:-1].max(axis=1, keepdims=True))
    expected = e / e.sum(axis=1, keepdims=True)
    normal = expected > 1e-300
    np.testing.assert_allclose(got[:-1][normal], expected[normal], rtol=1e-15, atol=0)
    assert (got[:-1][~normal] < 1e-300).all()
    assert (got[-2, 2:] == 0).all()   # e^-708.5 and below: 0, not subnormal garbage
    assert np.isnan(got[-1]).all()


def test_core_rejects_inconsistent_buffers():
    X, Y, sw, units, offsets, theta = _problem("identity", np.float64)
    with pytest.raises(ValueError, match="theta has"):
        _loss_grad(theta[:-1].copy(), X, Y, sw, units, offsets, "relu", "identity", 0.0)
    with pytest.raises(ValueError, match="layer widths"):
        _loss_grad(theta, X[:, :-1].copy(), Y, sw, units, offsets, "relu", "identity", 0.0)
    with pytest.raises(ValueError, match="workspace"):
        _core.loss_grad(theta, np.empty_like(theta), X, Y, sw, units, offsets, 0, 0, 0.0,
                        np.empty(3), X.shape[0], 1)


def test_core_rejects_unknown_output_codes():
    X, Y, sw, units, offsets, theta = _problem("identity", np.float64)
    codes = {**_core.OUTPUT_ACTIVATIONS, **_core.REGRESSION_LOSSES}.values()
    for bad in (-1, max(codes) + 1):
        with pytest.raises(ValueError, match="unknown output activation code"):
            _core.loss_grad(theta, np.empty_like(theta), X, Y, sw, units, offsets, 0, bad,
                            0.0, np.empty(10**5), X.shape[0], 1)
        Z = np.ones((2, 3))
        with pytest.raises(ValueError, match="unknown output activation code"):
            _core.elementwise_kernel("output", Z, Z.copy(), np.zeros(3), np.zeros(3), bad)


@pytest.mark.thread_count
@pytest.mark.parametrize("dtype", DTYPES)
def test_results_agree_across_thread_counts(dtype, more_threads_than_cpus):
    """forward, loss_grad and train_epoch give the same bits for the same
    thread count and agree to rounding across 1..5 threads."""
    from threadpoolctl import threadpool_limits

    rng = np.random.RandomState(0)
    units = np.array([30, 70, 50, 4], np.intc)
    offsets, P = _core.param_offsets(units)
    n = 333
    X = rng.normal(size=(n, 30)).astype(dtype)
    Y = np.eye(4, dtype=dtype)[rng.randint(0, 4, n)]
    sw = np.ones(n, dtype)
    theta0 = rng.uniform(-0.2, 0.2, P).astype(dtype)
    order = rng.permutation(n).astype(np.intp)

    def run(nt):
        out = np.empty((n, 4), dtype)
        rows = 100
        work = np.empty(_core.predict_workspace_size(units, rows, nt), dtype)
        _core.forward(theta0, X, out, units, offsets, 3, 2, work, rows, nt)
        grad = np.empty_like(theta0)
        work = np.empty(_core.train_workspace_size(units, rows), dtype)
        _core.loss_grad(theta0, grad, X, Y, sw, units, offsets, 2, 2, 0.1, work,
                        rows, nt)
        theta = theta0.copy()
        s1, s2 = np.zeros_like(theta), np.zeros_like(theta)
        step = np.zeros(1, np.intp)
        _core.train_epoch(theta, np.empty_like(theta), s1, s2, X, Y, sw, order,
                          64, units, offsets, 3, 2, 1e-3, 1, 1e-2, 0.9, True,
                          0.9, 0.999, 1e-8, step, work, nt)
        return out, grad, theta

    with threadpool_limits(1, user_api="blas"):
        results = {nt: run(nt) for nt in (1, 2, 3, 5)}
        again = {nt: run(nt) for nt in (1, 2, 3, 5)}
    for nt in results:
        for a, b in zip(results[nt], again[nt]):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(results[nt], results[1]):
            assert_equal_to_rounding(a, b)
    assert not np.allclose(results[1][2], theta0)


@pytest.mark.thread_count
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [7, 64, 250])
def test_shuffled_epoch_equals_epoch_on_reordered_rows(dtype, batch, more_threads_than_cpus):
    """A shuffled epoch gathers each batch's rows (the next batch's while
    waiting on the current one); it must train exactly as an epoch over
    X[order] taken in order with as many threads, for any thread count and
    a short last batch."""
    from threadpoolctl import threadpool_limits

    rng = np.random.RandomState(1)
    units = np.array([40, 30, 3], np.intc)
    offsets, P = _core.param_offsets(units)
    n = 250
    X = rng.normal(size=(n, 40)).astype(dtype)
    Y = np.eye(3, dtype=dtype)[rng.randint(0, 3, n)]
    sw = rng.uniform(0.5, 2.0, n).astype(dtype)
    theta0 = rng.uniform(-0.2, 0.2, P).astype(dtype)
    order = rng.permutation(n).astype(np.intp)

    def epoch(Xe, Ye, swe, order_e, nt):
        theta = theta0.copy()
        s1, s2 = np.zeros_like(theta), np.zeros_like(theta)
        work = np.empty(_core.train_workspace_size(units, min(batch, n)), dtype)
        loss = _core.train_epoch(theta, np.empty_like(theta), s1, s2, Xe, Ye, swe,
                                 order_e, batch, units, offsets, 2, 2, 1e-3, 1,
                                 1e-2, 0.9, False, 0.9, 0.999, 1e-8,
                                 np.zeros(1, np.intp), work, nt)
        return theta, loss

    with threadpool_limits(1, user_api="blas"):
        expected, loss = epoch(np.ascontiguousarray(X[order]),
                               np.ascontiguousarray(Y[order]),
                               np.ascontiguousarray(sw[order]), None, 1)
        for nt in (1, 2, 3):
            # the same thread count: the same bits; across counts: rounding
            theta, loss_nt = epoch(X, Y, sw, order, nt)
            same_nt, same_loss = epoch(np.ascontiguousarray(X[order]),
                                       np.ascontiguousarray(Y[order]),
                                       np.ascontiguousarray(sw[order]), None, nt)
            np.testing.assert_array_equal(theta, same_nt)
            assert loss_nt == same_loss
            assert_equal_to_rounding(theta, expected)
            assert_equal_to_rounding(np.array(loss_nt[:2]), np.array(loss[:2]), dtype)
    assert not np.array_equal(expected, theta0)


@pytest.mark.parametrize("out", ["identity", "softmax"])
@pytest.mark.parametrize("nt", [1, 2, 3])
def test_epoch_step_follows_the_batch_gradient(nt, out):
    """One sgd step of train_epoch over a batch of several 48-row chunks
    (its bias gradients summed per chunk in phase 1) is theta - lr * the
    gradient of loss_grad (its bias gradients summed row by row)."""
    X, Y, sw, units, offsets, theta0 = _problem(out, np.float64, n=130)
    units = np.asarray(units, np.intc)
    _, expected_grad = _loss_grad(theta0, X, Y, sw, units, offsets, "tanh", out, 1e-3)
    theta = theta0.copy()
    s1 = np.zeros_like(theta)
    work = np.empty(_core.train_workspace_size(units, 130))
    _, _, done, status = _core.train_epoch(
        theta, np.empty_like(theta), s1, s1, X, Y, sw, None, 130, units, offsets,
        _core.HIDDEN_ACTIVATIONS["tanh"], _core.OUTPUT_ACTIVATIONS[out], 1e-3,
        _core.SOLVERS["sgd"], 0.5, 0.0, False, 0.9, 0.999, 1e-8, np.zeros(1, np.intp),
        work, nt)
    assert done == 130 and status == _core.STATUS_OK
    np.testing.assert_allclose(theta, theta0 - 0.5 * expected_grad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", DTYPES)
def test_epoch_keeps_its_start_and_flags_nonfinite_weights(dtype):
    X, Y, sw, units, offsets, theta0 = _problem("softmax", dtype, n=20)
    work = np.empty(_core.train_workspace_size(units, 20), dtype)

    def epoch(lr, theta_start, scale=1):
        theta = theta0.copy()
        s1 = np.zeros_like(theta)
        Xs = (X * scale).astype(dtype)
        out = _core.train_epoch(theta, np.empty_like(theta), s1, s1, Xs, Y, sw, None, 20,
                                units, offsets, 0, 2, 0.0, _core.SOLVERS["sgd"], lr, 0.0,
                                False, 0.9, 0.999, 1e-8, np.zeros(1, np.intp), work, 2,
                                theta_start=theta_start)
        return theta, out[3]

    start = np.full_like(theta0, 7)
    theta, status = epoch(0.1, start)
    assert status == _core.STATUS_OK and np.isfinite(theta).all()
    np.testing.assert_array_equal(start, theta0)
    # one batch whose loss is finite and whose step overflows the weights
    # (identity hidden units: gradients of the order of X)
    start[:] = 7
    theta, status = epoch(float(np.finfo(dtype).max), start, scale=100)
    assert status == _core.STATUS_NONFINITE_PARAMS
    assert not np.isfinite(theta).all()
    np.testing.assert_array_equal(start, theta0)
    with pytest.raises(ValueError, match="theta_start"):
        epoch(0.1, start[:-1])


def test_predict_workspace_holds_every_thread_share(more_threads_than_cpus):
    units = np.array([5, 9, 2], np.intc)
    for rows in (1, 47, 48, 49, 200, 1000):
        for nt in (1, 2, 3, 7, 16):
            size = _core.predict_workspace_size(units, rows, nt)
            # each thread needs two buffers of its largest share of rows
            q = 48
            nq = -(-rows // q)
            largest = max(min(rows, (nq * (t + 1) // nt) * q) - min(rows, (nq * t // nt) * q)
                          for t in range(nt))
            assert size >= 2 * nt * largest * 9
