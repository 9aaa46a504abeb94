"""A plain-numpy reference of the network, independent of the core.

One formula per row of the core's tables: :data:`HIDDEN` per
``_core.HIDDEN_ACTIVATIONS``, :data:`OUTPUT` (activation and canonical
loss) per ``_core.OUTPUT_ACTIVATIONS``, :data:`REGRESSION_LOSSES` per
``_core.REGRESSION_LOSSES`` and :data:`STEPS` per ``_core.SOLVERS``. The
kernel tests are parametrized over the core's tables and look each row up
here, so that an entry added to a table without its formula fails
``test_every_table_row_has_a_reference_formula``.
"""

import numpy as np
from scipy.special import expit, log_expit, logsumexp, xlogy

#: leaky_relu's slope used by the tests (and passed to the core as act_param)
LEAKY_SLOPE = 0.1

#: hidden activations: ``f(z, slope, slopes)``, with ``slope`` the network's
#: activation parameter and ``slopes`` the layer's learned PReLU slopes
HIDDEN = {
    "identity": lambda z, slope, slopes: z,
    "logistic": lambda z, slope, slopes: expit(z),
    "tanh": lambda z, slope, slopes: np.tanh(z),
    "relu": lambda z, slope, slopes: np.maximum(z, 0),
    "leaky_relu": lambda z, slope, slopes: np.where(z > 0, z, slope * z),
    "elu": lambda z, slope, slopes: np.where(z > 0, z, np.expm1(np.minimum(z, 0))),
    "softplus": lambda z, slope, slopes: np.logaddexp(0, z),
    "prelu": lambda z, slope, slopes: np.where(z > 0, z, slopes * z),
}


def _softmax(a):
    return np.exp(a - logsumexp(a, axis=1, keepdims=True))


def _half_squared_error(a, Y, delta):
    return 0.5 * ((a - Y) ** 2).sum(axis=1)


def _binary_cross_entropy(a, Y, delta):
    return -(Y * log_expit(a) + (1 - Y) * log_expit(-a)).sum(axis=1)


def _cross_entropy(a, Y, delta):
    return -(Y * (a - logsumexp(a, axis=1, keepdims=True))).sum(axis=1)


def _half_poisson_deviance(a, Y, delta):
    # the y log y - y constant makes it the half deviance: 0 at a perfect fit
    return (xlogy(Y, Y) - Y * a - Y + np.exp(a)).sum(axis=1)


def _huber(a, Y, delta):
    r = np.abs(a - Y)
    return np.where(r <= delta, 0.5 * r**2, delta * (r - 0.5 * delta)).sum(axis=1)


#: output activations: ``(activation(a), loss(a, Y, delta))`` of the logits
#: ``a``, the loss being the output's canonical one, per sample (summed over
#: the outputs)
OUTPUT = {
    "identity": (lambda a: a, _half_squared_error),
    "logistic": (expit, _binary_cross_entropy),
    "softmax": (_softmax, _cross_entropy),
    "exp": (np.exp, _half_poisson_deviance),
}

#: regression losses: ``(output activation, loss(a, Y, delta))``
REGRESSION_LOSSES = {
    "squared_error": ("identity", _half_squared_error),
    "poisson": ("exp", _half_poisson_deviance),
    "huber": ("identity", _huber),
}


def _sgd(theta, g, state, lr, momentum=0.9, nesterov=True, **_):
    v = state.setdefault("v", np.zeros_like(theta))
    v[:] = momentum * v - lr * g
    return theta + (momentum * v - lr * g if nesterov else v)


def _adam(theta, g, state, lr, beta_1=0.9, beta_2=0.999, epsilon=1e-8, **_):
    m = state.setdefault("m", np.zeros_like(theta))
    v = state.setdefault("v", np.zeros_like(theta))
    t = state["t"] = state.get("t", 0) + 1
    m[:] = beta_1 * m + (1 - beta_1) * g
    v[:] = beta_2 * v + (1 - beta_2) * g**2
    lr_t = lr * np.sqrt(1 - beta_2**t) / (1 - beta_1**t)
    return theta - lr_t * m / (np.sqrt(v) + epsilon)


def _rmsprop(theta, g, state, lr, rho=0.9, epsilon=1e-8, **_):
    v = state.setdefault("v", np.zeros_like(theta))
    v[:] = rho * v + (1 - rho) * g**2
    return theta - lr * g / (np.sqrt(v) + epsilon)


#: optimizer steps: ``step(theta, g, state, lr, **options)`` returns the new
#: theta (decoupled weight decay is applied by :func:`step`), ``state`` a
#: dict the step keeps its moments in
STEPS = {"sgd": _sgd, "adam": _adam, "rmsprop": _rmsprop}


def step(solver, theta, g, state, lr, n_coefs, weight_decay=0.0, **options):
    """One optimizer step, with decoupled weight decay on the first
    ``n_coefs`` entries (the weights)."""
    decay = np.zeros_like(theta)
    decay[:n_coefs] = lr * weight_decay * theta[:n_coefs]
    return STEPS[solver](theta, g, state, lr, **options) - decay


def _logits(coefs, intercepts, X, hidden, slope, slopes, masks):
    """Output pre-activations; ``masks[l]`` (already scaled by 1 / keep)
    multiplies hidden layer l's activations (dropout)."""
    a = X
    for i, (W, b) in enumerate(zip(coefs, intercepts)):
        z = a @ W + b
        if i < len(coefs) - 1:
            a = HIDDEN[hidden](z, slope, slopes[i] if slopes else None)
            if masks is not None:
                a = a * masks[i]
        else:
            a = z
    return a


def forward(coefs, intercepts, X, hidden, out, slope=LEAKY_SLOPE, slopes=None):
    """The network's output; ``out`` a name of :data:`OUTPUT`."""
    return OUTPUT[out][0](_logits(coefs, intercepts, X, hidden, slope, slopes, None))


def objective(coefs, intercepts, X, Y, sw, hidden, out, alpha, slope=LEAKY_SLOPE,
              slopes=None, masks=None, loss=None, huber_delta=1.0):
    """Data loss (each sample's loss summed over outputs) + L2 penalty, / sw_sum.

    ``out`` is the output activation with its canonical loss (:data:`OUTPUT`);
    ``loss``, a name of :data:`REGRESSION_LOSSES`, replaces it (its output
    activation must then be ``out``), with Huber's threshold ``huber_delta``.
    """
    a = _logits(coefs, intercepts, X, hidden, slope, slopes, masks)
    if loss is None:
        per_sample = OUTPUT[out][1]
    else:
        loss_out, per_sample = REGRESSION_LOSSES[loss]
        assert loss_out == out, f"{loss} goes with the {loss_out} output"
    per = per_sample(a, Y, huber_delta)
    pen = 0.5 * alpha * sum((W**2).sum() for W in coefs)
    return (sw @ per + pen) / sw.sum()
