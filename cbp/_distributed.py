"""Synchronous data-parallel training over MPI (estimators with ``comm``).

Each process (rank) of the communicator holds a shard of the rows and a
full copy of the parameters. The ranks train on one *global* batch at a
time: every rank computes the gradient of the rows of the batch that it
holds, the gradients are summed in place by one ``Allreduce`` on a flat
buffer allocated once per fit, and every rank applies the same optimizer
step, so the parameters stay identical on all ranks.

Global batch order
------------------
The global data set is the concatenation of the shards in rank order:
rank ``k``'s local row ``i`` is global row ``offset_k + i`` with
``offset_k = n_0 + ... + n_{k-1}``. Each epoch draws one permutation of
the ``n = n_0 + ... + n_{K-1}`` global rows with the estimator's
``random_state`` exactly as a single-process ``fit`` draws it (rank 0's
draw is broadcast, so the ranks agree even with ``random_state=None``);
without ``shuffle`` the order is ``0, 1, ..., n - 1``. Global batch ``j``
is entries ``j * B`` to ``(j + 1) * B`` of that order, with
``B = K * batch_size`` (``batch_size`` is per rank; 'auto' is 200). Rank
``k`` computes the gradient of the rows of batch ``j`` that lie in its
shard, in the batch's order, scaled by ``1 / sw_sum_j`` where ``sw_sum_j``
is the sum of the sample weights of the *whole* global batch (every rank
knows all the weights: they are gathered once per fit). The sum over the
ranks is then exactly the gradient of the global batch, so K ranks
reproduce, to floating-point rounding, a single-process ``fit`` of the
same estimator with ``batch_size=B`` on the concatenated data (bit for bit
when K = 1).

With ``shuffle=False`` a global batch is a run of consecutive rows, which
mostly lie in one shard: correct, but without parallel speed-up.

Why Python between the core calls
---------------------------------
Each batch is three calls: ``Network.batch_grad`` (forward, backward and
gradient of the rank's rows, without the GIL), ``Allreduce`` through
mpi4py, and ``Network.step``: the batch step of a single-process epoch,
with the allreduce between its gradient and its update. Calling MPI from the Cython core
through mpi4py's C API would need the MPI headers at build time, making
every build of cbp depend on MPI; the Python round trip costs a few tens
of microseconds per batch (``benchmarks/mpi_scaling.py --overhead``
measures it) against milliseconds of arithmetic, so the default build
stays free of MPI.
"""

import math
import os

import numpy as np

from . import _core


def mpi():
    """Return the ``mpi4py.MPI`` module, or raise ImportError with the fix."""
    try:
        from mpi4py import MPI
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "comm= needs mpi4py; install it with `pip install cbp[mpi]`"
        ) from exc
    return MPI


def agree(comm, error):
    """Raise on every rank when any rank failed (``error`` is its exception).

    Collective: every rank must call it. Without it one rank raising
    during validation would leave the others blocked in the next
    collective call.
    """
    failed = comm.allgather(None if error is None else repr(error))
    if error is not None:
        raise error
    bad = [(rank, msg) for rank, msg in enumerate(failed) if msg is not None]
    if bad:
        rank, msg = bad[0]
        raise ValueError(f"rank {rank} of the communicator failed: {msg}")


def global_classes(comm, y):
    """The sorted union of the class labels of all ranks' ``y``."""
    labels = comm.allgather(np.unique(y))
    return np.unique(np.concatenate(labels))


def threads_per_rank(comm):
    """OpenMP threads for one rank: this node's cores / its ranks.

    Never more than OpenMP's default (``OMP_NUM_THREADS`` when set); a rank
    that ``mpiexec`` bound to some cores gets those cores.
    """
    MPI = mpi()
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        ranks_here = node.Get_size()
    finally:
        node.Free()
    n_cpus = os.cpu_count() or 1
    cores = n_cpus
    if hasattr(os, "sched_getaffinity"):
        cores = min(cores, len(os.sched_getaffinity(0)))
    share = cores if cores < n_cpus else cores // ranks_here
    return _core.thread_cap(max(1, min(_core.max_threads(), share)))


class DataParallelEpochs:
    """The ranks' shards and buffers for data-parallel epochs of one fit.

    Collective: every rank of ``comm`` constructs it with its own shard.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        The ranks that train together.
    X, Y : ndarray of shape (n_local, n_features), (n_local, n_outputs)
        This rank's shard (C-contiguous, the training dtype).
    sw : ndarray of shape (n_local,)
        Its sample weights.
    local_batch : int
        Rows per rank per batch; the global batch is ``K * local_batch``
        rows (at most the global number of rows).
    theta : ndarray
        The flat parameters; rank 0's are broadcast to all ranks.
    units : ndarray of intc
        Layer widths.
    n_threads : int
        OpenMP threads of this rank.
    """

    def __init__(self, comm, X, Y, sw, local_batch, theta, units, n_threads):
        MPI = mpi()
        self.comm = comm
        self.n_ranks = comm.Get_size()
        self.rank = comm.Get_rank()
        # the same network on every rank, or every rank raises
        shapes = comm.allgather(
            (X.shape[1], Y.shape[1], theta.shape[0], theta.dtype.str)
        )
        if any(shape != shapes[0] for shape in shapes):
            raise ValueError(
                "The ranks' shards disagree: (n_features, n_outputs, "
                f"n_params, dtype) per rank are {shapes}."
            )
        n_local = X.shape[0]
        counts = np.asarray(comm.allgather(n_local), dtype=np.intp)
        self.offset = int(counts[: self.rank].sum())
        self.n_samples = int(counts.sum())
        self.n_local = n_local
        self.data = _core.Input(X, Y, sw)
        dtype = theta.dtype
        # every rank knows every sample weight: batch weight sums are local
        self.sw_all = np.empty(self.n_samples, dtype=dtype)
        displs = np.concatenate([[0], np.cumsum(counts)[:-1]])
        comm.Allgatherv(sw, [self.sw_all, (counts, displs)])
        self.batch_size = int(min(self.n_ranks * local_batch, self.n_samples))
        self.n_threads = int(n_threads)
        # one flat buffer, allocated once: the gradient, then one flag
        # counting ranks whose batch loss was not finite
        self.buffer = np.empty(theta.shape[0] + 1, dtype=dtype)
        self.grad = self.buffer[:-1]
        self._in_place = MPI.IN_PLACE
        comm.Bcast(theta, root=0)

    def epoch(self, network, theta, order, alpha, dropout_row0):
        """Train one epoch of ``network`` (its optimizer set); same returns
        as :meth:`cbp._core.Network.epoch` but the rows trained on.

        ``order`` is the global order (None: no shuffle); rank 0's is used.
        Each global batch runs the batch step of a single-process epoch:
        :meth:`~cbp._core.Network.batch_grad` of this rank's rows of the
        batch (scaled by the whole batch's weight), the allreduce, and
        :meth:`~cbp._core.Network.step`. Dropout masks are keyed to each
        row's place in the global order, as a single process keys them.
        """
        comm = self.comm
        n, B, off = self.n_samples, self.batch_size, self.offset
        if order is not None:
            comm.Bcast(order, root=0)
        n_batches = -(-n // B)
        sw_sums = np.empty(n_batches, dtype=np.float64)
        _core.batch_weight_sums(self.sw_all, order, B, sw_sums)
        # this rank's rows of each batch, in the batch's order, and their
        # places in the global order
        glob = np.arange(n, dtype=np.intp) if order is None else order
        pos = np.flatnonzero((glob >= off) & (glob < off + self.n_local))
        local_rows = np.ascontiguousarray(glob[pos] - off, dtype=np.intp)
        pos = np.ascontiguousarray(pos, dtype=np.intp)
        edges = np.minimum(np.arange(n_batches + 1, dtype=np.intp) * B, n)
        bounds = np.searchsorted(pos, edges)

        grad, buffer, data = self.grad, self.buffer, self.data
        in_place = self._in_place
        sum_data = sum_penalty = 0.0
        status = _core.STATUS_OK
        for j in range(n_batches):
            sw_sum = sw_sums[j]
            if sw_sum <= 0:
                continue  # weightless batches carry no gradient (all ranks)
            b0, b1 = bounds[j], bounds[j + 1]
            data_sum = network.batch_grad(
                theta, grad, data, local_rows[b0:b1], 1.0 / sw_sum,
                positions=pos[b0:b1], dropout_row0=dropout_row0,
            )
            buffer[-1] = 0.0 if math.isfinite(data_sum) else 1.0
            comm.Allreduce(in_place, buffer)
            if buffer[-1] != 0:
                status = _core.STATUS_NONFINITE_LOSS
                break
            sq = network.step(theta, grad, alpha / sw_sum)
            nb = edges[j + 1] - edges[j]
            sum_data += data_sum / sw_sum * nb
            sum_penalty += 0.5 * alpha * sq / sw_sum * nb
        # one reduction per epoch for the loss; rank 0's parameters and
        # totals are broadcast so that rounding in the reductions can never
        # make the ranks' weights or stopping decisions drift apart
        data_total = np.array([sum_data], dtype=np.float64)
        if self.rank == 0:
            comm.Reduce(in_place, data_total, root=0)
        else:
            comm.Reduce(data_total, None, root=0)
        totals = np.array([data_total[0], sum_penalty], dtype=np.float64)
        comm.Bcast(totals, root=0)
        comm.Bcast(theta, root=0)
        return float(totals[0]), float(totals[1]), status
