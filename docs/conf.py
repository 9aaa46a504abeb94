"""Sphinx configuration for cbp's documentation.

Build (cbp must be installed, the compiled core included)::

    pip install ".[docs]"
    sphinx-build -W -b html docs docs/_build/html
    sphinx-build -W -b doctest docs docs/_build/doctest

Equations are rendered to images by ``sphinx.ext.imgmath`` when LaTeX
and dvipng (with the LaTeX packages imgmath needs) are installed, so the
pages need no network; otherwise by MathJax in the browser.
"""

import inspect
import re
import os
import shutil
import subprocess
from pathlib import Path

from docutils.parsers.rst import directives
from docutils.parsers.rst.directives.misc import Include

import cbp

DOCS = Path(__file__).resolve().parent

# -- Project ---------------------------------------------------------------

project = "cbp"
author = "The cbp developers"
copyright = "The cbp developers"
release = cbp.__version__
version = ".".join(release.split(".")[:2])

# -- Extensions ------------------------------------------------------------


def _latex_ok():
    """True when imgmath can render: latex, dvipng and its LaTeX packages."""
    if not (shutil.which("latex") and shutil.which("dvipng")):
        return False
    if not shutil.which("kpsewhich"):
        return False
    for sty in ("amsmath.sty", "amssymb.sty", "anyfontsize.sty", "bm.sty", "preview.sty"):
        found = subprocess.run(["kpsewhich", sty], capture_output=True, text=True)
        if not found.stdout.strip():
            return False
    return True


_math = os.environ.get("CBP_DOCS_MATH", "auto")
if _math == "auto":
    _math = "imgmath" if _latex_ok() else "mathjax"
if _math not in ("imgmath", "mathjax"):
    raise ValueError(f"CBP_DOCS_MATH must be auto, imgmath or mathjax, not {_math!r}")

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    f"sphinx.ext.{_math}",
    "numpydoc",
    "matplotlib.sphinxext.plot_directive",
]

imgmath_image_format = "png"
imgmath_font_size = 14
imgmath_dvipng_args = ["-gamma", "1.5", "-D", "130", "-bg", "Transparent"]

templates_path = []
exclude_patterns = [
    "_build",
    # written by benchmarks/run.py; pulled into performance.rst
    "benchmarks/results.rst",
]

# -- autodoc / numpydoc ----------------------------------------------------

autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False


def _fused_signature(app, what, name, obj, options, signature, return_annotation):
    """Give Cython's fused-type ``def`` functions their real parameters.

    ``embedsignature`` writes the generic dispatcher's signature
    (``signatures, args, kwargs, defaults``) into the docstring of a
    function over ``floating``; the parameter names come from the
    specialisations, which ``inspect.signature`` reads.
    """
    if what == "function" and signature and "_fused_sigindex" in signature:
        try:
            return str(inspect.signature(obj)), return_annotation
        except (TypeError, ValueError):
            return None
    return None


_SKLEARN_REF = re.compile(r":ref:`([^`<]+?)\s*<[^`>]+>`")


def _strip_sklearn_refs(app, what, name, obj, options, lines):
    """Turn the ``:ref:`` roles of inherited scikit-learn docstrings into text.

    ``score`` and ``get_params`` come from scikit-learn's mixins, whose
    docstrings link to labels of scikit-learn's own documentation
    (``:ref:`accuracy <accuracy_score>```); here those labels do not exist.
    """
    module = getattr(obj, "__module__", "") or ""
    if module.startswith("sklearn"):
        lines[:] = [_SKLEARN_REF.sub(r"\1", line) for line in lines]


# -- doctest ---------------------------------------------------------------

doctest_global_setup = """
import warnings
import numpy as np
from sklearn.exceptions import ConvergenceWarning
warnings.simplefilter("ignore", ConvergenceWarning)
"""

# -- plots -----------------------------------------------------------------

plot_include_source = True
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 110)]
plot_rcparams = {"figure.autolayout": True, "font.size": 10}
plot_pre_code = "import numpy as np\nimport matplotlib.pyplot as plt\n"
plot_working_directory = str(DOCS)

# -- HTML ------------------------------------------------------------------

html_theme = "pydata_sphinx_theme"
html_title = f"cbp {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_static_path = []
html_show_sourcelink = False

# -- An include that tolerates a missing file ------------------------------


class OptionalInclude(Include):
    """``.. optional-include:: path``: include the file when it exists.

    Otherwise the directive's content (if any) is used in its place, so
    the build does not depend on a file that a script generates.
    """

    has_content = True

    def run(self):
        source = self.state_machine.input_lines.source(
            self.lineno - self.state_machine.input_offset - 1
        )
        path = Path(source).resolve().parent / self.arguments[0]
        if path.exists():
            self.state.document.settings.record_dependencies.add(str(path))
            return super().run()
        if not self.content:
            return []
        self.state_machine.insert_input(list(self.content), source)
        return []


def setup(app):
    directives.register_directive("optional-include", OptionalInclude)
    # before numpydoc's handler (priority 500), which returns the docstring's
    # first line, the dispatcher's signature, and so would win
    app.connect("autodoc-process-signature", _fused_signature, priority=400)
    app.connect("autodoc-process-docstring", _strip_sklearn_refs)
    return {"parallel_read_safe": True}
