"""Package metadata and documentation coverage of the public names."""

import inspect
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
