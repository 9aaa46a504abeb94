import os
from pathlib import Path

import pytest

SOURCE_ROOT = Path(__file__).resolve().parents[1]


def _cbp_dir():
    import cbp

    return Path(cbp.__file__).resolve().parent


def pytest_sessionstart(session):
    """With CBP_TEST_INSTALLED=1, refuse to test the source tree's cbp/.

    CI sets it when it runs the suite against the built wheel, so that the
    run fails instead of silently testing the source tree.
    """
    if os.environ.get("CBP_TEST_INSTALLED", "0") not in ("", "0"):
        where = _cbp_dir()
        if where.is_relative_to(SOURCE_ROOT):
            raise pytest.UsageError(
                f"CBP_TEST_INSTALLED is set but cbp was imported from the source "
                f"tree ({where}); run pytest from outside {SOURCE_ROOT}"
            )


def pytest_report_header(config):
    """Say which cbp the suite tests."""
    import cbp

    return f"cbp {cbp.__version__} from {_cbp_dir()}"


@pytest.fixture(scope="module")
def digits():
    """600 rows of scikit-learn's digits, features scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X[:600] / 16, y[:600]


@pytest.fixture
def mnist_path():
    """Path to the real MNIST file, or skip with the reason."""
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist.npz"
    path = Path(os.environ.get("CBP_MNIST", default))
    if not path.exists():
        pytest.skip(f"MNIST not found at {path}; set CBP_MNIST to the mnist.npz path")
    return path


@pytest.fixture
def more_threads_than_cpus():
    """Let n_jobs up to 16 run that many threads whatever the machine's CPUs.

    The core caps its threads by the CPUs (``cbp._core.cpu_count``); tests
    that compare results across thread counts would otherwise compare two
    threads with two on a two-core machine. Yields the CPU count set.
    """
    from cbp import _core

    previous = _core.set_cpu_count(16)
    try:
        yield 16
    finally:
        _core.set_cpu_count(previous)
