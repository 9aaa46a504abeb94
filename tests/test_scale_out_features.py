"""Every training option under data-parallel training (``comm``).

Each configuration of ``mpi_worker.feature_configs`` (optimizers, weight
decay, dropout, activations, losses, sample and class weights, sparse X,
lbfgs, early stopping) is fitted under ``mpiexec -n K`` on uneven shards,
then compared with a single-process fit of the concatenated data with the
global batch (``K * batch_size``): the same bits on one rank, the same
numbers to the rounding of the additions that the ranks split otherwise.
One ``mpiexec`` per (K, dtype) fits all the configurations.
"""

import functools
import sys
import warnings

import numpy as np
import pytest

from test_scale_out import HERE, _mpi, _mpiexec, _run_ranks

sys.path.insert(0, str(HERE))
try:
    import mpi_worker
finally:
    sys.path.remove(str(HERE))

CONFIGS = list(mpi_worker.feature_configs())
# (ranks, dtype): one rank is bit-identical; float32 with several ranks
# is checked once, at three ranks
RUNS = [(1, "float64"), (2, "float64"), (3, "float64"), (1, "float32"),
        (3, "float32")]
# the largest difference relative to the array's largest magnitude,
# measured over these configurations at 2 and 3 ranks: 4.6e-15 (float64),
# 1.1e-6 (float32; lbfgs the largest)
RTOL = {"float64": 1e-12, "float32": 1e-5}


@pytest.fixture(scope="module")
def ranks_fit(tmp_path_factory):
    """Run the worker once per (K, dtype), on demand."""
    _mpiexec()
    outs = {}

    def run(n_ranks, dtype):
        # a failed run fails every test of its (K, dtype) without rerunning
        if (n_ranks, dtype) not in outs:
            out = tmp_path_factory.mktemp(f"features{n_ranks}{dtype}") / "fit"
            proc = _run_ranks(n_ranks, "features", str(out), dtype)
            outs[n_ranks, dtype] = out, proc
        out, proc = outs[n_ranks, dtype]
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return out

    return run


@functools.lru_cache(maxsize=None)
def _reference(name, n_ranks, dtype):
    cls, params, (X, y, sw) = mpi_worker.feature_configs(dtype)[name]
    params = dict(params, batch_size=n_ranks * params["batch_size"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = cls(**params).fit(X, y, sample_weight=sw)
    return mpi_worker.fit_record(est)


def _relative_difference(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(float(np.abs(b).max(initial=0.0)), 1e-300)
    return float(np.abs(a - b).max(initial=0.0)) / scale


@pytest.mark.parametrize("n_ranks, dtype", RUNS)
@pytest.mark.parametrize("name", CONFIGS)
def test_ranks_equal_one_process_with_the_global_batch(ranks_fit, name, n_ranks, dtype):
    res = dict(np.load(f"{ranks_fit(n_ranks, dtype)}.{name}.npz"))
    ref = _reference(name, n_ranks, dtype)
    assert float(res.pop("spread")) == 0.0  # every rank holds the same weights
    assert res["theta"].dtype == np.dtype(dtype)
    assert sorted(res) == sorted(ref)
    # the same number of epochs or iterations, samples and scores
    assert int(res["n_iter"]) == ref["n_iter"]
    if "t" in ref:
        assert int(res["t"]) == ref["t"]
    for key in ref:
        if n_ranks == 1:
            np.testing.assert_array_equal(res[key], ref[key], err_msg=key)
        else:
            assert _relative_difference(res[key], ref[key]) <= RTOL[dtype], key


def test_ranks_differ_from_one_process_with_the_local_batch(ranks_fit):
    # the comparison above can tell the global batch from the local one
    res = np.load(f"{ranks_fit(2, 'float64')}.rmsprop.npz")
    local = _reference("rmsprop", 1, "float64")
    assert _relative_difference(res["theta"], local["theta"]) > 1e-3


def _fault_ranks(tmp_path, fault, n_ranks):
    """Run ``mpi_worker``'s fault ``fault`` on ``n_ranks`` ranks: the job
    ends (none is left waiting) with the same weights on every rank; the
    record rank 0 saved."""
    out = tmp_path / fault
    proc = _run_ranks(n_ranks, fault, str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = np.load(f"{out}.npz")
    assert float(res["spread"]) == 0.0
    return res


def _one_process(**params):
    """One process's fit of the workers' data with ``_SMALL`` and ``params``."""
    X, y, sw = mpi_worker.make_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mpi_worker.MLPClassifier(**dict(mpi_worker._SMALL, **params)).fit(
            X, y, sample_weight=sw
        )


@pytest.mark.parametrize("n_ranks", [2, 3])
@pytest.mark.parametrize("fault", ["interrupt", "diverge"])
def test_a_fault_on_one_rank_stops_lbfgs_on_all_at_the_best_point(
    tmp_path, fault, n_ranks
):
    # rank 1's third evaluation gets Ctrl-C, or its loss turns NaN from
    # then on: every rank stops (warns of the interrupt, or raises that
    # lbfgs diverged) with the same weights, none is left waiting
    res = _fault_ranks(tmp_path, fault, n_ranks)
    if fault == "interrupt":
        assert res["interrupted"].tolist() == [True] * n_ranks
        assert res["errors"].tolist() == [""] * n_ranks
    else:
        assert res["interrupted"].tolist() == [False] * n_ranks
        assert all("lbfgs diverged" in error for error in res["errors"])
    # the best point of the two evaluated before is the one L-BFGS-B's
    # first iteration ended at, where a single process stopped after one
    # iteration ends
    ref = _one_process(solver="lbfgs", max_iter=1)
    assert _relative_difference(res["theta"], ref._theta) <= RTOL["float64"]
    if fault == "interrupt":
        assert int(res["n_iter"]) == ref.n_iter_ == 1
        assert _relative_difference(res["loss"], ref.loss_) <= RTOL["float64"]
    else:
        # L-BFGS-B goes on with the NaN losses; the loss of the kept point
        # is evaluated on the faulty rank 1 too
        assert np.isnan(res["loss"])


class _NaNFromTheStart(mpi_worker.MLPClassifier):
    """One process whose loss is NaN from the first evaluation (the network
    of rank 1 of ``diverge_first``)."""

    def _network(self, dtype, n_threads=None):
        network = super()._network(dtype, n_threads)
        return mpi_worker._FaultyNetwork(network, 1, "diverge_first")


@pytest.mark.parametrize("n_ranks", [2, 3])
def test_lbfgs_nan_from_the_first_evaluation_on_one_rank_keeps_the_start_on_all(
    tmp_path, n_ranks
):
    # no rank has a finite point to keep: every rank raises that lbfgs
    # cannot start and holds the initial weights, those of one process
    # whose loss is NaN from the start
    res = _fault_ranks(tmp_path, "diverge_first", n_ranks)
    assert res["interrupted"].tolist() == [False] * n_ranks
    assert all("lbfgs cannot start" in error for error in res["errors"])
    assert np.isinf(res["loss"])
    X, y, sw = mpi_worker.make_data()
    one = _NaNFromTheStart(**dict(mpi_worker._SMALL, solver="lbfgs", max_iter=50))
    with pytest.raises(ValueError, match="lbfgs cannot start"):
        one.fit(X, y, sample_weight=sw)
    np.testing.assert_array_equal(res["theta"], one._theta)


@pytest.mark.parametrize("n_ranks", [2, 3])
@pytest.mark.parametrize("fault", ["interrupt_adam", "interrupt_between", "interrupt_last"])
def test_ctrl_c_on_one_rank_stops_adam_on_all_at_the_next_exchange(tmp_path, fault, n_ranks):
    # rank 1 gets Ctrl-C during the second batch of the second epoch
    # (interrupt_adam), or in a callback after the first epoch
    # (interrupt_between) or after the last of two (interrupt_last). The
    # ranks exchange it with the next batch's gradient: every rank finishes
    # that batch (as one process finishes the batch it is in), warns and
    # ends with the same weights; after the last epoch, every rank warns at
    # the end of the fit. None is left waiting
    res = _fault_ranks(tmp_path, fault, n_ranks)
    assert res["interrupted"].tolist() == [True] * n_ranks
    assert res["errors"].tolist() == [""] * n_ranks
    # an interrupted epoch is not counted
    epochs = 2 if fault == "interrupt_last" else 1
    assert int(res["n_iter"]) == epochs
    ref = _one_process(solver="adam", max_iter=epochs,
                       batch_size=n_ranks * mpi_worker._SMALL["batch_size"])
    assert res["loss_curve_"].shape == (epochs,)
    assert _relative_difference(res["loss_curve_"], ref.loss_curve_) <= RTOL["float64"]
    difference = _relative_difference(res["theta"], ref._theta)
    if fault == "interrupt_last":
        assert difference <= RTOL["float64"]  # the whole fit trained
    else:
        assert difference > 1e-6  # batches of the second epoch trained
