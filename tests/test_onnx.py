"""ONNX export through skl2onnx: onnxruntime's outputs against cbp's own.

Needs the optional ``cbp[onnx]`` extra (skl2onnx, onnxruntime, onnx); without
it those tests are skipped.
"""

import subprocess
import sys
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cbp import MLPClassifier, MLPRegressor

try:
    import onnxruntime as ort
    from skl2onnx import to_onnx

    ONNX_MISSING = None
except ImportError as exc:  # pragma: no cover - depends on the environment
    ONNX_MISSING = (
        f"ONNX export needs skl2onnx and onnxruntime (pip install cbp[onnx]): {exc}"
    )

needs_onnx = pytest.mark.skipif(ONNX_MISSING is not None, reason=str(ONNX_MISSING))

ACTIVATIONS = [
    "identity",
    "logistic",
    "tanh",
    "relu",
    "leaky_relu",
    "elu",
    "softplus",
    "prelu",
]
DTYPES = [np.float32, np.float64]
# relative to the largest output: a value near zero that comes from
# cancellation has no relative precision in either runtime
RTOL = {np.float32: 1e-5, np.float64: 1e-9}


def _data(n_samples=40, n_features=4, seed=0):
    return np.random.RandomState(seed).randn(n_samples, n_features)


def _fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y)


def _session(est, X, **options):
    onx = to_onnx(est, X[:1], options=options or None)
    sess = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess


def _run(est, X, **options):
    sess = _session(est, X, **options)
    return sess.run(None, {sess.get_inputs()[0].name: X})


def _assert_close(actual, expected, dtype):
    expected = np.asarray(expected)
    rtol = RTOL[dtype]
    scale = max(float(np.abs(expected).max()), np.finfo(dtype).tiny)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


def _classifier(activation, dtype, y, leaky_relu_slope=0.05, **kwargs):
    X = _data().astype(dtype)
    est = MLPClassifier(
        hidden_layer_sizes=(6, 5),
        activation=activation,
        leaky_relu_slope=leaky_relu_slope,
        solver="lbfgs",
        max_iter=30,
        random_state=0,
        **kwargs,
    )
    return _fit(est, X, y), X


def _targets(kind, n_samples=40):
    rng = np.random.RandomState(1)
    if kind == "multiclass":
        return rng.randint(0, 3, n_samples)
    if kind == "binary":
        return rng.randint(0, 2, n_samples)
    return rng.randint(0, 2, (n_samples, 3))  # multilabel


@needs_onnx
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("kind", ["multiclass", "binary", "multilabel"])
def test_classifier_matches_predict_and_predict_proba(kind, activation, dtype):
    est, X = _classifier(activation, dtype, _targets(kind))
    assert est.out_activation_ == ("softmax" if kind == "multiclass" else "logistic")
    assert est.coefs_[0].dtype == dtype
    labels, proba = _run(est, X, zipmap=False)
    assert proba.dtype == dtype
    _assert_close(proba, est.predict_proba(X), dtype)
    np.testing.assert_array_equal(labels, est.predict(X))


@needs_onnx
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize(
    "loss, n_outputs",
    [("squared_error", 1), ("squared_error", 2), ("poisson", 1), ("huber", 2)],
)
def test_regressor_matches_predict(loss, n_outputs, activation, dtype):
    X = _data().astype(dtype)
    y = np.abs(X[:, :n_outputs] + 0.5 * X[:, 1:2] ** 2)
    est = MLPRegressor(
        loss=loss,
        hidden_layer_sizes=(6, 5),
        activation=activation,
        leaky_relu_slope=0.05,
        solver="lbfgs",
        max_iter=30,
        random_state=0,
    )
    _fit(est, X, y.ravel() if n_outputs == 1 else y)
    assert est.out_activation_ == ("exp" if loss == "poisson" else "identity")
    (pred,) = _run(est, X)
    assert pred.dtype == dtype and pred.shape == (len(X), n_outputs)
    _assert_close(pred, est.predict(X).reshape(len(X), n_outputs), dtype)


@needs_onnx
def test_prelu_uses_each_units_learned_slope():
    # slopes that differ per unit and from their start (0.25): the graph
    # must read prelu_slopes_, not one shared value
    est, X = _classifier("prelu", np.float64, _targets("multiclass"))
    slopes = np.concatenate(est.prelu_slopes_)
    assert np.ptp(slopes) > 1e-3
    est.prelu_slopes_[0][:] = np.linspace(-0.5, 2.0, est.prelu_slopes_[0].size)
    _, proba = _run(est, X, zipmap=False)
    _assert_close(proba, est.predict_proba(X), np.float64)


@needs_onnx
@pytest.mark.parametrize("slope", [0.0, 0.3, 1.0 / 3.0])
def test_leaky_relu_keeps_its_slope(slope):
    est, X = _classifier(
        "leaky_relu", np.float64, _targets("multiclass"), leaky_relu_slope=slope
    )
    _, proba = _run(est, X, zipmap=False)
    _assert_close(proba, est.predict_proba(X), np.float64)


@needs_onnx
@pytest.mark.parametrize(
    "labels",
    [
        np.array([3, -7, 10]),
        np.array(["cat", "dog", "émeu"], dtype=object),
        np.array(["no", "yes"]),
        np.array([False, True]),
        np.array([1.0, 2.0, 5.0]),
    ],
    ids=["ints", "strings", "binary-strings", "bools", "whole-floats"],
)
@pytest.mark.parametrize("zipmap", [False, True, "columns"])
def test_classifier_labels_of_any_type_with_zipmap_on_and_off(labels, zipmap):
    y = labels[_targets("multiclass") % len(labels)]
    est, X = _classifier("tanh", np.float32, y)
    expected_labels = est.predict(X)
    expected_proba = est.predict_proba(X)
    outputs = _run(est, X, zipmap=zipmap)
    got_labels = outputs[0]
    if labels.dtype.kind in "bf":
        # ONNX labels are int64 or strings
        expected_labels = expected_labels.astype(np.int64)
    np.testing.assert_array_equal(got_labels, expected_labels)
    keys = [c.item() if labels.dtype.kind != "O" else c for c in est.classes_]
    if labels.dtype.kind in "bf":
        keys = [int(k) for k in keys]
    if zipmap is False:
        proba = outputs[1]
    elif zipmap is True:
        # a list of {label: probability}, one dict per sample
        assert [list(d) for d in outputs[1]] == [keys] * len(X)
        proba = np.array([[d[k] for k in keys] for d in outputs[1]])
    else:
        # one output per class
        proba = np.column_stack(outputs[1:])
    _assert_close(proba, expected_proba, np.float32)


@needs_onnx
def test_zipmap_with_float64_input_is_a_clear_error():
    est, X = _classifier("relu", np.float64, _targets("multiclass"))
    with pytest.raises(ValueError, match="ZipMap takes float32"):
        to_onnx(est, X[:1])


@needs_onnx
def test_zipmap_columns_with_float64_input():
    est, X = _classifier(
        "softplus", np.float64, np.array(["a", "b", "c"])[_targets("multiclass")]
    )
    labels, *columns = _run(est, X, zipmap="columns")
    np.testing.assert_array_equal(labels, est.predict(X))
    _assert_close(np.column_stack(columns), est.predict_proba(X), np.float64)


@needs_onnx
def test_multilabel_with_zipmap():
    est, X = _classifier("relu", np.float32, _targets("multilabel"))
    labels, proba = _run(est, X, zipmap=True)
    np.testing.assert_array_equal(labels, est.predict(X))
    _assert_close(
        np.array([[d[k] for k in range(3)] for d in proba]),
        est.predict_proba(X),
        np.float32,
    )


@needs_onnx
@pytest.mark.parametrize(
    "model_dtype, input_dtype", [(np.float32, np.float64), (np.float64, np.float32)]
)
def test_mixed_dtypes_compute_in_the_wider_as_cbp_does(model_dtype, input_dtype):
    # cbp predicts in np.result_type(X, coefs_); the graph's outputs are in
    # the input's dtype (skl2onnx's convention), cast after the float64 pass
    X = _data().astype(model_dtype)
    y = np.abs(X[:, 0]) + X[:, 1] ** 2
    est = _fit(
        MLPRegressor(
            loss="poisson",
            hidden_layer_sizes=(6,),
            activation="softplus",
            solver="lbfgs",
            max_iter=30,
            random_state=0,
        ),
        X,
        y,
    )
    X_in = X.astype(input_dtype)
    (pred,) = _run(est, X_in)
    assert pred.dtype == input_dtype
    _assert_close(pred.ravel(), est.predict(X_in), np.float32)


@needs_onnx
def test_model_trained_on_sparse_input_exports_with_a_dense_sample():
    X = _data()
    X[np.abs(X) < 0.8] = 0
    X_csr = sp.csr_matrix(X)
    est = _fit(
        MLPClassifier(
            hidden_layer_sizes=(5,),
            activation="elu",
            solver="lbfgs",
            max_iter=30,
            random_state=0,
        ),
        X_csr,
        _targets("multiclass"),
    )
    sess = _session(est, X[:1], zipmap=False)
    labels, proba = sess.run(None, {sess.get_inputs()[0].name: X_csr.toarray()})
    np.testing.assert_array_equal(labels, est.predict(X_csr))
    _assert_close(proba, est.predict_proba(X_csr), np.float64)


@needs_onnx
def test_pipeline_with_a_cbp_estimator_exports():
    X = _data() * 10 + 3
    est = make_pipeline(
        StandardScaler(),
        MLPRegressor(
            hidden_layer_sizes=(5,),
            activation="leaky_relu",
            solver="lbfgs",
            max_iter=30,
            random_state=0,
        ),
    )
    _fit(est, X, X[:, 0] - X[:, 1])
    (pred,) = _run(est, X)
    _assert_close(pred.ravel(), est.predict(X), np.float64)


@needs_onnx
def test_unfitted_estimator_is_a_clear_error():
    with pytest.raises(NotFittedError):
        to_onnx(MLPRegressor(), _data()[:1])


@needs_onnx
def test_integer_input_is_a_clear_error():
    est, X = _classifier("relu", np.float32, _targets("binary"))
    with pytest.raises(TypeError, match="float32 or float64 input"):
        to_onnx(est, X[:1].astype(np.int64), options={"zipmap": False})


@needs_onnx
@pytest.mark.parametrize("skl2onnx_first", [False, True])
def test_import_cbp_registers_lazily_in_either_order(skl2onnx_first):
    # a fresh interpreter: importing cbp must not import skl2onnx, and the
    # converters must be there once skl2onnx is imported, before or after
    code = "\n".join(
        [
            "import sys",
            "import skl2onnx" if skl2onnx_first else "",
            "import cbp",
            "assert ('skl2onnx' in sys.modules) == %r, 'cbp imported skl2onnx'"
            % skl2onnx_first,
            "from skl2onnx._supported_operators import sklearn_operator_name_map as m",
            "assert m[cbp.MLPClassifier] == 'CbpMLPClassifier'",
            "assert m[cbp.MLPRegressor] == 'CbpMLPRegressor'",
            "assert not any(type(f).__module__ == 'cbp._onnx' for f in sys.meta_path)",
        ]
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@needs_onnx
def test_option_nocl_gives_class_indices():
    y = np.array(["cat", "dog", "emu"])[_targets("multiclass")]
    est, X = _classifier("relu", np.float32, y)
    labels, _ = _run(est, X, zipmap=False, nocl=True)
    np.testing.assert_array_equal(labels, np.searchsorted(est.classes_, est.predict(X)))


def test_import_cbp_without_skl2onnx():
    # skl2onnx blocked (as when it is not installed): cbp imports without a
    # warning and leaves skl2onnx's ImportError as it is
    code = "\n".join(
        [
            "import sys, warnings",
            "warnings.simplefilter('error')",
            "sys.modules['skl2onnx'] = None",
            "import cbp",
            "try:",
            "    import skl2onnx",
            "except ImportError:",
            "    pass",
            "else:",
            "    raise AssertionError('skl2onnx imported')",
        ]
    )
    subprocess.run([sys.executable, "-c", code], check=True)
