# cython: language_level=3
"""Optimizer steps: one fused pass over a segment of the flat vectors.

``l2`` adds the L2 gradient ``l2 * theta`` (weights only) on the fly;
``decay`` is the decoupled weight decay's ``lr * weight_decay``. An
``Optim`` holds a solver's settings (:func:`_optim_init`); Adam's
bias-corrected rate comes from :func:`_adam_lr_t`.
"""

from cython cimport floating
from libc.math cimport sqrt, pow

from _types cimport Optim, SOLVER_ADAM, SOLVER_RMSPROP

cdef extern from "_kernels.h" nogil:
    void cbp_adam_f(float* theta, const float* g, float* m, float* v,
                    Py_ssize_t n, float lr_t, float beta_1, float beta_2,
                    float epsilon, float l2, float decay, float c1, float c2)
    void cbp_adam_d(double* theta, const double* g, double* m, double* v,
                    Py_ssize_t n, double lr_t, double beta_1, double beta_2,
                    double epsilon, double l2, double decay, double c1,
                    double c2)
    void cbp_rmsprop_f(float* theta, const float* g, float* v, Py_ssize_t n,
                       float lr, float rho, float epsilon, float l2,
                       float decay, float c)
    void cbp_rmsprop_d(double* theta, const double* g, double* v,
                       Py_ssize_t n, double lr, double rho, double epsilon,
                       double l2, double decay, double c)


cdef inline void _optim_init(Optim* opt, int solver, double learning_rate,
                             double momentum, bint nesterov, double beta_1,
                             double beta_2, double epsilon, double rho,
                             double weight_decay) noexcept nogil:
    """Fill ``opt`` with a solver's settings (the entry points check them:
    each accepts its own set of solvers)."""
    opt.solver = solver
    opt.learning_rate = learning_rate
    opt.momentum = momentum
    opt.nesterov = nesterov
    opt.beta_1 = beta_1
    opt.beta_2 = beta_2
    opt.epsilon = epsilon
    opt.rho = rho
    opt.weight_decay = weight_decay


cdef inline double _adam_lr_t(const Optim* opt, Py_ssize_t t) noexcept nogil:
    """Adam's rate at step ``t`` (from 1), the bias corrections of both
    moments folded in: ``lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)``."""
    return (opt.learning_rate * sqrt(1 - pow(opt.beta_2, t))
            / (1 - pow(opt.beta_1, t)))


cdef inline void sgd_step_i(floating* theta, const floating* g,
                            floating* velocity, Py_ssize_t n, floating lr,
                            floating momentum, bint nesterov, floating l2,
                            floating decay) noexcept nogil:
    """``velocity = momentum * velocity - lr * g``; ``theta += velocity``
    (Nesterov: ``theta += momentum * velocity - lr * g``); with decoupled
    weight decay, ``theta -= decay * theta`` too (theta before the step)."""
    cdef Py_ssize_t i
    cdef floating v, gi
    if decay != 0:
        for i in range(n):
            gi = g[i] + l2 * theta[i]
            v = momentum * velocity[i] - lr * gi
            velocity[i] = v
            if nesterov:
                theta[i] += momentum * v - lr * gi - decay * theta[i]
            else:
                theta[i] += v - decay * theta[i]
        return
    if nesterov:
        for i in range(n):
            gi = g[i] + l2 * theta[i]
            v = momentum * velocity[i] - lr * gi
            velocity[i] = v
            theta[i] += momentum * v - lr * gi
    else:
        for i in range(n):
            gi = g[i] + l2 * theta[i]
            v = momentum * velocity[i] - lr * gi
            velocity[i] = v
            theta[i] += v


cdef inline void adam_step_i(floating* theta, const floating* g, floating* m,
                             floating* v, Py_ssize_t n, floating lr_t,
                             floating beta_1, floating beta_2,
                             floating epsilon, floating l2,
                             floating decay) noexcept nogil:
    """``m = beta_1 m + (1 - beta_1) g``; ``v = beta_2 v + (1 - beta_2) g²``;
    ``theta -= lr_t * m / (sqrt(v) + epsilon)``, with the bias corrections
    folded into ``lr_t = lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)``; with
    decoupled weight decay (AdamW), ``theta -= decay * theta`` too."""
    # the loop is in _kernels.h (cbp_adam_*): restrict pointers, and an AVX2
    # copy chosen at run time
    cdef floating c1 = 1 - beta_1
    cdef floating c2 = 1 - beta_2
    if floating is float:
        cbp_adam_f(theta, g, m, v, n, lr_t, beta_1, beta_2, epsilon, l2,
                   decay, c1, c2)
    else:
        cbp_adam_d(theta, g, m, v, n, lr_t, beta_1, beta_2, epsilon, l2,
                   decay, c1, c2)


cdef inline void rmsprop_step_i(floating* theta, const floating* g,
                                floating* v, Py_ssize_t n, floating lr,
                                floating rho, floating epsilon, floating l2,
                                floating decay) noexcept nogil:
    """``v = rho v + (1 - rho) g²``; ``theta -= lr * g / (sqrt(v) + epsilon)``
    (and ``theta -= decay * theta`` with decoupled weight decay)."""
    # the loop is in _kernels.h (cbp_rmsprop_*), as Adam's
    cdef floating c = 1 - rho
    if floating is float:
        cbp_rmsprop_f(theta, g, v, n, lr, rho, epsilon, l2, decay, c)
    else:
        cbp_rmsprop_d(theta, g, v, n, lr, rho, epsilon, l2, decay, c)


cdef inline void step_i(const Optim* opt, floating* theta, const floating* g,
                        floating* s1, floating* s2, Py_ssize_t n, double lr_t,
                        double l2, double decay) noexcept nogil:
    """One solver's step over n parameters; ``decay`` is the decoupled
    weight decay's ``lr * weight_decay`` (0 for biases and slopes)."""
    if opt.solver == SOLVER_ADAM:
        adam_step_i(theta, g, s1, s2, n, <floating>lr_t, <floating>opt.beta_1,
                    <floating>opt.beta_2, <floating>opt.epsilon, <floating>l2,
                    <floating>decay)
    elif opt.solver == SOLVER_RMSPROP:
        rmsprop_step_i(theta, g, s1, n, <floating>opt.learning_rate,
                       <floating>opt.rho, <floating>opt.epsilon, <floating>l2,
                       <floating>decay)
    else:
        sgd_step_i(theta, g, s1, n, <floating>opt.learning_rate,
                   <floating>opt.momentum, opt.nesterov, <floating>l2,
                   <floating>decay)
