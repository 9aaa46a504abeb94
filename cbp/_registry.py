"""Tables of the hidden activations, the outputs with their losses, and the solvers.

Each entry is named once, in a frozen row that says what the estimators
need to know about it: the core's code, the estimator parameter it takes,
how it is initialised and reported, and whether scikit-learn has it. The
tables drive the parameter validation, the core's arguments, the
conversions to and from scikit-learn, the ONNX export and the tests, so
that adding an activation, a loss or a solver is one row here (and its
kernels in the core).
"""

from dataclasses import dataclass
from typing import Optional

import sklearn
from sklearn.utils.fixes import parse_version

from . import _core

_SKLEARN_VERSION = parse_version(parse_version(sklearn.__version__).base_version)


def _in_sklearn(since):
    """Whether the installed scikit-learn is at least version ``since``."""
    return since is not None and _SKLEARN_VERSION >= parse_version(since)


@dataclass(frozen=True)
class Activation:
    """A hidden activation.

    Attributes
    ----------
    name : str
        The value of the estimators' ``activation`` parameter.
    code : int
        The core's code, ``_core.HIDDEN_ACTIVATIONS[name]``.
    param : str or None
        The estimator parameter the core takes as ``act_param`` (its slope
        for z <= 0), or None.
    learned : bool
        Whether it has learned parameters: one slope per hidden unit,
        stored in the flat parameter vector after the biases.
    sklearn_since : str or None
        The first scikit-learn version whose MLPs have it; None: none has.
    init_factor : float
        Glorot's uniform initialisation draws the weights and biases of
        each layer from ``[-bound, bound]``, ``bound = sqrt(init_factor /
        (fan_in + fan_out))``; scikit-learn uses 2 for 'logistic', 6 for
        the others.
    onnx_op : str or None
        The ONNX operator that computes it (in float32 at least), or None
        when the graph spells out the core's formula (or, for 'identity',
        has no node).
    onnx_float64 : bool
        Whether onnxruntime runs ``onnx_op`` in float64 too (with the
        core's formula); otherwise the float64 graph spells it out.
    """

    name: str
    code: int
    param: Optional[str] = None
    learned: bool = False
    sklearn_since: Optional[str] = None
    init_factor: float = 6.0
    onnx_op: Optional[str] = None
    onnx_float64: bool = False

    @property
    def in_sklearn(self):
        """bool : Whether the installed scikit-learn has this activation."""
        return _in_sklearn(self.sklearn_since)


@dataclass(frozen=True)
class Output:
    """An output activation (the link) with the loss trained through it.

    Attributes
    ----------
    name : str
        The loss, as the estimators' ``loss`` parameter names it
        (``MLPClassifier``'s is always 'log_loss').
    out_activation : str
        The output activation, ``out_activation_`` of a fitted estimator.
    code : int
        The core's code of the pair: the core takes one code for the
        output activation and its loss.
    param : str or None
        The estimator parameter the core takes as ``loss_param`` (Huber's
        threshold), or None.
    sklearn_since : str or None
        The first scikit-learn version whose MLPs have this loss with this
        output activation; None: none has.
    averaged_over_outputs : bool
        How scikit-learn reports ``loss_``: averaged over the outputs
        (True), or summed over them like the core's data loss (False).
    nonnegative_targets : bool
        Whether the loss needs targets >= 0 (Poisson's counts or rates).
    """

    name: str
    out_activation: str
    code: int
    param: Optional[str] = None
    sklearn_since: Optional[str] = None
    averaged_over_outputs: bool = False
    nonnegative_targets: bool = False

    @property
    def in_sklearn(self):
        """bool : Whether the installed scikit-learn has this loss and output."""
        return _in_sklearn(self.sklearn_since)


@dataclass(frozen=True)
class Solver:
    """A weight optimizer.

    Attributes
    ----------
    name : str
        The value of the estimators' ``solver`` parameter.
    code : int or None
        The core's code, ``_core.SOLVERS[name]``; None for 'lbfgs', which
        scipy runs on the core's full-batch loss and gradient.
    stochastic : bool
        Whether it trains in epochs of mini-batches (``partial_fit``,
        callbacks, ``loss_curve_``, dropout and weight decay need that).
    sklearn_since : str or None
        The first scikit-learn version whose MLPs have it; None: none has.
    n_moments : int
        The per-parameter state vectors it keeps between steps (sgd's
        velocity; Adam's first and second moments; RMSprop's mean square).
    schedules : bool
        Whether the ``learning_rate`` schedules ('invscaling', 'adaptive')
        apply to it.
    """

    name: str
    code: Optional[int]
    stochastic: bool
    sklearn_since: Optional[str] = None
    n_moments: int = 0
    schedules: bool = False

    @property
    def in_sklearn(self):
        """bool : Whether the installed scikit-learn has this solver."""
        return _in_sklearn(self.sklearn_since)


def _table(*rows):
    """``{row.name: row}``, checking that no name is given twice."""
    table = {row.name: row for row in rows}
    if len(table) != len(rows):
        raise ValueError(f"duplicate names in {[row.name for row in rows]}")
    return table


_ACT = _core.HIDDEN_ACTIVATIONS

ACTIVATIONS = _table(
    Activation("identity", _ACT["identity"], sklearn_since="0.18"),
    Activation(
        "logistic", _ACT["logistic"], sklearn_since="0.18", init_factor=2.0
    ),
    Activation(
        "tanh", _ACT["tanh"], sklearn_since="0.18", onnx_op="Tanh", onnx_float64=True
    ),
    Activation(
        "relu", _ACT["relu"], sklearn_since="0.18", onnx_op="Relu", onnx_float64=True
    ),
    Activation(
        "leaky_relu", _ACT["leaky_relu"], param="leaky_relu_slope", onnx_op="LeakyRelu"
    ),
    Activation("elu", _ACT["elu"], onnx_op="Elu"),
    Activation("softplus", _ACT["softplus"], onnx_op="Softplus"),
    Activation("prelu", _ACT["prelu"], learned=True, onnx_op="PRelu"),
)
"""dict of str to Activation : the hidden activations, by name."""

_LOSS = _core.REGRESSION_LOSSES
_OUT = _core.OUTPUT_ACTIVATIONS

REGRESSION_LOSSES = _table(
    Output(
        "squared_error", "identity", _LOSS["squared_error"], sklearn_since="0.18",
        averaged_over_outputs=True,
    ),
    Output(
        "poisson", "exp", _LOSS["poisson"], sklearn_since="1.7",
        nonnegative_targets=True,
    ),
    Output(
        "huber", "identity", _LOSS["huber"], param="huber_delta",
        averaged_over_outputs=True,
    ),
)
"""dict of str to Output : the losses of ``MLPRegressor``, by name."""

# Keyed by output activation: the classifier has one loss and picks the
# output from the targets (softmax for one label out of many classes).
CLASSIFIER_OUTPUTS = {
    row.out_activation: row
    for row in (
        Output("log_loss", "softmax", _OUT["softmax"], sklearn_since="0.18"),
        Output("log_loss", "logistic", _OUT["logistic"], sklearn_since="0.18"),
    )
}
"""dict of str to Output : the outputs of ``MLPClassifier``, by output activation."""

# The regression rows come first, each link's own loss before the others
# that share its link: output() falls back on the first row of a link.
OUTPUTS = (*REGRESSION_LOSSES.values(), *CLASSIFIER_OUTPUTS.values())
"""tuple of Output : every output activation with its loss."""

SOLVERS = _table(
    Solver("lbfgs", None, stochastic=False, sklearn_since="0.18"),
    Solver(
        "sgd", _core.SOLVERS["sgd"], stochastic=True, sklearn_since="0.18",
        n_moments=1, schedules=True,
    ),
    Solver(
        "adam", _core.SOLVERS["adam"], stochastic=True, sklearn_since="0.18",
        n_moments=2,
    ),
    Solver("rmsprop", _core.SOLVERS["rmsprop"], stochastic=True, n_moments=1),
)
"""dict of str to Solver : the solvers, by name."""

STOCHASTIC_SOLVERS = tuple(name for name, row in SOLVERS.items() if row.stochastic)
"""tuple of str : the solvers that train in epochs, in table order."""


def output(loss, out_activation):
    """Return the row of a fitted network's output and loss.

    Parameters
    ----------
    loss : str
        The estimator's ``loss``.
    out_activation : str
        Its ``out_activation_``.

    Returns
    -------
    row : Output
        The row of ``loss`` with that output activation; when ``loss`` was
        changed since the fit to one that has another output, the row of
        the output activation's own loss, which predicts the same.

    Raises
    ------
    ValueError
        When cbp has no output activation ``out_activation``.
    """
    fallback = None
    for row in OUTPUTS:
        if row.out_activation == out_activation:
            if row.name == loss:
                return row
            if fallback is None:
                fallback = row
    if fallback is None:
        raise ValueError(f"cbp has no output activation {out_activation!r}.")
    return fallback


def loss_param(loss):
    """Return the estimator parameter that the loss named ``loss`` takes.

    Parameters
    ----------
    loss : str or None
        A loss name (the estimator's ``loss``).

    Returns
    -------
    param : str or None
        The parameter passed to the core as ``loss_param``, or None when
        the loss takes none (or cbp has no loss of that name).
    """
    # rows that share a name (the classifier's outputs) share its parameter
    for row in OUTPUTS:
        if row.name == loss:
            return row.param
    return None
