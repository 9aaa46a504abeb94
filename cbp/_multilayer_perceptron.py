"""Multilayer perceptron estimators: validation and orchestration.

The estimators check their parameters and data, encode labels, allocate
the flat parameter vector and the working buffers once per fit, and hand
whole epochs (or, for lbfgs, whole-batch loss/gradient evaluations) to the
compiled core in :mod:`cbp._core`. They never loop over samples.

What each activation, loss and solver is comes from the tables of
:mod:`cbp._registry`; the flat parameter vector's layout from
:mod:`cbp._layout`, the stochastic solvers' state from
:mod:`cbp._optimizers`, the thread limits from :mod:`cbp._threads`.
"""

import contextlib
import threading
import warnings
from abc import ABC, abstractmethod
from numbers import Integral, Real

import numpy as np
import scipy.optimize
import scipy.sparse as sp
from sklearn.base import (
    BaseEstimator,
    ClassifierMixin,
    RegressorMixin,
    _fit_context,
    is_classifier,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state, column_or_1d
from sklearn.utils._param_validation import HasMethods, Interval, Options, StrOptions
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import type_of_target, unique_labels
from sklearn.utils.validation import (
    _check_sample_weight,
    check_is_fitted,
    validate_data,
)
from . import _core, _distributed, _registry
from ._docstrings import _CLASS_DOC_ATTRS, _CLASS_DOC_PARAMS
from ._layout import _Layout, _block_rows, _loss_grad_rows
# imported by name, which also keeps pickles and skops files that name the
# optimizer cbp._multilayer_perceptron._StochasticOptimizer (as builds
# before cbp._optimizers wrote them) loadable
from ._optimizers import _StochasticOptimizer
from ._progress import _EpochFeedback, _print
from ._sklearn_callbacks import _CallbackSupport, fit_tasks
from ._threads import _MAX_N_JOBS, _n_threads, _SingleThreadedBLAS

_STOCHASTIC_SOLVERS = _registry.STOCHASTIC_SOLVERS
# What the stochastic solvers record during a fit (set afresh by _initialize).
_STOCHASTIC_STATE = (
    "loss_curve_", "best_loss_", "validation_scores_", "validation_loss_curve_",
    "best_validation_score_", "_no_improvement_count", "_optimizer",
)

# Held while ``_packed_params`` checks and repacks ``coefs_``/``intercepts_``
# (microseconds; never while the core runs).
_PACK_LOCK = threading.Lock()

# The core addresses all weights with 32-bit BLAS sizes.
_MAX_WEIGHTS = 2**31 - 1

# scikit-learn's words when a fit ends with NaN or infinite weights; cbp's
# divergence errors start with them and then say which weights were kept.
_NONFINITE_WEIGHTS = (
    "Solver produced non-finite parameter weights. The input data may"
    " contain large values and need to be preprocessed."
)


class _LayerWidths(Options):
    """Parameter constraint: a flat sequence of integers >= 1 (may be empty).

    The constraint of ``hidden_layer_sizes``. scikit-learn's parameter
    validation accepts only its own constraint classes, so this is an
    ``Options`` whose membership test is replaced: ``(10, 0)``, ``(3.5,)``,
    ``("a",)`` or ``[[3]]`` are then rejected by ``_validate_params`` with
    the usual ``InvalidParameterError`` (a ValueError and a TypeError)
    naming the parameter, before any data is looked at. The one listed
    option only serves scikit-learn's test helpers.
    """

    def __init__(self):
        super().__init__(tuple, {(100,)})

    def is_satisfied_by(self, val):
        if isinstance(val, (str, bytes)) or not (
            hasattr(val, "__len__") or hasattr(val, "__array__")
        ):
            return False
        try:
            widths = np.asarray(val, dtype=object)
        except (TypeError, ValueError):
            return False
        if widths.ndim != 1:
            return False
        return all(
            isinstance(w, Integral) and not isinstance(w, (bool, np.bool_)) and w >= 1
            for w in widths
        )

    def __str__(self):
        return "a sequence of ints >= 1"


class BaseMultilayerPerceptron(_CallbackSupport, BaseEstimator, ABC):
    """Base class for MLP classification and regression.

    Warning: This class should not be used directly. Use
    :class:`MLPClassifier` or :class:`MLPRegressor`.
    """

    _parameter_constraints: dict = {
        "hidden_layer_sizes": [
            _LayerWidths(),
            Interval(Integral, 1, None, closed="left"),
        ],
        "activation": [StrOptions(set(_registry.ACTIVATIONS))],
        "leaky_relu_slope": [Interval(Real, 0, None, closed="left")],
        "solver": [StrOptions(set(_registry.SOLVERS))],
        "rho": [Interval(Real, 0, 1, closed="left")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "dropout": [Interval(Real, 0, 1, closed="left"), "array-like"],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [
            StrOptions({"auto"}),
            Interval(Integral, 1, None, closed="left"),
        ],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [
            Interval(Integral, 1, None, closed="left"),
            Options(Real, {np.inf}),
        ],
        "max_fun": [Interval(Integral, 1, None, closed="left")],
        "n_jobs": [
            None,
            Interval(Integral, 1, _MAX_N_JOBS, closed="both"),
            Interval(Integral, -_MAX_N_JOBS, -1, closed="both"),
        ],
        "callbacks": [None, list, tuple],
        "comm": [None, HasMethods(["Allreduce", "Get_rank", "Get_size"])],
    }

    @abstractmethod
    def __init__(
        self,
        hidden_layer_sizes,
        activation,
        solver,
        alpha,
        batch_size,
        learning_rate,
        learning_rate_init,
        power_t,
        max_iter,
        loss,
        shuffle,
        random_state,
        tol,
        verbose,
        warm_start,
        momentum,
        nesterovs_momentum,
        early_stopping,
        validation_fraction,
        beta_1,
        beta_2,
        epsilon,
        n_iter_no_change,
        max_fun,
        n_jobs,
        callbacks,
        comm,
        leaky_relu_slope=0.01,
        rho=0.9,
        weight_decay=0.0,
        dropout=0.0,
    ):
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.n_jobs = n_jobs
        self.callbacks = callbacks
        self.comm = comm
        self.leaky_relu_slope = leaky_relu_slope
        self.rho = rho
        self.weight_decay = weight_decay
        self.dropout = dropout

    # ------------------------------------------------------------------
    # Parameters: one flat vector, coefs_/intercepts_ are views into it.

    def _layout(self):
        shapes = [np.shape(c) for c in self.coefs_]
        if not shapes or any(len(sh) != 2 for sh in shapes):
            raise ValueError(
                "coefs_ must be a non-empty list of 2-D weight matrices, got "
                f"shapes {shapes}."
            )
        for i in range(len(shapes) - 1):
            if shapes[i][1] != shapes[i + 1][0]:
                raise ValueError(
                    f"coefs_[{i}] has shape {shapes[i]} and coefs_[{i + 1}] "
                    f"{shapes[i + 1]}: each layer's fan_out must be the next "
                    "layer's fan_in."
                )
        units = [shapes[0][0]] + [sh[1] for sh in shapes]
        prelu = self._activation_row().learned
        layout = getattr(self, "_layout_cache", None)
        if layout is None or list(layout.units) != units or layout.prelu != prelu:
            layout = _Layout(units, prelu=prelu)
            self._layout_cache = layout
        return layout

    def _packed_params(self, dtype=None):
        """Return the flat parameter vector, packing ``coefs_`` if needed.

        After a fit ``coefs_`` and ``intercepts_`` are views into one flat
        vector; if they were replaced or cast since, they are packed again
        into a new vector (and become its views). The check and the
        repacking hold a lock, so that predictions from several threads
        never see (nor leave) ``_theta`` from one packing and ``coefs_``
        from another.
        """
        with _PACK_LOCK:
            layout = self._layout()
            theta = getattr(self, "_theta", None)
            if dtype is None:
                dtype = np.asarray(self.coefs_[0]).dtype
                if dtype not in (np.float32, np.float64):
                    dtype = np.float64
            slopes = getattr(self, "prelu_slopes_", None) if layout.prelu else None
            if (
                theta is None
                or theta.dtype != dtype
                or not layout.is_packed(
                    theta, self.coefs_, self.intercepts_, slopes or ()
                )
            ):
                theta = layout.pack(self.coefs_, self.intercepts_, dtype, slopes)
                self._set_theta(theta, layout)
            return theta

    def _set_theta(self, theta, layout):
        self._theta = theta
        self.coefs_, self.intercepts_ = layout.views(theta)
        if layout.prelu:
            self.prelu_slopes_ = layout.slope_views(theta)
        elif hasattr(self, "prelu_slopes_"):
            del self.prelu_slopes_

    def __getstate__(self):
        # object.__getstate__ returns the live __dict__ itself: work on a
        # copy, so that pickling or copying never changes the estimator (a
        # fit under way keeps its flat vector). The copy is taken under
        # the packing lock, so that a prediction in another thread cannot
        # repack (resize the dict, or pair _theta with other coefs_) while
        # it is made.
        with _PACK_LOCK:
            state = dict(super().__getstate__())
        # coefs_ and intercepts_ are pickled; the flat vector is rebuilt
        state.pop("_theta", None)
        state.pop("_layout_cache", None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        if hasattr(self, "coefs_"):
            self._packed_params()

    # ------------------------------------------------------------------
    # Initialisation (the same draws as scikit-learn's, in the same order).

    def _initialize(self, y, layer_units, dtype):
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = y.shape[1]
        self.n_layers_ = len(layer_units)

        self.out_activation_ = self._output_for_fit().out_activation

        coefs, intercepts = [], []
        for i in range(self.n_layers_ - 1):
            coef_init, intercept_init = self._init_coef(
                layer_units[i], layer_units[i + 1], dtype
            )
            coefs.append(coef_init)
            intercepts.append(intercept_init)
        layout = _Layout(layer_units, prelu=self._activation_row().learned)
        self._layout_cache = layout
        self._set_theta(layout.pack(coefs, intercepts, dtype), layout)

        if self.solver in _STOCHASTIC_SOLVERS:
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_ = []
                self.validation_loss_curve_ = []
                self.best_validation_score_ = -np.inf
                self.best_loss_ = None
            else:
                self.best_loss_ = np.inf
                self.validation_scores_ = None
                self.validation_loss_curve_ = None
                self.best_validation_score_ = None

    def _init_coef(self, fan_in, fan_out, dtype):
        # Glorot et al.'s uniform initialisation, as scikit-learn draws it
        factor = self._activation_row().init_factor
        init_bound = np.sqrt(factor / (fan_in + fan_out))
        coef_init = self._random_state.uniform(
            -init_bound, init_bound, (fan_in, fan_out)
        )
        intercept_init = self._random_state.uniform(-init_bound, init_bound, fan_out)
        return coef_init.astype(dtype, copy=False), intercept_init.astype(
            dtype, copy=False
        )

    # ------------------------------------------------------------------
    # Fitting.

    def _network(self, dtype, n_threads=None):
        """The core's network of this estimator: its layer widths, codes,
        their parameters and threads (``n_jobs``, unless ``n_threads``)."""
        layout = self._layout()
        return _core.Network(
            layout.units,
            self._activation_row().code,
            self._output_code(),
            dtype,
            **self._core_options(),
            **self._loss_options(),
            n_threads=_n_threads(self.n_jobs) if n_threads is None else n_threads,
        )

    def _class_sample_weight(self, y, incremental):
        """Per-sample weights from class_weight (classifier), or None."""
        return None

    def _check_dropout(self, n_hidden):
        """The dropout rate of each hidden layer (float64), None when all are 0."""
        rates = np.asarray(self.dropout, dtype=np.float64)
        if rates.ndim == 0:
            rates = np.full(n_hidden, float(rates))
        elif rates.ndim != 1 or rates.shape[0] != n_hidden:
            raise ValueError(
                f"dropout must be a float or one rate per hidden layer "
                f"({n_hidden}), got {self.dropout!r}."
            )
        if not ((rates >= 0) & (rates < 1)).all():
            raise ValueError(f"dropout rates must be in [0, 1), got {self.dropout!r}.")
        if not rates.any():
            return None
        if not _registry.SOLVERS[self.solver].stochastic:
            raise ValueError(
                "dropout needs a stochastic solver ('sgd', 'adam', 'rmsprop'): "
                "'lbfgs' minimises a fixed full-batch objective."
            )
        return np.ascontiguousarray(rates)

    def _activation_row(self):
        """The registry's row of the hidden activation."""
        return _registry.ACTIVATIONS[self.activation]

    @abstractmethod
    def _output_for_fit(self):
        """The registry's row of the output and loss a fit starts with."""

    def _output_row(self):
        """The registry's row of the fitted output activation and the loss."""
        return _registry.output(self.loss, self.out_activation_)

    def _output_code(self):
        """The core's code of the output activation and its loss."""
        return self._output_row().code

    def _core_options(self):
        """Keyword arguments of the core's entry points beyond the layout."""
        param = self._activation_row().param
        return {} if param is None else {"activation_param": float(getattr(self, param))}

    def _loss_options(self):
        """Keyword arguments of the core's training entry points for the loss."""
        param = self._output_row().param
        return {} if param is None else {"loss_param": float(getattr(self, param))}

    def _reported_loss(self, data_loss, penalty):
        """The loss as scikit-learn reports it.

        The core's data loss sums each sample's loss over the outputs (the
        objective whose gradient it computes). scikit-learn averages some
        losses over the outputs instead (the registry's
        ``averaged_over_outputs``).
        """
        if self._output_row().averaged_over_outputs:
            data_loss = data_loss / self.n_outputs_
        return data_loss + penalty

    def _fit(self, X, y, sample_weight=None, incremental=False):
        # scikit-learn's callbacks see the data as given
        tasks = fit_tasks(self, X, y, sample_weight, incremental)
        hidden_layer_sizes = self.hidden_layer_sizes
        if not hasattr(hidden_layer_sizes, "__iter__"):
            hidden_layer_sizes = [hidden_layer_sizes]
        # integers >= 1: checked by _parameter_constraints (_LayerWidths)
        hidden_layer_sizes = [int(h) for h in hidden_layer_sizes]
        if self.callbacks and self.solver not in _STOCHASTIC_SOLVERS:
            raise ValueError(
                "callbacks are called after each epoch of the stochastic solvers "
                f"{_STOCHASTIC_SOLVERS}; solver={self.solver!r} has no epochs."
            )
        if not _registry.SOLVERS[self.solver].stochastic and self.weight_decay > 0:
            raise ValueError(
                f"weight_decay={self.weight_decay} is the decoupled weight decay of "
                "the stochastic solvers ('sgd', 'adam', 'rmsprop'); 'lbfgs' has no "
                "step size to scale it. Use alpha (the L2 penalty) with 'lbfgs'."
            )
        self._dropout_rates = self._check_dropout(len(hidden_layer_sizes))
        first_pass = not hasattr(self, "coefs_") or (
            not self.warm_start and not incremental
        )
        # nothing of an earlier fit that stopped half-way (a callback
        # raised, Ctrl-C, an error) carries over: the best weights of early
        # stopping are this fit's own
        self._best_theta = None

        X, y = self._validate_input(X, y, incremental, reset=first_pass)
        n_samples, n_features = X.shape
        if sample_weight is not None:
            # float64 whatever the data's dtype: the weights are scaled
            # into the data's range below, before any cast
            sample_weight = self._collective(
                _check_sample_weight, sample_weight, X, dtype=np.float64,
                ensure_non_negative=True,
            )
        class_sw = self._class_sample_weight(y, incremental)
        if class_sw is not None:
            sample_weight = class_sw if sample_weight is None else sample_weight * class_sw
        weight_scale = self._collective(
            self._weight_scale, sample_weight, class_sw is not None
        )

        if y.ndim == 1:
            y = y.reshape((-1, 1))
        self.n_outputs_ = y.shape[1]
        layer_units = [n_features] + hidden_layer_sizes + [self.n_outputs_]
        n_weights = sum(a * b for a, b in zip(layer_units[:-1], layer_units[1:]))
        if n_weights > _MAX_WEIGHTS:
            raise ValueError(
                f"The network has {n_weights} weights (layer widths "
                f"{layer_units}); the core's 32-bit BLAS sizes allow at most "
                f"{_MAX_WEIGHTS}. Use smaller hidden_layer_sizes."
            )

        self._random_state = check_random_state(self.random_state)

        if first_pass:
            # a fit that starts afresh keeps nothing of the last one: the
            # stochastic solvers' records go too when this fit is lbfgs's,
            # which sets none of them (a fresh lbfgs fit has none)
            for name in _STOCHASTIC_STATE:
                self.__dict__.pop(name, None)
            self._initialize(y, layer_units, X.dtype)
        elif [c.shape for c in self.coefs_] != [
            (a, b) for a, b in zip(layer_units[:-1], layer_units[1:])
        ]:
            raise ValueError(
                "The network's shape changed since the last fit: "
                f"coefs_ have shapes {[c.shape for c in self.coefs_]}, the "
                f"data and hidden_layer_sizes need layer widths {layer_units}. "
                "Use warm_start=False to start afresh."
            )

        dtype = X.dtype
        theta = self._packed_params(dtype)
        Y = np.ascontiguousarray(y, dtype=dtype)
        if sample_weight is None:
            sw = np.ones(n_samples, dtype=dtype)
        else:
            sw = np.ascontiguousarray(np.ldexp(sample_weight, weight_scale), dtype=dtype)
        # the objective is sum(sw * loss) / sum(sw) + 0.5 * alpha * ||W||² /
        # sum(sw): weights scaled by 2**weight_scale leave it unchanged with
        # alpha scaled alike (exactly: a power of two)
        self._l2_alpha = float(np.ldexp(float(self.alpha), weight_scale))

        with _SingleThreadedBLAS():
            if self.solver in _STOCHASTIC_SOLVERS:
                self._fit_stochastic(
                    X, Y, sw, sample_weight is not None, incremental, tasks
                )
            else:
                self._fit_lbfgs(X, Y, sw, tasks)

        theta = self._theta
        if not np.isfinite(theta).all():
            raise ValueError(_NONFINITE_WEIGHTS)
        tasks.end()
        return self

    def _weight_scale(self, sample_weight, class_weighted):
        """The power of two k that brings the sample weights near 1.

        The core works in the data's dtype: float32 would turn weights
        above 3.4e38 into inf and below 1.4e-45 into 0 (and lose the
        precision of subnormal ones), where scikit-learn, whose weights stay
        float64, trains. Weights whose largest value is outside
        [2**-24, 2**24] are multiplied by ``2**k``, which brings it into
        [0.5, 1): exact, and with alpha scaled alike the loss, its gradient
        and ``loss_`` are unchanged; other weights keep k = 0 (the same
        bits as unscaled). With ``comm`` the largest weight of all ranks
        sets k.

        Raises ValueError when the weights sum to zero: nothing would be
        trained.
        """
        if sample_weight is None:
            return 0
        local = float(np.max(sample_weight)) if sample_weight.shape[0] else 0.0
        if self.comm is None:
            largest = local
        else:
            largest = max(self.comm.allgather(local))
        if largest == 0:
            source = (
                "sample_weight times the class_weight of each sample's class"
                if class_weighted
                else "sample_weight"
            )
            detail = (
                f" (class_weight={self.class_weight!r})" if class_weighted else ""
            )
            raise ValueError(
                "Sample weights must contain at least one non-zero number: "
                f"{source} is 0 for every sample{detail}, so there is "
                "nothing to train on."
            )
        if 2.0**-24 <= largest <= 2.0**24:
            return 0
        return -int(np.frexp(largest)[1])

    def _collective(self, func, *args, **kwargs):
        """``func(*args, **kwargs)``; with ``comm``, raise on every rank when
        it raised on any (so that no rank is left waiting in MPI)."""
        if self.comm is None:
            return func(*args, **kwargs)
        result, error = None, None
        try:
            result = func(*args, **kwargs)
        except Exception as exc:  # re-raised on every rank by agree()
            error = exc
        _distributed.agree(self.comm, error)
        return result

    def _fit_lbfgs(self, X, Y, sw, tasks):
        theta = self._theta
        layout = self._layout()
        n_threads = None if self.comm is None else self._rank_threads()
        network = self._network(theta.dtype, n_threads)
        data = _core_input(X, theta.dtype, Y, sw)
        rows = _loss_grad_rows(network, data)
        grad = np.empty_like(theta)
        alpha = self._l2_alpha
        if self.comm is None:
            full_batch = None
            interrupt = contextlib.nullcontext()
        else:
            # every rank evaluates the loss and gradient of all ranks' rows
            # at the same points, so that each rank's L-BFGS-B takes the
            # same steps; Ctrl-C on any rank stops all at the same one
            self.comm.Bcast(theta, root=0)
            interrupt = _distributed.DeferredInterrupt()
            full_batch = _distributed.FullBatch(
                self.comm, network, data, alpha, rows, interrupt
            )

        # the evaluated point with the lowest finite loss (the start, until
        # one is lower): kept when the loss becomes NaN/inf or on Ctrl-C
        best_theta = theta.copy()
        best_loss = [np.inf]
        n_iter = [0]

        def evaluate():
            # the core's (data loss, penalty) at theta, gradient into grad:
            # every evaluation goes through here, so none can leave out an
            # option of the fit
            if full_batch is not None:
                return full_batch(theta, grad)
            return network.loss_grad(theta, grad, data, alpha, rows)

        def loss_grad(x):
            theta[:] = x
            data, penalty = evaluate()
            loss = data + penalty
            if loss < best_loss[0]:  # never true for NaN
                best_loss[0] = loss
                best_theta[:] = theta
            return loss, grad.astype(np.float64)

        # where a scikit-learn callback asked to stop
        stopped_at = []

        def count_iteration(xk):
            n_iter[0] += 1
            stop = tasks.lbfgs_iteration(xk)
            if self.comm is not None:
                # a stop asked on any rank stops all at this iteration
                stop = self.comm.allreduce(int(bool(stop))) > 0
            if stop:
                stopped_at.append(np.array(xk, copy=True))
                raise StopIteration

        with interrupt:
            interrupted = False
            tasks.lbfgs_begin(theta)
            try:
                opt_res = scipy.optimize.minimize(
                    loss_grad,
                    theta.astype(np.float64),
                    method="L-BFGS-B",
                    jac=True,
                    callback=count_iteration,
                    options={
                        "maxfun": self.max_fun,
                        "maxiter": self.max_iter,
                        "gtol": self.tol,
                    },
                )
                theta[:] = opt_res.x
            except StopIteration:
                pass  # scipy < 1.11 lets the callback's StopIteration through
            except KeyboardInterrupt:
                interrupted = True
                theta[:] = best_theta
                warnings.warn("Training interrupted by user.")
            finally:
                tasks.close_subtask()
            if stopped_at:
                theta[:] = stopped_at[0]
            data_loss, penalty = evaluate()
            if not np.isfinite(data_loss + penalty):
                theta[:] = best_theta
                self._set_theta(theta, layout)
                self.n_iter_ = min(n_iter[0], self.max_iter)
                if not np.isfinite(best_loss[0]):
                    self.loss_ = np.inf
                    raise ValueError(
                        f"{_NONFINITE_WEIGHTS} lbfgs cannot start: the loss is NaN "
                        "or infinite at the initial weights, which were kept. The "
                        "input data (or the regression targets) are too large: "
                        "scale them."
                    )
                data_loss, penalty = evaluate()
                self.loss_ = self._reported_loss(data_loss, penalty)
                raise ValueError(
                    f"{_NONFINITE_WEIGHTS} lbfgs diverged after {self.n_iter_} "
                    "iterations: the loss became NaN or infinite. The weights with "
                    "the lowest finite loss were kept. Scale the input data (and "
                    "the regression targets)."
                )
        if interrupted or stopped_at:
            self.n_iter_ = min(n_iter[0], self.max_iter)
        else:
            self.n_iter_ = _check_optimize_result(opt_res, self.max_iter)
        self.loss_ = self._reported_loss(data_loss, penalty)
        self._set_theta(theta, layout)
        if self.verbose:
            _print("L-BFGS-B: %d iterations, loss = %.8f" % (self.n_iter_, self.loss_))

    def _fit_stochastic(self, X, Y, sw, weighted, incremental, tasks):
        theta = self._theta
        optimizer = getattr(self, "_optimizer", None)
        if (
            not incremental
            or optimizer is None
            or not optimizer.matches(theta.shape[0], theta.dtype, self.solver)
        ):
            optimizer = self._optimizer = _StochasticOptimizer(
                self, theta.shape[0], theta.dtype
            )
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        if self.early_stopping:
            split = self._validation_split(X, Y, sw, weighted)
        else:
            split = _ValidationSplit(X, Y, sw)
        epochs = self._epochs(split, optimizer)
        feedback = _EpochFeedback(self, incremental)
        data_parallel = epochs.data_parallel
        # with comm, Ctrl-C in or between epochs (validation, callbacks) is
        # noted, and acted on by every rank at the next exchange
        interrupt = (contextlib.nullcontext() if data_parallel is None
                     else data_parallel.interrupt)
        try:
            with interrupt:
                self.n_iter_ = 0
                for _ in range(self.max_iter):
                    if not self._train_one_epoch(epochs, tasks):
                        break
                    if self._stop_after_epoch(split, optimizer, feedback, tasks):
                        break
                    if incremental:
                        break
                    if self.n_iter_ == self.max_iter:
                        warnings.warn(
                            "Stochastic Optimizer: Maximum iterations (%d) "
                            "reached and the optimization hasn't converged yet."
                            % self.max_iter,
                            ConvergenceWarning,
                        )
                if data_parallel is not None:
                    data_parallel.raise_if_interrupted()
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.")
        finally:
            feedback.newline()
            tasks.close_subtask()

        if self.early_stopping:
            # the best weights (the starting ones when no epoch had a
            # finite validation score), as scikit-learn restores them
            theta[:] = self._best_theta
        self._best_theta = None

    def _validation_split(self, X, Y, sw, weighted):
        """Hold out ``validation_fraction`` of the rows for early stopping,
        as scikit-learn draws them (with ``comm``, the single-process split
        of all ranks' rows)."""
        # don't stratify in multilabel classification
        should_stratify = is_classifier(self) and self.n_outputs_ == 1
        # the binarized labels as scikit-learn stratifies them (bool, not
        # the float copy the core trains on): the same split, and its
        # error names a class with too few members as scikit-learn does
        stratify = Y.astype(bool) if should_stratify else None
        train_pos = val_pos = None
        if self.comm is None:
            X_train, X_val, Y_train, Y_val, sw_train, sw_val = train_test_split(
                X,
                Y,
                sw,
                random_state=self._random_state,
                test_size=self.validation_fraction,
                stratify=stratify,
            )
            n_val = X_val.shape[0]
        else:
            (X_train, X_val, Y_train, Y_val, sw_train, sw_val, train_pos,
             val_pos, n_val) = self._split_ranks(X, Y, sw, stratify)
        if n_val < 2:
            raise ValueError(
                "The validation set is too small. Increase 'validation_fraction' "
                "or the size of your dataset."
            )
        if not sp.issparse(X_train):
            X_train = np.ascontiguousarray(X_train)
        split = _ValidationSplit(
            X_train, np.ascontiguousarray(Y_train), np.ascontiguousarray(sw_train),
            train_pos,
        )
        if is_classifier(self):
            split.y_val = self._label_binarizer.inverse_transform(Y_val)
        else:
            split.y_val = Y_val if Y_val.shape[1] > 1 else Y_val.ravel()
        split.X_val = X_val
        split.loss = _HeldOutLoss(self, X_val, Y_val, sw_val)
        train_weighted = bool(split.sw.any())
        if self.comm is not None:
            train_weighted = self.comm.allreduce(int(train_weighted)) > 0
        if not weighted:
            sw_val = None
        elif not train_weighted:
            raise ValueError(
                "Sample weights must contain at least one non-zero number: "
                "the samples left for training after holding out the "
                "validation set (validation_fraction="
                f"{self.validation_fraction}) all have weight 0."
            )
        split.sw_val = sw_val
        # what is restored when no epoch has a finite validation score
        self._best_theta = self._theta.copy()
        if self.comm is not None:
            split.score = self._validation_score_ranks(
                X_val, split.y_val, sw_val, val_pos
            )
        return split

    def _epochs(self, split, optimizer):
        """The network, data and buffers that every epoch of the fit uses."""
        theta = self._theta
        dtype = theta.dtype
        epochs = _Epochs(optimizer, theta)
        n_samples = split.X.shape[0]
        if self.comm is not None:
            epochs.data_parallel = self._data_parallel(
                split.X, split.Y, split.sw, theta, split.train_pos
            )
            n_samples = epochs.data_parallel.n_samples
            epochs.network = self._network(dtype, epochs.data_parallel.n_threads)
        else:
            if self.batch_size == "auto":
                epochs.batch_size = min(200, n_samples)
            else:
                if self.batch_size > n_samples:
                    warnings.warn(
                        "Got `batch_size` less than 1 or larger than "
                        "sample size. It is going to be clipped"
                    )
                epochs.batch_size = int(np.clip(self.batch_size, 1, n_samples))
            epochs.network = self._network(dtype)
            epochs.data = _core_input(split.X, dtype, split.Y, split.sw)
        epochs.n_samples = n_samples
        epochs.sample_idx = np.arange(n_samples, dtype=np.intp)
        epochs.network.set_optimizer(
            _registry.SOLVERS[self.solver].code,
            optimizer.state_1,
            optimizer.state_2,
            optimizer.step,
            learning_rate=optimizer.learning_rate,
            momentum=float(self.momentum),
            nesterov=bool(self.nesterovs_momentum),
            beta_1=float(self.beta_1),
            beta_2=float(self.beta_2),
            epsilon=float(self.epsilon),
            rho=float(self.rho),
            weight_decay=float(self.weight_decay),
        )
        if self._dropout_rates is not None:
            # the masks' key; each epoch's rows are counted from t_ on, so
            # every epoch (and partial_fit call) draws new masks
            self._dropout_seed = int(
                self._random_state.randint(np.iinfo(np.int64).max, dtype=np.int64)
            )
            if self.comm is not None:
                # rank 0's, as its weights and orders (random_state=None
                # draws differently on each rank)
                self._dropout_seed = self.comm.bcast(self._dropout_seed, root=0)
            epochs.network.set_dropout(self._dropout_rates, self._dropout_seed)
        return epochs

    def _train_one_epoch(self, epochs, tasks):
        """Train one epoch; False when it diverged under early stopping
        (the fit then stops), ValueError when it diverged otherwise."""
        theta, network = self._theta, epochs.network
        if self.shuffle:
            # sklearn.utils.shuffle(sample_idx) shuffles an arange and
            # indexes with it; the same swaps applied in place give the
            # same order: same seed, same batch order
            self._random_state.shuffle(epochs.sample_idx)
            order = epochs.sample_idx
        else:
            order = None
        tasks.epoch_begin()
        network.learning_rate = epochs.optimizer.learning_rate
        if epochs.data_parallel is not None:
            epochs.start[:] = theta
            sum_data, sum_penalty, status = epochs.data_parallel.epoch(
                network, theta, order, self._l2_alpha, int(self.t_)
            )
            if not np.isfinite(theta).all():
                status |= _core.STATUS_NONFINITE_PARAMS
        else:
            # the core copies theta into epochs.start before the first
            # step and flags non-finite weights at the end
            sum_data, sum_penalty, _, status = network.epoch(
                theta, epochs.data, order, epochs.batch_size, self._l2_alpha,
                dropout_row0=int(self.t_), theta_start=epochs.start,
            )
        if status != _core.STATUS_OK:
            if status & _core.STATUS_NONFINITE_PARAMS:
                theta[:] = epochs.start
            # the velocity or Adam's moments may have overflowed: a later
            # partial_fit starts them afresh from these weights
            self._optimizer = None
            if self.early_stopping:
                self._early_stopping_diverged(epochs.n_samples)
                return False
            raise ValueError(
                f"{_NONFINITE_WEIGHTS} Training diverged in epoch "
                f"{self.n_iter_ + 1}: the loss became NaN or infinite. "
                "The weights of the last finite state were kept. Lower "
                "learning_rate_init or scale the input data."
            )
        self.n_iter_ += 1
        self.loss_ = self._reported_loss(sum_data, sum_penalty) / epochs.n_samples
        self.t_ += epochs.n_samples
        self.loss_curve_.append(self.loss_)
        return True

    def _stop_after_epoch(self, split, optimizer, feedback, tasks):
        """The epoch's bookkeeping (validation, schedule, progress and
        callbacks); True when training stops here."""
        self._update_no_improvement_count(
            self.early_stopping, split.X_val, split.y_val, split.sw_val,
            split.loss, split.score,
        )
        optimizer.iteration_ends(self.t_)
        # progress line and callbacks (a callback returning True stops),
        # then scikit-learn's callbacks (the same)
        stop = feedback.active and feedback.epoch_end(optimizer.learning_rate)
        stop = tasks.epoch_end() or stop
        if self.comm is not None:
            # the callbacks run on every rank; a stop asked on any rank
            # stops all after this epoch (none is left waiting)
            stop = self.comm.allreduce(int(bool(stop))) > 0
        if stop:
            return True
        if self._no_improvement_count > self.n_iter_no_change:
            feedback.newline()
            if self.early_stopping:
                msg = (
                    "Validation score did not improve more than "
                    "tol=%f for %d consecutive epochs."
                    % (self.tol, self.n_iter_no_change)
                )
            else:
                msg = (
                    "Training loss did not improve more than tol=%f"
                    " for %d consecutive epochs." % (self.tol, self.n_iter_no_change)
                )
            if optimizer.trigger_stopping(msg, self.verbose):
                return True
            self._no_improvement_count = 0
        return False

    def _early_stopping_diverged(self, n_samples):
        """Record an epoch that diverged under early stopping, and warn.

        scikit-learn does not raise here: its weights turn NaN, every
        later epoch appends a NaN loss and validation score (a NaN score
        never counts as "no improvement", so it runs up to max_iter) and
        the weights with the best validation score are restored at the
        end. cbp records the diverged epoch the same way (NaN loss and
        score), then stops, as nothing after it could improve the score,
        and the caller restores the best weights.
        """
        self.n_iter_ += 1
        self.t_ += n_samples
        self.loss_ = np.nan
        self.loss_curve_.append(self.loss_)
        self.validation_scores_.append(np.nan)
        if getattr(self, "validation_loss_curve_", None) is not None:
            self.validation_loss_curve_.append(np.nan)
        warnings.warn(
            f"Training diverged in epoch {self.n_iter_}: the loss became NaN or "
            "infinite, so the validation score is NaN. Training stopped; the "
            "weights with the best validation score were restored. Lower "
            "learning_rate_init or scale the input data.",
            ConvergenceWarning,
        )

    def _rank_threads(self):
        """OpenMP threads of one rank with ``comm``: ``n_jobs``, or with
        None this node's cores shared by its ranks. Collective."""
        if self.n_jobs is None:
            return _distributed.threads_per_rank(self.comm)
        return _n_threads(self.n_jobs)

    def _split_ranks(self, X, Y, sw, stratify):
        """Early stopping's split with ``comm``: the split of the
        concatenated shards that a single process draws (rank 0 draws it),
        each rank keeping its rows of either set.

        Returns this rank's ``X_train, X_val, Y_train, Y_val, sw_train,
        sw_val`` (in the order of the global sets), the place of each of
        its training and validation rows in the global set, and the size
        of the global validation set.
        """
        # theta's starting point is rank 0's (the best weights until an
        # epoch scores)
        self.comm.Bcast(self._theta, root=0)

        def split(ids, stratify_all):
            return train_test_split(
                ids,
                random_state=self._random_state,
                test_size=self.validation_fraction,
                stratify=stratify_all,
            )

        train, val, train_pos, val_pos, n_val = _distributed.split(
            self.comm, X.shape[0], stratify, split
        )
        return (X[train], X[val], Y[train], Y[val], sw[train], sw[val],
                train_pos, val_pos, n_val)

    def _validation_score_ranks(self, X_val, y_val, sw_val, val_pos):
        """Early stopping's validation score with ``comm``: a callable
        scoring the current weights on the held-out rows of all ranks
        (``val_pos``: their places in the global validation set), as
        :meth:`_score` scores them in one process."""
        score_function = accuracy_score if is_classifier(self) else r2_score

        def score_all(y, y_pred, sample_weight):
            if np.issubdtype(y_pred.dtype, np.floating) and not np.isfinite(
                y_pred
            ).all():
                return np.nan
            return score_function(y, y_pred, sample_weight=sample_weight)

        score = _distributed.ValidationScore(
            self.comm, y_val, sw_val, val_pos, score_all
        )

        def validation_score():
            held_out = X_val.shape[0] > 0
            return score(self._predict(X_val, check_input=False) if held_out else None)

        return validation_score

    def _data_parallel(self, X, Y, sw, theta, positions=None):
        """Shards and buffers of data-parallel epochs over ``self.comm``.

        ``batch_size`` is per rank ('auto': 200); the global batch is the
        number of ranks times it (see :mod:`cbp._distributed`).
        ``positions``: the place of each row in the global training set
        (None: the shards concatenated in rank order).
        """
        n_threads = self._rank_threads()
        local_batch = 200 if self.batch_size == "auto" else int(self.batch_size)
        data_parallel = _distributed.DataParallelEpochs(
            self.comm, _core_input(X, theta.dtype, Y, sw), local_batch, theta,
            n_threads, positions,
        )
        if self.batch_size != "auto" and data_parallel.batch_size < (
            data_parallel.n_ranks * local_batch
        ):
            warnings.warn(
                "Got `batch_size` times the number of ranks larger than "
                "the sample size. It is going to be clipped"
            )
        return data_parallel

    def _update_no_improvement_count(
        self, early_stopping, X, y, sample_weight, validation_loss=None,
        validation_score=None,
    ):
        if early_stopping:
            if validation_score is None:
                val_score = self._score(X, y, sample_weight=sample_weight)
            else:
                val_score = validation_score()
            self.validation_scores_.append(val_score)
            if getattr(self, "validation_loss_curve_", None) is None:
                # a warm start from an estimator unpickled from a cbp without it
                self.validation_loss_curve_ = []
            self.validation_loss_curve_.append(validation_loss())
            last_valid_score = self.validation_scores_[-1]
            if last_valid_score < (self.best_validation_score_ + self.tol):
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if last_valid_score > self.best_validation_score_:
                self.best_validation_score_ = last_valid_score
                self._best_theta = self._theta.copy()
        else:
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < self.best_loss_:
                self.best_loss_ = self.loss_curve_[-1]

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the model to data matrix X and target(s) y.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data. float32 data is trained in float32, anything
            else in float64. Sparse matrices are converted to CSR (not to
            dense): the core's first layer multiplies the CSR rows.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            The target values (class labels in classification, real numbers
            in regression).
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative sample weights.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    def _check_solver(self):
        if self.solver not in _STOCHASTIC_SOLVERS:
            raise AttributeError(
                "partial_fit is only available for stochastic"
                " optimizers. %s is not stochastic." % self.solver
            )
        return True

    # ------------------------------------------------------------------
    # Tools: inspection (cbp/_inspect.py), interop (cbp/_interop.py).

    def summary(self, print_fn=print):
        """Print and return a table of the fitted network's layers.

        One line per layer (input, hidden_1, ..., output) with its output
        shape, activation, the shapes of its weights ``W_l`` and biases
        ``b_l`` and its number of parameters; then the total, with the
        memory it takes in the model's dtype.

        Parameters
        ----------
        print_fn : callable or None, default=print
            Called once with the table; None only returns it.

        Returns
        -------
        table : str
            The table.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before fit: the table describes the fitted network.
        """
        from ._inspect import summary

        return summary(self, print_fn=print_fn)

    def to_sklearn(self):
        """Return an equivalent fitted scikit-learn estimator.

        A :class:`sklearn.neural_network.MLPClassifier` (or
        ``MLPRegressor``) with copies of ``coefs_``, ``intercepts_``,
        ``classes_`` and the other fitted attributes: it predicts the same
        (up to rounding in the last bits). It opens scikit-learn's
        ecosystem, such as skl2onnx's ONNX export. Parameters that only
        shape training and that scikit-learn lacks (``n_jobs``,
        ``callbacks``) are dropped.

        Returns
        -------
        sk_est : sklearn.neural_network.MLPClassifier or MLPRegressor
            The fitted scikit-learn estimator.

        Raises
        ------
        ValueError
            When scikit-learn cannot express the network (a hidden
            activation, output activation or loss it lacks, or trainable
            parameters beyond the weights and biases).
        sklearn.exceptions.NotFittedError
            Before fit.
        """
        from ._interop import to_sklearn

        return to_sklearn(self)

    @classmethod
    def from_sklearn(cls, sk_est):
        """Return a fitted cbp estimator equivalent to a scikit-learn one.

        Parameters
        ----------
        sk_est : sklearn.neural_network.MLPClassifier or MLPRegressor
            A fitted scikit-learn estimator of the matching kind (a
            classifier for :class:`MLPClassifier`).

        Returns
        -------
        est : MLPClassifier or MLPRegressor
            With the same parameters and copies of the fitted attributes;
            it predicts the same and can go on training (``warm_start``,
            ``partial_fit``).

        Raises
        ------
        TypeError
            When ``sk_est`` is not the matching scikit-learn estimator.
        ValueError
            When cbp cannot express the network.
        sklearn.exceptions.NotFittedError
            When ``sk_est`` is not fitted.
        """
        from ._interop import from_sklearn

        return from_sklearn(cls, sk_est)

    # ------------------------------------------------------------------
    # Prediction.

    def _forward_pass_fast(self, X, check_input=True):
        """Network output for X, computed by the core in bounded blocks.

        With ``check_input`` (the public methods) a NaN or infinite output
        raises ValueError instead of being returned: finite weights can
        still overflow on large inputs, or after the last step of a
        diverging fit. Internal scoring (early stopping) passes
        ``check_input=False`` and gets the NaN, as in scikit-learn.
        """
        if check_input:
            X = validate_data(
                self,
                X,
                accept_sparse="csr",
                dtype=(np.float64, np.float32),
                order="C",
                reset=False,
            )
        theta = self._packed_params()
        dtype = np.result_type(X.dtype, theta.dtype)
        if theta.dtype != dtype:
            theta = theta.astype(dtype)
        n_samples = X.shape[0]
        units = self._layout().units
        out = np.empty((n_samples, int(units[-1])), dtype=dtype)
        if n_samples == 0:
            return out
        max_width = max([int(u) for u in units[1:-1]], default=1)
        rows = _block_rows(n_samples, max_width)
        network = self._network(dtype)
        with _SingleThreadedBLAS():
            network.predict(theta, _core_input(X, dtype), out, rows)
        if check_input and not np.isfinite(out).all():
            raise ValueError(
                "The network's output is NaN or infinite for some samples: "
                "the weights or the input values are too large (did the fit "
                "diverge?). Scale the input data or lower learning_rate_init."
            )
        return out

    def _score_with_function(self, X, y, sample_weight, score_function):
        """Private score method without input validation."""
        y_pred = self._predict(X, check_input=False)
        if np.issubdtype(y_pred.dtype, np.floating) and not np.isfinite(y_pred).all():
            return np.nan
        return score_function(y, y_pred, sample_weight=sample_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


def _check_nonnegative_targets(y, loss):
    if np.any(y < 0):
        raise ValueError(
            f"loss={loss!r} needs non-negative targets (counts or rates); "
            f"y has negative values, the smallest is {np.min(y)}."
        )


def _core_input(X, dtype, Y=None, sw=None):
    """The rows as the core reads them (:class:`cbp._core.Input`): dense X
    C-contiguous, sparse X as CSR values, intp indices and indptr, read in
    place; with Y and the sample weights for training."""
    if sp.issparse(X):
        X = X.tocsr()
        X = (
            np.ascontiguousarray(X.data, dtype=dtype),
            np.ascontiguousarray(X.indices, dtype=np.intp),
            np.ascontiguousarray(X.indptr, dtype=np.intp),
            X.shape[1],
        )
    else:
        X = np.ascontiguousarray(X, dtype=dtype)
    if Y is not None:
        Y = np.ascontiguousarray(Y, dtype=dtype)
        sw = np.ascontiguousarray(sw, dtype=dtype)
    return _core.Input(X, Y, sw)


class _ValidationSplit:
    """The training rows of a stochastic fit and, under early stopping,
    the held-out rows: their targets, weights, loss and (with ``comm``)
    the score of all ranks' held-out rows."""

    def __init__(self, X, Y, sw, train_pos=None):
        self.X, self.Y, self.sw = X, Y, sw
        # with comm: the places of this rank's rows in the global training set
        self.train_pos = train_pos
        self.X_val = self.y_val = self.sw_val = self.loss = self.score = None


class _Epochs:
    """What every epoch of a stochastic fit uses: the core's network, the
    rows (or the data-parallel shards), the batch size and buffers."""

    def __init__(self, optimizer, theta):
        self.optimizer = optimizer
        self.network = self.data = self.data_parallel = None
        self.batch_size = self.n_samples = self.sample_idx = None
        # theta before each epoch, to go back to if the epoch diverges
        self.start = np.empty_like(theta)


class _HeldOutLoss:
    """The loss of the estimator's current weights on held-out rows.

    The rows' loss as the core defines each batch's (and lbfgs's) loss:
    ``sum_i sw_i * loss_i / sw_sum + 0.5 * alpha * ||W||² / sw_sum``,
    reported as ``loss_`` is (:meth:`BaseMultilayerPerceptron._reported_loss`),
    computed by the core's :func:`~cbp._core.loss_grad` on the whole
    network (no dropout). The buffers are allocated once per fit.
    """

    def __init__(self, est, X, Y, sw):
        theta = est._theta
        self.est = est
        self.data = _core_input(X, theta.dtype, Y, sw)
        n_threads = None if est.comm is None else est._rank_threads()
        self.network = est._network(theta.dtype, n_threads)
        self.rows = _loss_grad_rows(self.network, self.data)
        # loss_grad also returns the gradient: a buffer it writes, unused
        self.grad = np.empty_like(theta)
        # the alpha of the fit's objective, scaled with its sample weights
        self.alpha = est._l2_alpha
        self.full_batch = None
        if est.comm is None:
            self.weightless = not self.data.sample_weight.any()
        else:
            # the held-out rows of all ranks
            self.full_batch = _distributed.FullBatch(
                est.comm, self.network, self.data, self.alpha, self.rows
            )
            self.weightless = not self.full_batch.sw_sum > 0

    def __call__(self):
        if self.weightless:
            return np.nan  # rows that all weigh 0 have no mean loss
        if self.full_batch is not None:
            data, penalty = self.full_batch(self.est._theta)
        else:
            data, penalty = self.network.loss_grad(
                self.est._theta, self.grad, self.data, self.alpha, self.rows
            )
        return self.est._reported_loss(data, penalty)


def _check_optimize_result(result, max_iter):
    """Warn when L-BFGS-B did not converge; return its iteration count."""
    if result.status != 0:
        message = result.message
        if isinstance(message, bytes):
            message = message.decode("latin1")
        warnings.warn(
            "lbfgs failed to converge after %d iteration(s) (status=%d):\n%s\n\n"
            "Increase the number of iterations to improve the convergence "
            "(max_iter=%d), or scale the data." % (result.nit, result.status, message, max_iter),
            ConvergenceWarning,
            stacklevel=3,
        )
    return min(result.nit, max_iter)


class MLPClassifier(ClassifierMixin, BaseMultilayerPerceptron):
    __doc__ = (
        """Multilayer perceptron classifier trained by the cbp core.

    A drop-in replacement for :class:`sklearn.neural_network.MLPClassifier`:
    the same parameters, attributes and behaviour, with the forward pass,
    backpropagation and optimizer steps of each epoch run by a compiled
    core without the GIL. Binary and multilabel targets use a logistic
    output and binary cross-entropy; multiclass targets a softmax output
    and cross-entropy. Either way the output delta is ``P - Y``.

    Parameters
    ----------"""
        + _CLASS_DOC_PARAMS
        + """
    class_weight : dict, 'balanced' or None, default=None
        Weights of the classes, ``{class_label: weight}`` (classes left out
        weigh 1), or 'balanced' for ``n_samples / (n_classes *
        np.bincount(y))`` computed on the data given to fit. They multiply
        ``sample_weight``, so they weigh each sample's loss in the core.
        Not supported for multilabel targets; 'balanced' is not supported
        by partial_fit (pass a dict computed on the whole data).

    Attributes
    ----------
    classes_ : ndarray or list of ndarray of shape (n_classes,)
        Class labels for each output.
"""
        + _CLASS_DOC_ATTRS
        + """
    See Also
    --------
    MLPRegressor : Multilayer perceptron regressor.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from cbp import MLPClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=50,
    ...                     random_state=0).fit(X / 16, y)
    >>> clf.score(X / 16, y) > 0.95
    True
    """
    )

    _parameter_constraints: dict = {
        **BaseMultilayerPerceptron._parameter_constraints,
        "class_weight": [dict, StrOptions({"balanced"}), None],
    }

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        n_jobs=None,
        callbacks=None,
        comm=None,
        leaky_relu_slope=0.01,
        rho=0.9,
        weight_decay=0.0,
        dropout=0.0,
        class_weight=None,
    ):
        self.class_weight = class_weight
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes,
            activation=activation,
            solver=solver,
            alpha=alpha,
            batch_size=batch_size,
            learning_rate=learning_rate,
            learning_rate_init=learning_rate_init,
            power_t=power_t,
            max_iter=max_iter,
            loss="log_loss",
            shuffle=shuffle,
            random_state=random_state,
            tol=tol,
            verbose=verbose,
            warm_start=warm_start,
            momentum=momentum,
            nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            n_iter_no_change=n_iter_no_change,
            max_fun=max_fun,
            n_jobs=n_jobs,
            callbacks=callbacks,
            comm=comm,
            leaky_relu_slope=leaky_relu_slope,
            rho=rho,
            weight_decay=weight_decay,
            dropout=dropout,
        )

    def _validate_input(self, X, y, incremental, reset):
        X, y = self._collective(
            validate_data,
            self,
            X,
            y,
            multi_output=True,
            accept_sparse="csr",
            dtype=(np.float64, np.float32),
            order="C",
            reset=reset,
        )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        labels = y
        if self.comm is not None and not type_of_target(y).startswith("multilabel"):
            # every rank encodes the classes of all shards
            labels = _distributed.global_classes(self.comm, y)
        return X, self._collective(self._encode_labels, y, labels, incremental)

    def _encode_labels(self, y, labels, incremental):
        if (not hasattr(self, "classes_")) or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(labels)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(labels)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same "
                        "classes as in the previous call to fit. Previously "
                        f"got {self.classes_}, `y` has {classes}"
                    )
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(
                    "`y` has classes not in `self.classes_`. "
                    f"`self.classes_` has {self.classes_}. 'y' has {classes}."
                )
        return self._label_binarizer.transform(y).astype(bool)

    def _output_for_fit(self):
        # one label out of many classes: softmax; binary and multilabel
        # targets: a logistic output per label
        multiclass = self._label_binarizer.y_type_ == "multiclass"
        return _registry.CLASSIFIER_OUTPUTS["softmax" if multiclass else "logistic"]

    def _class_sample_weight(self, y, incremental):
        """``class_weight`` as per-sample weights of the binarized targets y."""
        if self.class_weight is None:
            return None
        if self._label_binarizer.y_type_.startswith("multilabel"):
            raise ValueError(
                "class_weight is not supported for multilabel targets; pass "
                "sample_weight instead."
            )
        if incremental and self.class_weight == "balanced":
            raise ValueError(
                "class_weight='balanced' is not supported by partial_fit: the class "
                "frequencies of one batch are not those of the data. Compute the "
                "weights on the whole data with "
                "sklearn.utils.class_weight.compute_class_weight and pass them as "
                "a dict."
            )
        idx = y[:, 0].astype(np.intp) if y.shape[1] == 1 else np.argmax(y, axis=1)
        if self.class_weight == "balanced":
            if self.comm is None:
                return compute_sample_weight("balanced", idx)
            # the class counts of all ranks; then scikit-learn's formula,
            # n_samples / (n_classes_present * count), in its order of
            # operations (the same bits as one process)
            counts = np.bincount(idx, minlength=max(2, len(self.classes_)))
            counts = self.comm.allreduce(counts.astype(np.int64))
            present = counts > 0
            weights = np.zeros(counts.shape[0], dtype=np.float64)
            weights[present] = int(counts.sum()) / (
                int(present.sum()) * counts[present].astype(np.float64)
            )
            return weights[idx]
        classes = self.classes_.tolist()
        unknown = set(self.class_weight) - set(classes)
        if unknown:
            raise ValueError(
                f"class_weight has keys {sorted(unknown, key=str)} that are not "
                f"classes; the classes are {classes}."
            )
        weights = np.array([self.class_weight.get(c, 1.0) for c in classes], dtype=float)
        if not (np.isfinite(weights).all() and (weights >= 0).all()):
            raise ValueError(
                f"class_weight values must be finite and >= 0, got {self.class_weight}."
            )
        return weights[idx]

    def predict(self, X):
        """Predict using the multilayer perceptron classifier.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_classes)
            The predicted classes.
        """
        check_is_fitted(self)
        return self._predict(X)

    def _predict(self, X, check_input=True):
        y_pred = self._forward_pass_fast(X, check_input=check_input)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        return self._label_binarizer.inverse_transform(y_pred)

    def _score(self, X, y, sample_weight=None):
        return self._score_with_function(
            X, y, sample_weight=sample_weight, score_function=accuracy_score
        )

    @available_if(lambda est: est._check_solver())
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """Update the model with a single epoch over the given data.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.
        y : array-like of shape (n_samples,)
            The target values.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative sample weights.
        classes : array of shape (n_classes,), default=None
            Classes across all calls to partial_fit. Required on the first
            call, optional (and checked) on later ones.

        Returns
        -------
        self : object
            The updated estimator.
        """
        if _check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict_log_proba(self, X):
        """Return the log of probability estimates.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.

        Returns
        -------
        log_y_prob : ndarray of shape (n_samples, n_classes)
            ``log(predict_proba(X))``, classes ordered as in ``classes_``.
        """
        y_prob = self.predict_proba(X)
        return np.log(y_prob, out=y_prob)

    def predict_proba(self, X):
        """Probability estimates.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.

        Returns
        -------
        y_prob : ndarray of shape (n_samples, n_classes)
            The probability of each class, ordered as in ``classes_``.
        """
        check_is_fitted(self)
        y_pred = self._forward_pass_fast(X)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        if y_pred.ndim == 1:
            return np.vstack([1 - y_pred, y_pred]).T
        return y_pred

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, BaseMultilayerPerceptron):
    __doc__ = (
        """Multilayer perceptron regressor trained by the cbp core.

    A drop-in replacement for :class:`sklearn.neural_network.MLPRegressor`,
    by default with an identity output and half the squared error,
    ``loss = sum_i sw_i * 0.5 * ||P_i - Y_i||² / sw_sum``, so the output
    delta is ``P - Y``.

    Parameters
    ----------
    loss : {'squared_error', 'poisson', 'huber'}, default='squared_error'
        The loss minimised, each summed over the outputs:

        - 'squared_error': half the squared error, identity output.
        - 'poisson': half the Poisson deviance with a log link, as in
          scikit-learn (>= 1.7): the output is ``P = exp(Z)``
          (``out_activation_ = 'exp'``), the loss
          ``exp(Z) - Y * Z + Y * log(Y) - Y`` (the last two terms are
          constant) and the output delta ``exp(Z) - Y``. The targets must
          be >= 0.
        - 'huber': Huber's loss on the residual ``R = Z - Y`` with threshold
          ``huber_delta``: ``0.5 * R²`` where ``|R| <= huber_delta``,
          ``huber_delta * (|R| - 0.5 * huber_delta)`` elsewhere; the output
          delta is ``clip(R, -huber_delta, huber_delta)``. Identity output.

        ``loss_`` averages over the outputs for 'squared_error' and
        'huber' and sums for 'poisson', as scikit-learn reports them.
"""
        + _CLASS_DOC_PARAMS
        + """
    huber_delta : float, default=1.0
        Threshold of the 'huber' loss, > 0: residuals larger than this in
        absolute value count linearly. Ignored by the other losses.

    Attributes
    ----------"""
        + _CLASS_DOC_ATTRS
        + """
    See Also
    --------
    MLPClassifier : Multilayer perceptron classifier.

    Examples
    --------
    >>> import numpy as np
    >>> from cbp import MLPRegressor
    >>> rng = np.random.RandomState(0)
    >>> X = rng.uniform(-1, 1, (500, 3))
    >>> y = X @ [1.0, -2.0, 0.5]
    >>> reg = MLPRegressor(hidden_layer_sizes=(32,), max_iter=300,
    ...                    random_state=0).fit(X, y)
    >>> reg.score(X, y) > 0.95
    True
    """
    )

    _parameter_constraints: dict = {
        **BaseMultilayerPerceptron._parameter_constraints,
        "loss": [StrOptions(set(_registry.REGRESSION_LOSSES))],
        "huber_delta": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(
        self,
        loss="squared_error",
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        n_jobs=None,
        callbacks=None,
        comm=None,
        leaky_relu_slope=0.01,
        rho=0.9,
        weight_decay=0.0,
        dropout=0.0,
        huber_delta=1.0,
    ):
        self.huber_delta = huber_delta
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes,
            activation=activation,
            solver=solver,
            alpha=alpha,
            batch_size=batch_size,
            learning_rate=learning_rate,
            learning_rate_init=learning_rate_init,
            power_t=power_t,
            max_iter=max_iter,
            loss=loss,
            shuffle=shuffle,
            random_state=random_state,
            tol=tol,
            verbose=verbose,
            warm_start=warm_start,
            momentum=momentum,
            nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            n_iter_no_change=n_iter_no_change,
            max_fun=max_fun,
            n_jobs=n_jobs,
            callbacks=callbacks,
            comm=comm,
            leaky_relu_slope=leaky_relu_slope,
            rho=rho,
            weight_decay=weight_decay,
            dropout=dropout,
        )

    def predict(self, X):
        """Predict using the multilayer perceptron model.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            The predicted values.
        """
        check_is_fitted(self)
        return self._predict(X)

    def _predict(self, X, check_input=True):
        y_pred = self._forward_pass_fast(X, check_input=check_input)
        if y_pred.shape[1] == 1:
            return y_pred.ravel()
        return y_pred

    def _score(self, X, y, sample_weight=None):
        return self._score_with_function(
            X, y, sample_weight=sample_weight, score_function=r2_score
        )

    def _validate_input(self, X, y, incremental, reset):
        X, y = self._collective(
            validate_data,
            self,
            X,
            y,
            multi_output=True,
            y_numeric=True,
            accept_sparse="csr",
            dtype=(np.float64, np.float32),
            order="C",
            reset=reset,
        )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        loss = self._output_for_fit()
        if loss.nonnegative_targets:
            self._collective(_check_nonnegative_targets, y, self.loss)
        if not reset and hasattr(self, "out_activation_") and (
            loss.out_activation != self.out_activation_
        ):
            raise ValueError(
                f"The network was fitted with output activation "
                f"{self.out_activation_!r}, which loss={self.loss!r} cannot "
                "continue. Use warm_start=False to start afresh."
            )
        return X, y

    def _output_for_fit(self):
        return _registry.REGRESSION_LOSSES[self.loss]

    @available_if(lambda est: est._check_solver())
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None):
        """Update the model with a single epoch over the given data.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            The target values.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative sample weights.

        Returns
        -------
        self : object
            The updated estimator.
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)


def _check_partial_fit_first_call(clf, classes=None):
    """Return True on the first call to partial_fit, checking ``classes``."""
    if getattr(clf, "classes_", None) is None and classes is None:
        raise ValueError("classes must be passed on the first call to partial_fit.")
    if classes is not None:
        if getattr(clf, "classes_", None) is not None:
            if not np.array_equal(clf.classes_, unique_labels(classes)):
                raise ValueError(
                    "`classes=%r` is not the same as on last call "
                    "to partial_fit, was: %r" % (classes, clf.classes_)
                )
        else:
            clf.classes_ = unique_labels(classes)
            return True
    return False
