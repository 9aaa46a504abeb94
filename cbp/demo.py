"""Demo: train cbp and scikit-learn side by side on the digits data.

Run with ``python -m cbp.demo``. The data ship with scikit-learn, so the
demo needs no download. It prints test accuracy and training time of both
libraries from the same seed, and the speed ratio.
"""

import argparse
import time
import warnings


def main(argv=None):
    """Train both MLPs on scikit-learn's digits and print the comparison.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (defaults to ``sys.argv[1:]``).
    """
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier as SkMLPClassifier

    import cbp

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--hidden", type=int, nargs="+", default=[100])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X / 16.0, y, test_size=0.25, random_state=args.seed
    )
    params = dict(
        hidden_layer_sizes=tuple(args.hidden), max_iter=args.epochs,
        random_state=args.seed,
    )
    print(f"cbp {cbp.__version__}: digits {X_train.shape[0]} train / "
          f"{X_test.shape[0]} test, 64-{'-'.join(map(str, args.hidden))}-10, "
          f"adam, {args.epochs} epochs")
    times = {}
    for name, cls in (("cbp", cbp.MLPClassifier), ("scikit-learn", SkMLPClassifier)):
        clf = cls(**params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            start = time.perf_counter()
            clf.fit(X_train, y_train)
            times[name] = time.perf_counter() - start
        acc = float(np.mean(clf.predict(X_test) == y_test))
        print(f"  {name:13s} test accuracy {acc:.4f}  fit {times[name]:.3f} s "
              f"({clf.n_iter_} epochs)")
    print(f"  cbp fit time / scikit-learn fit time = "
          f"{times['cbp'] / times['scikit-learn']:.2f}")


if __name__ == "__main__":
    main()
