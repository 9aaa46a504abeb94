"""Inspection of a fitted network: a layer table and the training curves."""

from sklearn.base import is_classifier
from sklearn.exceptions import NotFittedError

from . import _registry


def _require_fit(est, what):
    if not hasattr(est, "coefs_"):
        raise NotFittedError(
            f"This {type(est).__name__} instance is not fitted yet: {what} "
            "describes the fitted network. Call 'fit' with appropriate "
            "arguments first."
        )


def _hidden_activation_name(est):
    """The hidden activation as the table shows it (with its parameter)."""
    name = str(est.activation)
    row = _registry.ACTIVATIONS.get(name)
    value = getattr(est, row.param, None) if row is not None and row.param else None
    if value is not None:
        name = f"{name}({value:g})"
    return name


def summary(est, print_fn=print):
    """Build, print and return the table of a fitted network's layers.

    Parameters
    ----------
    est : MLPClassifier or MLPRegressor
        A fitted estimator.
    print_fn : callable or None, default=print
        Called once with the table; None only returns it.

    Returns
    -------
    table : str
        The table, one line per layer.
    """
    _require_fit(est, "summary()")
    coefs, intercepts = est.coefs_, est.intercepts_
    n_layers = len(coefs)
    hidden_act = _hidden_activation_name(est)
    rows = [("input", f"(None, {coefs[0].shape[0]})", "", "", 0)]
    for i, (w, b) in enumerate(zip(coefs, intercepts)):
        last = i == n_layers - 1
        name = "output" if last else f"hidden_{i + 1}"
        act = est.out_activation_ if last else hidden_act
        shapes = f"{tuple(w.shape)}, {tuple(b.shape)}"
        rows.append((name, f"(None, {w.shape[1]})", act, shapes, w.size + b.size))
    n_layer_params = sum(r[4] for r in rows)
    theta = getattr(est, "_theta", None)
    n_total = theta.shape[0] if theta is not None else n_layer_params
    n_other = n_total - n_layer_params

    header = ("Layer", "Output shape", "Activation", "Weights W, b", "Params")
    cells = [header] + [r[:4] + (f"{r[4]:,}",) for r in rows]
    widths = [max(len(str(c[k])) for c in cells) for k in range(5)]

    def fmt(c):
        left = "   ".join(str(c[k]).ljust(widths[k]) for k in range(4))
        return left + "   " + str(c[4]).rjust(widths[4])

    width = len(fmt(header))
    dtype = coefs[0].dtype
    n_iter = getattr(est, "n_iter_", None)
    title = f"{type(est).__name__}: {n_layers} weight layers, {dtype}, solver={est.solver!r}"
    if n_iter is not None:
        title += f", n_iter_={n_iter}"
    lines = [title, "=" * width, fmt(header), "-" * width]
    lines += [fmt(c) for c in cells[1:]]
    lines.append("=" * width)
    if n_other > 0:
        lines.append(f"Other trainable parameters (activations): {n_other:,}")
    n_bytes = n_total * dtype.itemsize
    lines.append(f"Total params: {n_total:,} ({_format_bytes(n_bytes)} as {dtype})")
    loss = getattr(est, "loss_", None)
    if loss is not None:
        lines.append(f"Loss: {loss:.8g} ({est.loss})")
    table = "\n".join(lines)
    if print_fn is not None:
        print_fn(table)
    return table


def _format_bytes(n):
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def plot_loss_curve(estimator, ax=None):
    """Plot the training loss per epoch, and the validation score if any.

    The loss (``loss_curve_``) is drawn against the epoch on ``ax``; with
    early stopping the validation scores (``validation_scores_``: accuracy
    for the classifier, R² for the regressor) are drawn on a twin y axis
    at the right, and the best epoch marked.

    Parameters
    ----------
    estimator : MLPClassifier or MLPRegressor
        An estimator fitted by a stochastic solver ('sgd', 'adam', 'rmsprop'):
        lbfgs keeps no loss curve.
    ax : matplotlib.axes.Axes, default=None
        Where to draw; None draws on a new figure.

    Returns
    -------
    ax : matplotlib.axes.Axes
        The axes of the loss curve (the validation axis is
        ``ax.right_ax`` when drawn, else None).

    Raises
    ------
    ImportError
        When matplotlib, an optional dependency, is not installed.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sklearn.datasets import load_digits
    >>> from cbp import MLPClassifier, plot_loss_curve
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = MLPClassifier((32,), max_iter=20, early_stopping=True,
    ...                     random_state=0).fit(X / 16, y)
    >>> ax = plot_loss_curve(clf)
    >>> ax.figure.savefig("loss.png")  # doctest: +SKIP
    """
    _require_fit(estimator, "plot_loss_curve")
    curve = getattr(estimator, "loss_curve_", None)
    if curve is None:
        raise ValueError(
            f"{type(estimator).__name__} fitted with solver={estimator.solver!r} "
            "has no loss_curve_: only the stochastic solvers ('sgd', 'adam', 'rmsprop') "
            "record a loss per epoch."
        )
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            "cbp.plot_loss_curve needs matplotlib, an optional dependency of "
            "cbp: pip install matplotlib (or pip install 'cbp[plot]')."
        ) from exc

    if ax is None:
        _, ax = plt.subplots()
    epochs = range(1, len(curve) + 1)
    handles = ax.plot(epochs, curve, color="C0", label="training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.right_ax = None
    scores = getattr(estimator, "validation_scores_", None)
    if scores:
        right = ax.twinx()
        metric = "accuracy" if is_classifier(estimator) else "R²"
        handles += right.plot(
            range(1, len(scores) + 1), scores, color="C1",
            label=f"validation score ({metric})",
        )
        best = max(range(len(scores)), key=scores.__getitem__)
        handles += right.plot(
            [best + 1], [scores[best]], "o", color="C1", label=f"best (epoch {best + 1})"
        )
        right.set_ylabel(f"validation score ({metric})")
        ax.right_ax = right
    # on the top axes, so that no curve covers it
    (ax.right_ax or ax).legend(handles=handles, loc="center right")
    ax.set_title(f"{type(estimator).__name__} training ({estimator.solver})")
    return ax
