"""The stochastic solvers' state between epochs, and scikit-learn's learning-rate schedules."""

import numpy as np

from . import _registry
from ._progress import _print


class _StochasticOptimizer:
    """State of the sgd/adam/rmsprop optimizer between epochs and partial_fit calls.

    The per-parameter state (velocity, Adam's moments m and v, or
    RMSprop's mean square) are flat vectors laid out like the parameters;
    the core updates them in place.
    The learning-rate schedule and the stopping rule follow scikit-learn's.
    """

    def __init__(self, est, n_params, dtype):
        self.solver = est.solver
        self.learning_rate_init = float(est.learning_rate_init)
        self.learning_rate = float(est.learning_rate_init)
        self.lr_schedule = est.learning_rate
        self.power_t = float(est.power_t)
        self.state_1 = np.zeros(n_params, dtype=dtype)
        # the core's second state vector (Adam's v); empty for the others
        self.state_2 = (
            np.zeros(n_params, dtype=dtype)
            if _registry.SOLVERS[self.solver].n_moments == 2
            else np.zeros(1, dtype=dtype)[:0]
        )
        self.step = np.zeros(1, dtype=np.intp)

    def matches(self, n_params, dtype, solver):
        return (
            self.state_1.shape[0] == n_params
            and self.state_1.dtype == dtype
            and self.solver == solver
        )

    def iteration_ends(self, time_step):
        """Update the learning rate at the end of an epoch ('invscaling')."""
        if _registry.SOLVERS[self.solver].schedules and self.lr_schedule == "invscaling":
            self.learning_rate = self.learning_rate_init / (time_step + 1) ** self.power_t

    def trigger_stopping(self, msg, verbose):
        """Return True to stop; 'adaptive' sgd divides the rate by 5 instead."""
        if not _registry.SOLVERS[self.solver].schedules or self.lr_schedule != "adaptive":
            if verbose:
                _print(msg + " Stopping.")
            return True
        if self.learning_rate <= 1e-6:
            if verbose:
                _print(msg + " Learning rate too small. Stopping.")
            return True
        self.learning_rate /= 5.0
        if verbose:
            _print(msg + " Setting learning rate to %f" % self.learning_rate)
        return False
