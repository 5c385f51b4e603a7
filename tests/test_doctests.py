"""Every module's docstring examples run (numpydoc examples must stay true), and a module whose
source shows examples must have doctest find and run them."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import daskray
from daskray import _graph


def _modules() -> list[str]:
    names = ["daskray", "daskray._graph"]
    found = [*pkgutil.iter_modules(daskray.__path__, "daskray.")]
    # the core is a subpackage built from its own directory (src/_graph)
    found += pkgutil.iter_modules(_graph.__path__, "daskray._graph.")
    for info in found:
        if info.name == "daskray.__main__":
            continue  # running it is the command line
        if info.name == "daskray._graph._core" and not _graph.COMPILED:
            continue
        names.append(info.name)
    return sorted(set(names))


MODULES = _modules()


def test_every_module_is_covered():
    assert {"daskray.planning", "daskray.annotations", "daskray._graph._pure"} <= set(MODULES)
    assert ("daskray._graph._core" in MODULES) == _graph.COMPILED


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    if name == "daskray._graph._core":
        shows_examples = True  # intern, plan and transpose (compiled: no source to read)
    else:
        with open(module.__file__, encoding="utf-8") as f:
            shows_examples = ">>> " in f.read()
    if shows_examples:
        assert result.attempted > 0
