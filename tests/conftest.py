"""Fixtures of the unit tests: both implementations of the graph core."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(params=["compiled", "pure"])
def core(request):
    """Each implementation of the graph core: ``daskray._graph._core`` and ``_pure``."""
    if request.param == "compiled":
        if os.environ.get("DASKRAY_NO_EXTENSIONS", "") not in ("", "0"):
            pytest.skip("compiled core deselected by DASKRAY_NO_EXTENSIONS")
        from daskray._graph import _core as mod
    else:
        from daskray._graph import _pure as mod
    return mod
