"""Small problems and one-call wrappers over the core's ``Network`` for the
kernel tests: each wrapper builds the network, runs one method and returns
plain arrays, so that a test reads as the property it checks."""

import numpy as np
import scipy.sparse as sp

from cbp import _core

from _reference import LEAKY_SLOPE

DTYPES = [np.float32, np.float64]
#: relative tolerance of results computed two ways in one dtype
RTOL = {np.float32: 1e-5, np.float64: 1e-12}
#: tolerance of the core's float32/float64 gradient against float64 finite
#: differences of the reference
FD_TOL = {np.float32: 2e-3, np.float64: 1e-7}


def output_code(out):
    """The core's code of an output name (an output activation, or a
    regression loss such as 'huber'), or the code itself."""
    if not isinstance(out, str):
        return out
    if out in _core.OUTPUT_ACTIVATIONS:
        return _core.OUTPUT_ACTIVATIONS[out]
    return _core.REGRESSION_LOSSES[out]


def network(units, hidden, out, dtype, nt=2, act_param=LEAKY_SLOPE, loss_param=1.0,
            dropout=None, dropout_seed=0):
    """A ``_core.Network``; ``hidden`` and ``out`` are names or codes."""
    hidden = _core.HIDDEN_ACTIVATIONS[hidden] if isinstance(hidden, str) else hidden
    net = _core.Network(units, hidden, output_code(out), dtype,
                        activation_param=act_param, loss_param=loss_param,
                        n_threads=nt)
    if dropout is not None:
        net.set_dropout(dropout, dropout_seed)
    return net


def problem(out, dtype, hidden="relu", units=(5, 7, 6, 3), n=13, seed=0):
    """``X, Y, sw, units, offsets, theta``: random rows, targets that suit
    the output ``out`` and weights in [-0.7, 0.7] (PReLU slopes included)."""
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, units[0]))
    k = units[-1]
    if out in ("identity", "squared_error", "huber"):
        Y = rng.normal(size=(n, k))
    elif out in ("exp", "poisson"):
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


def sparse_problem(dtype, hidden="relu", n=70, density=0.2, seed=0):
    """``Xs, csr, Y, sw, units, offsets, theta``: a scipy CSR X with an empty
    row (row 3) and the same X as the core's ``(data, indices, indptr,
    n_features)``."""
    X, Y, sw, units, offsets, theta = problem("softmax", dtype, hidden,
                                              units=(30, 9, 7, 3), n=n, seed=seed)
    Xs = sp.random(n, 30, density=density, format="csr", random_state=seed,
                   dtype=np.float64)
    keep = np.ones(n)
    keep[3] = 0
    Xs = sp.csr_matrix(sp.diags(keep) @ Xs, dtype=dtype)
    Xs.eliminate_zeros()
    assert Xs.indptr[3] == Xs.indptr[4]
    return Xs, csr_tuple(Xs), Y, sw, units, offsets, theta


def csr_tuple(Xs):
    """A scipy CSR matrix as ``_core.Input`` takes it."""
    return (Xs.data, Xs.indices.astype(np.intp), Xs.indptr.astype(np.intp), Xs.shape[1])


def unpack(theta, units, offsets):
    """coefs, intercepts and (PReLU) slopes per hidden layer, as views."""
    L = len(units) - 1
    coefs = [theta[offsets[i]: offsets[i] + units[i] * units[i + 1]].reshape(units[i], units[i + 1])
             for i in range(L)]
    intercepts = [theta[offsets[L + i]: offsets[L + i] + units[i + 1]] for i in range(L)]
    slopes, pos = [], offsets[2 * L - 1] + units[L]
    for i in range(1, L):
        slopes.append(theta[pos: pos + units[i]])
        pos += units[i]
    return coefs, intercepts, slopes


def central_differences(f, t, eps=1e-6):
    fd = np.empty_like(t)
    for i in range(t.size):
        e = np.zeros_like(t)
        e[i] = eps
        fd[i] = (f(t + e) - f(t - e)) / (2 * eps)
    return fd


def loss_grad(theta, X, Y, sw, units, hidden, out, alpha, rows=None, nt=2,
              act_param=LEAKY_SLOPE, loss_param=1.0, dropout=None, dropout_seed=0,
              dropout_row0=0):
    """``(data_loss + penalty, grad)`` of :meth:`Network.loss_grad` in blocks
    of ``rows`` (default: all); X dense or a CSR tuple."""
    net = network(units, hidden, out, theta.dtype, nt, act_param, loss_param, dropout,
                  dropout_seed)
    data = _core.Input(X, Y, sw)
    grad = np.empty_like(theta)
    loss, penalty = net.loss_grad(theta, grad, data, alpha, rows or data.n_samples,
                                  dropout_row0)
    return loss + penalty, grad


def predict(theta, X, units, hidden, out, rows, nt=2, act_param=LEAKY_SLOPE):
    """:meth:`Network.predict` of X (dense or a CSR tuple) in blocks of ``rows``."""
    net = network(units, hidden, out, theta.dtype, nt, act_param)
    data = _core.Input(X)
    got = np.empty((data.n_samples, int(units[-1])), dtype=theta.dtype)
    net.predict(theta, data, got, rows)
    return got


def set_optimizer(net, solver, lr, state_1=None, state_2=None, step=None, **options):
    """Give ``net`` the optimizer ``solver`` (a name) with fresh zero state
    unless given; returns ``(state_1, state_2, step)``."""
    if state_1 is None:
        state_1 = np.zeros(net.n_params, net.dtype)
    if state_2 is None:
        state_2 = np.zeros(net.n_params, net.dtype)
    if step is None:
        step = np.zeros(1, np.intp)
    net.set_optimizer(_core.SOLVERS[solver], state_1, state_2, step, learning_rate=lr,
                      **options)
    return state_1, state_2, step


def epoch(theta, X, Y, sw, order, batch, units, hidden, out, alpha, solver="adam",
          lr=1e-2, nt=2, act_param=LEAKY_SLOPE, loss_param=1.0, dropout=None,
          dropout_seed=0, dropout_row0=0, theta_start=None, state=None, **options):
    """One :meth:`Network.epoch` on ``theta`` in place; returns its result
    ``(sum_data, sum_penalty, n_rows, status)``. ``state``: the optimizer's
    ``(state_1, state_2, step)`` to go on from (updated in place)."""
    net = network(units, hidden, out, theta.dtype, nt, act_param, loss_param, dropout,
                  dropout_seed)
    set_optimizer(net, solver, lr, *(state or ()), **options)
    return net.epoch(theta, _core.Input(X, Y, sw), order, batch, alpha, dropout_row0,
                     theta_start)
