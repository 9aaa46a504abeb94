"""Threads, processes and output streams: what runs where, and what is left
behind.

Work that could hang or crash the interpreter when something regresses
(OpenMP after fork, thousands of threads) runs in a child process with a
timeout, so that a regression fails the test instead of the whole run.
"""

import io
import os
import subprocess
import sys
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from scipy import sparse
import threadpoolctl
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import InvalidParameterError

import cbp._threads as threads_module
from cbp import MLPClassifier, MLPRegressor, _core

needs_openmp = pytest.mark.skipif(not _core.openmp_enabled(), reason="serial build")
CHILD_TIMEOUT = 240


def _data(n=300, d=10, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.standard_normal((n, d))
    return X, (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)


def _run_child(script, tmp_path, env=None):
    """Run ``script`` in a fresh interpreter; return its stdout.

    The cwd is away from the checkout: ``-c`` puts the cwd first on
    sys.path, and the source tree's cbp/ has no compiled core when the
    suite tests an installed wheel.
    """
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith("OMP_")}
    full_env.update(env or {})
    out = subprocess.run([sys.executable, "-c", script], env=full_env,
                         capture_output=True, text=True, timeout=CHILD_TIMEOUT,
                         cwd=tmp_path)
    assert out.returncode == 0, (out.returncode, out.stdout, out.stderr[-3000:])
    return out.stdout


def _blas_threads():
    return [(d["filepath"], d["num_threads"])
            for d in threadpoolctl.threadpool_info() if d["user_api"] == "blas"]


def _needs_multithreaded_blas():
    if not _core.openmp_enabled():
        pytest.skip("serial build: BLAS is never limited")
    if max([n for _, n in _blas_threads()], default=1) < 2:
        pytest.skip("BLAS runs one thread already: a lost restore is invisible")


# ---------------------------------------------------------------------------
# n_jobs: a documented range; the threads used capped by the CPUs.

@pytest.mark.parametrize("n_jobs", [2**31, 2**40, -(2**31), 2**16 + 1, -(2**16 + 1)])
@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
def test_n_jobs_out_of_range_is_a_clear_parameter_error(Est, n_jobs):
    X, y = _data(40)
    with pytest.raises(InvalidParameterError, match="n_jobs"):
        Est(n_jobs=n_jobs, max_iter=1).fit(X, y)


def test_n_jobs_range_is_in_the_docstrings():
    for Est in (MLPClassifier, MLPRegressor):
        doc = " ".join(Est.__doc__.split())
        assert "from 1 to 65536, or -1 to -65536" in doc
        assert "capped by the CPUs this process may run on" in doc
    assert threads_module._MAX_N_JOBS == 2**16


@needs_openmp
def test_threads_used_are_capped_by_the_cpus_of_the_process():
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    if cpus is not None:
        assert _core.cpu_count() == cpus
    n_cpus = _core.cpu_count()
    for n_jobs in (1, n_cpus, n_cpus + 1, 1000, 2**16, None, -1):
        n = threads_module._n_threads(n_jobs)
        assert 1 <= n <= n_cpus
    assert threads_module._n_threads(2**16) == n_cpus
    # the core's own entry point caps any integer, even past a C int
    assert _core.thread_cap(2**40) == n_cpus
    assert _core.thread_cap(-5) == 1


_AFFINITY_SCRIPT = """
import os
cpu = sorted(os.sched_getaffinity(0))[0]
os.sched_setaffinity(0, {cpu})
from cbp import MLPClassifier, _core
import cbp._threads as m
print(_core.cpu_count(), m._n_threads(8), m._n_threads(None))
"""


@needs_openmp
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity")
def test_a_process_bound_to_one_cpu_runs_one_thread(tmp_path):
    assert _run_child(_AFFINITY_SCRIPT, tmp_path).split() == ["1", "1", "1"]


_HUGE_N_JOBS_SCRIPT = """
import threading, warnings
import numpy as np
from cbp import MLPClassifier, MLPRegressor
warnings.simplefilter("ignore")
rng = np.random.RandomState(0)
X = rng.standard_normal((300, 10)); y = (X[:, 0] > 0).astype(int)
out = []
def work():
    for Est, t in ((MLPClassifier, y), (MLPRegressor, X[:, 1])):
        for solver in ("adam", "lbfgs"):
            est = Est(hidden_layer_sizes=(20,), max_iter=2, solver=solver,
                      n_jobs=65536, random_state=0).fit(X, t)
            out.append(float(np.sum(est.predict(X))))
work()
# a thread with a small stack: OpenMP's per-thread records of a team live on
# the stack of the thread that starts it
threading.stack_size(256 * 1024)
t = threading.Thread(target=work)
t.start(); t.join()
print(len(out))
"""


@needs_openmp
def test_the_largest_n_jobs_trains_and_predicts(tmp_path):
    """n_jobs=65536 (any valid value) runs: uncapped, GNU OpenMP puts ~128
    bytes per thread of a new team on the caller's stack (100000 threads
    overflowed the main thread's 8 MiB: SIGSEGV) and exits the process when
    it cannot create a thread (40000: 'Thread creation failed')."""
    assert _run_child(_HUGE_N_JOBS_SCRIPT, tmp_path).split() == ["8"]


_OMP_ENV_SCRIPT = """
import cbp._threads as m
print(m._n_threads(None), m._n_threads(2), m._n_threads(-1))
"""


@needs_openmp
@pytest.mark.parametrize("env, expected", [
    # the default (None, -1) follows OMP_NUM_THREADS; an explicit n_jobs wins
    ({"OMP_NUM_THREADS": "1"}, ["1", "two", "1"]),
    # a hard limit caps everything
    ({"OMP_THREAD_LIMIT": "1"}, ["1", "1", "1"]),
    # more than the CPUs is capped like n_jobs
    ({"OMP_NUM_THREADS": "100000"}, ["cpus", "two", "cpus"]),
])
def test_openmp_environment_variables_bound_the_threads(env, expected, tmp_path):
    cpus = _core.cpu_count()
    names = {"two": str(min(2, cpus)), "cpus": str(cpus)}
    got = _run_child(_OMP_ENV_SCRIPT, tmp_path, env).split()
    assert got == [names.get(v, v) for v in expected]


@needs_openmp
def test_cpu_count_hook_lets_tests_run_more_threads_than_cpus(more_threads_than_cpus):
    """The thread-count independence tests run 3, 4, 5 and 7 threads on
    any machine through this hook (tests/conftest.py)."""
    assert threads_module._n_threads(7) == 7
    assert _core.thread_cap(more_threads_than_cpus + 1) == more_threads_than_cpus


def _restored(setter):
    """Fixture body: yield a function that sets one of the core's test
    hooks through ``setter`` (which returns the previous value); the first
    previous value is set back after the test."""
    previous = []

    def set_value(value):
        previous.append(setter(value))

    yield set_value
    if previous:
        setter(previous[0])


@pytest.fixture
def barrier_spin():
    """Set the core's barrier spin (ns) for one test; restored after."""
    yield from _restored(_core.set_barrier_spin)


def test_barrier_spin_rejects_a_negative_time():
    with pytest.raises(ValueError, match="ns must be >= 0"):
        _core.set_barrier_spin(-1)


@needs_openmp
@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_barriers_that_sleep_at_once_train_the_same_weights(
        solver, barrier_spin, more_threads_than_cpus):
    """The core's barrier sleeps after a short spin (``cbp_bar_wait``), and
    each phase's shares go to whichever thread is free (``cbp_claim``).
    With no spin and more threads than CPUs, threads sleep at almost every
    barrier and take shares in another order each batch: the weights and
    losses must be those of the default spin, bit for bit."""
    X, y = _data(n=900, d=20)
    kw = dict(hidden_layer_sizes=(100, 60), solver=solver, max_iter=4,
              batch_size=150, random_state=0, n_jobs=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        spinning = MLPClassifier(**kw).fit(X, y)
        barrier_spin(0)
        sleeping = MLPClassifier(**kw).fit(X, y)
    for a, b in zip(spinning.coefs_ + spinning.intercepts_,
                    sleeping.coefs_ + sleeping.intercepts_):
        np.testing.assert_array_equal(a, b)
    assert spinning.loss_ == sleeping.loss_


@pytest.fixture
def leave_after():
    """Set the core's leave-after hook (batches) for one test; restored after."""
    yield from _restored(_core.set_leave_after)


def test_leave_after_rejects_a_negative_count():
    with pytest.raises(ValueError, match="batches must be >= 0"):
        _core.set_leave_after(-1)


# the core's own barrier (Linux futexes) lets a thread leave; OpenMP's does not
can_leave = _core.openmp_enabled() and sys.platform.startswith("linux")


def _leave_case(case):
    """Data and fit settings of one case of the leaving test."""
    X, y = _data(n=900, d=20)
    kw = dict(hidden_layer_sizes=(100, 60), max_iter=3, batch_size=150,
              random_state=0)
    fit = {}
    if case == "unshuffled":
        kw["shuffle"] = False
    elif case == "sparse":
        X = sparse.csr_matrix(np.where(np.abs(X) > 1, X, 0.0))
    elif case == "dropout":
        kw["dropout"] = 0.2
    elif case == "zero-weight batch":
        # the first batch weighs nothing and is skipped: phase 2's shares
        # are counted over the batches that have one
        kw["shuffle"] = False
        fit["sample_weight"] = np.r_[np.zeros(150), np.ones(750)]
    return X, y, kw, fit


@pytest.mark.skipif(not can_leave, reason="only the core's own barrier lets threads leave")
@pytest.mark.parametrize("case", ["shuffled", "unshuffled", "sparse", "dropout",
                                  "zero-weight batch"])
@pytest.mark.parametrize("n_jobs", [2, 3, 5])
def test_threads_that_leave_the_team_change_no_weight(
        case, n_jobs, leave_after, more_threads_than_cpus):
    """A thread the OS keeps off its CPU leaves an epoch's team between
    batches and the others take its shares (``cbp_should_leave``). Made to
    leave early or late, one by one until thread 0 is alone, the threads
    must leave the weights and losses as they are with the whole team, bit
    for bit."""
    X, y, kw, fit = _leave_case(case)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        whole = MLPClassifier(n_jobs=n_jobs, **kw).fit(X, y, **fit)
        for after in (1, 4):
            leave_after(after)
            before = _core.departures()
            left = MLPClassifier(n_jobs=n_jobs, **kw).fit(X, y, **fit)
            # 6 batches per epoch: every thread but thread 0 leaves in
            # each of the 3 epochs (after 4: thread 1 and, with 3 or more
            # threads, thread 2; the last batch has no "after")
            expected = 3 * min(n_jobs - 1, 6 - after)
            assert _core.departures() - before == expected
            for a, b in zip(whole.coefs_ + whole.intercepts_,
                            left.coefs_ + left.intercepts_):
                np.testing.assert_array_equal(a, b)
            assert whole.loss_curve_ == left.loss_curve_


# ---------------------------------------------------------------------------
# Processes: fork after a threaded fit, spawn, forkserver, executors.

_POOL_SCRIPT = """
import multiprocessing as mp, sys, warnings
from concurrent.futures import ProcessPoolExecutor
import numpy as np
from cbp import MLPClassifier, _core
import cbp._threads as m
warnings.simplefilter("ignore")
rng = np.random.RandomState(0)
X = rng.standard_normal((400, 12)); y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
KW = dict(hidden_layer_sizes=(60,), max_iter=3, batch_size=100, random_state=0)

def job(est):
    for solver in ("adam", "lbfgs"):
        fitted = MLPClassifier(solver=solver, n_jobs=2, **KW).fit(X, y)
    return (est.predict_proba(X).tolist(), [c.tolist() for c in fitted.coefs_],
            _core.in_forked_child(), m._n_threads(None))

if __name__ == "__main__":
    how = sys.argv[1]
    est = MLPClassifier(n_jobs=2, **KW).fit(X, y)  # the threads exist now
    ref = MLPClassifier(solver="lbfgs", n_jobs=2, **KW).fit(X, y)
    if how == "executor":
        with ProcessPoolExecutor(2, mp_context=mp.get_context("fork")) as ex:
            results = list(ex.map(job, [est] * 3))
    else:
        with mp.get_context(how).Pool(2) as pool:
            results = pool.map(job, [est] * 3)
    for proba, coefs, forked, n in results:
        assert proba == est.predict_proba(X).tolist()
        # serial in the child, the same bits as the threaded parent
        assert coefs == [c.tolist() for c in ref.coefs_]
        assert forked == (how in ("fork", "executor")), (how, forked)
        assert n == 1 if forked else n >= 1
    print("ok", how)
"""


@pytest.mark.parametrize("how", ["fork", "executor", "spawn", "forkserver"])
def test_process_pools_train_and_predict_after_a_threaded_fit(how, tmp_path):
    """GNU OpenMP is not fork-safe: before, a child forked after a threaded
    fit hung at its first predict. The core runs serially in a forked
    child; spawn and forkserver children keep their threads."""
    if how in ("fork", "executor", "forkserver") and not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    script = tmp_path / "pool_script.py"
    script.write_text(_POOL_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
    out = subprocess.run([sys.executable, str(script), how], env=env,
                         capture_output=True, text=True, timeout=CHILD_TIMEOUT,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["ok", how]


@needs_openmp
@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_forked_child_knows_it_is_forked():
    assert not _core.in_forked_child()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.write(w, b"%d %d" % (_core.in_forked_child(), _core.thread_cap(4)))
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        got = f.read().split()
    os.waitpid(pid, 0)
    assert got == [b"1", b"1"]


# ---------------------------------------------------------------------------
# BLAS thread limits: always restored, whatever the threads do.

def test_blas_limit_restored_when_the_last_user_is_another_thread():
    """Thread A sets the single-thread limit, thread B enters too, A leaves
    first and stays alive, B leaves last. threadpoolctl lets only the thread
    that changed OpenBLAS change it back: B's restore was dropped and BLAS
    stayed at one thread."""
    _needs_multithreaded_blas()
    before = _blas_threads()
    a_in, b_in, a_out, a_may_end = (threading.Event() for _ in range(4))
    inside = []

    def thread_a():
        with threads_module._SingleThreadedBLAS():
            a_in.set()
            b_in.wait(30)
            inside.append(_blas_threads())
        a_out.set()
        a_may_end.wait(30)

    def thread_b():
        a_in.wait(30)
        with threads_module._SingleThreadedBLAS():
            b_in.set()
            a_out.wait(30)
            inside.append(_blas_threads())

    ta, tb = threading.Thread(target=thread_a), threading.Thread(target=thread_b)
    ta.start()
    tb.start()
    tb.join(60)
    try:
        after = _blas_threads()
    finally:
        a_may_end.set()
        ta.join(60)
    assert all(n == 1 for info in inside for _, n in info)
    assert after == before


def test_blas_limits_restored_after_concurrent_fits_and_predicts():
    _needs_multithreaded_blas()
    X, y = _data(400)
    fitted = MLPClassifier(hidden_layer_sizes=(30,), max_iter=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fitted.fit(X, y)
    before = _blas_threads()

    def fit(i):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            solver = ("adam", "lbfgs", "sgd")[i % 3]
            MLPClassifier(hidden_layer_sizes=(20,), max_iter=2, solver=solver,
                          n_jobs=2, random_state=i).fit(X, y)

    def predict(i):
        for _ in range(20):
            fitted.predict_proba(X[:50])

    # a pool's workers stay alive, as the threads of a web server do
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: fit(i) if i % 2 else predict(i), range(40)))
        after_in_pool = _blas_threads()
    assert after_in_pool == before
    assert _blas_threads() == before


def test_user_blas_limits_from_another_thread_work_after_a_fit():
    """A fit must not leave threadpoolctl's OpenBLAS control with the
    fitting thread: the user's own limits from another thread were then
    silently ignored."""
    _needs_multithreaded_blas()
    X, y = _data(100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        MLPClassifier(hidden_layer_sizes=(5,), max_iter=1).fit(X, y)
    before = _blas_threads()
    seen = []

    def user():
        with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
            seen.append(_blas_threads())

    t = threading.Thread(target=user)
    t.start()
    t.join(60)
    assert all(n == 1 for _, n in seen[0])
    assert _blas_threads() == before


def test_user_threadpool_limits_around_a_fit_are_kept_and_restored():
    _needs_multithreaded_blas()
    X, y = _data(200)
    before = _blas_threads()
    during = []

    def spy(est, info):
        during.append(_blas_threads())

    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        user = _blas_threads()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            MLPClassifier(hidden_layer_sizes=(5,), max_iter=2, callbacks=[spy]).fit(X, y)
        assert _blas_threads() == user
    assert _blas_threads() == before
    # BLAS is single-threaded inside the core's threads
    assert all(n == 1 for info in during for _, n in info)


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_blas_limits_restored_when_a_fit_is_interrupted(exc):
    _needs_multithreaded_blas()
    X, y = _data(200)
    before = _blas_threads()

    def boom(est, info):
        raise exc("stop")

    est = MLPClassifier(hidden_layer_sizes=(5,), max_iter=5, callbacks=[boom])
    if exc is KeyboardInterrupt:
        # as in scikit-learn, Ctrl-C ends training with a warning
        with pytest.warns(UserWarning, match="interrupted"):
            est.fit(X, y)
    else:
        with pytest.raises(exc):
            est.fit(X, y)
    assert _blas_threads() == before


def test_blas_restore_finishes_when_interrupted_half_way(monkeypatch):
    """A KeyboardInterrupt inside the restore (between two libraries) must
    not leave a library at one thread: the restore is finished first."""
    _needs_multithreaded_blas()
    before = _blas_threads()
    real = threadpoolctl._ThreadpoolLimiter.restore_original_limits
    calls = []

    def interrupted_once(self):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        real(self)

    monkeypatch.setattr(threadpoolctl._ThreadpoolLimiter, "restore_original_limits",
                        interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        with threads_module._SingleThreadedBLAS():
            pass
    monkeypatch.undo()
    assert _blas_threads() == before
    assert threads_module._SingleThreadedBLAS._depth == 0


# ---------------------------------------------------------------------------
# Many threads at once, and nested parallelism.

def test_fits_and_predicts_from_many_threads_match_serial_results():
    X, y = _data(300)
    kw = dict(hidden_layer_sizes=(25,), max_iter=3, batch_size=64, n_jobs=2)

    def fit(seed):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return MLPClassifier(random_state=seed, **kw).fit(X, y)

    serial = [fit(seed) for seed in range(6)]
    shared = serial[0]
    expected = shared.predict_proba(X)
    with ThreadPoolExecutor(6) as pool:
        threaded = list(pool.map(fit, range(6)))
        probas = list(pool.map(lambda _: shared.predict_proba(X), range(12)))
    for a, b in zip(serial, threaded):
        for ca, cb in zip(a.coefs_, b.coefs_):
            np.testing.assert_array_equal(ca, cb)
    for p in probas:
        np.testing.assert_array_equal(p, expected)


_ONE_ESTIMATOR_RACE_SCRIPT = """
import threading, warnings
import numpy as np
from cbp import MLPClassifier
warnings.simplefilter("ignore")
rng = np.random.RandomState(0)
data = [(rng.standard_normal((300, 20)), rng.randint(0, 3, 300)),
        (rng.standard_normal((300, 7)), rng.randint(0, 5, 300))]
est = MLPClassifier(hidden_layer_sizes=(30,), max_iter=3, n_jobs=2, random_state=0)
unexpected = []
def run(X, y, fit):
    for _ in range(8 if fit else 100):
        try:
            if fit:
                est.fit(X, y)
            est.predict(X)
        except Exception:
            # the other thread changed the shapes or the labels under this
            # one: an exception, never a crash
            pass
        except BaseException as exc:
            unexpected.append(repr(exc))
threads = [threading.Thread(target=run, args=(*data[0], True)),
           threading.Thread(target=run, args=(*data[1], True)),
           threading.Thread(target=run, args=(*data[0], False))]
for t in threads: t.start()
for t in threads: t.join()
est.fit(*data[0])
print(len(unexpected), est.score(*data[0]) > 0.3)
"""


def test_racing_fits_on_one_estimator_raise_never_crash(tmp_path):
    """Fitting one estimator from two threads at once is a user error (as
    in scikit-learn), but it must not corrupt memory: the core checks every
    buffer's shape against the layer widths, so a thread whose state was
    changed under it raises (mostly a ValueError) and a later fit works."""
    assert _run_child(_ONE_ESTIMATOR_RACE_SCRIPT, tmp_path).split() == ["0", "True"]


def test_fit_inside_joblib_threading_backend_matches_serial():
    joblib = pytest.importorskip("joblib")
    X, y = _data(300)

    def fit(seed):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est = MLPClassifier(hidden_layer_sizes=(20,), max_iter=3,
                                random_state=seed, n_jobs=-1).fit(X, y)
        return [c.copy() for c in est.coefs_]

    serial = [fit(s) for s in range(4)]
    with joblib.parallel_backend("threading", n_jobs=4):
        nested = joblib.Parallel()(joblib.delayed(fit)(s) for s in range(4))
    for a, b in zip(serial, nested):
        for ca, cb in zip(a, b):
            np.testing.assert_array_equal(ca, cb)


# ---------------------------------------------------------------------------
# Signals.

# the start of both scripts: data, and the BLAS thread counts before the fit
_SIGNAL_PREAMBLE = """
import os, signal, threading, warnings
import numpy as np, threadpoolctl
from cbp import MLPClassifier
warnings.simplefilter("ignore")
rng = np.random.RandomState(0)
X = rng.standard_normal((2000, 20)); y = (X[:, 0] > 0).astype(int)
blas = lambda: [d["num_threads"] for d in threadpoolctl.threadpool_info()
                if d["user_api"] == "blas"]
before = blas()
"""

_SIGINT_THREAD_SCRIPT = _SIGNAL_PREAMBLE + """
started = threading.Event()
est = MLPClassifier(hidden_layer_sizes=(50,), max_iter=6, n_jobs=2,
                    tol=0, n_iter_no_change=100, random_state=0,
                    callbacks=[lambda e, i: started.set()])
t = threading.Thread(target=est.fit, args=(X, y))
t.start()
started.wait(60)
try:
    os.kill(os.getpid(), signal.SIGINT)
    t.join()
    print("no interrupt")
except KeyboardInterrupt:
    t.join()
print(est.n_iter_, blas() == before)
"""


@pytest.mark.skipif(not hasattr(os, "kill") or sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_while_a_thread_fits_interrupts_the_main_thread_only(tmp_path):
    """SIGINT goes to the main thread (Python runs handlers there only):
    the fit in the other thread completes, and BLAS limits are restored."""
    assert _run_child(_SIGINT_THREAD_SCRIPT, tmp_path).split() == ["6", "True"]


_SIGTERM_SCRIPT = _SIGNAL_PREAMBLE + """
def on_term(signum, frame):
    raise SystemExit("terminated")
signal.signal(signal.SIGTERM, on_term)
def kill_self(est, info):
    if info["epoch"] == 2:
        os.kill(os.getpid(), signal.SIGTERM)
est = MLPClassifier(hidden_layer_sizes=(50,), max_iter=50, n_jobs=2, tol=0,
                    n_iter_no_change=100, random_state=0, callbacks=[kill_self])
try:
    est.fit(X, y)
    print("finished")
except SystemExit as e:
    print(e, blas() == before)
"""


@pytest.mark.skipif(not hasattr(os, "kill") or sys.platform == "win32", reason="POSIX signals")
def test_a_sigterm_handler_that_exits_stops_the_fit_cleanly(tmp_path):
    assert _run_child(_SIGTERM_SCRIPT, tmp_path).split() == ["terminated", "True"]


# ---------------------------------------------------------------------------
# Progress output: any sys.stdout.

class _WriteOnly:
    def __init__(self):
        self.parts = []

    def write(self, text):
        self.parts.append(text)


class _Failing(io.StringIO):
    def write(self, text):
        raise OSError("broken pipe")


def _closed():
    s = io.StringIO()
    s.close()
    return s


def _ascii():
    return io.TextIOWrapper(io.BytesIO(), encoding="ascii")


@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
@pytest.mark.parametrize("make_stream, fails", [
    (lambda: None, False),
    (_WriteOnly, False),
    (_ascii, False),
    (_closed, True),
    (_Failing, True),
    (io.BytesIO, True),
])
def test_verbose_fit_survives_any_stdout(make_stream, fails, solver, monkeypatch):
    X, y = _data(200)
    stream = make_stream()
    monkeypatch.setattr(sys, "stdout", stream)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est = MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, solver=solver,
                            verbose=True, random_state=0).fit(X, y)
    monkeypatch.undo()
    assert est.n_iter_ >= 1
    progress = [w for w in caught if "progress output stream" in str(w.message)]
    if solver == "adam":
        # one warning when the stream fails, then silence
        assert len(progress) == (1 if fails else 0)
    first = "Iteration 1, loss" if solver == "adam" else "L-BFGS-B: 3 iterations"
    if isinstance(stream, _WriteOnly):
        assert "".join(stream.parts).startswith(first)
    if make_stream is _ascii:
        stream.flush()
        assert stream.buffer.getvalue().decode("ascii").startswith(first)


def test_progress_write_reports_failure_without_raising():
    from cbp._progress import _write

    assert _write(io.StringIO(), "x") is True
    assert _write(None, "x") is False
    assert _write(_closed(), "x") is False
    assert _write(_Failing(), "x") is False
    assert _write(_WriteOnly(), "x") is True
