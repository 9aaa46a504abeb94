"""Training feedback: verbose progress lines and per-epoch callbacks."""

import io
import re
import sys
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning

from cbp import MLPClassifier, MLPRegressor


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:400] / 16, y[:400]


def _fit_quiet(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y)


def test_verbose_prints_one_plain_line_per_epoch(digits, capsys):
    X, y = digits
    clf = _fit_quiet(MLPClassifier((10,), max_iter=4, verbose=True, random_state=0), X, y)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == clf.n_iter_ == 4
    for i, (line, loss) in enumerate(zip(lines, clf.loss_curve_), start=1):
        # scikit-learn's text first, then the timing
        assert line.startswith("Iteration %d, loss = %.8f, " % (i, loss))
        assert "/epoch" in line and "ETA" in line and "max_iter=4" in line
        assert "\r" not in line


def test_verbose_shows_validation_score(digits, capsys):
    X, y = digits
    clf = _fit_quiet(
        MLPClassifier((10,), max_iter=3, verbose=True, early_stopping=True,
                      random_state=0), X, y,
    )
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    for line, score in zip(lines, clf.validation_scores_):
        assert "validation score = %.6f" % score in line


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_verbose_updates_in_place_on_a_terminal(digits, monkeypatch):
    X, y = digits
    term = _Terminal()
    monkeypatch.setattr(sys, "stdout", term)
    clf = _fit_quiet(MLPClassifier((10,), max_iter=5, verbose=True, random_state=0), X, y)
    out = term.getvalue()
    # one carriage-return update per epoch, one newline at the end
    assert out.count("\r") == clf.n_iter_ == 5
    assert out.count("\n") == 1 and out.endswith("\n")
    last = out.split("\r")[-1]
    assert last.startswith("Iteration 5, loss = %.8f" % clf.loss_curve_[-1])


def test_stopping_message_starts_its_own_line_on_a_terminal(monkeypatch):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(60, 3))
    y = X @ [1.0, 2.0, -1.0]
    term = _Terminal()
    monkeypatch.setattr(sys, "stdout", term)
    reg = MLPRegressor(hidden_layer_sizes=(5,), max_iter=500, tol=10.0,
                       n_iter_no_change=2, verbose=True, random_state=0).fit(X, y)
    lines = term.getvalue().split("\n")
    assert reg.n_iter_ == 4
    assert lines[0].split("\r")[-1].startswith("Iteration 4, loss")
    assert lines[1].startswith("Training loss did not improve")


def test_callbacks_see_every_epoch(digits):
    X, y = digits
    seen = []

    def record(est, info):
        assert est.n_iter_ == info["epoch"] == len(est.loss_curve_)
        seen.append(info)

    clf = _fit_quiet(
        MLPClassifier((10,), max_iter=4, early_stopping=True, callbacks=[record],
                      random_state=0), X, y,
    )
    assert [i["epoch"] for i in seen] == [1, 2, 3, 4]
    assert [i["loss"] for i in seen] == clf.loss_curve_
    assert [i["validation_score"] for i in seen] == clf.validation_scores_
    assert [i["n_samples_seen"] for i in seen][-1] == clf.t_
    info = seen[0]
    assert set(info) >= {"epoch", "loss", "validation_score", "time", "elapsed",
                         "eta", "learning_rate", "max_iter"}
    assert info["time"] >= 0 and info["eta"] >= 0 and info["max_iter"] == 4
    assert seen[-1]["eta"] == 0


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_callback_returning_true_stops_without_warning(digits, solver):
    X, y = digits
    calls = []

    def stop_at_3(est, info):
        calls.append(info["epoch"])
        return info["epoch"] == 3

    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        # max_iter=3: the stop falls on the last epoch, still no warning
        for max_iter in (50, 3):
            calls.clear()
            clf = MLPClassifier((10,), solver=solver, max_iter=max_iter,
                                callbacks=(stop_at_3,), random_state=0).fit(X, y)
            assert clf.n_iter_ == 3 and len(clf.loss_curve_) == 3
            assert calls == [1, 2, 3]
    # training stopped early is the same as training for 3 epochs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = MLPClassifier((10,), solver=solver, max_iter=3, random_state=0).fit(X, y)
    np.testing.assert_array_equal(clf.coefs_[0], ref.coefs_[0])


def test_every_callback_runs_even_after_a_stop(digits):
    X, y = digits
    calls = []
    clf = MLPClassifier(
        (10,), max_iter=10, random_state=0,
        callbacks=[lambda e, i: True, lambda e, i: calls.append(i["epoch"])],
    ).fit(X, y)
    assert clf.n_iter_ == 1 and calls == [1]


def test_callbacks_under_partial_fit(digits):
    X, y = digits
    infos = []
    clf = MLPClassifier((10,), callbacks=[lambda e, i: infos.append(i)], random_state=0)
    clf.partial_fit(X, y, classes=np.unique(y))
    clf.partial_fit(X, y)
    # as in scikit-learn, n_iter_ counts the epochs of the last call
    assert [i["epoch"] for i in infos] == [1, 1]
    assert infos[1]["n_samples_seen"] == 2 * len(X)
    assert all(i["eta"] is None for i in infos)


def test_callback_that_is_not_callable(digits):
    X, y = digits
    with pytest.raises(TypeError, match=r"callbacks\[1\]"):
        MLPClassifier((5,), max_iter=2, callbacks=[print, "stop"]).fit(X, y)


def test_callbacks_refused_by_lbfgs(digits):
    X, y = digits
    with pytest.raises(ValueError, match="no epochs"):
        MLPClassifier((5,), solver="lbfgs", callbacks=[print]).fit(X, y)
    # an empty list is no callback
    _fit_quiet(MLPClassifier((5,), solver="lbfgs", max_iter=5, callbacks=[]), X, y)


def test_callbacks_must_be_a_list(digits):
    X, y = digits
    with pytest.raises(ValueError, match="callbacks"):
        MLPClassifier((5,), callbacks=print).fit(X, y)


def test_verbose_time_format():
    from cbp._progress import _format_seconds

    assert [_format_seconds(s) for s in (0.0874, 42.04, 187, 7500)] == [
        "87ms", "42.0s", "3m07s", "2h05m"
    ]
    assert re.fullmatch(r"\d+ms", _format_seconds(0.0))


def test_live_line_detection():
    from cbp._progress import _is_live

    assert _is_live(_Terminal()) and not _is_live(io.StringIO())
    closed = io.StringIO()
    closed.close()  # isatty() raises ValueError
    assert not _is_live(closed)
    # Jupyter's stream is no TTY but renders carriage returns
    OutStream = type("OutStream", (io.StringIO,), {"__module__": "ipykernel.iostream"})
    assert _is_live(OutStream())
