"""Training feedback of the stochastic solvers: progress line and callbacks.

The estimators' epoch loop calls :meth:`_EpochFeedback.epoch_end` once per
epoch (never per batch). It prints the ``verbose`` progress line and calls
the user's ``callbacks``; a callback returning True asks the loop to stop.
"""

import sys
import time
import warnings


def _check_callbacks(callbacks):
    """Return ``callbacks`` as a tuple, checking that each is callable.

    Parameters
    ----------
    callbacks : list of callable or None
        The estimator's ``callbacks`` parameter.

    Returns
    -------
    callbacks : tuple of callable
        Empty when ``callbacks`` is None.
    """
    if callbacks is None:
        return ()
    callbacks = tuple(callbacks)
    for i, cb in enumerate(callbacks):
        if not callable(cb):
            raise TypeError(
                f"callbacks[{i}] is {cb!r}, which is not callable; callbacks "
                "must be a list of functions f(estimator, info) -> bool or None."
            )
    return callbacks


def _format_seconds(seconds):
    """``'87ms'``, ``'42.0s'``, ``'3m07s'`` or ``'2h05m'``."""
    if seconds < 1:
        return "%dms" % round(seconds * 1000)
    if seconds < 60:
        return "%.1fs" % seconds
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return "%dm%02ds" % (minutes, secs)
    hours, minutes = divmod(minutes, 60)
    return "%dh%02dm" % (hours, minutes)


def _is_live(stream):
    """True when ``stream`` shows a carriage return as a line rewrite.

    A terminal does, and so does a Jupyter notebook's output stream (which
    is not a TTY).
    """
    if type(stream).__module__.startswith("ipykernel"):
        return True
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if isatty is not None else False
    except Exception:  # a closed stream, an isatty that fails
        return False


def _write(stream, text):
    """Write ``text`` to ``stream`` and flush it; return False on failure.

    Any ``sys.stdout`` must do: None (``pythonw``, daemons), an object
    without ``flush``, a closed file, a pipe whose reader went away, a
    binary or narrowly encoded stream. Printing is a courtesy: a stream
    that cannot take the text must not fail the fit.
    """
    if stream is None:
        return False
    try:
        stream.write(text)
    except Exception:
        return False
    flush = getattr(stream, "flush", None)
    if flush is not None:
        try:
            flush()
        except Exception:
            # the text was accepted; only the flush failed
            pass
    return True


def _print(text):
    """``print(text)`` to the current ``sys.stdout`` that never raises.

    Parameters
    ----------
    text : str
        The line, without its newline.
    """
    _write(sys.stdout, text + "\n")


class _EpochFeedback:
    """Per-epoch progress line and callbacks for one call to fit.

    Parameters
    ----------
    estimator : BaseMultilayerPerceptron
        The estimator being trained; its ``verbose``, ``callbacks`` and
        ``max_iter`` parameters are read once here.
    incremental : bool
        True under ``partial_fit`` (one epoch per call: no ETA).
    stream : file-like, default=None
        Where the progress line goes; ``sys.stdout`` when None (looked up
        at construction, so that captured output is honoured).

    Notes
    -----
    On a terminal (``stream.isatty()``) or in a Jupyter notebook the line
    is rewritten in place with
    a carriage return each epoch and ended by :meth:`newline`; otherwise
    each epoch prints one plain line. Either way the line starts with
    scikit-learn's ``"Iteration %d, loss = %.8f"``. When the stream fails
    to take a line (see :func:`_write`), one RuntimeWarning says so and
    nothing more is printed for this fit; training goes on.
    """

    def __init__(self, estimator, incremental, stream=None):
        self.estimator = estimator
        self.verbose = bool(estimator.verbose)
        self.callbacks = _check_callbacks(getattr(estimator, "callbacks", None))
        self.incremental = incremental
        self.max_iter = int(estimator.max_iter)
        self.stream = sys.stdout if stream is None else stream
        self.live = _is_live(self.stream)
        self._line_open = False
        self._failed = False
        self._width = 0
        self._start = self._last = time.perf_counter()
        self._epochs = 0

    @property
    def active(self):
        """True when there is anything to print or call."""
        return self.verbose or bool(self.callbacks)

    def epoch_end(self, learning_rate=None):
        """Report the epoch just run; return True when a callback stops training.

        The epoch's figures are read from the estimator: ``n_iter_``,
        ``loss_``, ``t_`` and, under early stopping, the last of
        ``validation_scores_``.

        Parameters
        ----------
        learning_rate : float or None
            The learning rate the next epoch will use.

        Returns
        -------
        stop : bool
            True when one of the callbacks returned True.
        """
        now = time.perf_counter()
        epoch_time = now - self._last
        self._last = now
        self._epochs += 1
        est = self.estimator
        loss = est.loss_
        scores = est.validation_scores_ if est.early_stopping else None
        validation_score = scores[-1] if scores else None
        elapsed = now - self._start
        if self.incremental:
            eta = None
        else:
            eta = elapsed / self._epochs * max(self.max_iter - est.n_iter_, 0)
        if self.verbose:
            self._print_line(est.n_iter_, loss, validation_score, epoch_time, eta)
        if not self.callbacks:
            return False
        info = {
            "epoch": est.n_iter_,
            "loss": loss,
            "validation_score": validation_score,
            "time": epoch_time,
            "elapsed": elapsed,
            "eta": eta,
            "learning_rate": learning_rate,
            "n_samples_seen": est.t_,
            "max_iter": self.max_iter,
        }
        stop = False
        for cb in self.callbacks:
            # every callback sees every epoch, even after one asked to stop
            if cb(est, dict(info)) is True:
                stop = True
        if stop and self.verbose:
            self.message("Training stopped by a callback after epoch %d." % est.n_iter_)
        return stop

    def _print_line(self, epoch, loss, validation_score, epoch_time, eta):
        parts = ["Iteration %d, loss = %.8f" % (epoch, loss)]
        if validation_score is not None:
            parts.append("validation score = %.6f" % validation_score)
        parts.append("%s/epoch" % _format_seconds(epoch_time))
        if eta is not None:
            parts.append("ETA %s (max_iter=%d)" % (_format_seconds(eta), self.max_iter))
        line = ", ".join(parts)
        if self.live:
            pad = max(self._width - len(line), 0)
            self._emit("\r" + line + " " * pad)
            self._width = len(line)
            self._line_open = True
        else:
            self._emit(line + "\n")

    def _emit(self, text):
        """Write ``text``; after the stream's first failure, stop printing."""
        if self.stream is None or self._failed:
            return
        if not _write(self.stream, text):
            self._failed = True
            try:
                warnings.warn(
                    "verbose=True: the progress output stream (%r) failed to "
                    "take a line; no more progress is printed during this fit."
                    % (self.stream,),
                    RuntimeWarning,
                    stacklevel=2,
                )
            except Exception:
                # a broken sys.stderr, or warnings turned into errors: still
                # not a reason to fail the fit
                pass

    def newline(self):
        """End a live line so that other messages start on their own line."""
        if self._line_open:
            self._emit("\n")
            self._line_open = False
            self._width = 0

    def message(self, text):
        """Print ``text`` on its own line (after ending a live line)."""
        self.newline()
        self._emit(text + "\n")
