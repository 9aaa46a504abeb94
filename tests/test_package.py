"""Package metadata and documentation coverage of the public names."""

import inspect
import subprocess
import sys
import re
from importlib.metadata import version
from pathlib import Path

import pytest

import cbp

DOCS = Path(__file__).resolve().parents[1] / "docs"
PUBLIC = [name for name in cbp.__all__ if name != "__version__"]


def test_version_is_the_installed_distributions():
    # one place: cbp/_version.py, read by setuptools for the metadata
    assert cbp.__version__ == version("cbp")
    assert re.fullmatch(r"\d+\.\d+\.\d+([ab]|rc|\.dev)?\d*", cbp.__version__)


@pytest.mark.parametrize("name", PUBLIC)
def test_public_names_have_numpydoc_docstrings(name):
    # numpydoc comes with the "docs" extra (CI installs it with the wheel)
    docscrape = pytest.importorskip("numpydoc.docscrape")
    ClassDoc, FunctionDoc = docscrape.ClassDoc, docscrape.FunctionDoc
    obj = getattr(cbp, name)
    doc = ClassDoc(obj) if inspect.isclass(obj) else FunctionDoc(obj)
    assert doc["Summary"], f"{name} has no summary line"
    assert doc["Parameters"], f"{name} documents no parameters"
    if inspect.isclass(obj):
        documented = {p.name for p in doc["Parameters"]}
        assert documented == set(inspect.signature(obj).parameters)
        for method in ("fit", "predict"):
            assert FunctionDoc(getattr(obj, method))["Returns"], f"{name}.{method}"


@pytest.mark.skipif(not DOCS.is_dir(), reason="docs/ is not beside the tests")
@pytest.mark.parametrize("name", PUBLIC)
def test_public_names_are_in_the_api_reference(name):
    api = "\n".join(p.read_text() for p in (DOCS / "api").glob("*.rst"))
    assert re.search(rf"\.\. auto\w+:: (cbp\.)?{name}\b", api), (
        f"cbp.{name} is public but docs/api/ has no autodoc entry for it"
    )


def _source_copy(tmp_path):
    """A checkout's cbp/ (the Python files, no compiled core) in tmp_path."""
    package = tmp_path / "cbp"
    package.mkdir()
    for source in Path(cbp.__file__).resolve().parent.glob("*.py"):
        (package / source.name).write_text(source.read_text())
    return tmp_path


def _run(args, cwd):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_python_m_in_a_checkout_runs_the_installed_package(tmp_path):
    """The README's `pip install . && python -m cbp.demo`, typed in the
    clone's root: the working directory's cbp/ has no compiled core and
    comes first on sys.path, and the installed cbp must run all the same."""
    root = _source_copy(tmp_path)
    installed = str(Path(cbp.__file__).resolve().parent)
    out = _run(["-c", "import cbp, cbp._core, cbp.demo; print(cbp.__file__); "
                      "print(cbp._core.__file__); print(cbp.demo.__file__)"], root)
    assert out.returncode == 0, out.stderr
    for path in out.stdout.split():
        assert str(Path(path).resolve().parent) == installed
    demo = _run(["-m", "cbp.demo", "--epochs", "2", "--hidden", "8"], root)
    assert demo.returncode == 0, demo.stderr
    assert "test accuracy" in demo.stdout


def test_a_checkout_without_core_or_installed_cbp_says_what_to_do(tmp_path):
    # -S: no site-packages, so no installed cbp to hand over to
    out = _run(["-S", "-c", "import cbp"], _source_copy(tmp_path))
    assert out.returncode != 0
    assert "compiled core is not built" in out.stderr
    assert "pip install ." in out.stderr
