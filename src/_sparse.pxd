# cython: language_level=3
"""Sparse first layer: X in CSR (a ``CSR`` struct, the values passed
separately where a dense X would be), rows found through ``_csr_row``."""

from cython cimport floating

from _types cimport CSR


cdef inline Py_ssize_t _csr_row(const CSR* c, Py_ssize_t i) noexcept nogil:
    """Matrix row of the epoch's (or call's) i-th row."""
    return c.rowmap[i] if c.rowmap != NULL else i


cdef inline void csr_matmul_i(floating* A, const floating* data, const CSR* c,
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


cdef inline void csr_grad_i(floating* G, const floating* data, const CSR* c,
                            Py_ssize_t i0, Py_ssize_t nb,
                            const floating* delta, Py_ssize_t fo,
                            Py_ssize_t f0, Py_ssize_t f1, floating scale,
                            bint accumulate) noexcept nogil:
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
