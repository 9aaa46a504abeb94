# cython: language_level=3
"""Thread teams and the split of the work between their threads.

The core runs every parallel region with teams of exactly the size it
split the work for (``_team_begin``/``_team_end``, ``cbp_full_team``) and
cuts rows and parameters so that no result depends on the thread count:
phase-1 row shares start at multiples of SPLIT_QUANTUM (``_part_q``),
phase-2 shares are whole SPLIT_QUANTUM-row blocks of the weight matrices
(``_block_share``), and sums over blocks are made in index order
(``_sum_blocks``). Pending signals are checked between batches. Shares
go to whichever thread claims them first (``cbp_claim``), so a thread may
also leave an epoch's team between batches (``cbp_bar_leave``) without
changing a result.
"""

from _types cimport Net, Team, SPLIT_QUANTUM

cdef extern from "_omp.h" nogil:
    int cbp_max_threads()
    int cbp_has_openmp()
    int cbp_full_team(int nt, int* short_team)
    int cbp_thread_cap(int n)
    int cbp_watch_fork()
    int cbp_in_forked_child()
    int cbp_set_cpu_override(int n)
    int cbp_cpu_count()
    int cbp_dynamic_off()
    void cbp_dynamic_restore(int d)
    Py_ssize_t cbp_fetch_add(Py_ssize_t* p, Py_ssize_t v)
    Py_ssize_t cbp_atomic_read(const Py_ssize_t* p)
    Py_ssize_t cbp_claim(Py_ssize_t* p, Py_ssize_t limit)
    ctypedef struct cbp_bar:
        pass
    void cbp_bar_init(cbp_bar* b, int n)
    void cbp_bar_wait(cbp_bar* b)
    int cbp_bar_members(cbp_bar* b)
    int cbp_bar_leave(cbp_bar* b)
    long long cbp_set_spin_ns(long long ns)
    int cbp_should_leave(int tid, int nt, long long batches)
    long long cbp_set_leave_after(long long n)
    long long cbp_departure_count()

cdef extern from "Python.h":
    # declared without an exception value: the caller decides what to do
    # with a pending exception (see _raise_pending)
    int _check_signals "PyErr_CheckSignals" () nogil


cdef inline void _team_begin(Team* team) noexcept nogil:
    """Before a region: dynamic teams off (the work is split for exactly
    ``nt`` threads), the short-team flag cleared."""
    team.short_team = 0
    team.dynamic = cbp_dynamic_off()


cdef inline int _team_end(Team* team, int nt) except -1:
    """After a region: restore the caller's dynamic setting; raise if the
    team was short (its threads then computed nothing, see cbp_full_team)."""
    cbp_dynamic_restore(team.dynamic)
    if team.short_team:
        raise RuntimeError(
            f"OpenMP started fewer threads than the {nt} asked for; "
            "nothing was computed. Lower n_jobs.")
    return 0


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


cdef inline Py_ssize_t _share_capacity(Py_ssize_t rows, int nt) noexcept nogil:
    """Most rows any thread's share (``_part_q``) of ``rows`` can hold."""
    cdef Py_ssize_t nq = _n_quanta(rows)
    return min(rows, ((nq + nt - 1) // nt) * SPLIT_QUANTUM)


cdef inline Py_ssize_t _n_row_blocks(const Net* net) noexcept nogil:
    """Number of SPLIT_QUANTUM-row blocks of all weight matrices together."""
    cdef Py_ssize_t total = 0
    cdef int l
    for l in range(net.n_layers):
        total += _n_quanta(net.units[l])
    return total


cdef inline Py_ssize_t _block_share(const Net* net, int tid,
                                    int nt) noexcept nogil:
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


cdef inline double _sum_blocks(const double* sq_q,
                               Py_ssize_t n) noexcept nogil:
    """``sum(sq_q[:n])`` in index order (the same bits for any thread count)."""
    cdef double total = 0
    cdef Py_ssize_t j
    for j in range(n):
        total += sq_q[j]
    return total


cdef inline int _pending_signal() noexcept nogil:
    """True when a signal handler raised (the exception is left pending)."""
    with gil:
        return _check_signals() != 0


cdef inline int _raise_pending() except -1:
    """Propagate the exception that a signal handler left pending."""
    return -1
