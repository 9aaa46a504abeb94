"""Dropout in the core: counter-based masks, inverted scaling, the gradient
under fixed masks, masks that do not depend on the thread count."""

import numpy as np
import pytest

from cbp import _core

from _network import DTYPES, FD_TOL, central_differences, epoch, loss_grad, network
from _network import problem, unpack
from _reference import objective as ref_objective
from _rounding import assert_equal_to_rounding


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
