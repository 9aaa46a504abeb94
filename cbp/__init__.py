"""cbp: multilayer perceptrons trained by a typed Cython backpropagation core.

The estimators are drop-in replacements for scikit-learn's
:class:`sklearn.neural_network.MLPClassifier` and
:class:`sklearn.neural_network.MLPRegressor`. Beside them:
:func:`check_gradients` (the core's gradient against finite differences)
and :func:`plot_loss_curve` (matplotlib).
"""

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

# skl2onnx.to_onnx then converts cbp's estimators (skl2onnx is not imported here)
_register_onnx_converters()
