"""Sphinx configuration of memsave's documentation.

Build: ``pip install -e '.[docs]' && sphinx-build -W -b html docs docs/_build/html``.

The API reference is generated at build time from what the package exports: ``memsave``
itself (``memsave.__all__``) and every module it exports, recursively (``memsave.nn``,
``memsave.functions``, ``memsave.nn.init``, ...), plus the top-level modules that declare
``__all__`` without being exported (``memsave.distributed``).  A new public name or module
appears in the reference without editing any page; ``tests/test_docs.py`` checks that every
public name does.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from pathlib import Path
from types import ModuleType

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))

import memsave  # noqa: E402

project = "memsave"
author = "memsave contributors"
copyright = "memsave contributors"
release = version = memsave.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "README.md"]
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3
html_theme = "furo"
html_title = f"memsave {release}"
html_static_path = ["_static"] if (DOCS / "_static").is_dir() else []
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
napoleon_google_docstring = True
napoleon_numpy_docstring = True

# The command-line modules have their own page (cli.md); they are not library API.
COMMAND_LINE = {"memsave.cli", "memsave.demo", "memsave.bench", "memsave.__main__"}
API_DIR = DOCS / "api"


def api_modules() -> list[str]:
    """``memsave``, the modules it exports (recursively, through each module's ``__all__``),
    and the top-level public modules that declare ``__all__``; in that order, no repeats."""
    found: list[str] = []

    def visit(module: ModuleType) -> None:
        if module.__name__ in found or module.__name__ in COMMAND_LINE:
            return
        found.append(module.__name__)
        for name in getattr(module, "__all__", ()):
            value = getattr(module, name)
            if inspect.ismodule(value) and value.__name__.startswith("memsave."):
                visit(value)

    visit(memsave)
    for info in pkgutil.iter_modules(memsave.__path__, "memsave."):
        if not info.name.rsplit(".", 1)[1].startswith("_") and info.name not in COMMAND_LINE:
            module = importlib.import_module(info.name)
            if hasattr(module, "__all__"):
                visit(module)
    return found


def public_names(module: ModuleType) -> list[str]:
    """The names a module makes public: its ``__all__``, or else the public functions,
    classes and constants defined in it (or in its submodules, for a package)."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [name for name, value in vars(module).items()
            if not name.startswith("_") and not inspect.ismodule(value)
            and getattr(value, "__module__", module.__name__).startswith(module.__name__)
            and (inspect.isclass(value) or inspect.isroutine(value) or name.isupper())]


def _directive(module: ModuleType, name: str, documented: dict[int, str]) -> str:
    """The autodoc directive for one public name.  An object exported under several names
    (``memsave.Parameter`` is ``memsave.nn.Parameter``) is indexed under the first one only:
    the others are rendered with ``:no-index:`` (two index entries would be an error)."""
    value = getattr(module, name)
    target = f"{module.__name__}.{name}"
    if inspect.ismodule(value):
        return f"* :mod:`{value.__name__}` (own page)\n"
    options = ""
    if inspect.isclass(value) or inspect.isroutine(value):
        if id(value) in documented:
            options = f"   :no-index:\n\n   Also available as :obj:`{documented[id(value)]}`.\n"
        else:
            documented[id(value)] = target
    if inspect.isclass(value) and issubclass(value, BaseException):
        return f".. autoexception:: {target}\n   :members:\n   :show-inheritance:\n{options}"
    if inspect.isclass(value):
        return f".. autoclass:: {target}\n   :members:\n   :show-inheritance:\n{options}"
    if inspect.isroutine(value):
        return f".. autofunction:: {target}\n{options}"
    return f".. autodata:: {target}\n   :annotation:\n"


def module_page(name: str, documented: dict[int, str]) -> str:
    """The reStructuredText of one module's API page; ``documented`` maps the objects already
    documented (by id) to the name they are indexed under."""
    module = importlib.import_module(name)
    title = f"``{name}``"
    lines = [title, "=" * len(title), "", f".. automodule:: {name}", "   :no-members:", "",
             f".. currentmodule:: {name}", ""]
    for public in public_names(module):
        if public == "__version__":
            lines += [f".. data:: __version__\n   :value: {memsave.__version__!r}\n",
                      "   The version of the installed package.\n"]
        else:
            lines.append(_directive(module, public, documented))
    return "\n".join(lines)


def write_api_pages() -> None:
    """(Re)write ``docs/api/``: one page per API module and an index (generated, not in git)."""
    API_DIR.mkdir(exist_ok=True)
    modules = api_modules()
    documented: dict[int, str] = {}
    for old in API_DIR.glob("*.rst"):
        if old.stem not in modules and old.stem != "index":
            old.unlink()
    for name in modules:
        text = module_page(name, documented)
        page = API_DIR / f"{name}.rst"
        if not page.exists() or page.read_text() != text:   # unchanged pages stay unchanged
            page.write_text(text)
    index = ("API reference\n=============\n\nGenerated from the docstrings of every public name "
             "that ``memsave`` exports.\n\n.. toctree::\n   :maxdepth: 1\n\n"
             + "".join(f"   {name}\n" for name in modules))
    if not (API_DIR / "index.rst").exists() or (API_DIR / "index.rst").read_text() != index:
        (API_DIR / "index.rst").write_text(index)


write_api_pages()
