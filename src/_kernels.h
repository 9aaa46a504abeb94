/* Elementwise kernels that need C's `restrict` to vectorise.
 *
 * Cython cannot mark pointers restrict, and without it gcc keeps the
 * conditional of ReLU as a branch (mispredicted half the time on random
 * signs) instead of a vector compare-and-select. Each kernel exists for
 * float (suffix _f) and double (_d); src/_core.pyx dispatches on its
 * fused `floating` type.
 */
#ifndef CBP_KERNELS_H
#define CBP_KERNELS_H

#include <stddef.h>

#define CBP_DEFINE_KERNELS(T, S)                                              \
/* Z[i, :] = max(Z[i, :] + b, 0) over n rows of m */                          \
static inline void cbp_bias_relu_##S(T *restrict Z, const T *restrict b,     \
                                     ptrdiff_t n, ptrdiff_t m) {              \
    for (ptrdiff_t i = 0; i < n; i++) {                                       \
        T *restrict z = Z + i * m;                                            \
        for (ptrdiff_t j = 0; j < m; j++) {                                   \
            T v = z[j] + b[j];                                                \
            z[j] = v > (T)0 ? v : (T)0;                                       \
        }                                                                     \
    }                                                                         \
}                                                                             \
/* D = D * relu'(A): keep D where the activation A is positive */            \
static inline void cbp_relu_backward_##S(T *restrict D, const T *restrict A, \
                                         ptrdiff_t size) {                    \
    for (ptrdiff_t i = 0; i < size; i++)                                      \
        D[i] = A[i] > (T)0 ? D[i] : (T)0;                                     \
}                                                                             \
/* D = D * (1 - A²), tanh' from its output */                                \
static inline void cbp_tanh_backward_##S(T *restrict D, const T *restrict A, \
                                         ptrdiff_t size) {                    \
    for (ptrdiff_t i = 0; i < size; i++)                                      \
        D[i] = D[i] * ((T)1 - A[i] * A[i]);                                   \
}                                                                             \
/* D = D * A (1 - A), logistic' from its output */                           \
static inline void cbp_logistic_backward_##S(T *restrict D,                  \
                                             const T *restrict A,            \
                                             ptrdiff_t size) {                \
    for (ptrdiff_t i = 0; i < size; i++)                                      \
        D[i] = D[i] * (A[i] * ((T)1 - A[i]));                                 \
}

CBP_DEFINE_KERNELS(float, f)
CBP_DEFINE_KERNELS(double, d)

#endif
