/* Loops that need C's `restrict` to vectorise, and an AVX2 copy of each.
 *
 * Cython cannot mark pointers restrict, and without it gcc keeps the
 * conditional of ReLU as a branch (mispredicted half the time on random
 * signs) instead of a vector compare-and-select, and checks at run time
 * whether a column sum's output overlaps its input. Each kernel exists for
 * float (suffix _f) and double (_d); src/_core.pyx dispatches on its
 * fused `floating` type.
 *
 * On x86 the package is built for the baseline instruction set (SSE2, 2
 * doubles or 4 floats per instruction), so every kernel is also compiled
 * for AVX2 (twice as wide, 64-bit integer lanes too, which exp's 2^k
 * needs) and the copy to call is chosen at run time from the CPU. The
 * AVX2 copies are compiled without FMA: both copies round every operation
 * the same way and give the same bits, and no loop below reorders a sum (a
 * column sum adds the rows in order, a vector holding neighbouring
 * columns).
 */
#ifndef CBP_KERNELS_H
#define CBP_KERNELS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__) \
    && !defined(__AVX2__)
#define CBP_AVX2_DISPATCH 1
#endif

/* exp(x) for x <= 0 (or NaN), the softmax's exponentials of z - max(z).
 * Cephes' exp: x = k ln2 + r with |r| <= ln2 / 2 (k rounded with the
 * 1.5 * 2^52 trick, ln2 in two parts), exp(r) = 1 + 2 r P(r²) / (Q(r²) -
 * r P(r²)), times 2^k built in the exponent bits. Within 2 ulp of glibc's
 * exp; 0 below -708.39 (where 2^k would be subnormal) and NaN for NaN.
 * Straight-line code, so that gcc vectorises the loops that call it
 * (with -fno-trapping-math: the select below); the same operations in
 * every copy, so the same bits. */
static inline double cbp_exp_nonpos(double x) {
    const double P0 = 1.26177193074810590878e-4;
    const double P1 = 3.02994407707441961300e-2;
    const double P2 = 9.99999999999999999910e-1;
    const double Q0 = 3.00198505138664455042e-6;
    const double Q1 = 2.52448340349684104192e-3;
    const double Q2 = 2.27265548208155028766e-1;
    const double Q3 = 2.00000000000000000009e0;
    const double C1 = 6.93145751953125e-1;      /* ln2 = C1 + C2 */
    const double C2 = 1.42860682030941723212e-6;
    const double shift = 6755399441055744.0;    /* 1.5 * 2^52 */
    double kd = x * 1.4426950408889634 + shift;  /* k in the low bits */
    double k = kd - shift;
    double r = x - k * C1;
    r = r - k * C2;
    double rr = r * r;
    double px = r * ((P0 * rr + P1) * rr + P2);
    double qx = ((Q0 * rr + Q1) * rr + Q2) * rr + Q3;
    double e = 1.0 + 2.0 * (px / (qx - px));
    union { double d; int64_t i; } u;
    u.d = kd;
    u.i = (u.i - 0x4338000000000000LL + 1023) << 52;   /* 2^k */
    e = e * u.d;
    return x < -708.39 ? 0.0 : e;
}

/* The elementwise kernels, copy V (base or avx2) of type T (suffix S). */
#define CBP_DEFINE_KERNELS(T, S, V, ATTR)                                     \
/* Z[i, :] = max(Z[i, :] + b, 0) over n rows of m, NaN staying NaN as in   \
 * numpy's maximum: `0 > v` is false for NaN, so v passes (the operand      \
 * order of _mm256_max_ps(0, v)); `+ 0` turns -0 into +0, the bits of       \
 * `v > 0 ? v : 0` for every other v. As fast: compare, and, add. */         \
ATTR static void cbp_bias_relu_##V##_##S(T *restrict Z, const T *restrict b, \
                                         ptrdiff_t n, ptrdiff_t m) {          \
    for (ptrdiff_t i = 0; i < n; i++) {                                       \
        T *restrict z = Z + i * m;                                            \
        for (ptrdiff_t j = 0; j < m; j++) {                                   \
            T v = z[j] + b[j];                                                \
            z[j] = ((T)0 > v ? (T)0 : v) + (T)0;                              \
        }                                                                     \
    }                                                                         \
}                                                                             \
/* z[:k] = exp(z[:k] - mx), mx = max(z) (the softmax's exponentials) */     \
ATTR static void cbp_softmax_exp_##V##_##S(T *restrict z, ptrdiff_t k,      \
                                           T mx) {                            \
    for (ptrdiff_t j = 0; j < k; j++)                                         \
        z[j] = (T)cbp_exp_nonpos((double)(z[j] - mx));                        \
}                                                                             \
/* D = D * relu'(A): keep D where the activation A is positive; elsewhere   \
 * A - A, +0 for the ReLU's other outputs (+0 or -0) and NaN for NaN: a     \
 * NaN activation gives a NaN delta, not 0 */                                \
ATTR static void cbp_relu_backward_##V##_##S(T *restrict D,                  \
                                             const T *restrict A,            \
                                             ptrdiff_t size) {                \
    for (ptrdiff_t i = 0; i < size; i++)                                      \
        D[i] = A[i] > (T)0 ? D[i] : A[i] - A[i];                              \
}                                                                             \
/* D = D * (1 - A²), tanh' from its output */                                \
ATTR static void cbp_tanh_backward_##V##_##S(T *restrict D,                  \
                                             const T *restrict A,            \
                                             ptrdiff_t size) {                \
    for (ptrdiff_t i = 0; i < size; i++)                                      \
        D[i] = D[i] * ((T)1 - A[i] * A[i]);                                   \
}                                                                             \
/* D = D * A (1 - A), logistic' from its output */                           \
ATTR static void cbp_logistic_backward_##V##_##S(T *restrict D,              \
                                                 const T *restrict A,        \
                                                 ptrdiff_t size) {            \
    for (ptrdiff_t i = 0; i < size; i++)                                      \
        D[i] = D[i] * (A[i] * ((T)1 - A[i]));                                 \
}                                                                             \
/* D[i, :m] = d[i] * w over n rows: a product of one column by one row,  \
 * which a GEMM call would compute after clearing D (the same products) */ \
ATTR static void cbp_outer_##V##_##S(T *restrict D, const T *restrict d,     \
                                     const T *restrict w, ptrdiff_t n,        \
                                     ptrdiff_t m) {                           \
    for (ptrdiff_t i = 0; i < n; i++) {                                       \
        T *restrict row = D + i * m;                                          \
        for (ptrdiff_t j = 0; j < m; j++)                                     \
            row[j] = d[i] * w[j];                                             \
    }                                                                         \
}                                                                             \
/* out[:m] (+)= sum over the n rows, in order, of scale * D[i, :m] (row      \
 * stride ld) */                                                             \
ATTR static void cbp_colsum_##V##_##S(T *restrict out, const T *restrict D,  \
                                      ptrdiff_t n, ptrdiff_t m, ptrdiff_t ld, \
                                      T scale, int accumulate) {              \
    if (!accumulate)                                                          \
        for (ptrdiff_t j = 0; j < m; j++)                                     \
            out[j] = (T)0;                                                    \
    for (ptrdiff_t i = 0; i < n; i++) {                                       \
        const T *restrict d = D + i * ld;                                     \
        for (ptrdiff_t j = 0; j < m; j++)                                     \
            out[j] += scale * d[j];                                           \
    }                                                                         \
}

/* Adam's step over n parameters (see adam_step_i in _core.pyx):
 *   g = grad + l2 * theta; m = beta_1 m + c1 g; v = beta_2 v + c2 g^2;
 *   theta += (-lr_t * m) / (sqrt(v) + epsilon) - decay * theta.
 * The division and the square root, not memory, bound this loop.
 */
#define CBP_ADAM_LOOP(T, SQRT, DECAY_TERM)                                   \
    for (ptrdiff_t i = 0; i < n; i++) {                                       \
        T gi = g[i] + l2 * theta[i];                                          \
        T mi = beta_1 * m[i] + c1 * gi;                                       \
        T vi = beta_2 * v[i] + c2 * (gi * gi);                                \
        m[i] = mi;                                                            \
        v[i] = vi;                                                            \
        theta[i] += (-lr_t * mi) / (SQRT(vi) + epsilon) DECAY_TERM;           \
    }
/* without weight decay the loop has no decay term at all (not "- 0 * theta") */
#define CBP_ADAM_BODY(T, SQRT)                                                \
    if (decay != 0) {                                                         \
        CBP_ADAM_LOOP(T, SQRT, - decay * theta[i])                            \
    } else {                                                                  \
        CBP_ADAM_LOOP(T, SQRT, )                                              \
    }

#define CBP_ADAM_ARGS(T)                                                      \
    T *restrict theta, const T *restrict g, T *restrict m, T *restrict v,     \
    ptrdiff_t n, T lr_t, T beta_1, T beta_2, T epsilon, T l2, T decay,       \
    T c1, T c2

/* RMSprop's step, bound the same way (see rmsprop_step_i in _core.pyx):
 *   g = grad + l2 * theta; v = rho v + c g^2;
 *   theta += (-lr * g) / (sqrt(v) + epsilon) - decay * theta. */
#define CBP_RMSPROP_BODY(T, SQRT)                                             \
    for (ptrdiff_t i = 0; i < n; i++) {                                       \
        T gi = g[i] + l2 * theta[i];                                          \
        T vi = rho * v[i] + c * (gi * gi);                                    \
        v[i] = vi;                                                            \
        theta[i] += (-lr * gi) / (SQRT(vi) + epsilon) - decay * theta[i];     \
    }

#define CBP_RMSPROP_ARGS(T)                                                   \
    T *restrict theta, const T *restrict g, T *restrict v, ptrdiff_t n,       \
    T lr, T rho, T epsilon, T l2, T decay, T c

#define CBP_DEFINE_STEPS(T, S, V, ATTR, SQRT)                                 \
ATTR static void cbp_adam_##V##_##S(CBP_ADAM_ARGS(T)) {                      \
    CBP_ADAM_BODY(T, SQRT) }                                                  \
ATTR static void cbp_rmsprop_##V##_##S(CBP_RMSPROP_ARGS(T)) {                \
    CBP_RMSPROP_BODY(T, SQRT) }

CBP_DEFINE_KERNELS(float, f, base, )
CBP_DEFINE_KERNELS(double, d, base, )
CBP_DEFINE_STEPS(float, f, base, , sqrtf)
CBP_DEFINE_STEPS(double, d, base, , sqrt)

#ifdef CBP_AVX2_DISPATCH
#define CBP_AVX2 __attribute__((target("avx2")))
CBP_DEFINE_KERNELS(float, f, avx2, CBP_AVX2)
CBP_DEFINE_KERNELS(double, d, avx2, CBP_AVX2)
CBP_DEFINE_STEPS(float, f, avx2, CBP_AVX2, sqrtf)
CBP_DEFINE_STEPS(double, d, avx2, CBP_AVX2, sqrt)
static int cbp_cpu_avx2 = -1;
static inline int cbp_has_avx2(void) {
    if (cbp_cpu_avx2 < 0) {
        __builtin_cpu_init();
        cbp_cpu_avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
    }
    return cbp_cpu_avx2;
}
#define CBP_PICK(K, S)                                                        \
    (cbp_has_avx2() ? cbp_##K##_avx2_##S : cbp_##K##_base_##S)
#else
#define CBP_PICK(K, S) cbp_##K##_base_##S
#endif

/* The entry points _core.pyx calls: each calls the copy for this CPU. */
#define CBP_DEFINE_ENTRIES(T, S)                                              \
static inline void cbp_bias_relu_##S(T *Z, const T *b, ptrdiff_t n,          \
                                     ptrdiff_t m) {                           \
    CBP_PICK(bias_relu, S)(Z, b, n, m);                                       \
}                                                                             \
static inline void cbp_softmax_exp_##S(T *z, ptrdiff_t k, T mx) {          \
    CBP_PICK(softmax_exp, S)(z, k, mx);                                       \
}                                                                             \
static inline void cbp_relu_backward_##S(T *D, const T *A, ptrdiff_t size) { \
    CBP_PICK(relu_backward, S)(D, A, size);                                   \
}                                                                             \
static inline void cbp_tanh_backward_##S(T *D, const T *A, ptrdiff_t size) { \
    CBP_PICK(tanh_backward, S)(D, A, size);                                   \
}                                                                             \
static inline void cbp_logistic_backward_##S(T *D, const T *A,               \
                                             ptrdiff_t size) {                \
    CBP_PICK(logistic_backward, S)(D, A, size);                               \
}                                                                             \
static inline void cbp_outer_##S(T *D, const T *d, const T *w, ptrdiff_t n, \
                                 ptrdiff_t m) {                               \
    CBP_PICK(outer, S)(D, d, w, n, m);                                        \
}                                                                             \
static inline void cbp_colsum_##S(T *out, const T *D, ptrdiff_t n,           \
                                  ptrdiff_t m, ptrdiff_t ld, T scale,         \
                                  int accumulate) {                           \
    CBP_PICK(colsum, S)(out, D, n, m, ld, scale, accumulate);                 \
}                                                                             \
static inline void cbp_adam_##S(CBP_ADAM_ARGS(T)) {                          \
    CBP_PICK(adam, S)(theta, g, m, v, n, lr_t, beta_1, beta_2, epsilon, l2,  \
                      decay, c1, c2);                                         \
}                                                                             \
static inline void cbp_rmsprop_##S(CBP_RMSPROP_ARGS(T)) {                    \
    CBP_PICK(rmsprop, S)(theta, g, v, n, lr, rho, epsilon, l2, decay, c);    \
}
CBP_DEFINE_ENTRIES(float, f)
CBP_DEFINE_ENTRIES(double, d)

#endif
