"""A plain-numpy reference of the network, independent of the core."""

import numpy as np
from scipy.special import expit, log_expit, logsumexp

ACT = {
    "identity": lambda z: z,
    "logistic": expit,
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0),
}


def forward(coefs, intercepts, X, hidden, out):
    a = X
    for i, (W, b) in enumerate(zip(coefs, intercepts)):
        z = a @ W + b
        a = ACT[hidden](z) if i < len(coefs) - 1 else z
    if out == "identity":
        return a
    if out == "logistic":
        return expit(a)
    return np.exp(a - logsumexp(a, axis=1, keepdims=True))


def objective(coefs, intercepts, X, Y, sw, hidden, out, alpha):
    """Data loss (each sample's loss summed over outputs) + L2 penalty, / sw_sum."""
    a = X
    for i, (W, b) in enumerate(zip(coefs, intercepts)):
        z = a @ W + b
        a = ACT[hidden](z) if i < len(coefs) - 1 else z
    if out == "identity":
        per = 0.5 * ((a - Y) ** 2).sum(axis=1)
    elif out == "logistic":
        per = -(Y * log_expit(a) + (1 - Y) * log_expit(-a)).sum(axis=1)
    else:
        per = -(Y * (a - logsumexp(a, axis=1, keepdims=True))).sum(axis=1)
    pen = 0.5 * alpha * sum((W**2).sum() for W in coefs)
    return (sw @ per + pen) / sw.sum()
