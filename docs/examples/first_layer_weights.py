"""First-layer weights of a digits classifier, shown as 8x8 images.

Column ``k`` of ``coefs_[0]`` (``W_0`` in the user guide) holds the 64
input weights of hidden unit ``k``; reshaped to the 8x8 pixel grid it shows
which strokes excite (red) or inhibit (blue) that unit.
"""

import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning

from cbp import MLPClassifier

X, y = load_digits(return_X_y=True)
X = (X / 16.0).astype(np.float32)

clf = MLPClassifier(hidden_layer_sizes=(32,), alpha=0.1, max_iter=300, random_state=0)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    clf.fit(X, y)

W0 = clf.coefs_[0]  # shape (64, 32): one column per hidden unit
fig, axes = plt.subplots(4, 8, figsize=(7.2, 4.0))
for k, ax in enumerate(axes.ravel()):
    w = W0[:, k]
    vmax = np.abs(w).max()  # each unit on its own symmetric scale
    ax.imshow(w.reshape(8, 8), cmap="RdBu_r", vmin=-vmax, vmax=vmax,
              interpolation="nearest")
    ax.set_xticks(())
    ax.set_yticks(())
    ax.set_title(f"unit {k}", fontsize=7)
fig.suptitle(f"coefs_[0] of a 64-32-10 network (training accuracy "
             f"{clf.score(X, y):.3f})", fontsize=10)
