"""Helpers for data-parallel training over MPI (``pip install cbp[mpi]``).

Training itself is the estimators' ``comm`` parameter::

    # mpiexec -n 4 python train.py
    from mpi4py import MPI
    import cbp.mpi
    from cbp import MLPClassifier

    cbp.mpi.abort_on_exception()          # a failing rank ends the job
    comm = MPI.COMM_WORLD
    rows = cbp.mpi.shard(n_samples, comm)  # this rank's rows
    clf = MLPClassifier(batch_size=50, random_state=0, comm=comm)
    clf.fit(X[rows], y[rows])             # global batch: 4 * 50 rows

See :mod:`cbp._distributed` for the global batch order.
"""

import sys
import time

from ._distributed import mpi

__all__ = ["abort_on_exception", "shard"]

# seconds between printing a rank's traceback and aborting the job
_ABORT_PAUSE = 0.5


def abort_on_exception(comm=None):
    """Make an uncaught exception on any rank abort the whole MPI job.

    Without it, a rank that raises exits while the others wait forever in
    the next collective call. The hook prints the traceback as usual, waits
    half a second (so that ``mpiexec`` passes it on before it ends the
    ranks), then calls ``comm.Abort(1)``, which makes ``mpiexec`` end every
    rank and return a non-zero status. (``mpiexec -n K python -m mpi4py script.py``
    does the same without this call.)

    Parameters
    ----------
    comm : mpi4py.MPI.Comm, default=None
        The communicator to abort; None means ``MPI.COMM_WORLD``.

    Returns
    -------
    previous : callable
        The ``sys.excepthook`` that was replaced.
    """
    MPI = mpi()
    comm = MPI.COMM_WORLD if comm is None else comm
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        try:
            previous(exc_type, exc, tb)
            sys.stderr.flush()
            # mpiexec forwards each rank's output through a pipe and kills
            # every rank on Abort; once, on a loaded machine, MPICH's
            # mpiexec ended the job without printing any of the traceback:
            # the pause gives it time to pass the traceback on
            time.sleep(_ABORT_PAUSE)
        finally:
            comm.Abort(1)

    sys.excepthook = hook
    return previous


def shard(n_samples, comm=None):
    """This rank's contiguous share of ``n_samples`` rows, as a slice.

    Rank ``k`` of ``K`` gets rows ``k * n // K`` to ``(k + 1) * n // K``, so
    the shards concatenated in rank order are the rows in order.

    Parameters
    ----------
    n_samples : int
        Number of rows to share.
    comm : mpi4py.MPI.Comm, default=None
        None means ``MPI.COMM_WORLD``.

    Returns
    -------
    rows : slice
    """
    if n_samples < 0:
        raise ValueError(f"n_samples must be >= 0, got {n_samples}")
    MPI = mpi()
    comm = MPI.COMM_WORLD if comm is None else comm
    k, K = comm.Get_rank(), comm.Get_size()
    return slice(k * n_samples // K, (k + 1) * n_samples // K)
