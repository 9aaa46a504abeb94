"""Training loss per epoch: cbp against scikit-learn on the digits.

Both estimators get the same parameters and seed, so they start from the
same weights and see the same batches; their loss curves coincide.
"""

import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier as SkMLPClassifier

from cbp import MLPClassifier

X, y = load_digits(return_X_y=True)
X = X / 16.0
params = dict(hidden_layer_sizes=(100,), max_iter=60, random_state=0)

fits = {}
for name, cls, data in [
    ("cbp, float64", MLPClassifier, X),
    ("scikit-learn, float64", SkMLPClassifier, X),
    ("cbp, float32", MLPClassifier, X.astype(np.float32)),
]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fits[name] = cls(**params).fit(data, y)

fig, (ax, ax_diff) = plt.subplots(
    2, 1, figsize=(6.4, 5.6), sharex=True, gridspec_kw=dict(height_ratios=[3, 2])
)
styles = {
    "cbp, float64": dict(color="C0", lw=3, alpha=0.5),
    "scikit-learn, float64": dict(color="C1", lw=1.2, ls="--"),
    "cbp, float32": dict(color="C2", lw=1.2, ls=":"),
}
for name, clf in fits.items():
    epochs = np.arange(1, clf.n_iter_ + 1)
    ax.plot(epochs, clf.loss_curve_, label=name, **styles[name])
ax.set_yscale("log")
ax.set_ylabel("loss_curve_")
ax.set_title("digits, 64-100-10 relu, adam, batch 200, same seed")
ax.legend()
ax.grid(True, which="both", alpha=0.3)

# how far cbp's curves are from scikit-learn's, relative
reference = np.asarray(fits["scikit-learn, float64"].loss_curve_)
for name in ("cbp, float64", "cbp, float32"):
    curve = np.asarray(fits[name].loss_curve_)
    rel = np.abs(curve - reference) / reference
    ax_diff.plot(epochs, np.maximum(rel, 1e-17), color=styles[name]["color"],
                 label=name)
ax_diff.set_yscale("log")
ax_diff.set_xlabel("epoch")
ax_diff.set_ylabel("|cbp - sklearn| / sklearn")
ax_diff.legend()
ax_diff.grid(True, which="both", alpha=0.3)
