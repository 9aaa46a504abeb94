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
from libc.stdlib cimport calloc, free
from scipy.linalg.cython_blas cimport (sgemm, dgemm, sgemv, dgemv, saxpy,
                                       daxpy, sdot, ddot)

cdef extern from "_omp.h" nogil:
    int cbp_first_use(int which)

# The warm-up GEMM's shape (column-major M, N, K; see warm_gemm)
cdef enum:
    WARM_M = 1024
    WARM_N = 256
    WARM_K = 128


cdef inline void warm_gemm(const floating* like) noexcept nogil:
    """One GEMM of a fixed, larger shape, the first time the calling
    thread calls it in ``like``'s type; nothing after that.

    OpenBLAS's packing buffers start untouched, and a thread whose calls
    have only touched the part of its buffer that GEMMs with a short
    column-major M (the core's weight widths, 128 to 320) use runs them
    up to 3x slower (measured: sgemm 200x784 @ 784x256, 12 against 35
    GFLOP/s on an AMD EPYC VM, OpenBLAS 0.3.30/0.3.31 Haswell kernels)
    until one GEMM with M >= 384 has run in it. The fix lasts the
    thread's life; the warm-up costs about 67 MFLOP, once per thread.
    """
    cdef int which = 1 if floating is double else 0
    cdef floating* buf
    cdef floating* b
    cdef floating* c
    if not cbp_first_use(which):
        return
    buf = <floating*>calloc(WARM_K * WARM_M + WARM_K * WARM_N
                            + WARM_M * WARM_N, sizeof(floating))
    if buf == NULL:
        return
    b = buf + WARM_K * WARM_M
    c = b + WARM_K * WARM_N
    # row-major C[N, M] = B[N, K] @ A[K, M]: column-major M = WARM_M
    gemm_rm(False, False, WARM_N, WARM_M, WARM_K, 1, b, WARM_K, buf, WARM_M,
            0, c, WARM_M)
    free(buf)


cdef inline void gemm_rm(bint trans_a, bint trans_b, int m, int n, int k,
                         floating alpha, const floating* a, int lda,
                         const floating* b, int ldb, floating beta,
                         floating* c, int ldc) noexcept nogil:
    """Row-major ``C[m, n] = alpha * op(A) @ op(B) + beta * C``.

    op(A) is m×k and op(B) is k×n; lda, ldb, ldc are the row strides
    (number of columns of the stored, untransposed matrices). A single
    output column (n == 1) goes to gemv and a single inner dimension
    (k == 1, an outer product) to a plain loop: GEMM's packing costs more
    than the work there. Only n and k choose the route, never m, which
    callers split over threads.
    """
    cdef char ta = b't' if trans_a else b'n'
    cdef char tb = b't' if trans_b else b'n'
    if m <= 0 or n <= 0:
        return
    if n == 1:
        gemv_col_rm(trans_a, trans_b, m, k, alpha, a, lda, b, ldb, beta, c, ldc)
        return
    if k == 1:
        outer_rm(trans_a, trans_b, m, n, alpha, a, lda, b, ldb, beta, c, ldc)
        return
    # column-major: Cᵀ[n, m] = op(B)ᵀ[n, k] @ op(A)ᵀ[k, m]
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*>b, &ldb, <float*>a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*>b, &ldb, <double*>a, &lda,
              &beta, c, &ldc)


cdef inline void gemv_col_rm(bint trans_a, bint trans_b, int m, int k,
                             floating alpha, const floating* a, int lda,
                             const floating* b, int ldb, floating beta,
                             floating* c, int ldc) noexcept nogil:
    """``C[:, 0] = alpha * op(A) @ op(B)[:, 0] + beta * C[:, 0]`` (n == 1)."""
    # x = op(B)[:, 0]: a column of B (stride ldb), or B's one row (stride 1)
    cdef int incx = 1 if trans_b else ldb
    cdef char t
    cdef int rows, cols
    if trans_a:
        # op(A) = Aᵀ with A stored k×m: column-major m×k, ld lda
        t = b'n'
        rows = m
        cols = k
    else:
        # A stored m×k row-major is column-major k×m: y = (A_cm)ᵀ x
        t = b't'
        rows = k
        cols = m
    if floating is float:
        sgemv(&t, &rows, &cols, &alpha, <float*>a, &lda, <float*>b, &incx,
              &beta, c, &ldc)
    else:
        dgemv(&t, &rows, &cols, &alpha, <double*>a, &lda, <double*>b, &incx,
              &beta, c, &ldc)


cdef inline void outer_rm(bint trans_a, bint trans_b, int m, int n,
                          floating alpha, const floating* a, int lda,
                          const floating* b, int ldb, floating beta,
                          floating* c, int ldc) noexcept nogil:
    """``C = alpha * op(A)[:, 0] ⊗ op(B)[0, :] + beta * C`` (k == 1)."""
    cdef Py_ssize_t i, j
    cdef Py_ssize_t inca = 1 if trans_a else lda
    cdef Py_ssize_t incb = ldb if trans_b else 1
    cdef floating ai
    cdef floating* row
    for i in range(m):
        ai = alpha * a[i * inca]
        row = c + i * ldc
        if beta == 0:
            for j in range(n):
                row[j] = ai * b[j * incb]
        else:
            for j in range(n):
                row[j] = beta * row[j] + ai * b[j * incb]


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
