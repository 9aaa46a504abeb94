"""The contract of the core's ``Network`` and ``Input``: what each method
takes, the errors bad arguments get, and the batch step that an epoch and
data-parallel training share (:meth:`Network.batch_grad` then
:meth:`Network.step`, bit for bit an epoch's)."""

import numpy as np
import pytest

from cbp import _core

import _reference
from _network import DTYPES, network, problem, set_optimizer, sparse_problem


def test_every_table_row_has_a_reference_formula():
    """The kernel tests run over the core's tables; each row needs its
    formula in _reference, or it would go untested."""
    assert set(_core.HIDDEN_ACTIVATIONS) == set(_reference.HIDDEN)
    assert set(_core.OUTPUT_ACTIVATIONS) == set(_reference.OUTPUT)
    assert set(_core.REGRESSION_LOSSES) == set(_reference.REGRESSION_LOSSES)
    assert set(_core.SOLVERS) == set(_reference.STEPS)
    for table in (_core.HIDDEN_ACTIVATIONS, _core.OUTPUT_ACTIVATIONS, _core.SOLVERS):
        assert len(set(table.values())) == len(table)
    # a regression loss is an output code: the output's own, or one of its own
    for name, code in _core.REGRESSION_LOSSES.items():
        out = _reference.REGRESSION_LOSSES[name][0]
        own_code = code not in _core.OUTPUT_ACTIVATIONS.values()
        assert code == _core.OUTPUT_ACTIVATIONS[out] or own_code


def test_network_describes_its_parameters():
    net = network([5, 7, 6, 3], "prelu", "softmax", np.float32, nt=1)
    offsets, n_params = _core.param_offsets([5, 7, 6, 3], prelu=True)
    assert net.n_params == n_params and net.prelu and net.n_threads == 1
    np.testing.assert_array_equal(net.offsets, offsets)
    np.testing.assert_array_equal(net.units, [5, 7, 6, 3])
    assert net.dtype == np.float32 and not net.has_optimizer
    assert not network([5, 3], "relu", "identity", np.float64).prelu


def test_network_rejects_bad_construction():
    with pytest.raises(ValueError, match="dtype must be float32 or float64"):
        network([3, 2], "relu", "identity", np.int32)
    with pytest.raises(ValueError, match="at least one weight layer"):
        network([3], "relu", "identity", np.float64)
    with pytest.raises(ValueError, match="layer widths must be >= 1"):
        network([3, 0, 2], "relu", "identity", np.float64)


def _setup(dtype=np.float64, solver="sgd"):
    X, Y, sw, units, _, theta = problem("identity", dtype, n=10)
    net = network(units, "relu", "identity", dtype)
    if solver is not None:
        set_optimizer(net, solver, 0.1)
    return net, X, Y, sw, theta


def _calls(net, theta, data):
    """Every method that reads theta and the data, as (name, call)."""
    grad = np.empty_like(theta)
    n = data.n_samples
    out = np.empty((n, int(net.units[-1])), theta.dtype)
    index = np.arange(n, dtype=np.intp)
    return [
        ("epoch", lambda: net.epoch(theta, data, None, 4, 0.1)),
        ("batch_grad", lambda: net.batch_grad(theta, grad, data, index, 0.1)),
        ("loss_grad", lambda: net.loss_grad(theta, grad, data, 0.1, 4)),
        ("predict", lambda: net.predict(theta, data, out, 4)),
    ]


@pytest.mark.parametrize("dtype", DTYPES)
def test_methods_reject_theta_of_the_wrong_dtype_or_size(dtype):
    other = np.float32 if dtype == np.float64 else np.float64
    name = np.dtype(dtype).name
    net, X, Y, sw, theta = _setup(dtype)
    data = _core.Input(X, Y, sw)
    message = f"theta must be a {name} array of {net.n_params} entries"
    for bad in (theta.astype(other), theta[:-1].copy(), np.append(theta, theta[:1])):
        # X of theta's dtype: the dtype of theta itself is what is wrong
        data_like = _core.Input(X.astype(bad.dtype), Y.astype(bad.dtype), sw.astype(bad.dtype))
        for what, call in _calls(net, bad, data_like):
            with pytest.raises(ValueError, match=message):
                call()
    with pytest.raises(ValueError, match=f"theta and grad must hold {net.n_params} entries"):
        net.step(theta[:-1].copy(), theta[:-1].copy(), 0.0)
    with pytest.raises(ValueError, match=f"theta must be of dtype {name}"):
        net.step(theta.astype(other), theta.astype(other), 0.0)
    with pytest.raises(ValueError, match="grad and theta differ in size"):
        net.loss_grad(theta, np.empty(3, dtype), data, 0.1, 4)
    with pytest.raises(ValueError, match="grad and theta differ in size"):
        net.batch_grad(theta, np.empty(3, dtype), data, np.arange(3, dtype=np.intp), 1.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_methods_reject_data_of_the_wrong_dtype_or_shape(dtype):
    other = np.float32 if dtype == np.float64 else np.float64
    name = np.dtype(dtype).name
    net, X, Y, sw, theta = _setup(dtype)
    cases = [
        (_core.Input(X.astype(other), Y, sw), f"X must be of dtype {name}"),
        (_core.Input(X.astype(other), Y.astype(other), sw.astype(other)),
         f"X must be of dtype {name}"),
        (_core.Input(X, Y.astype(other), sw), f"Y and sample_weight must be of dtype {name}"),
        (_core.Input(X, Y, sw.astype(other)), f"Y and sample_weight must be of dtype {name}"),
        (_core.Input(np.ascontiguousarray(X[:, :-1]), Y, sw),
         "X has 4 features, the network takes 5"),
        (_core.Input(X, np.ascontiguousarray(np.c_[Y, Y]), sw),
         "Y has 6 columns, the network has 3 outputs"),
        (_core.Input(X), "training needs Y and sample_weight"),
    ]
    for data, message in cases:
        for what, call in _calls(net, theta, data):
            if what == "predict" and "Y" in message:
                continue  # prediction reads no Y
            with pytest.raises(ValueError, match=message):
                call()
    out = np.empty((X.shape[0], 2), dtype)
    with pytest.raises(ValueError, match="out must have one row per sample and one column"):
        net.predict(theta, _core.Input(X), out, 4)
    with pytest.raises(ValueError, match="out must have one row per sample"):
        net.predict(theta, _core.Input(X), np.empty((3, 3), dtype), 4)


def test_input_rejects_inconsistent_arrays():
    X, Y, sw, *_ = problem("identity", np.float64, n=10)
    with pytest.raises(ValueError, match="X must be a C-contiguous 2-D numpy array"):
        _core.Input(np.asfortranarray(X))
    with pytest.raises(ValueError, match="X must be a C-contiguous 2-D numpy array"):
        _core.Input(X[0])
    with pytest.raises(ValueError, match="Y and sample_weight go together"):
        _core.Input(X, Y)
    with pytest.raises(ValueError, match="Y and sample_weight go together"):
        _core.Input(X, None, sw)
    with pytest.raises(ValueError, match="X, Y and sample_weight differ in length"):
        _core.Input(X, Y[:-1], sw[:-1])
    with pytest.raises(ValueError, match="X, Y and sample_weight differ in length"):
        _core.Input(X, Y, sw[:-1])
    with pytest.raises(ValueError, match="X, Y and sample_weight differ in length"):
        _core.Input(X, Y[0].copy(), sw)
    data = _core.Input(X, Y, sw)
    assert (data.n_samples, data.n_features, data.sparse) == (10, 5, False)
    assert data.Y is Y and data.sample_weight is sw


def test_training_needs_set_optimizer_first():
    net, X, Y, sw, theta = _setup(solver=None)
    data = _core.Input(X, Y, sw)
    with pytest.raises(ValueError, match="set_optimizer must be called before epoch"):
        net.epoch(theta, data, None, 4, 0.1)
    with pytest.raises(ValueError, match="set_optimizer must be called before step"):
        net.step(theta, np.zeros_like(theta), 0.0)
    # the gradient and prediction need no optimizer
    grad = np.empty_like(theta)
    net.batch_grad(theta, grad, data, np.arange(3, dtype=np.intp), 1.0)
    net.loss_grad(theta, grad, data, 0.1, 4)


def test_rows_and_blocks_out_of_range_are_refused():
    net, X, Y, sw, theta = _setup()
    data = _core.Input(X, Y, sw)
    grad = np.empty_like(theta)
    for bad in ([0, 10], [-1, 2]):
        index = np.array(bad, dtype=np.intp)
        with pytest.raises(ValueError, match="index holds a row out of range"):
            net.batch_grad(theta, grad, data, index, 1.0)
        with pytest.raises(ValueError, match="order holds an index out of range"):
            net.epoch(theta, data, index, 4, 0.1)
    with pytest.raises(ValueError, match="positions must hold one entry per row"):
        net.batch_grad(theta, grad, data, np.arange(3, dtype=np.intp), 1.0,
                       positions=np.arange(2, dtype=np.intp))
    with pytest.raises(ValueError, match="block size must be >= 1"):
        net.loss_grad(theta, grad, data, 0.1, 0)
    with pytest.raises(ValueError, match="block size must be >= 1"):
        net.epoch(theta, data, None, 0, 0.1)
    with pytest.raises(ValueError, match="block size must be >= 1"):
        net.predict(theta, data, np.empty((10, 3)), 0)
    with pytest.raises(ValueError, match="the sample weights sum to zero"):
        net.loss_grad(theta, grad, _core.Input(X, Y, np.zeros_like(sw)), 0.1, 4)
    empty = _core.Input(X[:0], Y[:0], sw[:0])
    with pytest.raises(ValueError, match="an epoch needs at least one sample"):
        net.epoch(theta, empty, None, 4, 0.1)
    with pytest.raises(ValueError, match="loss_grad needs at least one sample"):
        net.loss_grad(theta, grad, empty, 0.1, 4)
    # predicting no rows is fine
    net.predict(theta, _core.Input(X[:0]), np.empty((0, 3)), 4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_epoch_keeps_its_start_and_flags_nonfinite_weights(dtype):
    X, Y, sw, units, _, theta0 = problem("softmax", dtype, n=20)

    def epoch(lr, theta_start, scale=1):
        theta = theta0.copy()
        net = network(units, "identity", "softmax", dtype)
        set_optimizer(net, "sgd", lr, momentum=0.0, nesterov=False)
        data = _core.Input((X * scale).astype(dtype), Y, sw)
        out = net.epoch(theta, data, None, 20, 0.0, theta_start=theta_start)
        return theta, out[3]

    start = np.full_like(theta0, 7)
    theta, status = epoch(0.1, start)
    assert status == _core.STATUS_OK and np.isfinite(theta).all()
    np.testing.assert_array_equal(start, theta0)
    # one batch whose loss is finite and whose step overflows the weights
    # (identity hidden units: gradients of the order of X)
    start[:] = 7
    theta, status = epoch(float(np.finfo(dtype).max), start, scale=100)
    assert status == _core.STATUS_NONFINITE_PARAMS
    assert not np.isfinite(theta).all()
    np.testing.assert_array_equal(start, theta0)
    with pytest.raises(ValueError, match="theta_start must match theta in size"):
        epoch(0.1, start[:-1])


# ---------------------------------------------------------------------------
# The batch step: an epoch runs batch_grad then step per batch; data-parallel
# training runs them with an allreduce between, so any difference between the
# two paths would make one rank's training differ from one process's.

#: problems the equivalence is checked on: each adds one thing to the first
BATCH_STEP_CASES = {
    "dense": {},
    "sparse": {"sparse": True},
    "prelu": {"hidden": "prelu"},
    "dropout": {"dropout": np.array([0.3, 0.2])},
    "sgd": {"solver": "sgd"},
    "rmsprop": {"solver": "rmsprop"},
    "weight_decay": {"weight_decay": 0.2},
}


def _batch_step_problem(dtype, hidden="relu", sparse=False, n=150):
    """Rows of several 48-row thread shares, shuffled; X dense or CSR."""
    if sparse:
        _, X, Y, sw, units, _, theta = sparse_problem(dtype, hidden, n=n)
    else:
        X, Y, sw, units, _, theta = problem("softmax", dtype, hidden,
                                            units=(30, 9, 7, 3), n=n)
    order = np.random.RandomState(5).permutation(n).astype(np.intp)
    return _core.Input(X, Y, sw), sw, units, theta * 0.5, order


@pytest.mark.thread_count
@pytest.mark.parametrize("nt", [1, 2, 5])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(BATCH_STEP_CASES))
def test_batch_grad_and_step_over_the_batches_equal_the_epoch(case, dtype, nt,
                                                              more_threads_than_cpus):
    # 5 threads on fewer CPUs: threads start late and leave their shares of
    # both phases to others (cbp_claim) in batch_grad as in the epoch
    opts = dict(BATCH_STEP_CASES[case])
    hidden = opts.pop("hidden", "relu")
    data, sw, units, theta0, order = _batch_step_problem(dtype, hidden,
                                                         opts.pop("sparse", False))
    solver = opts.pop("solver", "adam")
    weight_decay = opts.pop("weight_decay", 0.0)
    dropout = opts.pop("dropout", None)
    batch, alpha, row0 = 64, 1e-3, 1000

    def net_for():
        net = network(units, hidden, "softmax", dtype, nt=nt, act_param=0.0,
                      dropout=dropout, dropout_seed=11)
        state = set_optimizer(net, solver, 0.01, weight_decay=weight_decay)
        return net, state

    net, epoch_state = net_for()
    by_epoch = theta0.copy()
    sum_data, sum_penalty, n_rows, status = net.epoch(by_epoch, data, order, batch,
                                                      alpha, row0)
    assert status == _core.STATUS_OK and n_rows == len(order)

    net, state = net_for()
    by_batch = theta0.copy()
    grad = np.empty_like(by_batch)
    sw_sums = np.empty(-(-len(order) // batch))
    _core.batch_weight_sums(sw, order, batch, sw_sums)
    data_total = penalty_total = 0.0
    for j, start in enumerate(range(0, len(order), batch)):
        index = order[start:start + batch]
        positions = np.arange(start, start + len(index), dtype=np.intp)
        data_sum = net.batch_grad(by_batch, grad, data, index, 1.0 / sw_sums[j],
                                  positions, row0)
        sq = net.step(by_batch, grad, alpha / sw_sums[j])
        # the epoch's sums, in its order of operations
        data_total += data_sum / sw_sums[j] * len(index)
        penalty_total += 0.5 * alpha * sq / sw_sums[j] * len(index)

    np.testing.assert_array_equal(by_batch, by_epoch)
    for a, b in zip(state, epoch_state):
        np.testing.assert_array_equal(a, b)
    assert (data_total, penalty_total) == (sum_data, sum_penalty)
    assert not np.array_equal(by_epoch, theta0)


@pytest.mark.thread_count
@pytest.mark.parametrize("nt", [1, 2])
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("hidden", ["relu", "prelu"])
def test_batch_grad_of_two_parts_sums_to_the_whole_batch(hidden, sparse, nt,
                                                         more_threads_than_cpus):
    """Data-parallel training splits a batch's rows over ranks, each passing
    the rows' places in the batch as ``positions``: the parts' gradients
    and losses add up to the whole batch's, dropout masks included."""
    data, sw, units, theta, order = _batch_step_problem(np.float64, hidden, sparse)
    net = network(units, hidden, "softmax", np.float64, nt=nt,
                  dropout=np.array([0.4, 0.3]), dropout_seed=3)
    index = order[:100]
    scale = 1.0 / sw[index].sum()
    whole, part_1, part_2 = (np.empty_like(theta) for _ in range(3))
    loss = net.batch_grad(theta, whole, data, index, scale, dropout_row0=500)
    split = 37
    positions = np.arange(100, dtype=np.intp)
    loss_1 = net.batch_grad(theta, part_1, data, index[:split], scale, positions[:split], 500)
    loss_2 = net.batch_grad(theta, part_2, data, index[split:], scale, positions[split:], 500)
    np.testing.assert_allclose(part_1 + part_2, whole, rtol=1e-12,
                               atol=1e-12 * np.abs(whole).max())
    assert loss_1 + loss_2 == pytest.approx(loss, rel=1e-12)
    # without its positions the second part draws the first part's masks
    unplaced = np.empty_like(theta)
    net.batch_grad(theta, unplaced, data, index[split:], scale, None, 500)
    assert not np.allclose(part_1 + unplaced, whole, rtol=1e-6)


def test_batch_grad_scale_multiplies_the_gradient_not_the_loss():
    data, sw, units, theta, order = _batch_step_problem(np.float64)
    net = network(units, "relu", "softmax", np.float64)
    index = order[:40]
    g1, g3 = np.empty_like(theta), np.empty_like(theta)
    loss_1 = net.batch_grad(theta, g1, data, index, 1.0)
    loss_3 = net.batch_grad(theta, g3, data, index, 3.0)
    assert loss_1 == loss_3 > 0
    np.testing.assert_allclose(g3, 3 * g1, rtol=1e-14)
    # the mean gradient of the rows, as loss_grad (alpha 0) computes it
    sub = _core.Input(*(np.ascontiguousarray(a[index]) for a in
                        (data.values.reshape(data.n_samples, -1), data.Y, data.sample_weight)))
    mean = np.empty_like(theta)
    loss, _ = net.loss_grad(theta, mean, sub, 0.0, 40)
    np.testing.assert_allclose(g1 / sw[index].sum(), mean, rtol=1e-12, atol=1e-15)
    assert loss == pytest.approx(loss_1 / sw[index].sum(), rel=1e-12)


def test_predict_names_the_dtype_out_must_have():
    net, X, Y, sw, theta = _setup(solver=None)
    out = np.empty((X.shape[0], Y.shape[1]), dtype=np.float32)
    with pytest.raises(ValueError, match="out must be a float64 array"):
        net.predict(theta, _core.Input(X), out, 8)
