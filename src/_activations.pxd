# cython: language_level=3
"""Hidden-layer activations: each one's forward ``f(v)`` and derivative
written once, as scalar functions, and the elementwise kernels over a
block of rows that call them.

A derivative is taken from the stored activation ``a = f(v)``, not from
``v`` (the forward pass overwrites ``v``): leaky_relu's branch is the
sign of ``a`` (``slope >= 0``), elu's ``f'(v) = a + 1`` where ``a <= 0``,
softplus's ``f'(v) = 1 - exp(-a)``. PReLU keeps ``v`` (a learned slope may
reach 0 or turn negative) and has its own kernels.

The plain backward pass (``act_backward_i``) and the dropout one
(``_act_deriv``, from ``_dropout.pxd``) use the same derivatives; relu,
tanh and logistic also have vectorised copies in ``_kernels.h`` (restrict
pointers, AVX2 chosen at run time) that the plain passes call.
"""

from cython cimport floating

from _types cimport (ACT_LOGISTIC, ACT_TANH, ACT_RELU, ACT_LEAKY_RELU,
                     ACT_ELU, ACT_SOFTPLUS)
from _scalar cimport _tanh, _expm1, _softplus, _logistic

cdef extern from "_kernels.h" nogil:
    void cbp_bias_relu_f(float* Z, const float* b, Py_ssize_t n, Py_ssize_t m)
    void cbp_bias_relu_d(double* Z, const double* b, Py_ssize_t n, Py_ssize_t m)
    void cbp_relu_backward_f(float* D, const float* A, Py_ssize_t size)
    void cbp_relu_backward_d(double* D, const double* A, Py_ssize_t size)
    void cbp_tanh_backward_f(float* D, const float* A, Py_ssize_t size)
    void cbp_tanh_backward_d(double* D, const double* A, Py_ssize_t size)
    void cbp_logistic_backward_f(float* D, const float* A, Py_ssize_t size)
    void cbp_logistic_backward_d(double* D, const double* A, Py_ssize_t size)


# --------------------------------------------------------------------------
# One function per activation and quantity. The derivatives of a NaN
# activation are NaN: relu's and leaky_relu's branches would give a
# finite one, hiding the NaN from the layers below.
#
# The derivatives are returned in double, unrounded: Cython's literals are
# C doubles, so a float's ``a + 1`` (elu) or ``1 - a * a`` (tanh) is a
# double. The plain backward pass multiplies elu's into the delta as it is
# (one rounding of the product); the dropout pass rounds each derivative
# to the activation's type first (``_act_deriv``). No conditional
# expressions here: Cython would hold their value in a temporary of the
# operands' type, rounding it.


cdef inline floating _leaky_relu(floating v, floating slope) noexcept nogil:
    return v if v > 0 else slope * v


cdef inline floating _elu(floating v) noexcept nogil:
    return v if v > 0 else _expm1(v)


cdef inline double _d_relu(floating a) noexcept nogil:
    if a > 0:
        return 1
    if a == a:
        return 0
    return a


cdef inline double _d_tanh(floating a) noexcept nogil:
    return 1 - a * a


cdef inline double _d_logistic(floating a) noexcept nogil:
    return a * (1 - a)


cdef inline double _d_leaky_relu(floating a, floating slope) noexcept nogil:
    if a > 0:
        return 1
    if a == a:
        return slope
    return a


cdef inline double _d_elu(floating a) noexcept nogil:
    if a > 0:
        return 1
    return a + 1


cdef inline double _d_softplus(floating a) noexcept nogil:
    return -_expm1(-a)


cdef inline floating _act_deriv(int act, floating a,
                                floating slope) noexcept nogil:
    """``f'(z)`` from the activation ``a = f(z)`` (not PReLU), in the
    activation's type."""
    if act == ACT_RELU:
        return _d_relu(a)
    if act == ACT_TANH:
        return _d_tanh(a)
    if act == ACT_LOGISTIC:
        return _d_logistic(a)
    if act == ACT_LEAKY_RELU:
        return _d_leaky_relu(a, slope)
    if act == ACT_ELU:
        return _d_elu(a)
    if act == ACT_SOFTPLUS:
        return _d_softplus(a)
    return 1


# --------------------------------------------------------------------------
# Elementwise kernels. Each is one serial pass over a C-contiguous n × m
# block of rows; the threads are the caller's (each works on its own rows).


cdef inline void bias_act_i(floating* Z, const floating* b, Py_ssize_t n,
                            Py_ssize_t m, int act,
                            floating slope) noexcept nogil:
    """Hidden layer, in place: ``Z = f(Z + b)``; ``slope`` is leaky_relu's
    (PReLU has its own kernel, :func:`prelu_forward_i`)."""
    cdef Py_ssize_t i, j
    cdef floating* z
    if act == ACT_RELU:
        if floating is float:
            cbp_bias_relu_f(Z, b, n, m)
        else:
            cbp_bias_relu_d(Z, b, n, m)
    elif act == ACT_TANH:
        for i in range(n):
            z = Z + i * m
            for j in range(m):
                z[j] = _tanh(z[j] + b[j])
    elif act == ACT_LOGISTIC:
        for i in range(n):
            z = Z + i * m
            for j in range(m):
                z[j] = _logistic(z[j] + b[j])
    elif act == ACT_LEAKY_RELU:
        for i in range(n):
            z = Z + i * m
            for j in range(m):
                z[j] = _leaky_relu(z[j] + b[j], slope)
    elif act == ACT_ELU:
        for i in range(n):
            z = Z + i * m
            for j in range(m):
                z[j] = _elu(z[j] + b[j])
    elif act == ACT_SOFTPLUS:
        for i in range(n):
            z = Z + i * m
            for j in range(m):
                z[j] = _softplus(z[j] + b[j])
    else:
        for i in range(n):
            z = Z + i * m
            for j in range(m):
                z[j] = z[j] + b[j]


cdef inline void act_backward_i(floating* D, const floating* A, Py_ssize_t n,
                                Py_ssize_t m, int act,
                                floating slope) noexcept nogil:
    """Hidden delta, in place: ``D = D * f'(A)``, the derivative taken from
    the stored activation ``A = f(Z)``."""
    cdef Py_ssize_t i
    cdef Py_ssize_t size = n * m
    # leaky_relu's and softplus's derivatives are values of the
    # activation's type (1, the slope, a; expm1 of its type): the casts
    # lose nothing and keep the loops in that type
    if act == ACT_LEAKY_RELU:
        for i in range(size):
            D[i] = D[i] * <floating>_d_leaky_relu(A[i], slope)
        return
    if act == ACT_ELU:
        for i in range(size):
            D[i] = D[i] * _d_elu(A[i])
        return
    if act == ACT_SOFTPLUS:
        for i in range(size):
            D[i] = D[i] * <floating>_d_softplus(A[i])
        return
    # C kernels with restrict pointers (src/_kernels.h): these vectorise
    if floating is float:
        if act == ACT_RELU:
            cbp_relu_backward_f(D, A, size)
        elif act == ACT_TANH:
            cbp_tanh_backward_f(D, A, size)
        elif act == ACT_LOGISTIC:
            cbp_logistic_backward_f(D, A, size)
    else:
        if act == ACT_RELU:
            cbp_relu_backward_d(D, A, size)
        elif act == ACT_TANH:
            cbp_tanh_backward_d(D, A, size)
        elif act == ACT_LOGISTIC:
            cbp_logistic_backward_d(D, A, size)


cdef inline void prelu_forward_i(floating* Z, const floating* b,
                                 const floating* slopes, floating* Zsave,
                                 Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    """PReLU hidden layer, in place: ``v = Z + b``;
    ``Z = v if v > 0 else slopes * v``, one slope per unit (column).

    When ``Zsave`` is not NULL the pre-activations ``v`` are kept there for
    the backward pass: a learned slope may reach 0 or turn negative, so
    ``v`` cannot be recovered from the activation.
    """
    cdef Py_ssize_t i, j
    cdef floating v
    cdef floating* z
    for i in range(n):
        z = Z + i * m
        for j in range(m):
            v = z[j] + b[j]
            if Zsave != NULL:
                Zsave[i * m + j] = v
            z[j] = _leaky_relu(v, slopes[j])


cdef inline void prelu_backward_i(floating* D, floating* Zsave,
                                  const floating* slopes, Py_ssize_t n,
                                  Py_ssize_t m) noexcept nogil:
    """PReLU hidden delta, in place: ``D = D * (1 if v > 0 else slopes)``
    with ``v = Zsave``; ``Zsave`` is overwritten with each row's term of
    the slopes' gradient, ``D * min(v, 0)`` (D before the derivative), which
    phase 2 sums over rows (:func:`params_grad`).
    """
    cdef Py_ssize_t i, j
    cdef floating v, d
    cdef floating* r
    cdef floating* z
    for i in range(n):
        r = D + i * m
        z = Zsave + i * m
        for j in range(m):
            v = z[j]
            d = r[j]
            if v > 0:
                z[j] = 0
            else:
                z[j] = d * v
                # NaN v gives NaN, whatever the slope
                r[j] = slopes[j] * d if v == v else v
