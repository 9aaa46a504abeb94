# cython: language_level=3
"""Scalar math, fused over float and double: each calls the C library's
function of its type (``expf`` for float, ``exp`` for double)."""

from cython cimport floating
from libc.math cimport (exp, expf, log, logf, log1p, log1pf, tanh, tanhf,
                        sqrt, sqrtf, fabs, fabsf, expm1, expm1f)


cdef inline floating _exp(floating x) noexcept nogil:
    if floating is float:
        return expf(x)
    else:
        return exp(x)


cdef inline floating _log(floating x) noexcept nogil:
    if floating is float:
        return logf(x)
    else:
        return log(x)


cdef inline floating _tanh(floating x) noexcept nogil:
    if floating is float:
        return tanhf(x)
    else:
        return tanh(x)


cdef inline floating _expm1(floating x) noexcept nogil:
    if floating is float:
        return expm1f(x)
    else:
        return expm1(x)


cdef inline floating _sqrt(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef inline floating _softplus(floating x) noexcept nogil:
    """log(1 + exp(x)) without overflow."""
    if floating is float:
        return (x if x > 0 else 0) + log1pf(expf(-fabsf(x)))
    else:
        return (x if x > 0 else 0) + log1p(exp(-fabs(x)))


cdef inline floating _logistic(floating x) noexcept nogil:
    """1 / (1 + exp(-x))."""
    return 1 / (1 + _exp(-x))
