# cython: language_level=3
"""cbp's compiled core: forward pass, backpropagation and optimizer steps.

This file holds what Python calls: the ``def`` entry points take typed
memoryviews, check that the buffers they are given agree with each other,
and release the GIL for the whole computation. The computing is in the
``.pxd`` files cimported below, one concern each, all ``cdef inline``
functions on raw pointers inside ``nogil`` code, so that everything
compiles into this one extension and no call crosses modules:

- ``_types.pxd``: the codes (enums) and the structs ``Net``, ``CSR``,
  ``Optim``, ``Team``;
- ``_threads.pxd`` (with ``_omp.h``): thread teams, the split of rows and
  parameters between threads, pending signals;
- ``_scalar.pxd``: scalar math over float and double;
- ``_activations.pxd``: hidden activations, their derivatives, their
  kernels (``_kernels.h`` holds the vectorised ones);
- ``_losses.pxd``: the output's link and loss, and the output delta;
- ``_sparse.pxd``, ``_dropout.pxd``: a CSR first layer, dropout masks;
- ``_optimizers.pxd``: sgd, Adam, RMSprop steps and their settings;
- ``_layout.pxd``: where things lie in the workspace and in theta;
- ``_passes.pxd``: the two phases over a block of rows, and prediction;
- ``_net.pxd``: the structs built, and checked, from an entry point's
  arguments;
- ``_blas.pxd``: row-major BLAS.

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
from cython.parallel cimport parallel, threadid
from libc.math cimport isfinite
from libc.stdint cimport uint64_t
from libc.string cimport memcpy

from _types cimport (Net, CSR, Optim, Team, ACT_IDENTITY, ACT_LOGISTIC,
                     ACT_TANH, ACT_RELU, ACT_LEAKY_RELU, ACT_ELU,
                     ACT_SOFTPLUS, ACT_PRELU, OUT_IDENTITY, OUT_LOGISTIC,
                     OUT_SOFTMAX, OUT_EXP, OUT_HUBER, SOLVER_SGD, SOLVER_ADAM,
                     SOLVER_RMSPROP, INT_MAX, _STATUS_OK,
                     _STATUS_NONFINITE_LOSS, _STATUS_NONFINITE_PARAMS)
from _threads cimport (cbp_max_threads, cbp_has_openmp, cbp_full_team,
                       cbp_thread_cap, cbp_watch_fork, cbp_in_forked_child,
                       cbp_set_cpu_override, cbp_cpu_count, cbp_claim,
                       cbp_bar, cbp_bar_init, cbp_bar_wait, cbp_set_spin_ns,
                       cbp_set_leave_after, cbp_departure_count,
                       cbp_fetch_add, _team_begin, _team_end, _part, _part_q,
                       _n_quanta, _share_capacity, _n_row_blocks, _sum_blocks,
                       _pending_signal, _raise_pending)
from _blas cimport warm_gemm
from _activations cimport (bias_act_i, act_backward_i, prelu_forward_i,
                           prelu_backward_i)
from _losses cimport _output_pair, output_forward_i
from _dropout cimport (dropout_forward_i, dropout_backward_i, _drop_keep,
                       _drop_threshold)
from _optimizers cimport _optim_init
from _layout cimport Areas, _areas, _gather_rows
from _passes cimport params_l2, forward_rows, _all_finite
from _batch cimport (EpochArgs, _batch_rows, _batch_grad, _batch_update,
                     _epoch_thread)
from _net cimport _make_net, _set_dropout, _csr_init, _check_rows

import numpy as np

HIDDEN_ACTIVATIONS = {"identity": ACT_IDENTITY, "logistic": ACT_LOGISTIC,
                      "tanh": ACT_TANH, "relu": ACT_RELU,
                      "leaky_relu": ACT_LEAKY_RELU, "elu": ACT_ELU,
                      "softplus": ACT_SOFTPLUS, "prelu": ACT_PRELU}
OUTPUT_ACTIVATIONS = {"identity": OUT_IDENTITY, "logistic": OUT_LOGISTIC,
                      "softmax": OUT_SOFTMAX, "exp": OUT_EXP}
# Output codes of the regression losses (output activation, loss).
REGRESSION_LOSSES = {"squared_error": OUT_IDENTITY, "poisson": OUT_EXP,
                     "huber": OUT_HUBER}
SOLVERS = {"sgd": SOLVER_SGD, "adam": SOLVER_ADAM, "rmsprop": SOLVER_RMSPROP}

# Return codes of Network.epoch.
STATUS_OK = _STATUS_OK
STATUS_NONFINITE_LOSS = _STATUS_NONFINITE_LOSS
STATUS_NONFINITE_PARAMS = _STATUS_NONFINITE_PARAMS


def openmp_enabled():
    """Return True when the core was compiled with OpenMP."""
    return bool(cbp_has_openmp())


def max_threads():
    """Return OpenMP's default thread count (1 without OpenMP)."""
    return cbp_max_threads()


def thread_cap(n_threads):
    """Return ``n_threads`` capped to what a parallel region started from
    this thread can have: the CPUs this thread may run on (its affinity
    mask, see :func:`cpu_count`), OMP_THREAD_LIMIT, 1 inside an OpenMP
    region that cannot nest, 1 in a process forked from one that had
    loaded the core, 1 without OpenMP. At least 1; any integer is accepted
    (beyond a C int, the cap applies all the same). The core's calls use
    this many."""
    n = int(n_threads)
    return cbp_thread_cap(<int>max(-1, min(n, INT_MAX)))


def cpu_count():
    """Return the CPUs that cap the core's thread count: those in the
    calling thread's affinity mask (``os.sched_getaffinity``) under GNU
    OpenMP, 1 without OpenMP (or the count set by :func:`set_cpu_count`)."""
    return cbp_cpu_count()


def set_cpu_count(int n):
    """Make :func:`thread_cap` see ``n`` CPUs; 0 goes back to the detected
    count. Returns the previous setting (0 when none was set).

    A test hook: it lets the tests that check results do not depend on the
    thread count run more threads than the machine has CPUs. Not
    thread-safe; no effect without OpenMP.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return cbp_set_cpu_override(n)


def set_barrier_spin(long long ns):
    """Make the core's barriers spin for at most ``ns`` nanoseconds before
    they sleep (see ``cbp_bar_wait`` in _omp.h). Returns the previous
    setting.

    A benchmark and test hook: 0 sleeps at once, a large value spins as
    OpenMP's own barrier does. Not thread-safe.
    """
    if ns < 0:
        raise ValueError(f"ns must be >= 0, got {ns}")
    return cbp_set_spin_ns(ns)


def set_leave_after(long long batches):
    """Make thread ``tid >= 1`` of every epoch's team leave it after
    ``batches + tid - 1`` batches, whatever its waits for a CPU (see
    ``cbp_should_leave`` in _omp.h); 0 goes back to leaving only when the
    OS keeps a thread of a team of two off its CPU. Returns the previous
    setting.

    A test hook: the weights must not depend on when threads leave. Not
    thread-safe; no effect where the core's barrier is OpenMP's (no
    OpenMP, not Linux).
    """
    if batches < 0:
        raise ValueError(f"batches must be >= 0, got {batches}")
    return cbp_set_leave_after(batches)


def departures():
    """Threads that left an epoch's team before its end, counted since the
    process began (see :func:`set_leave_after`); a benchmark and test
    figure."""
    return cbp_departure_count()


def in_forked_child():
    """Return True in a process forked (``os.fork``, multiprocessing's
    'fork' start method) from one that had imported the core: the core
    then runs on one thread, as GNU OpenMP's threads do not survive a
    fork (see :func:`thread_cap`)."""
    return bool(cbp_in_forked_child())


if cbp_watch_fork() != 0:
    raise ImportError("cbp._core: pthread_atfork failed to register the "
                      "fork handler that keeps forked children serial")


def safety_checks(Py_ssize_t past_end=2, Py_ssize_t negative=-1):
    """Report which of Cython's index checks this build compiled in.

    A test hook for the debug build (``CBP_DEBUG=1``, see setup.py). It
    indexes a memoryview ``v`` over the middle of a larger buffer
    ``[0, 1, 2, 3]`` (``v = [1, 2]``), so that the unchecked reads of a
    release build stay inside the allocation: ``v[2]`` raises IndexError
    with ``boundscheck`` and reads 3 without; ``v[-1]`` is 2 with
    ``wraparound`` and reads 0 (the element before ``v``) without.

    Returns
    -------
    checks : dict
        ``{"boundscheck": bool, "wraparound": bool}``.
    """
    buf = np.arange(4, dtype=np.float64)
    cdef double[::1] v = buf[1:3]
    cdef bint bounds
    try:
        v[past_end]
        bounds = False
    except IndexError:
        bounds = True
    return {"boundscheck": bool(bounds), "wraparound": v[negative] == 2.0}


def elementwise_kernel(str kernel, floating[:, ::1] Z, floating[:, ::1] D,
                       const floating[::1] b, const floating[::1] slopes,
                       int act, double act_param=0.01, double rate=0.5,
                       uint64_t seed=0):
    """Test hook: run one elementwise kernel in place on an n × m block.

    Parameters
    ----------
    kernel : {'forward', 'backward', 'output', 'dropout_forward', \
'dropout_backward'}
        'forward': ``Z = f(Z + b)`` (:func:`bias_act_i`; PReLU:
        :func:`prelu_forward_i` with ``slopes``, ``D`` receiving the
        pre-activations). 'backward': ``D = D * f'`` from the activations
        ``Z`` (:func:`act_backward_i`; PReLU: :func:`prelu_backward_i`
        with ``Z`` the pre-activations, overwritten by the slopes' terms).
        'output': ``Z = link(Z + b)`` (:func:`output_forward_i`, ``act``
        an output code, whose link is applied). 'dropout_forward' /
        'dropout_backward': :func:`dropout_forward_i` on ``Z`` /
        :func:`dropout_backward_i` on ``D`` with the activations ``Z``,
        rows and units counted from 0.
    Z, D : ndarray of shape (n, m)
        The blocks, C-contiguous.
    b, slopes : ndarray of shape (m,)
        Biases and PReLU slopes.
    act : int
        The activation's code (``HIDDEN_ACTIVATIONS`` or
        ``OUTPUT_ACTIVATIONS``).
    act_param : float, default=0.01
        leaky_relu's slope.
    rate : float, default=0.5
        Dropout rate.
    seed : int, default=0
        Dropout key.
    """
    cdef Py_ssize_t n = Z.shape[0], m = Z.shape[1]
    cdef int link, loss
    if D.shape[0] != n or D.shape[1] != m or b.shape[0] != m or slopes.shape[0] != m:
        raise ValueError("Z, D, b and slopes do not match")
    if n == 0 or m == 0:
        return
    if kernel == "forward":
        if act == ACT_PRELU:
            prelu_forward_i(&Z[0, 0], &b[0], &slopes[0], &D[0, 0], n, m)
        else:
            bias_act_i(&Z[0, 0], &b[0], n, m, act, <floating>act_param)
    elif kernel == "backward":
        if act == ACT_PRELU:
            prelu_backward_i(&D[0, 0], &Z[0, 0], &slopes[0], n, m)
        else:
            act_backward_i(&D[0, 0], &Z[0, 0], n, m, act, <floating>act_param)
    elif kernel == "output":
        if not _output_pair(act, &link, &loss):
            raise ValueError(f"unknown output activation code {act}")
        output_forward_i(&Z[0, 0], &b[0], n, m, link)
    elif kernel == "dropout_forward":
        dropout_forward_i(&Z[0, 0], n, m, rate, seed, 0, 0)
    elif kernel == "dropout_backward":
        dropout_backward_i(&D[0, 0], &Z[0, 0], n, m, act, <floating>act_param,
                           rate, seed, 0, 0)
    else:
        raise ValueError(f"unknown kernel {kernel!r}")


def param_offsets(units, prelu=False):
    """Offsets of each ``W_l`` then each ``b_l`` in the flat parameter vector.

    Parameters
    ----------
    units : sequence of int
        Layer widths, input first.
    prelu : bool, default=False
        Whether the vector ends with one PReLU slope per hidden unit (after
        the biases, hidden layer after hidden layer).

    Returns
    -------
    offsets : ndarray of intp, shape (2 * (len(units) - 1),)
    n_params : int
        Length of the vector, slopes included.
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
    if prelu:
        pos += sum(int(u) for u in units[1:L])
    return offsets, pos


def train_workspace_size(units, Py_ssize_t rows, prelu=False, sparse=False):
    """Number of elements of the training workspace for blocks of ``rows``.

    Layout: activations A_1..A_L, hidden deltas D_1..D_{L-1}, gather
    buffers for two shuffled batches, the one trained on and the next
    (X, Y, sample weight; no X with a ``sparse`` X), then room for one
    double per row (the per-row losses), 8-byte aligned; with ``prelu``,
    then the hidden pre-activations (see :func:`_zsave_area`); then the
    per-chunk bias sums of :func:`_chunk_colsums` (all the biases' length
    per SPLIT_QUANTUM rows).
    """
    L = len(units) - 1
    sum_units = sum(int(u) for u in units[1:])
    floats = rows * (2 * sum_units - int(units[L])
                     + 2 * ((0 if sparse else int(units[0])) + int(units[L]) + 1))
    if prelu:
        floats += rows * (sum_units - int(units[L]))
    floats += _n_quanta(rows) * sum_units
    return floats + 2 * rows + 2


def predict_workspace_size(units, Py_ssize_t rows, int n_threads=1):
    """Number of elements of the prediction workspace for blocks of ``rows``
    split over ``n_threads`` threads (two buffers per thread), capped as
    :meth:`Network.predict` caps them (:func:`thread_cap`)."""
    L = len(units) - 1
    max_hidden = max([int(u) for u in units[1:L]], default=0)
    nt = cbp_thread_cap(max(1, n_threads))
    return 2 * nt * _share_capacity(rows, nt) * max_hidden


def batch_weight_sums(const floating[::1] sample_weight,
                      const Py_ssize_t[::1] order, Py_ssize_t batch_size,
                      double[::1] out):
    """Sum of the sample weights of each batch, as ``Network.epoch`` sums them.

    Batch ``j`` is ``order[j * batch_size:(j + 1) * batch_size]`` (or those
    rows when ``order`` is None); its weights are added in that order in
    double precision, so the sums are bit-identical to the ones
    ``Network.epoch`` divides by.

    Parameters
    ----------
    sample_weight : ndarray of shape (n_samples,)
    order : ndarray of intp, shape (n_total,), or None
    batch_size : int
    out : ndarray of float64, shape (ceil(n_total / batch_size),)
        Receives the sums.
    """
    cdef Py_ssize_t n = sample_weight.shape[0]
    cdef bint shuffled = order is not None
    cdef Py_ssize_t n_total = order.shape[0] if shuffled else n
    cdef Py_ssize_t n_batches, i, j, start, stop, r
    cdef double s
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    n_batches = (n_total + batch_size - 1) // batch_size
    if out.shape[0] != n_batches:
        raise ValueError(f"out must hold {n_batches} sums, it holds {out.shape[0]}")
    if shuffled:
        for i in range(n_total):
            if order[i] < 0 or order[i] >= n:
                raise ValueError("order holds an index out of range")
    with nogil:
        for j in range(n_batches):
            start = j * batch_size
            stop = min(start + batch_size, n_total)
            s = 0
            for i in range(start, stop):
                r = order[i] if shuffled else i
                s = s + sample_weight[r]
            out[j] = s


def dropout_keep(uint64_t seed, uint64_t row0, Py_ssize_t n_rows,
                 uint64_t unit0, Py_ssize_t n_units, double rate):
    """The dropout masks the core draws, for tests and inspection.

    Parameters
    ----------
    seed : int
        The masks' key (``dropout_seed``).
    row0 : int
        Row counter of the first row (``dropout_row0`` + the row's position).
    n_rows : int
        Number of rows.
    unit0 : int
        Number of the first unit among all hidden units (layer after layer).
    n_units : int
        Number of units.
    rate : float
        The dropout rate, in [0, 1).

    Returns
    -------
    keep : ndarray of bool, shape (n_rows, n_units)
    """
    cdef Py_ssize_t i, j
    cdef uint64_t thr
    if not (0 <= rate < 1):
        raise ValueError(f"dropout rates must be in [0, 1), got {rate}")
    thr = _drop_threshold(rate)
    keep = np.empty((n_rows, n_units), dtype=np.uint8)
    cdef unsigned char[:, ::1] k = keep
    for i in range(n_rows):
        for j in range(n_units):
            k[i, j] = _drop_keep(seed, row0 + i, unit0 + j, thr)
    return keep.astype(bool)


# The Network and Input classes, the entry points of training and
# prediction (one file per concern; they are Python classes of this module)
include "_network.pxi"
