"""The tables of activations, outputs and solvers against what they drive.

Each row of :mod:`cbp._registry` is checked against the estimators'
parameter validation, the core (its codes compute what the row names, as
the numpy reference computes it), scikit-learn (what it can express, how
it initialises) and the conversions between the two.
"""

import re
import warnings

import numpy as np
import pytest
from sklearn import neural_network as sknn
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import InvalidParameterError

from cbp import MLPClassifier, MLPRegressor, _core, _registry

from _reference import forward, objective

ACTIVATIONS = sorted(_registry.ACTIVATIONS)
LOSSES = sorted(_registry.REGRESSION_LOSSES)
SOLVERS = sorted(_registry.SOLVERS)
CLASSIFIER_OUTPUTS = sorted(_registry.CLASSIFIER_OUTPUTS)

_RNG = np.random.RandomState(0)
X = _RNG.uniform(-1, 1, (40, 4))
Y_MULTICLASS = _RNG.randint(0, 3, 40)
Y_BINARY = _RNG.randint(0, 2, 40)
# two non-negative outputs: every regression loss accepts them
Y_REGRESSION = np.abs(X[:, :2] @ [[1.0, 0.5], [-0.5, 1.0]]) + 0.1


def _fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y)


def _classifier(**params):
    return MLPClassifier(hidden_layer_sizes=(5, 3), max_iter=3, random_state=0, **params)


def _regressor(**params):
    return MLPRegressor(hidden_layer_sizes=(5,), max_iter=3, random_state=0, **params)


# ---------------------------------------------------------------------------
# Parameter validation accepts the rows and only them


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_every_activation_is_accepted(name):
    est = _fit(_classifier(activation=name), X, Y_MULTICLASS)
    assert est.activation == name
    assert len(est.coefs_) == 3


@pytest.mark.parametrize("name", SOLVERS)
def test_every_solver_is_accepted(name):
    est = _fit(_classifier(solver=name), X, Y_MULTICLASS)
    assert est.solver == name
    # the stochastic solvers, and only they, train in epochs
    assert hasattr(est, "partial_fit") == _registry.SOLVERS[name].stochastic
    assert (getattr(est, "loss_curve_", None) is not None) == _registry.SOLVERS[name].stochastic


@pytest.mark.parametrize("name", LOSSES)
def test_every_regression_loss_is_accepted(name):
    est = _fit(_regressor(loss=name), X, Y_REGRESSION)
    assert est.out_activation_ == _registry.REGRESSION_LOSSES[name].out_activation


@pytest.mark.parametrize(
    "make, param, table, value",
    [
        (_classifier, "activation", _registry.ACTIVATIONS, "Relu"),
        (_classifier, "activation", _registry.ACTIVATIONS, "softmax"),
        (_classifier, "solver", _registry.SOLVERS, "adamw"),
        (_classifier, "solver", _registry.SOLVERS, ""),
        (_regressor, "loss", _registry.REGRESSION_LOSSES, "log_loss"),
        (_regressor, "loss", _registry.REGRESSION_LOSSES, "Huber"),
    ],
)
def test_names_outside_the_table_are_rejected(make, param, table, value):
    est = make(**{param: value})
    with pytest.raises(InvalidParameterError) as info:
        est.fit(X, Y_REGRESSION if make is _regressor else Y_MULTICLASS)
    message = str(info.value)
    # scikit-learn's words, listing every row of the table
    assert message.startswith(
        f"The {param!r} parameter of {type(est).__name__} must be a str among {{"
    )
    assert message.endswith(f"}}. Got {value!r} instead.")
    listed = message[message.index("{") + 1 : message.index("}")]
    assert sorted(s.strip().strip("'") for s in listed.split(",")) == sorted(table)


# ---------------------------------------------------------------------------
# The rows' codes are the core's, and compute what the rows name


def test_the_tables_cover_the_cores_codes():
    assert {row.name: row.code for row in _registry.ACTIVATIONS.values()} == dict(
        _core.HIDDEN_ACTIVATIONS
    )
    stochastic = {n: r.code for n, r in _registry.SOLVERS.items() if r.stochastic}
    assert stochastic == dict(_core.SOLVERS)
    assert all(r.code is None for r in _registry.SOLVERS.values() if not r.stochastic)
    assert {n: r.code for n, r in _registry.REGRESSION_LOSSES.items()} == dict(
        _core.REGRESSION_LOSSES
    )
    for link, row in _registry.CLASSIFIER_OUTPUTS.items():
        assert row.out_activation == link
        assert row.code == _core.OUTPUT_ACTIVATIONS[link]
    assert {row.out_activation for row in _registry.OUTPUTS} == set(
        _core.OUTPUT_ACTIVATIONS
    )


def test_each_output_falls_back_on_its_own_loss():
    # a fitted output whose loss was changed since predicts with the
    # output's own loss (the first row of its output activation)
    for link, code in _core.OUTPUT_ACTIVATIONS.items():
        row = _registry.output("not a loss", link)
        assert row.out_activation == link and row.code == code
    with pytest.raises(ValueError, match="no output activation 'tanh'"):
        _registry.output("squared_error", "tanh")


def test_a_changed_loss_predicts_with_the_fitted_output():
    est = _fit(_regressor(), X, Y_REGRESSION)
    before = est.predict(X)
    est.set_params(loss="poisson")
    np.testing.assert_array_equal(est.predict(X), before)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_code_computes_the_named_activation(name):
    row = _registry.ACTIVATIONS[name]
    params = {row.param: 0.1} if row.param else {}
    est = _fit(_classifier(activation=name, **params), X, Y_MULTICLASS)
    expected = forward(
        est.coefs_, est.intercepts_, X, name, "softmax", slope=0.1,
        slopes=getattr(est, "prelu_slopes_", None),
    )
    np.testing.assert_allclose(est.predict_proba(X), expected, rtol=1e-12, atol=1e-15)
    # a learned parameter per hidden unit sits in the flat vector
    n_units = sum(c.size + b.size for c, b in zip(est.coefs_, est.intercepts_))
    n_extra = 5 + 3 if row.learned else 0
    assert est._theta.shape[0] == n_units + n_extra


def _sklearn_reduction(est, link):
    """scikit-learn's ``loss_`` over the core's data loss (summed over the
    outputs) at ``est``'s weights, for the loss of output ``link``: 1 or
    1 / n_outputs."""
    from sklearn.neural_network._base import LOSS_FUNCTIONS

    own = _registry.output(None, link)
    if own.name not in LOSS_FUNCTIONS:
        pytest.skip(f"this scikit-learn has no loss {own.name!r}")
    sk_loss = LOSS_FUNCTIONS[own.name](Y_REGRESSION, est.predict(X))
    data = objective(
        est.coefs_, est.intercepts_, X, Y_REGRESSION, np.ones(len(X)), "relu", link,
        0.0, loss=own.name,
    )
    return sk_loss / data


@pytest.mark.parametrize("name", LOSSES)
def test_loss_code_trains_the_named_loss_and_reports_it_as_sklearn(name):
    row = _registry.REGRESSION_LOSSES[name]
    params = {row.param: 0.3} if row.param else {}
    # lbfgs reports the loss at its final weights
    est = _fit(_regressor(loss=name, solver="lbfgs", alpha=0.0, **params), X, Y_REGRESSION)
    np.testing.assert_allclose(
        est.predict(X),
        forward(est.coefs_, est.intercepts_, X, "relu", row.out_activation),
        rtol=1e-12,
    )
    data = objective(
        est.coefs_, est.intercepts_, X, Y_REGRESSION, np.ones(len(X)), "relu",
        row.out_activation, 0.0, loss=name, huber_delta=params.get(row.param, 1.0),
    )
    # reported as scikit-learn reports it; a loss it lacks as it reports
    # the loss of the same output activation
    n_outputs = Y_REGRESSION.shape[1]
    reduction = _sklearn_reduction(est, row.out_activation)
    assert np.isclose(reduction, 1 / n_outputs) or np.isclose(reduction, 1.0)
    assert row.averaged_over_outputs == np.isclose(reduction, 1 / n_outputs)
    np.testing.assert_allclose(est.loss_, data * reduction, rtol=1e-10)


@pytest.mark.parametrize("link, y", [("softmax", Y_MULTICLASS), ("logistic", Y_BINARY)])
def test_classifier_output_follows_the_targets(link, y):
    est = _fit(_classifier(), X, y)
    assert est.out_activation_ == link
    assert est._output_code() == _registry.CLASSIFIER_OUTPUTS[link].code


# ---------------------------------------------------------------------------
# Initialisation: scikit-learn's draws


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_init_factor_matches_sklearns_draw(name):
    row = _registry.ACTIVATIONS[name]
    # scikit-learn's rule for the activations it lacks is its rule for
    # any activation but 'logistic'
    sk = sknn.MLPClassifier(activation=name if row.in_sklearn else "relu")
    est = MLPClassifier(activation=name)
    sk._random_state = np.random.RandomState(3)
    est._random_state = np.random.RandomState(3)
    for fan_in, fan_out in [(4, 5), (7, 2)]:
        for ours, theirs in zip(
            est._init_coef(fan_in, fan_out, np.float64),
            sk._init_coef(fan_in, fan_out, np.float64),
        ):
            np.testing.assert_array_equal(ours, theirs)
    # the row's factor is the one drawn with
    bound = np.sqrt(row.init_factor / (4 + 5))
    rng = np.random.RandomState(3)
    est._random_state = np.random.RandomState(3)
    coef, intercept = est._init_coef(4, 5, np.float64)
    np.testing.assert_array_equal(coef, rng.uniform(-bound, bound, (4, 5)))
    np.testing.assert_array_equal(intercept, rng.uniform(-bound, bound, 5))


# ---------------------------------------------------------------------------
# scikit-learn: what it can express round-trips, the rest is refused


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_to_and_from_sklearn(name):
    row = _registry.ACTIVATIONS[name]
    est = _fit(_classifier(activation=name), X, Y_MULTICLASS)
    if not row.in_sklearn:
        with pytest.raises(ValueError, match=f"cannot express activation='{name}'"):
            est.to_sklearn()
        return
    sk = est.to_sklearn()
    assert isinstance(sk, sknn.MLPClassifier) and sk.activation == name
    np.testing.assert_allclose(sk.predict_proba(X), est.predict_proba(X), rtol=1e-12)
    back = MLPClassifier.from_sklearn(sk)
    np.testing.assert_array_equal(back.predict_proba(X), est.predict_proba(X))
    # and a network scikit-learn trained
    sk_fitted = _fit(sknn.MLPClassifier((5,), activation=name, max_iter=3), X, Y_MULTICLASS)
    ours = MLPClassifier.from_sklearn(sk_fitted)
    np.testing.assert_allclose(ours.predict_proba(X), sk_fitted.predict_proba(X), rtol=1e-12)


@pytest.mark.parametrize("name", LOSSES)
def test_loss_to_and_from_sklearn(name):
    row = _registry.REGRESSION_LOSSES[name]
    est = _fit(_regressor(loss=name), X, Y_REGRESSION)
    if not row.in_sklearn:
        with pytest.raises(ValueError, match=f"cannot express loss='{name}'"):
            est.to_sklearn()
        return
    sk = est.to_sklearn()
    assert sk.loss == name and sk.out_activation_ == row.out_activation
    np.testing.assert_allclose(sk.predict(X), est.predict(X), rtol=1e-12)
    back = MLPRegressor.from_sklearn(sk)
    np.testing.assert_array_equal(back.predict(X), est.predict(X))
    assert back._output_code() == row.code


@pytest.mark.parametrize("link, y", [("softmax", Y_MULTICLASS), ("logistic", Y_BINARY)])
def test_classifier_outputs_to_and_from_sklearn(link, y):
    assert _registry.CLASSIFIER_OUTPUTS[link].in_sklearn
    est = _fit(_classifier(), X, y)
    sk = est.to_sklearn()
    assert sk.out_activation_ == link
    np.testing.assert_allclose(sk.predict_proba(X), est.predict_proba(X), rtol=1e-12)
    back = MLPClassifier.from_sklearn(sk)
    np.testing.assert_array_equal(back.predict_proba(X), est.predict_proba(X))


@pytest.mark.parametrize("name", SOLVERS)
def test_solver_to_sklearn(name):
    # a solver only shapes training: one scikit-learn lacks is dropped
    # with a warning, not refused
    est = _fit(_classifier(solver=name), X, Y_MULTICLASS)
    if _registry.SOLVERS[name].in_sklearn:
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            sk = est.to_sklearn()
        assert sk.solver == name
        assert MLPClassifier.from_sklearn(sk).solver == name
    else:
        with pytest.warns(UserWarning, match=f"solver='{name}'"):
            sk = est.to_sklearn()
        assert sk.solver == sknn.MLPClassifier().solver
    np.testing.assert_allclose(sk.predict_proba(X), est.predict_proba(X), rtol=1e-12)


@pytest.mark.parametrize(
    "cls, param, table",
    [
        (MLPClassifier, "activation", _registry.ACTIVATIONS),
        (MLPRegressor, "activation", _registry.ACTIVATIONS),
        (MLPClassifier, "solver", _registry.SOLVERS),
        (MLPRegressor, "solver", _registry.SOLVERS),
        (MLPRegressor, "loss", _registry.REGRESSION_LOSSES),
    ],
)
def test_docstrings_list_every_row(cls, param, table):
    match = re.search(rf"^\s*{param} : \{{([^}}]*)\}}", cls.__doc__, re.MULTILINE)
    assert match is not None
    listed = [s.strip().strip("'") for s in match.group(1).split(",")]
    assert sorted(listed) == sorted(table)
    # and says what each is
    body = cls.__doc__[match.end() : match.end() + 3000]
    for name in table:
        assert f"'{name}'" in body
