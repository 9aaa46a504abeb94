"""MNIST: the classic 784-200-10 sigmoid network, then a larger one.

The classic network of the backpropagation texts: 784 inputs, 200 logistic
hidden units, 10 softmax outputs with cross-entropy, plain mini-batch SGD.
Then a larger modern one, 784-800-10 with relu and Adam (the size of
Simard et al., 2003: about 1.6% test error). Each prints its test error
and training time.

The data are read from ``--data PATH``, else ``$CBP_MNIST``, else
``../shared/data/mnist.npz`` beside the checkout: a ``.npz`` with
``X_train`` (60000, 784), ``y_train``, ``X_test``, ``y_test`` (uint8).
Without it the example says so and exits (status 0). ``--quick`` trains
on 3,000 images for a few epochs.

Run: ``python examples/mnist.py [--quick] [--data mnist.npz]``
"""

import os
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from _common import parser

from cbp import MLPClassifier

DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist.npz"


def load(path):
    """Return X_train, y_train, X_test, y_test with pixels scaled to [0, 1]."""
    with np.load(path) as d:
        return (d["X_train"] / 255.0, d["y_train"], d["X_test"] / 255.0, d["y_test"])


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--data", default=os.environ.get("CBP_MNIST", str(DEFAULT)),
                   help="path of mnist.npz (default: $CBP_MNIST or %(default)s)")
    args = p.parse_args(argv)
    path = Path(args.data)
    if not path.exists():
        print(f"MNIST skipped: no data at {path}. Pass --data PATH or set CBP_MNIST "
              "to an mnist.npz with X_train, y_train, X_test, y_test.")
        return None
    X_train, y_train, X_test, y_test = load(path)
    if args.quick:
        X_train, y_train = X_train[:3000], y_train[:3000]
        X_test, y_test = X_test[:1000], y_test[:1000]
    print(f"MNIST: {len(X_train)} training, {len(X_test)} test images")

    networks = {
        "784-200-10 logistic, SGD (classic)": MLPClassifier(
            hidden_layer_sizes=(200,), activation="logistic", solver="sgd",
            learning_rate_init=0.5, momentum=0.0, batch_size=10,
            max_iter=3 if args.quick else 30, random_state=0,
        ),
        "784-800-10 relu, Adam": MLPClassifier(
            hidden_layer_sizes=(800,), activation="relu", solver="adam",
            batch_size=128, max_iter=3 if args.quick else 30, random_state=0,
        ),
    }
    errors = {}
    for name, net in networks.items():
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            net.fit(X_train, y_train)
        seconds = time.perf_counter() - start
        errors[name] = 1.0 - net.score(X_test, y_test)
        print(f"{name}: test error {100 * errors[name]:.2f}% after {net.n_iter_} epochs, "
              f"{seconds:.1f} s ({seconds / net.n_iter_:.2f} s/epoch)")
    return errors


if __name__ == "__main__":
    main()
