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
``offset_k = n_0 + ... + n_{k-1}``. (With ``early_stopping`` the global
training set is the single-process ``X_train`` of :func:`split`; each rank
passes the places of its training rows in it.) Each epoch draws one permutation of
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
import signal
import threading

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


def gather_all(comm, local):
    """The ranks' 1-D arrays concatenated in rank order, on every rank."""
    local = np.ascontiguousarray(local)
    counts = np.asarray(comm.allgather(local.shape[0]), dtype=np.intp)
    displs = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.intp)
    out = np.empty(int(counts.sum()), dtype=local.dtype)
    comm.Allgatherv(local, [out, (counts, displs)])
    return out


def sum_to_all(comm, buffer):
    """Sum ``buffer`` over the ranks in place: the same bits on every rank.

    Reduced to rank 0 and broadcast rather than allreduced: MPI does not
    promise that an allreduce gives every rank the same rounding, and the
    ranks' decisions (stopping, L-BFGS-B's steps) must agree.
    """
    MPI = mpi()
    if comm.Get_rank() == 0:
        comm.Reduce(MPI.IN_PLACE, buffer, root=0)
    else:
        comm.Reduce(buffer, None, root=0)
    comm.Bcast(buffer, root=0)
    return buffer


def weight_sum(comm, sw):
    """The sum of all ranks' sample weights, as one process adds them.

    The weights of the shards concatenated in rank order are added in
    order in double precision, as the core's
    :meth:`~cbp._core.Network.loss_grad` adds the weights of its rows: the
    bits of a single process's sum over the concatenated shards.
    """
    sw_all = gather_all(comm, sw)
    if sw_all.shape[0] == 0:
        return 0.0
    # add.accumulate adds in order (np.sum adds pairwise)
    return float(np.cumsum(sw_all, dtype=np.float64)[-1])


def bcast_from_root(comm, func):
    """``func()`` on rank 0, its result on every rank; an exception it
    raises is raised on every rank."""
    result = error = None
    if comm.Get_rank() == 0:
        try:
            result = func()
        except Exception as exc:  # re-raised on every rank below
            error = exc
    result, error = comm.bcast((result, error), root=0)
    if error is not None:
        raise error
    return result


def split(comm, n_local, stratify, split_func):
    """Training and validation rows of every rank, as one process splits.

    ``split_func(ids, stratify_all)`` splits the global row ids
    ``0 ... n - 1`` (the shards of ``n_local`` rows concatenated in rank
    order) as a single process splits its rows, ``stratify_all`` being the
    ranks' ``stratify`` labels concatenated (None when ``stratify`` is);
    it runs on rank 0 and its split is broadcast (with
    ``random_state=None`` the ranks would draw different ones).

    Returns
    -------
    train_rows, val_rows : ndarray of intp
        This rank's local rows of the training and the validation set, in
        the order of the global sets.
    train_pos, val_pos : ndarray of intp
        The place of each of them in the global set.
    n_val : int
        The size of the global validation set.
    """
    counts = comm.allgather(n_local)
    offset = sum(counts[: comm.Get_rank()])
    labels = None if stratify is None else comm.gather(stratify, root=0)

    def draw():
        ids = np.arange(sum(counts), dtype=np.intp)
        return split_func(ids, None if labels is None else np.concatenate(labels))

    ids_train, ids_val = bcast_from_root(comm, draw)
    ids_train = np.asarray(ids_train, dtype=np.intp)
    ids_val = np.asarray(ids_val, dtype=np.intp)
    mine = (ids_train >= offset) & (ids_train < offset + n_local)
    train_pos = np.flatnonzero(mine).astype(np.intp)
    train_rows = ids_train[train_pos] - offset
    val_pos = np.flatnonzero(
        (ids_val >= offset) & (ids_val < offset + n_local)
    ).astype(np.intp)
    val_rows = ids_val[val_pos] - offset
    return train_rows, val_rows, train_pos, val_pos, ids_val.shape[0]


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
    data : cbp._core.Input
        This rank's shard (X dense or CSR, Y and the sample weights, the
        training dtype).
    local_batch : int
        Rows per rank per batch; the global batch is ``K * local_batch``
        rows (at most the global number of rows).
    theta : ndarray
        The flat parameters; rank 0's are broadcast to all ranks.
    n_threads : int
        OpenMP threads of this rank.
    positions : ndarray of intp of shape (n_local,), default=None
        The place of each local row in the global data set; None: the
        shards concatenated in rank order (``offset + arange(n_local)``).
        Every rank passes None, or every rank its positions.
    """

    def __init__(self, comm, data, local_batch, theta, n_threads, positions=None):
        MPI = mpi()
        self.comm = comm
        self.n_ranks = comm.Get_size()
        self.rank = comm.Get_rank()
        # the same network on every rank, or every rank raises
        shapes = comm.allgather(
            (data.n_features, data.Y.shape[1], theta.shape[0], theta.dtype.str)
        )
        if any(shape != shapes[0] for shape in shapes):
            raise ValueError(
                "The ranks' shards disagree: (n_features, n_outputs, "
                f"n_params, dtype) per rank are {shapes}."
            )
        n_local = data.n_samples
        counts = np.asarray(comm.allgather(n_local), dtype=np.intp)
        self.n_samples = int(counts.sum())
        self.n_local = n_local
        self.data = data
        if positions is None:
            offset = int(counts[: self.rank].sum())
            positions = np.arange(offset, offset + n_local, dtype=np.intp)
        # local_row[g]: this rank's row at global place g, or -1
        self.local_row = np.full(self.n_samples, -1, dtype=np.intp)
        self.local_row[positions] = np.arange(n_local, dtype=np.intp)
        # every rank knows every sample weight: batch weight sums are local
        self.sw_all = np.empty(self.n_samples, dtype=theta.dtype)
        self.sw_all[gather_all(comm, positions)] = gather_all(
            comm, data.sample_weight
        )
        self.batch_size = int(min(self.n_ranks * local_batch, self.n_samples))
        self.n_threads = int(n_threads)
        # one flat buffer, allocated once: the gradient, then two flags
        # counting the ranks whose batch loss was not finite and the ranks
        # that noted Ctrl-C
        self.buffer = np.empty(theta.shape[0] + 2, dtype=theta.dtype)
        self.grad = self.buffer[:-2]
        self._in_place = MPI.IN_PLACE
        # entered by the caller around all the epochs: a Ctrl-C noted
        # between or after batches waits for the next exchange
        self.interrupt = DeferredInterrupt()
        comm.Bcast(theta, root=0)

    def raise_if_interrupted(self):
        """Collective, after the last epoch: KeyboardInterrupt on every rank
        when any rank noted a Ctrl-C that no epoch exchanged."""
        noted = self.comm.allreduce(int(self.interrupt.pending))
        self.interrupt.pending = False
        if noted > 0:
            raise KeyboardInterrupt

    def epoch(self, network, theta, order, alpha, dropout_row0):
        """Train one epoch of ``network`` (its optimizer set); same returns
        as :meth:`cbp._core.Network.epoch` but the rows trained on.

        ``order`` is the global order (None: no shuffle); rank 0's is used.
        Each global batch runs the batch step of a single-process epoch:
        :meth:`~cbp._core.Network.batch_grad` of this rank's rows of the
        batch (scaled by the whole batch's weight), the allreduce, and
        :meth:`~cbp._core.Network.step`. Dropout masks are keyed to each
        row's place in the global order, as a single process keys them.

        Ctrl-C on any rank, noted by ``self.interrupt`` (entered by the
        caller around the epochs), is exchanged with each batch's gradient:
        every rank finishes that batch, as a single process finishes the
        batch it is in, and raises KeyboardInterrupt at the end of the
        epoch's exchanges, with the same weights.
        """
        comm = self.comm
        n, B = self.n_samples, self.batch_size
        if order is not None:
            comm.Bcast(order, root=0)
        n_batches = -(-n // B)
        sw_sums = np.empty(n_batches, dtype=np.float64)
        _core.batch_weight_sums(self.sw_all, order, B, sw_sums)
        # this rank's rows of each batch, in the batch's order, and their
        # places in the global order
        rows = self.local_row if order is None else self.local_row[order]
        pos = np.flatnonzero(rows >= 0).astype(np.intp)
        local_rows = np.ascontiguousarray(rows[pos])
        edges = np.minimum(np.arange(n_batches + 1, dtype=np.intp) * B, n)
        bounds = np.searchsorted(pos, edges)

        grad, buffer, data = self.grad, self.buffer, self.data
        in_place = self._in_place
        sum_data = sum_penalty = 0.0
        status = _core.STATUS_OK
        interrupted = False
        interrupt = self.interrupt
        for j in range(n_batches):
            sw_sum = sw_sums[j]
            if sw_sum <= 0:
                continue  # weightless batches carry no gradient (all ranks)
            b0, b1 = bounds[j], bounds[j + 1]
            data_sum = network.batch_grad(
                theta, grad, data, local_rows[b0:b1], 1.0 / sw_sum,
                positions=pos[b0:b1], dropout_row0=dropout_row0,
            )
            buffer[-2] = 0.0 if math.isfinite(data_sum) else 1.0
            buffer[-1] = 1.0 if interrupt.pending else 0.0
            comm.Allreduce(in_place, buffer)
            if buffer[-2] != 0:
                status = _core.STATUS_NONFINITE_LOSS
                break
            sq = network.step(theta, grad, alpha / sw_sum)
            nb = edges[j + 1] - edges[j]
            sum_data += data_sum / sw_sum * nb
            sum_penalty += 0.5 * alpha * sq / sw_sum * nb
            if buffer[-1] != 0:
                interrupted = True
                break
        # one reduction per epoch for the loss (and whether a rank noted
        # Ctrl-C after its last batch; one noted after this stays pending
        # for the next exchange); rank 0's parameters and totals are
        # broadcast so that rounding in the reductions can never make the
        # ranks' weights or stopping decisions drift apart
        late = 1.0 if interrupt.pending and not interrupted else 0.0
        interrupt.pending = False
        data_total = np.array([sum_data, late], dtype=np.float64)
        if self.rank == 0:
            comm.Reduce(in_place, data_total, root=0)
        else:
            comm.Reduce(data_total, None, root=0)
        totals = np.array([data_total[0], sum_penalty, data_total[1]],
                          dtype=np.float64)
        comm.Bcast(totals, root=0)
        comm.Bcast(theta, root=0)
        if interrupted or totals[2] > 0:
            raise KeyboardInterrupt
        return float(totals[0]), float(totals[1]), status


class FullBatch:
    """The full-batch loss (and gradient) of the rows of all ranks.

    Collective: every rank constructs it with its rows (none is allowed)
    and calls it at the same points. Each rank's
    :meth:`~cbp._core.Network.loss_grad` divides by the weight sum of all
    ranks (:func:`weight_sum`) and only the first rank that holds rows adds
    the L2 term, so the sums over the ranks (:func:`sum_to_all`) are the
    single-process loss and gradient of the concatenated rows, to the
    rounding of the additions, with the same bits on every rank.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
    network : cbp._core.Network
    data : cbp._core.Input
        This rank's rows.
    alpha : float
        The L2 penalty of the objective.
    block_rows : int
        Rows per block of the core's call.
    interrupt : DeferredInterrupt, default=None
        Its Ctrl-C, noted on any rank, is raised as KeyboardInterrupt on
        every rank by the same call.
    """

    def __init__(self, comm, network, data, alpha, block_rows, interrupt=None):
        self.comm = comm
        self.network = network
        self.data = data
        self.block_rows = block_rows
        self.interrupt = interrupt
        self.sw_sum = weight_sum(comm, data.sample_weight)
        has_rows = comm.allgather(data.n_samples > 0)
        first = has_rows.index(True) if True in has_rows else 0
        self.alpha = float(alpha) if comm.Get_rank() == first else 0.0
        # data loss, penalty, ranks interrupted
        self.totals = np.zeros(3, dtype=np.float64)
        self._grad = None

    def __call__(self, theta, grad=None):
        """``(data_loss, penalty)`` at ``theta``; the gradient into ``grad``
        (None: not needed). NaN for rows whose weights all are 0."""
        if grad is None:
            if self._grad is None:
                self._grad = np.empty_like(theta)
            grad_out = self._grad
        else:
            grad_out = grad
        totals = self.totals
        totals[:] = 0.0
        if self.sw_sum > 0 and self.data.n_samples > 0:
            totals[:2] = self.network.loss_grad(
                theta, grad_out, self.data, self.alpha, self.block_rows,
                sw_sum=self.sw_sum,
            )
        else:
            grad_out[:] = 0
        if self.interrupt is not None and self.interrupt.pending:
            self.interrupt.pending = False
            totals[2] = 1.0
        sum_to_all(self.comm, totals)
        if grad is not None:
            sum_to_all(self.comm, grad)
        if totals[2] > 0:
            raise KeyboardInterrupt
        if not self.sw_sum > 0:
            return np.nan, np.nan
        return float(totals[0]), float(totals[1])


class ValidationScore:
    """Early stopping's validation score over all ranks' held-out rows.

    Collective: every rank constructs it with its held-out rows (possibly
    none) and calls it once per epoch. Rank 0 gathers the predictions,
    puts them in the order of the global validation set and scores them
    with ``score(y, y_pred, sample_weight)`` as a single process scores
    its validation set (the same bits, float32 sums included); the score
    is broadcast. The targets and weights, fixed during a fit, are
    gathered once.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
    y : ndarray of shape (n_local,) or (n_local, n_outputs)
        This rank's held-out targets.
    sample_weight : ndarray of shape (n_local,) or None
    positions : ndarray of intp of shape (n_local,)
        The place of each row in the global validation set.
    score : callable
        ``score(y_true, y_pred, sample_weight) -> float``.
    """

    def __init__(self, comm, y, sample_weight, positions, score):
        self.comm = comm
        self.score = score
        # this rank's empty prediction, of the labels' dtype and shape
        self.empty = y[:0]
        parts = comm.gather((positions, y, sample_weight), root=0)
        if comm.Get_rank() == 0:
            pos = np.concatenate([p[0] for p in parts])
            self.order = np.argsort(pos, kind="stable")
            self.y = np.concatenate([p[1] for p in parts])[self.order]
            self.sw = None
            if sample_weight is not None:
                self.sw = np.concatenate([p[2] for p in parts])[self.order]

    def __call__(self, y_pred):
        """The score with this rank's predictions ``y_pred`` (None when it
        holds no held-out rows), on every rank."""
        preds = self.comm.gather(self.empty if y_pred is None else y_pred, root=0)

        def compute():
            return self.score(self.y, np.concatenate(preds)[self.order], self.sw)

        return bcast_from_root(self.comm, compute)


class DeferredInterrupt:
    """Context manager: Ctrl-C (SIGINT) sets ``pending`` instead of raising.

    A rank interrupted inside a collective call would leave the others
    waiting: the interrupt is noted and acted on by every rank at the next
    point where they exchange it (each evaluation of :class:`FullBatch`,
    each batch of :meth:`DataParallelEpochs.epoch`). Signal handlers can
    only be set in the main thread; elsewhere Ctrl-C is left as it is.
    """

    pending = False

    def __enter__(self):
        self.pending = False
        self._installed = threading.current_thread() is threading.main_thread()
        if self._installed:
            self._previous = signal.signal(signal.SIGINT, self._note)
        return self

    def _note(self, signum, frame):
        self.pending = True

    def __exit__(self, *exc):
        if self._installed:
            # None: the handler was not set from Python
            previous = signal.SIG_DFL if self._previous is None else self._previous
            signal.signal(signal.SIGINT, previous)
        return False
