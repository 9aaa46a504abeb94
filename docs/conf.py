"""Sphinx configuration for cbp's documentation.

Build (cbp must be installed, the compiled core included)::

    pip install ".[docs]"
    sphinx-build -W -b html docs docs/_build/html
    sphinx-build -W -b doctest docs docs/_build/doctest

Equations are typeset in the browser by MathJax, from a copy that the
``django-static-mathjax`` package (a ``docs`` dependency) ships and the
build puts under ``_static/mathjax``: the pages load no script from the
network and read offline. ``docs/check_offline_math.py`` checks that.
"""

import inspect
import re
import shutil
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


extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "numpydoc",
    "matplotlib.sphinxext.plot_directive",
]

# -- Math: MathJax from a local copy ---------------------------------------

# MathJax's SVG output draws every glyph as a path, so no web font has to
# be fetched (browsers refuse fonts from file:// pages).
MATHJAX_COMPONENT = "tex-svg.js"
mathjax_path = f"mathjax/{MATHJAX_COMPONENT}"


def _mathjax_es5():
    """The directory of MathJax's browser components in django-static-mathjax."""
    import importlib.util

    spec = importlib.util.find_spec("mathjax")
    es5 = None
    if spec is not None and spec.submodule_search_locations:
        es5 = Path(list(spec.submodule_search_locations)[0]) / "static" / "mathjax" / "es5"
    if es5 is None or not (es5 / MATHJAX_COMPONENT).is_file():
        raise RuntimeError(
            "MathJax is not installed: the docs need the django-static-mathjax "
            "package, which ships MathJax's files (pip install \".[docs]\")"
        )
    return es5


def _skip_unused_mathjax(directory, names):
    """Leave out the other bundled components and the CHTML output's fonts.

    Only ``tex-svg.js`` and what it loads on demand (TeX extensions,
    the menu, the accessibility tools) are used.
    """
    here = Path(directory)
    skipped = set()
    for name in names:
        path = here / name
        if path.parent.name == "es5" and path.suffix == ".js" and name != MATHJAX_COMPONENT:
            skipped.add(name)
        elif path.parent.name == "output" and name.startswith("chtml"):
            skipped.add(name)
    return skipped


def _copy_mathjax(app, exception):
    """Copy MathJax into the HTML output's ``_static/mathjax``."""
    if exception is not None or app.builder.format != "html":
        return
    shutil.copytree(_mathjax_es5(), Path(app.outdir) / "_static" / "mathjax",
                    ignore=_skip_unused_mathjax, dirs_exist_ok=True)


templates_path = []
exclude_patterns = [
    "_build",
    # written by benchmarks/run.py and benchmarks/targets.py; results.rst
    # and targets.rst are pulled into performance.rst, the consecutive
    # runs' tables are kept beside their JSON (charted there)
    "benchmarks/results.rst",
    "benchmarks/targets.rst",
    "benchmarks/runs",
]

# -- autodoc / numpydoc ----------------------------------------------------

autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"
# the API pages list the methods in an autosummary table of their own,
# so that scikit-learn's metadata-routing helpers do not crowd it
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
autosummary_generate = False
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
    "show_nav_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
# The left sidebar lists the pages of the current section; the top-level
# pages and the one-page Examples section have none, and an empty column
# would only narrow the text and make code blocks scroll.
html_sidebars = {"*": [], "examples/index": []}
# the right sidebar's contents: "fit()" rather than "MLPClassifier.fit()",
# which the narrow column cut off
toc_object_entries_show_parents = "hide"
html_static_path = []
html_show_sourcelink = False

# -- Plots redrawn when their scripts or data change -------------------------

_PLOT = re.compile(r"^\s*\.\. plot:: (\S+\.py)\s*$", re.MULTILINE)
# files a plot script reads, relative to docs/
PLOT_DATA = {"benchmarks/charts.py": ["benchmarks/results.json"]}


def _note_plot_dependencies(app, docname, source):
    """Make a page that draws a plot depend on the script and its data.

    The plot directive runs its script only when the page is read again,
    and Sphinx reads a page again only when one of its dependencies
    changed: without this, an incremental build kept the old figure of an
    edited script. (A new ``results.json`` makes the page be read again,
    but the directive redraws only a script newer than its figure.)
    """
    for script in _PLOT.findall(source[0]):
        for path in [script, *PLOT_DATA.get(script, [])]:
            app.env.note_dependency(str(DOCS / path))


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
    _mathjax_es5()  # fail at the start of the build, not after it
    app.connect("build-finished", _copy_mathjax)
    app.connect("source-read", _note_plot_dependencies)
    directives.register_directive("optional-include", OptionalInclude)
    # before numpydoc's handler (priority 500), which returns the docstring's
    # first line, the dispatcher's signature, and so would win
    app.connect("autodoc-process-signature", _fused_signature, priority=400)
    app.connect("autodoc-process-docstring", _strip_sklearn_refs)
    return {"parallel_read_safe": True}
