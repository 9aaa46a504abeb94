"""Reliability: bad input, divergence, interruption, threads, determinism, memory.

Each section tests one promise of the README's reliability list. Counts (bad
inputs tried, threads) are in the module constants so that a note can quote
them.
"""

import contextlib
import gc
import os
import signal
import sys
import threading
import time
import tracemalloc
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

import cbp._multilayer_perceptron as mlp_module
from cbp import MLPClassifier, MLPRegressor, _core
from cbp._threads import _n_threads

from _rounding import assert_equal_to_rounding
from _support import CoreProxy, quiet

ESTIMATORS = [MLPClassifier, MLPRegressor]
SOLVERS = ["sgd", "adam", "lbfgs"]
#: the methods of the core's Network that compute (the others set options)
CORE_COMPUTE = ("epoch", "batch_grad", "step", "loss_grad", "predict")


def _data(n=60, n_features=4, seed=0, dtype=np.float64):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, n_features)).astype(dtype)
    y_class = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int) + (X[:, 2] > 1)
    y_reg = X @ np.arange(1.0, n_features + 1) / n_features
    return X, y_class, y_reg


def _y_for(Est, y_class, y_reg):
    return y_class if Est is MLPClassifier else y_reg


def _params(est):
    return [a.copy() for a in est.coefs_ + est.intercepts_]


def _assert_same_params(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)




@pytest.fixture
def core_must_not_run(monkeypatch):
    """Fail the test if the estimator reaches a computing core entry point."""

    def forbidden(real, *args, **kw):
        raise AssertionError(f"the core ran ({real.__name__}) on invalid input")

    proxy = CoreProxy({name: forbidden for name in CORE_COMPUTE})
    monkeypatch.setattr(mlp_module, "_core", proxy)


# ---------------------------------------------------------------------------
# Bad input: a clear ValueError/TypeError from the estimator layer.


def _with(X, index, value):
    X = X.astype(np.float64)
    X[index] = value
    return X


def _bad_fit_inputs(Est):
    """(case name, X, y, fit kwargs, message pattern) for one estimator."""
    X, y_class, y_reg = _data(20, 3)
    y = _y_for(Est, y_class, y_reg)
    y_nan = y.astype(float).copy()
    y_nan[2] = np.nan
    y_inf = y.astype(float).copy()
    y_inf[5] = -np.inf
    ones = np.ones(len(X))
    return [
        ("nan in X", _with(X, (3, 1), np.nan), y, {}, "NaN"),
        ("inf in X", _with(X, (0, 0), np.inf), y, {}, "infinity"),
        ("-inf in X", _with(X, (7, 2), -np.inf), y, {}, "infinity"),
        ("nan in float32 X", _with(X, (3, 1), np.nan).astype(np.float32), y, {}, "NaN"),
        ("nan in y", X, y_nan, {}, "NaN"),
        ("inf in y", X, y_inf, {}, "infinity"),
        ("empty X", X[:0], y[:0], {}, "0 sample"),
        ("no features", X[:, :0], y, {}, "0 feature"),
        ("1-D X", X[:, 0], y, {}, "Expected 2D array"),
        ("3-D X", X[:, :, None], y, {}, "dim 3"),
        ("scalar X", 1.0, y[:1], {}, "2D array"),
        ("fewer y", X, y[:-1], {}, "inconsistent numbers of samples"),
        ("more y", X[:-3], y, {}, "inconsistent numbers of samples"),
        ("string X", np.array([["a", "b", "c"]] * 20), y, {}, "could not convert"),
        ("object X", np.array([[object()] * 3] * 20), y, {}, "float"),
        ("complex X", X + 1j, y, {}, "Complex"),
        ("ragged X", [[1.0, 2.0], [3.0]] * 10, y, {}, "inhomogeneous|sequence"),
        ("sample_weight too short", X, y, {"sample_weight": ones[:5]}, "sample_weight"),
        ("sample_weight too long", X, y, {"sample_weight": np.ones(30)}, "sample_weight"),
        ("negative sample_weight", X, y, {"sample_weight": -ones}, "Negative"),
        ("one negative sample_weight", X, y,
         {"sample_weight": np.r_[ones[:-1], -1e-3]}, "Negative"),
        ("nan sample_weight", X, y, {"sample_weight": ones * np.nan}, "NaN"),
        ("zero sample_weight", X, y, {"sample_weight": ones * 0}, "non-zero"),
        ("2-D sample_weight", X, y, {"sample_weight": ones[:, None]}, "1D"),
    ]


BAD_FIT_CASES = [
    (Est, case) for Est in ESTIMATORS for case in _bad_fit_inputs(Est)
]


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize(
    "Est, case", BAD_FIT_CASES, ids=[f"{E.__name__}-{c[0]}" for E, c in BAD_FIT_CASES]
)
def test_bad_fit_input_is_rejected_before_the_core(core_must_not_run, Est, case, solver):
    name, X, y, kw, pattern = case
    with pytest.raises((ValueError, TypeError), match=pattern):
        Est(solver=solver, max_iter=2).fit(X, y, **kw)
    if solver != "lbfgs":
        est = Est(solver=solver, max_iter=2)
        extra = {"classes": [0, 1, 2]} if Est is MLPClassifier else {}
        with pytest.raises((ValueError, TypeError), match=pattern):
            est.partial_fit(X, y, **kw, **extra)


def _bad_predict_inputs():
    X = _data(20, 3)[0]
    return [
        ("nan in X", _with(X, (1, 1), np.nan), "NaN"),
        ("inf in X", _with(X, (1, 1), np.inf), "infinity"),
        ("too few features", X[:, :2], "has 2 features, but"),
        ("too many features", np.c_[X, X], "has 6 features, but"),
        ("1-D X", X[0], "Expected 2D array"),
        ("string X", np.array([["a", "b", "c"]] * 2), "could not convert"),
        ("complex X", X + 1j, "Complex"),
    ]


BAD_PREDICT_CASES = _bad_predict_inputs()


@pytest.mark.parametrize("Est", ESTIMATORS)
@pytest.mark.parametrize(
    "case", BAD_PREDICT_CASES, ids=[c[0] for c in BAD_PREDICT_CASES]
)
def test_bad_predict_input_is_rejected_before_the_core(monkeypatch, Est, case):
    X, y_class, y_reg = _data(20, 3)
    with quiet():
        est = Est(hidden_layer_sizes=(5,), max_iter=3).fit(X, _y_for(Est, y_class, y_reg))
    monkeypatch.setattr(
        mlp_module, "_core",
        CoreProxy({n: lambda real, *a: pytest.fail("core ran") for n in CORE_COMPUTE}),
    )
    name, X_bad, pattern = case
    methods = [est.predict, est.score]
    if Est is MLPClassifier:
        methods += [est.predict_proba, est.predict_log_proba]
    for method in methods:
        args = (X_bad,) if method != est.score else (X_bad, np.zeros(len(np.atleast_1d(X_bad))))
        with pytest.raises((ValueError, TypeError), match=pattern):
            method(*args)


@pytest.mark.parametrize("Est", ESTIMATORS)
def test_predict_before_fit_raises_not_fitted(core_must_not_run, Est):
    from sklearn.exceptions import NotFittedError

    X = _data(5, 3)[0]
    methods = ["predict"] + (["predict_proba", "predict_log_proba"] if Est is MLPClassifier else [])
    for method in methods:
        with pytest.raises(NotFittedError, match="not fitted"):
            getattr(Est(), method)(X)
        # NotFittedError is a ValueError: "except ValueError" catches it
        with pytest.raises(ValueError):
            getattr(Est(), method)(X)


#: (parameter, invalid values); every value must fail parameter validation
BAD_HYPERPARAMETERS = [
    ("hidden_layer_sizes", [(0,), (-1,), (10, 0), (3.5,), ("a",), "10", [[3]], 0, -2,
                            None, 2.0, (np.float64(3.0),)]),
    ("alpha", [-1.0, -1e-12, "x", None]),
    ("learning_rate_init", [0, 0.0, -0.1, "0.1"]),
    ("activation", ["swish", "ReLU", None]),
    ("solver", ["newton", "SGD", None]),
    ("validation_fraction", [0, 0.0, 1, 1.0, 1.5, -0.1]),
    ("batch_size", [0, -3, 2.5, "big", None]),
    ("learning_rate", ["fast"]),
    ("max_iter", [0, -1, 2.5]),
    ("momentum", [1.5, -0.1]),
    ("beta_1", [1.0, -0.5]),
    ("beta_2", [1.0, 2.0]),
    ("epsilon", [0.0, -1e-8]),
    ("n_iter_no_change", [0, -1]),
    ("max_fun", [0]),
    ("tol", [-1.0]),
    ("power_t", [-0.5]),
    ("n_jobs", [0, 1.5, "all"]),
    ("shuffle", ["yes"]),
    ("early_stopping", [2]),
    ("warm_start", ["no"]),
    ("random_state", ["a", -1]),
]
BAD_HYPERPARAMETER_CASES = [
    (Est, name, value)
    for Est in ESTIMATORS
    for name, values in BAD_HYPERPARAMETERS
    for value in values
] + [(MLPRegressor, "loss", v) for v in ("hinge", "log_loss", None)]


@pytest.mark.parametrize(
    "Est, name, value",
    BAD_HYPERPARAMETER_CASES,
    ids=[f"{E.__name__}-{n}={v!r}" for E, n, v in BAD_HYPERPARAMETER_CASES],
)
def test_bad_hyperparameter_is_rejected_by_the_constraints(core_must_not_run, Est, name, value):
    from sklearn.utils._param_validation import InvalidParameterError

    X, y_class, y_reg = _data(20, 3)
    est = Est(**{name: value})
    with pytest.raises(InvalidParameterError, match=f"'{name}' parameter") as info:
        est.fit(X, _y_for(Est, y_class, y_reg))
    # scikit-learn's InvalidParameterError is both a ValueError and a TypeError
    assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)


def test_valid_layer_widths_are_accepted():
    X, y_class, _ = _data(30, 3)
    with quiet():
        for widths in [5, (5,), [4, 3], (np.int64(4), np.int32(2)), np.array([3, 2]), (), []]:
            clf = MLPClassifier(hidden_layer_sizes=widths, max_iter=2).fit(X, y_class)
            expect = [widths] if np.ndim(widths) == 0 else list(widths)
            assert [c.shape[1] for c in clf.coefs_[:-1]] == [int(w) for w in expect]


def test_network_too_large_for_32bit_blas_is_rejected_before_allocation(core_must_not_run):
    X, _, y_reg = _data(10, 3)
    # 3 * 50000 + 50000 * 50000 + 50000 weights > 2**31 - 1: refused before
    # the 20 GB of weights would be allocated
    reg = MLPRegressor(hidden_layer_sizes=(50_000, 50_000))
    with pytest.raises(ValueError, match="32-bit"):
        reg.fit(X, y_reg)
    assert not hasattr(reg, "coefs_")


def test_partial_fit_labels_outside_classes(core_must_not_run):
    X, y_class, _ = _data(20, 3)
    y = y_class % 2
    # first call: y has a label missing from classes
    with pytest.raises(ValueError, match="classes not in"):
        MLPClassifier().partial_fit(X, y * 2, classes=[0, 1])
    # first call without classes
    with pytest.raises(ValueError, match="classes must be passed"):
        MLPClassifier().partial_fit(X, y)


def test_partial_fit_labels_outside_classes_on_later_calls():
    X, y_class, _ = _data(20, 3)
    y = y_class % 2
    clf = MLPClassifier(hidden_layer_sizes=(4,)).partial_fit(X, y, classes=[0, 1])
    before = _params(clf)
    with pytest.raises(ValueError, match="classes not in"):
        clf.partial_fit(X, y + 1)
    with pytest.raises(ValueError, match="not the same as on last call"):
        clf.partial_fit(X, y, classes=[0, 1, 2])
    with pytest.raises(ValueError, match="classes not in"):
        clf.partial_fit(X, np.where(y == 1, "a", "b"))
    # the rejected calls did not touch the weights
    _assert_same_params(before, _params(clf))


def test_partial_fit_shape_change_is_rejected():
    X, y_class, y_reg = _data(20, 3)
    reg = MLPRegressor(hidden_layer_sizes=(4,)).partial_fit(X, y_reg)
    with pytest.raises(ValueError, match="features"):
        reg.partial_fit(X[:, :2], y_reg)
    with pytest.raises(ValueError, match="shape changed"):
        reg.partial_fit(X, np.c_[y_reg, y_reg])


# ---------------------------------------------------------------------------
# Read-only, memory-mapped and Fortran-ordered input; inputs never modified.


def _layouts(X, tmp_path, name):
    """The same data as C, Fortran, read-only, np.memmap and np.load(mmap_mode)."""
    ro = X.copy()
    ro.flags.writeable = False
    path = tmp_path / f"{name}.npy"
    np.save(path, X)
    mm = np.memmap(tmp_path / f"{name}.raw", dtype=X.dtype, mode="w+",
                   shape=X.shape)
    mm[...] = X
    mm.flush()
    mm_r = np.memmap(mm.filename, dtype=X.dtype, mode="r", shape=X.shape)
    return {
        "C": np.ascontiguousarray(X),
        "Fortran": np.asfortranarray(X),
        "read-only": ro,
        "memmap-r": mm_r,
        "np.load-mmap-r": np.load(path, mmap_mode="r"),
        "strided": np.repeat(X, 2, axis=0)[::2],
    }


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("Est", ESTIMATORS)
def test_readonly_memmap_and_fortran_inputs_give_the_same_result(tmp_path, Est, solver, dtype):
    X, y_class, y_reg = _data(70, 5, dtype=dtype)
    y = _y_for(Est, y_class, y_reg)
    sw = np.random.RandomState(1).uniform(0.5, 2, len(X))
    Xs = _layouts(X, tmp_path, "X")
    ys = _layouts(np.asarray(y), tmp_path, "y")
    sws = _layouts(sw, tmp_path, "sw")
    kw = dict(hidden_layer_sizes=(7, 5), solver=solver, max_iter=4, batch_size=16,
              random_state=0)
    results = {}
    with quiet():
        for name in Xs:
            est = Est(**kw).fit(Xs[name], ys[name], sample_weight=sws[name])
            out = [est.predict(Xs[name])]
            if Est is MLPClassifier:
                out.append(est.predict_proba(Xs[name]))
            if solver != "lbfgs":
                est.partial_fit(Xs[name], ys[name], sample_weight=sws[name])
                out.append(est.predict(Xs[name]))
            results[name] = (_params(est), out)
    ref_params, ref_out = results["C"]
    for name, (params, out) in results.items():
        _assert_same_params(ref_params, params)
        for a, b in zip(ref_out, out):
            np.testing.assert_array_equal(a, b)
    assert ref_params[0].dtype == dtype


@pytest.mark.parametrize("early_stopping", [False, True])
@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("Est", ESTIMATORS)
def test_inputs_are_never_modified(Est, solver, early_stopping):
    X, y_class, y_reg = _data(80, 4)
    y = np.asarray(_y_for(Est, y_class, y_reg))
    arrays = {
        "X64": X,
        "X32": X.astype(np.float32),
        "XF": np.asfortranarray(X),
        "y": y,
        # multilabel indicator / two regression targets
        "y2d": np.c_[y > 0, y[::-1] > 0] if Est is MLPClassifier else np.c_[y, y[::-1]],
        "sw": np.random.RandomState(0).uniform(0.1, 3, len(X)),
    }
    before = {k: (v.tobytes(), v.dtype, v.shape, v.strides) for k, v in arrays.items()}
    kw = dict(hidden_layer_sizes=(6,), solver=solver, max_iter=3, random_state=0,
              early_stopping=early_stopping)
    with quiet():
        for Xk in ("X64", "X32", "XF"):
            for yk in ("y", "y2d"):
                est = Est(**kw).fit(arrays[Xk], arrays[yk], sample_weight=arrays["sw"])
                est.predict(arrays[Xk])
                est.score(arrays[Xk], arrays[yk], sample_weight=arrays["sw"])
                if Est is MLPClassifier:
                    est.predict_proba(arrays[Xk])
                    est.predict_log_proba(arrays[Xk])
                if solver != "lbfgs" and not early_stopping:
                    est.partial_fit(arrays[Xk], arrays[yk], sample_weight=arrays["sw"])
    for k, v in arrays.items():
        assert (v.tobytes(), v.dtype, v.shape, v.strides) == before[k], k


# ---------------------------------------------------------------------------
# Divergence: a clear error, the last finite weights, never NaN weights.


@pytest.mark.parametrize("activation", ["identity", "tanh"])
@pytest.mark.parametrize("solver, lr", [("sgd", 1e30), ("adam", 1e200)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_huge_learning_rate_raises_and_keeps_finite_weights(solver, lr, activation, dtype):
    X, _, y = _data(200, 5, dtype=dtype)
    if dtype == np.float32:
        lr = min(lr, 1e30)
    reg = MLPRegressor(solver=solver, learning_rate_init=lr, activation=activation,
                       max_iter=50, random_state=0)
    with pytest.raises(ValueError, match="diverged"):
        reg.fit(X, y)
    params = _params(reg)
    assert all(np.isfinite(p).all() for p in params)
    assert reg.n_iter_ < 50
    # the estimator stays usable: predict gives finite values or says that
    # the (finite, huge) weights overflow; a new fit starts afresh
    try:
        assert np.isfinite(reg.predict(X)).all()
    except ValueError as exc:
        assert "NaN or infinite" in str(exc)
    with quiet():
        reg.set_params(learning_rate_init=1e-3).fit(X, y)
    assert all(np.isfinite(p).all() for p in _params(reg))
    assert np.isfinite(reg.predict(X)).all()


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_divergence_in_partial_fit_keeps_finite_weights(solver):
    X, _, y = _data(200, 5)
    lr = 1e10 if solver == "sgd" else 1e200
    # partial_fit keeps its optimizer (and learning rate) between calls
    reg = MLPRegressor(solver=solver, activation="identity", learning_rate_init=lr,
                       batch_size=20, random_state=0)
    with pytest.raises(ValueError, match="diverged"):
        for _ in range(50):
            reg.partial_fit(X, y)
    # the weights are those of the last finite step; the optimizer state
    # (which may have overflowed) is dropped
    assert all(np.isfinite(p).all() for p in _params(reg))
    assert reg._optimizer is None


def test_lbfgs_with_nonfinite_initial_loss_raises_and_keeps_initial_weights():
    X, _, y = _data(100, 5)
    reg = MLPRegressor(solver="lbfgs", random_state=0)
    with pytest.raises(ValueError, match="NaN or infinite"):
        reg.fit(X * 1e200, y * 1e200)
    init = MLPRegressor(solver="lbfgs", random_state=0, max_iter=1)
    init._random_state = np.random.RandomState(0)
    expected = [init._init_coef(a, b, np.float64) for a, b in [(5, 100), (100, 1)]]
    np.testing.assert_array_equal(reg.coefs_[0], expected[0][0])
    np.testing.assert_array_equal(reg.coefs_[1], expected[1][0])
    assert all(np.isfinite(p).all() for p in _params(reg))


@pytest.mark.parametrize("sparse", [False, True])
def test_lbfgs_divergence_reports_the_kept_point_with_the_fits_options(monkeypatch, sparse):
    """When L-BFGS-B ends on a non-finite point, the kept point's loss is
    computed again with every option of the fit (sparse X, leaky_relu's
    slope): a call that left them out would fail on sparse X and report
    the loss under the default slope."""
    import scipy.optimize
    import scipy.sparse

    X, _, y = _data(100, 5)
    X = scipy.sparse.csr_matrix(X) if sparse else X
    start_loss = []

    def ends_on_nan(fun, x0, **kwargs):
        start_loss.append(fun(x0)[0])
        return scipy.optimize.OptimizeResult(x=np.full_like(x0, np.nan), nit=1,
                                             status=0, success=True, message="")

    monkeypatch.setattr(scipy.optimize, "minimize", ends_on_nan)
    reg = MLPRegressor(solver="lbfgs", activation="leaky_relu", leaky_relu_slope=0.3,
                       random_state=0)
    with pytest.raises(ValueError, match="diverged|non-finite"):
        reg.fit(X, y)
    assert all(np.isfinite(p).all() for p in _params(reg))
    assert reg.loss_ == pytest.approx(start_loss[0], rel=1e-12)


def test_lbfgs_nonfinite_loss_midway_never_leaves_nonfinite_weights(monkeypatch):
    """Fault injection: past some evaluations, every new point has a NaN loss
    and gradient (the old points keep theirs, as a real loss would).

    scipy's L-BFGS-B then either stops at a finite point with a
    ConvergenceWarning, or ends on a NaN point and the estimator raises; both
    ways the weights are a finite point evaluated before the faults, and the
    reported loss is that point's."""
    X, _, y = _data(100, 5)
    seen = {}

    def flaky(real, theta, grad, *args, **kwargs):
        key = theta.tobytes()
        if key in seen or len(seen) < 8:
            data, penalty = real(theta, grad, *args, **kwargs)
            seen.setdefault(key, data + penalty)
            return data, penalty
        grad[:] = np.nan
        return np.nan, np.nan

    monkeypatch.setattr(mlp_module, "_core", CoreProxy({"loss_grad": flaky}))
    reg = MLPRegressor(solver="lbfgs", random_state=0, max_iter=100)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            reg.fit(X, y)
            raised = False
        except ValueError as exc:
            assert "diverged" in str(exc)
            raised = True
    if not raised:
        assert any(issubclass(w.category, ConvergenceWarning) for w in caught)
    assert all(np.isfinite(p).all() for p in _params(reg))
    key = reg._theta.tobytes()
    assert key in seen and np.isfinite(seen[key])
    if raised:
        # the kept point is the best one evaluated
        assert seen[key] == min(seen.values())
    assert np.isfinite(reg.loss_)


def test_predict_raises_when_finite_weights_overflow():
    """Finite weights can still overflow on huge (finite) input: predict says
    so instead of returning NaN; scoring inside fit (early stopping) keeps
    scikit-learn's NaN score."""
    X, y_class, y_reg = _data(50, 3)
    with quiet():
        clf = MLPClassifier(hidden_layer_sizes=(5,), max_iter=5, random_state=0).fit(X, y_class)
        reg = MLPRegressor(hidden_layer_sizes=(5,), max_iter=5, random_state=0).fit(X, y_reg)
    huge = np.full((2, 3), 1e300)
    for est in (clf, reg):
        # hidden units overflow to +inf; the output sums +inf and -inf
        est.coefs_[0][...] = 1e10
        est.coefs_[1][0] = 1.0
        est.coefs_[1][1] = -1.0
    assert all(np.isfinite(p).all() for p in _params(clf) + _params(reg))
    for method in (clf.predict, clf.predict_proba, clf.predict_log_proba, reg.predict):
        with pytest.raises(ValueError, match="NaN or infinite"):
            method(huge)
    assert np.isnan(reg._score_with_function(huge, [0.0, 1.0], None, lambda *a, **k: 0.0))


# ---------------------------------------------------------------------------
# Interruption: Ctrl-C stops within one batch and keeps the last step.

needs_sigint = pytest.mark.skipif(
    not hasattr(signal, "pthread_kill") or sys.platform == "win32",
    reason="needs POSIX signals",
)


@contextlib.contextmanager
def _sigint_when(condition, timeout=120.0):
    """Send SIGINT to the main thread once ``condition()`` holds.

    A watcher thread polls the condition (training releases the GIL). The
    handler raises KeyboardInterrupt only once, while the block runs, so a
    late signal cannot hit the rest of the test. Yields a dict whose
    "sent" entry says whether the signal went out.
    """
    state = {"sent": False, "active": True}
    done = threading.Event()
    main = threading.main_thread().ident

    def handler(signum, frame):
        if state["active"]:
            state["active"] = False
            raise KeyboardInterrupt

    def watch():
        deadline = time.monotonic() + timeout
        while not done.is_set() and time.monotonic() < deadline:
            if condition():
                state["sent"] = True
                signal.pthread_kill(main, signal.SIGINT)
                return
            time.sleep(0.0005)

    old = signal.signal(signal.SIGINT, handler)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield state
    finally:
        done.set()
        watcher.join()
        state["active"] = False
        signal.signal(signal.SIGINT, old)


@needs_sigint
@pytest.mark.parametrize("solver", ["adam", "sgd"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_core_interrupt_stops_after_the_current_batch(solver, dtype):
    """Network.epoch raises KeyboardInterrupt between batches; theta then
    equals an uninterrupted run over exactly the batches that were completed."""
    rng = np.random.RandomState(0)
    units = [6, 9, 1]
    _, P = _core.param_offsets(units)
    X = rng.normal(size=(500, 6)).astype(dtype)
    Y = X[:, :1] * 0.5
    sw = np.ones(500, dtype)
    data = _core.Input(X, Y, sw)
    # a long epoch of one-row batches: the signal comes in the middle
    order = np.tile(rng.permutation(500), 400).astype(np.intp)
    theta0 = rng.uniform(-0.3, 0.3, P).astype(dtype)
    nt = min(2, _core.max_threads())

    def run(theta, order, step, state_1, state_2):
        network = _core.Network(units, _core.HIDDEN_ACTIVATIONS["relu"],
                                _core.OUTPUT_ACTIVATIONS["identity"], dtype, n_threads=nt)
        network.set_optimizer(_core.SOLVERS[solver], state_1, state_2, step,
                              learning_rate=1e-3)
        return network.epoch(theta, data, order, 1, 1e-4)

    # sgd does not advance the step counter: count batches via the velocity
    theta = theta0.copy()
    step = np.zeros(1, np.intp)
    s1, s2 = np.zeros_like(theta), np.zeros_like(theta)
    with _sigint_when(lambda: step[0] >= 3 or (solver == "sgd" and s1.any())) as sig:
        with pytest.raises(KeyboardInterrupt):
            run(theta, order, step, s1, s2)
    assert sig["sent"]
    assert np.isfinite(theta).all()
    # replay k batches and find the one matching the interrupted state
    if solver == "adam":
        k = int(step[0])
        assert 3 <= k < len(order)
        candidates = [k]
    else:
        candidates = None
    theta_r = theta0.copy()
    step_r = np.zeros(1, np.intp)
    r1, r2 = np.zeros_like(theta), np.zeros_like(theta)
    if candidates is not None:
        run(theta_r, order[: candidates[0]].copy(), step_r, r1, r2)
        np.testing.assert_array_equal(theta_r, theta)
        np.testing.assert_array_equal(r1, s1)
        np.testing.assert_array_equal(r2, s2)
        assert step_r[0] == step[0]
    else:
        # one batch at a time: the interrupted state is one of the steps
        for k in range(1, len(order)):
            run(theta_r, order[k - 1 : k].copy(), step_r, r1, r2)
            if np.array_equal(theta_r, theta):
                np.testing.assert_array_equal(r1, s1)
                break
        else:
            pytest.fail("the interrupted weights are not those of any completed step")
        assert k < len(order) - 1


@needs_sigint
@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("Est", ESTIMATORS)
def test_ctrl_c_during_fit_leaves_a_usable_estimator(monkeypatch, Est, solver):
    X, y_class, y_reg = _data(2000, 10)
    y = _y_for(Est, y_class, y_reg)
    calls = {"n": 0, "losses": []}

    def counting(real, *args, **kwargs):
        calls["n"] += 1
        result = real(*args, **kwargs)
        if solver == "lbfgs":
            calls["losses"].append(result[0] + result[1])
        return result

    entry = "loss_grad" if solver == "lbfgs" else "epoch"
    monkeypatch.setattr(mlp_module, "_core", CoreProxy({entry: counting}))
    max_iter = 2000
    est = Est(hidden_layer_sizes=(40,), solver=solver, max_iter=max_iter, tol=0.0,
              max_fun=10**6, n_iter_no_change=max_iter, batch_size=50,
              learning_rate_init=1e-4, random_state=0)
    with _sigint_when(lambda: calls["n"] >= 3) as sig:
        with pytest.warns(UserWarning, match="interrupted"):
            est.fit(X, y)
    assert sig["sent"]
    assert est.n_iter_ < max_iter
    params = _params(est)
    assert all(np.isfinite(p).all() for p in params)
    # the coefs_ are still the views of the flat vector the core trains
    assert np.shares_memory(est.coefs_[0], est._theta)
    pred = est.predict(X)
    assert pred.shape == (len(X),)
    if Est is MLPClassifier:
        assert np.isfinite(est.predict_proba(X)).all()
        assert set(np.unique(pred)) <= set(est.classes_)
    else:
        assert np.isfinite(pred).all()
    if solver == "lbfgs":
        # the weights kept are the best evaluated point (the last call
        # re-evaluates them for loss_)
        assert est.loss_ == pytest.approx(min(calls["losses"]), rel=1e-12)
        assert calls["losses"][-1] == min(calls["losses"])
    else:
        # training resumes from the interrupted state
        with quiet():
            est.set_params(max_iter=2).fit(X, y)


# ---------------------------------------------------------------------------
# Concurrency: predictions from many threads, two fits at once.

N_PREDICT_THREADS = 8


@pytest.fixture(scope="module")
def fitted():
    X, y_class, y_reg = _data(500, 8, seed=3)
    with quiet():
        clf = MLPClassifier(hidden_layer_sizes=(32, 16), max_iter=20, random_state=0)
        reg = MLPRegressor(hidden_layer_sizes=(32,), max_iter=20, random_state=0)
        return X, clf.fit(X, y_class), reg.fit(X, y_reg)


@pytest.mark.parametrize("repack", [False, True])
def test_predict_from_many_threads_equals_serial(fitted, repack):
    X, clf, reg = fitted
    rng = np.random.RandomState(0)
    chunks = [rng.normal(size=(rng.randint(1, 900), X.shape[1])) for _ in range(48)]
    chunks += [c.astype(np.float32) for c in chunks[:8]]
    calls = [(clf.predict_proba, c) for c in chunks] + [(clf.predict, c) for c in chunks]
    calls += [(reg.predict, c) for c in chunks]
    serial = [f(c) for f, c in calls]
    if repack:
        # replaced coefs_: the first prediction of each thread repacks them
        clf.coefs_ = [c.copy() for c in clf.coefs_]
        reg.intercepts_ = [b.copy() for b in reg.intercepts_]
    with ThreadPoolExecutor(N_PREDICT_THREADS) as pool:
        for _ in range(3):
            results = list(pool.map(lambda fc: fc[0](fc[1]), calls))
            for a, b in zip(serial, results):
                np.testing.assert_array_equal(a, b)
    assert np.shares_memory(clf.coefs_[0], clf._theta)


def test_predict_releases_the_gil(fitted, monkeypatch):
    """While the core's forward pass runs, another Python thread gets the GIL.

    The switch interval is made huge, so the GIL changes hands only where a
    thread releases it. The waiting main thread can then only see ``inside``
    set if ``Network.predict`` released the GIL."""
    X, clf, _ = fitted
    state = {"inside": False}
    entered = threading.Event()

    def predict(real, *args, **kwargs):
        state["inside"] = True
        entered.set()
        try:
            return real(*args, **kwargs)
        finally:
            state["inside"] = False

    big = np.random.RandomState(0).normal(size=(300_000, X.shape[1]))
    monkeypatch.setattr(mlp_module, "_core", CoreProxy({"predict": predict}))
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    try:
        worker = threading.Thread(target=clf.predict_proba, args=(big,))
        worker.start()
        entered.wait(60)
        seen_inside = state["inside"]
        worker.join()
    finally:
        sys.setswitchinterval(interval)
    assert seen_inside


N_FIT_THREADS = 4


def test_fits_in_parallel_threads_equal_sequential_fits():
    X, y_class, y_reg = _data(600, 8, seed=5)
    X32 = X.astype(np.float32)
    jobs = [
        (MLPClassifier(hidden_layer_sizes=(20,), solver="adam", max_iter=8, random_state=1), X, y_class),
        (MLPRegressor(hidden_layer_sizes=(20, 10), solver="sgd", max_iter=8, random_state=2), X, y_reg),
        (MLPClassifier(hidden_layer_sizes=(15,), solver="lbfgs", max_iter=30, random_state=3), X32, y_class),
        (MLPRegressor(hidden_layer_sizes=(12,), solver="adam", max_iter=8, n_jobs=1, random_state=4), X32, y_reg),
    ]
    assert len(jobs) == N_FIT_THREADS
    from sklearn.base import clone

    with quiet():
        sequential = [_params(clone(e).fit(Xj, yj)) for e, Xj, yj in jobs]
    barrier = threading.Barrier(len(jobs))

    def fit(job):
        est, Xj, yj = job
        est = clone(est)
        barrier.wait()
        return _params(est.fit(Xj, yj))

    # the warning filters are process-wide: set once, outside the threads
    for _ in range(2):
        with quiet(), ThreadPoolExecutor(len(jobs)) as pool:
            parallel = list(pool.map(fit, jobs))
        for a, b in zip(sequential, parallel):
            _assert_same_params(a, b)


# ---------------------------------------------------------------------------
# Determinism: same random_state and n_jobs, same bits; across n_jobs, the
# same up to rounding (see tests/_rounding.py for why not the same bits).

THREAD_COUNTS = (1, 2, 3, 4)


def _assert_params_equal_to_rounding(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert_equal_to_rounding(u, v)


@pytest.mark.thread_count
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("Est", ESTIMATORS)
def test_same_seed_same_bits_for_the_same_thread_count(Est, solver, dtype,
                                                       more_threads_than_cpus):
    assert _n_threads(max(THREAD_COUNTS)) == max(THREAD_COUNTS)
    X, y_class, y_reg = _data(301, 7, seed=2, dtype=dtype)
    y = _y_for(Est, y_class, y_reg)
    sw = np.random.RandomState(3).uniform(0.2, 2, len(X))
    results = {}
    with quiet():
        for n_jobs in THREAD_COUNTS:
            runs = []
            for _ in range(2):
                est = Est(hidden_layer_sizes=(50, 30), solver=solver, max_iter=5,
                          batch_size=97, random_state=11, n_jobs=n_jobs)
                est.fit(X, y, sample_weight=sw)
                runs.append((_params(est), est.predict(X), est.loss_,
                             est.predict_proba(X) if Est is MLPClassifier else None))
            _assert_same_params(runs[0][0], runs[1][0])
            np.testing.assert_array_equal(runs[0][1], runs[1][1])
            assert runs[0][2] == runs[1][2]
            results[n_jobs] = runs[0]
    ref = results[1]
    for params, pred, loss, proba in results.values():
        _assert_params_equal_to_rounding(params, ref[0])
        assert_equal_to_rounding(loss, ref[2], dtype)
        if Est is MLPClassifier:
            assert_equal_to_rounding(proba, ref[3])
        else:
            assert_equal_to_rounding(pred, ref[1])


@pytest.mark.thread_count
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_thread_counts_agree_to_rounding_wide_layers(dtype, more_threads_than_cpus):
    """Layers of several SPLIT_QUANTUM-row blocks, shared unevenly: the
    threads' shares of the gradient and the step cross layer boundaries."""
    assert _n_threads(7) == 7
    X, y, _ = _data(400, 130, seed=4, dtype=dtype)
    results = []
    with quiet():
        for n_jobs in THREAD_COUNTS + (5, 7, 7):
            est = MLPClassifier(hidden_layer_sizes=(150, 7, 100), max_iter=3,
                                batch_size=150, random_state=5, n_jobs=n_jobs)
            est.fit(X, y)
            results.append((_params(est), est.loss_))
    # the last two: the same thread count twice
    _assert_same_params(results[-1][0], results[-2][0])
    assert results[-1][1] == results[-2][1]
    for params, loss in results[1:]:
        _assert_params_equal_to_rounding(params, results[0][0])
        assert_equal_to_rounding(loss, results[0][1], dtype)


_TEAM_SCRIPT = """
import warnings
import numpy as np
from cbp import MLPClassifier
warnings.simplefilter("ignore")
rng = np.random.RandomState(0)
X = rng.standard_normal((300, 20))
y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
for solver in ("adam", "lbfgs"):
    est = MLPClassifier(hidden_layer_sizes=(60,), solver=solver, max_iter=4,
                        random_state=0, n_jobs=3).fit(X, y)
    print(repr(est.loss_), repr(float(est.predict_proba(X).sum())),
          repr(float(np.abs(est.coefs_[0]).sum())))
"""


@pytest.mark.thread_count
@pytest.mark.skipif(not _core.openmp_enabled(), reason="serial build")
@pytest.mark.parametrize("env", [{"OMP_THREAD_LIMIT": "1"}, {"OMP_DYNAMIC": "true"},
                                 {"OMP_THREAD_LIMIT": "2", "OMP_DYNAMIC": "true"}])
def test_openmp_settings_that_shrink_teams_change_nothing(env, tmp_path):
    """OpenMP may start fewer threads than n_jobs asks for (a thread limit,
    dynamic teams). The core caps its thread count to the limit and turns
    dynamic teams off for its regions: same results as without them (before,
    a short team left rows of every batch uncomputed)."""
    import subprocess

    def run(extra):
        clean = {k: v for k, v in os.environ.items()
                 if k not in ("OMP_THREAD_LIMIT", "OMP_DYNAMIC")}
        # cwd away from the checkout: ``-c`` puts the cwd first on sys.path,
        # and the source tree's cbp/ has no compiled core when installed
        out = subprocess.run([sys.executable, "-c", _TEAM_SCRIPT], env={**clean, **extra},
                             capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        return np.array([float(v) for v in out.stdout.split()])

    # fewer threads than n_jobs=3 asked for: the same up to rounding
    assert_equal_to_rounding(run(env), run({}))


# ---------------------------------------------------------------------------
# Memory: repeated fit/predict does not grow the process.

MEMORY_CYCLES = 300


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_repeated_fit_predict_does_not_grow_memory():
    """300 fit/partial_fit/predict cycles after 30 warm-up cycles.

    Each cycle converts X (1000 x 40) to float32 or Fortran order, which the
    estimator copies: a leaked copy or input reference adds >= 150 KB per
    cycle, >= 45 MB over the cycles (bound: 16 MB of RSS). Within the 150
    cycles traced by tracemalloc (which sees numpy's buffers), a leaked
    parameter vector, gradient, optimizer state or workspace adds >= 20 KB
    per cycle, >= 3 MB (bound: 1 MB).
    """
    rng = np.random.RandomState(0)
    X = rng.normal(size=(1000, 40))
    y = rng.randint(0, 3, 1000)
    y_reg = X[:, 0]
    estimators = [
        MLPClassifier(hidden_layer_sizes=(64,), solver="adam", max_iter=1, n_jobs=1),
        MLPClassifier(hidden_layer_sizes=(64,), solver="sgd", max_iter=1, n_jobs=1),
        MLPRegressor(hidden_layer_sizes=(64,), solver="lbfgs", max_iter=2, n_jobs=1),
    ]

    def cycle(i):
        est = estimators[i % 3]
        target = y_reg if isinstance(est, MLPRegressor) else y
        Xi = X.astype(np.float32) if i % 2 else np.asfortranarray(X)
        est.set_params(random_state=i).fit(Xi, target)
        est.predict(Xi)
        if est.solver != "lbfgs":
            est.partial_fit(Xi, target)
        if isinstance(est, MLPClassifier):
            est.predict_proba(Xi)

    with quiet():
        for i in range(30):
            cycle(i)
        gc.collect()
        rss0 = _rss_bytes()
        for i in range(30, 30 + MEMORY_CYCLES // 2):
            cycle(i)
        tracemalloc.start()
        try:
            gc.collect()
            traced0 = tracemalloc.get_traced_memory()[0]
            for i in range(30 + MEMORY_CYCLES // 2, 30 + MEMORY_CYCLES):
                cycle(i)
            gc.collect()
            traced1 = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        rss1 = _rss_bytes()
    assert rss1 - rss0 < 16 * 2**20, (rss0, rss1)
    assert traced1 - traced0 < 2**20, (traced0, traced1)


# ---------------------------------------------------------------------------
# Build variant: the debug build (CBP_DEBUG=1) has the index checks.


def test_safety_checks_match_the_requested_build():
    checks = _core.safety_checks()
    # setup.py turns both on together
    assert checks["boundscheck"] == checks["wraparound"]
    requested = os.environ.get("CBP_DEBUG")
    if requested is None:
        pytest.skip(f"CBP_DEBUG not set; this build has {checks}")
    assert checks["boundscheck"] == (requested not in ("", "0")), checks


def test_safety_checks_catch_out_of_bounds_in_the_debug_build():
    if not _core.safety_checks()["boundscheck"]:
        pytest.skip("release build: no bounds checks")
    # the report comes from a real check: an index in bounds passes it
    assert _core.safety_checks(past_end=1)["boundscheck"] is False
    # and an out-of-bounds negative index raises instead of reading memory
    with pytest.raises(IndexError):
        _core.safety_checks(negative=-3)
