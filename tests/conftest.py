import os
from pathlib import Path

import numpy as np
import pytest

#: relative tolerance per dtype for comparisons against numpy/scikit-learn
RTOL = {np.float32: 1e-5, np.float64: 1e-12}


@pytest.fixture
def mnist_path():
    """Path to the real MNIST file, or skip with the reason."""
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist.npz"
    path = Path(os.environ.get("CBP_MNIST", default))
    if not path.exists():
        pytest.skip(f"MNIST not found at {path}; set CBP_MNIST to the mnist.npz path")
    return path
