"""Helpers shared by the estimator tests: quiet short fits, a core whose
network runs hooks."""

import contextlib
import warnings

from sklearn.exceptions import ConvergenceWarning

from cbp import _core


@contextlib.contextmanager
def quiet():
    """Ignore ConvergenceWarning (short fits are the point of these tests)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


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
