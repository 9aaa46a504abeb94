"""`cython -a` on the core: the nogil code has no Python interaction.

Cython scores each source line by the Python C-API calls it generates.
Every line of a ``cdef ... nogil`` function and of a ``with nogil:``
block must score 0, except the signal check, which takes the GIL once
per batch on purpose.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ALLOWED = {"with gil:", "return _check_signals() != 0"}


def _nogil_lines(lines):
    """Line numbers of nogil cdef functions and of `with nogil:` blocks."""
    out = set()
    starts = [i for i, l in enumerate(lines, 1) if l.startswith(("cdef ", "def "))]
    for k, a in enumerate(starts):
        b = starts[k + 1] - 1 if k + 1 < len(starts) else len(lines)
        j, header = a - 1, ""
        while j < len(lines) and not lines[j].rstrip().endswith(":"):
            header += lines[j]
            j += 1
        header += lines[j] if j < len(lines) else ""
        if header.startswith("cdef") and "nogil" in header:
            out.update(range(a, b + 1))
    for i, line in enumerate(lines, 1):
        if line.strip().startswith("with nogil"):
            indent = len(line) - len(line.lstrip())
            j = i
            while j < len(lines) and (
                not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > indent
            ):
                j += 1
                out.add(j)
    return out


def test_nogil_code_has_no_python_interaction(tmp_path):
    pytest.importorskip("Cython")
    if not (SRC / "_core.pyx").exists():
        pytest.skip(f"the Cython sources are not at {SRC}")
    for f in SRC.iterdir():
        if f.suffix in (".pyx", ".pxd", ".h"):
            shutil.copy(f, tmp_path)
    directives = ["-X", "boundscheck=False", "-X", "wraparound=False",
                  "-X", "initializedcheck=False", "-X", "cdivision=True"]
    subprocess.run(
        [sys.executable, "-m", "cython", "-3", "-a", "-I", str(tmp_path), *directives,
         str(tmp_path / "_core.pyx"), "-o", str(tmp_path / "_core.c")],
        check=True, capture_output=True,
    )
    html = (tmp_path / "_core.html").read_text()
    scores = {
        int(n): int(s)
        for s, n in re.findall(
            r'<pre class="cython line score-(\d+)"[^>]*>\+?<span class="">(\d+)</span>', html
        )
    }
    lines = (tmp_path / "_core.pyx").read_text().splitlines()
    checked = _nogil_lines(lines)
    assert len(checked) > 200, "the nogil code was not found"
    assert set(scores) & checked, "the annotation could not be read"
    offending = [
        f"{n}: {lines[n - 1].strip()} (score {scores[n]})"
        for n in sorted(checked)
        if scores.get(n, 0) > 0 and lines[n - 1].strip() not in ALLOWED
    ]
    assert not offending, "Python interaction in nogil code:\n" + "\n".join(offending)
