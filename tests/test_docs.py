"""The documentation site (docs/): it builds without warnings, its API reference covers every
public name, its Python examples run, and its error FAQ quotes messages that exist."""
import importlib
import inspect
import io
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

import memsave

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# Pages whose Python blocks are fragments around the reader's own model (`layers`, `MyNet`).
NOT_RUN_HERE = {"planner.md", "distributed.md"}
CODE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
# Sphinx's own deprecation notices (napoleon reading autodoc options) are not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:The mapping interface for autodoc options")


def public_api():
    """(module, name) for every name memsave makes public: memsave.__all__, and the __all__
    (or, without one, the public functions and classes) of every module it exports."""
    names, modules = [], [memsave]
    while modules:
        module = modules.pop(0)
        exported = getattr(module, "__all__", None)
        if exported is None:
            exported = [n for n, v in vars(module).items() if not n.startswith("_")
                        and (inspect.isclass(v) or inspect.isfunction(v))
                        and v.__module__.startswith(module.__name__)]
        for name in exported:
            value = getattr(module, name)
            if inspect.ismodule(value):
                modules.append(value)
            else:
                names.append((module.__name__, name))
    return names


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site built in-process (the 'dummy' builder: everything but writing HTML)."""
    from sphinx.application import Sphinx

    out = tmp_path_factory.mktemp("docs")
    warnings_out = io.StringIO()
    app = Sphinx(str(DOCS), str(DOCS), str(out / "out"), str(out / "doctrees"), "dummy",
                 status=None, warning=warnings_out, freshenv=True)
    app.build()
    return app, warnings_out.getvalue()


def test_site_builds_without_warnings(site):
    assert site[1] == ""


def test_every_public_name_is_in_the_api_reference(site):
    from sphinx import addnodes

    app = site[0]
    documented = set()
    for docname in app.env.found_docs:
        if docname.startswith("api/"):
            for sig in app.env.get_doctree(docname).findall(addnodes.desc_signature):
                documented.add((sig.get("module"), sig.get("fullname")))
    api = public_api()
    assert len(api) > 100 and ("memsave", "checkpoint") in api and ("memsave.nn", "Linear") in api
    missing = [f"{m}.{n}" for m, n in api if (m, n) not in documented]
    assert not missing, f"not in the API reference: {missing}"


def test_api_reference_pages_are_generated_for_exported_modules(site):
    pages = {d for d in site[0].env.found_docs if d.startswith("api/")}
    assert {"api/index", "api/memsave", "api/memsave.nn", "api/memsave.functions",
            "api/memsave.nn.init", "api/memsave.memory", "api/memsave.testing"} <= pages
    assert "api/memsave.cli" not in pages


def test_guides_are_in_the_toctree(site):
    app = site[0]
    pages = {d for d in app.env.found_docs if not d.startswith("api/")}
    assert {"guide/getting-started", "guide/concepts", "guide/faq", "guide/cli",
            "howto/decorate-a-layer", "howto/checkpoint-sequential", "migration/chainer",
            "migration/torch", "migration/jax", "checkpointing"} <= pages
    included = set().union(*app.env.toctree_includes.values())
    assert pages - {"index"} <= included


def doc_pages():
    return sorted(p for p in DOCS.rglob("*.md")
                  if "_build" not in p.parts and p.name not in NOT_RUN_HERE)


def pages_with_examples():
    return [p for p in doc_pages() if CODE.search(p.read_text())]


@pytest.mark.parametrize("page", pages_with_examples(), ids=lambda p: str(p.relative_to(DOCS)))
def test_python_examples_run(page, tmp_path, monkeypatch, capsys):
    """Each page's ```python blocks run in order in one namespace (foreign code, such as the
    PyTorch side of a migration page, is in {code-block} directives and is not run)."""
    blocks = CODE.findall(page.read_text())
    monkeypatch.chdir(tmp_path)
    np.random.seed(0)
    memsave.random.seed(0)
    namespace = {"__name__": f"docs_{page.stem}"}
    with warnings.catch_warnings():
        warnings.simplefilter("error", memsave.UselessCheckpointWarning)
        for i, block in enumerate(blocks):
            exec(compile(block, f"{page}:block{i}", "exec"), namespace)


def test_pages_with_examples_have_them():
    runnable = {p.name: len(CODE.findall(p.read_text())) for p in doc_pages()}
    assert runnable["getting-started.md"] >= 2 and runnable["torch.md"] >= 3
    assert sum(runnable.values()) >= 30


def _source_text():
    """memsave's source with adjacent string literals joined ("ab " "cd" -> "ab cd")."""
    text = "\n".join(p.read_text() for p in (ROOT / "memsave").rglob("*.py"))
    return re.sub(r"""["']\s*\n\s*[rf]*["']""", "", text)


def test_faq_messages_exist_in_the_code():
    headings = re.findall(r"^### `(.*)`$", (DOCS / "guide" / "faq.md").read_text(), re.M)
    assert len(headings) >= 25
    source = _source_text()
    for heading in headings:
        for piece in re.split(r"<[^>]*>", heading):
            assert piece.strip() in source, f"FAQ message not found in memsave: {piece.strip()!r}"


def test_package_ships_its_type_hints():
    """PEP 561: the py.typed marker is in the package and in the wheel's package data, so
    users' type checkers read memsave's annotations."""
    package = Path(memsave.__file__).parent
    assert (package / "py.typed").is_file()
    package_data = re.search(r"\[tool\.setuptools\.package-data\]\nmemsave = \[(.*)\]",
                             (ROOT / "pyproject.toml").read_text())
    assert package_data and '"py.typed"' in package_data[1]


def test_every_public_function_has_a_runnable_example():
    """STYLE.md: every public function's docstring has an example (tests/test_doctests.py
    runs them), so the API reference shows code that works."""
    missing = [f"{m}.{n}" for m, n in public_api()
               if inspect.isroutine(value := getattr(importlib.import_module(m), n))
               and ">>>" not in (inspect.getdoc(value) or "")]
    assert not missing, f"public functions without a docstring example: {missing}"
