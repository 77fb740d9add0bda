"""Every docstring example in the package runs and is true."""
import doctest
import importlib
import pkgutil

import pytest

import memsave

# ``memsave.__main__`` runs the command line when imported; it has no docstring examples.
SKIP = {"memsave.__main__"}
MODULES = sorted(
    ["memsave"] + [m.name for m in pkgutil.walk_packages(memsave.__path__, "memsave.")
                   if m.name not in SKIP]
)


def test_modules_are_found():
    assert {"memsave.core.variable", "memsave.core.backprop", "memsave.config",
            "memsave.gradcheck", "memsave.functions.math"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_public_functions_have_examples():
    # STYLE.md: public functions have a docstring with a short runnable example
    finder = doctest.DocTestFinder()
    modules = [importlib.import_module(n) for n in MODULES]
    total = sum(len(t.examples) for m in modules for t in finder.find(m))
    assert total > 50
