"""The docstring examples of the public API run (numpydoc examples must stay true)."""

from __future__ import annotations

import doctest
import importlib

import pytest

from daskray import _graph

MODULES = [
    "daskray",
    "daskray.scheduler",
    "daskray.explain",
    "daskray.config",
    "daskray.locality",
]
if _graph.COMPILED:
    MODULES.append("daskray._graph._core")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    if name in ("daskray.scheduler", "daskray.explain", "daskray.locality"):
        assert result.attempted > 0
