# cython: language_level=3
"""Passes over a block of rows, in two phases run by every thread of a
parallel region.

Phase 1 works on the thread's own rows (forward, output delta, hidden
deltas: rows are independent), phase 2, after a barrier, on the thread's
own share of the parameters (the rows of each grad W_l and the columns of
each grad b_l, then the optimizer step on the same segments), so no two
threads ever write the same memory and no reduction depends on the
thread count. Prediction (``forward_rows``) is phase 1's forward alone.
"""

from cython cimport floating
from libc.math cimport isfinite
from libc.stdint cimport uint64_t

from _blas cimport gemm_rm, axpy, dot
from _types cimport Net, CSR, Optim, ACT_PRELU, SPLIT_QUANTUM
from _threads cimport _part, _n_quanta, _block_share, _share_rows
from _activations cimport (bias_act_i, act_backward_i, prelu_forward_i,
                           prelu_backward_i)
from _losses cimport output_delta_i, output_forward_i
from _sparse cimport csr_matmul_i, csr_grad_i
from _dropout cimport dropout_forward_i, dropout_backward_i
from _optimizers cimport step_i
from _layout cimport _at, _slope_off, _slopes, _unit0

cdef extern from "_kernels.h" nogil:
    void cbp_outer_f(float* D, const float* d, const float* w, Py_ssize_t n,
                     Py_ssize_t m)
    void cbp_outer_d(double* D, const double* d, const double* w,
                     Py_ssize_t n, Py_ssize_t m)
    void cbp_colsum_f(float* out, const float* D, Py_ssize_t n, Py_ssize_t m,
                      Py_ssize_t ld, float scale, bint accumulate)
    void cbp_colsum_d(double* out, const double* D, Py_ssize_t n,
                      Py_ssize_t m, Py_ssize_t ld, double scale,
                      bint accumulate)


cdef inline void colsum_i(floating* out, const floating* D, Py_ssize_t n,
                          Py_ssize_t m, Py_ssize_t ld, floating scale,
                          bint accumulate) noexcept nogil:
    """``out[:m] (+)= scale * D[:n, :m].sum(axis=0)`` (row stride ``ld``),
    rows summed in order (the loop is in _kernels.h)."""
    if floating is float:
        cbp_colsum_f(out, D, n, m, ld, scale, accumulate)
    else:
        cbp_colsum_d(out, D, n, m, ld, scale, accumulate)


cdef inline void _chunk_colsums(const Net* net, floating* bias_part,
                                const floating* D, Py_ssize_t r0,
                                Py_ssize_t r1, int l) noexcept nogil:
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


cdef inline void _sum_chunks(floating* out, const floating* part,
                             Py_ssize_t n_chunks, Py_ssize_t stride,
                             Py_ssize_t m, floating scale) noexcept nogil:
    """``out[:m] = scale * (part[0] + part[1] + ...)``, the ``n_chunks``
    vectors ``stride`` apart added in chunk order (a column sum of them)."""
    cdef Py_ssize_t j
    colsum_i(out, part, n_chunks, m, stride, 1, False)
    for j in range(m):
        out[j] = scale * out[j]


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


cdef inline void rows_forward_backward(
        const Net* net, const floating* theta, const floating* X,
        const floating* Y, const floating* sw, Py_ssize_t r0, Py_ssize_t r1,
        floating* acts, floating* deltas, Py_ssize_t rows, double* rowloss,
        floating* zsave, Py_ssize_t block_row=0, const CSR* csr=NULL,
        floating* bias_part=NULL) noexcept nogil:
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
                   sw + r0, m, fo, net.loss, rowloss + r0, net.loss_param)
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


cdef inline void params_grad(const Net* net, floating* grad, const floating* X,
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


cdef inline bint _all_finite(const floating* x, Py_ssize_t n) noexcept nogil:
    """Whether ``x[:n]`` holds no NaN and no infinity."""
    cdef Py_ssize_t i
    for i in range(n):
        if not isfinite(x[i]):
            return False
    return True


cdef inline void params_step(const Net* net, floating* theta,
                             const floating* grad, floating* s1, floating* s2,
                             const Optim* opt, double lr_t, double l2,
                             double* sq_q, int tid, int nt) noexcept nogil:
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


cdef inline void params_l2(const Net* net, const floating* theta,
                           floating* grad, floating coef, double* sq_q,
                           int tid, int nt) noexcept nogil:
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


cdef inline void forward_rows(const Net* net, const floating* theta,
                              const floating* X, Py_ssize_t n, floating* out,
                              floating* buf0, floating* buf1,
                              Py_ssize_t row0=0,
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
            output_forward_i(A, theta + net.offsets[L + l], n, fo, net.link)
        A_prev = A
