"""Scale-out: data-parallel training over MPI, and cluster engines for search.

The MPI tests need ``cbp[mpi]`` (mpi4py and the mpich wheel, whose
``mpiexec`` sits beside the Python executable); the dask tests need
``cbp[dask]``. Each group is skipped, with the reason, when its packages
are absent.
"""

import os
import pickle
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV

from cbp import MLPClassifier, MLPRegressor

HERE = Path(__file__).resolve().parent
WORKER = HERE / "mpi_worker.py"
MPI_TIMEOUT = 240  # seconds; a hang fails the test instead of the CI job


def _mpi():
    MPI = pytest.importorskip(
        "mpi4py.MPI", reason="mpi4py is not installed (pip install cbp[mpi])"
    )
    return MPI


def _mpiexec():
    _mpi()
    here = Path(sys.executable).parent / "mpiexec"
    exe = str(here) if here.exists() else shutil.which("mpiexec")
    if exe is None:
        pytest.skip("no mpiexec beside the Python executable or on PATH")
    return exe


def _run_ranks(n_ranks, *args):
    env = dict(os.environ)
    env["PYTHONWARNINGS"] = "ignore"
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [_mpiexec(), "-n", str(n_ranks), sys.executable, str(WORKER), *args],
        capture_output=True, text=True, timeout=MPI_TIMEOUT, env=env,
    )


def _data(n=300, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.randn(n, 8)
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 0.5)
    return X, y, rng.uniform(0.5, 2.0, n)


# ---------------------------------------------------------------------------
# MPI, in this process: one rank (COMM_SELF) is the single-process fit


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("solver", ["adam", "sgd"])
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_one_rank_is_bit_identical_to_fit(solver, dtype):
    MPI = _mpi()
    X, y, sw = _data()
    X = X.astype(dtype)
    params = dict(hidden_layer_sizes=(12, 5), solver=solver, batch_size=32,
                  max_iter=4, tol=0.0, random_state=0)
    ref = MLPClassifier(**params).fit(X, y, sample_weight=sw)
    dp = MLPClassifier(**params, comm=MPI.COMM_SELF).fit(X, y, sample_weight=sw)
    assert dp._theta.dtype == dtype
    np.testing.assert_array_equal(dp._theta, ref._theta)
    assert dp.loss_curve_ == ref.loss_curve_
    assert dp.t_ == ref.t_


def test_one_rank_partial_fit_and_regressor_match():
    MPI = _mpi()
    X, y, _ = _data()
    a = MLPClassifier(hidden_layer_sizes=(6,), batch_size=50, random_state=1)
    b = MLPClassifier(hidden_layer_sizes=(6,), batch_size=50, random_state=1,
                      comm=MPI.COMM_SELF)
    for start in (0, 150):
        part = slice(start, start + 150)
        a.partial_fit(X[part], y[part], classes=[0, 1, 2])
        b.partial_fit(X[part], y[part], classes=[0, 1, 2])
    np.testing.assert_array_equal(a._theta, b._theta)
    params = dict(hidden_layer_sizes=(7,), max_iter=3, random_state=0, tol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        r1 = MLPRegressor(**params).fit(X, X[:, 0] * 2)
        r2 = MLPRegressor(**params, comm=MPI.COMM_SELF).fit(X, X[:, 0] * 2)
    np.testing.assert_array_equal(r1._theta, r2._theta)


def test_comm_must_be_a_communicator():
    X, y, _ = _data(60)
    with pytest.raises(ValueError, match="comm"):
        MLPClassifier(comm="world").fit(X, y)


# ---------------------------------------------------------------------------
# MPI, two ranks under mpiexec in a subprocess


@pytest.fixture(scope="module", params=["float64", "float32"])
def two_rank_fit(tmp_path_factory, request):
    _mpiexec()
    out = tmp_path_factory.mktemp("mpi") / "fit"
    proc = _run_ranks(2, "fit", str(out), request.param)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, np.dtype(request.param).type


@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_two_ranks_equal_one_process_with_the_global_batch(two_rank_fit, solver):
    sys.path.insert(0, str(HERE))
    try:
        import mpi_worker
    finally:
        sys.path.remove(str(HERE))
    out, dtype = two_rank_fit
    res = np.load(f"{out}.{solver}.npz")
    assert res["theta"].dtype == dtype
    assert float(res["spread"]) == 0.0  # every rank holds the same weights
    X, y, sw = mpi_worker.make_data()
    X = X.astype(dtype)
    params = dict(mpi_worker.PARAMS)
    params["batch_size"] = 2 * params["batch_size"]  # K x the local batch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = MLPClassifier(solver=solver, **params).fit(X, y, sample_weight=sw)
    # the shards' gradients are summed by Allreduce instead of inside one
    # GEMM: the same arithmetic up to the order of additions
    rtol = {np.float64: 1e-10, np.float32: 1e-5}[dtype]
    np.testing.assert_allclose(res["theta"], ref._theta, rtol=rtol, atol=rtol / 100)
    np.testing.assert_allclose(res["loss_curve"], ref.loss_curve_, rtol=rtol)
    np.testing.assert_array_equal(res["classes"], ref.classes_)
    assert int(res["t"]) == ref.t_
    # and differs from a run with the local batch size only
    ref_small = MLPClassifier(solver=solver, **mpi_worker.PARAMS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref_small.fit(X, y, sample_weight=sw)
    assert np.abs(res["theta"] - ref_small._theta).max() > 1e-3


def test_a_rank_that_raises_ends_the_job(tmp_path):
    proc = _run_ranks(2, "raise", str(tmp_path / "x"))
    assert proc.returncode != 0
    assert "rank 1 fails on purpose" in proc.stderr


def test_ranks_with_different_networks_all_raise(tmp_path):
    proc = _run_ranks(2, "badrank", str(tmp_path / "x"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for rank in (0, 1):
        assert f"rank {rank}: ValueError: The ranks' shards disagree" in proc.stdout


# ---------------------------------------------------------------------------
# Cluster engines: dask-ml's Incremental, GridSearchCV on loky and on dask


def _clf_data():
    X, y = make_classification(n_samples=240, n_features=10, n_informative=6,
                               n_classes=3, random_state=0)
    return X, y


def test_incremental_feeds_blocks_to_partial_fit():
    da = pytest.importorskip("dask.array", reason="dask is not installed (cbp[dask])")
    wrappers = pytest.importorskip(
        "dask_ml.wrappers", reason="dask-ml is not installed (cbp[dask])"
    )
    X, y = _clf_data()
    classes = np.unique(y)
    est = MLPClassifier(hidden_layer_sizes=(10,), batch_size=20, random_state=0,
                        n_jobs=1)
    inc = wrappers.Incremental(est, shuffle_blocks=False)
    inc.fit(da.from_array(X, chunks=60), da.from_array(y, chunks=60),
            classes=classes)
    ref = MLPClassifier(hidden_layer_sizes=(10,), batch_size=20, random_state=0,
                        n_jobs=1)
    for start in range(0, 240, 60):
        # classes= on every call, as Incremental passes it
        ref.partial_fit(X[start:start + 60], y[start:start + 60], classes=classes)
    np.testing.assert_array_equal(inc.estimator_._theta, ref._theta)
    assert ref.t_ == inc.estimator_.t_ == 240
    again = pickle.loads(pickle.dumps(inc.estimator_))
    np.testing.assert_array_equal(again.predict_proba(X), ref.predict_proba(X))


GRID = {"alpha": [1e-4, 1e-2], "hidden_layer_sizes": [(5,), (9,)]}


def _search(**kwargs):
    X, y = _clf_data()
    est = MLPClassifier(max_iter=15, random_state=0, n_jobs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return GridSearchCV(est, GRID, cv=3, **kwargs).fit(X, y)


@pytest.fixture(scope="module")
def serial_search():
    return _search(n_jobs=1)


def test_grid_search_on_loky_equals_serial(serial_search):
    joblib = pytest.importorskip("joblib")
    with joblib.parallel_backend("loky", n_jobs=2):
        search = _search()
    np.testing.assert_array_equal(search.cv_results_["mean_test_score"],
                                  serial_search.cv_results_["mean_test_score"])
    assert search.best_params_ == serial_search.best_params_


def test_grid_search_on_dask_equals_serial(serial_search):
    joblib = pytest.importorskip("joblib")
    distributed = pytest.importorskip(
        "dask.distributed", reason="dask.distributed is not installed (cbp[dask])"
    )
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster, distributed.Client(cluster), joblib.parallel_backend("dask"):
        search = _search()
    np.testing.assert_array_equal(search.cv_results_["mean_test_score"],
                                  serial_search.cv_results_["mean_test_score"])
    assert search.best_params_ == serial_search.best_params_


# ---------------------------------------------------------------------------
# The core's one-batch entry points used by data-parallel training


def test_batch_weight_sums_follow_the_order():
    from cbp import _core

    rng = np.random.RandomState(3)
    sw = rng.uniform(0, 2, 23)
    order = rng.permutation(23).astype(np.intp)
    out = np.empty(5, dtype=np.float64)
    _core.batch_weight_sums(sw, order, 5, out)
    expected = [sum(float(sw[r]) for r in order[i:i + 5]) for i in range(0, 23, 5)]
    assert out.tolist() == expected  # sequential sums, as Network.epoch adds
    _core.batch_weight_sums(sw, None, 5, out)
    np.testing.assert_allclose(out, [sw[i:i + 5].sum() for i in range(0, 23, 5)])
    with pytest.raises(ValueError, match="must hold 5"):
        _core.batch_weight_sums(sw, order, 5, np.empty(4))
    with pytest.raises(ValueError, match="out of range"):
        _core.batch_weight_sums(sw, order + 1, 5, out)


def test_batch_grad_rejects_rows_out_of_range():
    from cbp import _core

    network = _core.Network([3, 2], _core.HIDDEN_ACTIVATIONS["identity"],
                            _core.OUTPUT_ACTIVATIONS["identity"], np.float64)
    data = _core.Input(np.ones((4, 3)), np.ones((4, 2)), np.ones(4))
    theta, grad = np.zeros(network.n_params), np.empty(network.n_params)
    rows = np.array([0, 4], dtype=np.intp)
    with pytest.raises(ValueError, match="out of range"):
        network.batch_grad(theta, grad, data, rows, 1.0)
    with pytest.raises(ValueError, match="out of range"):
        network.batch_grad(theta, grad, data, np.array([-1], dtype=np.intp), 1.0)
    # no rows: a zero gradient and a zero loss
    grad[:] = 1
    data_sum = network.batch_grad(theta, grad, data, rows[:0], 1.0)
    assert data_sum == 0.0 and not grad.any()


def test_threads_per_rank_share_the_cores():
    MPI = _mpi()
    from cbp import _core, _distributed

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count())
    # COMM_SELF: the only rank on its node gets all the cores OpenMP offers
    assert _distributed.threads_per_rank(MPI.COMM_SELF) == max(
        1, min(_core.max_threads(), cores))


def test_shard_splits_rows_in_rank_order():
    MPI = _mpi()
    import cbp.mpi

    assert cbp.mpi.shard(10, MPI.COMM_SELF) == slice(0, 10)
    with pytest.raises(ValueError, match="n_samples"):
        cbp.mpi.shard(-1, MPI.COMM_SELF)
