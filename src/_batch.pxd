# cython: language_level=3
"""The batch step, and an epoch's batches on each thread.

The batch step is phase 1 (``_batch_rows``: the thread's rows forward and
backward), a barrier, phase 2 (``_batch_grad``: the thread's share of the
gradient) and the update (``_batch_update``: the optimizer's step on the
same share). An epoch runs it per batch inside one parallel region
(``_epoch_thread``); data-parallel training runs the same functions with
the ranks' allreduce between phase 2 and the update
(``Network.batch_grad``, ``Network.step`` in ``_core.pyx``).
"""

from cython cimport floating
from libc.math cimport isfinite

from _types cimport Net, CSR, Optim, SOLVER_ADAM, _STATUS_NONFINITE_LOSS
from _threads cimport (cbp_bar, cbp_bar_wait, cbp_bar_members, cbp_bar_leave,
                       cbp_should_leave, cbp_claim, cbp_fetch_add, _part,
                       _part_q, _sum_blocks, _pending_signal)
from _optimizers cimport _adam_lr_t
from _layout cimport Areas, _gather_rows, _gather_pool
from _passes cimport rows_forward_backward, params_grad, params_step


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
    Py_ssize_t n_blocks   # their number
    Py_ssize_t* step      # Adam's update counter
    double* shared        # [0] sum_data, [1] sum_penalty, [2] rows done,
                          # [3] status, [4] stop flag
    Py_ssize_t* pool      # gather counters by batch parity (_gather_pool)
    Py_ssize_t* claims    # shares taken so far: [0] phase 1, [1] phase 2
    cbp_bar* bar          # the team's barrier


# The batch step: phase 1 (_batch_rows), a barrier, phase 2 (_batch_grad),
# the update (_batch_update). An epoch runs it per batch; data-parallel
# training runs the same three with the ranks' allreduce between phase 2
# and the update (Network.batch_grad, Network.step).

cdef inline void _batch_rows(const Net* net, const floating* theta,
                             const floating* X, const floating* Y,
                             const floating* sw, Py_ssize_t nb,
                             Py_ssize_t block_row, const CSR* csr,
                             const Areas* w, int tid,
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
                             const Areas* w, floating scale, bint accumulate,
                             int tid, int nt) noexcept nogil:
    """Phase 2, after a barrier: thread ``tid``'s share of
    ``grad (+)= scale * sum_i sw_i * d loss_i / d theta`` (no L2 term)."""
    params_grad(net, grad, X, nb, <floating*>w.acts, <floating*>w.deltas,
                w.rows, scale, accumulate, tid, nt, <floating*>w.zsave,
                block_row, csr, <const floating*>w.bias_part)


cdef inline void _batch_update(const Net* net, const Optim* opt,
                               floating* theta, const floating* grad,
                               floating* s1, floating* s2, Py_ssize_t t,
                               double l2, double* sq, int tid,
                               int nt) noexcept nogil:
    """Thread ``tid``'s share of the optimizer step, the L2 gradient
    ``l2 * W`` added on the fly; ``t`` counts Adam's updates, this one
    included. ``sq`` receives sum(W**2) before the step per block."""
    params_step(net, theta, grad, s1, s2, opt,
                _adam_lr_t(opt, t) if opt.solver == SOLVER_ADAM else 0, l2, sq,
                tid, nt)


cdef inline void _epoch_thread(const Net* net, const Optim* opt, const EpochArgs* a,
                        const Areas* w, floating* theta, floating* grad,
                        floating* s1, floating* s2, int tid,
                        int nt) noexcept nogil:
    """Thread ``tid``'s part of an epoch (see Network.epoch).

    With an order, each batch's rows are gathered into one of two slots
    (dense X; a sparse X is read in place through ``csr.rowmap``): the
    next batch's in the waits of the one before (_gather_pool). The
    ``nt`` shares of each phase are fixed (as in :func:`_part_q` and
    :func:`_block_share`), but taken first come, first served
    (``cbp_claim``): a thread the OS runs late leaves its share to one
    that is free, and no result depends on which thread computes a
    share. Every thread sums the same numbers in the same order, so all
    take the same decisions. For the same reason a thread may leave the
    team between batches (``cbp_should_leave``: one the OS keeps off its
    CPU); the others then take its shares.
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
    cdef Py_ssize_t nb, nb_next, i, s
    # shares of each phase that the batches before this one had: every
    # batch has phase 1, only the batches not skipped have phase 2
    cdef Py_ssize_t base = 0
    cdef Py_ssize_t base2 = 0
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
        cbp_bar_wait(a.bar)
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
        s = cbp_claim(&a.claims[0], base + nt)
        while s >= 0:
            _batch_rows(net, theta, Xc, Yc, swc, nb, start, a.csr, w,
                        <int>(s - base), nt)
            s = cbp_claim(&a.claims[0], base + nt)
        if shuffled:
            # until the last thread still in the team is done with its
            # rows, gather the next batch's into the other slot
            cbp_fetch_add(&pool[2 + par], 1)
            if nb_next > 0:
                _gather_pool(&pool[1 - par], &pool[2 + par],
                             cbp_bar_members(a.bar), a.order + start + nb,
                             nb_next, X, Y, sw, xs, k, Xn, Yn, swn)
        cbp_bar_wait(a.bar)
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
            if opt.solver == SOLVER_ADAM:
                t = t + 1
            # a share's gradient, then its update: the same parameters
            s = cbp_claim(&a.claims[1], base2 + nt)
            while s >= 0:
                _batch_grad(net, grad, Xc, nb, start, a.csr, w,
                            <floating>(1.0 / sw_sum), False, <int>(s - base2),
                            nt)
                _batch_update(net, opt, theta, grad, s1, s2, t,
                              a.alpha / sw_sum, a.sq, <int>(s - base2), nt)
                s = cbp_claim(&a.claims[1], base2 + nt)
            base2 = base2 + nt
        if shuffled and nb_next > 0:
            # what is left of the next batch's rows
            _gather_pool(&pool[1 - par], NULL, nt, a.order + start + nb,
                         nb_next, X, Y, sw, xs, k, Xn, Yn, swn)
        if tid == 0 and start + nb < n_total and _pending_signal():
            shared[4] = 1
        cbp_bar_wait(a.bar)
        if tid == 0:
            if sw_sum > 0:
                shared[0] += batch_data / sw_sum * nb
                shared[1] += 0.5 * a.alpha * _sum_blocks(a.sq, a.n_blocks) / sw_sum * nb
            shared[2] += nb
            a.step[0] = t
            # the counters used in this batch, used again two batches on
            # (past the next batch's barriers)
            pool[1 - par] = 0
            pool[2 + par] = 0
        start = start + nb
        base = base + nt
        par = 1 - par
        if shared[4] != 0:
            break
        # base // nt: the batches done
        if (start < n_total and cbp_should_leave(tid, nt, base // nt)
                and cbp_bar_leave(a.bar)):
            break
