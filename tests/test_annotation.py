"""`cython -a` on the core: the nogil code has no Python interaction.

Cython scores each source line by the Python C-API calls it generates.
Every line of a ``cdef ... nogil`` function and of a ``with nogil:``
block must score 0, except the signal check, which takes the GIL once
per batch on purpose. The kernels are ``cdef inline`` functions in the
``.pxd`` files that ``_core.pyx`` cimports; ``cython -a`` writes a page
for the ``.pyx`` only, so the test has it write one for each ``.pxd`` (and
the included ``_network.pxi``) too,
from the same compilation.
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


# Runs Cython's command line with its annotation writer also saving a page
# per cimported .pxd of the compiled file's folder (named <stem>_pxd.html).
_ANNOTATE_ALL = """
import os, sys
from Cython.Compiler import Annotate
from Cython.Compiler.Main import setuptools_main

save = Annotate.AnnotationCCodeWriter.save_annotation

def save_all(self, source_filename, target_filename, coverage_xml=None):
    save(self, source_filename, target_filename, coverage_xml)
    folder = os.path.dirname(os.path.abspath(target_filename))
    for name in list(self.code):
        if (name or "").endswith((".pxd", ".pxi")) and os.path.dirname(os.path.abspath(name)) == folder:
            stem, ext = os.path.splitext(os.path.basename(name))
            save(self, name, os.path.join(folder, stem + "_" + ext[1:] + ".c"))

Annotate.AnnotationCCodeWriter.save_annotation = save_all
sys.argv[0] = "cython"
sys.exit(setuptools_main())
"""


def _scores(html):
    """Score of each annotated line of a page of `cython -a`."""
    return {
        int(n): int(s)
        for s, n in re.findall(
            r'<pre class="cython line score-(\d+)"[^>]*>\+?<span class="">(\d+)</span>', html
        )
    }


def test_nogil_code_has_no_python_interaction(tmp_path):
    pytest.importorskip("Cython")
    if not (SRC / "_core.pyx").exists():
        pytest.skip(f"the Cython sources are not at {SRC}")
    for f in SRC.iterdir():
        if f.suffix in (".pyx", ".pxd", ".pxi", ".h"):
            shutil.copy(f, tmp_path)
    directives = ["-X", "boundscheck=False", "-X", "wraparound=False",
                  "-X", "initializedcheck=False", "-X", "cdivision=True"]
    subprocess.run(
        [sys.executable, "-c", _ANNOTATE_ALL, "-3", "-a", "-I", str(tmp_path), *directives,
         str(tmp_path / "_core.pyx"), "-o", str(tmp_path / "_core.c")],
        check=True, capture_output=True,
    )
    pages = {"_core.pyx": tmp_path / "_core.html"}
    for f in sorted([*tmp_path.glob("*.pxd"), *tmp_path.glob("*.pxi")]):
        pages[f.name] = tmp_path / f"{f.stem}_{f.suffix[1:]}.html"
    n_checked = 0
    offending = []
    for source, page in pages.items():
        assert page.exists(), f"no annotation was written for {source}"
        scores = _scores(page.read_text())
        lines = (tmp_path / source).read_text().splitlines()
        checked = _nogil_lines(lines)
        n_checked += len(checked)
        if checked:
            assert set(scores) & checked, f"the annotation of {source} could not be read"
        offending += [
            f"{source}:{n}: {lines[n - 1].strip()} (score {scores[n]})"
            for n in sorted(checked)
            if scores.get(n, 0) > 0 and lines[n - 1].strip() not in ALLOWED
        ]
    assert n_checked > 1000, "the nogil code was not found"
    assert not offending, "Python interaction in nogil code:\n" + "\n".join(offending)
