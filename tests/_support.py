"""Helpers shared by the estimator tests: quiet short fits, a stand-in core."""

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
    there): delegates everything; ``hooks`` maps an entry point's name to a
    replacement ``hook(real_function, *args, **kwargs)``."""

    def __init__(self, hooks):
        self._hooks = hooks

    def __getattr__(self, name):
        real = getattr(_core, name)
        hook = self._hooks.get(name)
        if hook is None:
            return real
        return lambda *args, **kw: hook(real, *args, **kw)
