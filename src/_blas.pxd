# cython: language_level=3
"""Row-major BLAS wrappers over scipy.linalg.cython_blas.

One fused ``floating`` type, dispatching to the single or double routine.
BLAS is column-major; a row-major C-contiguous matrix is the transpose of
its column-major reading, so C = op(A) @ op(B) in row-major is computed
as Cᵀ = op(B)ᵀ @ op(A)ᵀ in column-major, by swapping the operands, m/n
and the transpose flags (the trick of sklearn/utils/_cython_blas.pyx).
All sizes are BLAS ``int``: callers check they fit before calling.
"""

from cython cimport floating
from scipy.linalg.cython_blas cimport sgemm, dgemm, saxpy, daxpy, sdot, ddot


cdef inline void gemm_rm(bint trans_a, bint trans_b, int m, int n, int k,
                         floating alpha, const floating* a, int lda,
                         const floating* b, int ldb, floating beta,
                         floating* c, int ldc) noexcept nogil:
    """Row-major ``C[m, n] = alpha * op(A) @ op(B) + beta * C``.

    op(A) is m×k and op(B) is k×n; lda, ldb, ldc are the row strides
    (number of columns of the stored, untransposed matrices).
    """
    cdef char ta = b't' if trans_a else b'n'
    cdef char tb = b't' if trans_b else b'n'
    # column-major: Cᵀ[n, m] = op(B)ᵀ[n, k] @ op(A)ᵀ[k, m]
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*>b, &ldb, <float*>a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*>b, &ldb, <double*>a, &lda,
              &beta, c, &ldc)


cdef inline void axpy(int n, floating alpha, const floating* x,
                      floating* y) noexcept nogil:
    """``y += alpha * x`` over n contiguous elements."""
    cdef int one = 1
    if floating is float:
        saxpy(&n, &alpha, <float*>x, &one, y, &one)
    else:
        daxpy(&n, &alpha, <double*>x, &one, y, &one)


cdef inline double dot(int n, const floating* x, const floating* y) noexcept nogil:
    """``x @ y`` over n contiguous elements (accumulated by BLAS)."""
    cdef int one = 1
    if floating is float:
        return sdot(&n, <float*>x, &one, <float*>y, &one)
    else:
        return ddot(&n, <double*>x, &one, <double*>y, &one)
