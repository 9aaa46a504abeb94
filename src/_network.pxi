"""The network of one fit: :class:`Network` and its rows, :class:`Input`.

Included by ``_core.pyx`` (Python-visible classes must be compiled in the
module that Python imports, so this file is textually part of it, not a
cimported ``.pxd``): the entry points whose methods Python calls, over the
kernels of the ``.pxd`` files that ``_core.pyx`` cimports.
"""

cdef class Input:
    """Rows of X, with Y and sample weights for training, as the core
    reads them.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features), or tuple
        C-contiguous float32 or float64, or a sparse X as ``(data, indices,
        indptr, n_features)`` (CSR; indices and indptr of intp, data of the
        network's dtype).
    Y : ndarray of shape (n_samples, n_outputs), default=None
        C-contiguous, X's dtype; None for prediction.
    sample_weight : ndarray of shape (n_samples,), default=None
        C-contiguous, X's dtype; given with Y.
    """
    cdef CSR csr
    cdef readonly bint sparse
    cdef readonly Py_ssize_t n_samples
    cdef readonly Py_ssize_t n_features
    cdef readonly Py_ssize_t row_stride   # values between rows; 0: sparse
    cdef readonly object values
    cdef readonly object Y
    cdef readonly object sample_weight
    cdef object _csr_arrays   # what the CSR struct points into

    def __init__(self, X, Y=None, sample_weight=None):
        cdef bint dense = not isinstance(X, tuple)
        self.sparse = _csr_init(&self.csr, None if dense else X, dense)
        if self.sparse:
            self._csr_arrays = X
            self.values = X[0]
            self.n_samples = self.csr.n_rows
            self.n_features = self.csr.n_cols
            self.row_stride = 0
        else:
            if not isinstance(X, np.ndarray) or X.ndim != 2 \
                    or not X.flags.c_contiguous:
                raise ValueError(
                    "X must be a C-contiguous 2-D numpy array or a CSR tuple "
                    f"(data, indices, indptr, n_features), got {type(X).__name__}")
            # one flat view: its pointer is X's row 0 even with no column
            self.values = X.reshape(-1)
            self.n_samples = X.shape[0]
            self.n_features = X.shape[1]
            self.row_stride = X.shape[1]
        if (Y is None) != (sample_weight is None):
            raise ValueError("Y and sample_weight go together")
        if Y is not None and (Y.ndim != 2 or Y.shape[0] != self.n_samples
                              or sample_weight.shape[0] != self.n_samples):
            raise ValueError("X, Y and sample_weight differ in length")
        self.Y = Y
        self.sample_weight = sample_weight


cdef class Network:
    """The network of one fit: its shape, codes, options and workspaces.

    Built once per fit; its methods are the core's entry points: an
    :meth:`epoch` of mini-batch training; one batch's gradient
    (:meth:`batch_grad`) and optimizer step (:meth:`step`), the batch step
    that an epoch runs per batch and data-parallel training runs with an
    allreduce between the two; the full-batch loss and gradient
    (:meth:`loss_grad`: lbfgs, gradient checking); and :meth:`predict`.
    The parameters ``theta`` (flat, see :func:`param_offsets`) and the
    data (:class:`Input`) are passed to each call. Every call runs without
    the GIL on ``n_threads`` OpenMP threads (call BLAS single-threaded)
    and gives the same bits for the same thread count. One object serves
    one thread at a time (its workspaces are shared by its calls).

    Parameters
    ----------
    units : sequence of int
        Layer widths, input first.
    activation : int
        The hidden activation's code (``HIDDEN_ACTIVATIONS``).
    output : int
        The output's code (``OUTPUT_ACTIVATIONS`` or ``REGRESSION_LOSSES``).
    dtype : float32 or float64
        The dtype of theta and of the data.
    activation_param : float, default=0.0
        leaky_relu's slope.
    loss_param : float, default=1.0
        Huber's threshold.
    n_threads : int, default=1
        OpenMP threads, capped by :func:`thread_cap`.
    """
    cdef Net net
    cdef Optim opt
    cdef readonly object units
    cdef readonly object offsets
    cdef readonly Py_ssize_t n_params
    cdef readonly object dtype
    cdef readonly bint has_optimizer
    cdef object _dropout
    cdef object _state_1
    cdef object _state_2
    cdef object _step
    cdef object _work
    cdef object _grad
    cdef object _sq
    cdef Py_ssize_t _n_blocks   # weight-row blocks (see params_step)

    def __init__(self, units, int activation, int output, dtype, *,
                 double activation_param=0.0, double loss_param=1.0,
                 int n_threads=1):
        self.units = np.array(units, dtype=np.intc)
        if self.units.ndim != 1 or self.units.shape[0] < 2:
            raise ValueError("a network needs at least one weight layer")
        self.offsets, self.n_params = param_offsets(
            self.units, activation == ACT_PRELU)
        self.dtype = np.dtype(dtype)
        if self.dtype != np.float32 and self.dtype != np.float64:
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        self.net = _make_net(self.units, self.offsets, self.n_params,
                             activation, output, n_threads, activation_param,
                             loss_param)
        self.net.drop_pos = NULL
        self._n_blocks = _n_row_blocks(&self.net)
        self._sq = np.zeros(max(1, self._n_blocks), dtype=np.float64)
        self._work = np.empty(0, dtype=self.dtype)
        self._grad = None
        self.has_optimizer = False

    @property
    def n_threads(self):
        """The OpenMP threads of every call (after the cap)."""
        return self.net.n_threads

    @property
    def prelu(self):
        """Whether theta ends with learned PReLU slopes."""
        return self.net.slope_offset >= 0

    def set_dropout(self, rates, uint64_t seed):
        """Drop hidden units at training; ``rates`` None turns it off.

        ``rates``: float64, one per hidden layer, in [0, 1); inverted
        scaling. The masks are keyed by ``seed`` and each row's counter
        (the ``dropout_row0`` of the training calls plus the row's place),
        so they do not depend on the thread count (see :func:`dropout_keep`).
        """
        self.net.dropout = NULL
        self._dropout = None
        if rates is not None:
            self._dropout = np.ascontiguousarray(rates, dtype=np.float64)
            _set_dropout(&self.net, self._dropout, seed, 0)

    def set_optimizer(self, int solver, state_1, state_2, step, *,
                      double learning_rate, double momentum=0.9,
                      bint nesterov=True, double beta_1=0.9,
                      double beta_2=0.999, double epsilon=1e-8,
                      double rho=0.9, double weight_decay=0.0):
        """The optimizer of :meth:`epoch` and :meth:`step`, and its state.

        ``state_1``/``state_2`` (like theta) are the velocity (sgd), the
        moments m and v (adam; ``state_2`` unused otherwise) or the mean
        square (rmsprop, decay ``rho``); ``step`` (intp, one counter)
        counts Adam's updates. They are the caller's arrays, updated in
        place, so that training goes on from them (partial_fit, pickling).
        ``weight_decay`` > 0 adds decoupled weight decay on the weights
        (not biases or slopes), ``theta -= learning_rate * weight_decay *
        theta`` in the same pass (AdamW with adam).
        """
        if solver not in (SOLVER_SGD, SOLVER_ADAM, SOLVER_RMSPROP):
            raise ValueError(f"unknown solver code {solver}")
        if not (0 <= rho < 1):
            raise ValueError(f"rho must be in [0, 1), got {rho}")
        if not (weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        for name, state in (("state_1", state_1), ("state_2", state_2)):
            if name == "state_2" and solver != SOLVER_ADAM:
                continue
            if state.dtype != self.dtype or state.shape != (self.n_params,):
                raise ValueError(
                    f"{name} must be a {self.dtype} array of {self.n_params} "
                    "entries, like theta")
        if step.dtype != np.intp or step.shape[0] < 1:
            raise ValueError("step must be an intp array holding one counter")
        _optim_init(&self.opt, solver, learning_rate, momentum, nesterov,
                    beta_1, beta_2, epsilon, rho, weight_decay)
        self._state_1 = state_1
        self._state_2 = state_2 if solver == SOLVER_ADAM else state_1
        self._step = step
        self.has_optimizer = True

    @property
    def learning_rate(self):
        """The optimizer's learning rate (schedules change it between epochs)."""
        return self.opt.learning_rate

    @learning_rate.setter
    def learning_rate(self, double value):
        self.opt.learning_rate = value

    cdef object _workspace(self, Py_ssize_t rows, bint sparse):
        """The training workspace for ``rows`` rows, grown when too small."""
        cdef Py_ssize_t size = train_workspace_size(
            self.units, rows, self.net.slope_offset >= 0, sparse)
        if self._work.shape[0] < size:
            self._work = np.empty(size, dtype=self.dtype)
        return self._work

    cdef object _grad_buffer(self):
        if self._grad is None:
            self._grad = np.empty(self.n_params, dtype=self.dtype)
        return self._grad

    cdef int _check(self, Py_ssize_t n_params, bint is_double, Input data,
                    bint training) except -1:
        if is_double != (self.dtype == np.float64) or n_params != self.n_params:
            raise ValueError(
                f"theta must be a {self.dtype} array of {self.n_params} entries")
        if data.values.dtype != self.dtype:
            raise ValueError(f"X must be of dtype {self.dtype}")
        if data.n_features != self.net.units[0]:
            raise ValueError(
                f"X has {data.n_features} features, the network takes "
                f"{self.net.units[0]}")
        if training:
            if data.Y is None:
                raise ValueError("training needs Y and sample_weight")
            if (data.Y.dtype != self.dtype
                    or data.sample_weight.dtype != self.dtype):
                raise ValueError(
                    f"Y and sample_weight must be of dtype {self.dtype}")
            if data.Y.shape[1] != self.net.units[self.net.n_layers]:
                raise ValueError(
                    f"Y has {data.Y.shape[1]} columns, the network has "
                    f"{self.net.units[self.net.n_layers]} outputs")
        return 0

    def epoch(self, floating[::1] theta, Input data, order,
              Py_ssize_t batch_size, double alpha, uint64_t dropout_row0=0,
              theta_start=None):
        """One epoch of mini-batch training, theta updated in place.

        Batches are consecutive runs of ``batch_size`` entries of ``order``
        (or of the rows, when ``order`` is None). Each runs the batch step:
        :meth:`batch_grad` of its rows scaled by ``1 / sw_sum`` (the
        batch's total weight), then :meth:`step` with ``l2 = alpha /
        sw_sum``; batches of zero weight carry no gradient and are skipped.
        The dropout masks of the epoch's i-th row are those of row counter
        ``dropout_row0 + i``. Pending signals (Ctrl-C) are checked between
        batches: the exception is raised with theta as it was after the
        last whole step. ``theta_start`` (like theta, or None) receives
        theta as it was before the epoch.

        Returns
        -------
        sum_data, sum_penalty : float
            Sums over batches of the batch's data loss and penalty (as
            :meth:`loss_grad` defines them) times the batch's rows.
        n_rows : int
            Rows trained on (fewer than all when stopped early).
        status : int
            STATUS_OK, or flags or-ed together: STATUS_NONFINITE_LOSS when
            a batch's loss was not finite (that batch's update is then not
            applied, nor any later batch's), STATUS_NONFINITE_PARAMS when
            theta holds a NaN or an infinity at the end.
        """
        cdef Py_ssize_t n = data.n_samples
        cdef Py_ssize_t n_total = n if order is None else order.shape[0]
        cdef Py_ssize_t rows = min(batch_size, n)
        cdef const Py_ssize_t[::1] order_mv
        cdef floating[::1] start_mv
        cdef const floating[::1] X_values
        cdef const floating[:, ::1] Y
        cdef const floating[::1] sw
        cdef floating[::1] work
        cdef floating[::1] grad
        cdef floating[::1] s1
        cdef floating[::1] s2
        cdef Py_ssize_t[::1] step
        cdef double[::1] sq = self._sq
        cdef double[::1] shared = np.zeros(5, dtype=np.float64)
        cdef Py_ssize_t[::1] pool = np.zeros(4, dtype=np.intp)
        cdef Py_ssize_t[::1] claims = np.zeros(2, dtype=np.intp)
        cdef cbp_bar bar
        cdef CSR csr = data.csr
        cdef EpochArgs a
        cdef Areas w
        cdef Team team
        cdef Py_ssize_t i
        cdef int tid, status
        cdef int nt = self.net.n_threads
        if not self.has_optimizer:
            raise ValueError("set_optimizer must be called before epoch")
        self._check(theta.shape[0], sizeof(floating) == 8, data, True)
        if n < 1:
            raise ValueError("an epoch needs at least one sample")
        _check_rows(rows)
        if order is not None:
            order_mv = order
            for i in range(n_total):
                if order_mv[i] < 0 or order_mv[i] >= n:
                    raise ValueError("order holds an index out of range")
        if theta_start is not None:
            start_mv = theta_start
            if start_mv.shape[0] != theta.shape[0]:
                raise ValueError("theta_start must match theta in size")
            memcpy(&start_mv[0], &theta[0], theta.shape[0] * sizeof(floating))
        if n_total == 0:
            return 0.0, 0.0, 0, STATUS_OK
        Y = data.Y
        sw = data.sample_weight
        grad = self._grad_buffer()
        s1 = self._state_1
        s2 = self._state_2
        step = self._step
        work = self._workspace(rows, data.sparse)
        X_values = data.values
        a.X = &X_values[0] if X_values.shape[0] > 0 else NULL
        a.xs = data.row_stride
        a.Y = &Y[0, 0]
        a.k = Y.shape[1]
        a.sw = &sw[0]
        a.n_total = n_total
        a.order = &order_mv[0] if order is not None and n_total > 0 else NULL
        csr.rowmap = a.order
        a.csr = &csr if data.sparse else NULL
        a.alpha = alpha
        a.sq = &sq[0]
        a.n_blocks = self._n_blocks
        a.step = &step[0]
        a.shared = &shared[0]
        a.pool = &pool[0]
        a.claims = &claims[0]
        cbp_bar_init(&bar, nt)
        a.bar = &bar
        self.net.drop_row0 = dropout_row0
        self.net.drop_pos = NULL
        w = _areas(&self.net, &work[0], rows, a.xs, a.k)
        _team_begin(&team)
        with nogil, parallel(num_threads=nt):
            tid = threadid()
            # a short team (OMP_DYNAMIC, a limit) computes nothing: raised
            if cbp_full_team(nt, &team.short_team):
                warm_gemm(&theta[0])
                _epoch_thread(&self.net, &self.opt, &a, &w, &theta[0],
                              &grad[0], &s1[0], &s2[0], tid, nt)
        _team_end(&team, nt)
        if shared[4] != 0:
            _raise_pending()
        status = <int>shared[3]
        if not _all_finite(&theta[0], theta.shape[0]):
            status |= _STATUS_NONFINITE_PARAMS
        return shared[0], shared[1], <Py_ssize_t>shared[2], status

    def batch_grad(self, const floating[::1] theta, floating[::1] grad,
                   Input data, const Py_ssize_t[::1] index, double scale,
                   positions=None, uint64_t dropout_row0=0):
        """Phase 1 and 2 of the batch step for the rows ``index`` of data.

        ``grad = scale * sum_i sw_i * d loss_i / d theta`` over the rows
        (no L2 term: :meth:`step` adds it). ``scale = 1 / sw_sum`` of the
        batch gives its mean gradient; in data-parallel training each rank
        passes ``1 / sw_sum`` of the whole (global) batch, so that the
        ranks' gradients add up to the global batch's. The dropout masks
        of row i are those of counter ``dropout_row0 + positions[i]``
        (intp; default: i), the row's place in the global epoch.

        Returns
        -------
        data_sum : float
            ``sum_i sw_i * loss_i`` over the rows (not scaled).
        """
        cdef Py_ssize_t n = data.n_samples
        cdef Py_ssize_t nb = index.shape[0]
        cdef const floating[::1] X_values
        cdef const floating[:, ::1] Y
        cdef const floating[::1] sw
        cdef const Py_ssize_t[::1] pos_mv
        cdef floating[::1] work
        cdef CSR csr = data.csr
        cdef const CSR* csr_p
        cdef const floating* X_p
        cdef const floating* X_rows
        cdef Areas w
        cdef Team team
        cdef cbp_bar bar
        cdef Py_ssize_t claims[2]
        cdef Py_ssize_t* cl = claims
        cdef Py_ssize_t i, xs, k, r0, r1, s
        cdef int tid
        cdef int nt = self.net.n_threads
        cdef double data_sum = 0
        self._check(theta.shape[0], sizeof(floating) == 8, data, True)
        if grad.shape[0] != theta.shape[0]:
            raise ValueError("grad and theta differ in size")
        for i in range(nb):
            if index[i] < 0 or index[i] >= n:
                raise ValueError("index holds a row out of range")
        if positions is not None:
            pos_mv = positions
            if pos_mv.shape[0] != nb:
                raise ValueError("positions must hold one entry per row")
        if nb == 0:
            grad[:] = 0
            return 0.0
        _check_rows(nb)
        Y = data.Y
        sw = data.sample_weight
        X_values = data.values
        X_p = &X_values[0] if X_values.shape[0] > 0 else NULL
        xs = data.row_stride
        k = Y.shape[1]
        csr.rowmap = &index[0]
        csr_p = &csr if data.sparse else NULL
        work = self._workspace(nb, data.sparse)
        w = _areas(&self.net, &work[0], nb, xs, k)
        # the gathered rows; a sparse X is read in place through the index
        X_rows = X_p if data.sparse else <const floating*>w.Xb
        # pos_mv keeps positions alive while the core reads drop_pos
        self.net.drop_row0 = dropout_row0
        self.net.drop_pos = &pos_mv[0] if positions is not None else NULL
        # each phase's nt shares taken first come, first served, with a
        # barrier that sleeps after a short spin, as in epoch
        cl[0] = 0
        cl[1] = 0
        cbp_bar_init(&bar, nt)
        _team_begin(&team)
        with nogil, parallel(num_threads=nt):
            tid = threadid()
            if cbp_full_team(nt, &team.short_team):
                warm_gemm(&theta[0])
                s = cbp_claim(&cl[0], nt)
                while s >= 0:
                    r0 = _part_q(nb, <int>s, nt)
                    r1 = _part_q(nb, <int>s + 1, nt)
                    _gather_rows(&index[0], r0, r1, X_p, &Y[0, 0], &sw[0], xs,
                                 k, <floating*>w.Xb, <floating*>w.Yb,
                                 <floating*>w.swb)
                    _batch_rows(&self.net, &theta[0], X_rows, <floating*>w.Yb,
                                <floating*>w.swb, nb, 0, csr_p, &w, <int>s, nt)
                    s = cbp_claim(&cl[0], nt)
                cbp_bar_wait(&bar)
                s = cbp_claim(&cl[1], nt)
                while s >= 0:
                    _batch_grad(&self.net, &grad[0], X_rows, nb, 0, csr_p, &w,
                                <floating>scale, False, <int>s, nt)
                    s = cbp_claim(&cl[1], nt)
        self.net.drop_pos = NULL
        _team_end(&team, nt)
        for i in range(nb):
            data_sum += w.rowloss[i]
        return data_sum

    def step(self, floating[::1] theta, const floating[::1] grad, double l2):
        """The batch step's update: one optimizer step in place.

        Each parameter segment gets ``g = grad + l2 * W`` (weights only:
        ``l2 = alpha / sw_sum`` as in :meth:`epoch`) and the optimizer's
        step; Adam's counter is advanced.

        Returns
        -------
        sq : float
            ``sum(W**2)`` over all weights before the step, so that the
            batch's penalty is ``0.5 * alpha * sq / sw_sum``.
        """
        cdef floating[::1] s1
        cdef floating[::1] s2
        cdef Py_ssize_t[::1] step
        cdef double[::1] sq = self._sq
        cdef Team team
        cdef int tid
        cdef int nt = self.net.n_threads
        cdef Py_ssize_t t
        if not self.has_optimizer:
            raise ValueError("set_optimizer must be called before step")
        if theta.shape[0] != self.n_params or grad.shape[0] != self.n_params:
            raise ValueError(f"theta and grad must hold {self.n_params} entries")
        if (sizeof(floating) == 8) != (self.dtype == np.float64):
            raise ValueError(f"theta must be of dtype {self.dtype}")
        s1 = self._state_1
        s2 = self._state_2
        step = self._step
        if self.opt.solver == SOLVER_ADAM:
            step[0] += 1
        t = step[0]
        _team_begin(&team)
        with nogil, parallel(num_threads=nt):
            tid = threadid()
            if cbp_full_team(nt, &team.short_team):
                _batch_update(&self.net, &self.opt, &theta[0], &grad[0],
                              &s1[0], &s2[0], t, l2, &sq[0], tid, nt)
        _team_end(&team, nt)
        return _sum_blocks(&sq[0], self._n_blocks)

    def loss_grad(self, floating[::1] theta, floating[::1] grad, Input data,
                  double alpha, Py_ssize_t block_rows,
                  uint64_t dropout_row0=0, sw_sum=None):
        """Full-batch loss and gradient: the objective lbfgs minimises.

        The rows are processed in blocks of ``block_rows``, the gradient
        accumulated over blocks. With dropout on, the loss and gradient of
        the network thinned by the masks of rows ``dropout_row0``...

        ``sw_sum`` (default: the sum of the rows' weights) is the weight
        sum that the loss and gradient are divided by: in data-parallel
        training each rank passes the sum over all ranks' rows, and
        ``alpha`` only on one rank, so that the ranks' results add up to
        the objective of the whole data.

        Returns
        -------
        data_loss : float
            ``sum_i sw_i * loss_i / sw_sum``, each ``loss_i`` summed over
            the outputs.
        penalty : float
            ``0.5 * alpha * ||W||² / sw_sum``.

        ``grad`` receives the gradient of ``data_loss + penalty``.
        """
        cdef Py_ssize_t n = data.n_samples
        cdef Py_ssize_t rows = min(block_rows, n)
        cdef const floating[::1] X_values
        cdef const floating[:, ::1] Y
        cdef const floating[::1] sw
        cdef floating[::1] work
        cdef double[::1] sq = self._sq
        cdef double[::1] parts
        cdef const CSR* csr_p = &data.csr if data.sparse else NULL
        cdef const floating* X_p
        cdef Areas w
        cdef Team team
        cdef cbp_bar bar
        cdef Py_ssize_t claims[2]
        cdef Py_ssize_t* cl = claims
        cdef Py_ssize_t start, nb, i, xs, k, s, base
        cdef int tid
        cdef int nt = self.net.n_threads
        cdef double total = 0
        cdef floating scale
        self._check(theta.shape[0], sizeof(floating) == 8, data, True)
        if n < 1:
            raise ValueError("loss_grad needs at least one sample")
        _check_rows(rows)
        if grad.shape[0] != theta.shape[0]:
            raise ValueError("grad and theta differ in size")
        Y = data.Y
        sw = data.sample_weight
        if sw_sum is None:
            for i in range(n):
                total += sw[i]
        else:
            total = sw_sum
        if not total > 0:
            raise ValueError("the sample weights sum to zero")
        scale = <floating>(1.0 / total)
        X_values = data.values
        X_p = &X_values[0] if X_values.shape[0] > 0 else NULL
        xs = data.row_stride
        k = Y.shape[1]
        work = self._workspace(rows, data.sparse)
        w = _areas(&self.net, &work[0], rows, xs, k)
        w.bias_part = NULL   # the bias gradients accumulate over blocks
        parts = np.zeros(1, dtype=np.float64)
        self.net.drop_row0 = dropout_row0
        self.net.drop_pos = NULL
        # each block's shares of both phases taken first come, first
        # served (as in epoch: block b's are claims base..base + nt - 1)
        cl[0] = 0
        cl[1] = 0
        cbp_bar_init(&bar, nt)
        _team_begin(&team)
        with nogil, parallel(num_threads=nt):
            tid = threadid()
            if cbp_full_team(nt, &team.short_team):
                warm_gemm(&theta[0])
                start = 0
                base = 0
                while start < n:
                    nb = min(rows, n - start)
                    s = cbp_claim(&cl[0], base + nt)
                    while s >= 0:
                        _batch_rows(&self.net, &theta[0], X_p + start * xs,
                                    &Y[0, 0] + start * k, &sw[0] + start, nb,
                                    start, csr_p, &w, <int>(s - base), nt)
                        s = cbp_claim(&cl[0], base + nt)
                    cbp_bar_wait(&bar)
                    s = cbp_claim(&cl[1], base + nt)
                    while s >= 0:
                        _batch_grad(&self.net, &grad[0], X_p + start * xs, nb,
                                    start, csr_p, &w, scale, start > 0,
                                    <int>(s - base), nt)
                        s = cbp_claim(&cl[1], base + nt)
                    if tid == 0:
                        for i in range(nb):
                            parts[0] += w.rowloss[i]
                    cbp_bar_wait(&bar)
                    start = start + nb
                    base = base + nt
                params_l2(&self.net, &theta[0], &grad[0],
                          <floating>(alpha / total), &sq[0], tid, nt)
        _team_end(&team, nt)
        return (parts[0] / total,
                0.5 * alpha * _sum_blocks(&sq[0], self._n_blocks) / total)

    def predict(self, const floating[::1] theta, Input data, out,
                Py_ssize_t block_rows):
        """``out = network(X)`` in blocks of ``block_rows`` rows, each block
        split over the threads. Memory beyond ``out`` is a workspace
        bounded by the block size, allocated per call (so that threads may
        predict with one network at once)."""
        cdef floating[:, ::1] out_mv
        cdef Py_ssize_t n = data.n_samples
        cdef Py_ssize_t k = out.shape[1]
        cdef Py_ssize_t rows = min(block_rows, n)
        cdef Py_ssize_t xs = data.row_stride
        cdef Py_ssize_t start, nb, r0, r1, chunk
        cdef const floating[::1] X_values
        cdef floating[::1] work
        cdef const CSR* csr_p = &data.csr if data.sparse else NULL
        cdef const floating* X_p
        cdef floating* work_p
        cdef floating* buf0
        cdef floating* buf1
        cdef Team team
        cdef int tid
        cdef int nt = self.net.n_threads
        self._check(theta.shape[0], sizeof(floating) == 8, data, False)
        if not isinstance(out, np.ndarray) or out.dtype != self.dtype:
            raise ValueError(f"out must be a {self.dtype} array")
        out_mv = out
        if out.shape[0] != n or k != self.net.units[self.net.n_layers]:
            raise ValueError("out must have one row per sample and one "
                             "column per output")
        if n == 0:
            return
        _check_rows(rows)
        chunk = _share_capacity(rows, nt)
        work = np.empty(predict_workspace_size(self.units, rows, nt),
                        dtype=self.dtype)
        work_p = &work[0] if work.shape[0] > 0 else NULL
        X_values = data.values
        X_p = &X_values[0] if X_values.shape[0] > 0 else NULL
        _team_begin(&team)
        with nogil, parallel(num_threads=nt):
            tid = threadid()
            if cbp_full_team(nt, &team.short_team):
                warm_gemm(&theta[0])
                buf0 = NULL
                buf1 = NULL
                if work_p != NULL:
                    buf0 = work_p + 2 * tid * chunk * self.net.max_hidden
                    buf1 = buf0 + chunk * self.net.max_hidden
                start = 0
                while start < n:
                    nb = min(rows, n - start)
                    r0 = _part_q(nb, tid, nt)
                    r1 = _part_q(nb, tid + 1, nt)
                    if r1 > r0:
                        forward_rows(&self.net, &theta[0],
                                     X_p + (start + r0) * xs, r1 - r0,
                                     &out_mv[0, 0] + (start + r0) * k, buf0,
                                     buf1, start + r0, csr_p)
                    start = start + nb
        _team_end(&team, nt)
