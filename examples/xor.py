"""XOR with a 2-2-1 sigmoid network, the problem that needs a hidden layer.

Two logistic hidden units and one logistic output (binary cross-entropy)
trained by L-BFGS. A 2-2-1 network has local minima on XOR, so the example
restarts from new random weights until the four cases are right, and
prints the truth table with the network's probabilities.

Run: ``python examples/xor.py``
"""

import numpy as np

from _common import parser

from cbp import MLPClassifier


def main(argv=None):
    parser(__doc__.splitlines()[0]).parse_args(argv)
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
    y = np.array([0, 1, 1, 0])
    for seed in range(20):
        net = MLPClassifier(
            hidden_layer_sizes=(2,), activation="logistic", solver="lbfgs",
            alpha=0.0, tol=1e-10, max_iter=2000, random_state=seed,
        ).fit(X, y)
        if (net.predict(X) == y).all():
            break
        print(f"random_state={seed}: stuck in a local minimum, restarting")
    else:
        raise SystemExit("no restart solved XOR")
    p = net.predict_proba(X)[:, 1]
    print(f"2-2-1 logistic network, random_state={seed}, {net.n_iter_} L-BFGS iterations,"
          f" loss {net.loss_:.2e}")
    print(" x1  x2 | XOR | P(1)    predicted")
    for (a, b), t, prob, pred in zip(X.astype(int), y, p, net.predict(X)):
        print(f"  {a}   {b} |  {t}  | {prob:.4f}  {pred}")
    print("all four correct:", bool((net.predict(X) == y).all()))


if __name__ == "__main__":
    main()
