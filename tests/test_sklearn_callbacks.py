"""scikit-learn's callback API (``set_callbacks``) and ``validation_loss_curve_``."""

import os
import pickle
import re
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import sklearn
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import check_scoring
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import cbp._multilayer_perceptron as mlp_module
from cbp import MLPClassifier, MLPRegressor

from _reference import objective

try:
    import sklearn.callback  # noqa: F401

    HAVE_SKLEARN_CALLBACKS = True
except ImportError:
    HAVE_SKLEARN_CALLBACKS = False

needs_sklearn_callbacks = pytest.mark.skipif(
    not HAVE_SKLEARN_CALLBACKS,
    reason=f"scikit-learn {sklearn.__version__} has no sklearn.callback "
    "(its callback API came in scikit-learn 1.9)",
)

STOCHASTIC = ["sgd", "adam", "rmsprop"]


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:300] / 16, y[:300]


def _quiet(fit, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fit(*args, **kwargs)


def _epoch_rows(log, task_name):
    return [row for row in log.data if row["task_name"] == task_name]


# ---------------------------------------------------------------------------
# ScoringMonitor: one logged score per epoch or lbfgs iteration


@needs_sklearn_callbacks
@pytest.mark.parametrize("solver, early_stopping", [
    # lbfgs has no early stopping
    *[(solver, es) for solver in STOCHASTIC for es in (False, True)], ("lbfgs", False),
])
def test_scoring_monitor_logs_every_epoch_or_iteration(digits, solver, early_stopping):
    from sklearn.callback import ScoringMonitor

    X, y = digits
    params = dict(hidden_layer_sizes=(8,), solver=solver, max_iter=5,
                  learning_rate_init=0.01, early_stopping=early_stopping,
                  n_iter_no_change=100, random_state=0)
    monitor = ScoringMonitor(scoring="neg_log_loss")
    clf = MLPClassifier(**params).set_callbacks(monitor)
    _quiet(clf.fit, X, y)

    log = monitor.get_logs()
    task = "lbfgs-iter" if solver == "lbfgs" else "epoch"
    rows = _epoch_rows(log, task)
    assert len(rows) == clf.n_iter_ == 5
    assert [row["task_id"] for row in rows] == list(range(clf.n_iter_))
    # each score is that of the model fit would have returned had it
    # stopped there: the same fit with max_iter=i + 1 (under early stopping
    # with the best weights so far, which fit restores)
    scorer = check_scoring(clf, "neg_log_loss")
    for i, row in enumerate(rows):
        ref = _quiet(MLPClassifier(**{**params, "max_iter": i + 1}).fit, X, y)
        np.testing.assert_allclose(row["neg_log_loss"], scorer(ref, X, y), rtol=1e-12)
    # and the root task's score is the fitted estimator's
    (root,) = [row for row in log.data if row["task_name"] == "fit"]
    np.testing.assert_allclose(root["neg_log_loss"], scorer(clf, X, y), rtol=1e-12)


@needs_sklearn_callbacks
def test_scoring_monitor_on_the_regressor_with_sample_weights():
    from sklearn.callback import ScoringMonitor

    rng = np.random.RandomState(0)
    X = rng.normal(size=(120, 4))
    y = X @ [1.0, -2.0, 0.5, 0.0] + 0.1 * rng.normal(size=120)
    sw = rng.uniform(0.5, 2.0, size=120)
    monitor = ScoringMonitor(scoring="r2")
    params = dict(hidden_layer_sizes=(6,), max_iter=4, learning_rate_init=0.01,
                  random_state=0)
    reg = MLPRegressor(**params).set_callbacks(monitor)
    _quiet(reg.fit, X, y, sample_weight=sw)
    rows = _epoch_rows(monitor.get_logs(), "epoch")
    assert len(rows) == reg.n_iter_ == 4
    for i, row in enumerate(rows):
        ref = _quiet(MLPRegressor(**{**params, "max_iter": i + 1}).fit, X, y,
                     sample_weight=sw)
        # the hooks get the sample weights as metadata: weighted r2
        np.testing.assert_allclose(row["r2"], ref.score(X, y, sample_weight=sw),
                                   rtol=1e-12)


class _StopAfter:
    """A FitCallback asking to stop at the end of the ``n``-th subtask."""

    def __init__(self, n):
        self.n = n
        self.ends = []

    def setup(self, estimator, context):
        pass

    def teardown(self, estimator, context):
        pass

    def on_fit_task_begin(self, estimator, context):
        pass

    def on_fit_task_end(self, estimator, context, *, fitted_estimator=None):
        if context.parent is None:
            return False
        self.ends.append(fitted_estimator)
        return len(self.ends) >= self.n


@needs_sklearn_callbacks
@pytest.mark.parametrize("solver", STOCHASTIC + ["lbfgs"])
def test_a_callback_returning_true_stops_the_fit(digits, solver):
    X, y = digits
    stopper = _StopAfter(3)
    clf = MLPClassifier((8,), solver=solver, max_iter=50, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf.set_callbacks(stopper).fit(X, y)
    assert clf.n_iter_ == 3
    # fit keeps the weights of the epoch (iteration) where it stopped
    np.testing.assert_array_equal(clf._theta, stopper.ends[-1]._theta)
    if solver != "lbfgs":
        assert len(clf.loss_curve_) == 3


@needs_sklearn_callbacks
def test_fitted_estimators_are_snapshots(digits):
    X, y = digits
    stopper = _StopAfter(4)
    clf = MLPClassifier((8,), max_iter=4, random_state=0).set_callbacks(stopper)
    clf.fit(X, y)
    thetas = [est._theta for est in stopper.ends]
    # each epoch's copy keeps its weights after training went on
    assert all(not np.array_equal(a, b) for a, b in zip(thetas, thetas[1:]))
    assert all(t is not clf._theta for t in thetas)
    for est in stopper.ends:
        assert est.coefs_[0].base is est._theta


@needs_sklearn_callbacks
def test_cbp_callbacks_and_verbose_run_beside_sklearn_callbacks(digits, capsys):
    from sklearn.callback import ScoringMonitor

    X, y = digits
    epochs = []
    monitor = ScoringMonitor(scoring="accuracy")
    clf = MLPClassifier((8,), max_iter=3, verbose=True, random_state=0,
                        callbacks=[lambda est, info: epochs.append(info["epoch"])])
    _quiet(clf.set_callbacks(monitor).fit, X, y)
    assert epochs == [1, 2, 3]
    assert len(_epoch_rows(monitor.get_logs(), "epoch")) == 3
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines] == [
        "Iteration 1", "Iteration 2", "Iteration 3"]


@needs_sklearn_callbacks
def test_partial_fit_is_one_task_per_call(digits):
    from sklearn.callback import ScoringMonitor

    X, y = digits
    monitor = ScoringMonitor(scoring="accuracy")
    clf = MLPClassifier((8,), random_state=0).set_callbacks(monitor)
    for _ in range(3):
        clf.partial_fit(X, y, classes=np.unique(y))
    logs = monitor.get_logs(select="all")
    assert len(logs) == 3
    for log in logs:
        (row,) = log.data
        assert row["task_name"] == "partial_fit"
    assert logs[-1].data[0]["accuracy"] == clf.score(X, y)


@needs_sklearn_callbacks
def test_data_parallel_fit_runs_the_callbacks():
    MPI = pytest.importorskip("mpi4py.MPI")
    from sklearn.callback import ScoringMonitor

    rng = np.random.RandomState(0)
    X = rng.normal(size=(150, 5))
    y = (X[:, 0] > 0).astype(int)
    monitor = ScoringMonitor(scoring="accuracy")
    clf = MLPClassifier((6,), max_iter=20, random_state=0, comm=MPI.COMM_SELF)
    clf.set_callbacks(monitor, _StopAfter(4)).fit(X, y)
    # the stop asked by a callback is agreed by the ranks
    assert clf.n_iter_ == 4
    assert len(_epoch_rows(monitor.get_logs(), "epoch")) == 4


_TWO_RANKS_STOP = """
import numpy as np
from mpi4py import MPI
from cbp import MLPClassifier

comm = MPI.COMM_WORLD
rank = comm.Get_rank()
rng = np.random.RandomState(rank)
X = rng.normal(size=(80, 4))
y = (X[:, 0] > 0).astype(int)
# only rank 0 asks to stop, after epoch 2
stop = [lambda est, info: info["epoch"] == 2] if rank == 0 else []
clf = MLPClassifier((5,), max_iter=6, tol=0.0, random_state=0, comm=comm,
                    callbacks=stop).fit(X, y)
print(f"rank {rank}: n_iter_={clf.n_iter_}", flush=True)
"""


def test_two_ranks_stop_together_when_one_asks(tmp_path):
    pytest.importorskip("mpi4py.MPI")
    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent))
    mpiexec = mpiexec or shutil.which("mpiexec")
    if mpiexec is None:
        pytest.skip("no mpiexec beside the Python executable or on PATH")
    script = tmp_path / "stop.py"
    script.write_text(_TWO_RANKS_STOP)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    # without the agreement rank 1 would wait for rank 0 in epoch 3: the
    # timeout turns that hang into a failure
    proc = subprocess.run([mpiexec, "-n", "2", sys.executable, str(script)],
                          capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for rank in (0, 1):
        assert f"rank {rank}: n_iter_=2" in proc.stdout


# ---------------------------------------------------------------------------
# ProgressBar, alone and through meta-estimators


@needs_sklearn_callbacks
def test_progress_bar_on_the_estimator(digits, capsys):
    pytest.importorskip("rich")
    from sklearn.callback import ProgressBar

    X, y = digits
    clf = MLPClassifier((8,), max_iter=4, random_state=0).set_callbacks(ProgressBar())
    _quiet(clf.fit, X, y)
    out = capsys.readouterr().out
    assert re.search(r"MLPClassifier - fit", out)
    assert re.search(r"100%", out)


@needs_sklearn_callbacks
def test_progress_bar_through_grid_search_and_pipeline(digits, capsys):
    pytest.importorskip("rich")
    from sklearn.callback import ProgressBar

    X, y = digits
    pipe = make_pipeline(StandardScaler(), MLPClassifier((8,), max_iter=3,
                                                         random_state=0))
    search = GridSearchCV(pipe, {"mlpclassifier__alpha": [1e-4, 1e-2]}, cv=2)
    search.set_callbacks(ProgressBar(max_propagation_depth=None))
    _quiet(search.fit, X, y)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert lines[0].startswith("GridSearchCV - fit")
    # a bar for the MLP in each pipeline: 2 candidates x 2 splits, the refit
    mlp_bars = [line for line in lines
                if "Pipeline - fit-final-estimator | MLPClassifier - fit" in line]
    assert len(mlp_bars) == 5
    # the final display: every bar complete
    assert all(re.search(r"\b100%", line) for line in lines)


@needs_sklearn_callbacks
def test_scoring_monitor_through_grid_search(digits):
    from sklearn.callback import ScoringMonitor

    X, y = digits
    monitor = ScoringMonitor(scoring="accuracy")
    clf = MLPClassifier((8,), max_iter=3, random_state=0).set_callbacks(monitor)
    search = GridSearchCV(clf, {"alpha": [1e-4, 1e-2]}, cv=2)
    _quiet(search.fit, X, y)
    rows = _epoch_rows(monitor.get_logs(select="all")[-1], "epoch")
    # 2 candidates x 2 splits + the refit, 3 epochs each
    assert len(rows) == 5 * 3


# ---------------------------------------------------------------------------
# Cloning, pickling, and scikit-learn without sklearn.callback


@needs_sklearn_callbacks
def test_clone_keeps_the_callbacks(digits):
    from sklearn.callback import ScoringMonitor

    monitor = ScoringMonitor(scoring="accuracy")
    clf = MLPClassifier((8,), max_iter=2).set_callbacks(monitor)
    assert clone(clf)._skl_callbacks == [monitor]


@needs_sklearn_callbacks
def test_pickling_an_estimator_with_callbacks(digits):
    from sklearn.callback import ScoringMonitor

    X, y = digits
    clf = MLPClassifier((8,), max_iter=2, random_state=0)
    clf.set_callbacks(ScoringMonitor(scoring="accuracy"))
    before = pickle.loads(pickle.dumps(clf))
    _quiet(clf.fit, X, y)
    after = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(after.predict(X), clf.predict(X))
    # the restored callbacks work in a new fit
    for est in (before, after):
        _quiet(est.fit, X, y)
        monitor = est._skl_callbacks[0]
        assert len(_epoch_rows(monitor.get_logs(), "epoch")) == est.n_iter_ == 2


class _Checkpoint:
    """A callback pickling the estimator after each epoch (picklable itself:
    the estimator's ``callbacks`` are pickled with it)."""

    def __init__(self, X):
        self.X = X
        self.saved = []

    def __call__(self, est, info):
        self.saved.append((pickle.dumps(est), est.predict_proba(self.X)))

    def __getstate__(self):
        return {"X": None, "saved": []}


@pytest.mark.parametrize("early_stopping", [False, True])
def test_a_callback_can_pickle_the_estimator_during_fit(digits, early_stopping):
    # a checkpoint: the pickle taken after each epoch predicts as the
    # estimator did then, and the fit goes on undisturbed
    X, y = digits
    checkpoint = _Checkpoint(X)
    params = dict(hidden_layer_sizes=(8,), max_iter=3, early_stopping=early_stopping,
                  n_iter_no_change=100, random_state=0)
    clf = _quiet(MLPClassifier(**params, callbacks=[checkpoint]).fit, X, y)
    ref = _quiet(MLPClassifier(**params).fit, X, y)
    np.testing.assert_array_equal(clf.coefs_[0], ref.coefs_[0])
    assert len(checkpoint.saved) == 3
    for blob, proba in checkpoint.saved:
        np.testing.assert_array_equal(pickle.loads(blob).predict_proba(X), proba)


def test_without_sklearn_callback_fitting_works_and_set_callbacks_explains():
    # scikit-learn < 1.9 simulated: once scikit-learn's own modules are
    # imported (they use the mixin), sklearn.callback loses it, so that
    # cbp's import of it fails as it does where the module does not exist
    script = textwrap.dedent("""
        import sklearn.callback, sklearn.metrics, sklearn.model_selection
        import sklearn.preprocessing, sklearn.utils.validation
        del sklearn.callback.CallbackSupportMixin
        import numpy as np
        from cbp import MLPClassifier
        from cbp._sklearn_callbacks import HAVE_SKLEARN_CALLBACKS
        assert not HAVE_SKLEARN_CALLBACKS
        X = np.random.RandomState(0).normal(size=(60, 3))
        y = (X[:, 0] > 0).astype(int)
        for solver in ("adam", "lbfgs"):
            clf = MLPClassifier((4,), solver=solver, max_iter=3).fit(X, y)
            assert clf.n_iter_ >= 1
        try:
            clf.set_callbacks(object())
        except ImportError as exc:
            print(exc)
        else:
            raise AssertionError("set_callbacks did not raise")
    """)
    if not HAVE_SKLEARN_CALLBACKS:
        script = script.replace("sklearn.callback, ", "").replace(
            "del sklearn.callback.CallbackSupportMixin\n", "")
    res = subprocess.run([sys.executable, "-W", "ignore", "-c", script],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "scikit-learn >= 1.9" in res.stdout
    assert "callbacks=" in res.stdout


# ---------------------------------------------------------------------------
# validation_loss_curve_


def _spy_on_split(monkeypatch):
    """Record the validation rows of the early-stopping split."""
    split = {}
    real = mlp_module.train_test_split

    def spy(*arrays, **kwargs):
        out = real(*arrays, **kwargs)
        split["X"], split["Y"], split["sw"] = out[1], out[3], out[5]
        return out

    monkeypatch.setattr(mlp_module, "train_test_split", spy)
    return split


def _record_weights(weights):
    def record(est, info):
        weights.append(([c.copy() for c in est.coefs_],
                        [b.copy() for b in est.intercepts_]))
    return record


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("solver", STOCHASTIC)
def test_validation_loss_curve_is_the_held_out_loss(digits, monkeypatch, solver,
                                                    weighted):
    X, y = digits
    split = _spy_on_split(monkeypatch)
    weights = []
    sw = np.random.RandomState(1).uniform(0.5, 2.0, len(y)) if weighted else None
    clf = MLPClassifier((10,), solver=solver, max_iter=6, alpha=0.01,
                        early_stopping=True, n_iter_no_change=100, random_state=0,
                        callbacks=[_record_weights(weights)])
    _quiet(clf.fit, X, y, sample_weight=sw)
    curve = clf.validation_loss_curve_
    assert len(curve) == len(clf.validation_scores_) == clf.n_iter_ == len(weights)
    sw_val = split["sw"]
    assert (sw_val != 1).any() == weighted
    for value, (coefs, intercepts) in zip(curve, weights):
        ref = objective(coefs, intercepts, split["X"], split["Y"], sw_val, "relu",
                        "softmax", 0.01)
        np.testing.assert_allclose(value, ref, rtol=1e-12)


def test_validation_loss_curve_of_the_regressor(monkeypatch):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(200, 5))
    Y = np.c_[X @ rng.normal(size=5), X[:, 0] ** 2]
    split = _spy_on_split(monkeypatch)
    weights = []
    reg = MLPRegressor(hidden_layer_sizes=(7,), activation="tanh", max_iter=5, alpha=0.1,
                       learning_rate_init=0.01, early_stopping=True, random_state=0,
                       callbacks=[_record_weights(weights)])
    _quiet(reg.fit, X, Y)
    assert len(reg.validation_loss_curve_) == reg.n_iter_ == 5
    for value, (coefs, intercepts) in zip(reg.validation_loss_curve_, weights):
        # reported as loss_ is: the squared error averaged over the outputs
        data = objective(coefs, intercepts, split["X"], split["Y"], split["sw"],
                         "tanh", "identity", 0.0)
        pen = objective(coefs, intercepts, split["X"], split["Y"], split["sw"],
                        "tanh", "identity", 0.1) - data
        np.testing.assert_allclose(value, data / 2 + pen, rtol=1e-12)


def test_validation_loss_curve_in_float32(digits, monkeypatch):
    X, y = digits
    split = _spy_on_split(monkeypatch)
    weights = []
    clf = MLPClassifier((10,), max_iter=3, early_stopping=True, random_state=0,
                        callbacks=[_record_weights(weights)])
    _quiet(clf.fit, X.astype(np.float32), y)
    for value, (coefs, intercepts) in zip(clf.validation_loss_curve_, weights):
        as64 = [[a.astype(np.float64) for a in group] for group in (coefs, intercepts)]
        ref = objective(*as64, split["X"].astype(np.float64),
                        split["Y"].astype(np.float64), split["sw"].astype(np.float64),
                        "relu", "softmax", clf.alpha)
        np.testing.assert_allclose(value, ref, rtol=1e-5)


def test_validation_loss_curve_only_with_early_stopping(digits):
    X, y = digits
    clf = _quiet(MLPClassifier((8,), max_iter=3, random_state=0).fit, X, y)
    assert clf.validation_loss_curve_ is None
    assert clf.validation_scores_ is None
    lbfgs = _quiet(MLPClassifier((8,), solver="lbfgs", max_iter=3).fit, X, y)
    assert not hasattr(lbfgs, "validation_loss_curve_")
    assert not hasattr(lbfgs, "validation_scores_")


def test_warm_start_from_an_estimator_without_the_curve(digits):
    X, y = digits
    clf = _quiet(MLPClassifier((8,), max_iter=2, early_stopping=True,
                               warm_start=True, random_state=0).fit, X, y)
    del clf.validation_loss_curve_  # as unpickled from a cbp without it
    _quiet(clf.fit, X, y)
    assert len(clf.validation_loss_curve_) == 2
    assert len(clf.validation_scores_) == 4
