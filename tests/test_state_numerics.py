"""Estimator state and numerics: what a fit leaves behind, and extreme values.

Grouped by concern: copying and pickling (never change the estimator, safe
while other threads predict); every fit starting clean; NaN propagating
through the core's elementwise kernels; sample and class weights (an
all-zero total is an error, float32 data trains with any finite float64
weight); divergence and the messages scikit-learn gives; extreme values and
dtypes.
"""

import copy
import pickle
import re
import threading
import warnings

import numpy as np
import pytest
import sklearn.neural_network as sknn
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

import cbp._multilayer_perceptron as mlp_module
from cbp import MLPClassifier, MLPRegressor, _core

from _support import CoreProxy, quiet

# the core's tables: an activation or solver added to the core is checked here too
STOCHASTIC = list(_core.SOLVERS)
SOLVERS = STOCHASTIC + ["lbfgs"]
HIDDEN = list(_core.HIDDEN_ACTIVATIONS)
DTYPES = [np.float64, np.float32]


def _data(n=120, n_features=4, seed=0, dtype=np.float64):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, n_features)).astype(dtype)
    y_class = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    y_reg = X @ np.arange(1.0, n_features + 1) / n_features
    return X, y_class, y_reg


def _params(est):
    return [np.array(a, copy=True) for a in est.coefs_ + est.intercepts_]


def _assert_same_bits(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert u.dtype == v.dtype and u.shape == v.shape
        assert u.tobytes() == v.tobytes()




# ---------------------------------------------------------------------------
# Copying and pickling never change the estimator.


def _copiers():
    return {
        "pickle": lambda est: pickle.loads(pickle.dumps(est)),
        "copy": copy.copy,
        "deepcopy": copy.deepcopy,
        "clone": clone,
    }


@pytest.mark.parametrize("how", sorted(_copiers()))
@pytest.mark.parametrize("activation", ["relu", "prelu"])
def test_copying_a_fitted_estimator_leaves_it_unchanged(how, activation):
    X, y, _ = _data()
    with quiet():
        est = MLPClassifier(hidden_layer_sizes=(6,), activation=activation,
                            max_iter=5, random_state=0).fit(X, y)
    theta = est._theta
    keys = set(vars(est))
    copied = _copiers()[how](est)
    # the live estimator keeps its flat vector and its views into it
    assert set(vars(est)) == keys
    assert est._theta is theta
    assert est._layout().is_packed(theta, est.coefs_, est.intercepts_,
                                   getattr(est, "prelu_slopes_", ()))
    if how != "clone":
        np.testing.assert_array_equal(copied.predict_proba(X), est.predict_proba(X))
        # the copy has its own parameters
        assert not np.shares_memory(copied._theta, theta)


_SNAPSHOTS = []


def _snapshot(est, info):
    """A callback that copies the estimator (module level: picklable)."""
    how = _SNAPSHOTS[0]
    _SNAPSHOTS.append(_copiers()[how](est))


@pytest.mark.parametrize("how", ["pickle", "copy", "deepcopy"])
@pytest.mark.parametrize("solver", STOCHASTIC)
@pytest.mark.parametrize("early_stopping", [False, True])
def test_copying_inside_a_callback_does_not_change_the_fit(how, solver, early_stopping):
    X, _, y = _data()
    _SNAPSHOTS[:] = [how]
    kw = dict(hidden_layer_sizes=(7,), solver=solver, max_iter=6, random_state=0,
              learning_rate_init=0.01, early_stopping=early_stopping)
    with quiet():
        plain = MLPRegressor(**kw).fit(X, y)
        watched = MLPRegressor(callbacks=[_snapshot], **kw).fit(X, y)
    copies = _SNAPSHOTS[1:]
    _assert_same_bits(_params(watched), _params(plain))
    assert watched.loss_curve_ == plain.loss_curve_
    assert len(copies) == watched.n_iter_
    # each copy holds the weights of its epoch, usable on its own
    assert np.isfinite(copies[-1].predict(X)).all()


def test_pickling_while_threads_predict():
    X, y, _ = _data(200)
    with quiet():
        est = MLPClassifier(hidden_layer_sizes=(16,), max_iter=5, random_state=0).fit(X, y)
    expected = est.predict_proba(X)
    errors, stop = [], threading.Event()

    def predict():
        try:
            while not stop.is_set():
                np.testing.assert_array_equal(est.predict_proba(X), expected)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=predict) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(300):
            clone_ = pickle.loads(pickle.dumps(est))
            np.testing.assert_array_equal(clone_.coefs_[0], est.coefs_[0])
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[0]


@pytest.mark.parametrize("how", sorted(_copiers()))
def test_copying_an_unfitted_estimator(how):
    est = MLPRegressor(hidden_layer_sizes=(3,), alpha=0.5)
    copied = _copiers()[how](est)
    assert copied.get_params() == est.get_params()
    assert not hasattr(copied, "coefs_") and not hasattr(est, "coefs_")


# ---------------------------------------------------------------------------
# Every fit starts clean.


class _Abort(Exception):
    pass


def _abort_at(epoch):
    def callback(est, info):
        if info["epoch"] == epoch:
            raise _Abort

    return callback


@pytest.mark.parametrize("solver", STOCHASTIC)
@pytest.mark.parametrize("next_hidden", [(5,), (9, 4)])
def test_ctrl_c_after_an_aborted_fit_keeps_the_new_fits_weights(
    monkeypatch, solver, next_hidden
):
    """A fit aborted by a raising callback, then Ctrl-C in the first epoch of
    the next fit: the next fit's own starting weights are kept (scikit-learn
    restores the best weights, the initial ones before any epoch), never
    the aborted fit's."""
    X, y, _ = _data()
    kw = dict(solver=solver, early_stopping=True, random_state=0, max_iter=20,
              learning_rate_init=0.01)
    est = MLPClassifier(hidden_layer_sizes=(5,), callbacks=[_abort_at(4)], **kw)
    with pytest.raises(_Abort):
        est.fit(X, y)

    def interrupted(real, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mlp_module, "_core", CoreProxy({"epoch": interrupted}))
    est.set_params(hidden_layer_sizes=next_hidden, callbacks=None)
    with pytest.warns(UserWarning, match="interrupted"):
        est.fit(X, y)
    # the initial weights of a fresh fit with the same seed
    fresh = MLPClassifier(hidden_layer_sizes=next_hidden, **kw)
    with pytest.warns(UserWarning, match="interrupted"):
        fresh.fit(X, y)
    monkeypatch.undo()
    init = MLPClassifier(hidden_layer_sizes=next_hidden, **kw)
    init._random_state = np.random.RandomState(0)
    units = [X.shape[1], *next_hidden, 1]
    expected = [init._init_coef(a, b, np.float64) for a, b in zip(units[:-1], units[1:])]
    for i, (coef, intercept) in enumerate(expected):
        np.testing.assert_array_equal(est.coefs_[i], coef)
        np.testing.assert_array_equal(est.intercepts_[i], intercept)
    _assert_same_bits(_params(est), _params(fresh))


@pytest.mark.parametrize("solver", STOCHASTIC)
@pytest.mark.parametrize("early_stopping", [False, True])
def test_a_fit_after_an_aborted_fit_equals_a_fresh_fit(solver, early_stopping):
    X, y, _ = _data()
    kw = dict(hidden_layer_sizes=(6,), solver=solver, random_state=0, max_iter=8,
              learning_rate_init=0.01, early_stopping=early_stopping)
    est = MLPClassifier(callbacks=[_abort_at(3)], **kw)
    with pytest.raises(_Abort):
        est.fit(X, y)
    with quiet():
        est.set_params(callbacks=None).fit(X, y)
        fresh = MLPClassifier(**kw).fit(X, y)
    _assert_same_bits(_params(est), _params(fresh))
    for name in ("loss_curve_", "n_iter_", "t_", "loss_", "best_loss_",
                 "validation_scores_", "best_validation_score_",
                 "_no_improvement_count"):
        assert getattr(est, name) == getattr(fresh, name), name
    assert est._best_theta is None


def test_set_params_between_fits_starts_afresh():
    X, y, _ = _data()
    with quiet():
        est = MLPClassifier(hidden_layer_sizes=(6,), activation="prelu",
                            max_iter=4, random_state=0).fit(X, y)
        est.set_params(hidden_layer_sizes=(3, 2), activation="tanh",
                       solver="sgd", early_stopping=True).fit(X, y)
        fresh = MLPClassifier(hidden_layer_sizes=(3, 2), activation="tanh",
                              solver="sgd", early_stopping=True, max_iter=4,
                              random_state=0).fit(X, y)
    assert not hasattr(est, "prelu_slopes_")
    _assert_same_bits(_params(est), _params(fresh))
    assert est.validation_scores_ == fresh.validation_scores_


# ---------------------------------------------------------------------------
# NaN in gives NaN out, in every kernel; finite values keep their bits.


def _kernel(kernel, Z, D=None, act="relu", out=False, param=0.01, seed=3):
    Z = np.ascontiguousarray(Z)
    D = np.zeros_like(Z) if D is None else np.ascontiguousarray(D)
    m = Z.shape[1]
    b = np.zeros(m, Z.dtype)
    slopes = np.full(m, 0.25, Z.dtype)
    code = (_core.OUTPUT_ACTIVATIONS if out else _core.HIDDEN_ACTIVATIONS)[act]
    _core.elementwise_kernel(kernel, Z, D, b, slopes, code, act_param=param, seed=seed)
    return Z, D


def _with_nans(dtype, n=7, m=37, seed=0):
    """Random values of both signs, zeros of both signs and NaN, over more
    than one vector width (the vectorised loops and their scalar tails)."""
    rng = np.random.RandomState(seed)
    Z = rng.normal(size=(n, m)).astype(dtype)
    Z[0, :4] = [0.0, -0.0, 1.0, -1.0]
    nan = np.zeros_like(Z, dtype=bool)
    nan[rng.rand(n, m) < 0.3] = True
    nan[1, :] = True
    Z[nan] = np.nan
    return Z, nan


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", HIDDEN)
def test_hidden_activation_propagates_nan(act, dtype):
    Z, nan = _with_nans(dtype)
    A, _ = _kernel("forward", Z.copy(), act=act)
    np.testing.assert_array_equal(np.isnan(A), nan)
    # finite values: the same bits as the formula's on the finite entries
    A_finite, _ = _kernel("forward", np.where(nan, 1, Z).astype(dtype), act=act)
    assert A[~nan].tobytes() == A_finite[~nan].tobytes()


def test_relu_matches_numpy_maximum_bit_for_bit():
    for dtype in DTYPES:
        Z, _ = _with_nans(dtype)
        A, _ = _kernel("forward", Z.copy(), act="relu")
        expected = np.maximum(Z, 0) + dtype(0)  # +0 for -0, NaN kept
        assert A.tobytes() == expected.tobytes()


# identity's derivative is the constant 1: it never reads the activation
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", [a for a in HIDDEN if a != "identity"])
def test_hidden_derivative_propagates_nan(act, dtype):
    """NaN activations (or PReLU pre-activations) give NaN deltas; finite
    ones keep the derivative's value."""
    Z, nan = _with_nans(dtype)
    if act != "prelu":
        Z, _ = _kernel("forward", Z, act=act)  # activations, NaN kept
    D = np.random.RandomState(1).normal(size=Z.shape).astype(dtype)
    _, D_out = _kernel("backward", Z.copy(), D.copy(), act=act)
    np.testing.assert_array_equal(np.isnan(D_out), nan)
    # the same entries of an all-finite call have the same bits
    _, D_finite = _kernel("backward", np.where(nan, 1, Z).astype(dtype), D.copy(), act=act)
    assert D_out[~nan].tobytes() == D_finite[~nan].tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", list(_core.OUTPUT_ACTIVATIONS))
def test_output_activation_propagates_nan(act, dtype):
    Z, nan = _with_nans(dtype)
    P, _ = _kernel("output", Z.copy(), act=act, out=True)
    expected = nan.any(axis=1, keepdims=True) & np.ones_like(nan) if act == "softmax" else nan
    np.testing.assert_array_equal(np.isnan(P), expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", HIDDEN)
def test_dropout_keeps_nan(act, dtype):
    Z, nan = _with_nans(dtype)
    A, _ = _kernel("dropout_forward", Z.copy(), act=act)
    np.testing.assert_array_equal(np.isnan(A), nan)
    assert (A[~nan] == 0).any()  # some units were dropped
    D = np.random.RandomState(2).normal(size=Z.shape).astype(dtype)
    D[nan & (np.arange(Z.shape[1]) % 2 == 0)] = np.nan
    _, D_out = _kernel("dropout_backward", np.abs(Z), D.copy(), act=act)
    # NaN deltas stay NaN, dropped (0 * NaN) or not; so do NaN activations
    # where the derivative reads them (identity's is 1; PReLU's own kernel
    # follows, from the pre-activations)
    expected = np.isnan(D) | (nan if act not in ("identity", "prelu") else False)
    np.testing.assert_array_equal(np.isnan(D_out), expected)


def _nan_model(Est, activation, y):
    X, _, _ = _data()
    with quiet():
        est = Est(hidden_layer_sizes=(5,), activation=activation, max_iter=3,
                  random_state=0).fit(X, y)
    # one NaN weight from feature 0 into hidden unit 0: every row with a
    # nonzero feature 0 has a NaN pre-activation there
    est.coefs_[0][0, 0] = np.nan
    return est, X


@pytest.mark.parametrize("activation", HIDDEN)
@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
def test_nan_weights_give_nan_output_and_predict_raises(Est, activation):
    X, y_class, y_reg = _data()
    est, X = _nan_model(Est, activation, y_class if Est is MLPClassifier else y_reg)
    out = est._forward_pass_fast(X, check_input=False)
    assert np.isnan(out).all()
    methods = [est.predict] + ([est.predict_proba] if Est is MLPClassifier else [])
    for method in methods:
        with pytest.raises(ValueError, match="NaN or infinite"):
            method(X)


@pytest.mark.parametrize("activation", ["identity", "logistic", "tanh", "relu"])
def test_nan_weights_of_a_sklearn_model_give_nan_as_in_sklearn(activation):
    X, y, _ = _data()
    with quiet():
        sk = sknn.MLPClassifier(hidden_layer_sizes=(5,), activation=activation,
                                max_iter=3, random_state=0).fit(X, y)
    sk.coefs_[0][0, 0] = np.nan
    est = MLPClassifier.from_sklearn(sk)
    expected = sk.predict_proba(X)
    assert np.isnan(expected).all()
    np.testing.assert_array_equal(
        np.isnan(est._forward_pass_fast(X, check_input=False).ravel()),
        np.isnan(expected[:, 1]),
    )


# ---------------------------------------------------------------------------
# Sample and class weights.


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize(
    "class_weight, sample_weight",
    [({0: 0, 1: 0}, None), ({0: 0}, "zero on class 1"), ({0: 0.0, 1: 0.0}, "ones")],
)
def test_all_zero_total_weight_raises_for_every_solver(solver, class_weight, sample_weight):
    X, y, _ = _data()
    if sample_weight == "ones":
        sw = np.ones(len(y))
    elif sample_weight is not None:
        sw = np.where(y == 1, 0.0, 1.0)
    else:
        sw = None
    est = MLPClassifier(hidden_layer_sizes=(4,), solver=solver, class_weight=class_weight,
                        max_iter=5, random_state=0)
    with pytest.raises(ValueError, match="at least one non-zero.*class_weight"):
        est.fit(X, y, sample_weight=sw)
    assert not hasattr(est, "coefs_")
    if solver != "lbfgs":
        with pytest.raises(ValueError, match="at least one non-zero"):
            MLPClassifier(solver=solver, class_weight=class_weight).partial_fit(
                X, y, sample_weight=sw, classes=[0, 1]
            )


@pytest.mark.parametrize("solver", SOLVERS)
def test_all_zero_sample_weight_raises_as_sklearn(solver):
    X, y, _ = _data()
    sw = np.zeros(len(y))
    with pytest.raises(ValueError) as sk_error:
        sknn.MLPRegressor(solver=solver if solver != "rmsprop" else "adam").fit(
            X, y, sample_weight=sw)
    with pytest.raises(ValueError, match=re.escape(str(sk_error.value))):
        MLPRegressor(solver=solver).fit(X, y, sample_weight=sw)


def test_all_zero_weights_of_the_training_part_raise():
    """One weighted row of 40, half held out: for some seed it is held out
    and the rows left to train on all weigh 0."""
    X, y, _ = _data(40)
    sw = np.zeros(len(y))
    sw[0] = 1.0
    for seed in range(40):
        est = MLPClassifier(hidden_layer_sizes=(3,), early_stopping=True,
                            validation_fraction=0.5, max_iter=2, random_state=seed)
        try:
            with quiet():
                est.fit(X, y, sample_weight=sw)
        except ValueError as exc:
            assert "at least one non-zero" in str(exc)
            if "validation" in str(exc):
                assert not hasattr(est, "loss_curve_") or est.loss_curve_ == []
                return
    pytest.fail("no split held out the one weighted row")


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("scale", [1e39, 1e-46, 1e300, 1e-300])
@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
def test_float32_trains_with_any_finite_float64_weight(Est, solver, scale):
    """Uniform weights of any size give the model of weights of 1 (alpha=0:
    the penalty is relative to the weights' sum)."""
    X, y_class, y_reg = _data(dtype=np.float32)
    y = y_class if Est is MLPClassifier else y_reg
    kw = dict(hidden_layer_sizes=(5,), solver=solver, alpha=0.0, max_iter=10,
              random_state=0, learning_rate_init=0.01)
    with quiet():
        ones = Est(**kw).fit(X, y, sample_weight=np.ones(len(y)))
        scaled = Est(**kw).fit(X, y, sample_weight=np.full(len(y), scale))
    for a, b in zip(_params(scaled), _params(ones)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(scaled.loss_, ones.loss_, rtol=1e-4)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("scale", [1e39, 1e-46])
def test_float32_weights_and_alpha_as_float64(solver, scale):
    """With alpha > 0, float32 data and huge or tiny weights train the model
    that float64 data (where the weights fit) gives."""
    X, _, y = _data()
    sw = np.random.RandomState(3).uniform(0.5, 2.0, len(y)) * scale
    kw = dict(hidden_layer_sizes=(5,), solver=solver, alpha=1e-3 * scale, max_iter=8,
              random_state=0, learning_rate_init=0.01)
    with quiet():
        est32 = MLPRegressor(**kw).fit(X.astype(np.float32), y, sample_weight=sw)
        est64 = MLPRegressor(**kw).fit(X, y, sample_weight=sw)
    for a, b in zip(_params(est32), _params(est64)):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=1e-4)
    np.testing.assert_allclose(est32.loss_curve_ if solver != "lbfgs" else est32.loss_,
                               est64.loss_curve_ if solver != "lbfgs" else est64.loss_,
                               rtol=2e-3)


@pytest.mark.parametrize("sw_dtype", [np.float16, np.int64, np.int8, bool, np.float32])
def test_sample_weight_dtypes_give_the_float64_result(sw_dtype):
    X, y, _ = _data()
    sw = np.random.RandomState(0).randint(0, 3, len(y))
    sw[0] = 1
    kw = dict(hidden_layer_sizes=(5,), max_iter=5, random_state=0)
    with quiet():
        ref = MLPClassifier(**kw).fit(X, y, sample_weight=sw.astype(np.float64))
        est = MLPClassifier(**kw).fit(X, y, sample_weight=sw.astype(sw_dtype))
    if sw_dtype is bool:
        with quiet():
            ref = MLPClassifier(**kw).fit(X, y, sample_weight=(sw > 0).astype(float))
    _assert_same_bits(_params(est), _params(ref))


# ---------------------------------------------------------------------------
# Divergence and scikit-learn's messages.


def _sklearn_error(fit):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError) as info:
            fit()
    return str(info.value)


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_divergence_message_is_sklearns(solver):
    X, _, y = _data()
    kw = dict(hidden_layer_sizes=(5,), solver=solver, activation="identity",
              learning_rate_init=1e30 if solver == "sgd" else 1e200, max_iter=30,
              random_state=0)
    expected = _sklearn_error(lambda: sknn.MLPRegressor(**kw).fit(X * 1e10, y * 1e10))
    est = MLPRegressor(**kw)
    with pytest.raises(ValueError, match=re.escape(expected)):
        est.fit(X * 1e10, y * 1e10)
    assert all(np.isfinite(p).all() for p in _params(est))


def test_lbfgs_divergence_message_starts_with_sklearns():
    X, _, y = _data()
    expected = _sklearn_error(
        lambda: sknn.MLPRegressor(solver="sgd", learning_rate_init=1e30,
                                  activation="identity").fit(X * 1e10, y * 1e10)
    )
    with pytest.raises(ValueError, match=re.escape(expected)):
        MLPRegressor(solver="lbfgs", random_state=0).fit(X * 1e200, y * 1e200)


@pytest.mark.parametrize("solver", ["sgd", "adam", "rmsprop"])
def test_divergence_under_early_stopping_does_not_raise_as_in_sklearn(solver):
    X, _, y = _data(200)
    kw = dict(hidden_layer_sizes=(5,), solver=solver, activation="identity",
              learning_rate_init=1e30 if solver == "sgd" else 1e200, max_iter=30,
              early_stopping=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = sknn.MLPRegressor(**{**kw, "solver": "sgd" if solver == "sgd" else "adam"})
        sk.fit(X * 1e10, y * 1e10)  # no error: NaN scores, the best weights restored
    assert np.isnan(sk.validation_scores_).any()
    est = MLPRegressor(**kw)
    with pytest.warns(ConvergenceWarning, match="diverged"):
        est.fit(X * 1e10, y * 1e10)
    assert np.isnan(est.validation_scores_[-1])
    assert np.isnan(est.loss_curve_[-1]) and np.isnan(est.loss_)
    assert len(est.validation_scores_) == len(est.loss_curve_) == est.n_iter_
    assert len(est.validation_loss_curve_) == est.n_iter_
    assert np.isnan(est.validation_loss_curve_[-1])
    # the weights are the best ones (or the initial ones): finite
    assert all(np.isfinite(p).all() for p in _params(est))
    assert est._best_theta is None


def test_early_stopping_restores_the_best_weights_after_divergence(monkeypatch):
    """Diverging in epoch 4: the weights of the best of epochs 1-3."""
    X, y, _ = _data(200)
    kept = []

    def diverge_in_epoch_4(real, theta, *args, **kwargs):
        if len(kept) == 3:
            theta[0] = np.nan
            return 0.0, 0.0, 0, _core.STATUS_NONFINITE_PARAMS
        out = real(theta, *args, **kwargs)
        kept.append(theta.copy())
        return out

    kw = dict(hidden_layer_sizes=(5,), early_stopping=True, random_state=0, max_iter=10,
              learning_rate_init=0.05, n_iter_no_change=50)
    monkeypatch.setattr(mlp_module, "_core", CoreProxy({"epoch": diverge_in_epoch_4}))
    est = MLPClassifier(**kw)
    with pytest.warns(ConvergenceWarning, match="diverged in epoch 4"):
        est.fit(X, y)
    scores = est.validation_scores_
    assert len(scores) == 4 and np.isnan(scores[3])
    best = int(np.argmax(scores[:3]))
    assert scores[best] == est.best_validation_score_
    np.testing.assert_array_equal(est._theta, kept[best])


def test_stratified_split_message_is_sklearns():
    X, _, _ = _data(40)
    y = np.zeros(40, dtype=int)
    y[0] = 1  # one member: the stratified validation split cannot be made
    expected = _sklearn_error(
        lambda: sknn.MLPClassifier(early_stopping=True, random_state=0).fit(X, y)
    )
    with pytest.raises(ValueError, match=re.escape(expected)):
        MLPClassifier(early_stopping=True, random_state=0).fit(X, y)


# ---------------------------------------------------------------------------
# Extreme values and dtypes.


@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
@pytest.mark.parametrize("x_dtype", [np.float16, np.int32, np.uint8, bool, object])
def test_x_dtypes_train_as_float64(Est, x_dtype):
    X, y_class, y_reg = _data()
    y = y_class if Est is MLPClassifier else y_reg
    Xq = (X > 0) if x_dtype is bool else np.round(X * 3).astype(x_dtype)
    kw = dict(hidden_layer_sizes=(5,), max_iter=4, random_state=0)
    with quiet():
        est = Est(**kw).fit(Xq, y)
        ref = Est(**kw).fit(np.asarray(Xq, dtype=np.float64), y)
    assert est._theta.dtype == np.float64
    _assert_same_bits(_params(est), _params(ref))
    np.testing.assert_array_equal(est.predict(Xq), ref.predict(Xq))


def test_regressor_accepts_integer_targets():
    X, _, y = _data()
    yi = np.round(y * 10).astype(np.int64)
    with quiet():
        est = MLPRegressor(hidden_layer_sizes=(5,), max_iter=4, random_state=0).fit(X, yi)
        ref = MLPRegressor(hidden_layer_sizes=(5,), max_iter=4, random_state=0).fit(
            X, yi.astype(float))
    _assert_same_bits(_params(est), _params(ref))
    assert est.predict(X).dtype == np.float64


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_subnormal_inputs_train(solver, dtype):
    X, _, y = _data(dtype=dtype)
    tiny = np.finfo(dtype).smallest_subnormal
    X[:, 0] = tiny * np.arange(len(X))  # subnormal and zero entries
    with quiet():
        est = MLPRegressor(hidden_layer_sizes=(5,), solver=solver, max_iter=5,
                           random_state=0).fit(X, y)
    assert all(np.isfinite(p).all() for p in _params(est))
    assert np.isfinite(est.predict(X)).all()


# numpy warns of overflow in sums over such X (scikit-learn's checks)
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("dtype", DTYPES)
def test_inputs_near_the_dtype_maximum_raise_or_predict_finite(dtype):
    """X near the largest value of its dtype: training either works or says
    it diverged (sklearn's message); predictions are finite or raise."""
    X, y, _ = _data(dtype=dtype)
    X = X * (np.finfo(dtype).max / 8)
    est = MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, random_state=0)
    try:
        with quiet():
            est.fit(X, y)
    except ValueError as exc:
        assert str(exc).startswith("Solver produced non-finite parameter weights.")
    assert all(np.isfinite(p).all() for p in _params(est))
    try:
        assert np.isfinite(est.predict_proba(X)).all()
    except ValueError as exc:
        assert "NaN or infinite" in str(exc)


def test_an_lbfgs_fit_after_a_stochastic_one_keeps_none_of_its_records():
    X, y, _ = _data()
    with quiet():
        est = MLPClassifier(hidden_layer_sizes=(4,), early_stopping=True, max_iter=3,
                            random_state=0).fit(X, y)
        est.set_params(solver="lbfgs").fit(X, y)
        fresh = MLPClassifier(hidden_layer_sizes=(4,), solver="lbfgs", early_stopping=True,
                              max_iter=3, random_state=0).fit(X, y)
    assert sorted(vars(est)) == sorted(vars(fresh))
    _assert_same_bits(_params(est), _params(fresh))
