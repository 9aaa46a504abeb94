"""Conversion between cbp's estimators and scikit-learn's fitted MLPs.

Both libraries keep a fitted network in the same attributes (``coefs_``,
``intercepts_``, ``out_activation_``, the label binarizer, ...), so a
conversion copies them and checks that the other library can express the
network: its hidden activation, output activation and loss, as the rows of
:mod:`cbp._registry` say. Parameters that
only shape training (``n_jobs``, ``callbacks``, ``comm``) are dropped; others the
target lacks are dropped with a warning, since refitting the converted
estimator would then train differently.
"""

import copy
import inspect
import warnings

import numpy as np
from sklearn.base import ClassifierMixin, is_classifier
from sklearn.utils._param_validation import (
    InvalidParameterError,
    validate_parameter_constraints,
)
from sklearn.utils.validation import check_is_fitted

from . import _registry

# Fitted state that scikit-learn's MLPs keep (public and private).
_FITTED_ATTRIBUTES = (
    "coefs_",
    "intercepts_",
    "n_features_in_",
    "feature_names_in_",
    "n_iter_",
    "n_layers_",
    "n_outputs_",
    "out_activation_",
    "t_",
    "loss_",
    "loss_curve_",
    "best_loss_",
    "validation_scores_",
    "best_validation_score_",
    "classes_",
    "_label_binarizer",
    "_no_improvement_count",
)

# cbp parameters that only say how training runs, not what network it
# gives (results do not depend on the thread count; callbacks that return
# nothing do nothing; an MPI communicator is no part of the model).
_TRAINING_ONLY = ("n_jobs", "callbacks", "comm")


def _sklearn_class(est):
    """scikit-learn's counterpart of a cbp estimator (instance or class)."""
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    if isinstance(est, type):
        classifier = issubclass(est, ClassifierMixin)
    else:
        classifier = is_classifier(est)
    return MLPClassifier if classifier else MLPRegressor


def _is_default(value, default):
    try:
        return bool(value == default) or value is default
    except (TypeError, ValueError):  # arrays compare elementwise
        return False


def _copy_fitted(source, target):
    for name in _FITTED_ATTRIBUTES:
        if hasattr(source, name):
            value = getattr(source, name)
            if name in ("coefs_", "intercepts_"):
                value = [np.array(a, copy=True) for a in value]
            else:
                value = copy.deepcopy(value)
            setattr(target, name, value)


def _n_layer_params(est):
    return sum(c.size for c in est.coefs_) + sum(b.size for b in est.intercepts_)


def _check_sklearn_expresses(est, sk_class):
    """Raise ValueError unless scikit-learn has the network's activations and loss."""
    activation = _registry.ACTIVATIONS.get(est.activation)
    loss = getattr(est, "loss", None)
    unexpressed = None
    if activation is None or not activation.in_sklearn:
        unexpressed = f"activation={est.activation!r}"
    elif not all(row.in_sklearn for row in _registry.OUTPUTS if row.name == loss):
        unexpressed = f"loss={loss!r}"
    if unexpressed is not None:
        raise ValueError(
            f"scikit-learn's {sk_class.__name__} cannot express {unexpressed}; "
            "to_sklearn() needs a network that scikit-learn can evaluate."
        )
    if not any(
        row.in_sklearn
        for row in _registry.OUTPUTS
        if row.out_activation == est.out_activation_
    ):
        raise ValueError(
            f"scikit-learn has no output activation {est.out_activation_!r}; "
            "to_sklearn() cannot express this network."
        )


def to_sklearn(est):
    """Return a fitted scikit-learn MLP equivalent to the cbp estimator ``est``.

    Parameters
    ----------
    est : MLPClassifier or MLPRegressor
        A fitted cbp estimator.

    Returns
    -------
    sk_est : sklearn.neural_network.MLPClassifier or MLPRegressor
        With copies of the weights and the fitted attributes.

    Raises
    ------
    ValueError
        When scikit-learn cannot express the network.
    """
    check_is_fitted(est)
    sk_class = _sklearn_class(est)
    _check_sklearn_expresses(est, sk_class)

    constraints = sk_class._parameter_constraints
    sk_names = set(inspect.signature(sk_class).parameters)
    own_defaults = {
        k: p.default for k, p in inspect.signature(type(est)).parameters.items()
    }
    kept, dropped = {}, []
    for name, value in est.get_params(deep=False).items():
        if name in sk_names:
            try:
                validate_parameter_constraints(
                    {name: constraints[name]}, {name: value}, sk_class.__name__
                )
            except InvalidParameterError:
                dropped.append(f"{name}={value!r}")
            else:
                kept[name] = value
        elif name not in _TRAINING_ONLY and not _is_default(
            value, own_defaults.get(name, inspect.Parameter.empty)
        ):
            dropped.append(f"{name}={value!r}")
    theta = getattr(est, "_theta", None)
    if theta is not None and theta.shape[0] != _n_layer_params(est):
        raise ValueError(
            "The network has trainable parameters beyond coefs_ and intercepts_ "
            f"(activation={est.activation!r}), which scikit-learn cannot express."
        )
    if dropped:
        warnings.warn(
            f"scikit-learn's {sk_class.__name__} has no {', '.join(dropped)}: "
            "they are left at scikit-learn's defaults. The returned estimator "
            "predicts the same, but refitting it would train differently.",
            UserWarning,
            stacklevel=3,
        )
    sk_est = sk_class(**kept)
    _copy_fitted(est, sk_est)
    return sk_est


def from_sklearn(cls, sk_est):
    """Return a fitted ``cls`` (a cbp estimator) equivalent to ``sk_est``.

    Parameters
    ----------
    cls : type
        :class:`cbp.MLPClassifier` or :class:`cbp.MLPRegressor`.
    sk_est : sklearn.neural_network.MLPClassifier or MLPRegressor
        A fitted scikit-learn estimator of the matching kind.

    Returns
    -------
    est : cls
        With copies of the weights packed into one flat parameter vector.

    Raises
    ------
    TypeError
        When ``sk_est`` is not the matching scikit-learn estimator.
    ValueError
        When cbp cannot express the network.
    """
    sk_class = _sklearn_class(cls)
    if not isinstance(sk_est, sk_class):
        raise TypeError(
            f"{cls.__name__}.from_sklearn takes a fitted "
            f"sklearn.neural_network.{sk_class.__name__}, got "
            f"{type(sk_est).__name__}."
        )
    check_is_fitted(sk_est)
    names = set(inspect.signature(cls).parameters)
    params = {k: v for k, v in sk_est.get_params(deep=False).items() if k in names}
    est = cls(**params)
    try:
        est._validate_params()
    except InvalidParameterError as exc:
        raise ValueError(f"cbp cannot express this scikit-learn network: {exc}") from None
    if not any(row.out_activation == sk_est.out_activation_ for row in _registry.OUTPUTS):
        raise ValueError(
            f"cbp has no output activation {sk_est.out_activation_!r}; "
            f"{cls.__name__}.from_sklearn cannot express this network."
        )
    _copy_fitted(sk_est, est)
    est._packed_params()  # coefs_/intercepts_ become views of one vector
    return est
