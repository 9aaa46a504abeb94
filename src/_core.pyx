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
                       cbp_set_cpu_override, cbp_cpu_count, cbp_barrier,
                       cbp_fetch_add, _team_begin, _team_end, _part, _part_q,
                       _n_quanta, _share_capacity, _n_row_blocks, _sum_blocks,
                       _pending_signal, _raise_pending)
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


# --------------------------------------------------------------------------
# The network of one fit.

cdef class Input:
    """Rows of X, with Y and sample weights for training, as the core
    reads them.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features), or tuple
        C-contiguous float32 or float64, or a sparse X as ``(data, indices,
        indptr, n_features)`` (CSR; indices and indptr of intp, data of the
        network's dtype).
    Y : ndarray of shape (n_samples, n_outputs), default=None
        C-contiguous, X's dtype; None for prediction.
    sample_weight : ndarray of shape (n_samples,), default=None
        C-contiguous, X's dtype; given with Y.
    """
    cdef CSR csr
    cdef readonly bint sparse
    cdef readonly Py_ssize_t n_samples
    cdef readonly Py_ssize_t n_features
    cdef readonly object values
    cdef readonly object Y
    cdef readonly object sample_weight
    cdef object _csr_arrays   # what the CSR struct points into

    def __init__(self, X, Y=None, sample_weight=None):
        cdef bint dense = not isinstance(X, tuple)
        self.sparse = _csr_init(&self.csr, None if dense else X, dense)
        if self.sparse:
            self._csr_arrays = X
            self.values = X[0]
            self.n_samples = self.csr.n_rows
            self.n_features = self.csr.n_cols
        else:
            if not isinstance(X, np.ndarray) or X.ndim != 2 \
                    or not X.flags.c_contiguous:
                raise ValueError(
                    "X must be a C-contiguous 2-D numpy array or a CSR tuple "
                    f"(data, indices, indptr, n_features), got {type(X).__name__}")
            # one flat view: its pointer is X's row 0 even with no column
            self.values = X.reshape(-1)
            self.n_samples = X.shape[0]
            self.n_features = X.shape[1]
        if (Y is None) != (sample_weight is None):
            raise ValueError("Y and sample_weight go together")
        if Y is not None and (Y.ndim != 2 or Y.shape[0] != self.n_samples
                              or sample_weight.shape[0] != self.n_samples):
            raise ValueError("X, Y and sample_weight differ in length")
        self.Y = Y
        self.sample_weight = sample_weight


cdef class Network:
    """The network of one fit: its shape, codes, options and workspaces.

    Built once per fit; its methods are the core's entry points: an
    :meth:`epoch` of mini-batch training; one batch's gradient
    (:meth:`batch_grad`) and optimizer step (:meth:`step`), the batch step
    that an epoch runs per batch and data-parallel training runs with an
    allreduce between the two; the full-batch loss and gradient
    (:meth:`loss_grad`: lbfgs, gradient checking); and :meth:`predict`.
    The parameters ``theta`` (flat, see :func:`param_offsets`) and the
    data (:class:`Input`) are passed to each call. Every call runs without
    the GIL on ``n_threads`` OpenMP threads (call BLAS single-threaded)
    and gives the same bits for the same thread count. One object serves
    one thread at a time (its workspaces are shared by its calls).

    Parameters
    ----------
    units : sequence of int
        Layer widths, input first.
    activation : int
        The hidden activation's code (``HIDDEN_ACTIVATIONS``).
    output : int
        The output's code (``OUTPUT_ACTIVATIONS`` or ``REGRESSION_LOSSES``).
    dtype : float32 or float64
        The dtype of theta and of the data.
    activation_param : float, default=0.0
        leaky_relu's slope.
    loss_param : float, default=1.0
        Huber's threshold.
    n_threads : int, default=1
        OpenMP threads, capped by :func:`thread_cap`.
    """
    cdef Net net
    cdef Optim opt
    cdef readonly object units
    cdef readonly object offsets
    cdef readonly Py_ssize_t n_params
    cdef readonly object dtype
    cdef readonly bint has_optimizer
    cdef object _dropout
    cdef object _drop_pos
    cdef object _state_1
    cdef object _state_2
    cdef object _step
    cdef object _work
    cdef object _grad
    cdef object _sq

    def __init__(self, units, int activation, int output, dtype, *,
                 double activation_param=0.0, double loss_param=1.0,
                 int n_threads=1):
        self.units = np.array(units, dtype=np.intc)
        if self.units.ndim != 1 or self.units.shape[0] < 2:
            raise ValueError("a network needs at least one weight layer")
        self.offsets, self.n_params = param_offsets(
            self.units, activation == ACT_PRELU)
        self.dtype = np.dtype(dtype)
        if self.dtype != np.float32 and self.dtype != np.float64:
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        self.net = _make_net(self.units, self.offsets, self.n_params,
                             activation, output, n_threads, activation_param,
                             loss_param)
        self.net.drop_pos = NULL
        self._sq = np.zeros(max(1, _n_row_blocks(&self.net)), dtype=np.float64)
        self._work = np.empty(0, dtype=self.dtype)
        self._grad = None
        self.has_optimizer = False

    @property
    def n_threads(self):
        """The OpenMP threads of every call (after the cap)."""
        return self.net.n_threads

    @property
    def prelu(self):
        """Whether theta ends with learned PReLU slopes."""
        return self.net.slope_offset >= 0

    def set_dropout(self, rates, uint64_t seed):
        """Drop hidden units at training; ``rates`` None turns it off.

        ``rates``: float64, one per hidden layer, in [0, 1); inverted
        scaling. The masks are keyed by ``seed`` and each row's counter
        (the ``dropout_row0`` of the training calls plus the row's place),
        so they do not depend on the thread count (see :func:`dropout_keep`).
        """
        self.net.dropout = NULL
        self._dropout = None
        if rates is not None:
            self._dropout = np.ascontiguousarray(rates, dtype=np.float64)
            _set_dropout(&self.net, self._dropout, seed, 0)

    def set_optimizer(self, int solver, state_1, state_2, step, *,
                      double learning_rate, double momentum=0.9,
                      bint nesterov=True, double beta_1=0.9,
                      double beta_2=0.999, double epsilon=1e-8,
                      double rho=0.9, double weight_decay=0.0):
        """The optimizer of :meth:`epoch` and :meth:`step`, and its state.

        ``state_1``/``state_2`` (like theta) are the velocity (sgd), the
        moments m and v (adam; ``state_2`` unused otherwise) or the mean
        square (rmsprop, decay ``rho``); ``step`` (intp, one counter)
        counts Adam's updates. They are the caller's arrays, updated in
        place, so that training goes on from them (partial_fit, pickling).
        ``weight_decay`` > 0 adds decoupled weight decay on the weights
        (not biases or slopes), ``theta -= learning_rate * weight_decay *
        theta`` in the same pass (AdamW with adam).
        """
        if solver not in (SOLVER_SGD, SOLVER_ADAM, SOLVER_RMSPROP):
            raise ValueError(f"unknown solver code {solver}")
        if not (0 <= rho < 1):
            raise ValueError(f"rho must be in [0, 1), got {rho}")
        if not (weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        for name, state in (("state_1", state_1), ("state_2", state_2)):
            if name == "state_2" and solver != SOLVER_ADAM:
                continue
            if state.dtype != self.dtype or state.shape != (self.n_params,):
                raise ValueError(
                    f"{name} must be a {self.dtype} array of {self.n_params} "
                    "entries, like theta")
        if step.dtype != np.intp or step.shape[0] < 1:
            raise ValueError("step must be an intp array holding one counter")
        _optim_init(&self.opt, solver, learning_rate, momentum, nesterov,
                    beta_1, beta_2, epsilon, rho, weight_decay)
        self._state_1 = state_1
        self._state_2 = state_2 if solver == SOLVER_ADAM else state_1
        self._step = step
        self.has_optimizer = True

    @property
    def learning_rate(self):
        """The optimizer's learning rate (schedules change it between epochs)."""
        return self.opt.learning_rate

    @learning_rate.setter
    def learning_rate(self, double value):
        self.opt.learning_rate = value

    cdef object _workspace(self, Py_ssize_t rows, bint sparse):
        """The training workspace for ``rows`` rows, grown when too small."""
        cdef Py_ssize_t size = train_workspace_size(
            self.units, rows, self.net.slope_offset >= 0, sparse)
        if self._work.shape[0] < size:
            self._work = np.empty(size, dtype=self.dtype)
        return self._work

    cdef object _grad_buffer(self):
        if self._grad is None:
            self._grad = np.empty(self.n_params, dtype=self.dtype)
        return self._grad

    cdef int _check(self, Py_ssize_t n_params, bint is_double, Input data,
                    bint training) except -1:
        if is_double != (self.dtype == np.float64) or n_params != self.n_params:
            raise ValueError(
                f"theta must be a {self.dtype} array of {self.n_params} entries")
        if data.values.dtype != self.dtype:
            raise ValueError(f"X must be of dtype {self.dtype}")
        if data.n_features != self.net.units[0]:
            raise ValueError(
                f"X has {data.n_features} features, the network takes "
                f"{self.net.units[0]}")
        if training:
            if data.Y is None:
                raise ValueError("training needs Y and sample_weight")
            if (data.Y.dtype != self.dtype
                    or data.sample_weight.dtype != self.dtype):
                raise ValueError(
                    f"Y and sample_weight must be of dtype {self.dtype}")
            if data.Y.shape[1] != self.net.units[self.net.n_layers]:
                raise ValueError(
                    f"Y has {data.Y.shape[1]} columns, the network has "
                    f"{self.net.units[self.net.n_layers]} outputs")
        return 0

    def epoch(self, floating[::1] theta, Input data, order,
              Py_ssize_t batch_size, double alpha, uint64_t dropout_row0=0,
              theta_start=None):
        """One epoch of mini-batch training, theta updated in place.

        Batches are consecutive runs of ``batch_size`` entries of ``order``
        (or of the rows, when ``order`` is None). Each runs the batch step:
        :meth:`batch_grad` of its rows scaled by ``1 / sw_sum`` (the
        batch's total weight), then :meth:`step` with ``l2 = alpha /
        sw_sum``; batches of zero weight carry no gradient and are skipped.
        The dropout masks of the epoch's i-th row are those of row counter
        ``dropout_row0 + i``. Pending signals (Ctrl-C) are checked between
        batches: the exception is raised with theta as it was after the
        last whole step. ``theta_start`` (like theta, or None) receives
        theta as it was before the epoch.

        Returns
        -------
        sum_data, sum_penalty : float
            Sums over batches of the batch's data loss and penalty (as
            :meth:`loss_grad` defines them) times the batch's rows.
        n_rows : int
            Rows trained on (fewer than all when stopped early).
        status : int
            STATUS_OK, or flags or-ed together: STATUS_NONFINITE_LOSS when
            a batch's loss was not finite (that batch's update is then not
            applied, nor any later batch's), STATUS_NONFINITE_PARAMS when
            theta holds a NaN or an infinity at the end.
        """
        cdef Py_ssize_t n = data.n_samples
        cdef Py_ssize_t n_total = n if order is None else order.shape[0]
        cdef Py_ssize_t rows = min(batch_size, n)
        cdef const Py_ssize_t[::1] order_mv
        cdef floating[::1] start_mv
        cdef const floating[::1] X_values
        cdef const floating[:, ::1] Y
        cdef const floating[::1] sw
        cdef floating[::1] work
        cdef floating[::1] grad
        cdef floating[::1] s1
        cdef floating[::1] s2
        cdef Py_ssize_t[::1] step
        cdef double[::1] sq = self._sq
        cdef double[::1] shared = np.zeros(5, dtype=np.float64)
        cdef Py_ssize_t[::1] pool = np.zeros(4, dtype=np.intp)
        cdef CSR csr = data.csr
        cdef EpochArgs a
        cdef Areas w
        cdef Team team
        cdef Py_ssize_t i
        cdef int tid, status
        cdef int nt = self.net.n_threads
        if not self.has_optimizer:
            raise ValueError("set_optimizer must be called before epoch")
        self._check(theta.shape[0], sizeof(floating) == 8, data, True)
        if n < 1:
            raise ValueError("an epoch needs at least one sample")
        _check_rows(rows)
        if order is not None:
            order_mv = order
            for i in range(n_total):
                if order_mv[i] < 0 or order_mv[i] >= n:
                    raise ValueError("order holds an index out of range")
        if theta_start is not None:
            start_mv = theta_start
            if start_mv.shape[0] != theta.shape[0]:
                raise ValueError("theta_start must match theta in size")
            memcpy(&start_mv[0], &theta[0], theta.shape[0] * sizeof(floating))
        if n_total == 0:
            return 0.0, 0.0, 0, STATUS_OK
        Y = data.Y
        sw = data.sample_weight
        grad = self._grad_buffer()
        s1 = self._state_1
        s2 = self._state_2
        step = self._step
        work = self._workspace(rows, data.sparse)
        X_values = data.values
        a.X = &X_values[0] if X_values.shape[0] > 0 else NULL
        a.xs = 0 if data.sparse else data.n_features
        a.Y = &Y[0, 0]
        a.k = Y.shape[1]
        a.sw = &sw[0]
        a.n_total = n_total
        a.order = &order_mv[0] if order is not None and n_total > 0 else NULL
        csr.rowmap = a.order
        a.csr = &csr if data.sparse else NULL
        a.alpha = alpha
        a.sq = &sq[0]
        a.step = &step[0]
        a.shared = &shared[0]
        a.pool = &pool[0]
        self.net.drop_row0 = dropout_row0
        self.net.drop_pos = NULL
        w = _areas(&self.net, &work[0], rows, a.xs, a.k)
        _team_begin(&team)
        with nogil, parallel(num_threads=nt):
            tid = threadid()
            # a short team (OMP_DYNAMIC, a limit) computes nothing: raised
            if cbp_full_team(nt, &team.short_team):
                _epoch_thread(&self.net, &self.opt, &a, &w, &theta[0],
                              &grad[0], &s1[0], &s2[0], tid, nt)
        _team_end(&team, nt)
        if shared[4] != 0:
            _raise_pending()
        status = <int>shared[3]
        if not _all_finite(&theta[0], theta.shape[0]):
            status |= _STATUS_NONFINITE_PARAMS
        return shared[0], shared[1], <Py_ssize_t>shared[2], status

    def batch_grad(self, const floating[::1] theta, floating[::1] grad,
                   Input data, const Py_ssize_t[::1] index, double scale,
                   positions=None, uint64_t dropout_row0=0):
        """Phase 1 and 2 of the batch step for the rows ``index`` of data.

        ``grad = scale * sum_i sw_i * d loss_i / d theta`` over the rows
        (no L2 term: :meth:`step` adds it). ``scale = 1 / sw_sum`` of the
        batch gives its mean gradient; in data-parallel training each rank
        passes ``1 / sw_sum`` of the whole (global) batch, so that the
        ranks' gradients add up to the global batch's. The dropout masks
        of row i are those of counter ``dropout_row0 + positions[i]``
        (intp; default: i), the row's place in the global epoch.

        Returns
        -------
        data_sum : float
            ``sum_i sw_i * loss_i`` over the rows (not scaled).
        """
        cdef Py_ssize_t n = data.n_samples
        cdef Py_ssize_t nb = index.shape[0]
        cdef const floating[::1] X_values
        cdef const floating[:, ::1] Y
        cdef const floating[::1] sw
        cdef const Py_ssize_t[::1] pos_mv
        cdef floating[::1] work
        cdef CSR csr = data.csr
        cdef const CSR* csr_p
        cdef const floating* X_p
        cdef Areas w
        cdef Team team
        cdef Py_ssize_t i, xs, k, r0, r1
        cdef int tid
        cdef int nt = self.net.n_threads
        cdef double data_sum = 0
        self._check(theta.shape[0], sizeof(floating) == 8, data, True)
        if grad.shape[0] != theta.shape[0]:
            raise ValueError("grad and theta differ in size")
        for i in range(nb):
            if index[i] < 0 or index[i] >= n:
                raise ValueError("index holds a row out of range")
        if positions is not None:
            pos_mv = positions
            if pos_mv.shape[0] != nb:
                raise ValueError("positions must hold one entry per row")
        if nb == 0:
            grad[:] = 0
            return 0.0
        _check_rows(nb)
        Y = data.Y
        sw = data.sample_weight
        X_values = data.values
        X_p = &X_values[0] if X_values.shape[0] > 0 else NULL
        xs = 0 if data.sparse else data.n_features
        k = Y.shape[1]
        csr.rowmap = &index[0]
        csr_p = &csr if data.sparse else NULL
        work = self._workspace(nb, data.sparse)
        w = _areas(&self.net, &work[0], nb, xs, k)
        self.net.drop_row0 = dropout_row0
        self.net.drop_pos = &pos_mv[0] if positions is not None else NULL
        self._drop_pos = positions   # alive while the core reads it
        _team_begin(&team)
        with nogil, parallel(num_threads=nt):
            tid = threadid()
            if cbp_full_team(nt, &team.short_team):
                r0 = _part_q(nb, tid, nt)
                r1 = _part_q(nb, tid + 1, nt)
                _gather_rows(&index[0], r0, r1, X_p, &Y[0, 0], &sw[0], xs, k,
                             <floating*>w.Xb, <floating*>w.Yb,
                             <floating*>w.swb)
                _batch_rows(&self.net, &theta[0],
                            X_p if data.sparse else <floating*>w.Xb,
                            <floating*>w.Yb, <floating*>w.swb, nb, 0, csr_p,
                            &w, tid, nt)
                cbp_barrier()
                _batch_grad(&self.net, &grad[0],
                            X_p if data.sparse else <floating*>w.Xb, nb, 0,
                            csr_p, &w, <floating>scale, False, tid, nt)
        self.net.drop_pos = NULL
        self._drop_pos = None
        _team_end(&team, nt)
        for i in range(nb):
            data_sum += w.rowloss[i]
        return data_sum

    def step(self, floating[::1] theta, const floating[::1] grad, double l2):
        """The batch step's update: one optimizer step in place.

        Each parameter segment gets ``g = grad + l2 * W`` (weights only:
        ``l2 = alpha / sw_sum`` as in :meth:`epoch`) and the optimizer's
        step; Adam's counter is advanced.

        Returns
        -------
        sq : float
            ``sum(W**2)`` over all weights before the step, so that the
            batch's penalty is ``0.5 * alpha * sq / sw_sum``.
        """
        cdef floating[::1] s1
        cdef floating[::1] s2
        cdef Py_ssize_t[::1] step
        cdef double[::1] sq = self._sq
        cdef Team team
        cdef int tid
        cdef int nt = self.net.n_threads
        cdef Py_ssize_t t
        if not self.has_optimizer:
            raise ValueError("set_optimizer must be called before step")
        if theta.shape[0] != self.n_params or grad.shape[0] != self.n_params:
            raise ValueError(f"theta and grad must hold {self.n_params} entries")
        if (sizeof(floating) == 8) != (self.dtype == np.float64):
            raise ValueError(f"theta must be of dtype {self.dtype}")
        s1 = self._state_1
        s2 = self._state_2
        step = self._step
        if self.opt.solver == SOLVER_ADAM:
            step[0] += 1
        t = step[0]
        _team_begin(&team)
        with nogil, parallel(num_threads=nt):
            tid = threadid()
            if cbp_full_team(nt, &team.short_team):
                _batch_update(&self.net, &self.opt, &theta[0], &grad[0],
                              &s1[0], &s2[0], t, l2, &sq[0], tid, nt)
        _team_end(&team, nt)
        return _sum_blocks(&sq[0], _n_row_blocks(&self.net))

    def loss_grad(self, floating[::1] theta, floating[::1] grad, Input data,
                  double alpha, Py_ssize_t block_rows,
                  uint64_t dropout_row0=0, sw_sum=None):
        """Full-batch loss and gradient: the objective lbfgs minimises.

        The rows are processed in blocks of ``block_rows``, the gradient
        accumulated over blocks. With dropout on, the loss and gradient of
        the network thinned by the masks of rows ``dropout_row0``...

        ``sw_sum`` (default: the sum of the rows' weights) is the weight
        sum that the loss and gradient are divided by: in data-parallel
        training each rank passes the sum over all ranks' rows, and
        ``alpha`` only on one rank, so that the ranks' results add up to
        the objective of the whole data.

        Returns
        -------
        data_loss : float
            ``sum_i sw_i * loss_i / sw_sum``, each ``loss_i`` summed over
            the outputs.
        penalty : float
            ``0.5 * alpha * ||W||² / sw_sum``.

        ``grad`` receives the gradient of ``data_loss + penalty``.
        """
        cdef Py_ssize_t n = data.n_samples
        cdef Py_ssize_t rows = min(block_rows, n)
        cdef const floating[::1] X_values
        cdef const floating[:, ::1] Y
        cdef const floating[::1] sw
        cdef floating[::1] work
        cdef double[::1] sq = self._sq
        cdef double[::1] parts
        cdef const CSR* csr_p = &data.csr if data.sparse else NULL
        cdef const floating* X_p
        cdef Areas w
        cdef Team team
        cdef Py_ssize_t start, nb, i, xs, k
        cdef int tid
        cdef int nt = self.net.n_threads
        cdef double total = 0
        cdef floating scale
        self._check(theta.shape[0], sizeof(floating) == 8, data, True)
        if n < 1:
            raise ValueError("loss_grad needs at least one sample")
        _check_rows(rows)
        if grad.shape[0] != theta.shape[0]:
            raise ValueError("grad and theta differ in size")
        Y = data.Y
        sw = data.sample_weight
        if sw_sum is None:
            for i in range(n):
                total += sw[i]
        else:
            total = sw_sum
        if not total > 0:
            raise ValueError("the sample weights sum to zero")
        scale = <floating>(1.0 / total)
        X_values = data.values
        X_p = &X_values[0] if X_values.shape[0] > 0 else NULL
        xs = 0 if data.sparse else data.n_features
        k = Y.shape[1]
        work = self._workspace(rows, data.sparse)
        w = _areas(&self.net, &work[0], rows, xs, k)
        w.bias_part = NULL   # the bias gradients accumulate over blocks
        parts = np.zeros(1, dtype=np.float64)
        self.net.drop_row0 = dropout_row0
        self.net.drop_pos = NULL
        _team_begin(&team)
        with nogil, parallel(num_threads=nt):
            tid = threadid()
            if cbp_full_team(nt, &team.short_team):
                start = 0
                while start < n:
                    nb = min(rows, n - start)
                    _batch_rows(&self.net, &theta[0], X_p + start * xs,
                                &Y[0, 0] + start * k, &sw[0] + start, nb,
                                start, csr_p, &w, tid, nt)
                    cbp_barrier()
                    _batch_grad(&self.net, &grad[0], X_p + start * xs, nb,
                                start, csr_p, &w, scale, start > 0, tid, nt)
                    if tid == 0:
                        for i in range(nb):
                            parts[0] += w.rowloss[i]
                    cbp_barrier()
                    start = start + nb
                params_l2(&self.net, &theta[0], &grad[0],
                          <floating>(alpha / total), &sq[0], tid, nt)
        _team_end(&team, nt)
        return (parts[0] / total,
                0.5 * alpha * _sum_blocks(&sq[0], _n_row_blocks(&self.net)) / total)

    def predict(self, const floating[::1] theta, Input data, out,
                Py_ssize_t block_rows):
        """``out = network(X)`` in blocks of ``block_rows`` rows, each block
        split over the threads. Memory beyond ``out`` is a workspace
        bounded by the block size, allocated per call (so that threads may
        predict with one network at once)."""
        cdef floating[:, ::1] out_mv
        cdef Py_ssize_t n = data.n_samples
        cdef Py_ssize_t k = out.shape[1]
        cdef Py_ssize_t rows = min(block_rows, n)
        cdef Py_ssize_t xs = 0 if data.sparse else data.n_features
        cdef Py_ssize_t start, nb, r0, r1, chunk
        cdef const floating[::1] X_values
        cdef floating[::1] work
        cdef const CSR* csr_p = &data.csr if data.sparse else NULL
        cdef const floating* X_p
        cdef floating* work_p
        cdef floating* buf0
        cdef floating* buf1
        cdef Team team
        cdef int tid
        cdef int nt = self.net.n_threads
        self._check(theta.shape[0], sizeof(floating) == 8, data, False)
        if not isinstance(out, np.ndarray) or out.dtype != self.dtype:
            raise ValueError(f"out must be a {self.dtype} array")
        out_mv = out
        if out.shape[0] != n or k != self.net.units[self.net.n_layers]:
            raise ValueError("out must have one row per sample and one "
                             "column per output")
        if n == 0:
            return
        _check_rows(rows)
        chunk = _share_capacity(rows, nt)
        work = np.empty(predict_workspace_size(self.units, rows, nt),
                        dtype=self.dtype)
        work_p = &work[0] if work.shape[0] > 0 else NULL
        X_values = data.values
        X_p = &X_values[0] if X_values.shape[0] > 0 else NULL
        _team_begin(&team)
        with nogil, parallel(num_threads=nt):
            tid = threadid()
            if cbp_full_team(nt, &team.short_team):
                buf0 = NULL
                buf1 = NULL
                if work_p != NULL:
                    buf0 = work_p + 2 * tid * chunk * self.net.max_hidden
                    buf1 = buf0 + chunk * self.net.max_hidden
                start = 0
                while start < n:
                    nb = min(rows, n - start)
                    r0 = _part_q(nb, tid, nt)
                    r1 = _part_q(nb, tid + 1, nt)
                    if r1 > r0:
                        forward_rows(&self.net, &theta[0],
                                     X_p + (start + r0) * xs, r1 - r0,
                                     &out_mv[0, 0] + (start + r0) * k, buf0,
                                     buf1, start + r0, csr_p)
                    start = start + nb
        _team_end(&team, nt)
