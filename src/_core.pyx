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
from cython.parallel cimport parallel, threadid
from libc.math cimport (exp, expf, log, logf, log1p, log1pf, tanh, tanhf,
                        sqrt, sqrtf, fabs, fabsf, isfinite, pow, expm1,
                        expm1f)
from libc.string cimport memcpy
from libc.stdint cimport uint64_t

from _blas cimport gemm_rm, axpy, dot

import numpy as np

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #if defined(__unix__) || defined(__APPLE__)
    #include <pthread.h>
    #define CBP_WATCH_FORK 1
    #endif
    static int cbp_max_threads(void) { return omp_get_max_threads(); }
    static int cbp_has_openmp(void) { return 1; }
    /* Set in a child forked from this process. The OpenMP runtime's pool
     * threads do not survive fork(), and GNU OpenMP waits for them forever
     * at the child's next team of more than one thread. A team of one never
     * touches the pool (libgomp starts and ends it on the calling thread),
     * so the child runs every region with one thread. */
    static volatile int cbp_forked = 0;
    static void cbp_mark_forked(void) { cbp_forked = 1; }
    static int cbp_watch_fork(void) {
    #ifdef CBP_WATCH_FORK
        return pthread_atfork(NULL, NULL, cbp_mark_forked);
    #else
        return 0;
    #endif
    }
    static int cbp_in_forked_child(void) { return cbp_forked; }
    /* CPUs seen by thread_cap; > 0 replaces the detected count (test hook) */
    static int cbp_cpu_override = 0;
    static int cbp_set_cpu_override(int n) {
        int old = cbp_cpu_override;
        cbp_cpu_override = n;
        return old;
    }
    /* the CPUs this thread may run on (its affinity mask in GNU OpenMP) */
    static int cbp_cpu_count(void) {
        return cbp_cpu_override > 0 ? cbp_cpu_override : omp_get_num_procs();
    }
    /* Called by every thread at a region's start: 1 when the team has the
     * nt threads the work was split for; else 0, thread 0 setting *short_team */
    static int cbp_full_team(int nt, int *short_team) {
        if (omp_get_num_threads() == nt) return 1;
        if (omp_get_thread_num() == 0) *short_team = 1;
        return 0;
    }
    /* At most n threads, as many as a region started here would get, and
     * no more than the CPUs: libgomp puts a ~128-byte record per thread of
     * a new team on the caller's stack (100000 threads overflow an 8 MiB
     * stack: SIGSEGV) and exits the process when it cannot create a thread,
     * and threads beyond the CPUs only time-slice them. */
    static int cbp_thread_cap(int n) {
        int cap = omp_get_thread_limit();
        int cpus = cbp_cpu_count();
        if (cpus >= 1 && cpus < cap) cap = cpus;
        if (cbp_forked) cap = 1;
        if (omp_get_active_level() >= omp_get_max_active_levels()) cap = 1;
        if (n > cap) n = cap;
        return n < 1 ? 1 : n;
    }
    /* the core's regions need teams of exactly the size asked for */
    static int cbp_dynamic_off(void) {
        int d = omp_get_dynamic();
        omp_set_dynamic(0);
        return d;
    }
    static void cbp_dynamic_restore(int d) { omp_set_dynamic(d); }
    /* an orphaned barrier: binds to the enclosing parallel region */
    static void cbp_barrier(void) {
        #pragma omp barrier
    }
    /* *p += v, returning the value before, as one atomic operation */
    static Py_ssize_t cbp_fetch_add(Py_ssize_t *p, Py_ssize_t v) {
        Py_ssize_t old;
        #pragma omp atomic capture
        { old = *p; *p += v; }
        return old;
    }
    static Py_ssize_t cbp_atomic_read(const Py_ssize_t *p) {
        Py_ssize_t v;
        #pragma omp atomic read
        v = *p;
        return v;
    }
    #else
    static int cbp_max_threads(void) { return 1; }
    static int cbp_has_openmp(void) { return 0; }
    static int cbp_full_team(int nt, int *short_team) {
        if (nt == 1) return 1;
        *short_team = 1;
        return 0;
    }
    static int cbp_thread_cap(int n) { return 1; }
    static int cbp_watch_fork(void) { return 0; }
    static int cbp_in_forked_child(void) { return 0; }
    static int cbp_set_cpu_override(int n) { (void)n; return 0; }
    static int cbp_cpu_count(void) { return 1; }
    static int cbp_dynamic_off(void) { return 0; }
    static void cbp_dynamic_restore(int d) { (void)d; }
    static void cbp_barrier(void) {}
    static Py_ssize_t cbp_fetch_add(Py_ssize_t *p, Py_ssize_t v) {
        Py_ssize_t old = *p;
        *p += v;
        return old;
    }
    static Py_ssize_t cbp_atomic_read(const Py_ssize_t *p) { return *p; }
    #endif
    """
    int cbp_max_threads() nogil
    int cbp_has_openmp() nogil
    int cbp_full_team(int nt, int* short_team) nogil
    int cbp_thread_cap(int n) nogil
    int cbp_watch_fork() nogil
    int cbp_in_forked_child() nogil
    int cbp_set_cpu_override(int n) nogil
    int cbp_cpu_count() nogil
    int cbp_dynamic_off() nogil
    void cbp_dynamic_restore(int d) nogil
    void cbp_barrier() nogil
    Py_ssize_t cbp_fetch_add(Py_ssize_t* p, Py_ssize_t v) nogil
    Py_ssize_t cbp_atomic_read(const Py_ssize_t* p) nogil

cdef extern from "_kernels.h" nogil:
    void cbp_bias_relu_f(float* Z, const float* b, Py_ssize_t n, Py_ssize_t m)
    void cbp_bias_relu_d(double* Z, const double* b, Py_ssize_t n, Py_ssize_t m)
    void cbp_relu_backward_f(float* D, const float* A, Py_ssize_t size)
    void cbp_relu_backward_d(double* D, const double* A, Py_ssize_t size)
    void cbp_adam_f(float* theta, const float* g, float* m, float* v,
                    Py_ssize_t n, float lr_t, float beta_1, float beta_2,
                    float epsilon, float l2, float decay, float c1, float c2)
    void cbp_adam_d(double* theta, const double* g, double* m, double* v,
                    Py_ssize_t n, double lr_t, double beta_1, double beta_2,
                    double epsilon, double l2, double decay, double c1,
                    double c2)
    void cbp_rmsprop_f(float* theta, const float* g, float* v, Py_ssize_t n,
                       float lr, float rho, float epsilon, float l2,
                       float decay, float c)
    void cbp_rmsprop_d(double* theta, const double* g, double* v,
                       Py_ssize_t n, double lr, double rho, double epsilon,
                       double l2, double decay, double c)
    void cbp_tanh_backward_f(float* D, const float* A, Py_ssize_t size)
    void cbp_tanh_backward_d(double* D, const double* A, Py_ssize_t size)
    void cbp_logistic_backward_f(float* D, const float* A, Py_ssize_t size)
    void cbp_logistic_backward_d(double* D, const double* A, Py_ssize_t size)
    void cbp_softmax_exp_f(float* z, Py_ssize_t k, float mx)
    void cbp_softmax_exp_d(double* z, Py_ssize_t k, double mx)
    void cbp_outer_f(float* D, const float* d, const float* w, Py_ssize_t n,
                     Py_ssize_t m)
    void cbp_outer_d(double* D, const double* d, const double* w,
                     Py_ssize_t n, Py_ssize_t m)
    void cbp_colsum_f(float* out, const float* D, Py_ssize_t n, Py_ssize_t m,
                      Py_ssize_t ld, float scale, bint accumulate)
    void cbp_colsum_d(double* out, const double* D, Py_ssize_t n,
                      Py_ssize_t m, Py_ssize_t ld, double scale,
                      bint accumulate)

cdef extern from "Python.h":
    # declared without an exception value: the caller decides what to do
    # with a pending exception (see _raise_pending)
    int _check_signals "PyErr_CheckSignals" () nogil

cdef enum:
    # Hidden-layer activations.
    ACT_IDENTITY = 0
    ACT_LOGISTIC = 1
    ACT_TANH = 2
    ACT_RELU = 3
    ACT_LEAKY_RELU = 4   # z > 0 ? z : act_param * z
    ACT_ELU = 5          # z > 0 ? z : exp(z) - 1
    ACT_SOFTPLUS = 6     # log(1 + exp(z))
    ACT_PRELU = 7        # z > 0 ? z : a_j * z, a learned slope per unit
    # Output layer: activation and its canonical loss.
    OUT_IDENTITY = 0   # identity + half squared error
    OUT_LOGISTIC = 1   # logistic + binary cross-entropy
    OUT_SOFTMAX = 2    # softmax + cross-entropy
    OUT_EXP = 3        # exp (log link) + half Poisson deviance
    OUT_HUBER = 4      # identity + Huber loss (threshold loss_param)
    # Thread shares of GEMM rows start at multiples of this (see _part_q).
    SPLIT_QUANTUM = 48
    # Solvers with an in-core step.
    SOLVER_SGD = 0
    SOLVER_ADAM = 1
    SOLVER_RMSPROP = 2
    INT_MAX = 2147483647

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
cdef enum:
    _STATUS_OK = 0
    _STATUS_NONFINITE_LOSS = 1      # flags, or-ed together
    _STATUS_NONFINITE_PARAMS = 2
STATUS_OK = _STATUS_OK
STATUS_NONFINITE_LOSS = _STATUS_NONFINITE_LOSS
STATUS_NONFINITE_PARAMS = _STATUS_NONFINITE_PARAMS


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
    double act_param          # leaky_relu's slope for z <= 0
    Py_ssize_t slope_offset   # prelu: where the slopes start in theta, else -1
    double loss_param         # huber: the threshold delta
    const double* dropout     # rate per hidden layer (index l - 1), or NULL
    uint64_t drop_seed        # key of the dropout masks' hash
    uint64_t drop_row0        # counter of row 0 of the call (see _drop_keep)
    const Py_ssize_t* drop_pos  # row i's counter is drop_row0 + drop_pos[i];
                                # NULL: drop_row0 + i


cdef struct CSR:
    # A sparse input batch source: X in compressed sparse rows, the values
    # passed separately (fused type) where a dense X would be.
    const Py_ssize_t* indptr
    const Py_ssize_t* indices
    const Py_ssize_t* rowmap  # matrix row of the epoch's i-th row, or NULL: i
    Py_ssize_t n_rows
    Py_ssize_t n_cols
    Py_ssize_t nnz


cdef struct Optim:
    int solver
    double learning_rate
    double momentum
    bint nesterov
    double beta_1
    double beta_2
    double epsilon
    double rho                # RMSprop's decay of the mean square
    double weight_decay       # decoupled: theta -= lr * weight_decay * theta


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


cdef struct Team:
    int dynamic       # the caller's OMP_DYNAMIC setting, restored after
    int short_team    # set when a region got fewer threads than asked for


cdef inline void _team_begin(Team* team) noexcept nogil:
    """Before a region: dynamic teams off (the work is split for exactly
    ``nt`` threads), the short-team flag cleared."""
    team.short_team = 0
    team.dynamic = cbp_dynamic_off()


cdef int _team_end(Team* team, int nt) except -1:
    """After a region: restore the caller's dynamic setting; raise if the
    team was short (its threads then computed nothing, see cbp_full_team)."""
    cbp_dynamic_restore(team.dynamic)
    if team.short_team:
        raise RuntimeError(
            f"OpenMP started fewer threads than the {nt} asked for; "
            "nothing was computed. Lower n_jobs.")
    return 0


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


cdef inline floating _expm1(floating x) noexcept nogil:
    if floating is float:
        return expm1f(x)
    else:
        return expm1(x)


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


cdef inline Py_ssize_t _part(Py_ssize_t n, int tid, int nt) noexcept nogil:
    """Start of thread ``tid``'s share of ``n`` items split ``nt`` ways."""
    return (n * tid) // nt


cdef inline Py_ssize_t _n_quanta(Py_ssize_t n) noexcept nogil:
    """Number of SPLIT_QUANTUM-row blocks ``n`` rows make (the last one short)."""
    return (n + SPLIT_QUANTUM - 1) // SPLIT_QUANTUM


cdef inline Py_ssize_t _part_q(Py_ssize_t n, int tid, int nt) noexcept nogil:
    """Start of thread ``tid``'s share of ``n`` rows of a GEMM operand.

    Shares start at multiples of SPLIT_QUANTUM rows. BLAS micro-kernels
    tile these dimensions by 4 to 24 rows and compute edge tiles with
    other instructions (FMA or not), so a row's result can depend on
    where a call starts; splitting only at common multiples of the tile
    sizes makes every row's arithmetic, and so the trained weights,
    independent of the thread count on kernels that choose their code by
    position only (OpenBLAS's Haswell, Zen, Sandybridge). Kernels that
    choose by the call's shape (OpenBLAS's SkylakeX small-matrix and
    direct sgemm paths, taken below a size in M*N*K) round a row
    differently when the share holding it has another size: there the
    weights agree across thread counts to rounding only. One call per
    SPLIT_QUANTUM-row block would give the same bits everywhere, but
    packs the weights again for every block: +14-16% of an MNIST epoch's
    time with one thread (measured), so shares are one call each.
    Only rows are split this way: a
    GEMM's output columns (the column-major M dimension) computed in two
    calls do not give the same bits as one call, even when cut at
    multiples of 48 (OpenBLAS's Haswell sgemm), so no share splits them.
    """
    cdef Py_ssize_t nq = _n_quanta(n)
    return min(n, ((nq * tid) // nt) * SPLIT_QUANTUM)


# --------------------------------------------------------------------------
# Elementwise kernels. Each is one serial pass over a C-contiguous n × m
# block of rows; the threads are the caller's (each works on its own rows).

cdef void bias_act_i(floating* Z, const floating* b, Py_ssize_t n,
                     Py_ssize_t m, int act, floating slope) noexcept nogil:
    """Hidden layer, in place: ``Z = f(Z + b)``; ``slope`` is leaky_relu's
    (PReLU has its own kernel, :func:`prelu_forward_i`)."""
    cdef Py_ssize_t i, j
    cdef floating v
    cdef floating* z
    if act == ACT_RELU:
        if floating is float:
            cbp_bias_relu_f(Z, b, n, m)
        else:
            cbp_bias_relu_d(Z, b, n, m)
    elif act == ACT_TANH:
        for i in range(n):
            z = Z + i * m
            for j in range(m):
                z[j] = _tanh(z[j] + b[j])
    elif act == ACT_LOGISTIC:
        for i in range(n):
            z = Z + i * m
            for j in range(m):
                z[j] = 1 / (1 + _exp(-(z[j] + b[j])))
    elif act == ACT_LEAKY_RELU:
        for i in range(n):
            z = Z + i * m
            for j in range(m):
                v = z[j] + b[j]
                z[j] = v if v > 0 else slope * v
    elif act == ACT_ELU:
        for i in range(n):
            z = Z + i * m
            for j in range(m):
                v = z[j] + b[j]
                z[j] = v if v > 0 else _expm1(v)
    elif act == ACT_SOFTPLUS:
        for i in range(n):
            z = Z + i * m
            for j in range(m):
                z[j] = _softplus(z[j] + b[j])
    else:
        for i in range(n):
            z = Z + i * m
            for j in range(m):
                z[j] = z[j] + b[j]


cdef void prelu_forward_i(floating* Z, const floating* b,
                          const floating* slopes, floating* Zsave,
                          Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    """PReLU hidden layer, in place: ``v = Z + b``;
    ``Z = v if v > 0 else slopes * v``, one slope per unit (column).

    When ``Zsave`` is not NULL the pre-activations ``v`` are kept there for
    the backward pass: a learned slope may reach 0 or turn negative, so
    ``v`` cannot be recovered from the activation.
    """
    cdef Py_ssize_t i, j
    cdef floating v
    cdef floating* z
    for i in range(n):
        z = Z + i * m
        for j in range(m):
            v = z[j] + b[j]
            if Zsave != NULL:
                Zsave[i * m + j] = v
            z[j] = v if v > 0 else slopes[j] * v


cdef void prelu_backward_i(floating* D, floating* Zsave,
                           const floating* slopes, Py_ssize_t n,
                           Py_ssize_t m) noexcept nogil:
    """PReLU hidden delta, in place: ``D = D * (1 if v > 0 else slopes)``
    with ``v = Zsave``; ``Zsave`` is overwritten with each row's term of
    the slopes' gradient, ``D * min(v, 0)`` (D before the derivative), which
    phase 2 sums over rows (:func:`params_grad`).
    """
    cdef Py_ssize_t i, j
    cdef floating v, d
    cdef floating* r
    cdef floating* z
    for i in range(n):
        r = D + i * m
        z = Zsave + i * m
        for j in range(m):
            v = z[j]
            d = r[j]
            if v > 0:
                z[j] = 0
            else:
                z[j] = d * v
                # NaN v gives NaN, whatever the slope
                r[j] = slopes[j] * d if v == v else v


cdef void act_backward_i(floating* D, const floating* A, Py_ssize_t n,
                         Py_ssize_t m, int act, floating slope) noexcept nogil:
    """Hidden delta, in place: ``D = D * f'(A)``, the derivative taken from
    the stored activation ``A = f(Z)``: leaky_relu's branch is the sign of
    A (``slope >= 0``), elu's ``f'(z) = A + 1`` where ``A <= 0``, softplus's
    ``f'(z) = 1 - exp(-A)``."""
    cdef Py_ssize_t i
    cdef Py_ssize_t size = n * m
    if act == ACT_LEAKY_RELU:
        for i in range(size):
            # a NaN activation gives NaN (its branch is unknown), not slope * D
            D[i] = D[i] if A[i] > 0 else (slope * D[i] if A[i] == A[i] else A[i])
        return
    if act == ACT_ELU:
        for i in range(size):
            D[i] = D[i] if A[i] > 0 else D[i] * (A[i] + 1)
        return
    if act == ACT_SOFTPLUS:
        for i in range(size):
            D[i] = -D[i] * _expm1(-A[i])
        return
    # C kernels with restrict pointers (src/_kernels.h): these vectorise
    if floating is float:
        if act == ACT_RELU:
            cbp_relu_backward_f(D, A, size)
        elif act == ACT_TANH:
            cbp_tanh_backward_f(D, A, size)
        elif act == ACT_LOGISTIC:
            cbp_logistic_backward_f(D, A, size)
    else:
        if act == ACT_RELU:
            cbp_relu_backward_d(D, A, size)
        elif act == ACT_TANH:
            cbp_tanh_backward_d(D, A, size)
        elif act == ACT_LOGISTIC:
            cbp_logistic_backward_d(D, A, size)


cdef inline void _softmax_exp(floating* z, Py_ssize_t k,
                              floating mx) noexcept nogil:
    """``z[:k] = exp(z[:k] - mx)`` for the row maximum ``mx`` (the loop and
    its exp are in _kernels.h: vectorised, within 2 ulp of libm's)."""
    if floating is float:
        cbp_softmax_exp_f(z, k, mx)
    else:
        cbp_softmax_exp_d(z, k, mx)


cdef void output_delta_i(floating* Z, const floating* b, const floating* Y,
                         const floating* sw, Py_ssize_t n, Py_ssize_t k,
                         int out_act, double* rowloss,
                         double loss_param) noexcept nogil:
    """Output layer and loss, in place: ``Z = sw * (out(Z + b) - Y)``
    (Huber: ``Z = sw * clip(v - Y, -delta, delta)``, ``delta = loss_param``).

    Writes ``rowloss[i] = sw_i * loss_i``, each ``loss_i`` summed over the
    outputs and computed from the logits so that it is finite wherever
    they are (log-softmax, softplus). Poisson's ``loss_i`` is the half
    deviance ``exp(v) - y v + y log(y) - y`` (scikit-learn's; the constant
    ``y log(y) - y`` has no gradient).
    """
    cdef Py_ssize_t i, j
    cdef floating v, mx, s, w, p, hd
    cdef floating* z
    cdef const floating* y
    cdef double row, ysum
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
            # loss_i = sum_j y_j (lse - z_j), lse = mx + log(sum_j exp(z_j - mx))
            ysum = 0
            for j in range(k):
                if y[j] != 0:
                    row += y[j] * (mx - z[j])
                    ysum += y[j]
            _softmax_exp(z, k, mx)
            s = 0
            for j in range(k):
                s = s + z[j]
            row += ysum * _log(s)
            for j in range(k):
                z[j] = w * (z[j] / s - y[j])
        elif out_act == OUT_LOGISTIC:
            for j in range(k):
                v = z[j] + b[j]
                row += _softplus(v) - y[j] * v
                p = 1 / (1 + _exp(-v))
                z[j] = w * (p - y[j])
        elif out_act == OUT_EXP:
            for j in range(k):
                v = z[j] + b[j]
                p = _exp(v)
                row += p - y[j] * v
                if y[j] > 0:
                    row += y[j] * _log(y[j]) - y[j]
                z[j] = w * (p - y[j])
        elif out_act == OUT_HUBER:
            hd = <floating>loss_param
            for j in range(k):
                v = z[j] + b[j] - y[j]
                if v > hd:
                    row += hd * (v - 0.5 * hd)
                    z[j] = w * hd
                elif v < -hd:
                    row += hd * (-v - 0.5 * hd)
                    z[j] = -w * hd
                else:
                    row += 0.5 * v * v
                    z[j] = w * v
        else:
            for j in range(k):
                v = z[j] + b[j] - y[j]
                row += 0.5 * v * v
                z[j] = w * v
        rowloss[i] = w * row


cdef void output_forward_i(floating* Z, const floating* b, Py_ssize_t n,
                           Py_ssize_t k, int out_act) noexcept nogil:
    """Output layer for prediction, in place: ``Z = out(Z + b)``."""
    cdef Py_ssize_t i, j
    cdef floating mx, s
    cdef floating* z
    for i in range(n):
        z = Z + i * k
        if out_act == OUT_SOFTMAX:
            mx = z[0] + b[0]
            for j in range(k):
                z[j] = z[j] + b[j]
                if z[j] > mx:
                    mx = z[j]
            _softmax_exp(z, k, mx)
            s = 0
            for j in range(k):
                s = s + z[j]
            for j in range(k):
                z[j] = z[j] / s
        elif out_act == OUT_LOGISTIC:
            for j in range(k):
                z[j] = 1 / (1 + _exp(-(z[j] + b[j])))
        elif out_act == OUT_EXP:
            for j in range(k):
                z[j] = _exp(z[j] + b[j])
        else:
            for j in range(k):
                z[j] = z[j] + b[j]


cdef void colsum_i(floating* out, const floating* D, Py_ssize_t n,
                   Py_ssize_t m, Py_ssize_t ld, floating scale,
                   bint accumulate) noexcept nogil:
    """``out[:m] (+)= scale * D[:n, :m].sum(axis=0)`` (row stride ``ld``),
    rows summed in order (the loop is in _kernels.h)."""
    if floating is float:
        cbp_colsum_f(out, D, n, m, ld, scale, accumulate)
    else:
        cbp_colsum_d(out, D, n, m, ld, scale, accumulate)


# --------------------------------------------------------------------------
# Sparse first layer: X in CSR, rows found through ``_csr_row``.

cdef inline Py_ssize_t _csr_row(const CSR* c, Py_ssize_t i) noexcept nogil:
    """Matrix row of the epoch's (or call's) i-th row."""
    return c.rowmap[i] if c.rowmap != NULL else i


cdef void csr_matmul_i(floating* A, const floating* data, const CSR* c,
                       Py_ssize_t i0, Py_ssize_t i1, const floating* W,
                       Py_ssize_t fo) noexcept nogil:
    """``A[i - i0] = X[row(i)] @ W`` for rows i0..i1, X sparse (CSR × dense)."""
    cdef Py_ssize_t i, j, p, row
    cdef floating v
    cdef floating* a
    cdef const floating* w
    for i in range(i0, i1):
        a = A + (i - i0) * fo
        for j in range(fo):
            a[j] = 0
        row = _csr_row(c, i)
        for p in range(c.indptr[row], c.indptr[row + 1]):
            v = data[p]
            w = W + c.indices[p] * fo
            for j in range(fo):
                a[j] += v * w[j]


cdef void csr_grad_i(floating* G, const floating* data, const CSR* c,
                     Py_ssize_t i0, Py_ssize_t nb, const floating* delta,
                     Py_ssize_t fo, Py_ssize_t f0, Py_ssize_t f1,
                     floating scale, bint accumulate) noexcept nogil:
    """``G[f0:f1] (+)= scale * X[rows]ᵀ[f0:f1] @ delta`` for the nb rows
    from i0, X sparse; each thread owns its feature rows f0..f1 of G and
    adds the rows' terms in row order, so no result depends on the split."""
    cdef Py_ssize_t i, j, p, f, row
    cdef floating v
    cdef floating* g
    cdef const floating* d
    if not accumulate:
        for j in range(f0 * fo, f1 * fo):
            G[j] = 0
    for i in range(nb):
        row = _csr_row(c, i0 + i)
        d = delta + i * fo
        for p in range(c.indptr[row], c.indptr[row + 1]):
            f = c.indices[p]
            if f0 <= f < f1:
                v = scale * data[p]
                g = G + f * fo
                for j in range(fo):
                    g[j] += v * d[j]


# --------------------------------------------------------------------------
# Dropout. Whether unit ``unit`` of row ``row`` is kept is a pure function
# of (seed, row, unit): a counter-based hash (SplitMix64's finaliser), so the
# masks need no RNG state, no storage (the backward pass recomputes them)
# and do not depend on the thread count. ``row`` counts rows across calls
# (the estimator passes the samples seen so far, so every epoch draws new
# masks); ``unit`` numbers the hidden units of all layers in order.

cdef inline uint64_t _mix64(uint64_t z) noexcept nogil:
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef inline bint _drop_keep(uint64_t seed, uint64_t row, uint64_t unit,
                            uint64_t threshold) noexcept nogil:
    """Keep with probability 1 - rate: the hash's top 53 bits, as a number
    in [0, 2^53), are >= ``threshold = rate * 2^53``."""
    cdef uint64_t h = _mix64(seed + (row + 1) * <uint64_t>0x9E3779B97F4A7C15ULL)
    h = _mix64(h ^ ((unit + 1) * <uint64_t>0xD1B54A32D192ED03ULL))
    return (h >> 11) >= threshold


cdef inline uint64_t _drop_threshold(double rate) noexcept nogil:
    return <uint64_t>(rate * 9007199254740992.0)   # rate * 2^53


cdef inline floating _act_deriv(int act, floating a,
                                floating slope) noexcept nogil:
    """``f'(z)`` from the activation ``a = f(z)`` (not PReLU)."""
    # a NaN activation gives a NaN derivative (relu's and leaky_relu's
    # branches would give a finite one)
    if act == ACT_RELU:
        return 1 if a > 0 else (0 if a == a else a)
    if act == ACT_TANH:
        return 1 - a * a
    if act == ACT_LOGISTIC:
        return a * (1 - a)
    if act == ACT_LEAKY_RELU:
        return 1 if a > 0 else (slope if a == a else a)
    if act == ACT_ELU:
        return 1 if a > 0 else a + 1
    if act == ACT_SOFTPLUS:
        return -_expm1(-a)
    return 1


cdef void dropout_forward_i(floating* A, Py_ssize_t n, Py_ssize_t m,
                            double rate, uint64_t seed, uint64_t row0,
                            uint64_t unit0) noexcept nogil:
    """Inverted dropout, in place: ``A = A * keep / (1 - rate)``, keep
    drawn by :func:`_drop_keep` for rows row0.. and units unit0.."""
    cdef Py_ssize_t i, j
    cdef uint64_t thr = _drop_threshold(rate)
    cdef floating scale = <floating>(1.0 / (1.0 - rate))
    cdef floating* a
    for i in range(n):
        a = A + i * m
        for j in range(m):
            if _drop_keep(seed, row0 + i, unit0 + j, thr):
                a[j] = a[j] * scale
            elif a[j] == a[j]:
                a[j] = 0
            # a dropped NaN stays NaN, as a multiplication by the mask keeps it


cdef void dropout_backward_i(floating* D, const floating* A, Py_ssize_t n,
                             Py_ssize_t m, int act, floating slope,
                             double rate, uint64_t seed, uint64_t row0,
                             uint64_t unit0) noexcept nogil:
    """Hidden delta of a dropout layer, in place: ``D = D * keep * scale
    * f'(Z)`` with ``scale = 1 / (1 - rate)``, ``f'`` taken from the stored
    (dropped) activation ``A = keep * scale * f(Z)`` as ``f'`` of
    ``A / scale``. PReLU: only ``D = D * keep * scale`` (its own backward
    kernel follows, from the stored pre-activations)."""
    cdef Py_ssize_t i, j
    cdef uint64_t thr = _drop_threshold(rate)
    cdef floating scale = <floating>(1.0 / (1.0 - rate))
    cdef floating t
    cdef floating* d
    cdef const floating* a
    for i in range(n):
        d = D + i * m
        a = A + i * m
        for j in range(m):
            if act == ACT_PRELU:
                t = d[j] * scale
            else:
                t = d[j] * scale * _act_deriv(act, a[j] / scale, slope)
            if not _drop_keep(seed, row0 + i, unit0 + j, thr) and t == t:
                # a dropped unit's delta is 0 * t: 0, but NaN stays NaN
                t = 0
            d[j] = t


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
        'output': ``Z = out(Z + b)`` (:func:`output_forward_i`, ``act``
        an output code). 'dropout_forward' / 'dropout_backward':
        :func:`dropout_forward_i` on ``Z`` / :func:`dropout_backward_i`
        on ``D`` with the activations ``Z``, rows and units counted from 0.
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
        output_forward_i(&Z[0, 0], &b[0], n, m, act)
    elif kernel == "dropout_forward":
        dropout_forward_i(&Z[0, 0], n, m, rate, seed, 0, 0)
    elif kernel == "dropout_backward":
        dropout_backward_i(&D[0, 0], &Z[0, 0], n, m, act, <floating>act_param,
                           rate, seed, 0, 0)
    else:
        raise ValueError(f"unknown kernel {kernel!r}")


# --------------------------------------------------------------------------
# Optimizer steps: one fused pass over a segment of the flat vectors.
# ``l2`` adds the L2 gradient ``l2 * theta`` (weights only) on the fly.

cdef void sgd_step_i(floating* theta, const floating* g, floating* velocity,
                     Py_ssize_t n, floating lr, floating momentum,
                     bint nesterov, floating l2, floating decay) noexcept nogil:
    """``velocity = momentum * velocity - lr * g``; ``theta += velocity``
    (Nesterov: ``theta += momentum * velocity - lr * g``); with decoupled
    weight decay, ``theta -= decay * theta`` too (theta before the step)."""
    cdef Py_ssize_t i
    cdef floating v, gi
    if decay != 0:
        for i in range(n):
            gi = g[i] + l2 * theta[i]
            v = momentum * velocity[i] - lr * gi
            velocity[i] = v
            if nesterov:
                theta[i] += momentum * v - lr * gi - decay * theta[i]
            else:
                theta[i] += v - decay * theta[i]
        return
    if nesterov:
        for i in range(n):
            gi = g[i] + l2 * theta[i]
            v = momentum * velocity[i] - lr * gi
            velocity[i] = v
            theta[i] += momentum * v - lr * gi
    else:
        for i in range(n):
            gi = g[i] + l2 * theta[i]
            v = momentum * velocity[i] - lr * gi
            velocity[i] = v
            theta[i] += v


cdef void adam_step_i(floating* theta, const floating* g, floating* m,
                      floating* v, Py_ssize_t n, floating lr_t,
                      floating beta_1, floating beta_2, floating epsilon,
                      floating l2, floating decay) noexcept nogil:
    """``m = beta_1 m + (1 - beta_1) g``; ``v = beta_2 v + (1 - beta_2) g²``;
    ``theta -= lr_t * m / (sqrt(v) + epsilon)``, with the bias corrections
    folded into ``lr_t = lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)``; with
    decoupled weight decay (AdamW), ``theta -= decay * theta`` too."""
    # the loop is in _kernels.h (cbp_adam_*): restrict pointers, and an AVX2
    # copy chosen at run time
    cdef floating c1 = 1 - beta_1
    cdef floating c2 = 1 - beta_2
    if floating is float:
        cbp_adam_f(theta, g, m, v, n, lr_t, beta_1, beta_2, epsilon, l2,
                   decay, c1, c2)
    else:
        cbp_adam_d(theta, g, m, v, n, lr_t, beta_1, beta_2, epsilon, l2,
                   decay, c1, c2)


cdef void rmsprop_step_i(floating* theta, const floating* g, floating* v,
                         Py_ssize_t n, floating lr, floating rho,
                         floating epsilon, floating l2,
                         floating decay) noexcept nogil:
    """``v = rho v + (1 - rho) g²``; ``theta -= lr * g / (sqrt(v) + epsilon)``
    (and ``theta -= decay * theta`` with decoupled weight decay)."""
    # the loop is in _kernels.h (cbp_rmsprop_*), as Adam's
    cdef floating c = 1 - rho
    if floating is float:
        cbp_rmsprop_f(theta, g, v, n, lr, rho, epsilon, l2, decay, c)
    else:
        cbp_rmsprop_d(theta, g, v, n, lr, rho, epsilon, l2, decay, c)


cdef inline void step_i(const Optim* opt, floating* theta, const floating* g,
                        floating* s1, floating* s2, Py_ssize_t n, double lr_t,
                        double l2, double decay) noexcept nogil:
    """One solver's step over n parameters; ``decay`` is the decoupled
    weight decay's ``lr * weight_decay`` (0 for biases and slopes)."""
    if opt.solver == SOLVER_ADAM:
        adam_step_i(theta, g, s1, s2, n, <floating>lr_t, <floating>opt.beta_1,
                    <floating>opt.beta_2, <floating>opt.epsilon, <floating>l2,
                    <floating>decay)
    elif opt.solver == SOLVER_RMSPROP:
        rmsprop_step_i(theta, g, s1, n, <floating>opt.learning_rate,
                       <floating>opt.rho, <floating>opt.epsilon, <floating>l2,
                       <floating>decay)
    else:
        sgd_step_i(theta, g, s1, n, <floating>opt.learning_rate,
                   <floating>opt.momentum, opt.nesterov, <floating>l2,
                   <floating>decay)


# --------------------------------------------------------------------------
# One block of rows, in two phases run by every thread of a parallel
# region: phase 1 works on the thread's own rows (forward, output delta,
# hidden deltas: rows are independent), phase 2, after a barrier, on the
# thread's own share of the parameters (the rows of each grad W_l and the
# columns of each grad b_l, then the optimizer step on the same segments),
# so no two threads ever write the same memory and no reduction depends
# on the thread count.
#
# Workspace for blocks of ``rows`` rows: A_1..A_L (the activations; the
# output delta overwrites A_L), D_1..D_{L-1} (hidden deltas), the gather
# buffers of a shuffled batch (X, Y, sw) and one double per row for the
# per-row losses.

cdef inline floating* _at(const Net* net, floating* base, Py_ssize_t rows,
                          int layer) noexcept nogil:
    """Start of layer ``layer``'s block (layer >= 1) in an A or D region."""
    cdef Py_ssize_t off = 0
    cdef int l
    for l in range(1, layer):
        off += net.units[l]
    return base + rows * off


cdef inline Py_ssize_t _slope_off(const Net* net, int layer) noexcept nogil:
    """Where hidden layer ``layer``'s PReLU slopes (A_layer, layer >= 1)
    start in theta: after the biases, one per unit, layer after layer."""
    cdef Py_ssize_t off = net.slope_offset
    cdef int l
    for l in range(1, layer):
        off += net.units[l]
    return off


cdef inline const floating* _slopes(const Net* net, const floating* theta,
                                    int layer) noexcept nogil:
    return theta + _slope_off(net, layer)


cdef inline uint64_t _unit0(const Net* net, int layer) noexcept nogil:
    """Number of hidden layer ``layer``'s first unit among all hidden
    units (the dropout masks' unit counter)."""
    cdef uint64_t off = 0
    cdef int l
    for l in range(1, layer):
        off += <uint64_t>net.units[l]
    return off


cdef void _chunk_colsums(const Net* net, floating* bias_part,
                         const floating* D, Py_ssize_t r0, Py_ssize_t r1,
                         int l) noexcept nogil:
    """Column sums of ``D`` (rows r0..r1 of the delta ``delta_{l+1}``,
    whose columns are b_l's) per SPLIT_QUANTUM-row chunk of the batch.

    ``bias_part`` holds one vector shaped like all the biases (``sum_units``
    values, b_l at ``offsets[L + l] - offsets[L]``) per chunk, chunk ``c``
    being rows ``c * SPLIT_QUANTUM`` on. r0 starts a chunk (phase-1 shares
    are whole chunks), so every chunk's sum is the same whichever thread
    makes it.
    """
    cdef int L = net.n_layers
    cdef Py_ssize_t fo = net.units[l + 1]
    cdef Py_ssize_t boff = net.offsets[L + l] - net.offsets[L]
    cdef Py_ssize_t c0 = r0, c1
    while c0 < r1:
        c1 = min(c0 + SPLIT_QUANTUM, r1)
        colsum_i(bias_part + (c0 // SPLIT_QUANTUM) * net.sum_units + boff,
                 D + (c0 - r0) * fo, c1 - c0, fo, fo, 1, False)
        c0 = c1


cdef void _sum_chunks(floating* out, const floating* part, Py_ssize_t n_chunks,
                      Py_ssize_t stride, Py_ssize_t m,
                      floating scale) noexcept nogil:
    """``out[:m] = scale * (part[0] + part[1] + ...)``, the ``n_chunks``
    vectors ``stride`` apart added in chunk order (a column sum of them)."""
    cdef Py_ssize_t j
    colsum_i(out, part, n_chunks, m, stride, 1, False)
    for j in range(m):
        out[j] = scale * out[j]


cdef void rows_forward_backward(
        const Net* net, const floating* theta, const floating* X,
        const floating* Y, const floating* sw, Py_ssize_t r0, Py_ssize_t r1,
        floating* acts, floating* deltas, Py_ssize_t rows,
        double* rowloss, floating* zsave, Py_ssize_t block_row=0,
        const CSR* csr=NULL, floating* bias_part=NULL) noexcept nogil:
    """Phase 1 for rows r0..r1 of a block whose row 0 is at X, Y, sw.

    With ``bias_part`` (see :func:`_chunk_colsums`), each delta's column
    sums per SPLIT_QUANTUM-row chunk are written there while the rows are
    at hand, for :func:`params_grad` to add up.

    ``zsave`` (PReLU only, else NULL) is laid out like the hidden part of
    ``acts``: pre-activations on the way forward, each row's term of the
    slopes' gradient on the way back. ``block_row`` is the block's row 0
    in the epoch (the dropout masks' row counter, ``net.drop_row0`` added).
    With ``csr`` (sparse X), X holds its values and the block's rows are
    found from ``block_row`` (:func:`_csr_row`).
    """
    cdef int L = net.n_layers
    cdef int l, fi, fo
    cdef int m = <int>(r1 - r0)
    cdef const floating* A_prev
    cdef floating* A
    cdef floating* D
    cdef floating* delta
    if m <= 0:
        return
    # Forward: A_{l+1} = f(A_l @ W_l + b_l)
    A_prev = X + r0 * net.units[0] if csr == NULL else X
    for l in range(L):
        fi = net.units[l]
        fo = net.units[l + 1]
        A = _at(net, acts, rows, l + 1) + r0 * fo
        if l == 0 and csr != NULL:
            # A = X[rows] @ W_0, X sparse
            csr_matmul_i(A, X, csr, block_row + r0, block_row + r1,
                         theta + net.offsets[0], fo)
        else:
            # A = A_prev @ W_l
            gemm_rm(False, False, m, fo, fi, 1, A_prev, fi,
                    theta + net.offsets[l], fo, 0, A, fo)
        if l < L - 1:
            if net.hidden_act == ACT_PRELU:
                prelu_forward_i(A, theta + net.offsets[L + l],
                                _slopes(net, theta, l + 1),
                                _at(net, zsave, rows, l + 1) + r0 * fo, m, fo)
            else:
                bias_act_i(A, theta + net.offsets[L + l], m, fo,
                           net.hidden_act, <floating>net.act_param)
            if net.dropout != NULL and net.dropout[l] > 0:
                _dropout_rows_forward(net, A, m, fo, l, block_row + r0)
        A_prev = A
    # Output: delta_L = sw * (P - Y), in place over A_L
    fo = net.units[L]
    delta = _at(net, acts, rows, L) + r0 * fo
    output_delta_i(delta, theta + net.offsets[2 * L - 1], Y + r0 * fo,
                   sw + r0, m, fo, net.out_act, rowloss + r0, net.loss_param)
    if bias_part != NULL:
        _chunk_colsums(net, bias_part, delta, r0, r1, L - 1)
    # Hidden deltas: D_l = f'(A_l) * (delta_{l+1} @ W_lᵀ)
    for l in range(L - 1, 0, -1):
        fi = net.units[l]
        fo = net.units[l + 1]
        D = _at(net, deltas, rows, l) + r0 * fi
        # D = delta @ W_lᵀ
        if fo == 1:
            # one output (regression, binary): an outer product, the same
            # bits as the GEMM, without its call and its pass clearing D
            if floating is float:
                cbp_outer_f(D, delta, theta + net.offsets[l], m, fi)
            else:
                cbp_outer_d(D, delta, theta + net.offsets[l], m, fi)
        else:
            gemm_rm(False, True, m, fi, fo, 1, delta, fo,
                    theta + net.offsets[l], fo, 0, D, fi)
        if net.dropout != NULL and net.dropout[l - 1] > 0:
            _dropout_rows_backward(net, D, _at(net, acts, rows, l) + r0 * fi,
                                   m, fi, l, block_row + r0)
            if net.hidden_act == ACT_PRELU:
                prelu_backward_i(D, _at(net, zsave, rows, l) + r0 * fi,
                                 _slopes(net, theta, l), m, fi)
        elif net.hidden_act == ACT_PRELU:
            prelu_backward_i(D, _at(net, zsave, rows, l) + r0 * fi,
                             _slopes(net, theta, l), m, fi)
        else:
            act_backward_i(D, _at(net, acts, rows, l) + r0 * fi, m, fi,
                           net.hidden_act, <floating>net.act_param)
        if bias_part != NULL:
            _chunk_colsums(net, bias_part, D, r0, r1, l - 1)
        delta = D


cdef void params_grad(const Net* net, floating* grad, const floating* X,
                      Py_ssize_t nb, floating* acts, floating* deltas,
                      Py_ssize_t rows, floating scale, bint accumulate,
                      int tid, int nt, floating* zsave,
                      Py_ssize_t block_row=0, const CSR* csr=NULL,
                      const floating* bias_part=NULL) noexcept nogil:
    """Phase 2: thread ``tid``'s share of the gradient of a block of nb rows.

    ``grad W_l[r0:r1] (+)= scale * A_l[:, r0:r1]ᵀ @ delta_{l+1}`` and
    ``grad b_l[c0:c1] (+)= scale * delta_{l+1}[:, c0:c1].sum(axis=0)``
    (with ``bias_part``, not accumulating: ``grad b_l[c0:c1] = scale *`` the
    sum of phase 1's chunk sums, see :func:`_chunk_colsums`);
    with PReLU, ``grad a_l[c0:c1] (+)= scale * zsave_l[:, c0:c1].sum(axis=0)``
    (zsave holding the rows' terms left by phase 1). With ``csr``, X is
    sparse as in :func:`rows_forward_backward`.
    """
    cdef int L = net.n_layers
    cdef int l, fi, fo
    cdef Py_ssize_t r0, r1, c0, c1
    cdef const floating* A_l
    cdef floating* delta
    cdef floating beta = 1 if accumulate else 0
    cdef Py_ssize_t b0 = _block_share(net, tid, nt)
    cdef Py_ssize_t b1 = _block_share(net, tid + 1, nt)
    cdef Py_ssize_t g0 = 0
    for l in range(L):
        fi = net.units[l]
        fo = net.units[l + 1]
        if l == 0:
            A_l = X
        else:
            A_l = _at(net, acts, rows, l)
        if l == L - 1:
            delta = _at(net, acts, rows, L)
        else:
            delta = _at(net, deltas, rows, l + 1)
        _share_rows(net, l, g0, b0, b1, &r0, &r1)
        g0 += _n_quanta(fi)
        if l == 0 and csr != NULL:
            if r1 > r0:
                csr_grad_i(grad + net.offsets[0], X, csr, block_row, nb, delta,
                           fo, r0, r1, scale, accumulate)
        elif r1 > r0:
            # grad W_l[r0:r1] (+)= scale * A_l[:, r0:r1].T @ delta
            gemm_rm(True, False, <int>(r1 - r0), fo, <int>nb, scale, A_l + r0,
                    fi, delta, fo, beta, grad + net.offsets[l] + r0 * fo, fo)
        c0 = _part(fo, tid, nt)
        c1 = _part(fo, tid + 1, nt)
        if c1 > c0 and bias_part != NULL:
            _sum_chunks(grad + net.offsets[L + l] + c0,
                        bias_part + net.offsets[L + l] - net.offsets[L] + c0,
                        _n_quanta(nb), net.sum_units, c1 - c0, scale)
        elif c1 > c0:
            colsum_i(grad + net.offsets[L + l] + c0, delta + c0, nb, c1 - c0,
                     fo, scale, accumulate)
    if net.slope_offset >= 0:
        for l in range(1, L):
            fi = net.units[l]
            c0 = _part(fi, tid, nt)
            c1 = _part(fi, tid + 1, nt)
            if c1 > c0:
                colsum_i(grad + _slope_off(net, l) + c0,
                         _at(net, zsave, rows, l) + c0, nb, c1 - c0, fi,
                         scale, accumulate)


cdef bint _all_finite(const floating* x, Py_ssize_t n) noexcept nogil:
    """Whether ``x[:n]`` holds no NaN and no infinity."""
    cdef Py_ssize_t i
    for i in range(n):
        if not isfinite(x[i]):
            return False
    return True


cdef Py_ssize_t _n_row_blocks(const Net* net) noexcept nogil:
    """Number of SPLIT_QUANTUM-row blocks of all weight matrices together."""
    cdef Py_ssize_t total = 0
    cdef int l
    for l in range(net.n_layers):
        total += _n_quanta(net.units[l])
    return total


cdef Py_ssize_t _block_share(const Net* net, int tid, int nt) noexcept nogil:
    """First weight-row block (global index) of thread ``tid``'s phase-2 share.

    The weight matrices' rows are cut into blocks of SPLIT_QUANTUM rows
    (layer by layer, the order of ``_n_row_blocks``); a block of r rows of
    layer l costs r * units[l + 1] (its gradient GEMM and its optimizer
    step). Threads take consecutive blocks of about equal total cost, so
    that a narrow input layer or a thin output layer does not leave one
    thread most of the work, as an even split of each layer's rows would.
    A thread's run of blocks in a layer is one gradient GEMM, so, as for
    the rows of phase 1 (see :func:`_part_q`), the weights depend on
    ``nt`` only where BLAS picks its kernel by the call's shape.
    """
    cdef int L = net.n_layers
    cdef int l
    cdef Py_ssize_t fi, fo, r, size, total = 0, before = 0, g = 0
    if tid <= 0:
        return 0
    if tid >= nt:
        return _n_row_blocks(net)
    for l in range(L):
        total += <Py_ssize_t>net.units[l] * net.units[l + 1]
    # the first block whose midpoint lies past tid / nt of the total
    for l in range(L):
        fi = net.units[l]
        fo = net.units[l + 1]
        r = 0
        while r < fi:
            size = min(SPLIT_QUANTUM, fi - r) * fo
            if (2 * before + size) * nt > 2 * total * tid:
                return g
            before += size
            g += 1
            r += SPLIT_QUANTUM
    return g


cdef inline void _share_rows(const Net* net, int l, Py_ssize_t g0,
                             Py_ssize_t b0, Py_ssize_t b1, Py_ssize_t* r0,
                             Py_ssize_t* r1) noexcept nogil:
    """Rows [r0, r1) of layer l's weights in the blocks [b0, b1), when the
    layer's blocks start at global index g0 (empty when none are)."""
    cdef Py_ssize_t fi = net.units[l]
    cdef Py_ssize_t nq = _n_quanta(fi)
    cdef Py_ssize_t lo = max(b0, g0) - g0
    cdef Py_ssize_t hi = min(b1, g0 + nq) - g0
    if hi <= lo:
        r0[0] = 0
        r1[0] = 0
    else:
        r0[0] = lo * SPLIT_QUANTUM
        r1[0] = min(hi * SPLIT_QUANTUM, fi)


cdef double _sum_blocks(const double* sq_q, Py_ssize_t n) noexcept nogil:
    """``sum(sq_q[:n])`` in index order (the same bits for any thread count)."""
    cdef double total = 0
    cdef Py_ssize_t j
    for j in range(n):
        total += sq_q[j]
    return total


cdef void params_step(const Net* net, floating* theta, const floating* grad,
                      floating* s1, floating* s2, const Optim* opt,
                      double lr_t, double l2, double* sq_q, int tid,
                      int nt) noexcept nogil:
    """Phase 2: the optimizer step on thread ``tid``'s share of theta.

    Also writes ``sum(W**2)`` before the step (the penalty of the batch
    just computed) per block of SPLIT_QUANTUM weight rows into ``sq_q``
    (layer by layer; ``_n_row_blocks`` slots). The shares are whole
    blocks, so each slot's value, and their sum in index order, do not
    depend on the thread count.
    """
    cdef int L = net.n_layers
    cdef int l, fi, fo
    cdef Py_ssize_t seg, size, r, r_end, q = 0
    cdef double decay = opt.learning_rate * opt.weight_decay
    cdef Py_ssize_t b0 = _block_share(net, tid, nt)
    cdef Py_ssize_t b1 = _block_share(net, tid + 1, nt)
    for l in range(L):
        fi = net.units[l]
        fo = net.units[l + 1]
        _share_rows(net, l, q, b0, b1, &r, &r_end)
        while r < r_end:
            seg = net.offsets[l] + r * fo
            size = (min(r + SPLIT_QUANTUM, r_end) - r) * fo
            sq_q[q + r // SPLIT_QUANTUM] = dot(<int>size, theta + seg, theta + seg)
            step_i(opt, theta + seg, grad + seg, s1 + seg, s2 + seg, size,
                   lr_t, l2, decay)
            r += SPLIT_QUANTUM
        q += _n_quanta(fi)
        seg = net.offsets[L + l] + _part(fo, tid, nt)
        size = _part(fo, tid + 1, nt) - _part(fo, tid, nt)
        if size > 0:
            step_i(opt, theta + seg, grad + seg, s1 + seg, s2 + seg, size,
                   lr_t, 0, 0)
    if net.slope_offset >= 0:
        # PReLU slopes: no penalty
        for l in range(1, L):
            fi = net.units[l]
            seg = _slope_off(net, l) + _part(fi, tid, nt)
            size = _part(fi, tid + 1, nt) - _part(fi, tid, nt)
            if size > 0:
                step_i(opt, theta + seg, grad + seg, s1 + seg, s2 + seg,
                       size, lr_t, 0, 0)


cdef void params_l2(const Net* net, const floating* theta, floating* grad,
                    floating coef, double* sq_q, int tid, int nt) noexcept nogil:
    """``grad W += coef * W`` on thread ``tid``'s share; ``sum(W**2)`` per
    block of weight rows into ``sq_q``, as in ``params_step``."""
    cdef int L = net.n_layers
    cdef int l, fi, fo
    cdef Py_ssize_t seg, size, r, r_end, q = 0
    cdef Py_ssize_t b0 = _block_share(net, tid, nt)
    cdef Py_ssize_t b1 = _block_share(net, tid + 1, nt)
    for l in range(L):
        fi = net.units[l]
        fo = net.units[l + 1]
        _share_rows(net, l, q, b0, b1, &r, &r_end)
        while r < r_end:
            seg = net.offsets[l] + r * fo
            size = (min(r + SPLIT_QUANTUM, r_end) - r) * fo
            sq_q[q + r // SPLIT_QUANTUM] = dot(<int>size, theta + seg, theta + seg)
            if coef != 0:
                axpy(<int>size, coef, theta + seg, grad + seg)
            r += SPLIT_QUANTUM
        q += _n_quanta(fi)


cdef void forward_rows(const Net* net, const floating* theta,
                       const floating* X, Py_ssize_t n, floating* out,
                       floating* buf0, floating* buf1, Py_ssize_t row0=0,
                       const CSR* csr=NULL) noexcept nogil:
    """Prediction for n rows into ``out`` (n × units[L]); with ``csr``,
    rows row0.. of the sparse X whose values are at X."""
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
        if l == 0 and csr != NULL:
            # A = X[row0:row0 + n] @ W_0, X sparse
            csr_matmul_i(A, X, csr, row0, row0 + n, theta + net.offsets[0], fo)
        else:
            # A = A_prev @ W_l
            gemm_rm(False, False, <int>n, fo, fi, 1, A_prev, fi,
                    theta + net.offsets[l], fo, 0, A, fo)
        if l < L - 1:
            if net.hidden_act == ACT_PRELU:
                prelu_forward_i(A, theta + net.offsets[L + l],
                                _slopes(net, theta, l + 1), <floating*>NULL,
                                n, fo)
            else:
                bias_act_i(A, theta + net.offsets[L + l], n, fo,
                           net.hidden_act, <floating>net.act_param)
        else:
            output_forward_i(A, theta + net.offsets[L + l], n, fo, net.out_act)
        A_prev = A


cdef int _pending_signal() noexcept nogil:
    """True when a signal handler raised (the exception is left pending)."""
    with gil:
        return _check_signals() != 0


cdef int _raise_pending() except -1:
    """Propagate the exception that a signal handler left pending."""
    return -1


# --------------------------------------------------------------------------
# Python entry points.

cdef Net _make_net(const int[::1] units, const Py_ssize_t[::1] offsets,
                   Py_ssize_t n_params, int hidden_act, int out_act,
                   int n_threads, double act_param=0.0,
                   double loss_param=1.0) except *:
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
    net.slope_offset = -1
    if hidden_act == ACT_PRELU:
        # one slope per hidden unit, after the biases
        net.slope_offset = expect
        expect += net.sum_units - units[net.n_layers]
    if expect != n_params:
        raise ValueError(
            f"theta has {n_params} entries, the layer widths need {expect}")
    if hidden_act not in (ACT_IDENTITY, ACT_LOGISTIC, ACT_TANH, ACT_RELU,
                          ACT_LEAKY_RELU, ACT_ELU, ACT_SOFTPLUS, ACT_PRELU):
        raise ValueError(f"unknown hidden activation code {hidden_act}")
    if not (act_param >= 0):
        raise ValueError(f"the activation's slope must be >= 0, got {act_param}")
    if out_act not in (OUT_IDENTITY, OUT_LOGISTIC, OUT_SOFTMAX, OUT_EXP,
                       OUT_HUBER):
        raise ValueError(f"unknown output activation code {out_act}")
    if out_act == OUT_HUBER and not (loss_param > 0):
        raise ValueError(f"Huber's threshold must be > 0, got {loss_param}")
    net.n_params = n_params
    net.units = &units[0]
    net.offsets = &offsets[0]
    net.hidden_act = hidden_act
    net.out_act = out_act
    net.n_threads = cbp_thread_cap(max(1, n_threads))
    net.act_param = act_param
    net.loss_param = loss_param
    net.dropout = NULL
    net.drop_seed = 0
    net.drop_row0 = 0
    net.drop_pos = NULL
    return net


cdef void _set_dropout(Net* net, object dropout, uint64_t seed,
                       uint64_t row0) except *:
    """Turn dropout on in ``net`` when ``dropout`` (rates per hidden layer,
    a C-contiguous float64 array kept alive by the caller) has a rate > 0."""
    cdef const double[::1] rates
    cdef int l
    cdef bint any_on = False
    if dropout is None:
        return
    rates = dropout
    if rates.shape[0] != net.n_layers - 1:
        raise ValueError(
            f"dropout needs one rate per hidden layer ({net.n_layers - 1}), "
            f"got {rates.shape[0]}")
    for l in range(rates.shape[0]):
        if not (0 <= rates[l] < 1):
            raise ValueError(f"dropout rates must be in [0, 1), got {rates[l]}")
        if rates[l] > 0:
            any_on = True
    if any_on:
        net.dropout = &rates[0]
        net.drop_seed = seed
        net.drop_row0 = row0


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


cdef Py_ssize_t _share_capacity(Py_ssize_t rows, int nt) noexcept nogil:
    """Most rows any thread's share (``_part_q``) of ``rows`` can hold."""
    cdef Py_ssize_t nq = _n_quanta(rows)
    return min(rows, ((nq + nt - 1) // nt) * SPLIT_QUANTUM)


cdef bint _csr_init(CSR* c, object X_csr, bint dense_given) except -1:
    """Point ``c`` at ``X_csr = (data, indices, indptr, n_cols)`` (indices
    and indptr intp arrays the caller keeps alive), after checking them;
    return False when X is dense (``X_csr`` None)."""
    cdef const Py_ssize_t[::1] ind
    cdef const Py_ssize_t[::1] ptr
    cdef Py_ssize_t i, n, nnz, n_cols
    if X_csr is None:
        if not dense_given:
            raise ValueError("X (dense) or X_csr (sparse) is needed")
        return False
    if dense_given:
        raise ValueError("pass X or X_csr, not both")
    data, indices, indptr, n_cols = X_csr
    ind = indices
    ptr = indptr
    n = ptr.shape[0] - 1
    nnz = ind.shape[0]
    if n < 0 or ptr[0] != 0 or ptr[n] != nnz or len(data) != nnz:
        raise ValueError("X_csr: indptr must run from 0 to the number of values")
    for i in range(n):
        if ptr[i + 1] < ptr[i]:
            raise ValueError("X_csr: indptr must not decrease")
    for i in range(nnz):
        if ind[i] < 0 or ind[i] >= n_cols:
            raise ValueError("X_csr: a column index is out of range")
    c.indptr = &ptr[0]
    c.indices = &ind[0] if nnz > 0 else NULL
    c.rowmap = NULL
    c.n_rows = n
    c.n_cols = n_cols
    c.nnz = nnz
    return True


cdef void _check_rows(Py_ssize_t rows) except *:
    if rows < 1:
        raise ValueError("block size must be >= 1")
    if rows > INT_MAX:
        raise ValueError("block size too large for 32-bit BLAS sizes")


cdef double* _rowloss_area(floating* work, Py_ssize_t used) noexcept nogil:
    """The double-aligned area after ``used`` elements of the workspace."""
    cdef size_t addr = <size_t>(work + used)
    addr = (addr + 7) & ~(<size_t>7)
    return <double*>addr


cdef double* _train_layout(const Net* net, floating* work, Py_ssize_t rows,
                           Py_ssize_t xs, Py_ssize_t k, floating** deltas,
                           floating** Xb, floating** Yb,
                           floating** swb) noexcept nogil:
    """Lay the training workspace ``work`` out for blocks of ``rows`` rows
    (see :func:`train_workspace_size`): the activations at ``work``, then
    the hidden deltas, the gather buffers of X (``xs`` values a row; 0 for
    a sparse X), Y (``k``) and the sample weights, each with two slots of
    ``rows`` rows (slot 1 at ``Xb + rows * xs``, ...); returns the per-row
    losses' area after them."""
    deltas[0] = work + rows * net.sum_units
    Xb[0] = deltas[0] + rows * (net.sum_units - net.units[net.n_layers])
    Yb[0] = Xb[0] + 2 * rows * xs
    swb[0] = Yb[0] + 2 * rows * k
    return _rowloss_area(work, (swb[0] - work) + 2 * rows)


cdef void* _zsave_area(const Net* net, double* rowloss,
                       Py_ssize_t rows) noexcept nogil:
    """PReLU's pre-activation area (rows × hidden units), after the
    per-row losses; NULL for other activations."""
    if net.slope_offset < 0:
        return NULL
    return <void*>(rowloss + rows)


cdef floating* _bias_part_area(const Net* net, double* rowloss,
                               floating* zsave, Py_ssize_t rows) noexcept nogil:
    """The per-chunk bias sums' area (see :func:`_chunk_colsums`): after
    the per-row losses, and after PReLU's area ``zsave`` when there is one
    (rows × hidden units)."""
    if zsave != NULL:
        return zsave + rows * (net.sum_units - net.units[net.n_layers])
    return <floating*>(rowloss + rows)


cdef inline void _gather_rows(const Py_ssize_t* order, Py_ssize_t i0,
                              Py_ssize_t i1, const floating* X,
                              const floating* Y, const floating* sw,
                              Py_ssize_t xs, Py_ssize_t k, floating* Xb,
                              floating* Yb, floating* swb) noexcept nogil:
    """Rows i0..i1 of a gathered batch: ``Xb[i] = X[order[i]]`` (``xs``
    values a row; nothing when ``xs`` is 0, a sparse X read in place),
    ``Yb[i] = Y[order[i]]`` and ``swb[i] = sw[order[i]]``."""
    cdef Py_ssize_t i, r
    for i in range(i0, i1):
        r = order[i]
        if xs > 0:
            memcpy(Xb + i * xs, X + r * xs, xs * sizeof(floating))
        memcpy(Yb + i * k, Y + r * k, k * sizeof(floating))
        swb[i] = sw[r]


cdef void _gather_pool(Py_ssize_t* claimed, const Py_ssize_t* arrived,
                       int nt, const Py_ssize_t* order, Py_ssize_t nb,
                       const floating* X, const floating* Y,
                       const floating* sw, Py_ssize_t xs, Py_ssize_t k,
                       floating* Xb, floating* Yb,
                       floating* swb) noexcept nogil:
    """Gather rows of a batch of ``nb`` (see :func:`_gather_rows`) in chunks
    claimed from the shared counter ``claimed`` (rows handed out so far),
    until every row is claimed or, with ``arrived``, as soon as all ``nt``
    threads have counted themselves in ``*arrived``.

    Threads call it where they would wait at a barrier, so the copying
    fills the wait of whichever thread finished its share first. A copy's
    result does not depend on the thread that makes it.
    """
    cdef Py_ssize_t chunk = max(8, 2048 // (xs + k + 1))
    cdef Py_ssize_t i0
    while arrived == NULL or cbp_atomic_read(arrived) < nt:
        if cbp_atomic_read(claimed) >= nb:
            return
        i0 = cbp_fetch_add(claimed, chunk)
        if i0 >= nb:
            return
        _gather_rows(order, i0, min(i0 + chunk, nb), X, Y, sw, xs, k, Xb,
                     Yb, swb)


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


# --------------------------------------------------------------------------
# The network of one fit: the entry points Python calls.

cdef struct Layout:
    # The training workspace laid out for batches of ``rows`` rows (see
    # train_workspace_size). Pointers of the data's type, kept as void* so
    # that one struct serves float and double.
    Py_ssize_t rows
    void* acts
    void* deltas
    void* Xb              # gather slots: two batches of rows (X, Y, sw)
    void* Yb
    void* swb
    double* rowloss
    void* zsave
    void* bias_part       # NULL: bias gradients summed over all rows at once


cdef struct EpochArgs:
    # What every thread of an epoch reads (see _epoch_thread); data
    # pointers of theta's type, as void*.
    const void* X         # dense rows (xs values each), or a sparse X's values
    const void* Y
    const void* sw
    Py_ssize_t xs         # X's row stride; 0 for a sparse X
    Py_ssize_t k
    Py_ssize_t n_total    # rows of the epoch
    const Py_ssize_t* order   # the epoch's rows, or NULL: 0, 1, ...
    const CSR* csr        # a sparse X, or NULL
    double alpha
    double* sq            # sum(W**2) per weight-row block (see params_step)
    Py_ssize_t* step      # Adam's update counter
    double* shared        # [0] sum_data, [1] sum_penalty, [2] rows done,
                          # [3] status, [4] stop flag
    Py_ssize_t* pool      # gather counters by batch parity (_gather_pool)


cdef Layout _layout(const Net* net, floating* work, Py_ssize_t rows,
                    Py_ssize_t xs, Py_ssize_t k) noexcept nogil:
    """The training workspace ``work`` laid out for ``rows`` rows."""
    cdef Layout w
    cdef floating* deltas
    cdef floating* Xb
    cdef floating* Yb
    cdef floating* swb
    cdef floating* zsave
    w.rows = rows
    w.acts = work
    w.rowloss = _train_layout(net, work, rows, xs, k, &deltas, &Xb, &Yb, &swb)
    zsave = <floating*>_zsave_area(net, w.rowloss, rows)
    w.deltas = deltas
    w.Xb = Xb
    w.Yb = Yb
    w.swb = swb
    w.zsave = zsave
    w.bias_part = _bias_part_area(net, w.rowloss, zsave, rows)
    return w


# The batch step: phase 1 (_batch_rows), a barrier, phase 2 (_batch_grad),
# the update (_batch_update). An epoch runs it per batch; data-parallel
# training runs the same three with the ranks' allreduce between phase 2
# and the update (Network.batch_grad, Network.step).

cdef inline void _batch_rows(const Net* net, const floating* theta,
                             const floating* X, const floating* Y,
                             const floating* sw, Py_ssize_t nb,
                             Py_ssize_t block_row, const CSR* csr,
                             const Layout* w, int tid,
                             int nt) noexcept nogil:
    """Phase 1 on thread ``tid``'s rows of a batch of ``nb`` rows at X, Y,
    sw: forward, output delta, backward, per-row losses (and the bias sums
    per row chunk when the layout has their area)."""
    rows_forward_backward(net, theta, X, Y, sw, _part_q(nb, tid, nt),
                          _part_q(nb, tid + 1, nt), <floating*>w.acts,
                          <floating*>w.deltas, w.rows, w.rowloss,
                          <floating*>w.zsave, block_row, csr,
                          <floating*>w.bias_part)


cdef inline void _batch_grad(const Net* net, floating* grad,
                             const floating* X, Py_ssize_t nb,
                             Py_ssize_t block_row, const CSR* csr,
                             const Layout* w, floating scale, bint accumulate,
                             int tid, int nt) noexcept nogil:
    """Phase 2, after a barrier: thread ``tid``'s share of
    ``grad (+)= scale * sum_i sw_i * d loss_i / d theta`` (no L2 term)."""
    params_grad(net, grad, X, nb, <floating*>w.acts, <floating*>w.deltas,
                w.rows, scale, accumulate, tid, nt, <floating*>w.zsave,
                block_row, csr, <const floating*>w.bias_part)


cdef inline double _adam_rate(const Optim* opt, Py_ssize_t t) noexcept nogil:
    """Adam's bias-corrected step size after ``t`` updates (0 for others)."""
    if opt.solver != SOLVER_ADAM:
        return 0
    return (opt.learning_rate * sqrt(1 - pow(opt.beta_2, t))
            / (1 - pow(opt.beta_1, t)))


cdef inline void _batch_update(const Net* net, const Optim* opt,
                               floating* theta, const floating* grad,
                               floating* s1, floating* s2, Py_ssize_t t,
                               double l2, double* sq, int tid,
                               int nt) noexcept nogil:
    """Thread ``tid``'s share of the optimizer step, the L2 gradient
    ``l2 * W`` added on the fly; ``t`` counts Adam's updates, this one
    included. ``sq`` receives sum(W**2) before the step per block."""
    params_step(net, theta, grad, s1, s2, opt, _adam_rate(opt, t), l2, sq,
                tid, nt)


cdef void _epoch_thread(const Net* net, const Optim* opt, const EpochArgs* a,
                        const Layout* w, floating* theta, floating* grad,
                        floating* s1, floating* s2, int tid,
                        int nt) noexcept nogil:
    """Thread ``tid``'s part of an epoch (see Network.epoch).

    With an order, each batch's rows are gathered into one of two slots
    (dense X; a sparse X is read in place through ``csr.rowmap``): the
    next batch's in the waits of the one before (_gather_pool). Every
    thread sums the same numbers in the same order, so all take the same
    decisions.
    """
    cdef const floating* X = <const floating*>a.X
    cdef const floating* Y = <const floating*>a.Y
    cdef const floating* sw = <const floating*>a.sw
    cdef floating* Xb = <floating*>w.Xb
    cdef floating* Yb = <floating*>w.Yb
    cdef floating* swb = <floating*>w.swb
    cdef Py_ssize_t rows = w.rows
    cdef Py_ssize_t xs = a.xs
    cdef Py_ssize_t k = a.k
    cdef Py_ssize_t n_total = a.n_total
    cdef bint shuffled = a.order != NULL
    cdef double* shared = a.shared
    cdef Py_ssize_t* pool = a.pool
    cdef Py_ssize_t t = a.step[0]
    cdef Py_ssize_t start = 0
    cdef Py_ssize_t nb, nb_next, i
    cdef int par = 0
    cdef double sw_sum, batch_data
    cdef const floating* Xc
    cdef const floating* Yc
    cdef const floating* swc
    cdef floating* Xn
    cdef floating* Yn
    cdef floating* swn
    if shuffled:
        # the first batch's rows, split evenly
        nb = min(rows, n_total)
        _gather_rows(a.order, _part(nb, tid, nt), _part(nb, tid + 1, nt),
                     X, Y, sw, xs, k, Xb, Yb, swb)
        cbp_barrier()
    while start < n_total:
        nb = min(rows, n_total - start)
        nb_next = min(rows, n_total - start - nb)
        if shuffled:
            # this batch's gather slot; the next batch uses the other
            Xc = X if a.csr != NULL else Xb + par * rows * xs
            Yc = Yb + par * rows * k
            swc = swb + par * rows
            Xn = Xb + (1 - par) * rows * xs
            Yn = Yb + (1 - par) * rows * k
            swn = swb + (1 - par) * rows
        else:
            Xc = X + start * xs
            Yc = Y + start * k
            swc = sw + start
        _batch_rows(net, theta, Xc, Yc, swc, nb, start, a.csr, w, tid, nt)
        if shuffled:
            # until the last thread is done with its rows, gather the next
            # batch's into the other slot
            cbp_fetch_add(&pool[2 + par], 1)
            if nb_next > 0:
                _gather_pool(&pool[1 - par], &pool[2 + par], nt,
                             a.order + start + nb, nb_next, X, Y, sw, xs, k,
                             Xn, Yn, swn)
        cbp_barrier()
        sw_sum = 0
        batch_data = 0
        for i in range(nb):
            sw_sum = sw_sum + swc[i]
            batch_data = batch_data + w.rowloss[i]
        # batches whose weights are all zero carry no gradient: skipped
        if sw_sum > 0:
            if not isfinite(batch_data):
                if tid == 0:
                    shared[3] = _STATUS_NONFINITE_LOSS
                break
            _batch_grad(net, grad, Xc, nb, start, a.csr, w,
                        <floating>(1.0 / sw_sum), False, tid, nt)
            if opt.solver == SOLVER_ADAM:
                t = t + 1
            _batch_update(net, opt, theta, grad, s1, s2, t, a.alpha / sw_sum,
                          a.sq, tid, nt)
        if shuffled and nb_next > 0:
            # what is left of the next batch's rows
            _gather_pool(&pool[1 - par], NULL, nt, a.order + start + nb,
                         nb_next, X, Y, sw, xs, k, Xn, Yn, swn)
        if tid == 0 and start + nb < n_total and _pending_signal():
            shared[4] = 1
        cbp_barrier()
        if tid == 0:
            if sw_sum > 0:
                shared[0] += batch_data / sw_sum * nb
                shared[1] += 0.5 * a.alpha * _sum_blocks(a.sq, _n_row_blocks(net)) / sw_sum * nb
            shared[2] += nb
            a.step[0] = t
            # the counters used in this batch, used again two batches on
            # (past the next batch's barriers)
            pool[1 - par] = 0
            pool[2 + par] = 0
        start = start + nb
        par = 1 - par
        if shared[4] != 0:
            break


cdef inline void _dropout_rows_forward(const Net* net, floating* A,
                                       Py_ssize_t m, Py_ssize_t fo, int l,
                                       Py_ssize_t row) noexcept nogil:
    """Dropout of hidden layer ``l + 1`` on ``m`` rows whose first is the
    call's row ``row``: row counters ``drop_row0 + row + i``, or, with
    ``drop_pos``, ``drop_row0 + drop_pos[row + i]``."""
    cdef Py_ssize_t i
    if net.drop_pos == NULL:
        dropout_forward_i(A, m, fo, net.dropout[l], net.drop_seed,
                          net.drop_row0 + <uint64_t>row, _unit0(net, l + 1))
        return
    for i in range(m):
        dropout_forward_i(A + i * fo, 1, fo, net.dropout[l], net.drop_seed,
                          net.drop_row0 + <uint64_t>net.drop_pos[row + i],
                          _unit0(net, l + 1))


cdef inline void _dropout_rows_backward(const Net* net, floating* D,
                                        const floating* A, Py_ssize_t m,
                                        Py_ssize_t fi, int l,
                                        Py_ssize_t row) noexcept nogil:
    """The backward of :func:`_dropout_rows_forward` for hidden layer l."""
    cdef Py_ssize_t i
    if net.drop_pos == NULL:
        dropout_backward_i(D, A, m, fi, net.hidden_act,
                           <floating>net.act_param, net.dropout[l - 1],
                           net.drop_seed, net.drop_row0 + <uint64_t>row,
                           _unit0(net, l))
        return
    for i in range(m):
        dropout_backward_i(D + i * fi, A + i * fi, 1, fi, net.hidden_act,
                           <floating>net.act_param, net.dropout[l - 1],
                           net.drop_seed,
                           net.drop_row0 + <uint64_t>net.drop_pos[row + i],
                           _unit0(net, l))


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
            if X.ndim != 2 or not X.flags.c_contiguous:
                raise ValueError("X must be a C-contiguous 2-D array")
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
        self.opt.solver = solver
        self.opt.learning_rate = learning_rate
        self.opt.momentum = momentum
        self.opt.nesterov = nesterov
        self.opt.beta_1 = beta_1
        self.opt.beta_2 = beta_2
        self.opt.epsilon = epsilon
        self.opt.rho = rho
        self.opt.weight_decay = weight_decay
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
        cdef Layout w
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
        w = _layout(&self.net, &work[0], rows, a.xs, a.k)
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
        cdef const floating* X_rows
        cdef Layout w
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
        w = _layout(&self.net, &work[0], nb, xs, k)
        # the gathered rows; a sparse X is read in place through the index
        X_rows = X_p if data.sparse else <const floating*>w.Xb
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
                _batch_rows(&self.net, &theta[0], X_rows, <floating*>w.Yb, <floating*>w.swb, nb, 0, csr_p,
                            &w, tid, nt)
                cbp_barrier()
                _batch_grad(&self.net, &grad[0], X_rows, nb, 0, csr_p, &w, <floating>scale, False, tid, nt)
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
        cdef Layout w
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
        w = _layout(&self.net, &work[0], rows, xs, k)
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

    def predict(self, const floating[::1] theta, Input data,
                floating[:, ::1] out, Py_ssize_t block_rows):
        """``out = network(X)`` in blocks of ``block_rows`` rows, each block
        split over the threads. Memory beyond ``out`` is a workspace
        bounded by the block size, allocated per call (so that threads may
        predict with one network at once)."""
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
                                     &out[0, 0] + (start + r0) * k, buf0,
                                     buf1, start + r0, csr_p)
                    start = start + nb
        _team_end(&team, nt)
