"""What "the same up to rounding" means in the thread-count tests.

cbp promises the same bits for the same ``n_jobs`` on the same machine, and
results that agree to rounding across ``n_jobs``: each thread makes its own
BLAS calls over its share of rows, and OpenBLAS picks its kernel by the
call's shape on some CPUs (e.g. the small-matrix and direct paths of its
SkylakeX kernels), so a row can round differently when the share that holds
it has another size. On other kernels (Haswell, Zen, Sandybridge) the
shares' 48-row alignment gives identical bits, but no test relies on that.

The tolerances bound how far such differences grow over the few epochs the
tests train: perturbing one input value in ten by one ulp moved the weights
of those fits by at most 1.3e-7 (float32) and 5e-16 (float64).
"""

import numpy as np

#: rtol and atol of :func:`assert_equal_to_rounding`, per dtype
ROUNDING = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


def assert_equal_to_rounding(actual, expected, dtype=None):
    """Assert ``actual`` equals ``expected`` up to the rounding of ``dtype``,
    the dtype the numbers were computed in (by default ``actual``'s: pass it
    for float64 results of a float32 computation, such as ``loss_``)."""
    actual = np.asarray(actual)
    tol = ROUNDING[np.dtype(dtype or actual.dtype)]
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol)
