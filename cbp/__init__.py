"""cbp: multilayer perceptrons trained by a typed Cython backpropagation core.

The estimators are drop-in replacements for scikit-learn's
:class:`sklearn.neural_network.MLPClassifier` and
:class:`sklearn.neural_network.MLPRegressor`. Beside them:
:func:`check_gradients` (the core's gradient against finite differences)
and :func:`plot_loss_curve` (matplotlib).
"""

import importlib.machinery as _machinery
import os as _os
import sys as _sys


def _has_core(folder):
    """Whether ``folder`` holds a compiled ``_core`` extension module."""
    return any(_os.path.exists(_os.path.join(folder, "_core" + suffix))
               for suffix in _machinery.EXTENSION_SUFFIXES)


def _installed_spec():
    """The spec of an installed cbp, when this one is a source tree's.

    ``python -m cbp.demo`` (and ``python -c``, and a script beside the
    checkout) put the working directory first on ``sys.path``, so in a
    clone's root the source tree's ``cbp/``, which has no compiled core,
    shadows the cbp that ``pip install .`` put in site-packages. Then the
    installed package is the one the user built and meant: find it on the
    rest of ``sys.path``. None when this package has its core (an installed
    or in-place build) or no other cbp has one.
    """
    here = _os.path.dirname(_os.path.abspath(__file__))
    if _has_core(here):
        return None
    tree = _os.path.dirname(here)
    saved = list(_sys.path)
    _sys.path[:] = [p for p in saved if _os.path.abspath(p or _os.curdir) != tree]
    try:
        for finder in _sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(__name__, None) if find_spec is not None else None
            if spec is not None:
                break
    finally:
        _sys.path[:] = saved
    if spec is None or not any(_has_core(folder) for folder in
                               spec.submodule_search_locations or ()):
        raise ImportError(
            f"cbp's compiled core is not built in the source tree at {here}, and "
            "no installed cbp was found: run `pip install .` in the checkout "
            "(then use cbp from any directory), or `pip install -e .` to build "
            "the core in place"
        )
    return spec


_spec = _installed_spec()
if _spec is not None:
    # Hand over: the import system returns whatever sys.modules holds for
    # this name once this module's code has run, so the caller (and
    # ``python -m cbp.x``, which looks submodules up through it) gets the
    # installed package, all of whose modules then come from site-packages.
    import importlib.util as _util

    _installed = _util.module_from_spec(_spec)
    _sys.modules[__name__] = _installed
    _spec.loader.exec_module(_installed)
else:
    from ._gradcheck import check_gradients
    from ._inspect import plot_loss_curve
    from ._multilayer_perceptron import MLPClassifier, MLPRegressor
    from ._onnx import register_on_import as _register_onnx_converters
    from ._version import __version__

    __all__ = [
        "MLPClassifier",
        "MLPRegressor",
        "check_gradients",
        "plot_loss_curve",
        "__version__",
    ]

    # skl2onnx.to_onnx then converts cbp's estimators (skl2onnx is not
    # imported here)
    _register_onnx_converters()
