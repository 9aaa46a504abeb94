# cython: language_level=3
"""The structs an entry point builds from its arguments, after checking
them: the network (``_make_net``, ``_set_dropout``) and a sparse X
(``_csr_init``). These raise ValueError on bad input; nothing below them
checks again."""

from libc.stdint cimport uint64_t

from _types cimport Net, CSR, ACT_PRELU, N_ACTIVATIONS, LOSS_HUBER, INT_MAX
from _threads cimport cbp_thread_cap
from _losses cimport _output_pair, _differentiable


cdef inline Net _make_net(const int[::1] units, const Py_ssize_t[::1] offsets,
                          Py_ssize_t n_params, int hidden_act, int out_act,
                          int n_threads, double act_param=0.0,
                          double loss_param=1.0) except *:
    """Check a network's description and return its ``Net`` (pointing into
    ``units`` and ``offsets``, which the caller keeps alive); ``out_act``
    names the output's link and loss (:func:`_output_pair`)."""
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
    if not (0 <= hidden_act < N_ACTIVATIONS):
        raise ValueError(f"unknown hidden activation code {hidden_act}")
    if not (act_param >= 0):
        raise ValueError(f"the activation's slope must be >= 0, got {act_param}")
    if not _output_pair(out_act, &net.link, &net.loss):
        raise ValueError(f"unknown output activation code {out_act}")
    if not _differentiable(net.link, net.loss):
        raise ValueError(
            f"output code {out_act}: the core has no delta for link "
            f"{net.link} with loss {net.loss}")
    if net.loss == LOSS_HUBER and not (loss_param > 0):
        raise ValueError(f"Huber's threshold must be > 0, got {loss_param}")
    net.n_params = n_params
    net.units = &units[0]
    net.offsets = &offsets[0]
    net.hidden_act = hidden_act
    net.n_threads = cbp_thread_cap(max(1, n_threads))
    net.act_param = act_param
    net.loss_param = loss_param
    net.dropout = NULL
    net.drop_seed = 0
    net.drop_row0 = 0
    net.drop_pos = NULL
    return net


cdef inline void _set_dropout(Net* net, object dropout, uint64_t seed,
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


cdef inline bint _csr_init(CSR* c, object X_csr, bint dense_given) except -1:
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


cdef inline void _check_rows(Py_ssize_t rows) except *:
    if rows < 1:
        raise ValueError("block size must be >= 1")
    if rows > INT_MAX:
        raise ValueError("block size too large for 32-bit BLAS sizes")
