# cython: language_level=3
"""The core's codes and structs, shared by every part of it.

Codes are C enums (no run-time cost); ``_core.pyx`` exposes the ones the
estimators pass (``HIDDEN_ACTIVATIONS``, ``OUTPUT_ACTIVATIONS``,
``REGRESSION_LOSSES``, ``SOLVERS``, ``STATUS_*``) as Python tables.
"""

from libc.stdint cimport uint64_t


cdef enum:
    # Hidden-layer activations.
    ACT_IDENTITY = 0
    ACT_LOGISTIC = 1
    ACT_TANH = 2
    ACT_RELU = 3
    ACT_LEAKY_RELU = 4   # z > 0 ? z : act_param * z
    ACT_ELU = 5          # z > 0 ? z : exp(z) - 1
    ACT_SOFTPLUS = 6     # log(1 + exp(z))
    ACT_PRELU = 7        # z > 0 ? z : a_j * z, a learned slope per unit
    N_ACTIVATIONS = 8    # the codes are 0 .. N_ACTIVATIONS - 1
    # Output codes the entry points take: a link and a loss together
    # (_output_pair in _losses.pxd maps each to its pair).
    OUT_IDENTITY = 0   # identity + half squared error
    OUT_LOGISTIC = 1   # logistic + binary cross-entropy
    OUT_SOFTMAX = 2    # softmax + cross-entropy
    OUT_EXP = 3        # exp (log link) + half Poisson deviance
    OUT_HUBER = 4      # identity + Huber loss (threshold loss_param)
    # Thread shares of GEMM rows start at multiples of this (see _part_q).
    SPLIT_QUANTUM = 48
    # Solvers with an in-core step.
    SOLVER_SGD = 0
    SOLVER_ADAM = 1
    SOLVER_RMSPROP = 2
    INT_MAX = 2147483647

cdef enum:
    # Output links: the prediction is link(Z + b).
    LINK_IDENTITY = 0
    LINK_LOGISTIC = 1
    LINK_SOFTMAX = 2
    LINK_EXP = 3

cdef enum:
    # Losses, each summed over the outputs of a row.
    LOSS_SQUARED_ERROR = 0         # half squared error
    LOSS_BINARY_CROSS_ENTROPY = 1  # per output, of a logistic link
    LOSS_CROSS_ENTROPY = 2         # over the outputs, of a softmax link
    LOSS_POISSON = 3               # half Poisson deviance
    LOSS_HUBER = 4                 # threshold Net.loss_param

# Return codes of Network.epoch.
cdef enum:
    _STATUS_OK = 0
    _STATUS_NONFINITE_LOSS = 1      # flags, or-ed together
    _STATUS_NONFINITE_PARAMS = 2


cdef struct Net:
    int n_layers              # number of weight layers (n_layers_ - 1)
    const int* units          # n_layers + 1 widths; units[0] = n_features
    const Py_ssize_t* offsets # 2 * n_layers starts of W_l then b_l in theta
    Py_ssize_t n_coefs        # weights at the head of theta (no biases)
    Py_ssize_t n_params
    Py_ssize_t sum_units      # sum of units[1:]
    int max_hidden            # widest hidden layer (0 when there is none)
    int hidden_act
    int link                  # LINK_* of the output layer
    int loss                  # LOSS_* of the output layer
    int n_threads
    double act_param          # leaky_relu's slope for z <= 0
    Py_ssize_t slope_offset   # prelu: where the slopes start in theta, else -1
    double loss_param         # huber: the threshold delta
    const double* dropout     # rate per hidden layer (index l - 1), or NULL
    uint64_t drop_seed        # key of the dropout masks' hash
    uint64_t drop_row0        # counter of row 0 of the call (see _drop_keep)
    const Py_ssize_t* drop_pos  # row i's counter is drop_row0 + drop_pos[i];
                                # NULL: drop_row0 + i


cdef struct CSR:
    # A sparse input batch source: X in compressed sparse rows, the values
    # passed separately (fused type) where a dense X would be.
    const Py_ssize_t* indptr
    const Py_ssize_t* indices
    const Py_ssize_t* rowmap  # matrix row of the epoch's i-th row, or NULL: i
    Py_ssize_t n_rows
    Py_ssize_t n_cols
    Py_ssize_t nnz


cdef struct Optim:
    int solver
    double learning_rate
    double momentum
    bint nesterov
    double beta_1
    double beta_2
    double epsilon
    double rho                # RMSprop's decay of the mean square
    double weight_decay       # decoupled: theta -= lr * weight_decay * theta


cdef struct Team:
    int dynamic       # the caller's OMP_DYNAMIC setting, restored after
    int short_team    # set when a region got fewer threads than asked for
