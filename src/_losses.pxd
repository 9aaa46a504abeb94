# cython: language_level=3
"""The output layer: a link, which makes the prediction ``P = link(V)``
from the pre-activation ``V = Z + b``, and a loss, whose delta the
backward pass starts from.

Each loss's delta is written for its canonical link, where
``d loss / d V = P - Y`` (``sw * (P - Y)`` with sample weights); Huber's,
for the identity, is the clipped residual. Those are the pairs the core
can differentiate (:func:`_differentiable`); the output codes the entry
points take each name one of them (:func:`_output_pair`).
"""

from cython cimport floating

from _types cimport (OUT_IDENTITY, OUT_LOGISTIC, OUT_SOFTMAX, OUT_EXP,
                     OUT_HUBER, LINK_IDENTITY, LINK_LOGISTIC,
                     LINK_SOFTMAX, LINK_EXP, LOSS_SQUARED_ERROR,
                     LOSS_BINARY_CROSS_ENTROPY, LOSS_CROSS_ENTROPY,
                     LOSS_POISSON, LOSS_HUBER)
from _scalar cimport _exp, _log, _softplus, _logistic

cdef extern from "_kernels.h" nogil:
    void cbp_softmax_exp_f(float* z, Py_ssize_t k, float mx)
    void cbp_softmax_exp_d(double* z, Py_ssize_t k, double mx)


cdef inline bint _output_pair(int out_act, int* link,
                              int* loss) noexcept nogil:
    """The link and the loss of an output code (OUT_*); False, leaving
    both alone, for an unknown code."""
    if out_act == OUT_IDENTITY:
        link[0], loss[0] = LINK_IDENTITY, LOSS_SQUARED_ERROR
    elif out_act == OUT_LOGISTIC:
        link[0], loss[0] = LINK_LOGISTIC, LOSS_BINARY_CROSS_ENTROPY
    elif out_act == OUT_SOFTMAX:
        link[0], loss[0] = LINK_SOFTMAX, LOSS_CROSS_ENTROPY
    elif out_act == OUT_EXP:
        link[0], loss[0] = LINK_EXP, LOSS_POISSON
    elif out_act == OUT_HUBER:
        link[0], loss[0] = LINK_IDENTITY, LOSS_HUBER
    else:
        return False
    return True


cdef inline bint _differentiable(int link, int loss) noexcept nogil:
    """Whether :func:`output_delta_i` has the delta of ``loss`` under
    ``link``: each loss's delta is written for one link only."""
    if loss == LOSS_SQUARED_ERROR or loss == LOSS_HUBER:
        return link == LINK_IDENTITY
    if loss == LOSS_BINARY_CROSS_ENTROPY:
        return link == LINK_LOGISTIC
    if loss == LOSS_CROSS_ENTROPY:
        return link == LINK_SOFTMAX
    if loss == LOSS_POISSON:
        return link == LINK_EXP
    return False


cdef inline void _softmax_exp(floating* z, Py_ssize_t k,
                              floating mx) noexcept nogil:
    """``z[:k] = exp(z[:k] - mx)`` for the row maximum ``mx`` (the loop and
    its exp are in _kernels.h: vectorised, within 2 ulp of libm's)."""
    if floating is float:
        cbp_softmax_exp_f(z, k, mx)
    else:
        cbp_softmax_exp_d(z, k, mx)


cdef inline void output_delta_i(floating* Z, const floating* b,
                                const floating* Y, const floating* sw,
                                Py_ssize_t n, Py_ssize_t k, int loss,
                                double* rowloss,
                                double loss_param) noexcept nogil:
    """Output layer and loss, in place: ``Z = sw * (link(Z + b) - Y)``
    under ``loss``'s canonical link (Huber: ``Z = sw * clip(v - Y, -delta,
    delta)``, ``delta = loss_param``).

    Writes ``rowloss[i] = sw_i * loss_i``, each ``loss_i`` summed over the
    outputs and computed from the logits so that it is finite wherever
    they are (log-softmax, softplus). Poisson's ``loss_i`` is the half
    deviance ``exp(v) - y v + y log(y) - y`` (scikit-learn's; the constant
    ``y log(y) - y`` has no gradient).
    """
    cdef Py_ssize_t i, j
    cdef floating v, mx, s, w, p, hd
    cdef floating* z
    cdef const floating* y
    cdef double row, ysum
    for i in range(n):
        z = Z + i * k
        y = Y + i * k
        w = sw[i]
        row = 0
        if loss == LOSS_CROSS_ENTROPY:
            mx = z[0] + b[0]
            for j in range(k):
                z[j] = z[j] + b[j]
                if z[j] > mx:
                    mx = z[j]
            # loss_i = sum_j y_j (lse - z_j), lse = mx + log(sum_j exp(z_j - mx))
            ysum = 0
            for j in range(k):
                if y[j] != 0:
                    row += y[j] * (mx - z[j])
                    ysum += y[j]
            _softmax_exp(z, k, mx)
            s = 0
            for j in range(k):
                s = s + z[j]
            row += ysum * _log(s)
            for j in range(k):
                z[j] = w * (z[j] / s - y[j])
        elif loss == LOSS_BINARY_CROSS_ENTROPY:
            for j in range(k):
                v = z[j] + b[j]
                row += _softplus(v) - y[j] * v
                p = _logistic(v)
                z[j] = w * (p - y[j])
        elif loss == LOSS_POISSON:
            for j in range(k):
                v = z[j] + b[j]
                p = _exp(v)
                row += p - y[j] * v
                if y[j] > 0:
                    row += y[j] * _log(y[j]) - y[j]
                z[j] = w * (p - y[j])
        elif loss == LOSS_HUBER:
            hd = <floating>loss_param
            for j in range(k):
                v = z[j] + b[j] - y[j]
                if v > hd:
                    row += hd * (v - 0.5 * hd)
                    z[j] = w * hd
                elif v < -hd:
                    row += hd * (-v - 0.5 * hd)
                    z[j] = -w * hd
                else:
                    row += 0.5 * v * v
                    z[j] = w * v
        else:
            for j in range(k):
                v = z[j] + b[j] - y[j]
                row += 0.5 * v * v
                z[j] = w * v
        rowloss[i] = w * row


cdef inline void output_forward_i(floating* Z, const floating* b, Py_ssize_t n,
                                  Py_ssize_t k, int link) noexcept nogil:
    """Output layer for prediction, in place: ``Z = link(Z + b)``."""
    cdef Py_ssize_t i, j
    cdef floating mx, s
    cdef floating* z
    for i in range(n):
        z = Z + i * k
        if link == LINK_SOFTMAX:
            mx = z[0] + b[0]
            for j in range(k):
                z[j] = z[j] + b[j]
                if z[j] > mx:
                    mx = z[j]
            _softmax_exp(z, k, mx)
            s = 0
            for j in range(k):
                s = s + z[j]
            for j in range(k):
                z[j] = z[j] / s
        elif link == LINK_LOGISTIC:
            for j in range(k):
                z[j] = _logistic(z[j] + b[j])
        elif link == LINK_EXP:
            for j in range(k):
                z[j] = _exp(z[j] + b[j])
        else:
            for j in range(k):
                z[j] = z[j] + b[j]
