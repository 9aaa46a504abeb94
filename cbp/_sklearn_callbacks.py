"""scikit-learn's callback API (``sklearn.callback``, scikit-learn >= 1.9).

The estimators' fit is one task whose subtasks are the epochs of the
stochastic solvers or the iterations of 'lbfgs'. :class:`_FitTasks` opens
and closes them through scikit-learn's :class:`~sklearn.callback.CallbackContext`
between epochs, where cbp's own ``callbacks`` run too: never per batch.
Where scikit-learn has no ``sklearn.callback``, ``set_callbacks`` raises
and fitting works as without callbacks.
"""

import numpy as np
import sklearn

from . import _registry

try:
    from sklearn.callback import CallbackSupportMixin
except ImportError:  # scikit-learn < 1.9
    CallbackSupportMixin = None

HAVE_SKLEARN_CALLBACKS = CallbackSupportMixin is not None


if HAVE_SKLEARN_CALLBACKS:

    class _CallbackSupport(CallbackSupportMixin):
        """scikit-learn's :class:`~sklearn.callback.CallbackSupportMixin`."""

else:

    class _CallbackSupport:
        """Stand-in for scikit-learn's ``CallbackSupportMixin`` (< 1.9)."""

        def set_callbacks(self, *callbacks):
            """Set scikit-learn callbacks: needs scikit-learn >= 1.9.

            Parameters
            ----------
            *callbacks : callback instances
                The callbacks to set.

            Raises
            ------
            ImportError
                Always: this scikit-learn has no ``sklearn.callback``.
            """
            raise ImportError(
                "set_callbacks needs scikit-learn's callback API "
                "(sklearn.callback, scikit-learn >= 1.9); scikit-learn "
                f"{sklearn.__version__} is installed. Upgrade scikit-learn, or "
                "use the estimator's callbacks= parameter (a list of functions "
                "called after each epoch)."
            )


def _snapshot(estimator, theta, n_iter, extra=None):
    """Attributes that make a copy of ``estimator`` predict with ``theta``.

    ``theta`` is copied (the fit goes on updating its own vector), and
    ``coefs_``/``intercepts_`` (and ``prelu_slopes_``) become views of the
    copy, as after a fit.
    """
    layout = estimator._layout()
    theta = np.array(theta, dtype=estimator._theta.dtype, copy=True)
    coefs, intercepts = layout.views(theta)
    attrs = {"_theta": theta, "coefs_": coefs, "intercepts_": intercepts,
             "n_iter_": n_iter}
    if layout.prelu:
        attrs["prelu_slopes_"] = layout.slope_views(theta)
    if extra:
        attrs.update(extra)
    return attrs


class _FitTasks:
    """The task tree of one call to fit or partial_fit, for scikit-learn's callbacks.

    The root task is the call (``fit`` or ``partial_fit``); under fit its
    subtasks are the epochs (``task_name='epoch'``, stochastic solvers) or
    the L-BFGS-B iterations (``'lbfgs-iter'``). partial_fit runs one epoch,
    so its root task is a leaf. The hooks get the ``X``, ``y`` and
    ``sample_weight`` passed to fit, and a ``fitted_estimator`` built only
    when a hook asks for it: a copy that predicts as the estimator would
    had fit stopped after that epoch or iteration.

    Parameters
    ----------
    estimator : BaseMultilayerPerceptron
        The estimator being fitted.
    X, y, sample_weight
        As passed to fit (before validation), for the hooks.
    incremental : bool
        True under partial_fit.
    """

    def __init__(self, estimator, X, y, sample_weight, incremental):
        self.estimator = estimator
        self.X, self.y = X, y
        self.metadata = (
            {} if sample_weight is None else {"sample_weight": sample_weight}
        )
        self.incremental = incremental
        if incremental:
            max_subtasks, task_name = 0, "partial_fit"
        elif not _registry.SOLVERS[estimator.solver].stochastic:
            # lbfgs: scipy reports the end of an iteration, never the start
            # of the next; the subtask begun after the last one (ended empty
            # by close_subtask) is one more than max_iter
            max_subtasks, task_name = int(estimator.max_iter) + 1, "fit"
        else:
            max_subtasks, task_name = int(estimator.max_iter), "fit"
        self.ctx = estimator._init_callback_context(
            task_name=task_name, max_subtasks=max_subtasks
        )
        # subtasks only where a callback can see them: without callbacks the
        # epochs cost no context objects
        self.active = bool(getattr(estimator, "_skl_callbacks", None))
        self._task = None
        self.ctx.call_on_fit_task_begin(
            estimator=estimator, X=X, y=y, metadata=self.metadata
        )

    def _begin(self, task_name, attrs=None):
        self._task = self.ctx.subcontext(task_name=task_name)
        self._task.call_on_fit_task_begin(
            estimator=self.estimator, X=self.X, y=self.y, metadata=self.metadata,
            reconstruction_attributes=attrs,
        )

    def _end(self, attrs):
        task, self._task = self._task, None
        return task.call_on_fit_task_end(
            estimator=self.estimator, X=self.X, y=self.y, metadata=self.metadata,
            reconstruction_attributes=attrs,
        )

    # -- stochastic solvers ------------------------------------------------

    def epoch_begin(self):
        """Open the next epoch's subtask (fit only, with callbacks)."""
        if self.active and not self.incremental:
            self._begin("epoch")

    def epoch_end(self):
        """Close the epoch's subtask; return True when a callback asks to stop.

        Called after the epoch's bookkeeping (``n_iter_``, ``loss_curve_``,
        the validation score). The fitted estimator has the weights fit
        would keep if it stopped here: under early stopping the best so far.
        """
        if self._task is None:
            return False
        est = self.estimator

        def attrs():
            best = getattr(est, "_best_theta", None)
            theta = best if est.early_stopping and best is not None else est._theta
            return _snapshot(est, theta, est.n_iter_, {"loss_": est.loss_})

        return self._end(attrs)

    # -- lbfgs ---------------------------------------------------------------

    def lbfgs_begin(self, theta):
        """Open the first iteration's subtask, at the initial weights."""
        if self.active:
            est = self.estimator
            self._n_iter = 0
            self._begin("lbfgs-iter", lambda: _snapshot(est, theta, 0))

    def lbfgs_iteration(self, xk):
        """Close an iteration at ``xk`` and open the next; True asks to stop."""
        if not self.active:
            return False
        est = self.estimator
        self._n_iter += 1
        n_iter = self._n_iter
        stop = self._end(lambda: _snapshot(est, xk, n_iter))
        if not stop:  # else scipy stops at xk: no iteration follows
            self._begin("lbfgs-iter", lambda: _snapshot(est, xk, n_iter))
        return stop

    def close_subtask(self):
        """Close a subtask left open as an empty task.

        That is the L-BFGS-B iteration begun after the last one, or the
        epoch that raised or was interrupted (Ctrl-C): every begun subtask
        gets its end.
        """
        if self._task is not None:
            task, self._task = self._task, None
            task.call_on_fit_task_end(estimator=self.estimator)

    # -- the call ------------------------------------------------------------

    def end(self):
        """Close the root task with the fitted estimator."""
        self.ctx.call_on_fit_task_end(
            estimator=self.estimator, X=self.X, y=self.y, metadata=self.metadata,
            reconstruction_attributes={},
        )


class _NoTasks:
    """What :class:`_FitTasks` does where scikit-learn has no callback API: nothing."""

    active = False

    def epoch_begin(self):
        pass

    def epoch_end(self):
        return False

    def lbfgs_begin(self, theta):
        pass

    def lbfgs_iteration(self, xk):
        return False

    def close_subtask(self):
        pass

    def end(self):
        pass


def fit_tasks(estimator, X, y, sample_weight, incremental):
    """The task tree of this call (:class:`_FitTasks`), or a no-op without
    ``sklearn.callback``."""
    if not HAVE_SKLEARN_CALLBACKS:
        return _NoTasks()
    return _FitTasks(estimator, X, y, sample_weight, incremental)
