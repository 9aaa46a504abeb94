# cython: language_level=3
"""Where things lie: the layers' blocks in the workspace and the PReLU
slopes in theta, the workspace's areas, and the gather of a shuffled
batch's rows into its slots.

Workspace for blocks of ``rows`` rows: A_1..A_L (the activations; the
output delta overwrites A_L), D_1..D_{L-1} (hidden deltas), the gather
buffers of a shuffled batch (X, Y, sw) and one double per row for the
per-row losses (see ``train_workspace_size`` in ``_core.pyx``).
"""

from cython cimport floating
from libc.stdint cimport uint64_t
from libc.string cimport memcpy

from _types cimport Net
from _threads cimport cbp_atomic_read, cbp_fetch_add


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


cdef inline double* _rowloss_area(floating* work,
                                  Py_ssize_t used) noexcept nogil:
    """The double-aligned area after ``used`` elements of the workspace."""
    cdef size_t addr = <size_t>(work + used)
    addr = (addr + 7) & ~(<size_t>7)
    return <double*>addr


cdef inline double* _train_layout(const Net* net, floating* work,
                                  Py_ssize_t rows, Py_ssize_t xs, Py_ssize_t k,
                                  floating** deltas, floating** Xb,
                                  floating** Yb,
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


cdef inline void* _zsave_area(const Net* net, double* rowloss,
                              Py_ssize_t rows) noexcept nogil:
    """PReLU's pre-activation area (rows × hidden units), after the
    per-row losses; NULL for other activations."""
    if net.slope_offset < 0:
        return NULL
    return <void*>(rowloss + rows)


cdef inline floating* _bias_part_area(
        const Net* net, double* rowloss, floating* zsave,
        Py_ssize_t rows) noexcept nogil:
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


cdef inline void _gather_pool(Py_ssize_t* claimed, const Py_ssize_t* arrived,
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


cdef struct Areas:
    # The training workspace's areas for batches of ``rows`` rows (see
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


cdef inline Areas _areas(const Net* net, floating* work, Py_ssize_t rows,
                    Py_ssize_t xs, Py_ssize_t k) noexcept nogil:
    """The training workspace ``work`` laid out for ``rows`` rows."""
    cdef Areas w
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
