"""cbp: multilayer perceptrons trained by a typed Cython backpropagation core.

The estimators are drop-in replacements for scikit-learn's
:class:`sklearn.neural_network.MLPClassifier` and
:class:`sklearn.neural_network.MLPRegressor`.
"""

from ._multilayer_perceptron import MLPClassifier, MLPRegressor
from ._version import __version__

__all__ = ["MLPClassifier", "MLPRegressor", "__version__"]
