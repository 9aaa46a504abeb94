"""Helpers shared by the estimator tests: quiet short fits, small data sets,
the flat parameters as layers, a core whose network runs hooks."""

import contextlib
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from cbp import _core


@contextlib.contextmanager
def quiet():
    """Ignore ConvergenceWarning (short fits are the point of these tests)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def fit_quiet(est, X, y, **kw):
    """``est.fit(X, y, **kw)`` without the warnings of short fits."""
    with quiet():
        # batch_size=1000 (full batch whatever the row count) is clipped
        warnings.filterwarnings("ignore", "Got `batch_size`", UserWarning)
        return est.fit(X, y, **kw)


def counts(n=120, seed=0):
    """Poisson counts of a log-linear model of two of four features."""
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, 4))
    y = rng.poisson(np.exp(0.6 * X[:, 0] - 0.3 * X[:, 1]))
    return X, y


def flat_to_lists(est, t):
    """coefs, intercepts and PReLU slopes of ``est``'s layout at vector t."""
    layout = est._layout()
    coefs, intercepts = layout.views(t)
    return coefs, intercepts, layout.slope_views(t)


class CoreProxy:
    """Stands in for ``cbp._core`` in the estimator module (monkeypatch it
    there): delegates everything but ``Network``, which becomes a Python
    subclass of ``_core.Network`` whose methods named in ``hooks`` (such
    as ``"epoch"``, ``"loss_grad"``, ``"predict"``, or ``"__init__"``) run
    ``hook(real_method, *args, **kwargs)``, ``real_method`` bound to the
    network."""

    def __init__(self, hooks):
        methods = {name: _hooked(name, hook) for name, hook in hooks.items()}
        self.Network = type("HookedNetwork", (_core.Network,), methods)

    def __getattr__(self, name):
        return getattr(_core, name)


def _hooked(name, hook):
    real = getattr(_core.Network, name)

    def method(self, *args, **kwargs):
        return hook(real.__get__(self, type(self)), *args, **kwargs)

    method.__name__ = name
    return method
