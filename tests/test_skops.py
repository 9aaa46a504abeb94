"""skops.io persistence: the trusted types the docs list, and round trips.

Needs the optional ``cbp[skops]`` extra.
"""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

from cbp import MLPClassifier, MLPRegressor

try:
    import skops.io as sio
except ImportError as exc:  # pragma: no cover - depends on the environment
    pytest.skip(
        f"skops persistence needs skops (pip install cbp[skops]): {exc}",
        allow_module_level=True,
    )

# The list docs/user_guide/saving.rst gives users to pass as ``trusted=``.
TRUSTED = [
    "cbp._multilayer_perceptron.MLPClassifier",
    "cbp._multilayer_perceptron.MLPRegressor",
    "cbp._optimizers._StochasticOptimizer",
]
_OPTIMIZER = "cbp._optimizers._StochasticOptimizer"

_RNG = np.random.RandomState(0)
_X = _RNG.randn(60, 4)
_X_SPARSE = sp.csr_matrix(np.where(np.abs(_X) > 0.7, _X, 0.0))

# (estimator, X, y): every kind of fitted state cbp keeps
CONFIGURATIONS = {
    "multiclass-adam": (MLPClassifier((5,)), _X, _RNG.randint(0, 3, 60)),
    "binary-strings-lbfgs": (
        MLPClassifier((5,), solver="lbfgs"),
        _X,
        np.array(["no", "yes"])[_RNG.randint(0, 2, 60)],
    ),
    "multilabel-sgd": (MLPClassifier((5,), solver="sgd"), _X, _RNG.randint(0, 2, (60, 3))),
    "prelu-rmsprop-dropout": (
        MLPClassifier((5, 4), activation="prelu", solver="rmsprop", dropout=0.2),
        _X,
        _RNG.randint(0, 3, 60),
    ),
    "class-weight-early-stopping": (
        MLPClassifier((5,), class_weight="balanced", early_stopping=True, activation="elu"),
        _X,
        _RNG.randint(0, 2, 60),
    ),
    "float32-leaky-relu": (
        MLPClassifier((5,), activation="leaky_relu", leaky_relu_slope=0.2),
        _X.astype(np.float32),
        _RNG.randint(0, 3, 60),
    ),
    "sparse-softplus": (
        MLPClassifier((5,), activation="softplus"),
        _X_SPARSE,
        _RNG.randint(0, 2, 60),
    ),
    "regressor-squared-error": (
        MLPRegressor(hidden_layer_sizes=(5,)),
        _X,
        _X[:, :2] @ [1.0, -2.0],
    ),
    "regressor-poisson-lbfgs": (
        MLPRegressor(loss="poisson", hidden_layer_sizes=(5,), solver="lbfgs"),
        _X,
        np.abs(_X[:, 0]),
    ),
    "regressor-huber-two-outputs": (
        MLPRegressor(loss="huber", hidden_layer_sizes=(5,), weight_decay=0.01),
        _X,
        _X[:, :2],
    ),
}


def _fitted(name):
    est, X, y = CONFIGURATIONS[name]
    est = clone(est).set_params(max_iter=15, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y), X, y


def _expected_untrusted(est):
    names = [f"cbp._multilayer_perceptron.{type(est).__name__}"]
    if est.solver != "lbfgs":
        names.append(_OPTIMIZER)
    return sorted(names)


@pytest.mark.parametrize("name", sorted(CONFIGURATIONS))
def test_round_trip_with_the_documented_trusted_types(name, tmp_path):
    est, X, _ = _fitted(name)
    path = tmp_path / "model.skops"
    sio.dump(est, path)
    assert sorted(sio.get_untrusted_types(file=path)) == _expected_untrusted(est)
    loaded = sio.load(path, trusted=TRUSTED)
    assert type(loaded) is type(est)
    np.testing.assert_array_equal(loaded.predict(X), est.predict(X))
    if hasattr(est, "predict_proba"):
        np.testing.assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))
    for a, b in zip(loaded.coefs_, est.coefs_):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_documented_list_is_exactly_what_cbp_needs():
    # each entry is needed by some fitted estimator, none is missing
    needed = set()
    for name in CONFIGURATIONS:
        est, _, _ = _fitted(name)
        needed.update(sio.get_untrusted_types(data=sio.dumps(est)))
    assert sorted(needed) == sorted(TRUSTED)


@pytest.mark.parametrize("name", ["prelu-rmsprop-dropout", "regressor-huber-two-outputs"])
def test_loaded_model_goes_on_training_as_the_original(name):
    # the optimizer's state (moments, step, learning rate) and the PReLU
    # slopes come back: one more partial_fit gives the same weights
    est, X, y = _fitted(name)
    loaded = sio.loads(sio.dumps(est), trusted=TRUSTED)
    est.partial_fit(X, y)
    loaded.partial_fit(X, y)
    for a, b in zip(loaded.coefs_, est.coefs_):
        np.testing.assert_array_equal(a, b)
    if name.startswith("prelu"):
        for a, b in zip(loaded.prelu_slopes_, est.prelu_slopes_):
            np.testing.assert_array_equal(a, b)


def test_loading_without_trusting_cbp_is_refused():
    est, _, _ = _fitted("multiclass-adam")
    with pytest.raises(sio.exceptions.UntrustedTypesFoundException, match="MLPClassifier"):
        sio.loads(sio.dumps(est))


def test_files_naming_the_optimizer_in_the_estimators_module_load(monkeypatch):
    # files written by builds that defined the optimizer's class in
    # cbp._multilayer_perceptron name it there: the name still loads, as
    # the same class, and training goes on as in the original
    from cbp._optimizers import _StochasticOptimizer

    old_name = "cbp._multilayer_perceptron._StochasticOptimizer"
    est, X, y = _fitted("multiclass-adam")
    with monkeypatch.context() as patch:
        patch.setattr(_StochasticOptimizer, "__module__", "cbp._multilayer_perceptron")
        data = sio.dumps(est)
    assert old_name in sio.get_untrusted_types(data=data)
    loaded = sio.loads(data, trusted=["cbp._multilayer_perceptron.MLPClassifier", old_name])
    assert type(loaded._optimizer) is _StochasticOptimizer
    est.partial_fit(X, y)
    loaded.partial_fit(X, y)
    for a, b in zip(loaded.coefs_, est.coefs_):
        np.testing.assert_array_equal(a, b)
