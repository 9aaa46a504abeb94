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
from libc.stdlib cimport calloc, free
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
from _optimizers cimport _optim_init, _adam_lr_t
from _layout cimport (_train_layout, _zsave_area, _bias_part_area,
                      _gather_rows, _gather_pool)
from _passes cimport (rows_forward_backward, params_grad, params_step,
                      params_l2, forward_rows, _all_finite)
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

# Return codes of train_epoch.
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
    :func:`forward` caps them (:func:`thread_cap`)."""
    L = len(units) - 1
    max_hidden = max([int(u) for u in units[1:L]], default=0)
    nt = cbp_thread_cap(max(1, n_threads))
    return 2 * nt * _share_capacity(rows, nt) * max_hidden


def loss_grad(floating[::1] theta, floating[::1] grad,
              const floating[:, ::1] X, const floating[:, ::1] Y,
              const floating[::1] sample_weight,
              const int[::1] units, const Py_ssize_t[::1] offsets,
              int hidden_act, int out_act, double alpha,
              floating[::1] work, Py_ssize_t block_rows, int n_threads=1,
              double act_param=0.0, double loss_param=1.0, dropout=None,
              uint64_t dropout_seed=0, uint64_t dropout_row0=0, X_csr=None):
    """Full-batch loss and gradient (the objective lbfgs minimises).

    The rows of ``X`` are processed in blocks of ``block_rows`` (the
    workspace is sized for that), the gradient accumulated over blocks, by
    ``n_threads`` OpenMP threads (call BLAS single-threaded).
    ``act_param`` is leaky_relu's slope, ``loss_param`` Huber's threshold
    (``out_act`` = REGRESSION_LOSSES['huber']). ``dropout`` (float64 rates
    per hidden layer, or None) applies the masks of rows ``dropout_row0``..
    drawn with key ``dropout_seed`` (see :func:`dropout_keep`): the loss
    and gradient of the network thinned by those fixed masks. A sparse X
    is passed as ``X_csr = (data, indices, indptr, n_features)`` (indices
    and indptr of intp, data of theta's dtype) with ``X=None``; the first
    layer then multiplies it in CSR form.

    Returns
    -------
    data_loss : float
        ``sum_i sw_i * loss_i / sw_sum``, each ``loss_i`` summed over outputs.
    penalty : float
        ``0.5 * alpha * ||W||² / sw_sum``.

    ``grad`` receives the gradient of ``data_loss + penalty``.
    """
    cdef Net net = _make_net(units, offsets, theta.shape[0], hidden_act,
                             out_act, n_threads, act_param, loss_param)
    _set_dropout(&net, dropout, dropout_seed, dropout_row0)
    cdef CSR csr
    cdef bint sparse = _csr_init(&csr, X_csr, X is not None)
    cdef const CSR* csr_p = &csr if sparse else NULL
    cdef const floating[::1] X_data
    cdef Py_ssize_t n = csr.n_rows if sparse else X.shape[0]
    cdef Py_ssize_t nf = csr.n_cols if sparse else X.shape[1]
    cdef Py_ssize_t xs = 0 if sparse else nf   # dense row stride
    cdef Py_ssize_t k = Y.shape[1]
    cdef Py_ssize_t rows = min(block_rows, n)
    cdef Py_ssize_t start, nb, i, r0, r1
    cdef int tid
    cdef floating* zsave
    cdef int nt = net.n_threads
    cdef double sw_sum = 0, sq = 0
    cdef double[::1] parts = np.zeros(nt + 1, dtype=np.float64)
    cdef double[::1] sq_mv = np.zeros(max(1, _n_row_blocks(&net)), dtype=np.float64)
    cdef double* sq_q = &sq_mv[0]
    cdef double* shared
    cdef floating scale
    cdef floating* acts
    cdef floating* deltas
    cdef floating* Xb     # the gather buffers: laid out, unused here
    cdef floating* Yb
    cdef floating* swb
    cdef double* rowloss
    cdef floating* theta_p
    cdef floating* grad_p
    cdef const floating* X_p
    cdef const floating* Y_p
    cdef const floating* sw_p
    if n < 1:
        raise ValueError("loss_grad needs at least one sample")
    _check_rows(rows)
    if grad.shape[0] != theta.shape[0]:
        raise ValueError("grad and theta differ in size")
    if nf != units[0] or k != units[net.n_layers]:
        raise ValueError("X or Y do not match the layer widths")
    if Y.shape[0] != n or sample_weight.shape[0] != n:
        raise ValueError("X, Y and sample_weight differ in length")
    if work.shape[0] < train_workspace_size(units, rows,
                                            net.slope_offset >= 0, sparse):
        raise ValueError("workspace too small")
    for i in range(n):
        sw_sum += sample_weight[i]
    if sw_sum <= 0:
        raise ValueError("the sample weights sum to zero")
    scale = <floating>(1.0 / sw_sum)
    acts = &work[0]
    rowloss = _train_layout(&net, acts, rows, xs, k, &deltas, &Xb, &Yb, &swb)
    zsave = <floating*>_zsave_area(&net, rowloss, rows)
    theta_p = &theta[0]
    grad_p = &grad[0]
    if sparse:
        X_data = X_csr[0]
        X_p = &X_data[0] if csr.nnz > 0 else NULL
    else:
        X_p = &X[0, 0]
    Y_p = &Y[0, 0]
    sw_p = &sample_weight[0]
    shared = &parts[0]
    cdef Team team
    _team_begin(&team)
    with nogil, parallel(num_threads=nt):
        tid = threadid()
        # a short team (OMP_DYNAMIC, a limit) computes nothing: raised below
        if cbp_full_team(nt, &team.short_team):
            start = 0
            while start < n:
                nb = min(rows, n - start)
                r0 = _part_q(nb, tid, nt)
                r1 = _part_q(nb, tid + 1, nt)
                rows_forward_backward(&net, theta_p, X_p + start * xs,
                                      Y_p + start * k, sw_p + start, r0, r1,
                                      acts, deltas, rows, rowloss, zsave, start,
                                      csr_p)
                cbp_barrier()
                params_grad(&net, grad_p, X_p + start * xs, nb, acts, deltas, rows,
                            scale, start > 0, tid, nt, zsave, start, csr_p)
                if tid == 0:
                    for i in range(nb):
                        shared[nt] += rowloss[i]
                cbp_barrier()
                start = start + nb
            params_l2(&net, theta_p, grad_p, <floating>(alpha / sw_sum), sq_q,
                      tid, nt)
    _team_end(&team, nt)
    sq = _sum_blocks(sq_q, _n_row_blocks(&net))
    return parts[nt] / sw_sum, 0.5 * alpha * sq / sw_sum


def train_epoch(floating[::1] theta, floating[::1] grad,
                floating[::1] state_1, floating[::1] state_2,
                const floating[:, ::1] X, const floating[:, ::1] Y,
                const floating[::1] sample_weight,
                const Py_ssize_t[::1] order, Py_ssize_t batch_size,
                const int[::1] units, const Py_ssize_t[::1] offsets,
                int hidden_act, int out_act, double alpha,
                int solver, double learning_rate, double momentum,
                bint nesterov, double beta_1, double beta_2, double epsilon,
                Py_ssize_t[::1] step, floating[::1] work, int n_threads=1,
                double act_param=0.0, double rho=0.9, double weight_decay=0.0,
                double loss_param=1.0, dropout=None, uint64_t dropout_seed=0,
                uint64_t dropout_row0=0, X_csr=None, theta_start=None):
    """One epoch of mini-batch training, in place, without the GIL.

    Batches are consecutive runs of ``batch_size`` entries of ``order``
    (or of the rows, when ``order`` is None), gathered into the workspace.
    Each batch: forward, output delta, backward, and one fused optimizer
    step per parameter segment with the L2 gradient ``alpha * W / sw_sum``
    added on the fly; ``state_1``/``state_2`` are the velocity (sgd), the
    moments m and v (adam) or the mean square (rmsprop, decay ``rho``;
    ``state_2`` unused). ``weight_decay`` > 0 adds decoupled weight decay
    on the weights (not biases or slopes), ``theta -= learning_rate *
    weight_decay * theta`` in the same pass (AdamW with adam).
    ``n_threads`` OpenMP threads share each batch (call BLAS
    single-threaded); the weights do not depend on their number.
    ``step[0]`` counts Adam's updates and is advanced in place, so it stays
    right if the epoch is interrupted. Pending signals (Ctrl-C) are checked
    between batches: the exception is raised with theta as it was after
    the last whole step. ``act_param`` is leaky_relu's slope,
    ``loss_param`` Huber's threshold. ``dropout`` (float64 rates per hidden
    layer, or None: off) drops hidden units at training with inverted
    scaling; the masks of the epoch's i-th row are those of row counter
    ``dropout_row0 + i`` under key ``dropout_seed`` (see
    :func:`dropout_keep`), whatever the thread count. A sparse X is
    passed as ``X_csr`` with ``X=None`` (see :func:`loss_grad`); its rows
    are read in place, not gathered. ``theta_start`` (like theta, or None)
    receives theta as it was before the epoch, so that the caller can go
    back to it when the epoch diverged.

    Returns
    -------
    sum_data, sum_penalty : float
        Sums over batches of the batch's data loss and penalty (each as
        ``loss_grad`` defines them) times the batch's number of rows.
    n_rows : int
        Rows trained on (fewer than all when stopped early).
    status : int
        STATUS_OK, or flags or-ed together: STATUS_NONFINITE_LOSS when a
        batch's loss was not finite (that batch's update is then not
        applied, nor any later batch's), STATUS_NONFINITE_PARAMS when theta
        holds a NaN or an infinity at the end.
    """
    cdef Net net = _make_net(units, offsets, theta.shape[0], hidden_act,
                             out_act, n_threads, act_param, loss_param)
    _set_dropout(&net, dropout, dropout_seed, dropout_row0)
    cdef CSR csr
    cdef bint sparse = _csr_init(&csr, X_csr, X is not None)
    cdef const CSR* csr_p = &csr if sparse else NULL
    cdef const floating[::1] X_data
    cdef Optim opt
    cdef floating* zsave
    cdef Py_ssize_t n = csr.n_rows if sparse else X.shape[0]
    cdef Py_ssize_t nf = csr.n_cols if sparse else X.shape[1]
    cdef Py_ssize_t xs = 0 if sparse else nf   # dense row stride
    cdef Py_ssize_t k = Y.shape[1]
    cdef Py_ssize_t P = theta.shape[0]
    cdef Py_ssize_t rows = min(batch_size, n)
    cdef bint shuffled = order is not None
    cdef Py_ssize_t n_total = order.shape[0] if shuffled else n
    cdef Py_ssize_t start, nb, i, r0, r1, t_local, step0
    cdef int tid
    cdef int nt = net.n_threads
    cdef double sw_sum, batch_data, sq, lr_t
    # shared results: [0] sum_data, [1] sum_penalty, [2] rows done,
    # [3] status, [4] stop flag
    cdef double[::1] shared_mv = np.zeros(5, dtype=np.float64)
    cdef double* shared = &shared_mv[0]
    # sum(W**2) per block of weight rows (see params_step)
    cdef Py_ssize_t n_blocks = _n_row_blocks(&net)
    cdef double[::1] sq_mv = np.zeros(max(1, n_blocks), dtype=np.float64)
    cdef double* sq_q = &sq_mv[0]
    # shared gather counters, by batch parity (see _gather_pool): [p] rows
    # of the next batch claimed, [2 + p] threads done with their rows
    cdef Py_ssize_t[::1] pool_mv = np.zeros(4, dtype=np.intp)
    cdef Py_ssize_t* pool = &pool_mv[0]
    cdef Py_ssize_t nb_next
    cdef int par
    cdef floating* Xn       # the next batch's gather slot
    cdef floating* Yn
    cdef floating* swn
    cdef floating* acts
    cdef floating* deltas
    cdef floating* Xb
    cdef floating* Yb
    cdef floating* swb
    cdef double* rowloss
    cdef floating* theta_p
    cdef floating* grad_p
    cdef floating* s1_p
    cdef floating* s2_p
    cdef const floating* X_p
    cdef const floating* Y_p
    cdef const floating* sw_p
    cdef const Py_ssize_t* order_p = NULL
    cdef Py_ssize_t* step_p
    cdef const floating* Xc
    cdef const floating* Yc
    cdef const floating* swc
    cdef floating[::1] start_mv
    cdef int status
    cdef floating* bias_part

    if n < 1:
        raise ValueError("train_epoch needs at least one sample")
    _check_rows(rows)
    if solver not in (SOLVER_SGD, SOLVER_ADAM, SOLVER_RMSPROP):
        raise ValueError(f"unknown solver code {solver}")
    if not (0 <= rho < 1):
        raise ValueError(f"rho must be in [0, 1), got {rho}")
    if not (weight_decay >= 0):
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    if grad.shape[0] != P or state_1.shape[0] != P or (
            solver == SOLVER_ADAM and state_2.shape[0] != P):
        raise ValueError("grad and optimizer state must match theta in size")
    if nf != units[0] or k != units[net.n_layers]:
        raise ValueError("X or Y do not match the layer widths")
    if Y.shape[0] != n or sample_weight.shape[0] != n:
        raise ValueError("X, Y and sample_weight differ in length")
    if work.shape[0] < train_workspace_size(units, rows,
                                            net.slope_offset >= 0, sparse):
        raise ValueError("workspace too small")
    if step.shape[0] < 1:
        raise ValueError("step must hold one counter")
    if shuffled:
        for i in range(n_total):
            if order[i] < 0 or order[i] >= n:
                raise ValueError("order holds an index out of range")
        if n_total > 0:
            order_p = &order[0]
    if theta_start is not None:
        start_mv = theta_start
        if start_mv.shape[0] != P:
            raise ValueError("theta_start must match theta in size")
        memcpy(&start_mv[0], &theta[0], P * sizeof(floating))
    if n_total == 0:
        return 0.0, 0.0, 0, STATUS_OK

    _optim_init(&opt, solver, learning_rate, momentum, nesterov, beta_1,
                beta_2, epsilon, rho, weight_decay)

    acts = &work[0]
    rowloss = _train_layout(&net, acts, rows, xs, k, &deltas, &Xb, &Yb, &swb)
    zsave = <floating*>_zsave_area(&net, rowloss, rows)
    bias_part = _bias_part_area(&net, rowloss, zsave, rows)
    theta_p = &theta[0]
    grad_p = &grad[0]
    s1_p = &state_1[0]
    s2_p = &state_2[0] if solver == SOLVER_ADAM else NULL
    if sparse:
        X_data = X_csr[0]
        X_p = &X_data[0] if csr.nnz > 0 else NULL
        csr.rowmap = order_p   # NULL when not shuffled
    else:
        X_p = &X[0, 0]
    Y_p = &Y[0, 0]
    sw_p = &sample_weight[0]
    step_p = &step[0]
    step0 = step[0]

    cdef Team team
    _team_begin(&team)
    with nogil, parallel(num_threads=nt):
        tid = threadid()
        # a short team (OMP_DYNAMIC, a limit) computes nothing: raised below
        if cbp_full_team(nt, &team.short_team):
            t_local = step0
            start = 0
            par = 0
            if shuffled:
                # the first batch's rows, split evenly; the next batch's are
                # gathered in the waits of the one before (_gather_pool)
                nb = min(rows, n_total)
                _gather_rows(order_p, _part(nb, tid, nt), _part(nb, tid + 1, nt),
                             X_p, Y_p, sw_p, xs, k, Xb, Yb, swb)
                cbp_barrier()
            while start < n_total:
                nb = min(rows, n_total - start)
                nb_next = min(rows, n_total - start - nb)
                r0 = _part_q(nb, tid, nt)
                r1 = _part_q(nb, tid + 1, nt)
                if shuffled:
                    # this batch's gather slot; the next batch uses the other
                    Xc = X_p if sparse else Xb + par * rows * xs
                    Yc = Yb + par * rows * k
                    swc = swb + par * rows
                    Xn = Xb + (1 - par) * rows * xs
                    Yn = Yb + (1 - par) * rows * k
                    swn = swb + (1 - par) * rows
                else:
                    Xc = X_p + start * xs
                    Yc = Y_p + start * k
                    swc = sw_p + start
                rows_forward_backward(&net, theta_p, Xc, Yc, swc, r0, r1, acts,
                                      deltas, rows, rowloss, zsave, start, csr_p,
                                      bias_part)
                if shuffled:
                    # until the last thread is done with its rows, gather
                    # the next batch's into the other slot
                    cbp_fetch_add(&pool[2 + par], 1)
                    if nb_next > 0:
                        _gather_pool(&pool[1 - par], &pool[2 + par], nt,
                                     order_p + start + nb, nb_next, X_p, Y_p,
                                     sw_p, xs, k, Xn, Yn, swn)
                cbp_barrier()
                # every thread sums the same numbers in the same order, so all
                # take the same decisions below
                sw_sum = 0
                batch_data = 0
                for i in range(nb):
                    sw_sum = sw_sum + swc[i]
                    batch_data = batch_data + rowloss[i]
                if sw_sum > 0:
                    if not isfinite(batch_data):
                        if tid == 0:
                            shared[3] = _STATUS_NONFINITE_LOSS
                        break
                    params_grad(&net, grad_p, Xc, nb, acts, deltas, rows,
                                <floating>(1.0 / sw_sum), False, tid, nt, zsave,
                                start, csr_p, bias_part)
                    lr_t = 0
                    if solver == SOLVER_ADAM:
                        t_local = t_local + 1
                        lr_t = _adam_lr_t(&opt, t_local)
                    params_step(&net, theta_p, grad_p, s1_p, s2_p, &opt, lr_t,
                                alpha / sw_sum, sq_q, tid, nt)
                # batches whose weights are all zero carry no gradient: skipped
                if shuffled and nb_next > 0:
                    # what is left of the next batch's rows
                    _gather_pool(&pool[1 - par], NULL, nt, order_p + start + nb,
                                 nb_next, X_p, Y_p, sw_p, xs, k, Xn, Yn, swn)
                if tid == 0 and start + nb < n_total and _pending_signal():
                    shared[4] = 1
                cbp_barrier()
                if tid == 0:
                    if sw_sum > 0:
                        sq = _sum_blocks(sq_q, n_blocks)
                        shared[0] += batch_data / sw_sum * nb
                        shared[1] += 0.5 * alpha * sq / sw_sum * nb
                    shared[2] += nb
                    step_p[0] = t_local
                    # the counters used in this batch, used again two
                    # batches on (past the next batch's barriers)
                    pool[1 - par] = 0
                    pool[2 + par] = 0
                start = start + nb
                par = 1 - par
                if shared[4] != 0:
                    break
    _team_end(&team, nt)
    if shared[4] != 0:
        _raise_pending()
    status = <int>shared[3]
    if not _all_finite(theta_p, P):
        status |= _STATUS_NONFINITE_PARAMS
    return shared[0], shared[1], <Py_ssize_t>shared[2], status


def forward(const floating[::1] theta, const floating[:, ::1] X,
            floating[:, ::1] out, const int[::1] units,
            const Py_ssize_t[::1] offsets, int hidden_act, int out_act,
            floating[::1] work, Py_ssize_t block_rows, int n_threads=1,
            double act_param=0.0, X_csr=None):
    """Predict ``out = network(X)`` in blocks of ``block_rows`` rows, each
    block split over ``n_threads`` OpenMP threads (call BLAS
    single-threaded), without the GIL. Memory beyond ``out`` is the
    workspace, bounded by the block size. ``act_param`` is leaky_relu's
    slope. A sparse X is passed as ``X_csr`` with ``X=None`` (see
    :func:`loss_grad`)."""
    cdef Net net = _make_net(units, offsets, theta.shape[0], hidden_act,
                             out_act, n_threads, act_param)
    cdef CSR csr
    cdef bint sparse = _csr_init(&csr, X_csr, X is not None)
    cdef const CSR* csr_p = &csr if sparse else NULL
    cdef const floating[::1] X_data
    cdef Py_ssize_t n = csr.n_rows if sparse else X.shape[0]
    cdef Py_ssize_t nf = csr.n_cols if sparse else X.shape[1]
    cdef Py_ssize_t xs = 0 if sparse else nf   # dense row stride
    cdef Py_ssize_t k = out.shape[1]
    cdef Py_ssize_t start, nb, r0, r1, chunk, rows = min(block_rows, n)
    cdef int tid
    cdef int nt = net.n_threads
    cdef floating* buf0
    cdef floating* buf1
    cdef floating* work_p
    cdef const floating* theta_p = &theta[0]
    cdef const floating* X_p
    cdef floating* out_p
    if n == 0:
        return
    _check_rows(rows)
    if nf != units[0] or k != units[net.n_layers]:
        raise ValueError("X or out do not match the layer widths")
    if out.shape[0] != n:
        raise ValueError("X and out differ in length")
    if work.shape[0] < predict_workspace_size(units, rows, nt):
        raise ValueError("workspace too small")
    chunk = _share_capacity(rows, nt)
    work_p = &work[0] if work.shape[0] > 0 else NULL
    if sparse:
        X_data = X_csr[0]
        X_p = &X_data[0] if csr.nnz > 0 else NULL
    else:
        X_p = &X[0, 0]
    out_p = &out[0, 0]
    cdef Team team
    _team_begin(&team)
    with nogil, parallel(num_threads=nt):
        tid = threadid()
        # a short team (OMP_DYNAMIC, a limit) computes nothing: raised below
        if cbp_full_team(nt, &team.short_team):
            buf0 = NULL
            buf1 = NULL
            if work_p != NULL:
                buf0 = work_p + 2 * tid * chunk * net.max_hidden
                buf1 = buf0 + chunk * net.max_hidden
            start = 0
            while start < n:
                nb = min(rows, n - start)
                r0 = _part_q(nb, tid, nt)
                r1 = _part_q(nb, tid + 1, nt)
                if r1 > r0:
                    forward_rows(&net, theta_p, X_p + (start + r0) * xs, r1 - r0,
                                 out_p + (start + r0) * k, buf0, buf1, start + r0,
                                 csr_p)
                start = start + nb
    _team_end(&team, nt)


# --------------------------------------------------------------------------
# One batch at a time, for data-parallel training (cbp.distributed): the
# caller sums the gradients of several processes between the two calls.
# Together they do what one batch of ``train_epoch`` does.

def batch_loss_grad(const floating[::1] theta, floating[::1] grad,
                    const floating[:, ::1] X, const floating[:, ::1] Y,
                    const floating[::1] sample_weight,
                    const Py_ssize_t[::1] index, double scale,
                    const int[::1] units, const Py_ssize_t[::1] offsets,
                    int hidden_act, int out_act, floating[::1] work,
                    int n_threads=1):
    """Data loss and gradient of one batch, its rows gathered by ``index``.

    The rows ``X[index]`` (with ``Y[index]``, ``sample_weight[index]``)
    are gathered into the workspace, run forward and backward by
    ``n_threads`` OpenMP threads (call BLAS single-threaded), without the
    GIL. The gradient is of the data term only, scaled by ``scale``:
    ``grad = scale * sum_i sw_i * d loss_i / d theta``, with no L2 term.
    ``scale = 1 / sw_sum`` of the batch gives the batch's mean gradient;
    in data-parallel training each process passes ``1 / sw_sum`` of the
    whole (global) batch, so the processes' gradients add up to the
    global batch's. The L2 term is added by ``optimizer_step``.

    Parameters
    ----------
    theta : ndarray of shape (n_params,)
        The flat parameters (read only).
    grad : ndarray of shape (n_params,)
        Receives the scaled gradient (zero when ``index`` is empty).
    X, Y : ndarray of shape (n_samples, units[0]) and (n_samples, units[-1])
    sample_weight : ndarray of shape (n_samples,)
    index : ndarray of intp, shape (n_batch,)
        Rows of the batch; may be empty.
    scale : float
        Factor applied to the gradient.
    units, offsets, hidden_act, out_act
        The network, as for ``train_epoch``.
    work : ndarray
        Workspace of at least ``train_workspace_size(units, n_batch)``
        elements.
    n_threads : int, default=1

    Returns
    -------
    data_sum : float
        ``sum_i sw_i * loss_i`` over the batch (not scaled), each
        ``loss_i`` summed over the outputs; ``data_sum / sw_sum`` is the
        data loss ``train_epoch`` reports for the batch.
    """
    cdef Net net = _make_net(units, offsets, theta.shape[0], hidden_act,
                             out_act, n_threads)
    cdef Py_ssize_t n = X.shape[0]
    cdef Py_ssize_t nf = X.shape[1]
    cdef Py_ssize_t k = Y.shape[1]
    cdef Py_ssize_t nb = index.shape[0]
    cdef Py_ssize_t i, r0, r1
    cdef int tid
    cdef int nt = net.n_threads
    cdef double data_sum = 0
    cdef floating fscale = <floating>scale
    cdef floating* acts
    cdef floating* deltas
    cdef floating* Xb
    cdef floating* Yb
    cdef floating* swb
    cdef double* rowloss
    cdef floating* bias_part
    cdef const floating* theta_p
    cdef floating* grad_p
    cdef const floating* X_p
    cdef const floating* Y_p
    cdef const floating* sw_p
    cdef const Py_ssize_t* index_p
    if grad.shape[0] != theta.shape[0]:
        raise ValueError("grad and theta differ in size")
    if net.slope_offset >= 0:
        raise ValueError("batch_loss_grad does not support prelu (no slope area)")
    if nf != units[0] or k != units[net.n_layers]:
        raise ValueError("X or Y do not match the layer widths")
    if Y.shape[0] != n or sample_weight.shape[0] != n:
        raise ValueError("X, Y and sample_weight differ in length")
    if nb == 0:
        grad[:] = 0
        return 0.0
    _check_rows(nb)
    if work.shape[0] < train_workspace_size(units, nb):
        raise ValueError("workspace too small")
    for i in range(nb):
        if index[i] < 0 or index[i] >= n:
            raise ValueError("index holds a row out of range")

    # the workspace laid out for nb rows, as train_epoch lays it out (the
    # bias gradients summed per chunk too: the same bits as its batches)
    acts = &work[0]
    rowloss = _train_layout(&net, acts, nb, nf, k, &deltas, &Xb, &Yb, &swb)
    bias_part = _bias_part_area(&net, rowloss, <floating*>NULL, nb)
    theta_p = &theta[0]
    grad_p = &grad[0]
    X_p = &X[0, 0]
    Y_p = &Y[0, 0]
    sw_p = &sample_weight[0]
    index_p = &index[0]
    cdef Team team
    _team_begin(&team)
    with nogil, parallel(num_threads=nt):
        tid = threadid()
        # a short team (OMP_DYNAMIC, a limit) computes nothing: raised below
        if cbp_full_team(nt, &team.short_team):
            r0 = _part_q(nb, tid, nt)
            r1 = _part_q(nb, tid + 1, nt)
            _gather_rows(index_p, r0, r1, X_p, Y_p, sw_p, nf, k, Xb, Yb, swb)
            rows_forward_backward(&net, theta_p, Xb, Yb, swb, r0, r1, acts,
                                  deltas, nb, rowloss, <floating*>NULL, 0,
                                  NULL, bias_part)
            cbp_barrier()
            params_grad(&net, grad_p, Xb, nb, acts, deltas, nb, fscale, False,
                        tid, nt, <floating*>NULL, 0, NULL, bias_part)
    _team_end(&team, nt)
    for i in range(nb):
        data_sum += rowloss[i]
    return data_sum


def optimizer_step(floating[::1] theta, const floating[::1] grad,
                   floating[::1] state_1, floating[::1] state_2,
                   const int[::1] units, const Py_ssize_t[::1] offsets,
                   double l2, int solver, double learning_rate,
                   double momentum, bint nesterov, double beta_1,
                   double beta_2, double epsilon, Py_ssize_t[::1] step,
                   int n_threads=1):
    """One fused sgd/adam step in place, the L2 gradient folded in.

    Each parameter segment gets ``g = grad + l2 * W`` (weights only, so
    ``l2 = alpha / sw_sum`` reproduces ``train_epoch``) and the step of
    ``train_epoch``: sgd with (Nesterov) momentum on ``state_1``, or Adam
    on the moments ``state_1``/``state_2``, whose counter ``step[0]`` is
    advanced in place. ``n_threads`` OpenMP threads share the parameters,
    without the GIL.

    Returns
    -------
    sq : float
        ``sum(W**2)`` over all weights before the step, so that the batch's
        penalty is ``0.5 * alpha * sq / sw_sum``.
    """
    cdef Net net = _make_net(units, offsets, theta.shape[0], ACT_IDENTITY,
                             OUT_IDENTITY, n_threads)
    cdef Optim opt
    cdef Py_ssize_t P = theta.shape[0]
    cdef Py_ssize_t n_blocks = _n_row_blocks(&net)
    cdef int tid
    cdef int nt = net.n_threads
    cdef double lr_t = 0, sq = 0
    cdef double* sq_q
    cdef floating* theta_p
    cdef const floating* grad_p
    cdef floating* s1_p
    cdef floating* s2_p
    if solver not in (SOLVER_SGD, SOLVER_ADAM):
        raise ValueError(f"unknown solver code {solver}")
    if grad.shape[0] != P or state_1.shape[0] != P or (
            solver == SOLVER_ADAM and state_2.shape[0] != P):
        raise ValueError("grad and optimizer state must match theta in size")
    if step.shape[0] < 1:
        raise ValueError("step must hold one counter")
    # rmsprop and decoupled weight decay are not distributed: rho and
    # weight_decay at their defaults
    _optim_init(&opt, solver, learning_rate, momentum, nesterov, beta_1,
                beta_2, epsilon, 0.9, 0.0)
    if solver == SOLVER_ADAM:
        step[0] += 1
        lr_t = _adam_lr_t(&opt, step[0])
    theta_p = &theta[0]
    grad_p = &grad[0]
    s1_p = &state_1[0]
    s2_p = &state_2[0] if solver == SOLVER_ADAM else NULL
    # sum(W**2) per block of weight rows, summed in order (see params_step)
    sq_q = <double*>calloc(max(1, n_blocks), sizeof(double))
    if sq_q == NULL:
        raise MemoryError()
    cdef Team team
    _team_begin(&team)
    with nogil, parallel(num_threads=nt):
        tid = threadid()
        # a short team (OMP_DYNAMIC, a limit) computes nothing: raised below
        if cbp_full_team(nt, &team.short_team):
            params_step(&net, theta_p, grad_p, s1_p, s2_p, &opt, lr_t, l2, sq_q,
                        tid, nt)
    sq = _sum_blocks(sq_q, n_blocks)
    free(sq_q)
    _team_end(&team, nt)
    return sq


def batch_weight_sums(const floating[::1] sample_weight,
                      const Py_ssize_t[::1] order, Py_ssize_t batch_size,
                      double[::1] out):
    """Sum of the sample weights of each batch, as ``train_epoch`` sums them.

    Batch ``j`` is ``order[j * batch_size:(j + 1) * batch_size]`` (or those
    rows when ``order`` is None); its weights are added in that order in
    double precision, so the sums are bit-identical to the ones
    ``train_epoch`` divides by.

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
