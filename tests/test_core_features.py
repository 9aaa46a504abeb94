"""The core's extensions (activations, losses, optimizers, dropout) against
finite differences and the numpy reference."""

import numpy as np
import pytest

from cbp import _core

from _reference import LEAKY_SLOPE
from _reference import forward as ref_forward
from _reference import objective as ref_objective
from _rounding import assert_equal_to_rounding

NEW_HIDDEN = ["leaky_relu", "elu", "softplus", "prelu"]
OUTPUTS = ["identity", "logistic", "softmax"]
DTYPES = [np.float32, np.float64]


def _problem(out, dtype, hidden="relu", units=(5, 7, 6, 3), n=13, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, units[0]))
    k = units[-1]
    if out == "identity":
        Y = rng.normal(size=(n, k))
    elif out == "exp":
        Y = rng.poisson(1.5, size=(n, k)).astype(float)
    elif out == "logistic":
        Y = (rng.uniform(size=(n, k)) > 0.5).astype(float)
    else:
        Y = np.eye(k)[rng.randint(0, k, n)]
    sw = rng.uniform(0.5, 2.0, n)
    offsets, n_params = _core.param_offsets(units, prelu=hidden == "prelu")
    theta = rng.uniform(-0.7, 0.7, n_params)
    cast = lambda a: np.ascontiguousarray(a, dtype=dtype)  # noqa: E731
    return cast(X), cast(Y), cast(sw), np.asarray(units, np.intc), offsets, cast(theta)


def _unpack(theta, units, offsets):
    """coefs, intercepts and (PReLU) slopes per hidden layer."""
    L = len(units) - 1
    coefs = [theta[offsets[i] : offsets[i] + units[i] * units[i + 1]].reshape(units[i], units[i + 1])
             for i in range(L)]
    intercepts = [theta[offsets[L + i] : offsets[L + i] + units[i + 1]] for i in range(L)]
    slopes, pos = [], offsets[2 * L - 1] + units[L]
    for i in range(1, L):
        slopes.append(theta[pos : pos + units[i]])
        pos += units[i]
    return coefs, intercepts, slopes


def _loss_grad(theta, X, Y, sw, units, offsets, hidden, out, alpha, rows=None, nt=2,
               **kw):
    rows = rows or X.shape[0]
    grad = np.empty_like(theta)
    work = np.empty(_core.train_workspace_size(units, rows, prelu=hidden == "prelu"),
                    dtype=theta.dtype)
    data, pen = _core.loss_grad(
        theta, grad, X, Y, sw, units, offsets, _core.HIDDEN_ACTIVATIONS[hidden],
        _core.OUTPUT_ACTIVATIONS[out], alpha, work, rows, nt, act_param=LEAKY_SLOPE, **kw,
    )
    return data + pen, grad


def _central_differences(f, t, eps=1e-6):
    fd = np.empty_like(t)
    for i in range(t.size):
        e = np.zeros_like(t)
        e[i] = eps
        fd[i] = (f(t + e) - f(t - e)) / (2 * eps)
    return fd


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("out", OUTPUTS)
@pytest.mark.parametrize("hidden", NEW_HIDDEN)
def test_new_activations_gradient_matches_finite_differences(hidden, out, dtype):
    """leaky_relu, elu, softplus and prelu (slopes included) vs central differences."""
    X, Y, sw, units, offsets, theta = _problem(out, dtype, hidden)
    alpha = 0.3
    loss, grad = _loss_grad(theta, X, Y, sw, units, offsets, hidden, out, alpha)
    t64 = theta.astype(np.float64)
    X64, Y64, sw64 = (a.astype(np.float64) for a in (X, Y, sw))

    def f(t):
        c, b, s = _unpack(t, units, offsets)
        return ref_objective(c, b, X64, Y64, sw64, hidden, out, alpha, slopes=s)

    fd = _central_differences(f, t64)
    tol = {np.float32: 2e-3, np.float64: 1e-7}[dtype]
    np.testing.assert_allclose(loss, f(t64), rtol=tol)
    np.testing.assert_allclose(grad, fd, rtol=tol, atol=tol * np.abs(fd).max())
    if hidden == "prelu":
        # the slopes are parameters with a gradient of their own
        n_slopes = sum(units[1:-1])
        assert np.abs(grad[-n_slopes:]).max() > 1e-3


@pytest.mark.parametrize("slope_value", [0.0, -0.4])
def test_prelu_gradient_with_zero_or_negative_slopes(slope_value):
    """A learned slope may reach 0 or turn negative: the backward pass uses
    the stored pre-activations, not the sign of the activation."""
    X, Y, sw, units, offsets, theta = _problem("identity", np.float64, "prelu", seed=4)
    n_slopes = sum(units[1:-1])
    theta[-n_slopes:] = slope_value
    loss, grad = _loss_grad(theta, X, Y, sw, units, offsets, "prelu", "identity", 0.0)

    def f(t):
        c, b, s = _unpack(t, units, offsets)
        return ref_objective(c, b, X, Y, sw, "prelu", "identity", 0.0, slopes=s)

    fd = _central_differences(f, theta)
    np.testing.assert_allclose(grad, fd, rtol=1e-7, atol=1e-7 * np.abs(fd).max())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", NEW_HIDDEN)
def test_new_activations_forward_matches_numpy(hidden, dtype):
    X, _, _, units, offsets, theta = _problem("softmax", dtype, hidden, n=40)
    rows = 9
    work = np.empty(_core.predict_workspace_size(units, rows, 2), dtype=dtype)
    got = np.empty((X.shape[0], units[-1]), dtype=dtype)
    _core.forward(theta, X, got, units, offsets, _core.HIDDEN_ACTIVATIONS[hidden],
                  _core.OUTPUT_ACTIVATIONS["softmax"], work, rows, 2, act_param=LEAKY_SLOPE)
    c, b, s = _unpack(theta.astype(np.float64), units, offsets)
    expected = ref_forward(c, b, X.astype(np.float64), hidden, "softmax", slopes=s)
    rtol = {np.float32: 2e-5, np.float64: 1e-12}[dtype]
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("hidden", NEW_HIDDEN)
def test_blocked_gradient_equals_whole_batch_new_activations(hidden):
    X, Y, sw, units, offsets, theta = _problem("softmax", np.float64, hidden, n=50)
    l1, g1 = _loss_grad(theta, X, Y, sw, units, offsets, hidden, "softmax", 0.2)
    l2, g2 = _loss_grad(theta, X, Y, sw, units, offsets, hidden, "softmax", 0.2, rows=7)
    np.testing.assert_allclose(l1, l2, rtol=1e-12)
    np.testing.assert_allclose(g1, g2, rtol=1e-12, atol=1e-12 * np.abs(g1).max())


def test_leaky_relu_with_zero_slope_is_relu():
    X, Y, sw, units, offsets, theta = _problem("softmax", np.float64)
    grads = []
    for hidden, slope in (("relu", 0.0), ("leaky_relu", 0.0)):
        grad = np.empty_like(theta)
        work = np.empty(_core.train_workspace_size(units, X.shape[0]))
        _core.loss_grad(theta, grad, X, Y, sw, units, offsets,
                        _core.HIDDEN_ACTIVATIONS[hidden], 2, 0.1, work, X.shape[0], 1,
                        act_param=slope)
        grads.append(grad)
    np.testing.assert_array_equal(grads[0], grads[1])


@pytest.mark.thread_count
def test_prelu_train_epoch_agrees_across_threads_and_moves_slopes(
        more_threads_than_cpus):
    rng = np.random.RandomState(0)
    units = np.array([20, 60, 50, 3], np.intc)
    offsets, P = _core.param_offsets(units, prelu=True)
    n = 250
    X = rng.normal(size=(n, 20))
    Y = np.eye(3)[rng.randint(0, 3, n)]
    sw = np.ones(n)
    theta0 = rng.uniform(-0.2, 0.2, P)
    theta0[-110:] = 0.25
    order = rng.permutation(n).astype(np.intp)

    def epoch(nt):
        theta = theta0.copy()
        work = np.empty(_core.train_workspace_size(units, 64, prelu=True))
        s1, s2 = np.zeros_like(theta), np.zeros_like(theta)
        _core.train_epoch(theta, np.empty_like(theta), s1, s2, X, Y, sw, order, 64, units,
                          offsets, _core.HIDDEN_ACTIVATIONS["prelu"], 2, 1e-3, 1, 1e-2, 0.9,
                          True, 0.9, 0.999, 1e-8, np.zeros(1, np.intp), work, nt)
        return theta

    ref = epoch(1)
    for nt in (1, 2, 3):
        theta = epoch(nt)
        np.testing.assert_array_equal(theta, epoch(nt))
        assert_equal_to_rounding(theta, ref)
    assert not np.allclose(ref[-110:], 0.25)


def test_core_rejects_bad_activation_arguments():
    X, Y, sw, units, offsets, theta = _problem("identity", np.float64)
    work = np.empty(_core.train_workspace_size(units, X.shape[0], prelu=True))
    grad = np.empty_like(theta)
    with pytest.raises(ValueError, match="theta has"):
        # prelu needs the slopes at the end of theta
        _core.loss_grad(theta, grad, X, Y, sw, units, offsets, _core.HIDDEN_ACTIVATIONS["prelu"],
                        0, 0.0, work, X.shape[0], 1)
    with pytest.raises(ValueError, match="slope"):
        _core.loss_grad(theta, grad, X, Y, sw, units, offsets,
                        _core.HIDDEN_ACTIVATIONS["leaky_relu"], 0, 0.0, work, X.shape[0], 1,
                        act_param=-0.5)
    _, P = _core.param_offsets(units, prelu=True)
    small = np.empty(_core.train_workspace_size(units, X.shape[0]))
    with pytest.raises(ValueError, match="workspace"):
        _core.loss_grad(np.zeros(P), np.zeros(P), X, Y, sw, units, offsets,
                        _core.HIDDEN_ACTIVATIONS["prelu"], 0, 0.0, small, X.shape[0], 1)


# ---------------------------------------------------------------------------
# Optimizers: the fused in-core steps against numpy updates from loss_grad.


def _numpy_epoch(theta, X, Y, sw, units, offsets, hidden, out, alpha, batch, solver, lr,
                 weight_decay, rho=0.9, momentum=0.9, nesterov=True, beta_1=0.9,
                 beta_2=0.999, eps=1e-8):
    """Batches in order, each: gradient from the core's loss_grad (checked
    against finite differences elsewhere), then the update in numpy."""
    theta = theta.astype(np.float64).copy()
    n_coefs = offsets[len(units) - 1]
    s1, s2 = np.zeros_like(theta), np.zeros_like(theta)
    t = 0
    for start in range(0, X.shape[0], batch):
        sl = slice(start, start + batch)
        _, g = _loss_grad(theta, X[sl], Y[sl], sw[sl], units, offsets, hidden, out, alpha)
        decay = np.zeros_like(theta)
        decay[:n_coefs] = lr * weight_decay * theta[:n_coefs]
        if solver == "rmsprop":
            s1 = rho * s1 + (1 - rho) * g**2
            theta = theta - lr * g / (np.sqrt(s1) + eps) - decay
        elif solver == "adam":
            t += 1
            s1 = beta_1 * s1 + (1 - beta_1) * g
            s2 = beta_2 * s2 + (1 - beta_2) * g**2
            lr_t = lr * np.sqrt(1 - beta_2**t) / (1 - beta_1**t)
            theta = theta - lr_t * s1 / (np.sqrt(s2) + eps) - decay
        else:
            s1 = momentum * s1 - lr * g
            step = momentum * s1 - lr * g if nesterov else s1
            theta = theta + step - decay
    return theta


@pytest.mark.parametrize("hidden", ["tanh", "prelu"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.3])
@pytest.mark.parametrize("solver", ["sgd", "adam", "rmsprop"])
def test_fused_steps_match_numpy_updates(solver, weight_decay, hidden):
    X, Y, sw, units, offsets, theta0 = _problem("softmax", np.float64, hidden, n=40)
    lr, batch, alpha = 0.05, 16, 0.1
    expected = _numpy_epoch(theta0, X, Y, sw, units, offsets, hidden, "softmax", alpha,
                            batch, solver, lr, weight_decay)
    theta = theta0.copy()
    s1, s2 = np.zeros_like(theta), np.zeros_like(theta)
    work = np.empty(_core.train_workspace_size(units, batch, prelu=hidden == "prelu"))
    _, _, done, status = _core.train_epoch(
        theta, np.empty_like(theta), s1, s2, X, Y, sw, None, batch, units, offsets,
        _core.HIDDEN_ACTIVATIONS[hidden], 2, alpha, _core.SOLVERS[solver], lr, 0.9, True,
        0.9, 0.999, 1e-8, np.zeros(1, np.intp), work, 2, act_param=LEAKY_SLOPE, rho=0.9,
        weight_decay=weight_decay)
    assert done == 40 and status == _core.STATUS_OK
    np.testing.assert_allclose(theta, expected, rtol=1e-10, atol=1e-12)
    assert not np.allclose(theta, theta0)


# ---------------------------------------------------------------------------
# Regression losses: Poisson (log link) and Huber.


def _loss_problem(loss, dtype, hidden="tanh", seed=0):
    out = "exp" if loss == "poisson" else "identity"
    X, Y, sw, units, offsets, theta = _problem(out, dtype, hidden, seed=seed)
    if loss == "poisson":
        theta = (theta * 0.5).astype(dtype)  # keep exp(z) moderate
    return X, Y, sw, units, offsets, theta, out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", ["tanh", "relu", "prelu"])
@pytest.mark.parametrize("loss", ["poisson", "huber"])
def test_regression_losses_gradient_matches_finite_differences(loss, hidden, dtype):
    X, Y, sw, units, offsets, theta, out = _loss_problem(loss, dtype, hidden)
    code = _core.REGRESSION_LOSSES[loss]
    delta = 0.4
    alpha = 0.2
    grad = np.empty_like(theta)
    work = np.empty(_core.train_workspace_size(units, 5, prelu=hidden == "prelu"), dtype)
    data, pen = _core.loss_grad(theta, grad, X, Y, sw, units, offsets,
                                _core.HIDDEN_ACTIVATIONS[hidden], code, alpha, work, 5, 2,
                                act_param=LEAKY_SLOPE, loss_param=delta)
    t64 = theta.astype(np.float64)
    X64, Y64, sw64 = (a.astype(np.float64) for a in (X, Y, sw))

    def f(t):
        c, b, s = _unpack(t, units, offsets)
        return ref_objective(c, b, X64, Y64, sw64, hidden, out, alpha, slopes=s,
                             loss=loss, huber_delta=delta)

    fd = _central_differences(f, t64)
    tol = {np.float32: 2e-3, np.float64: 1e-7}[dtype]
    np.testing.assert_allclose(data + pen, f(t64), rtol=tol)
    np.testing.assert_allclose(grad, fd, rtol=tol, atol=tol * np.abs(fd).max())
    if loss == "huber":
        # both branches of the loss are exercised
        c, b, s = _unpack(t64, units, offsets)
        r = np.abs(ref_forward(c, b, X64, hidden, "identity", slopes=s) - Y64)
        assert (r > delta).any() and (r <= delta).any()
    else:
        # the y log y - y constant makes the loss the half deviance: >= 0
        assert data > 0


def test_huber_with_a_large_threshold_is_squared_error():
    X, Y, sw, units, offsets, theta, _ = _loss_problem("huber", np.float64)
    results = []
    for code, param in ((_core.REGRESSION_LOSSES["huber"], 1e6),
                        (_core.REGRESSION_LOSSES["squared_error"], 1.0)):
        grad = np.empty_like(theta)
        work = np.empty(_core.train_workspace_size(units, X.shape[0]))
        loss = _core.loss_grad(theta, grad, X, Y, sw, units, offsets, 2, code, 0.1, work,
                               X.shape[0], 1, loss_param=param)
        results.append((loss, grad))
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_output_forward_matches_numpy(dtype):
    X, _, _, units, offsets, theta, _ = _loss_problem("poisson", dtype)
    work = np.empty(_core.predict_workspace_size(units, 6, 2), dtype=dtype)
    got = np.empty((X.shape[0], units[-1]), dtype=dtype)
    _core.forward(theta, X, got, units, offsets, 2, _core.OUTPUT_ACTIVATIONS["exp"], work,
                  6, 2)
    c, b, _ = _unpack(theta.astype(np.float64), units, offsets)
    expected = ref_forward(c, b, X.astype(np.float64), "tanh", "exp")
    rtol = {np.float32: 2e-5, np.float64: 1e-12}[dtype]
    np.testing.assert_allclose(got, expected, rtol=rtol)


def test_core_rejects_bad_huber_threshold():
    X, Y, sw, units, offsets, theta, _ = _loss_problem("huber", np.float64)
    work = np.empty(_core.train_workspace_size(units, X.shape[0]))
    with pytest.raises(ValueError, match="Huber"):
        _core.loss_grad(theta, np.empty_like(theta), X, Y, sw, units, offsets, 2,
                        _core.REGRESSION_LOSSES["huber"], 0.0, work, X.shape[0], 1,
                        loss_param=0.0)


# ---------------------------------------------------------------------------
# Dropout: counter-based masks, inverted scaling, gradient with fixed masks.


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
@pytest.mark.parametrize("hidden", ["relu", "tanh", "logistic", "elu", "softplus",
                                    "leaky_relu", "prelu"])
def test_dropout_gradient_with_fixed_masks_matches_finite_differences(hidden, dtype):
    X, Y, sw, units, offsets, theta = _problem("softmax", dtype, hidden, n=23)
    rates = np.array([0.3, 0.5])
    seed, row0 = 12345, 1000
    # blocks of 5 rows over 2 threads: each block's rows take their own masks
    loss, grad = _loss_grad(theta, X, Y, sw, units, offsets, hidden, "softmax", 0.1,
                            rows=5, dropout=rates, dropout_seed=seed, dropout_row0=row0)
    masks = _masks(units, rates, seed, row0, X.shape[0])
    assert all((m == 0).any() and (m > 0).any() for m in masks)
    t64 = theta.astype(np.float64)
    X64, Y64, sw64 = (a.astype(np.float64) for a in (X, Y, sw))

    def f(t):
        c, b, s = _unpack(t, units, offsets)
        return ref_objective(c, b, X64, Y64, sw64, hidden, "softmax", 0.1, slopes=s,
                             masks=masks)

    fd = _central_differences(f, t64)
    tol = {np.float32: 2e-3, np.float64: 1e-7}[dtype]
    np.testing.assert_allclose(loss, f(t64), rtol=tol)
    np.testing.assert_allclose(grad, fd, rtol=tol, atol=tol * np.abs(fd).max())
    plain, _ = _loss_grad(theta, X, Y, sw, units, offsets, hidden, "softmax", 0.1)
    assert abs(plain - loss) > 1e-3


def _dropout_epoch(nt, dropout, solver="adam", order=True, dtype=np.float64):
    rng = np.random.RandomState(0)
    units = np.array([20, 60, 50, 3], np.intc)
    offsets, P = _core.param_offsets(units)
    n = 250
    X = rng.normal(size=(n, 20)).astype(dtype)
    Y = np.eye(3, dtype=dtype)[rng.randint(0, 3, n)]
    sw = np.ones(n, dtype)
    theta = rng.uniform(-0.2, 0.2, P).astype(dtype)
    perm = rng.permutation(n).astype(np.intp) if order else None
    work = np.empty(_core.train_workspace_size(units, 64), dtype)
    s1, s2 = np.zeros_like(theta), np.zeros_like(theta)
    out = _core.train_epoch(theta, np.empty_like(theta), s1, s2, X, Y, sw, perm, 64, units,
                            offsets, 3, 2, 1e-3, _core.SOLVERS[solver], 1e-2, 0.9, True,
                            0.9, 0.999, 1e-8, np.zeros(1, np.intp), work, nt,
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


def test_dropout_train_epoch_step_is_the_fixed_mask_gradient():
    """One full-batch sgd step (no momentum) moves theta by -lr times the
    loss_grad gradient under the same masks (row counter dropout_row0)."""
    X, Y, sw, units, offsets, theta = _problem("identity", np.float64, "tanh", n=30)
    rates = np.array([0.25, 0.4])
    _, g = _loss_grad(theta, X, Y, sw, units, offsets, "tanh", "identity", 0.0,
                      dropout=rates, dropout_seed=5, dropout_row0=77)
    stepped = theta.copy()
    work = np.empty(_core.train_workspace_size(units, 30))
    _core.train_epoch(stepped, np.empty_like(theta), np.zeros_like(theta), theta[:0], X, Y,
                      sw, None, 30, units, offsets, 2, 0, 0.0, _core.SOLVERS["sgd"], 0.1,
                      0.0, False, 0.9, 0.999, 1e-8, np.zeros(1, np.intp), work, 2,
                      dropout=rates, dropout_seed=5, dropout_row0=77)
    np.testing.assert_allclose(stepped, theta - 0.1 * g, rtol=1e-12, atol=1e-14)


def test_core_rejects_bad_dropout():
    X, Y, sw, units, offsets, theta = _problem("identity", np.float64)
    with pytest.raises(ValueError, match="one rate per hidden layer"):
        _loss_grad(theta, X, Y, sw, units, offsets, "tanh", "identity", 0.0,
                   dropout=np.array([0.1]))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        _loss_grad(theta, X, Y, sw, units, offsets, "tanh", "identity", 0.0,
                   dropout=np.array([0.1, 1.0]))


# ---------------------------------------------------------------------------
# Sparse X (CSR): the first layer multiplies the CSR rows in place.


def _sparse_problem(dtype, hidden="relu", n=70, density=0.2, seed=0):
    import scipy.sparse as sp

    X, Y, sw, units, offsets, theta = _problem("softmax", dtype, hidden,
                                               units=(30, 9, 7, 3), n=n, seed=seed)
    Xs = sp.random(n, 30, density=density, format="csr", random_state=seed,
                   dtype=np.float64)
    keep = np.ones(n)
    keep[3] = 0  # an empty row
    Xs = sp.csr_matrix(sp.diags(keep) @ Xs, dtype=dtype)
    Xs.eliminate_zeros()
    assert Xs.indptr[3] == Xs.indptr[4]
    csr = (Xs.data, Xs.indices.astype(np.intp), Xs.indptr.astype(np.intp), 30)
    return Xs, csr, Y, sw, units, offsets, theta


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", ["relu", "prelu"])
def test_sparse_loss_grad_equals_dense(hidden, dtype):
    Xs, csr, Y, sw, units, offsets, theta = _sparse_problem(dtype, hidden)
    Xd = np.ascontiguousarray(Xs.toarray())
    dense = _loss_grad(theta, Xd, Y, sw, units, offsets, hidden, "softmax", 0.1, rows=16)
    sparse = _loss_grad(theta, None, Y, sw, units, offsets, hidden, "softmax", 0.1,
                        rows=16, X_csr=csr)
    rtol = {np.float32: 1e-5, np.float64: 1e-12}[dtype]
    np.testing.assert_allclose(sparse[0], dense[0], rtol=rtol)
    np.testing.assert_allclose(sparse[1], dense[1], rtol=rtol,
                               atol=rtol * np.abs(dense[1]).max())


def _sparse_epoch(X, csr, Y, sw, units, offsets, theta, nt, order, batch=16):
    theta = theta.copy()
    sparse = csr is not None
    work = np.empty(_core.train_workspace_size(units, batch, sparse=sparse), theta.dtype)
    s1, s2 = np.zeros_like(theta), np.zeros_like(theta)
    _core.train_epoch(theta, np.empty_like(theta), s1, s2, X, Y, sw, order, batch, units,
                      offsets, 3, 2, 1e-3, _core.SOLVERS["adam"], 1e-2, 0.9, True, 0.9,
                      0.999, 1e-8, np.zeros(1, np.intp), work, nt, X_csr=csr,
                      dropout=np.array([0.2, 0.0]), dropout_seed=3)
    return theta


@pytest.mark.thread_count
@pytest.mark.parametrize("shuffled", [False, True])
def test_sparse_train_epoch_equals_dense_and_agrees_across_thread_counts(
        shuffled, more_threads_than_cpus):
    Xs, csr, Y, sw, units, offsets, theta = _sparse_problem(np.float64, n=130)
    order = np.random.RandomState(1).permutation(130).astype(np.intp) if shuffled else None
    Xd = np.ascontiguousarray(Xs.toarray())
    dense = _sparse_epoch(Xd, None, Y, sw, units, offsets, theta, 2, order)
    results = [_sparse_epoch(None, csr, Y, sw, units, offsets, theta, nt, order)
               for nt in (1, 2, 3)]
    np.testing.assert_allclose(results[0], dense, rtol=1e-10, atol=1e-12)
    for nt, other in zip((1, 2, 3), results):
        np.testing.assert_array_equal(
            other, _sparse_epoch(None, csr, Y, sw, units, offsets, theta, nt, order))
        assert_equal_to_rounding(other, results[0])
    assert not np.allclose(results[0], theta)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sparse_forward_equals_dense(dtype):
    Xs, csr, _, _, units, offsets, theta = _sparse_problem(dtype, n=101)
    outs = []
    for X, kw in ((np.ascontiguousarray(Xs.toarray()), {}), (None, {"X_csr": csr})):
        work = np.empty(_core.predict_workspace_size(units, 20, 2), dtype)
        out = np.empty((101, 3), dtype)
        _core.forward(theta, X, out, units, offsets, 3, 2, work, 20, 2, **kw)
        outs.append(out)
    rtol = {np.float32: 1e-5, np.float64: 1e-12}[dtype]
    np.testing.assert_allclose(outs[1], outs[0], rtol=rtol, atol=rtol)


def test_core_rejects_bad_csr():
    Xs, csr, Y, sw, units, offsets, theta = _sparse_problem(np.float64)
    data, indices, indptr, nf = csr
    bad_index = indices.copy()
    bad_index[0] = 30
    with pytest.raises(ValueError, match="column index"):
        _loss_grad(theta, None, Y, sw, units, offsets, "relu", "softmax", 0.0, rows=16,
                   X_csr=(data, bad_index, indptr, nf))
    bad_ptr = indptr.copy()
    bad_ptr[5], bad_ptr[6] = bad_ptr[6], bad_ptr[5] - 1
    with pytest.raises(ValueError, match="indptr"):
        _loss_grad(theta, None, Y, sw, units, offsets, "relu", "softmax", 0.0, rows=16,
                   X_csr=(data, indices, bad_ptr, nf))
    with pytest.raises(ValueError, match="not both"):
        _loss_grad(theta, np.ascontiguousarray(Xs.toarray()), Y, sw, units, offsets,
                   "relu", "softmax", 0.0, X_csr=csr)
