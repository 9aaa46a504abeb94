"""The phases of the core's passes and how they are split: forward and
backward over blocks of rows, the gradient accumulated over blocks, the
epoch's step from the batch gradient, and the threads' shares of rows."""

import numpy as np
import pytest

from cbp import _core

from _network import DTYPES, RTOL, epoch, loss_grad, network, predict, problem, unpack
from _reference import forward as ref_forward
from _reference import objective as ref_objective
from _rounding import assert_equal_to_rounding

OUTPUTS = ["identity", "logistic", "softmax"]


@pytest.mark.parametrize("units, out", [
    (units, out) for units in [(4, 1, 3, 1), (3, 5, 1, 2), (6, 2)] for out in OUTPUTS
    # softmax needs two outputs
    if not (out == "softmax" and units[-1] == 1)
])
def test_gradient_with_width_one_layers(units, out):
    """Layers of one unit take the gemv / outer-product routes of the BLAS wrapper."""
    X, Y, sw, units, offsets, theta = problem(out, np.float64, units=units, n=11)
    loss, grad = loss_grad(theta, X, Y, sw, units, "tanh", out, 0.2)

    def f(t):
        c, b, _ = unpack(t, units, offsets)
        return ref_objective(c, b, X, Y, sw, "tanh", out, 0.2)

    eps = 1e-6
    fd = np.array([(f(theta + e) - f(theta - e)) / (2 * eps)
                   for e in np.eye(theta.size) * eps])
    np.testing.assert_allclose(loss, f(theta), rtol=1e-10)
    np.testing.assert_allclose(grad, fd, rtol=1e-7, atol=1e-7 * np.abs(fd).max())
    got = predict(theta, X, units, "tanh", out, rows=4)
    c, b, _ = unpack(theta, units, offsets)
    np.testing.assert_allclose(got, ref_forward(c, b, X, "tanh", out), rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", list(_core.HIDDEN_ACTIVATIONS))
def test_blocked_gradient_equals_whole_batch(hidden, dtype):
    """Accumulating the gradient over row blocks gives the whole-batch result."""
    X, Y, sw, units, _, theta = problem("softmax", dtype, hidden, n=50)
    l1, g1 = loss_grad(theta, X, Y, sw, units, hidden, "softmax", 0.2)
    l2, g2 = loss_grad(theta, X, Y, sw, units, hidden, "softmax", 0.2, rows=7)
    rtol = RTOL[dtype]
    np.testing.assert_allclose(l1, l2, rtol=rtol)
    np.testing.assert_allclose(g1, g2, rtol=rtol, atol=rtol * np.abs(g1).max())


@pytest.mark.parametrize("out", ["identity", "softmax"])
@pytest.mark.parametrize("nt", [1, 2, 3])
def test_epoch_step_follows_the_batch_gradient(nt, out):
    """One sgd step of an epoch over a batch of several 48-row chunks (its
    bias gradients summed per chunk in phase 1) is theta - lr * the
    gradient of loss_grad (its bias gradients summed row by row)."""
    X, Y, sw, units, _, theta0 = problem(out, np.float64, n=130)
    _, expected_grad = loss_grad(theta0, X, Y, sw, units, "tanh", out, 1e-3)
    theta = theta0.copy()
    _, _, done, status = epoch(theta, X, Y, sw, None, 130, units, "tanh", out, 1e-3,
                               "sgd", 0.5, nt, momentum=0.0, nesterov=False)
    assert done == 130 and status == _core.STATUS_OK
    np.testing.assert_allclose(theta, theta0 - 0.5 * expected_grad, rtol=1e-12, atol=1e-14)


@pytest.mark.thread_count
@pytest.mark.parametrize("dtype", DTYPES)
def test_results_agree_across_thread_counts(dtype, more_threads_than_cpus):
    """predict, loss_grad and epoch give the same bits for the same thread
    count and agree to rounding across 1..5 threads."""
    from threadpoolctl import threadpool_limits

    rng = np.random.RandomState(0)
    units = np.array([30, 70, 50, 4], np.intc)
    _, P = _core.param_offsets(units)
    n = 333
    X = rng.normal(size=(n, 30)).astype(dtype)
    Y = np.eye(4, dtype=dtype)[rng.randint(0, 4, n)]
    sw = np.ones(n, dtype)
    theta0 = rng.uniform(-0.2, 0.2, P).astype(dtype)
    order = rng.permutation(n).astype(np.intp)

    def run(nt):
        out = predict(theta0, X, units, "relu", "softmax", 100, nt)
        _, grad = loss_grad(theta0, X, Y, sw, units, "tanh", "softmax", 0.1, 100, nt)
        theta = theta0.copy()
        epoch(theta, X, Y, sw, order, 64, units, "relu", "softmax", 1e-3, "adam", 1e-2, nt)
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
    _, P = _core.param_offsets(units)
    n = 250
    X = rng.normal(size=(n, 40)).astype(dtype)
    Y = np.eye(3, dtype=dtype)[rng.randint(0, 3, n)]
    sw = rng.uniform(0.5, 2.0, n).astype(dtype)
    theta0 = rng.uniform(-0.2, 0.2, P).astype(dtype)
    order = rng.permutation(n).astype(np.intp)

    def run(Xe, Ye, swe, order_e, nt):
        theta = theta0.copy()
        loss = epoch(theta, Xe, Ye, swe, order_e, batch, units, "tanh", "softmax", 1e-3,
                     "adam", 1e-2, nt, nesterov=False)
        return theta, loss

    reordered = [np.ascontiguousarray(a[order]) for a in (X, Y, sw)]
    with threadpool_limits(1, user_api="blas"):
        expected, loss = run(*reordered, None, 1)
        for nt in (1, 2, 3):
            # the same thread count: the same bits; across counts: rounding
            theta, loss_nt = run(X, Y, sw, order, nt)
            same_nt, same_loss = run(*reordered, None, nt)
            np.testing.assert_array_equal(theta, same_nt)
            assert loss_nt == same_loss
            assert_equal_to_rounding(theta, expected)
            assert_equal_to_rounding(np.array(loss_nt[:2]), np.array(loss[:2]), dtype)
    assert not np.array_equal(expected, theta0)


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


@pytest.mark.thread_count
@pytest.mark.parametrize("rows", [1, 47, 48, 49, 97, 200])
def test_predict_splits_any_block_over_the_threads(rows, more_threads_than_cpus):
    """Blocks of any size, shared out in 48-row quanta over more threads
    than quanta (some threads get no rows), predict every row once."""
    X, _, _, units, offsets, theta = problem("softmax", np.float64, "tanh", n=211)
    c, b, _ = unpack(theta, units, offsets)
    expected = ref_forward(c, b, X, "tanh", "softmax")
    for nt in (1, 3, 7):
        got = predict(theta, X, units, "tanh", "softmax", rows, nt)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
        assert network(units, "tanh", "softmax", np.float64, nt=nt).n_threads == nt
