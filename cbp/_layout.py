"""The flat parameter vector: where each layer's arrays sit, and block sizes.

The core trains one flat vector holding every weight matrix, then every
bias vector (then, with PReLU, every hidden unit's slope); the estimators'
``coefs_``, ``intercepts_`` and ``prelu_slopes_`` are views into it.
"""

import numpy as np

from . import _core

# Initial PReLU slope of every hidden unit (He et al., 2015).
_PRELU_INIT = 0.25

# Rows per block in prediction and in lbfgs's full-batch passes: the
# working memory is bounded by the block, not by the number of samples.
_BLOCK_ELEMENTS = 1 << 19
_MIN_BLOCK_ROWS = 256
_MAX_BLOCK_ROWS = 8192


def _block_rows(n_samples, width):
    """Rows per block so that a block holds about ``_BLOCK_ELEMENTS`` values."""
    rows = _BLOCK_ELEMENTS // max(int(width), 1)
    rows = min(max(rows, _MIN_BLOCK_ROWS), _MAX_BLOCK_ROWS)
    return int(max(1, min(rows, n_samples)))


def _loss_grad_rows(network, data):
    """Rows per block of :meth:`cbp._core.Network.loss_grad` over ``data``
    (see :func:`_block_rows`): its workspace per row is the width."""
    width = _core.train_workspace_size(
        network.units, 1, prelu=network.prelu, sparse=data.sparse
    )
    return _block_rows(data.n_samples, width)


class _Layout:
    """Shapes of a network and where its arrays sit in the flat vector.

    Parameters
    ----------
    units : list of int
        Layer widths, input first, output last.
    prelu : bool, default=False
        Whether the vector ends with one PReLU slope per hidden unit.
    """

    def __init__(self, units, prelu=False):
        self.units = np.asarray(units, dtype=np.intc)
        self.prelu = bool(prelu)
        self.offsets, self.n_params = _core.param_offsets(self.units, prelu=self.prelu)
        self.n_layers = len(units) - 1
        self.n_slopes = int(sum(self.units[1:-1])) if self.prelu else 0

    def slope_views(self, theta):
        """Return the PReLU slopes of each hidden layer: views into ``theta``."""
        if not self.prelu:
            return []
        pos = self.n_params - self.n_slopes
        views = []
        for width in self.units[1:-1]:
            views.append(theta[pos : pos + width])
            pos += int(width)
        return views

    def views(self, theta):
        """Return (coefs, intercepts): lists of views into ``theta``."""
        L, u, off = self.n_layers, self.units, self.offsets
        coefs = [
            theta[off[i] : off[i] + u[i] * u[i + 1]].reshape(u[i], u[i + 1])
            for i in range(L)
        ]
        intercepts = [theta[off[L + i] : off[L + i] + u[i + 1]] for i in range(L)]
        return coefs, intercepts

    def is_packed(self, theta, coefs, intercepts, slopes=()):
        """True when ``coefs``/``intercepts`` (and the PReLU ``slopes``) are
        exactly the views of ``theta``."""
        if theta is None or len(coefs) != self.n_layers:
            return False
        if len(intercepts) != self.n_layers or theta.shape[0] != self.n_params:
            return False
        slopes = list(slopes) if self.prelu else []
        expected_slopes = self.slope_views(theta)
        if len(slopes) != len(expected_slopes):
            return False
        expected_coefs, expected_intercepts = self.views(theta)
        for arr, ref in zip(
            list(coefs) + list(intercepts) + slopes,
            expected_coefs + expected_intercepts + expected_slopes,
        ):
            if not isinstance(arr, np.ndarray) or arr.dtype != theta.dtype:
                return False
            if arr.shape != ref.shape or not arr.flags.c_contiguous:
                return False
            if arr.__array_interface__["data"][0] != (
                ref.__array_interface__["data"][0]
            ):
                return False
        return True

    def pack(self, coefs, intercepts, dtype, slopes=None):
        """Copy ``coefs``/``intercepts`` (and, with PReLU, ``slopes``: None
        for the initial 0.25) into a new flat vector of ``dtype``."""
        shapes = [(int(self.units[i]), int(self.units[i + 1])) for i in range(self.n_layers)]
        for i, (c, b) in enumerate(zip(coefs, intercepts)):
            if np.shape(c) != shapes[i] or np.shape(b) != (shapes[i][1],):
                raise ValueError(
                    f"coefs_[{i}] has shape {np.shape(c)} and intercepts_[{i}] "
                    f"{np.shape(b)}; the network needs {shapes[i]} and "
                    f"({shapes[i][1]},)."
                )
        parts = list(coefs) + list(intercepts)
        if self.prelu:
            widths = [int(u) for u in self.units[1:-1]]
            if slopes is None:
                slopes = [np.full(w, _PRELU_INIT) for w in widths]
            if [np.shape(s) for s in slopes] != [(w,) for w in widths]:
                raise ValueError(
                    f"prelu_slopes_ have shapes {[np.shape(s) for s in slopes]}; "
                    f"the hidden layers need {[(w,) for w in widths]}."
                )
            parts += list(slopes)
        return np.concatenate([np.asarray(a, dtype=dtype).ravel() for a in parts])
