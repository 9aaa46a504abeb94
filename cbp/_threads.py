"""Thread control: the core's OpenMP threads, and BLAS kept single-threaded inside them."""

import threading

import threadpoolctl
from threadpoolctl import ThreadpoolController

from . import _core

# Bound of |n_jobs|: more threads than any shared-memory machine has CPUs
# (the threads used are capped by the CPUs anyway, see _n_threads).
_MAX_N_JOBS = 2**16


class _SingleThreadedBLAS:
    """Context keeping BLAS single-threaded while the core's threads run.

    The core splits each batch over its own OpenMP threads and calls BLAS
    from each of them; a multithreaded BLAS inside would oversubscribe the
    cores. The limit is process-wide and counted: the first context entered
    (from any Python thread) sets it, the last one left restores the
    limits found by the first, whichever threads these are, and whatever
    ends the block (an exception, KeyboardInterrupt). A serial (no OpenMP)
    build leaves BLAS its threads.

    threadpoolctl lets only one thread at a time change a process-wide
    OpenBLAS pool (the "controlling thread") and silently ignores the
    others, so a restore from a thread other than the one that set the
    limit would be dropped and BLAS would stay at one thread for good.
    Every change here is therefore made under the class lock, with the
    controlling thread cleared before (so this thread takes control) and
    after (so no thread keeps it, and the user's own ``threadpool_limits``
    from any thread keeps working).
    """

    _lock = threading.Lock()
    _depth = 0
    _limiter = None
    _controller = None

    @staticmethod
    def _release_blas_control():
        # absent before threadpoolctl 3.6, whose OpenBLAS limits are not
        # tied to a thread
        clear = getattr(threadpoolctl.OpenBLASController, "clear_controlling_thread", None)
        if clear is not None:
            clear(force=True)

    @classmethod
    def _restore(cls):
        """Restore the saved limits (called with the lock held)."""
        interrupted = None
        while cls._limiter is not None:
            # a KeyboardInterrupt in the middle would leave some library at
            # one thread: finish the restore, then raise it
            try:
                cls._release_blas_control()
                cls._limiter.restore_original_limits()
                cls._release_blas_control()
                cls._limiter = None
            except KeyboardInterrupt as exc:
                interrupted = exc
        if interrupted is not None:
            raise interrupted

    def __enter__(self):
        if not _core.openmp_enabled():
            return self
        cls = type(self)
        with cls._lock:
            if cls._depth == 0:
                if cls._controller is None:
                    cls._controller = ThreadpoolController()
                if cls._limiter is not None:
                    # left set by an enter interrupted before it counted
                    cls._restore()
                try:
                    cls._release_blas_control()
                    cls._limiter = cls._controller.limit(limits=1, user_api="blas")
                    cls._release_blas_control()
                except BaseException:
                    # limits set before the failure are restored, if any
                    if cls._limiter is not None:
                        cls._restore()
                    raise
            cls._depth += 1
        return self

    def __exit__(self, *exc):
        if not _core.openmp_enabled():
            return False
        cls = type(self)
        with cls._lock:
            cls._depth -= 1
            if cls._depth == 0:
                cls._restore()
        return False


def _n_threads(n_jobs):
    """OpenMP threads for ``n_jobs``: None means all, negative counts back.

    Capped, as the core caps it, to what OpenMP can start here: the CPUs
    this process may run on (its affinity mask), OMP_THREAD_LIMIT, 1 inside
    an OpenMP region that cannot nest, 1 in a forked child.
    """
    n_max = _core.max_threads()
    if n_jobs is None:
        n = n_max
    elif n_jobs < 0:
        n = max(1, n_max + 1 + n_jobs)
    else:
        n = int(n_jobs)
    return _core.thread_cap(n)
