"""Gradient checking: the core's analytic gradient against finite differences."""

import numpy as np
from sklearn.base import clone
from sklearn.utils import check_random_state
from sklearn.utils.validation import _check_sample_weight, check_is_fitted

from ._layout import _loss_grad_rows
from ._multilayer_perceptron import BaseMultilayerPerceptron, _core_input
from ._threads import _SingleThreadedBLAS


def _prepare(estimator, X, y):
    """Return (est, X, Y) with ``est`` holding the weights to check.

    A fitted estimator is used as it is (its data checks with
    ``reset=False``, its labels through its own binarizer); an unfitted
    one is cloned and the clone initialised exactly as ``fit`` would
    initialise it, without training.
    """
    if hasattr(estimator, "coefs_"):
        check_is_fitted(estimator)
        est = estimator
        # incremental=True: the fitted label encoding is used, not refitted
        X, y = est._validate_input(X, y, incremental=True, reset=False)
    else:
        est = clone(estimator)
        hidden = est.hidden_layer_sizes
        hidden = list(hidden) if hasattr(hidden, "__iter__") else [hidden]
        X, y = est._validate_input(X, y, incremental=False, reset=True)
        if y.ndim == 1:
            y = y.reshape((-1, 1))
        est._random_state = check_random_state(est.random_state)
        est._initialize(y, [X.shape[1]] + hidden + [y.shape[1]], X.dtype)
    if y.ndim == 1:
        y = y.reshape((-1, 1))
    Y = np.ascontiguousarray(y, dtype=X.dtype)
    return est, X, Y


class _Objective:
    """The full-batch objective of lbfgs, ``data_loss + penalty``, and its gradient.

    Calls :meth:`cbp._core.Network.loss_grad` exactly as the estimators' lbfgs
    solver does, on a private copy of the parameter vector.
    """

    def __init__(self, est, X, Y, sw):
        self.theta = est._packed_params().astype(X.dtype, copy=True)
        self.grad = np.empty_like(self.theta)
        self.layout = est._layout()
        self.network = est._network(X.dtype)
        self.data = _core_input(X, X.dtype, Y, sw)
        self.rows = _loss_grad_rows(self.network, self.data)
        self.alpha = float(est.alpha)

    def __call__(self):
        """Objective at ``self.theta``; the gradient lands in ``self.grad``."""
        data, penalty = self.network.loss_grad(
            self.theta, self.grad, self.data, self.alpha, self.rows
        )
        return float(data) + float(penalty)


def _parameter_groups(layout, n_params):
    """Names and flat indices of each layer's weights and biases.

    Entries of the flat vector that belong to neither (parameters of
    activations, say) form one last group, ``'other'``.
    """
    index = np.arange(n_params)
    coefs, intercepts = layout.views(index)
    groups = []
    for i, (w, b) in enumerate(zip(coefs, intercepts)):
        groups.append((f"coefs_[{i}]", w.ravel()))
        groups.append((f"intercepts_[{i}]", b))
    covered = np.zeros(n_params, dtype=bool)
    for _, idx in groups:
        covered[idx] = True
    if not covered.all():
        groups.append(("other", index[~covered]))
    return groups


def check_gradients(
    estimator, X, y, eps=None, *, sample_weight=None, max_per_layer=None,
    random_state=0,
):
    """Compare the core's analytic gradient with central finite differences.

    The objective is the one the core differentiates and lbfgs minimises,
    ``data_loss + penalty`` with
    ``data_loss = sum_i sw_i * loss_i / sw_sum`` and
    ``penalty = 0.5 * alpha * ||W||² / sw_sum``; its gradient comes from
    :meth:`cbp._core.Network.loss_grad`, the same call the lbfgs solver makes. Each
    checked parameter ``theta_j`` is moved by ``± h_j`` with
    ``h_j = eps * max(1, |theta_j|)`` and the central difference
    ``(f(theta + h_j e_j) - f(theta - h_j e_j)) / (2 h_j)`` is compared
    with the analytic ``g_j`` through the relative error

    ``|g_j - d_j| / max(|g_j| + |d_j|, floor)``,

    where ``floor = 10 * machine_eps * max(1, |f|) / eps`` is the rounding
    noise of the differences (so that gradients that are zero up to noise
    do not count as wrong). The computation is in the data's dtype: float32
    data checks the float32 core.

    Parameters
    ----------
    estimator : MLPClassifier or MLPRegressor
        If fitted, its current weights are checked (the estimator is not
        modified). If not fitted, a clone is initialised as ``fit`` would
        initialise it (the same ``random_state`` draws) and checked without
        training; ``estimator`` itself stays unfitted.
    X : array-like of shape (n_samples, n_features)
        Input data. float32 data is checked in float32, anything else in
        float64. Keep it small: each checked parameter costs two
        full-batch loss evaluations.
    y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        Targets, as for ``fit`` (a fitted classifier must know the labels).
    eps : float, default=None
        Relative step ``eps`` of the differences. None uses
        ``machine_eps ** (1/3)`` of the dtype (about 6e-6 in float64,
        5e-3 in float32), which balances truncation and rounding error.
    sample_weight : array-like of shape (n_samples,), default=None
        Sample weights of the objective.
    max_per_layer : int, default=None
        Check at most this many randomly chosen entries of each group
        (each layer's weights, each layer's biases); None checks all.
    random_state : int, RandomState instance or None, default=0
        Chooses the entries when ``max_per_layer`` is set.

    Returns
    -------
    errors : dict of str to float
        The largest relative error of each group, in layer order:
        ``'coefs_[0]'``, ``'intercepts_[0]'``, ``'coefs_[1]'``, ...
        (and ``'other'`` for trainable parameters that are neither, such
        as activation parameters). A correct gradient typically gives
        1e-6 or less in float64 (entries with tiny gradients are the
        noisiest) and 1e-2 or less in float32; a wrong one gives values
        of order 0.1 to 1. A kink of the activation (relu at 0) within
        ``h_j`` of a pre-activation can give an isolated large value,
        which is likely in float32 with its larger step: check relu
        networks in float64.

    Examples
    --------
    >>> import numpy as np
    >>> from cbp import MLPClassifier, check_gradients
    >>> rng = np.random.RandomState(0)
    >>> X, y = rng.normal(size=(20, 3)), rng.randint(3, size=20)
    >>> errors = check_gradients(MLPClassifier((5,), activation="tanh",
    ...                                        random_state=0), X, y)
    >>> list(errors)
    ['coefs_[0]', 'intercepts_[0]', 'coefs_[1]', 'intercepts_[1]']
    >>> max(errors.values()) < 1e-6
    True
    """
    if not isinstance(estimator, BaseMultilayerPerceptron):
        raise TypeError(
            "check_gradients needs a cbp MLPClassifier or MLPRegressor, got "
            f"{type(estimator).__name__}."
        )
    if eps is not None and not (np.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a positive float, got {eps!r}.")
    if max_per_layer is not None and int(max_per_layer) < 1:
        raise ValueError(f"max_per_layer must be >= 1 or None, got {max_per_layer!r}.")

    est, X, Y = _prepare(estimator, X, y)
    dtype = X.dtype.type
    machine_eps = float(np.finfo(dtype).eps)
    if eps is None:
        eps = machine_eps ** (1.0 / 3.0)
    eps = float(eps)
    if sample_weight is None:
        sw = np.ones(X.shape[0], dtype=X.dtype)
    else:
        sw = np.ascontiguousarray(
            _check_sample_weight(sample_weight, X, ensure_non_negative=True),
            dtype=X.dtype,
        )

    rng = check_random_state(random_state)
    with _SingleThreadedBLAS():
        f = _Objective(est, X, Y, sw)
        theta = f.theta
        f0 = f()
        analytic = f.grad.astype(np.float64)
        floor = 10.0 * machine_eps * max(1.0, abs(f0)) / eps
        errors = {}
        for name, idx in _parameter_groups(f.layout, theta.shape[0]):
            if max_per_layer is not None and idx.shape[0] > max_per_layer:
                idx = np.sort(rng.choice(idx, int(max_per_layer), replace=False))
            worst = 0.0
            for j in idx:
                saved = theta[j]
                h = eps * max(1.0, abs(float(saved)))
                theta[j] = saved + dtype(h)
                plus_step = float(theta[j])
                f_plus = f()
                theta[j] = saved - dtype(h)
                minus_step = float(theta[j])
                f_minus = f()
                theta[j] = saved
                # the step actually taken, after rounding to the dtype
                numeric = (f_plus - f_minus) / (plus_step - minus_step)
                a = analytic[j]
                err = abs(a - numeric) / max(abs(a) + abs(numeric), floor)
                worst = max(worst, err)
            errors[name] = float(worst)
    return errors
