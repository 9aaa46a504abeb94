#!/usr/bin/env python
"""Time cbp against scikit-learn, PyTorch and JAX on the same data, in one process.

The unit is seconds per epoch of Adam training with mini-batches of 200 samples
(see ``benchmarks/README.md``), also for the epoch's GEMMs alone and on a
machine kept busy by another process.  Libraries alternate round by round and
the median and the min over ``--rounds`` rounds are reported.  The results are printed as plain text,
written as reStructuredText to ``--output`` and as JSON to ``--json`` (the
documentation draws its performance charts from the JSON).

Run ``python benchmarks/run.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import platform
import sys
import threading
import time
import tracemalloc
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import sklearn
from sklearn.datasets import load_digits, make_regression
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_info, threadpool_limits

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MNIST = REPO_ROOT.parent / "shared" / "data" / "mnist.npz"
DEFAULT_OUTPUT = REPO_ROOT / "docs" / "benchmarks" / "results.rst"
DEFAULT_JSON = REPO_ROOT / "docs" / "benchmarks" / "results.json"

# The training protocol shared by every library.
BATCH_SIZE = 200
LEARNING_RATE = 1e-3
BETA_1, BETA_2, EPSILON = 0.9, 0.999, 1e-8
ALPHA = 1e-4  # scikit-learn's default L2 penalty, mirrored in the torch loop

QUICK_SAMPLES = 2000  # samples per data set with --quick
ALL_LIBRARIES = ("cbp", "sklearn", "torch", "torch.compile", "jax", "gemm-only")
TRAIN_WORKLOADS = ("mnist-256-128", "mnist-800", "digits", "regression")
WORKLOAD_NAMES = TRAIN_WORKLOADS + ("predict-proba", "fit-memory", "busy")
# mnist-800 takes almost half of a run and carries no target: asked for by name
DEFAULT_WORKLOADS = tuple(name for name in WORKLOAD_NAMES if name != "mnist-800")
BUSY_SAMPLES = 30000  # MNIST rows of the busy-machine scenario
MIB = 2.0**20


# --------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------


class Skip(Exception):
    """Raised when a workload cannot run here; the message says why."""


@dataclass
class Workload:
    """A data set, an architecture and what to measure on them.

    ``kind`` is ``"train"`` (seconds per epoch of ``fit``), ``"predict"``
    (seconds per ``predict_proba`` call), ``"memory"`` (peak memory of one
    ``fit``) or ``"busy"`` (seconds per epoch beside a spinning process).
    """

    name: str
    kind: str
    task: str  # "classifier" or "regressor"
    hidden: tuple
    activation: str
    X: np.ndarray
    y: np.ndarray
    # small data sets run this many times --epochs, for a stable difference
    epoch_scale: int = 1

    @property
    def n_outputs(self):
        """Units of the output layer (one per class, one for regression)."""
        if self.task == "regressor":
            return 1
        n_classes = len(np.unique(self.y))
        if n_classes < 3:
            raise ValueError("benchmarks use multiclass problems only")
        return n_classes

    @property
    def layer_sizes(self):
        """Units of every layer, input and output included."""
        return (self.X.shape[1], *self.hidden, self.n_outputs)

    @property
    def dtype_name(self):
        return self.X.dtype.name

    def describe(self):
        """One line: samples, architecture, activation, dtype."""
        arch = "-".join(str(n) for n in self.layer_sizes)
        beside = ", beside one spinning process" if self.kind == "busy" else ""
        return (
            f"{self.name}: {self.X.shape[0]} samples, {arch} {self.activation} "
            f"{self.task}, {self.dtype_name}{beside}"
        )


def train_flops(layer_sizes, n_samples):
    """FLOPs of one training epoch.

    Forward costs 2 and backward 4 per weight and sample, except that layer 0
    needs no input delta, so its backward costs 2.
    """
    pairs = zip(layer_sizes[:-1], layer_sizes[1:])
    per_sample = sum(
        (2 + (4 if layer > 0 else 2)) * fan_in * fan_out
        for layer, (fan_in, fan_out) in enumerate(pairs)
    )
    return n_samples * per_sample


def forward_flops(layer_sizes, n_samples):
    """FLOPs of one forward pass: 2 per weight and sample."""
    pairs = zip(layer_sizes[:-1], layer_sizes[1:])
    return n_samples * sum(2 * fan_in * fan_out for fan_in, fan_out in pairs)


def resolve_mnist_path(cli_path):
    """The MNIST path: ``--mnist``, else ``$CBP_MNIST``, else the default."""
    return Path(cli_path or os.environ.get("CBP_MNIST") or DEFAULT_MNIST)


_MNIST_CACHE = {}


def load_mnist(path, n_samples=None):
    """MNIST training images as float32 in [0, 1] and their labels."""
    path = Path(path)
    if not path.is_file():
        raise Skip(
            f"MNIST not found at {path} (pass --mnist PATH or set CBP_MNIST)"
        )
    if path not in _MNIST_CACHE:
        with np.load(path) as data:
            X = data["X_train"].astype(np.float32) / np.float32(255.0)
            _MNIST_CACHE[path] = (X, data["y_train"].astype(np.int64))
    X, y = _MNIST_CACHE[path]
    return X[:n_samples], y[:n_samples]


def build_workload(name, args):
    """Build the named workload; raise :class:`Skip` if its data is absent."""
    n = QUICK_SAMPLES if args.quick else None
    if name in ("mnist-256-128", "predict-proba", "fit-memory"):
        X, y = load_mnist(args.mnist, n)
        kind = {"predict-proba": "predict", "fit-memory": "memory"}.get(name, "train")
        return Workload(name, kind, "classifier", (256, 128), "relu", X, y)
    if name == "busy":
        X, y = load_mnist(args.mnist, n or BUSY_SAMPLES)
        return Workload(name, "busy", "classifier", (256, 128), "relu", X, y)
    if name == "mnist-800":
        X, y = load_mnist(args.mnist, n)
        return Workload(name, "train", "classifier", (800,), "relu", X, y)
    if name == "digits":
        X, y = load_digits(return_X_y=True)
        return Workload(name, "train", "classifier", (100,), "relu", X / 16.0, y,
                        epoch_scale=20)
    if name == "regression":
        X, y = make_regression(
            n_samples=n or 20000, n_features=50, noise=1, random_state=0
        )
        y = (y - y.mean()) / y.std()
        return Workload(name, "train", "regressor", (64, 64), "relu", X, y,
                        epoch_scale=5)
    raise ValueError(f"unknown workload {name!r}")


# --------------------------------------------------------------------------
# Libraries
# --------------------------------------------------------------------------


class EstimatorLibrary:
    """cbp or scikit-learn: estimators with scikit-learn's MLP interface."""

    traces_memory = True  # numpy allocations are visible to tracemalloc
    predicts = True

    def __init__(self, name, classifier, regressor, extra_params=None):
        self.name = name
        self.classifier = classifier
        self.regressor = regressor
        self.extra_params = dict(extra_params or {})

    def make(self, workload, epochs):
        """An unfitted estimator following the shared training protocol."""
        cls = self.classifier if workload.task == "classifier" else self.regressor
        return cls(
            hidden_layer_sizes=workload.hidden,
            activation=workload.activation,
            solver="adam",
            alpha=ALPHA,
            batch_size=BATCH_SIZE,
            learning_rate_init=LEARNING_RATE,
            beta_1=BETA_1,
            beta_2=BETA_2,
            epsilon=EPSILON,
            max_iter=epochs,
            shuffle=True,
            tol=0.0,
            n_iter_no_change=10**9,
            random_state=0,
            **self.extra_params,
        )

    def fit(self, workload, epochs):
        """Fit an estimator for ``epochs`` epochs; return it and the seconds taken."""
        model = self.make(workload, epochs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            start = time.perf_counter()
            model.fit(workload.X, workload.y)
            seconds = time.perf_counter() - start
        return model, seconds

    def epoch_timings(self, workload, epochs):
        """Seconds of a 1-epoch fit and of a ``1 + epochs`` fit, same seed.

        An epoch costs the difference divided by ``epochs`` (see
        :func:`marginal_epoch`): a fit has a fixed cost (input validation,
        label encoding, allocation) that is no part of an epoch; on small
        data it is as long as several epochs, so timing one fit and
        dividing by its epochs would blur the comparison.
        """
        _, one = self.fit(workload, 1)
        model, seconds = self.fit(workload, 1 + epochs)
        if model.n_iter_ != 1 + epochs:
            raise RuntimeError(
                f"{self.name} stopped after {model.n_iter_} epochs, not {1 + epochs}"
            )
        return one, seconds

    def predict_proba(self, model, X):
        return model.predict_proba(X)


class TorchLibrary:
    """A plain PyTorch training loop following the shared protocol."""

    name = "torch"
    traces_memory = False  # torch's allocator is invisible to tracemalloc
    predicts = True

    def __init__(self, torch_module, threads):
        self.torch = torch_module
        self.torch.set_num_threads(threads)

    def _model(self, workload):
        """``nn.Sequential`` of Linear + activation, no output activation."""
        nn = self.torch.nn
        activations = {
            "relu": nn.ReLU,
            "tanh": nn.Tanh,
            "logistic": nn.Sigmoid,
            "identity": nn.Identity,
        }
        sizes = workload.layer_sizes
        layers = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(fan_in, fan_out))
            if i < len(sizes) - 2:
                layers.append(activations[workload.activation]())
        dtype = getattr(self.torch, workload.dtype_name)
        return nn.Sequential(*layers).to(dtype)

    def _optimizer(self, model):
        """Adam; L2 on the weights only, scaled like scikit-learn's ``alpha``."""
        weights = [p for p in model.parameters() if p.ndim == 2]
        biases = [p for p in model.parameters() if p.ndim != 2]
        groups = [
            {"params": weights, "weight_decay": ALPHA / BATCH_SIZE},
            {"params": biases, "weight_decay": 0.0},
        ]
        return self.torch.optim.Adam(
            groups, lr=LEARNING_RATE, betas=(BETA_1, BETA_2), eps=EPSILON
        )

    def _tensors(self, workload):
        """Inputs and targets as tensors (class indices for classifiers)."""
        X = self.torch.from_numpy(np.ascontiguousarray(workload.X))
        if workload.task == "classifier":
            _, codes = np.unique(workload.y, return_inverse=True)
            y = self.torch.from_numpy(codes.astype(np.int64))
            return X, y, self.torch.nn.CrossEntropyLoss()
        y = self.torch.from_numpy(workload.y.astype(workload.X.dtype).reshape(-1, 1))
        mse = self.torch.nn.MSELoss()
        return X, y, lambda output, target: mse(output, target) / 2

    def _step(self, model, optimizer, loss_fn):
        """The training step on one batch: zero, forward, backward, Adam."""

        def step(X_batch, y_batch):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(X_batch), y_batch)
            loss.backward()
            optimizer.step()

        return step

    def _epoch(self, step, X, y, generator):
        """One epoch over a freshly shuffled index, in batches of 200."""
        order = self.torch.randperm(X.shape[0], generator=generator)
        for start in range(0, X.shape[0], BATCH_SIZE):
            batch = order[start : start + BATCH_SIZE]
            step(X[batch], y[batch])

    #: untimed epochs run first (a compiled step compiles in them)
    warmup_epochs = 0

    def _reset(self):
        """Called at the start of every fit, before its model is built."""

    def fit(self, workload, epochs):
        """Train for ``warmup_epochs`` untimed, then ``epochs`` timed epochs;
        return the model and the seconds the timed ones took."""
        self._reset()
        self.torch.manual_seed(0)
        model = self._model(workload)
        optimizer = self._optimizer(model)
        X, y, loss_fn = self._tensors(workload)
        step = self._step(model, optimizer, loss_fn)
        generator = self.torch.Generator().manual_seed(0)
        for _ in range(self.warmup_epochs):
            self._epoch(step, X, y, generator)
        start = time.perf_counter()
        for _ in range(epochs):
            self._epoch(step, X, y, generator)
        return model, time.perf_counter() - start

    def epoch_timings(self, workload, epochs):
        """No fixed cost to remove: 0, and the seconds of ``epochs`` epochs."""
        _, seconds = self.fit(workload, epochs)
        return 0.0, seconds

    def predict_proba(self, model, X):
        with self.torch.no_grad():
            logits = model(self.torch.from_numpy(np.ascontiguousarray(X)))
            return self.torch.softmax(logits, dim=1).numpy()


class TorchCompileLibrary(TorchLibrary):
    """The eager PyTorch loop's training step under ``torch.compile`` (default mode).

    The first epoch compiles (the step, then again for the last, shorter
    batch) and is not timed: the figure is the warm epochs'.
    """

    name = "torch.compile"
    predicts = False  # inference is the eager peer's business
    warmup_epochs = 1

    def _step(self, model, optimizer, loss_fn):
        return self.torch.compile(super()._step(model, optimizer, loss_fn))

    def _reset(self):
        # Every fit builds a fresh model: without a reset the compiled code
        # of the earlier ones would pile up until dynamo's recompile limit,
        # past which it silently falls back to eager execution.
        self.torch._dynamo.reset()


class JaxLibrary:
    """A JAX epoch: ``lax.scan`` over the shuffled batches under one ``jax.jit``.

    Each step is ``optax.adam`` after ``optax.add_decayed_weights`` on the
    weights only, which is the eager torch peer's coupled L2 (``alpha / 200``
    added to the gradient). The first epoch compiles and is not timed.
    """

    name = "jax"
    traces_memory = False  # XLA's allocator is invisible to tracemalloc
    predicts = False

    def __init__(self, jax_module, optax_module):
        self.jax = jax_module
        self.optax = optax_module
        # float64 workloads need x64; every array below has an explicit
        # dtype, so float32 workloads stay float32 with it on.
        self.jax.config.update("jax_enable_x64", True)

    def _params(self, workload):
        """Glorot-uniform weights and zero biases, as scikit-learn initialises."""
        rng = np.random.default_rng(0)
        sizes = workload.layer_sizes
        params = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = np.sqrt(6.0 / (fan_in + fan_out))
            W = rng.uniform(-bound, bound, (fan_in, fan_out)).astype(workload.X.dtype)
            b = np.zeros(fan_out, dtype=workload.X.dtype)
            params.append((self.jax.numpy.asarray(W), self.jax.numpy.asarray(b)))
        return params

    def _epoch_function(self, workload, n_layers):
        """The jitted ``epoch(params, opt_state, key, X, y)`` and the optimizer."""
        jax, jnp, optax = self.jax, self.jax.numpy, self.optax
        activation = {
            "relu": jax.nn.relu,
            "tanh": jnp.tanh,
            "logistic": jax.nn.sigmoid,
            "identity": lambda z: z,
        }[workload.activation]
        classifier = workload.task == "classifier"

        def loss(params, X_batch, y_batch):
            h = X_batch
            for W, b in params[:-1]:
                h = activation(h @ W + b)
            W, b = params[-1]
            out = h @ W + b
            if classifier:
                log_p = jax.nn.log_softmax(out)
                return -jnp.mean(jnp.take_along_axis(log_p, y_batch[:, None], axis=1))
            return jnp.mean((out - y_batch) ** 2) / 2

        optimizer = optax.chain(
            optax.add_decayed_weights(ALPHA / BATCH_SIZE,
                                      mask=[(True, False)] * n_layers),
            optax.adam(LEARNING_RATE, b1=BETA_1, b2=BETA_2, eps=EPSILON),
        )
        n_full, remainder = divmod(workload.X.shape[0], BATCH_SIZE)

        def update(params, state, X_batch, y_batch):
            grads = jax.grad(loss)(params, X_batch, y_batch)
            updates, state = optimizer.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        @jax.jit
        def epoch(params, state, key, X, y):
            order = jax.random.permutation(key, X.shape[0])

            def step(carry, batch):
                return update(*carry, X[batch], y[batch]), None

            batches = order[: n_full * BATCH_SIZE].reshape(n_full, BATCH_SIZE)
            (params, state), _ = jax.lax.scan(step, (params, state), batches)
            if remainder:  # the last, shorter batch (its shape is static)
                rest = order[n_full * BATCH_SIZE :]
                params, state = update(params, state, X[rest], y[rest])
            return params, state

        return epoch, optimizer

    def fit(self, workload, epochs):
        """Compile during one untimed epoch, then time ``epochs`` warm epochs."""
        jax, jnp = self.jax, self.jax.numpy
        params = self._params(workload)
        epoch, optimizer = self._epoch_function(workload, len(params))
        state = optimizer.init(params)
        X = jnp.asarray(workload.X)
        if workload.task == "classifier":
            _, codes = np.unique(workload.y, return_inverse=True)
            y = jnp.asarray(codes.astype(np.int32))
        else:
            y = jnp.asarray(workload.y.astype(workload.X.dtype).reshape(-1, 1))
        keys = jax.random.split(jax.random.PRNGKey(0), epochs + 1)
        params, state = epoch(params, state, keys[0], X, y)
        jax.block_until_ready(params)
        start = time.perf_counter()
        for key in keys[1:]:
            params, state = epoch(params, state, key, X, y)
        jax.block_until_ready(params)
        return params, time.perf_counter() - start

    def epoch_timings(self, workload, epochs):
        """No fixed cost to remove: 0, and the seconds of ``epochs`` warm epochs."""
        _, seconds = self.fit(workload, epochs)
        return 0.0, seconds


class GemmOnlyLibrary:
    """The GEMMs of a training epoch and nothing else: the epoch's limit here.

    Per batch of 200 and layer ``l``: forward ``A_l @ W_l``, backward
    ``delta_l @ W_l.T`` (not for layer 0) and the gradient ``A_l.T @ delta_l``,
    through numpy into preallocated arrays. No activation, loss, shuffling,
    gradient reduction or optimizer step; the activations are slices of the
    data in order, not gathered rows.

    Threads split each batch's rows as cbp's core does, each calling BLAS
    single-threaded on its share: the figure is then the limit of the
    partition cbp runs, and cbp's epoch over it says how far cbp is from
    that limit (1 would be no time outside the GEMMs). A multi-threaded BLAS
    on the whole batch would measure another partition, with its own
    synchronisation inside each call. numpy releases the GIL during
    ``matmul``, so Python threads do.

    Each thread first runs one untimed GEMM with a long column-major M
    (``warm_blas``), as cbp's core does once per thread: OpenBLAS runs
    GEMMs with a short one up to 3x slower in a thread until then.
    """

    name = "gemm-only"
    traces_memory = False
    predicts = False

    def __init__(self, threads):
        self.threads = threads

    @staticmethod
    def warm_blas(dtype):
        """One GEMM whose column-major M is 1024 (see the class docstring)."""
        np.ones((256, 128), dtype) @ np.ones((128, 1024), dtype)

    def _thread_epochs(self, workload, weights, epochs, tid, ready=None):
        """Run ``epochs`` epochs of thread ``tid``'s share of the GEMMs
        (a pool thread warms its BLAS, then waits at the barrier ``ready``)."""
        if ready is not None:
            self.warm_blas(workload.X.dtype)
            ready.wait()
        X = workload.X
        n = X.shape[0]
        rows = -(-BATCH_SIZE // self.threads)  # the largest share of a batch
        dtype = X.dtype
        Z = [np.empty((rows, W.shape[1]), dtype) for W in weights]
        D = [np.empty((rows, W.shape[0]), dtype) for W in weights]
        G = [np.empty_like(W) for W in weights]
        for _ in range(epochs):
            for start in range(0, n, BATCH_SIZE):
                nb = min(BATCH_SIZE, n - start)
                r0 = start + nb * tid // self.threads
                r1 = start + nb * (tid + 1) // self.threads
                m = r1 - r0
                if m == 0:
                    continue
                A = [X[r0:r1]]
                for W, z in zip(weights, Z):
                    A.append(np.matmul(A[-1], W, out=z[:m]))
                delta = A[-1]
                for layer in range(len(weights) - 1, -1, -1):
                    np.matmul(A[layer].T, delta, out=G[layer])
                    if layer > 0:
                        delta = np.matmul(delta, weights[layer].T, out=D[layer][:m])

    def fit(self, workload, epochs):
        """Run the GEMMs of ``epochs`` epochs; return None and the seconds taken."""
        rng = np.random.default_rng(0)
        sizes = workload.layer_sizes
        # Glorot scale keeps the values ordinary (no overflow, no subnormals)
        weights = [
            (rng.standard_normal((a, b)) * np.sqrt(2.0 / (a + b))).astype(workload.X.dtype)
            for a, b in zip(sizes[:-1], sizes[1:])
        ]
        with threadpool_limits(limits=1, user_api="blas"):
            if self.threads == 1:
                self.warm_blas(workload.X.dtype)
                start = time.perf_counter()
                self._thread_epochs(workload, weights, epochs, 0)
            else:
                # the clock starts when every thread has warmed its BLAS
                ready = threading.Barrier(self.threads + 1)
                with ThreadPoolExecutor(self.threads) as pool:
                    futures = [
                        pool.submit(self._thread_epochs, workload, weights, epochs, tid,
                                    ready)
                        for tid in range(self.threads)
                    ]
                    ready.wait()
                    start = time.perf_counter()
                    for future in futures:
                        future.result()
            seconds = time.perf_counter() - start
        return None, seconds

    def epoch_timings(self, workload, epochs):
        """No fixed cost to remove: 0, and the seconds of ``epochs`` epochs."""
        _, seconds = self.fit(workload, epochs)
        return 0.0, seconds


def load_cbp_estimators(peer_as_cbp):
    """cbp's estimator classes and version, or scikit-learn's as a stand-in."""
    if peer_as_cbp:
        from sklearn.neural_network import MLPClassifier, MLPRegressor

        return MLPClassifier, MLPRegressor, f"sklearn {sklearn.__version__} stand-in"
    try:
        import cbp
    except ImportError as exc:
        raise SystemExit(
            f"error: cannot import cbp ({exc}).\n"
            "build cbp first: pip install -e .\n"
            "(or pass --peer-as-cbp to test the harness with scikit-learn "
            "standing in for cbp, or --libs sklearn,torch)"
        ) from exc
    return cbp.MLPClassifier, cbp.MLPRegressor, getattr(cbp, "__version__", "?")


def make_libraries(names, threads, peer_as_cbp):
    """The libraries to compare, a dict of versions, and skip notes."""
    libraries, versions, notes = [], {}, []
    for name in names:
        if name == "cbp":
            classifier, regressor, versions["cbp"] = load_cbp_estimators(peer_as_cbp)
            extra = {}
            if "n_jobs" in classifier().get_params():
                extra["n_jobs"] = threads
            libraries.append(EstimatorLibrary("cbp", classifier, regressor, extra))
        elif name == "sklearn":
            from sklearn.neural_network import MLPClassifier, MLPRegressor

            versions["sklearn"] = sklearn.__version__
            libraries.append(EstimatorLibrary("sklearn", MLPClassifier, MLPRegressor))
        elif name in ("torch", "torch.compile"):
            try:
                import torch
            except ImportError as exc:
                notes.append(f"{name} skipped: cannot import torch ({exc})")
                continue
            versions["torch"] = torch.__version__
            cls = TorchLibrary if name == "torch" else TorchCompileLibrary
            libraries.append(cls(torch, threads))
        elif name == "jax":
            try:
                import jax
                import optax
            except ImportError as exc:
                notes.append(f"jax skipped: cannot import jax and optax ({exc})")
                continue
            versions["jax"] = f"{jax.__version__} (optax {optax.__version__})"
            libraries.append(JaxLibrary(jax, optax))
            if threads < available_cores():
                # XLA's CPU thread pool is sized when jax starts, from the
                # cores, and has no runtime limit like torch.set_num_threads
                notes.append(f"jax uses its own thread pool, not --threads {threads}")
        elif name == "gemm-only":
            libraries.append(GemmOnlyLibrary(threads))
        else:
            raise SystemExit(f"error: unknown library {name!r}; choose from {ALL_LIBRARIES}")
    return libraries, versions, notes


# --------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------


def gemm_peak_gflops(dtype, n, repeats):
    """Best GFLOP/s of an ``n x n @ n x n`` numpy matmul (2 n^3 FLOPs)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    out = np.empty((n, n), dtype=dtype)
    np.matmul(a, b, out=out)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best / 1e9


def rotated(items, shift):
    """``items`` rotated left by ``shift``, so that each round starts elsewhere."""
    shift %= len(items)
    return list(items[shift:]) + list(items[:shift])


def settle(pause):
    """Sleep so that the previous library's idle worker threads stop spinning.

    OpenBLAS and OpenMP workers busy-wait for a while after each parallel
    region; on few cores they would steal time from the next library timed.
    """
    if pause > 0:
        time.sleep(pause)


def all_rounds(libraries, rounds, measure, pause):
    """``measure(library)`` of every round, per library name, libraries alternating.

    The order of the libraries rotates each round, so that none always runs
    first (or always after the same neighbour).  ``measure`` returns a number
    or a tuple of numbers; the result maps each library's name to the list of
    its values, one per round.
    """
    values = {}
    for r in range(rounds):
        for library in rotated(libraries, r):
            settle(pause)
            values.setdefault(library.name, []).append(measure(library))
    return values


def median_and_min(values):
    """The median and the lowest of a list of numbers."""
    return float(np.median(values)), float(min(values))


def marginal_epoch(short, long, epochs):
    """Seconds per epoch from a short (1-epoch) and a long (``1 + E``) fit."""
    return max(long - short, 1e-12) / epochs


def epoch_median_and_min(timings, epochs):
    """Median and min seconds per epoch from each round's (short, long) fits.

    The median is over the rounds' own differences ``T(1 + E) - T(1)``: a
    round whose fits were both slowed down cancels out in its difference.
    The min is the difference of the bests, not the best difference: the
    lowest of several noisy differences is biased low (a round whose
    1-epoch fit was slowed down gives a small difference), while each best
    time is close to the undisturbed one.
    """
    per_round = [marginal_epoch(short, long, epochs) for short, long in timings]
    best_short = min(short for short, _ in timings)
    best_long = min(long for _, long in timings)
    return float(np.median(per_round)), marginal_epoch(best_short, best_long, epochs)


def peak_traced_mib(call):
    """Peak memory (MiB) that tracemalloc sees ``call()`` allocate."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / MIB


@dataclass
class Row:
    """One table row: a library's median and lowest time on a workload.

    ``seconds`` (the median over the rounds), ``gflops``, ``peak_fraction``
    and ``ratio`` are the headline figures; ``seconds_min`` and
    ``ratio_min`` are the same from the lowest times.
    """

    workload: str
    library: str
    dtype: str
    seconds: float  # median over the rounds
    gflops: float  # from the median
    peak_fraction: float | None = None  # of the GEMM peak in ``dtype``
    ratio: float | None = None  # cbp's median seconds / this library's
    extra: dict = field(default_factory=dict)
    seconds_min: float | None = None  # lowest over the rounds
    ratio_min: float | None = None  # cbp's lowest seconds / this library's


def add_ratios(rows, reference="cbp"):
    """Fill ``ratio`` and ``ratio_min`` (the reference's time over each other row's)."""
    medians = {r.workload: r.seconds for r in rows if r.library == reference}
    mins = {r.workload: r.seconds_min for r in rows if r.library == reference}
    for row in rows:
        if row.library != reference and row.workload in medians:
            row.ratio = medians[row.workload] / row.seconds
            row.ratio_min = mins[row.workload] / row.seconds_min
    return rows


def measure_training(workload, libraries, args):
    """Median and min seconds per epoch of every library on a training workload."""
    epochs = args.epochs * workload.epoch_scale
    timings = all_rounds(
        libraries,
        args.rounds,
        lambda lib: lib.epoch_timings(workload, epochs),
        args.pause,
    )
    flops = train_flops(workload.layer_sizes, workload.X.shape[0])
    rows = []
    for name, fits in timings.items():
        median, lowest = epoch_median_and_min(fits, epochs)
        rows.append(Row(workload.name, name, workload.dtype_name, median,
                        flops / median / 1e9, seconds_min=lowest))
    return add_ratios(rows)


def measure_prediction(workload, libraries, args):
    """Seconds and traced peak memory of ``predict_proba`` on the training images."""
    libraries = [lib for lib in libraries if lib.predicts]
    models = {lib.name: lib.fit(workload, 1)[0] for lib in libraries}
    X = workload.X
    calls = all_rounds(
        libraries,
        args.rounds,
        lambda lib: _timed(lambda: lib.predict_proba(models[lib.name], X)),
        args.pause,
    )
    flops = forward_flops(workload.layer_sizes, X.shape[0])
    rows = []
    for lib in libraries:
        median, lowest = median_and_min(calls[lib.name])
        row = Row(workload.name, lib.name, workload.dtype_name, median,
                  flops / median / 1e9, seconds_min=lowest)
        if lib.traces_memory:
            model = models[lib.name]
            row.extra["peak_mib"] = peak_traced_mib(lambda: lib.predict_proba(model, X))
        rows.append(row)
    return add_ratios(rows)


def spin(started):
    """Set ``started``, then loop forever: the other work of a busy machine."""
    started.set()
    while True:
        pass


def busy_libraries(libraries):
    """The selected cbp (default ``n_jobs`` and ``n_jobs=1``), scikit-learn and torch."""
    chosen = []
    for lib in libraries:
        if lib.name == "cbp":
            params = {k: v for k, v in lib.extra_params.items() if k != "n_jobs"}
            chosen.append(EstimatorLibrary("cbp", lib.classifier, lib.regressor, params))
            if "n_jobs" in lib.classifier().get_params():
                chosen.append(EstimatorLibrary("cbp n_jobs=1", lib.classifier,
                                               lib.regressor, {**params, "n_jobs": 1}))
        elif lib.name in ("sklearn", "torch"):
            chosen.append(lib)
    return chosen


def measure_busy(workload, libraries, args):
    """Seconds per epoch, as :func:`measure_training`, beside one spinning process.

    The spinner is a separate process on no particular core, as another
    user's job would be: it shows what a library's threads lose when one of
    the cores they count on is taken. ``spawn`` starts it clean (no copy of
    this process's thread pools).
    """
    context = multiprocessing.get_context("spawn")
    started = context.Event()
    spinner = context.Process(target=spin, args=(started,), daemon=True)
    spinner.start()
    try:
        # the spawned interpreter imports this module first: time nothing
        # until it spins
        if not started.wait(timeout=120):
            raise RuntimeError("the spinning process did not start within 120 s")
        return measure_training(workload, busy_libraries(libraries), args)
    finally:
        spinner.kill()
        spinner.join()


def cbp_departures():
    """Threads that left cbp's epoch teams so far (``cbp._core.departures``),
    or None where cbp's core does not count them."""
    try:
        from cbp import _core
        return _core.departures()
    except (ImportError, AttributeError):
        return None


def measure_fit_memory(workload, libraries):
    """Peak traced memory of one 1-epoch ``fit``, for the estimator libraries."""
    data_mib = workload.X.nbytes / MIB
    rows = []
    for lib in libraries:
        if not lib.traces_memory:
            continue
        peak = peak_traced_mib(lambda: lib.fit(workload, 1))
        rows.append(
            {
                "workload": workload.name,
                "library": lib.name,
                "peak_mib": peak,
                "data_mib": data_mib,
                "multiple": peak / data_mib,
            }
        )
    return rows


def _timed(call):
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


# --------------------------------------------------------------------------
# Machine information
# --------------------------------------------------------------------------


def cpu_model():
    """The CPU model from /proc/cpuinfo, or :func:`platform.processor`."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def available_cores():
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def thread_pools():
    """One line per BLAS / OpenMP library loaded, from threadpoolctl."""
    lines = []
    for info in threadpool_info():
        details = [info.get("version") or "version ?"]
        for key in ("architecture", "threading_layer"):
            if info.get(key):
                details.append(info[key])
        details.append(f"{info['num_threads']} threads")
        name = f"{info['user_api']}: {info['internal_api']} ({_short_path(info)})"
        lines.append(f"{name} {', '.join(details)}")
    return lines


def _short_path(info):
    """A library's path from its package directory on, e.g. ``torch/lib/libgomp.so.1``."""
    parts = Path(info.get("filepath") or info["prefix"]).parts
    if "site-packages" in parts:
        parts = parts[parts.index("site-packages") + 1 :]
    return "/".join(parts[-3:])


def load_average():
    """The 1/5/15-minute load averages, flagged when other work is running."""
    try:
        loads = os.getloadavg()
    except OSError:
        return "unknown"
    text = " ".join(f"{x:.2f}" for x in loads)
    if loads[0] > 0.5:
        text += " (the machine is busy: timings may be unreliable)"
    return text


def machine_info(args, versions):
    """Everything the header reports about the machine and the software."""
    info = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/run.py", *sys.argv[1:]]),
        "cpu": cpu_model(),
        "cores": f"{os.cpu_count()} ({available_cores()} available, "
        f"{args.threads} used)",
        "load average": load_average(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    for name in ALL_LIBRARIES:
        if name in versions:
            info[name] = versions[name]
    info["thread pools"] = thread_pools()
    return info


# --------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------


def _fmt_seconds(seconds):
    return f"{seconds:.4f}" if seconds < 10 else f"{seconds:.2f}"


def _fmt_ratio(ratio):
    return "\u2014" if ratio is None else f"{ratio:.2f}"


def training_table(rows):
    headers = ["workload", "library", "s/epoch median", "min", "cbp/peer median",
               "min", "GFLOP/s", "% of GEMM peak"]
    body = [
        [r.workload, r.library, _fmt_seconds(r.seconds), _fmt_seconds(r.seconds_min),
         _fmt_ratio(r.ratio), _fmt_ratio(r.ratio_min),
         f"{r.gflops:.1f}", f"{100 * r.peak_fraction:.1f}"]
        for r in rows
    ]
    return headers, body


def prediction_table(rows):
    headers = ["workload", "library", "s/call median", "min", "cbp/peer median",
               "min", "GFLOP/s", "% of GEMM peak", "peak extra MiB"]
    body = []
    for r in rows:
        mib = r.extra.get("peak_mib")
        body.append(
            [r.workload, r.library, _fmt_seconds(r.seconds), _fmt_seconds(r.seconds_min),
             _fmt_ratio(r.ratio), _fmt_ratio(r.ratio_min),
             f"{r.gflops:.1f}", f"{100 * r.peak_fraction:.1f}",
             "n/a" if mib is None else f"{mib:.1f}"]
        )
    return headers, body


def memory_table(rows):
    headers = ["workload", "library", "peak MiB", "float32 X MiB", "x training data"]
    body = [
        [r["workload"], r["library"], f"{r['peak_mib']:.1f}", f"{r['data_mib']:.1f}",
         f"{r['multiple']:.2f}"]
        for r in rows
    ]
    return headers, body


def plain_table(headers, body):
    """A fixed-width text table."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *body)]

    def line(cells):
        # the first two columns (names) align left, the numbers right
        return "  ".join(str(c).rjust(w) if i > 1 else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in body)])


def rst_list_table(caption, headers, body):
    """A reStructuredText ``list-table``."""
    lines = [f".. list-table:: {caption}", "   :header-rows: 1", ""]
    for cells in [headers, *body]:
        lines.append(f"   * - {cells[0]}")
        lines.extend(f"     - {c}" for c in cells[1:])
    return "\n".join(lines)


SECTIONS = (
    ("train", "Training", "Seconds per epoch of Adam, batch 200", training_table),
    ("predict", "Inference", "predict_proba on the training images", prediction_table),
    ("memory", "Memory", "Peak traced memory of one 1-epoch fit", memory_table),
    ("busy", "Busy machine", "Seconds per epoch beside one spinning process",
     training_table),
)

READING_NOTE = (
    "Each figure is the median (and the min) over the rounds. "
    "cbp/peer is cbp's time divided by the peer's: below 1 cbp is faster; "
    "against gemm-only it is cbp's epoch over the epoch's GEMMs alone, and "
    "against 'cbp n_jobs=1' cbp's default threads over one thread. "
    "% of GEMM peak compares achieved GFLOP/s with a large numpy matmul in the "
    "workload's dtype (sgemm for float32, dgemm for float64) on the same threads."
)


def header_lines(results):
    """The machine / software header as ``key: value`` lines."""
    lines = []
    for key, value in results["machine"].items():
        if isinstance(value, list):
            lines.append(f"{key}:")
            lines.extend(f"  {v}" for v in value)
        else:
            lines.append(f"{key}: {value}")
    for dtype, gflops in results["gemm_peak_gflops"].items():
        name = "sgemm" if dtype == "float32" else "dgemm"
        lines.append(f"{name} peak: {gflops:.1f} GFLOP/s")
    return lines


def render_plain(results):
    """The whole report as plain text."""
    parts = ["\n".join(header_lines(results)), ""]
    parts += [f"note: {n}" for n in results["notes"]]
    parts += [f"workload {w}" for w in results["workloads"]]
    for key, title, caption, table in SECTIONS:
        if results[key]:
            rows = results[key]
            parts += ["", f"{title}: {caption}", plain_table(*table(rows))]
    parts += ["", READING_NOTE]
    return "\n".join(parts)


def render_rst(results):
    """The whole report as reStructuredText."""
    title = "Benchmark results"
    parts = [title, "=" * len(title), "", "Machine", "-------", "", "::", ""]
    parts += [f"   {line}" for line in header_lines(results)]
    parts += ["", "Workloads", "---------", ""]
    parts += [f"- {w}" for w in results["workloads"]]
    parts += [f"- note: {n}" for n in results["notes"]]
    for key, title, caption, table in SECTIONS:
        if results[key]:
            parts += ["", title, "-" * len(title), "",
                      rst_list_table(caption, *table(results[key]))]
    parts += ["", READING_NOTE, ""]
    return "\n".join(parts)


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds, alternating libraries; median and min reported (5)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per fit (2)")
    parser.add_argument("--threads", type=int, default=available_cores(),
                        help="threads for every library (default: all cores)")
    parser.add_argument("--only", default=",".join(DEFAULT_WORKLOADS),
                        help="comma-separated workloads: " + ", ".join(WORKLOAD_NAMES)
                        + " (default: all but mnist-800)")
    parser.add_argument("--libs", default=",".join(ALL_LIBRARIES),
                        help="comma-separated libraries: " + ", ".join(ALL_LIBRARIES)
                        + " (default: all; missing ones are skipped with a note)")
    parser.add_argument("--pause", type=float, default=None,
                        help="seconds to sleep before each timing so that idle "
                        "BLAS/OpenMP threads stop spinning (0.5; 0.2 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help=f"use {QUICK_SAMPLES} samples per data set (smoke test)")
    parser.add_argument("--mnist", default=None,
                        help="path to mnist.npz (default: $CBP_MNIST or "
                        "../shared/data/mnist.npz from the repository root)")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT),
                        help="reStructuredText output file ('-' to skip)")
    parser.add_argument("--json", default=str(DEFAULT_JSON),
                        help="JSON output file, read by the docs' charts ('-' to skip)")
    parser.add_argument("--peer-as-cbp", action="store_true",
                        help="debugging: use scikit-learn's estimators in place of cbp")
    args = parser.parse_args(argv)
    args.mnist = resolve_mnist_path(args.mnist)
    if args.pause is None:
        args.pause = 0.2 if args.quick else 0.5
    args.only = [w.strip() for w in args.only.split(",") if w.strip()]
    args.libs = [name.strip() for name in args.libs.split(",") if name.strip()]
    unknown = sorted(set(args.only) - set(WORKLOAD_NAMES))
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; choose from {WORKLOAD_NAMES}")
    if args.rounds < 1 or args.epochs < 1 or args.threads < 1:
        parser.error("--rounds, --epochs and --threads must be at least 1")
    return args


def build_workloads(args, notes):
    """The selected workloads; the ones that cannot run are noted and dropped."""
    workloads = []
    for name in args.only:
        try:
            workloads.append(build_workload(name, args))
        except Skip as reason:
            notes.append(f"{name} skipped: {reason}")
            print(f"skipping {name}: {reason}", flush=True)
    return workloads


def measure_gemm_peaks(dtypes, quick):
    """GEMM peak GFLOP/s per dtype name (1024 x 1024 with ``quick``, else 2048)."""
    n = 1024 if quick else 2048
    return {dtype: gemm_peak_gflops(dtype, n, repeats=10) for dtype in dtypes}


def run_workload(workload, libraries, args, results):
    """Measure one workload and append its rows to ``results``."""
    print(f"running {workload.describe()}", flush=True)
    if workload.kind == "train":
        before = cbp_departures()
        results["train"] += measure_training(workload, libraries, args)
        left = None if before is None else cbp_departures() - before
        if left and not args.peer_as_cbp:
            # nothing else runs here: the machine's other work took a CPU
            results["notes"].append(f"{workload.name}: a thread left cbp's team "
                                    f"in {left} epochs")
    elif workload.kind == "predict":
        results["predict"] += measure_prediction(workload, libraries, args)
    elif workload.kind == "busy":
        before = cbp_departures()
        results["busy"] += measure_busy(workload, libraries, args)
        fitted = any(r.library == "cbp" for r in results["busy"])
        if before is not None and fitted and not args.peer_as_cbp:
            # cbp's default fits 1 and 1 + E epochs per round (epoch_timings)
            epochs = args.rounds * (2 + args.epochs * workload.epoch_scale)
            results["notes"].append(
                f"busy: a thread left cbp's default team in "
                f"{cbp_departures() - before} of its {epochs} epochs")
    else:
        results["memory"] += measure_fit_memory(workload, libraries)


def run_benchmarks(args):
    """Run everything selected by ``args``; return the results dictionary."""
    notes = []
    if args.peer_as_cbp:
        notes.append("--peer-as-cbp: 'cbp' rows are scikit-learn's estimators")
    libraries, versions, lib_notes = make_libraries(args.libs, args.threads,
                                                    args.peer_as_cbp)
    for note in lib_notes:
        print(note, flush=True)
    notes += lib_notes
    workloads = build_workloads(args, notes)
    results = {"train": [], "predict": [], "memory": [], "busy": [], "notes": notes,
               "workloads": [w.describe() for w in workloads]}
    dtypes = sorted({w.dtype_name for w in workloads})
    with threadpool_limits(limits=args.threads):
        results["machine"] = machine_info(args, versions)
        peaks = measure_gemm_peaks(dtypes, args.quick)
        for workload in workloads:
            run_workload(workload, libraries, args, results)
        # The peak is a maximum: measure again at the end and keep the better
        # value, in case a busy moment of the machine spoilt the first one.
        again = measure_gemm_peaks(dtypes, args.quick)
    results["gemm_peak_gflops"] = {d: max(peaks[d], again[d]) for d in dtypes}
    for row in results["train"] + results["predict"] + results["busy"]:
        row.peak_fraction = row.gflops / results["gemm_peak_gflops"][row.dtype]
    return results


def write_outputs(results, args):
    """Write the rst report and the JSON results (each unless its path is '-')."""
    if args.output != "-":
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(render_rst(results))
        print(f"\nwrote {output}")
    if args.json != "-":
        serialisable = {"source": f"python benchmarks/run.py, {results['machine']['date']}"}
        serialisable.update(results)
        for key in ("train", "predict", "busy"):
            serialisable[key] = [asdict(r) for r in results[key]]
        output = Path(args.json)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(serialisable, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {output}")


def main(argv=None):
    args = parse_args(argv)
    results = run_benchmarks(args)
    print()
    print(render_plain(results))
    write_outputs(results, args)


if __name__ == "__main__":
    main()
