"""Plot training: the loss curve and the first layer's weights as images.

Trains a 64-32-10 network on scikit-learn's 8x8 digits with early stopping,
then saves one PNG with the loss per epoch and the validation accuracy
(:func:`cbp.plot_loss_curve`) beside each hidden unit's incoming weights
``coefs_[0][:, j]`` drawn as an 8x8 image: the stroke patterns the units
respond to. Needs matplotlib (``pip install matplotlib``).

Run: ``python examples/plot_training.py [--quick] [--out training.png]``
"""

import warnings

import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning

from _common import parser

from cbp import MLPClassifier, plot_loss_curve


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--out", default="training.png", help="PNG to write (%(default)s)")
    args = p.parse_args(argv)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_training skipped: matplotlib is not installed "
              "(pip install matplotlib).")
        return None

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    n_hidden = 32
    clf = MLPClassifier(hidden_layer_sizes=(n_hidden,), early_stopping=True,
                        n_iter_no_change=20, max_iter=15 if args.quick else 300,
                        random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    print(f"{clf.n_iter_} epochs, final loss {clf.loss_:.4f}, best validation accuracy "
          f"{clf.best_validation_score_:.3f}")

    fig = plt.figure(figsize=(11, 4.5), layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[1.1, 1])
    plot_loss_curve(clf, ax=left.subplots())
    W = clf.coefs_[0]
    axes = right.subplots(4, n_hidden // 4)
    limit = np.abs(W).max()
    for j, ax in enumerate(axes.ravel()):
        ax.imshow(W[:, j].reshape(8, 8), cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_axis_off()
    right.suptitle("first-layer weights of each hidden unit (red +, blue -)")
    fig.savefig(args.out, dpi=80)
    plt.close(fig)
    print(f"saved {args.out}")
    return args.out


if __name__ == "__main__":
    main()
