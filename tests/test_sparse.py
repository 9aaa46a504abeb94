"""Sparse X (CSR) in the core: the first layer multiplies the CSR rows in
place; every method gives the dense result, and bad CSR arrays are refused."""

import numpy as np
import pytest

from cbp import _core

from _network import DTYPES, RTOL, epoch, loss_grad, network, predict, sparse_problem
from _rounding import assert_equal_to_rounding


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", ["relu", "prelu"])
def test_sparse_loss_grad_equals_dense(hidden, dtype):
    Xs, csr, Y, sw, units, _, theta = sparse_problem(dtype, hidden)
    Xd = np.ascontiguousarray(Xs.toarray())
    dense = loss_grad(theta, Xd, Y, sw, units, hidden, "softmax", 0.1, rows=16)
    sparse = loss_grad(theta, csr, Y, sw, units, hidden, "softmax", 0.1, rows=16)
    rtol = RTOL[dtype]
    np.testing.assert_allclose(sparse[0], dense[0], rtol=rtol)
    np.testing.assert_allclose(sparse[1], dense[1], rtol=rtol,
                               atol=rtol * np.abs(dense[1]).max())


def _sparse_epoch(X, Y, sw, units, theta, nt, order, batch=16):
    theta = theta.copy()
    epoch(theta, X, Y, sw, order, batch, units, "relu", "softmax", 1e-3, "adam", 1e-2, nt,
          dropout=np.array([0.2, 0.0]), dropout_seed=3)
    return theta


@pytest.mark.thread_count
@pytest.mark.parametrize("shuffled", [False, True])
def test_sparse_epoch_equals_dense_and_agrees_across_thread_counts(
        shuffled, more_threads_than_cpus):
    Xs, csr, Y, sw, units, _, theta = sparse_problem(np.float64, n=130)
    order = np.random.RandomState(1).permutation(130).astype(np.intp) if shuffled else None
    Xd = np.ascontiguousarray(Xs.toarray())
    dense = _sparse_epoch(Xd, Y, sw, units, theta, 2, order)
    results = [_sparse_epoch(csr, Y, sw, units, theta, nt, order) for nt in (1, 2, 3)]
    np.testing.assert_allclose(results[0], dense, rtol=1e-10, atol=1e-12)
    for nt, other in zip((1, 2, 3), results):
        np.testing.assert_array_equal(other, _sparse_epoch(csr, Y, sw, units, theta, nt, order))
        assert_equal_to_rounding(other, results[0])
    assert not np.allclose(results[0], theta)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sparse_predict_equals_dense(dtype):
    Xs, csr, _, _, units, _, theta = sparse_problem(dtype, n=101)
    dense = predict(theta, np.ascontiguousarray(Xs.toarray()), units, "relu", "softmax", 20)
    sparse = predict(theta, csr, units, "relu", "softmax", 20)
    rtol = RTOL[dtype]
    np.testing.assert_allclose(sparse, dense, rtol=rtol, atol=rtol)


def test_input_rejects_bad_csr():
    Xs, csr, Y, sw, units, _, theta = sparse_problem(np.float64)
    data, indices, indptr, nf = csr
    bad_index = indices.copy()
    bad_index[0] = 30
    with pytest.raises(ValueError, match="X_csr: a column index is out of range"):
        _core.Input((data, bad_index, indptr, nf), Y, sw)
    bad_index[0] = -1
    with pytest.raises(ValueError, match="X_csr: a column index is out of range"):
        _core.Input((data, bad_index, indptr, nf), Y, sw)
    bad_ptr = indptr.copy()
    bad_ptr[5], bad_ptr[6] = bad_ptr[6], bad_ptr[5] - 1
    with pytest.raises(ValueError, match="X_csr: indptr must not decrease"):
        _core.Input((data, indices, bad_ptr, nf), Y, sw)
    with pytest.raises(ValueError, match="X_csr: indptr must run from 0"):
        _core.Input((data[:-1], indices, indptr, nf), Y, sw)
    with pytest.raises(ValueError, match="X, Y and sample_weight differ in length"):
        _core.Input(csr, Y[:-1], sw[:-1])


def test_network_rejects_sparse_dense_mix_ups():
    """CSR data of another dtype than the network's, a CSR of the wrong
    width: each a clear error before any computation."""
    Xs, csr, Y, sw, units, _, theta = sparse_problem(np.float64)
    net = network(units, "relu", "softmax", np.float64)
    grad = np.empty_like(theta)
    data32 = _core.Input((csr[0].astype(np.float32), *csr[1:]), Y, sw)
    with pytest.raises(ValueError, match="X must be of dtype float64"):
        net.loss_grad(theta, grad, data32, 0.0, 16)
    wide = _core.Input((*csr[:3], 31), Y, sw)
    with pytest.raises(ValueError, match="X has 31 features, the network takes 30"):
        net.loss_grad(theta, grad, wide, 0.0, 16)


@pytest.mark.xfail(strict=True, raises=AttributeError,
                   reason="Input reads X.flags before it checks that X is an array")
def test_input_rejects_a_scipy_matrix_clearly():
    """The core takes a sparse X as its CSR arrays; a scipy matrix passed as
    is gets an error that says what X must be."""
    Xs, _, Y, sw, _, _, _ = sparse_problem(np.float64)
    with pytest.raises((ValueError, TypeError), match="X must be"):
        _core.Input(Xs, Y, sw)
