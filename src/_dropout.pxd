# cython: language_level=3
"""Dropout.

Whether unit ``unit`` of row ``row`` is kept is a pure function of
(seed, row, unit): a counter-based hash (SplitMix64's finaliser), so the
masks need no RNG state, no storage (the backward pass recomputes them)
and do not depend on the thread count. ``row`` counts rows across calls
(the estimator passes the samples seen so far, so every epoch draws new
masks); ``unit`` numbers the hidden units of all layers in order.
"""

from cython cimport floating
from libc.stdint cimport uint64_t

from _types cimport ACT_PRELU
from _activations cimport _act_deriv


cdef inline uint64_t _mix64(uint64_t z) noexcept nogil:
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef inline bint _drop_keep(uint64_t seed, uint64_t row, uint64_t unit,
                            uint64_t threshold) noexcept nogil:
    """Keep with probability 1 - rate: the hash's top 53 bits, as a number
    in [0, 2^53), are >= ``threshold = rate * 2^53``."""
    cdef uint64_t h = _mix64(seed + (row + 1) * <uint64_t>0x9E3779B97F4A7C15ULL)
    h = _mix64(h ^ ((unit + 1) * <uint64_t>0xD1B54A32D192ED03ULL))
    return (h >> 11) >= threshold


cdef inline uint64_t _drop_threshold(double rate) noexcept nogil:
    return <uint64_t>(rate * 9007199254740992.0)   # rate * 2^53


cdef inline void dropout_forward_i(floating* A, Py_ssize_t n, Py_ssize_t m,
                                   double rate, uint64_t seed, uint64_t row0,
                                   uint64_t unit0) noexcept nogil:
    """Inverted dropout, in place: ``A = A * keep / (1 - rate)``, keep
    drawn by :func:`_drop_keep` for rows row0.. and units unit0.."""
    cdef Py_ssize_t i, j
    cdef uint64_t thr = _drop_threshold(rate)
    cdef floating scale = <floating>(1.0 / (1.0 - rate))
    cdef floating* a
    for i in range(n):
        a = A + i * m
        for j in range(m):
            if _drop_keep(seed, row0 + i, unit0 + j, thr):
                a[j] = a[j] * scale
            elif a[j] == a[j]:
                a[j] = 0
            # a dropped NaN stays NaN, as a multiplication by the mask keeps it


cdef inline void dropout_backward_i(floating* D, const floating* A,
                                    Py_ssize_t n, Py_ssize_t m, int act,
                                    floating slope, double rate, uint64_t seed,
                                    uint64_t row0,
                                    uint64_t unit0) noexcept nogil:
    """Hidden delta of a dropout layer, in place: ``D = D * keep * scale
    * f'(Z)`` with ``scale = 1 / (1 - rate)``, ``f'`` taken from the stored
    (dropped) activation ``A = keep * scale * f(Z)`` as ``f'`` of
    ``A / scale``. PReLU: only ``D = D * keep * scale`` (its own backward
    kernel follows, from the stored pre-activations)."""
    cdef Py_ssize_t i, j
    cdef uint64_t thr = _drop_threshold(rate)
    cdef floating scale = <floating>(1.0 / (1.0 - rate))
    cdef floating t
    cdef floating* d
    cdef const floating* a
    for i in range(n):
        d = D + i * m
        a = A + i * m
        for j in range(m):
            if act == ACT_PRELU:
                t = d[j] * scale
            else:
                t = d[j] * scale * _act_deriv(act, a[j] / scale, slope)
            if not _drop_keep(seed, row0 + i, unit0 + j, thr) and t == t:
                # a dropped unit's delta is 0 * t: 0, but NaN stays NaN
                t = 0
            d[j] = t
