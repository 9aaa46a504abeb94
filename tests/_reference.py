"""A plain-numpy reference of the network, independent of the core."""

import numpy as np
from scipy.special import expit, log_expit, logsumexp, xlogy

ACT = {
    "identity": lambda z: z,
    "logistic": expit,
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0),
    "elu": lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0))),
    "softplus": lambda z: np.logaddexp(0, z),
}

#: leaky_relu's slope used by the tests (and passed to the core as act_param)
LEAKY_SLOPE = 0.1


def _hidden(name, z, layer, slope, slopes):
    if name == "leaky_relu":
        return np.where(z > 0, z, slope * z)
    if name == "prelu":
        return np.where(z > 0, z, slopes[layer] * z)
    return ACT[name](z)


def _logits(coefs, intercepts, X, hidden, slope, slopes, masks):
    """Output pre-activations; ``masks[l]`` (already scaled by 1 / keep)
    multiplies hidden layer l's activations (dropout)."""
    a = X
    for i, (W, b) in enumerate(zip(coefs, intercepts)):
        z = a @ W + b
        if i < len(coefs) - 1:
            a = _hidden(hidden, z, i, slope, slopes)
            if masks is not None:
                a = a * masks[i]
        else:
            a = z
    return a


def forward(coefs, intercepts, X, hidden, out, slope=LEAKY_SLOPE, slopes=None):
    a = _logits(coefs, intercepts, X, hidden, slope, slopes, None)
    if out == "identity":
        return a
    if out == "logistic":
        return expit(a)
    if out == "exp":
        return np.exp(a)
    return np.exp(a - logsumexp(a, axis=1, keepdims=True))


def objective(coefs, intercepts, X, Y, sw, hidden, out, alpha, slope=LEAKY_SLOPE,
              slopes=None, masks=None, loss=None, huber_delta=1.0):
    """Data loss (each sample's loss summed over outputs) + L2 penalty, / sw_sum.

    ``out`` is the output activation with its canonical loss ('identity':
    half squared error, 'logistic' and 'softmax': cross-entropies, 'exp':
    half Poisson deviance); ``loss='huber'`` with 'identity' gives Huber's
    loss with threshold ``huber_delta``.
    """
    a = _logits(coefs, intercepts, X, hidden, slope, slopes, masks)
    if out == "identity" and loss == "huber":
        r = np.abs(a - Y)
        per = np.where(r <= huber_delta, 0.5 * r**2,
                       huber_delta * (r - 0.5 * huber_delta)).sum(axis=1)
    elif out == "identity":
        per = 0.5 * ((a - Y) ** 2).sum(axis=1)
    elif out == "logistic":
        per = -(Y * log_expit(a) + (1 - Y) * log_expit(-a)).sum(axis=1)
    elif out == "exp":
        per = (xlogy(Y, Y) - Y * a - Y + np.exp(a)).sum(axis=1)
    else:
        per = -(Y * (a - logsumexp(a, axis=1, keepdims=True))).sum(axis=1)
    pen = 0.5 * alpha * sum((W**2).sum() for W in coefs)
    return (sw @ per + pen) / sw.sum()
