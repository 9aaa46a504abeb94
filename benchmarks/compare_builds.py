"""Time two builds of cbp against each other, alternating, on the same data.

A change that should cost nothing (a refactor of the core, a new layout) is
checked by timing the build before it and the build after it in alternation:
each round runs every workload once per build, in a fresh process whose
working directory is that build's source tree (``import cbp`` then loads
that tree's compiled core), the two builds' order swapped every round so
that neither always runs on a warmer or quieter machine. The figure is the
median over rounds of the paired ratio ``after / before`` of the CPU time of
one epoch (a ``1 + E``-epoch fit minus a 1-epoch fit, as ``run.py`` times
it), with the ratio of the minima beside it::

    python benchmarks/compare_builds.py BEFORE_TREE AFTER_TREE --rounds 7

Both trees need their core built in place (``python setup.py build_ext
--inplace``). MNIST needs ``mnist.npz`` (``--mnist`` or ``$CBP_MNIST``);
without it that workload is skipped.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

# One workload's epoch time, printed as JSON by a child process.
CHILD = r"""
import json, os, sys, time, warnings
import numpy as np
from sklearn.exceptions import ConvergenceWarning
warnings.simplefilter("ignore", ConvergenceWarning)
import cbp
from cbp import MLPClassifier, MLPRegressor

workload, epochs, n_jobs, mnist = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if workload == "mnist":
    d = np.load(mnist)
    X = (d["X_train"][:12000].reshape(12000, -1) / 255).astype(np.float32)
    y = d["y_train"][:12000]
    make = lambda it: MLPClassifier(hidden_layer_sizes=(256, 128), max_iter=it, batch_size=200)
elif workload == "digits":
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    epochs *= 20
    make = lambda it: MLPClassifier(hidden_layer_sizes=(100,), max_iter=it, batch_size=200)
else:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20000, 50)).astype(np.float32)
    y = X @ rng.standard_normal(50) + 0.1 * rng.standard_normal(20000)
    epochs *= 5
    make = lambda it: MLPRegressor(hidden_layer_sizes=(64, 64), max_iter=it, batch_size=200)

def fit_time(it):
    est = make(it).set_params(solver="adam", shuffle=True, tol=0,
                              n_iter_no_change=10**9, random_state=0,
                              n_jobs=n_jobs)
    t0 = time.process_time()
    est.fit(X, y)
    return time.process_time() - t0

fit_time(1)  # warm-up: imports, page faults, thread start
short = min(fit_time(1) for _ in range(2))
long = fit_time(1 + epochs)
print(json.dumps({"epoch": (long - short) / epochs, "cbp": cbp.__file__}))
"""


def _epoch_time(tree, workload, epochs, n_jobs, mnist):
    out = subprocess.run(
        [sys.executable, "-c", CHILD, workload, str(epochs), str(n_jobs), mnist],
        cwd=tree, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": tree},
    )
    if out.returncode != 0:
        raise RuntimeError(f"{tree}, {workload}:\n{out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not result["cbp"].startswith(os.path.abspath(tree)):
        raise RuntimeError(f"{tree}: imported cbp from {result['cbp']}")
    return result["epoch"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", help="source tree of the build before")
    parser.add_argument("after", help="source tree of the build after")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--n-jobs", type=int, default=1,
                        help="cbp's n_jobs (1: CPU time is the work done)")
    parser.add_argument("--only", default="mnist,digits,regression")
    parser.add_argument("--mnist", default=os.environ.get(
        "CBP_MNIST", os.path.join(os.path.dirname(__file__), "..", "..",
                                  "shared", "data", "mnist.npz")))
    args = parser.parse_args(argv)
    trees = [os.path.abspath(args.before), os.path.abspath(args.after)]
    print("| workload | after/before, median of paired ratios | min/min | rounds |")
    print("|---|---|---|---|")
    for workload in args.only.split(","):
        if workload == "mnist" and not os.path.exists(args.mnist):
            print(f"| {workload} | skipped: no {args.mnist} | | |")
            continue
        ratios, times = [], ([], [])
        for r in range(args.rounds):
            order = (0, 1) if r % 2 == 0 else (1, 0)
            t = {}
            for i in order:
                t[i] = _epoch_time(trees[i], workload, args.epochs,
                                   args.n_jobs, os.path.abspath(args.mnist))
                times[i].append(t[i])
            ratios.append(t[1] / t[0])
        print(f"| {workload} | {statistics.median(ratios):.3f} "
              f"| {min(times[1]) / min(times[0]):.3f} | {args.rounds} |",
              flush=True)


if __name__ == "__main__":
    main()
