"""ONNX export of cbp's estimators through skl2onnx.

skl2onnx finds a converter by the estimator's exact type, so cbp registers
its own two (``update_registered_converter``). The graph follows
scikit-learn's MLP converter in skl2onnx (``MatMul``, ``Add``, one
activation node per layer, then ``ArgMax`` and ``ArrayFeatureExtractor``
for the labels) and computes what cbp's forward pass computes:

- every hidden activation cbp has, each with the formula of the core:
  ``leaky_relu`` with ``leaky_relu_slope``, ``prelu`` with the learned
  ``prelu_slopes_``, ``elu``, ``softplus``;
- every output: softmax, logistic (binary and multilabel), identity (also
  Huber's, whose loss only shapes training) and exp (``loss='poisson'``);
- in the wider of the input's and the model's dtype, as cbp's prediction
  does (``np.result_type`` of X and ``coefs_``); probabilities and
  predictions come out in the input's dtype, as skl2onnx's converters
  give them, and labels are taken before that cast.

Importing cbp does not import skl2onnx (a slow import). When skl2onnx is
already imported the converters are registered at once; otherwise a
finder on ``sys.meta_path`` waits for skl2onnx's first import and registers
them right after it, then removes itself. Either way
``skl2onnx.to_onnx(est, X[:1])`` works after ``import cbp``, whatever the
order of the two imports, and a program that never exports pays nothing.
"""

import importlib.util
import sys
import threading
import warnings

import numpy as np

from . import _registry

_REGISTER_LOCK = threading.Lock()
_registered = False


def _node(scope, container, op_type, inputs, **attrs):
    """Add one node; return the name of its (single) output."""
    output = scope.get_unique_variable_name(op_type.lower())
    container.add_node(
        op_type, inputs, output, name=scope.get_unique_operator_name(op_type), **attrs
    )
    return output


def _constant(scope, container, proto_dtype, value, name, shape=None):
    """An initializer holding ``value`` (a scalar or an array)."""
    value = np.asarray(value)
    const = scope.get_unique_variable_name(name)
    shape = list(value.shape) if shape is None else shape
    container.add_initializer(const, proto_dtype, shape, value.ravel())
    return const


def _logistic(scope, container, z, proto_dtype, dtype):
    """``1 / (1 + exp(-z))``, the core's formula.

    onnxruntime's Sigmoid kernel approximates: against this formula its
    relative error reaches 1e-3 where the probability is below 1e-4
    (float32) or 1e-5 (float64), and more further out, while Exp is
    accurate; so the graph spells the formula out.
    """
    one = _constant(scope, container, proto_dtype, np.ones((), dtype), "one", shape=[])
    e = _node(scope, container, "Exp", [_node(scope, container, "Neg", [z])])
    return _node(scope, container, "Div", [one, _node(scope, container, "Add", [one, e])])


def _hidden_activation(scope, container, est, z, layer, proto_dtype, dtype):
    """Node(s) of the hidden activation ``est.activation`` applied to z.

    In float32 each is its ONNX operator (the registry's ``onnx_op``). In
    float64 onnxruntime (1.32, as tested) has no kernel for Elu, Softplus
    and PRelu at the opsets skl2onnx targets, and LeakyRelu's alpha is a
    float32 attribute that would round the slope, so those (the rows
    without ``onnx_float64``) are spelled out from operators it runs in
    float64, with the core's formulas; so is the logistic function (see
    :func:`_logistic`).
    """
    act = est.activation
    row = _registry.ACTIVATIONS.get(act)
    if row is None:
        raise ValueError(f"No ONNX conversion for the hidden activation {act!r}.")
    # the slope for z <= 0: the estimator's parameter, or the layer's
    # learned slopes
    if row.param is not None:
        slopes = np.array([getattr(est, row.param)], dtype=dtype)
    elif row.learned:
        slopes = np.asarray(est.prelu_slopes_[layer], dtype=dtype)
    else:
        slopes = None
    if row.onnx_op is not None and (dtype == np.float32 or row.onnx_float64):
        if row.param is not None:
            return _node(scope, container, row.onnx_op, [z], alpha=float(slopes[0]))
        if row.learned:
            slope = _constant(scope, container, proto_dtype, slopes, "slopes")
            return _node(scope, container, row.onnx_op, [z, slope])
        return _node(scope, container, row.onnx_op, [z])
    if act == "identity":
        return z
    if act == "logistic":
        return _logistic(scope, container, z, proto_dtype, dtype)
    one = np.ones((), dtype)
    if act == "softplus":
        # max(z, 0) + log(1 + exp(-|z|)): log1p's rounding is lost where
        # exp(-|z|) < 1e-16, an absolute error below 1e-16
        e = _node(
            scope,
            container,
            "Exp",
            [_node(scope, container, "Neg", [_node(scope, container, "Abs", [z])])],
        )
        one = _constant(scope, container, proto_dtype, one, "one", shape=[])
        tail = _node(scope, container, "Log", [_node(scope, container, "Add", [one, e])])
        return _node(scope, container, "Add", [_node(scope, container, "Relu", [z]), tail])
    if act == "elu":
        # exp(z) - 1 rather than expm1: an absolute error below 1e-16
        one = _constant(scope, container, proto_dtype, one, "one", shape=[])
        negative = _node(
            scope, container, "Sub", [_node(scope, container, "Exp", [z]), one]
        )
    elif slopes is not None:
        slope = _constant(scope, container, proto_dtype, slopes, "slopes")
        negative = _node(scope, container, "Mul", [slope, z])
    else:
        raise ValueError(f"No ONNX conversion for the hidden activation {act!r}.")
    zero = _constant(scope, container, proto_dtype, np.zeros((), dtype), "zero", shape=[])
    positive = _node(scope, container, "Greater", [z, zero])
    return _node(scope, container, "Where", [positive, z, negative])


def _output_activation(scope, container, est, z, proto_dtype, dtype):
    """Node(s) of the output activation ``est.out_activation_`` applied to z."""
    out = est.out_activation_
    if out == "identity":
        return z
    if out == "logistic":
        return _logistic(scope, container, z, proto_dtype, dtype)
    if out == "softmax":
        return _node(scope, container, "Softmax", [z], axis=1)
    if out == "exp":
        return _node(scope, container, "Exp", [z])
    raise ValueError(f"No ONNX conversion for the output activation {out!r}.")


def _compute_dtype(operator, est):
    """(numpy dtype, ONNX type) the graph computes in: cbp's rule, the
    wider of the input's dtype and the model's."""
    from skl2onnx.proto import onnx_proto

    model_dtype = np.asarray(est.coefs_[0]).dtype
    if model_dtype not in (np.float32, np.float64):
        model_dtype = np.dtype(np.float64)
    dtype = np.result_type(_input_dtype(operator), model_dtype)
    proto = (
        onnx_proto.TensorProto.DOUBLE
        if dtype == np.float64
        else onnx_proto.TensorProto.FLOAT
    )
    return dtype, proto


def _input_dtype(operator):
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    in_type = operator.inputs[0].type
    if isinstance(in_type, DoubleTensorType):
        return np.dtype(np.float64)
    if isinstance(in_type, FloatTensorType):
        return np.dtype(np.float32)
    raise TypeError(
        f"cbp's ONNX converters take a float32 or float64 input, got "
        f"{type(in_type).__name__}: cast X to float32 or float64 before "
        "calling to_onnx."
    )


def _forward(scope, operator, container):
    """The network's output (n_samples, n_outputs) in the compute dtype."""
    from skl2onnx.common._apply_operation import apply_cast

    est = operator.raw_operator
    dtype, proto = _compute_dtype(operator, est)
    a = scope.get_unique_variable_name("cast_input")
    apply_cast(scope, operator.inputs[0].full_name, a, container, to=proto)
    n_layers = len(est.coefs_)
    for layer in range(n_layers):
        coef = np.asarray(est.coefs_[layer], dtype=dtype)
        intercept = np.asarray(est.intercepts_[layer], dtype=dtype)
        w = _constant(scope, container, proto, coef, "coefficient")
        b = _constant(
            scope, container, proto, intercept, "intercepts", shape=[1, intercept.size]
        )
        # the core's order: Z = A @ W, then f(Z + b)
        z = _node(scope, container, "Add", [_node(scope, container, "MatMul", [a, w]), b])
        if layer < n_layers - 1:
            a = _hidden_activation(scope, container, est, z, layer, proto, dtype)
        else:
            a = _output_activation(scope, container, est, z, proto, dtype)
    return a, dtype


def _to_output(scope, container, name, dtype, operator_output):
    """Write ``name`` to an output of the operator, cast to its declared type."""
    from skl2onnx.common._apply_operation import apply_cast, apply_identity
    from skl2onnx.common.data_types import DoubleTensorType

    declared = (
        np.float64 if isinstance(operator_output.type, DoubleTensorType) else np.float32
    )
    if declared == dtype:
        apply_identity(scope, name, operator_output.full_name, container)
    else:
        from skl2onnx.proto import onnx_proto

        to = (
            onnx_proto.TensorProto.DOUBLE
            if declared == np.float64
            else onnx_proto.TensorProto.FLOAT
        )
        apply_cast(scope, name, operator_output.full_name, container, to=to)


def _class_labels(est, nocl=False):
    """``classes_`` as ONNX holds them: (values, ONNX type); with
    skl2onnx's option ``nocl`` the class indices instead."""
    from skl2onnx.proto import onnx_proto

    classes = np.asarray(est.classes_)
    if nocl:
        return np.arange(len(classes), dtype=np.int64), onnx_proto.TensorProto.INT64
    if classes.dtype.kind in "biuf":
        # ONNX labels are int64 or strings; float labels are whole numbers
        # (scikit-learn takes other floats for a continuous target)
        return classes.astype(np.int64), onnx_proto.TensorProto.INT64
    return (
        np.array([str(c).encode("utf-8") for c in classes]),
        onnx_proto.TensorProto.STRING,
    )


def convert_classifier(scope, operator, container):
    """skl2onnx converter of :class:`cbp.MLPClassifier`.

    Outputs the labels (``predict``) and the probabilities
    (``predict_proba``), which skl2onnx's parser may pass through ZipMap.
    """
    from skl2onnx.common._apply_operation import (
        apply_cast,
        apply_concat,
        apply_reshape,
        apply_sub,
    )
    from skl2onnx.proto import onnx_proto

    est = operator.raw_operator
    options = container.get_options(est, dict(zipmap=True, nocl=False))
    if options["zipmap"] is True and _input_dtype(operator) == np.float64:
        # the parser has already put a ZipMap behind this operator (the
        # 'columns' form slices the matrix instead and takes float64)
        raise ValueError(
            "ONNX's ZipMap takes float32 probabilities only, and the input is "
            "float64. Pass options={'zipmap': False} (a float64 matrix) or "
            "{'zipmap': 'columns'} (one float64 output per class) to to_onnx, "
            "or a float32 sample."
        )
    y_pred, dtype = _forward(scope, operator, container)
    _, proto = _compute_dtype(operator, est)
    labels_out, proba_out = operator.outputs[0], operator.outputs[1]
    multilabel = est._label_binarizer.y_type_ == "multilabel-indicator"

    if est.n_outputs_ == 1:
        # binary: predict_proba is [1 - p, p]
        one = _constant(scope, container, proto, np.ones((), dtype), "one", shape=[])
        neg = scope.get_unique_variable_name("negative_class_proba")
        apply_sub(scope, [one, y_pred], neg, container, broadcast=1)
        proba = scope.get_unique_variable_name("proba")
        apply_concat(scope, [neg, y_pred], proba, container, axis=1)
    else:
        proba = y_pred
    _to_output(scope, container, proba, dtype, proba_out)

    if multilabel:
        # the label binarizer's threshold: 1 where p > 0.5
        half = _constant(scope, container, proto, np.full((), 0.5, dtype), "half", shape=[])
        above = _node(scope, container, "Greater", [y_pred, half])
        apply_cast(
            scope, above, labels_out.full_name, container, to=onnx_proto.TensorProto.INT64
        )
        return
    # the first of tied classes, as numpy's argmax; for binary targets
    # argmax([1 - p, p]) is 1 exactly where p > 0.5 (1 - p is exact for
    # p >= 0.5), the label binarizer's threshold
    classes, class_type = _class_labels(est, options["nocl"])
    classes_name = _constant(scope, container, class_type, classes, "classes")
    index = _node(scope, container, "ArgMax", [proba], axis=1)
    picked = _node(
        scope,
        container,
        "ArrayFeatureExtractor",
        [classes_name, index],
        op_domain="ai.onnx.ml",
    )
    apply_reshape(scope, picked, labels_out.full_name, container, desired_shape=(-1,))


def convert_regressor(scope, operator, container):
    """skl2onnx converter of :class:`cbp.MLPRegressor`: the predictions,
    shape (n_samples, n_outputs)."""
    y_pred, dtype = _forward(scope, operator, container)
    _to_output(scope, container, y_pred, dtype, operator.outputs[0])


def _check_fitted(est):
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(est)


def shape_classifier(operator):
    """skl2onnx shape calculator of :class:`cbp.MLPClassifier`: labels
    (int64 or string; a 0/1 int64 matrix for multilabel targets) and
    probabilities in the input's float type."""
    from skl2onnx.common.data_types import (
        DoubleTensorType,
        FloatTensorType,
        Int64TensorType,
        StringTensorType,
    )
    from skl2onnx.common.utils import check_input_and_output_numbers

    est = operator.raw_operator
    _check_fitted(est)
    check_input_and_output_numbers(operator, input_count_range=1, output_count_range=2)
    in_dtype = _input_dtype(operator)
    n = operator.inputs[0].get_first_dimension()
    n_classes = len(est.classes_)
    if est._label_binarizer.y_type_ == "multilabel-indicator":
        operator.outputs[0].set_type(Int64TensorType([n, n_classes]))
    else:
        nocl = operator.scope_inst.get_options(est, dict(nocl=False))["nocl"]
        _, class_type = _class_labels(est, nocl)
        from skl2onnx.proto import onnx_proto

        label = (
            StringTensorType
            if class_type == onnx_proto.TensorProto.STRING
            else Int64TensorType
        )
        operator.outputs[0].set_type(label([n]))
    proba = DoubleTensorType if in_dtype == np.float64 else FloatTensorType
    operator.outputs[1].set_type(proba([n, n_classes]))


def shape_regressor(operator):
    """skl2onnx shape calculator of :class:`cbp.MLPRegressor`: the
    predictions, (n_samples, n_outputs) in the input's float type."""
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType
    from skl2onnx.common.utils import check_input_and_output_numbers

    est = operator.raw_operator
    _check_fitted(est)
    check_input_and_output_numbers(operator, input_count_range=1, output_count_range=1)
    in_dtype = _input_dtype(operator)
    n = operator.inputs[0].get_first_dimension()
    out = DoubleTensorType if in_dtype == np.float64 else FloatTensorType
    operator.outputs[0].set_type(out([n, est.n_outputs_]))


def register():
    """Register cbp's converters with skl2onnx (imports skl2onnx).

    Idempotent. :func:`register_on_import`, called when cbp is imported,
    runs it at the right time; call it directly only after replacing
    skl2onnx's registry.
    """
    global _registered
    with _REGISTER_LOCK:
        from skl2onnx import update_registered_converter

        from ._multilayer_perceptron import MLPClassifier, MLPRegressor

        update_registered_converter(
            MLPClassifier,
            "CbpMLPClassifier",
            shape_classifier,
            convert_classifier,
            options={
                "zipmap": [True, False, "columns"],
                "output_class_labels": [False, True],
                "nocl": [False, True],
            },
        )
        update_registered_converter(
            MLPRegressor, "CbpMLPRegressor", shape_regressor, convert_regressor
        )
        _registered = True


def _register_quietly():
    """Register, turning a failure into a warning: an incompatible skl2onnx
    must not break the import of skl2onnx itself."""
    try:
        register()
    except Exception as exc:  # noqa: BLE001 - any failure of a third-party API
        warnings.warn(
            f"cbp could not register its ONNX converters with skl2onnx "
            f"({type(exc).__name__}: {exc}); to_onnx will not convert cbp's "
            "estimators.",
            RuntimeWarning,
            stacklevel=2,
        )


class _RegisterAfterImport:
    """A meta path finder that finds nothing itself: on skl2onnx's first
    import it wraps the real loader's ``exec_module`` so that cbp's
    converters are registered as soon as skl2onnx's package has run, then
    leaves ``sys.meta_path``. A plain class: importing importlib.abc for
    its base class is not worth the time."""

    def __init__(self):
        self._finding = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "skl2onnx" or self._finding:
            return None
        # the import system holds skl2onnx's module lock here, so no
        # other thread finds it at the same time
        self._finding = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._finding = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_register(module):
            exec_module(module)
            if module.__name__ != "skl2onnx":
                # a loader shared with other modules (a zipimporter)
                return
            self._remove()
            _register_quietly()

        # an attribute of this loader instance, not of its class
        spec.loader.exec_module = exec_and_register
        return spec

    def _remove(self):
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass


def register_on_import():
    """Have cbp's converters registered with skl2onnx when it is imported.

    Registers now when skl2onnx is already imported; otherwise after its
    first import. Never imports skl2onnx itself, so ``import cbp`` stays
    fast and works without it.
    """
    if _registered:
        return
    if sys.modules.get("skl2onnx") is not None:
        _register_quietly()
        return
    if not any(isinstance(f, _RegisterAfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterImport())
