"""Sparse X (CSR): the core's first layer multiplies the CSR rows in place;
every method gives the dense result, bad CSR arrays are refused, and the
estimators train and predict on sparse X without densifying it."""

import numpy as np
import pytest

from cbp import MLPClassifier, MLPRegressor, _core

from _network import DTYPES, RTOL, epoch, loss_grad, network, predict, sparse_problem
from _rounding import assert_equal_to_rounding
from _support import fit_quiet


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


def test_input_rejects_a_scipy_matrix_clearly():
    """The core takes a sparse X as its CSR arrays; a scipy matrix passed as
    is gets an error that says what X must be."""
    Xs, _, Y, sw, _, _, _ = sparse_problem(np.float64)
    with pytest.raises((ValueError, TypeError), match="X must be"):
        _core.Input(Xs, Y, sw)


# ---------------------------------------------------------------------------
# Through the estimators


def _sparse_digits(digits, fmt="csr"):
    import scipy.sparse as sp

    X, y = digits
    return sp.csr_matrix(X).asformat(fmt), X, y


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_sparse_fit_and_predict_equal_dense(digits, solver):
    Xs, X, y = _sparse_digits(digits)
    kw = dict(hidden_layer_sizes=(20,), solver=solver, max_iter=5, random_state=0,
              batch_size=64)
    dense = fit_quiet(MLPClassifier(**kw), X, y)
    sparse = fit_quiet(MLPClassifier(**kw), Xs, y)
    np.testing.assert_allclose(sparse._theta, dense._theta, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(sparse.predict_proba(Xs), dense.predict_proba(X),
                               rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(dense.predict_proba(Xs), dense.predict_proba(X),
                               rtol=1e-12, atol=1e-15)


def test_sparse_regression_float32_early_stopping_and_other_formats(digits):
    Xs, X, y = _sparse_digits(digits, "csc")
    yr = y.astype(float)
    kw = dict(hidden_layer_sizes=(15,), max_iter=8, random_state=0, early_stopping=True,
              dropout=0.1)
    sparse = fit_quiet(MLPRegressor(**kw), Xs.astype(np.float32), yr)
    dense = fit_quiet(MLPRegressor(**kw), X.astype(np.float32), yr)
    assert sparse._theta.dtype == np.float32
    np.testing.assert_allclose(sparse._theta, dense._theta, rtol=1e-4, atol=1e-5)
    assert sparse.n_iter_ == dense.n_iter_


def test_sparse_input_is_not_densified():
    """A 3000 x 100000 input (2.4 GB dense) trains and predicts in a few MB."""
    import tracemalloc

    import scipy.sparse as sp

    rng = np.random.RandomState(0)
    n, d = 3000, 100_000
    nnz = 30_000
    X = sp.csr_matrix((rng.uniform(size=nnz), (rng.randint(0, n, nnz), rng.randint(0, d, nnz))),
                      shape=(n, d))
    y = np.asarray(X[:, :50000].sum(axis=1)).ravel() > 0
    tracemalloc.start()
    try:
        clf = fit_quiet(MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, random_state=0,
                                       n_jobs=1),
                         X, y)
        clf.predict(X)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the parameters, optimizer state and gradient: 4 x 100000 x 8 bytes each
    assert peak < 40e6
    assert clf.coefs_[0].shape == (d, 4)
