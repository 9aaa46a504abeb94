"""The parameters and attributes that MLPClassifier's and MLPRegressor's docstrings share."""

_CLASS_DOC_PARAMS = """
    hidden_layer_sizes : array-like of shape (n_layers - 2,), default=(100,)
        The ith element is the number of neurons in the ith hidden layer.

    activation : {'identity', 'logistic', 'tanh', 'relu', 'leaky_relu', \
            'elu', 'softplus', 'prelu'}, default='relu'
        Activation function f of the hidden layers: 'identity' f(z) = z,
        'logistic' f(z) = 1 / (1 + exp(-z)), 'tanh' f(z) = tanh(z),
        'relu' f(z) = max(0, z). Beyond scikit-learn: 'leaky_relu'
        f(z) = z if z > 0 else leaky_relu_slope * z; 'elu'
        f(z) = z if z > 0 else exp(z) - 1; 'softplus' f(z) = log(1 + exp(z));
        'prelu' f(z) = z if z > 0 else a_j * z with a slope a_j learned per
        hidden unit (initially 0.25, not penalised by alpha), stored in the
        flat parameter vector after the biases and exposed as
        ``prelu_slopes_``.

    solver : {'lbfgs', 'sgd', 'adam', 'rmsprop'}, default='adam'
        The weight optimizer: 'lbfgs' (quasi-Newton, scipy's L-BFGS-B on
        the full-batch loss and gradient from the core), 'sgd' (mini-batch
        gradient descent with momentum), 'adam' (Kingma and Ba) or, beyond
        scikit-learn, 'rmsprop' (Tieleman and Hinton:
        ``v = rho * v + (1 - rho) * g²``,
        ``theta -= learning_rate_init * g / (sqrt(v) + epsilon)``).

    alpha : float, default=0.0001
        Strength of the L2 penalty on the weights (not the biases),
        ``0.5 * alpha * ||W||² / sw_sum`` added to the loss, where sw_sum is
        the batch's number of samples (or sum of sample weights).

    batch_size : int or 'auto', default='auto'
        Mini-batch size for the stochastic solvers; 'auto' is
        ``min(200, n_samples)``. Ignored by 'lbfgs'.

    learning_rate : {'constant', 'invscaling', 'adaptive'}, default='constant'
        Learning-rate schedule for 'sgd': 'constant' keeps
        learning_rate_init; 'invscaling' uses
        ``learning_rate_init / (t_ + 1) ** power_t`` after each epoch;
        'adaptive' divides the rate by 5 each time the loss (or validation
        score) stops improving by tol for n_iter_no_change epochs.

    learning_rate_init : float, default=0.001
        The initial learning rate (eta) of 'sgd', 'adam' and 'rmsprop'.

    power_t : float, default=0.5
        Exponent of the 'invscaling' schedule.

    max_iter : int, default=200
        Maximum number of epochs (stochastic solvers) or iterations (lbfgs).

    shuffle : bool, default=True
        Whether to shuffle samples in each epoch (stochastic solvers).

    random_state : int, RandomState instance or None, default=None
        Seeds the weight initialisation, the shuffling and the validation
        split. The draws are the same as scikit-learn's, so the same seed
        gives the same initial weights and batch order.

    tol : float, default=1e-4
        Tolerance for the optimization: training stops (or 'adaptive'
        lowers the rate) after n_iter_no_change epochs that do not improve
        the loss or validation score by at least tol.

    verbose : bool, default=False
        Whether to print progress messages to stdout. The stochastic
        solvers print one line per epoch, starting like scikit-learn's
        ``Iteration 3, loss = 0.12345678`` and adding the validation score
        (under early stopping), the epoch's time and the estimated time
        left until max_iter. On a terminal (or in a Jupyter notebook) the
        line is rewritten in place; otherwise each epoch prints its own line.

    warm_start : bool, default=False
        Reuse the current ``coefs_`` and ``intercepts_`` as the starting
        point of the next call to fit.

    momentum : float, default=0.9
        Momentum of 'sgd', in [0, 1].

    nesterovs_momentum : bool, default=True
        Whether 'sgd' uses Nesterov's momentum.

    early_stopping : bool, default=False
        Hold out validation_fraction of the training data and stop when
        its score stops improving; the best weights are restored.

    validation_fraction : float, default=0.1
        Fraction of the training data held out for early stopping.

    beta_1 : float, default=0.9
        Decay rate of Adam's first-moment estimate, in [0, 1).

    beta_2 : float, default=0.999
        Decay rate of Adam's second-moment estimate, in [0, 1).

    epsilon : float, default=1e-8
        Numerical-stability constant of 'adam' and 'rmsprop'.

    n_iter_no_change : int, default=10
        Number of epochs without improvement by tol before stopping.

    max_fun : int, default=15000
        Maximum number of loss evaluations of 'lbfgs'.

    n_jobs : int or None, default=None
        Number of threads the core splits each batch over (OpenMP; BLAS is
        kept single-threaded inside them), from 1 to 65536, or -1 to
        -65536 counting back from all. None uses all the threads OpenMP
        offers (``OMP_NUM_THREADS`` or the number of CPUs), -1 as well, -2
        all but one. The threads used are capped by the CPUs this process
        may run on (``os.sched_getaffinity``) and ``OMP_THREAD_LIMIT``,
        and are 1 inside another OpenMP region and in a child process
        forked (``os.fork``, multiprocessing's 'fork') from one that had
        imported cbp, where OpenMP's threads are gone. The same n_jobs gives
        the same bits; other values agree to rounding (bit for bit on many
        BLAS kernels). Not in scikit-learn, whose MLP uses BLAS's threads.
        With ``comm``, None gives each rank its node's cores divided by
        the node's ranks.

    callbacks : list or tuple of callable, default=None
        Functions ``f(estimator, info)`` called after each epoch of the
        stochastic solvers ('sgd', 'adam', 'rmsprop'), in order, with the
        estimator and a dict of the epoch's figures: ``epoch``
        (= ``n_iter_``), ``loss``, ``validation_score`` (None without early
        stopping), ``time`` (seconds of the epoch), ``elapsed``, ``eta``
        (seconds left until max_iter; None under partial_fit),
        ``learning_rate``, ``n_samples_seen`` (= ``t_``) and ``max_iter``.
        Training stops after the epoch when any of them returns True (without
        a ConvergenceWarning; ``n_iter_`` counts the epochs run). 'lbfgs' has
        no epochs and refuses callbacks. Like every parameter, the list is
        deep-copied by :func:`sklearn.clone` (and so inside GridSearchCV or
        cross_val_score): a callback that is a bound method then works on a
        copy of its object. Not in scikit-learn. scikit-learn's callback
        API (scikit-learn >= 1.9) is set with ``set_callbacks`` instead.

    comm : mpi4py.MPI.Comm or None, default=None
        Train data-parallel over the ranks of this MPI communicator
        (``pip install cbp[mpi]``; launch with ``mpiexec -n K python
        script.py``): every rank calls ``fit``/``partial_fit`` with its own
        shard of the rows, the gradients of each global batch of
        ``K * batch_size`` rows are summed with ``Allreduce``, and all
        ranks end with the same weights, equal (to rounding) to a
        single-process fit with ``batch_size=K * batch_size`` on the
        shards concatenated in rank order; the global batch order is
        defined in :mod:`cbp._distributed`. Every option trains alike:
        ``class_weight='balanced'`` counts the classes of all ranks,
        'lbfgs' minimises the loss of all ranks' rows, and early stopping
        holds out the single-process split of the concatenated shards.
        None (the default) trains in this process, as scikit-learn does.
        Not in scikit-learn.

    leaky_relu_slope : float, default=0.01
        Slope of 'leaky_relu' for z <= 0, >= 0 (0 gives 'relu'). Ignored
        by the other activations.

    dropout : float or array-like of float, default=0.0
        Dropout rate of the hidden layers, one for all or one per hidden
        layer, each in [0, 1); 0 turns it off (and training is then
        exactly as without it). While training with a stochastic solver,
        each hidden unit's activation is set to 0 with that probability and
        the kept ones are scaled by ``1 / (1 - rate)`` (inverted dropout);
        prediction uses the whole network. The masks come from a hash of
        (a key drawn from random_state, the sample's position counted over
        all epochs, the unit), so they are reproducible with random_state
        and independent of n_jobs. 'lbfgs' rejects rates > 0. ``loss_`` and
        ``loss_curve_`` are the losses of the thinned networks.

    rho : float, default=0.9
        Decay rate of 'rmsprop''s running mean of squared gradients, in
        [0, 1). Ignored by the other solvers.

    weight_decay : float, default=0.0
        Decoupled weight decay of the stochastic solvers (Loshchilov and
        Hutter; 'adam' becomes AdamW): each step also does
        ``W -= learning_rate * weight_decay * W`` on the weights (not the
        biases or PReLU slopes), apart from the gradient and so apart from
        Adam's and RMSprop's scaling. Unlike alpha it is not part of the
        loss. 'lbfgs' has no step size to scale it and rejects values > 0.
"""

_CLASS_DOC_ATTRS = """
    loss_ : float
        The current loss, as scikit-learn reports it (squared error
        averaged over outputs, cross-entropies summed over outputs,
        plus the L2 penalty).

    best_loss_ : float or None
        The minimum loss reached (None with early stopping).

    loss_curve_ : list of float
        The loss after each epoch (stochastic solvers).

    validation_scores_ : list of float or None
        Validation score after each epoch with early stopping, else None.

    validation_loss_curve_ : list of float or None
        With early stopping, the loss on the held-out validation rows after
        each epoch (with the epoch's final weights, the whole network: no
        dropout), else None; like ``validation_scores_``, set by the
        stochastic solvers only. The same loss as ``loss_curve_``: each
        row's loss weighted by its sample weight (class weights included),
        reported as ``loss_`` is, plus the L2 penalty as each training
        batch has it, ``0.5 * alpha * ||W||² / sw_sum`` with sw_sum the
        rows' weight sum (here the validation rows', there the batch's).
        With ``alpha=0`` and no dropout the two curves compare directly
        (``loss_curve_`` averages the epoch's batches while the weights
        move). Not in scikit-learn.

    best_validation_score_ : float or None
        Best validation score with early stopping, else None.

    t_ : int
        Number of training samples seen by the solver.

    coefs_ : list of ndarray of shape (fan_in, fan_out)
        The weight matrix W_l of each layer: views into one flat
        parameter vector shared with the core.

    prelu_slopes_ : list of ndarray of shape (n_units,)
        With ``activation='prelu'`` only: the learned slope of each hidden
        unit for z <= 0, one array per hidden layer, views into the same
        flat parameter vector (after the biases).

    intercepts_ : list of ndarray of shape (fan_out,)
        The bias vector b_l of each layer.

    n_features_in_ : int
        Number of features seen during fit.

    feature_names_in_ : ndarray of shape (``n_features_in_``,)
        Names of features seen during fit, when X has string column names.

    n_iter_ : int
        Number of epochs (or lbfgs iterations) run.

    n_layers_ : int
        Number of layers, input and output included.

    n_outputs_ : int
        Number of outputs.

    out_activation_ : str
        Name of the output activation.
"""
