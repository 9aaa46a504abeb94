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

#include <math.h>
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

/* Adam's step over n parameters (see adam_step_i in _core.pyx):
 *   g = grad + l2 * theta; m = beta_1 m + c1 g; v = beta_2 v + c2 g^2;
 *   theta += (-lr_t * m) / (sqrt(v) + epsilon) - decay * theta.
 * The division and the square root, not memory, bound this loop; on x86
 * a copy compiled for AVX (8 floats or 4 doubles per instruction, twice
 * the baseline's SSE2) is chosen at run time where the CPU has it. The
 * copy is compiled without FMA, so both copies round every operation the
 * same way and give the same bits.
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

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__) \
    && !defined(__AVX__)
#define CBP_ADAM_DISPATCH 1
#endif

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

#define CBP_DEFINE_ADAM(T, S, SQRT)                                           \
static void cbp_adam_base_##S(CBP_ADAM_ARGS(T)) { CBP_ADAM_BODY(T, SQRT) }   \
static void cbp_rmsprop_base_##S(CBP_RMSPROP_ARGS(T)) {                      \
    CBP_RMSPROP_BODY(T, SQRT) }
CBP_DEFINE_ADAM(float, f, sqrtf)
CBP_DEFINE_ADAM(double, d, sqrt)

#ifdef CBP_ADAM_DISPATCH
#define CBP_DEFINE_ADAM_AVX(T, S, SQRT)                                       \
__attribute__((target("avx")))                                                \
static void cbp_adam_avx_##S(CBP_ADAM_ARGS(T)) { CBP_ADAM_BODY(T, SQRT) }    \
__attribute__((target("avx")))                                                \
static void cbp_rmsprop_avx_##S(CBP_RMSPROP_ARGS(T)) {                       \
    CBP_RMSPROP_BODY(T, SQRT) }
CBP_DEFINE_ADAM_AVX(float, f, sqrtf)
CBP_DEFINE_ADAM_AVX(double, d, sqrt)
static int cbp_cpu_avx = -1;
static inline int cbp_has_avx(void) {
    if (cbp_cpu_avx < 0) {
        __builtin_cpu_init();
        cbp_cpu_avx = __builtin_cpu_supports("avx") ? 1 : 0;
    }
    return cbp_cpu_avx;
}
#define CBP_PICK(K, S) (cbp_has_avx() ? cbp_##K##_avx_##S : cbp_##K##_base_##S)
#else
#define CBP_PICK(K, S) cbp_##K##_base_##S
#endif

static inline void cbp_adam_f(CBP_ADAM_ARGS(float)) {
    CBP_PICK(adam, f)(theta, g, m, v, n, lr_t, beta_1, beta_2, epsilon, l2,
                     decay, c1, c2);
}
static inline void cbp_adam_d(CBP_ADAM_ARGS(double)) {
    CBP_PICK(adam, d)(theta, g, m, v, n, lr_t, beta_1, beta_2, epsilon, l2,
                     decay, c1, c2);
}

static inline void cbp_rmsprop_f(CBP_RMSPROP_ARGS(float)) {
    CBP_PICK(rmsprop, f)(theta, g, v, n, lr, rho, epsilon, l2, decay, c);
}
static inline void cbp_rmsprop_d(CBP_RMSPROP_ARGS(double)) {
    CBP_PICK(rmsprop, d)(theta, g, v, n, lr, rho, epsilon, l2, decay, c);
}

#endif
