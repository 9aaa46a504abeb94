# cython: language_level=3
"""cbp's compiled core: forward pass, backpropagation and optimizer steps.

Everything here works on raw pointers inside ``nogil`` code; the ``def``
entry points at the bottom take typed memoryviews, check that the buffers
they are given agree with each other, and release the GIL for the whole
computation.

The parameters of a network live in one flat buffer ``theta`` in
scikit-learn's packing order: the weight matrices first (``coefs_``,
each C-contiguous fan_in × fan_out), then the bias vectors
(``intercepts_``). ``offsets[l]`` and ``offsets[n_layers + l]`` give where
``W_l`` and ``b_l`` start. The gradient and the optimizer's state have
the same layout, so an optimizer step is one fused pass over flat arrays.

Notation (the code's names, used in the docs too): layer ``l`` maps
``A_l`` (rows × units[l]) to ``A_{l+1} = f(A_l @ W_l + b_l)``; ``A_0`` is
the input batch. At the output, ``delta = sw * (P - Y)``; going back,
``delta_l = f'(A_l) * (delta_{l+1} @ W_lᵀ)``;
``grad W_l = (A_lᵀ @ delta_{l+1} + alpha * W_l) / sw_sum`` and
``grad b_l = colsum(delta_{l+1}) / sw_sum``.
"""

cimport cython
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport (exp, expf, log, logf, log1p, log1pf, tanh, tanhf,
                        sqrt, sqrtf, fabs, fabsf, isfinite, pow)
from libc.string cimport memcpy
from cpython.exc cimport PyErr_CheckSignals

from _blas cimport gemm_rm, axpy, dot

import numpy as np

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int cbp_max_threads(void) { return omp_get_max_threads(); }
    static int cbp_has_openmp(void) { return 1; }
    #else
    static int cbp_max_threads(void) { return 1; }
    static int cbp_has_openmp(void) { return 0; }
    #endif
    """
    int cbp_max_threads() nogil
    int cbp_has_openmp() nogil

cdef enum:
    # Hidden-layer activations.
    ACT_IDENTITY = 0
    ACT_LOGISTIC = 1
    ACT_TANH = 2
    ACT_RELU = 3
    # Output layer: activation and its canonical loss.
    OUT_IDENTITY = 0   # identity + half squared error
    OUT_LOGISTIC = 1   # logistic + binary cross-entropy
    OUT_SOFTMAX = 2    # softmax + cross-entropy
    # Solvers with an in-core step.
    SOLVER_SGD = 0
    SOLVER_ADAM = 1
    # Elementwise passes smaller than this run on one thread.
    PAR_MIN = 32768
    INT_MAX = 2147483647

HIDDEN_ACTIVATIONS = {"identity": ACT_IDENTITY, "logistic": ACT_LOGISTIC,
                      "tanh": ACT_TANH, "relu": ACT_RELU}
OUTPUT_ACTIVATIONS = {"identity": OUT_IDENTITY, "logistic": OUT_LOGISTIC,
                      "softmax": OUT_SOFTMAX}
SOLVERS = {"sgd": SOLVER_SGD, "adam": SOLVER_ADAM}

# Return codes of train_epoch.
cdef enum:
    _STATUS_OK = 0
    _STATUS_NONFINITE_LOSS = 1
STATUS_OK = _STATUS_OK
STATUS_NONFINITE_LOSS = _STATUS_NONFINITE_LOSS


cdef struct Net:
    int n_layers              # number of weight layers (n_layers_ - 1)
    const int* units          # n_layers + 1 widths; units[0] = n_features
    const Py_ssize_t* offsets # 2 * n_layers starts of W_l then b_l in theta
    Py_ssize_t n_coefs        # weights at the head of theta (no biases)
    Py_ssize_t n_params
    Py_ssize_t sum_units      # sum of units[1:]
    int max_hidden            # widest hidden layer (0 when there is none)
    int hidden_act
    int out_act
    int n_threads


def openmp_enabled():
    """Return True when the core was compiled with OpenMP."""
    return bool(cbp_has_openmp())


def max_threads():
    """Return OpenMP's default thread count (1 without OpenMP)."""
    return cbp_max_threads()


# --------------------------------------------------------------------------
# Scalar helpers, fused over float and double.

cdef inline floating _exp(floating x) noexcept nogil:
    if floating is float:
        return expf(x)
    else:
        return exp(x)


cdef inline floating _log(floating x) noexcept nogil:
    if floating is float:
        return logf(x)
    else:
        return log(x)


cdef inline floating _tanh(floating x) noexcept nogil:
    if floating is float:
        return tanhf(x)
    else:
        return tanh(x)


cdef inline floating _sqrt(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef inline floating _softplus(floating x) noexcept nogil:
    """log(1 + exp(x)) without overflow."""
    if floating is float:
        return (x if x > 0 else 0) + log1pf(expf(-fabsf(x)))
    else:
        return (x if x > 0 else 0) + log1p(exp(-fabs(x)))


cdef inline int _threads_for(Py_ssize_t size, int n_threads) noexcept nogil:
    return n_threads if size >= PAR_MIN else 1


# --------------------------------------------------------------------------
# Elementwise kernels. Each is one pass over a C-contiguous rows × m block.

cdef void bias_act_i(floating* Z, const floating* b, Py_ssize_t n,
                     Py_ssize_t m, int act, int n_threads) noexcept nogil:
    """Hidden layer, in place: ``Z = f(Z + b)``."""
    cdef Py_ssize_t i, j
    cdef floating v
    cdef floating* z
    cdef int nt = _threads_for(n * m, n_threads)
    for i in prange(n, schedule='static', num_threads=nt):
        z = Z + i * m
        if act == ACT_RELU:
            for j in range(m):
                v = z[j] + b[j]
                z[j] = v if v > 0 else 0
        elif act == ACT_TANH:
            for j in range(m):
                z[j] = _tanh(z[j] + b[j])
        elif act == ACT_LOGISTIC:
            for j in range(m):
                z[j] = 1 / (1 + _exp(-(z[j] + b[j])))
        else:
            for j in range(m):
                z[j] = z[j] + b[j]


cdef void act_backward_i(floating* A, const floating* D, Py_ssize_t n,
                         Py_ssize_t m, int act, int n_threads) noexcept nogil:
    """Hidden delta, in place over the activations: ``A = D * f'(A)``.

    Each derivative is a function of the stored activation ``A = f(Z)``.
    """
    cdef Py_ssize_t i, j
    cdef floating a
    cdef floating* r
    cdef const floating* d
    cdef int nt = _threads_for(n * m, n_threads)
    for i in prange(n, schedule='static', num_threads=nt):
        r = A + i * m
        d = D + i * m
        if act == ACT_RELU:
            for j in range(m):
                r[j] = d[j] if r[j] > 0 else 0
        elif act == ACT_TANH:
            for j in range(m):
                a = r[j]
                r[j] = d[j] * (1 - a * a)
        elif act == ACT_LOGISTIC:
            for j in range(m):
                a = r[j]
                r[j] = d[j] * a * (1 - a)
        else:
            for j in range(m):
                r[j] = d[j]


cdef double output_delta_i(floating* Z, const floating* b, const floating* Y,
                           const floating* sw, Py_ssize_t n, Py_ssize_t k,
                           int out_act) noexcept nogil:
    """Output layer and loss, in place: ``Z = sw * (out(Z + b) - Y)``.

    Returns the weighted loss summed over rows, ``sum_i sw_i * loss_i``,
    each ``loss_i`` summed over outputs and computed from the logits so
    that it is finite wherever they are (log-softmax, softplus).
    Serial over rows: the sum is then the same whatever the thread count.
    """
    cdef Py_ssize_t i, j
    cdef floating v, mx, s, lse, w, p
    cdef floating* z
    cdef const floating* y
    cdef double total = 0, row
    for i in range(n):
        z = Z + i * k
        y = Y + i * k
        w = sw[i]
        row = 0
        if out_act == OUT_SOFTMAX:
            mx = z[0] + b[0]
            for j in range(k):
                z[j] = z[j] + b[j]
                if z[j] > mx:
                    mx = z[j]
            s = 0
            for j in range(k):
                s = s + _exp(z[j] - mx)
            lse = mx + _log(s)
            for j in range(k):
                if y[j] != 0:
                    row += y[j] * (lse - z[j])
                p = _exp(z[j] - lse)
                z[j] = w * (p - y[j])
        elif out_act == OUT_LOGISTIC:
            for j in range(k):
                v = z[j] + b[j]
                row += _softplus(v) - y[j] * v
                p = 1 / (1 + _exp(-v))
                z[j] = w * (p - y[j])
        else:
            for j in range(k):
                v = z[j] + b[j] - y[j]
                row += 0.5 * v * v
                z[j] = w * v
        total += w * row
    return total


cdef void output_forward_i(floating* Z, const floating* b, Py_ssize_t n,
                           Py_ssize_t k, int out_act,
                           int n_threads) noexcept nogil:
    """Output layer for prediction, in place: ``Z = out(Z + b)``."""
    cdef Py_ssize_t i, j
    cdef floating mx, s
    cdef floating* z
    cdef int nt = _threads_for(n * k * 8, n_threads)
    for i in prange(n, schedule='static', num_threads=nt):
        z = Z + i * k
        if out_act == OUT_SOFTMAX:
            mx = z[0] + b[0]
            for j in range(k):
                z[j] = z[j] + b[j]
                if z[j] > mx:
                    mx = z[j]
            s = 0
            for j in range(k):
                z[j] = _exp(z[j] - mx)
                s = s + z[j]
            for j in range(k):
                z[j] = z[j] / s
        elif out_act == OUT_LOGISTIC:
            for j in range(k):
                z[j] = 1 / (1 + _exp(-(z[j] + b[j])))
        else:
            for j in range(k):
                z[j] = z[j] + b[j]


cdef void colsum_i(floating* out, const floating* D, Py_ssize_t n,
                   Py_ssize_t m, floating scale, bint accumulate) noexcept nogil:
    """``out (+)= scale * D.sum(axis=0)``, rows summed in order."""
    cdef Py_ssize_t i, j
    cdef const floating* d
    if not accumulate:
        for j in range(m):
            out[j] = 0
    for i in range(n):
        d = D + i * m
        for j in range(m):
            out[j] += scale * d[j]


# --------------------------------------------------------------------------
# Optimizer steps: one fused pass over the flat parameter vector.

cdef void sgd_step_i(floating* theta, const floating* g, floating* velocity,
                     Py_ssize_t n, floating lr, floating momentum,
                     bint nesterov, int n_threads) noexcept nogil:
    """``velocity = momentum * velocity - lr * g``; ``theta += velocity``
    (Nesterov: ``theta += momentum * velocity - lr * g``)."""
    cdef Py_ssize_t i
    cdef floating v
    cdef int nt = _threads_for(n, n_threads)
    for i in prange(n, schedule='static', num_threads=nt):
        v = momentum * velocity[i] - lr * g[i]
        velocity[i] = v
        if nesterov:
            theta[i] += momentum * v - lr * g[i]
        else:
            theta[i] += v


cdef void adam_step_i(floating* theta, const floating* g, floating* m,
                      floating* v, Py_ssize_t n, floating lr_t,
                      floating beta_1, floating beta_2, floating epsilon,
                      int n_threads) noexcept nogil:
    """``m = beta_1 m + (1 - beta_1) g``; ``v = beta_2 v + (1 - beta_2) g²``;
    ``theta -= lr_t * m / (sqrt(v) + epsilon)``, with the bias corrections
    folded into ``lr_t = lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)``."""
    cdef Py_ssize_t i
    cdef floating gi, mi, vi
    cdef floating c1 = 1 - beta_1
    cdef floating c2 = 1 - beta_2
    cdef int nt = _threads_for(n, n_threads)
    for i in prange(n, schedule='static', num_threads=nt):
        gi = g[i]
        mi = beta_1 * m[i] + c1 * gi
        vi = beta_2 * v[i] + c2 * (gi * gi)
        m[i] = mi
        v[i] = vi
        theta[i] += (-lr_t * mi) / (_sqrt(vi) + epsilon)


# --------------------------------------------------------------------------
# Forward and backward over one block of rows.

cdef inline floating* _act(const Net* net, floating* acts, Py_ssize_t rows,
                           int layer) noexcept nogil:
    """Start of A_layer (layer >= 1) in the activations block."""
    cdef Py_ssize_t off = 0
    cdef int l
    for l in range(1, layer):
        off += net.units[l]
    return acts + rows * off


cdef double forward_loss_backward(
        const Net* net, const floating* theta, floating* grad,
        const floating* X, const floating* Y, const floating* sw,
        Py_ssize_t n, floating scale, bint accumulate,
        floating* acts, floating* scratch, Py_ssize_t rows) noexcept nogil:
    """Loss and gradient of one block of ``n`` rows.

    ``acts`` holds A_1..A_L laid out for ``rows`` >= n rows. The gradient
    of the data term, times ``scale`` (1 / sw_sum), is written to ``grad``
    (added to it when ``accumulate``); the penalty is not included.
    Returns ``sum_i sw_i * loss_i`` over the block.
    """
    cdef int L = net.n_layers
    cdef int l, fi, fo
    cdef const floating* A_prev
    cdef floating* A
    cdef floating* delta
    cdef double loss
    cdef floating beta = 1 if accumulate else 0

    # Forward: A_{l+1} = f(A_l @ W_l + b_l)
    A_prev = X
    for l in range(L):
        fi = net.units[l]
        fo = net.units[l + 1]
        A = _act(net, acts, rows, l + 1)
        # A = A_prev @ W_l
        gemm_rm(False, False, <int>n, fo, fi, 1, A_prev, fi,
                theta + net.offsets[l], fo, 0, A, fo)
        if l < L - 1:
            bias_act_i(A, theta + net.offsets[L + l], n, fo, net.hidden_act,
                       net.n_threads)
        A_prev = A

    # Output: delta_L = sw * (P - Y), in place over A_L
    fo = net.units[L]
    delta = _act(net, acts, rows, L)
    loss = output_delta_i(delta, theta + net.offsets[2 * L - 1], Y, sw, n, fo,
                          net.out_act)

    # Backward
    for l in range(L - 1, -1, -1):
        fi = net.units[l]
        fo = net.units[l + 1]
        A_prev = X if l == 0 else _act(net, acts, rows, l)
        # grad W_l (+)= scale * A_lᵀ @ delta_{l+1}
        gemm_rm(True, False, fi, fo, <int>n, scale, A_prev, fi, delta, fo,
                beta, grad + net.offsets[l], fo)
        # grad b_l (+)= scale * delta_{l+1}.sum(axis=0)
        colsum_i(grad + net.offsets[L + l], delta, n, fo, scale, accumulate)
        if l > 0:
            # scratch = delta_{l+1} @ W_lᵀ
            gemm_rm(False, True, <int>n, fi, fo, 1, delta, fo,
                    theta + net.offsets[l], fo, 0, scratch, fi)
            # delta_l = f'(A_l) * scratch, in place over A_l
            A = _act(net, acts, rows, l)
            act_backward_i(A, scratch, n, fi, net.hidden_act, net.n_threads)
            delta = A
    return loss


cdef void add_penalty_grad(const Net* net, const floating* theta,
                           floating* grad, floating coef) noexcept nogil:
    """``grad[:n_coefs] += coef * theta[:n_coefs]`` (L2 on weights only)."""
    if coef != 0 and net.n_coefs > 0:
        axpy(<int>net.n_coefs, coef, theta, grad)


cdef double penalty_value(const Net* net, const floating* theta,
                          double alpha) noexcept nogil:
    """``0.5 * alpha * ||W||²`` over all weights (not biases)."""
    if alpha == 0 or net.n_coefs == 0:
        return 0
    return 0.5 * alpha * dot(<int>net.n_coefs, theta, theta)


cdef void forward_block(const Net* net, const floating* theta,
                        const floating* X, Py_ssize_t n, floating* out,
                        floating* buf0, floating* buf1) noexcept nogil:
    """Prediction for one block of n rows into ``out`` (n × units[L])."""
    cdef int L = net.n_layers
    cdef int l, fi, fo
    cdef const floating* A_prev = X
    cdef floating* A
    for l in range(L):
        fi = net.units[l]
        fo = net.units[l + 1]
        if l == L - 1:
            A = out
        elif l % 2 == 0:
            A = buf0
        else:
            A = buf1
        # A = A_prev @ W_l
        gemm_rm(False, False, <int>n, fo, fi, 1, A_prev, fi,
                theta + net.offsets[l], fo, 0, A, fo)
        if l < L - 1:
            bias_act_i(A, theta + net.offsets[L + l], n, fo, net.hidden_act,
                       net.n_threads)
        else:
            output_forward_i(A, theta + net.offsets[L + l], n, fo,
                             net.out_act, net.n_threads)
        A_prev = A


# --------------------------------------------------------------------------
# Python entry points.

cdef Net _make_net(const int[::1] units, const Py_ssize_t[::1] offsets,
                   Py_ssize_t n_params, int hidden_act, int out_act,
                   int n_threads) except *:
    cdef Net net
    cdef int l
    cdef Py_ssize_t expect = 0
    net.n_layers = units.shape[0] - 1
    if net.n_layers < 1:
        raise ValueError("a network needs at least one weight layer")
    if offsets.shape[0] != 2 * net.n_layers:
        raise ValueError("offsets must hold 2 * n_layers entries")
    net.sum_units = 0
    net.max_hidden = 0
    for l in range(net.n_layers + 1):
        if units[l] < 1:
            raise ValueError("layer widths must be >= 1")
        if l >= 1:
            net.sum_units += units[l]
        if 1 <= l < net.n_layers and units[l] > net.max_hidden:
            net.max_hidden = units[l]
    for l in range(net.n_layers):
        if offsets[l] != expect:
            raise ValueError("offsets do not match the packing of theta")
        expect += <Py_ssize_t>units[l] * units[l + 1]
    net.n_coefs = expect
    if net.n_coefs > INT_MAX:
        raise ValueError("too many weights for 32-bit BLAS sizes")
    for l in range(net.n_layers):
        if offsets[net.n_layers + l] != expect:
            raise ValueError("offsets do not match the packing of theta")
        expect += units[l + 1]
    if expect != n_params:
        raise ValueError(
            f"theta has {n_params} entries, the layer widths need {expect}")
    if hidden_act not in (ACT_IDENTITY, ACT_LOGISTIC, ACT_TANH, ACT_RELU):
        raise ValueError(f"unknown hidden activation code {hidden_act}")
    if out_act not in (OUT_IDENTITY, OUT_LOGISTIC, OUT_SOFTMAX):
        raise ValueError(f"unknown output activation code {out_act}")
    net.n_params = n_params
    net.units = &units[0]
    net.offsets = &offsets[0]
    net.hidden_act = hidden_act
    net.out_act = out_act
    net.n_threads = max(1, n_threads)
    return net


def param_offsets(units):
    """Offsets of each ``W_l`` then each ``b_l`` in the flat parameter vector.

    Parameters
    ----------
    units : sequence of int
        Layer widths, input first.

    Returns
    -------
    offsets : ndarray of intp, shape (2 * (len(units) - 1),)
    n_params : int
    """
    L = len(units) - 1
    offsets = np.empty(2 * L, dtype=np.intp)
    pos = 0
    for l in range(L):
        offsets[l] = pos
        pos += int(units[l]) * int(units[l + 1])
    for l in range(L):
        offsets[L + l] = pos
        pos += int(units[l + 1])
    return offsets, pos


def train_workspace_size(units, Py_ssize_t rows):
    """Number of elements of the training workspace for blocks of ``rows``.

    Layout: activations A_1..A_L, one scratch block for back-propagated
    deltas, then gather buffers for a shuffled batch (X, Y, sample weight).
    """
    L = len(units) - 1
    max_hidden = max([int(u) for u in units[1:L]], default=0)
    return rows * (sum(int(u) for u in units[1:]) + max_hidden
                   + int(units[0]) + int(units[L]) + 1)


def predict_workspace_size(units, Py_ssize_t rows):
    """Number of elements of the prediction workspace for blocks of ``rows``."""
    L = len(units) - 1
    max_hidden = max([int(u) for u in units[1:L]], default=0)
    return 2 * rows * max_hidden


cdef void _check_rows(Py_ssize_t rows) except *:
    if rows < 1:
        raise ValueError("block size must be >= 1")
    if rows > INT_MAX:
        raise ValueError("block size too large for 32-bit BLAS sizes")


def loss_grad(floating[::1] theta, floating[::1] grad,
              const floating[:, ::1] X, const floating[:, ::1] Y,
              const floating[::1] sample_weight,
              const int[::1] units, const Py_ssize_t[::1] offsets,
              int hidden_act, int out_act, double alpha,
              floating[::1] work, Py_ssize_t block_rows, int n_threads=1):
    """Full-batch loss and gradient (the objective lbfgs minimises).

    The rows of ``X`` are processed in blocks of ``block_rows`` (the
    workspace is sized for that), the gradient accumulated over blocks.

    Returns
    -------
    data_loss : float
        ``sum_i sw_i * loss_i / sw_sum``, each ``loss_i`` summed over outputs.
    penalty : float
        ``0.5 * alpha * ||W||² / sw_sum``.

    ``grad`` receives the gradient of ``data_loss + penalty``.
    """
    cdef Net net = _make_net(units, offsets, theta.shape[0], hidden_act,
                             out_act, n_threads)
    cdef Py_ssize_t n = X.shape[0]
    cdef Py_ssize_t start, nb, rows = min(block_rows, n)
    cdef double total = 0, sw_sum = 0, pen
    cdef floating scale
    cdef floating* acts
    cdef floating* scratch
    cdef Py_ssize_t i
    if n < 1:
        raise ValueError("loss_grad needs at least one sample")
    _check_rows(rows)
    if grad.shape[0] != theta.shape[0]:
        raise ValueError("grad and theta differ in size")
    if X.shape[1] != units[0] or Y.shape[1] != units[net.n_layers]:
        raise ValueError("X or Y do not match the layer widths")
    if Y.shape[0] != n or sample_weight.shape[0] != n:
        raise ValueError("X, Y and sample_weight differ in length")
    if work.shape[0] < train_workspace_size(units, rows):
        raise ValueError("workspace too small")
    for i in range(n):
        sw_sum += sample_weight[i]
    if sw_sum <= 0:
        raise ValueError("the sample weights sum to zero")
    scale = <floating>(1.0 / sw_sum)
    acts = &work[0]
    scratch = acts + rows * net.sum_units
    with nogil:
        start = 0
        while start < n:
            nb = min(rows, n - start)
            total += forward_loss_backward(
                &net, &theta[0], &grad[0], &X[start, 0], &Y[start, 0],
                &sample_weight[start], nb, scale, start > 0, acts, scratch,
                rows)
            start += nb
        add_penalty_grad(&net, &theta[0], &grad[0], <floating>(alpha / sw_sum))
        pen = penalty_value(&net, &theta[0], alpha) / sw_sum
    return total / sw_sum, pen


def train_epoch(floating[::1] theta, floating[::1] grad,
                floating[::1] state_1, floating[::1] state_2,
                const floating[:, ::1] X, const floating[:, ::1] Y,
                const floating[::1] sample_weight,
                const Py_ssize_t[::1] order, Py_ssize_t batch_size,
                const int[::1] units, const Py_ssize_t[::1] offsets,
                int hidden_act, int out_act, double alpha,
                int solver, double learning_rate, double momentum,
                bint nesterov, double beta_1, double beta_2, double epsilon,
                Py_ssize_t[::1] step, floating[::1] work, int n_threads=1):
    """One epoch of mini-batch training, in place, without the GIL.

    Batches are consecutive runs of ``batch_size`` entries of ``order``
    (or of the rows, when ``order`` is None), gathered into the workspace.
    Each batch: forward, output delta, backward, the L2 gradient, and one
    fused optimizer step over ``theta``; ``state_1``/``state_2`` are the
    velocity (sgd) or the moments m and v (adam). ``step[0]`` counts Adam's
    updates and is advanced in place, so it stays right if the epoch is
    interrupted. Pending signals (Ctrl-C) are checked between batches: a
    KeyboardInterrupt leaves theta as it was after the last whole step.

    Returns
    -------
    sum_data, sum_penalty : float
        Sums over batches of the batch's data loss and penalty (each as
        ``loss_grad`` defines them) times the batch's number of rows.
    n_rows : int
        Rows trained on (fewer than all when stopped early).
    status : int
        STATUS_OK, or STATUS_NONFINITE_LOSS when a batch's loss was not
        finite; that batch's update is then not applied.
    """
    cdef Net net = _make_net(units, offsets, theta.shape[0], hidden_act,
                             out_act, n_threads)
    cdef Py_ssize_t n = X.shape[0]
    cdef Py_ssize_t nf = X.shape[1]
    cdef Py_ssize_t k = Y.shape[1]
    cdef Py_ssize_t P = theta.shape[0]
    cdef Py_ssize_t rows = min(batch_size, n)
    cdef bint shuffled = order is not None
    cdef Py_ssize_t n_total = order.shape[0] if shuffled else n
    cdef Py_ssize_t start, nb, i, r
    cdef double sum_data = 0, sum_pen = 0, batch_data, batch_pen, sw_sum
    cdef double lr_t
    cdef int status = _STATUS_OK
    cdef floating* acts
    cdef floating* scratch
    cdef floating* Xb
    cdef floating* Yb
    cdef floating* swb
    cdef const floating* Xp
    cdef const floating* Yp
    cdef const floating* swp
    cdef Py_ssize_t done = 0

    if n < 1:
        raise ValueError("train_epoch needs at least one sample")
    _check_rows(rows)
    if grad.shape[0] != P or state_1.shape[0] != P or (
            solver == SOLVER_ADAM and state_2.shape[0] != P):
        raise ValueError("grad and optimizer state must match theta in size")
    if nf != units[0] or k != units[net.n_layers]:
        raise ValueError("X or Y do not match the layer widths")
    if Y.shape[0] != n or sample_weight.shape[0] != n:
        raise ValueError("X, Y and sample_weight differ in length")
    if work.shape[0] < train_workspace_size(units, rows):
        raise ValueError("workspace too small")
    if solver not in (SOLVER_SGD, SOLVER_ADAM):
        raise ValueError(f"unknown solver code {solver}")
    if step.shape[0] < 1:
        raise ValueError("step must hold one counter")
    if shuffled:
        for i in range(n_total):
            if order[i] < 0 or order[i] >= n:
                raise ValueError("order holds an index out of range")

    acts = &work[0]
    scratch = acts + rows * net.sum_units
    Xb = scratch + rows * net.max_hidden
    Yb = Xb + rows * nf
    swb = Yb + rows * k

    with nogil:
        start = 0
        while start < n_total:
            nb = min(rows, n_total - start)
            if shuffled:
                # gather the batch: Xb = X[order[start:start + nb]], ...
                for i in range(nb):
                    r = order[start + i]
                    memcpy(Xb + i * nf, &X[r, 0], nf * sizeof(floating))
                    memcpy(Yb + i * k, &Y[r, 0], k * sizeof(floating))
                    swb[i] = sample_weight[r]
                Xp = Xb
                Yp = Yb
                swp = swb
            else:
                Xp = &X[start, 0]
                Yp = &Y[start, 0]
                swp = &sample_weight[start]
            sw_sum = 0
            for i in range(nb):
                sw_sum += swp[i]
            if sw_sum > 0:
                batch_data = forward_loss_backward(
                    &net, &theta[0], &grad[0], Xp, Yp, swp, nb,
                    <floating>(1.0 / sw_sum), False, acts, scratch, rows
                ) / sw_sum
                batch_pen = penalty_value(&net, &theta[0], alpha) / sw_sum
                if not (isfinite(batch_data) and isfinite(batch_pen)):
                    status = _STATUS_NONFINITE_LOSS
                    break
                add_penalty_grad(&net, &theta[0], &grad[0],
                                 <floating>(alpha / sw_sum))
                if solver == SOLVER_ADAM:
                    step[0] += 1
                    lr_t = (learning_rate * sqrt(1 - pow(beta_2, step[0]))
                            / (1 - pow(beta_1, step[0])))
                    adam_step_i(&theta[0], &grad[0], &state_1[0], &state_2[0],
                                P, <floating>lr_t, <floating>beta_1,
                                <floating>beta_2, <floating>epsilon,
                                net.n_threads)
                else:
                    sgd_step_i(&theta[0], &grad[0], &state_1[0], P,
                               <floating>learning_rate, <floating>momentum,
                               nesterov, net.n_threads)
                sum_data += batch_data * nb
                sum_pen += batch_pen * nb
            # batches whose weights are all zero carry no gradient: skipped
            done += nb
            start += nb
            if start < n_total:
                with gil:
                    PyErr_CheckSignals()
    return sum_data, sum_pen, done, status


def forward(const floating[::1] theta, const floating[:, ::1] X,
            floating[:, ::1] out, const int[::1] units,
            const Py_ssize_t[::1] offsets, int hidden_act, int out_act,
            floating[::1] work, Py_ssize_t block_rows, int n_threads=1):
    """Predict ``out = network(X)`` in blocks of ``block_rows``, without the GIL.

    Memory beyond ``out`` is the workspace, bounded by the block size.
    """
    cdef Net net = _make_net(units, offsets, theta.shape[0], hidden_act,
                             out_act, n_threads)
    cdef Py_ssize_t n = X.shape[0]
    cdef Py_ssize_t start, nb, rows = min(block_rows, n)
    cdef floating* buf0
    cdef floating* buf1
    if n == 0:
        return
    _check_rows(rows)
    if X.shape[1] != units[0] or out.shape[1] != units[net.n_layers]:
        raise ValueError("X or out do not match the layer widths")
    if out.shape[0] != n:
        raise ValueError("X and out differ in length")
    if work.shape[0] < predict_workspace_size(units, rows):
        raise ValueError("workspace too small")
    buf0 = &work[0] if work.shape[0] > 0 else NULL
    buf1 = buf0 + rows * net.max_hidden if buf0 != NULL else NULL
    with nogil:
        start = 0
        while start < n:
            nb = min(rows, n - start)
            forward_block(&net, &theta[0], &X[start, 0], nb, &out[start, 0],
                          buf0, buf1)
            start += nb
