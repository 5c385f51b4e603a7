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


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.once`` tests (drivers with a Ray of their own, which do not depend on
    which graph core plans) run in CI's compiled-core pass only."""
    if os.environ.get("DASKRAY_NO_EXTENSIONS", "") in ("", "0"):
        return
    skip = pytest.mark.skip(reason="run once, in the compiled-core pass")
    for item in items:
        if item.get_closest_marker("once"):
            item.add_marker(skip)
