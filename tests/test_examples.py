"""The scripts in examples/ run, on small sizes (--quick), and print their results."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name, *args, cwd=None):
    """Run ``examples/name`` in a fresh interpreter; return its stdout."""
    # one OpenMP thread: the examples are small, and pytest may share the cores
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--quick", *args],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_xor_truth_table():
    out = run_example("xor.py")
    rows = re.findall(r"^\s+(\d)\s+(\d) \|\s+(\d)\s+\| (\d\.\d+)\s+(\d)$", out, re.M)
    assert len(rows) == 4
    for a, b, target, prob, pred in rows:
        assert int(target) == int(a) ^ int(b) == int(pred)
        assert (float(prob) > 0.5) == bool(int(target))
    assert "all four correct: True" in out


def test_regression_recovers_the_coefficients():
    out = run_example("regression.py")
    found = re.search(r"least squares\|: (\S+) \(no hidden layer\), (\S+) \(identity", out)
    assert found, out
    assert float(found.group(1)) < 1e-5 and float(found.group(2)) < 1e-3
    true_err = float(re.search(r"max \|network - true\|: (\S+)", out).group(1))
    assert true_err < 0.05


def test_mnist(mnist_path):
    out = run_example("mnist.py", "--data", str(mnist_path))
    assert "MNIST: 3000 training, 1000 test images" in out
    errors = [float(e) for e in re.findall(r"test error (\S+)%", out)]
    assert len(errors) == 2 and all(e < 25 for e in errors), out


def test_mnist_without_data_says_so(tmp_path):
    out = run_example("mnist.py", "--data", str(tmp_path / "absent.npz"))
    assert out.startswith("MNIST skipped: no data at")


def test_plot_training_saves_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "training.png"
    out = run_example("plot_training.py", "--out", str(png), cwd=tmp_path)
    assert f"saved {png}" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
