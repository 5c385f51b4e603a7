"""Shared fixtures: one local Ray per test session, and both graph-core implementations.

Ray takes seconds to start, so every test that needs it shares the session's Ray (2 CPUs,
started with ``address="local"`` so that it never attaches to some other cluster on the box).
Tests that start their own ``ray.cluster_utils.Cluster`` shut the shared one down first and
restart it afterwards through :func:`ray_session`.
"""

from __future__ import annotations

import os

import pytest

# Ray workers unpickle module-level functions by module name: let them import the test modules
# (pytest imports them as top-level modules from this folder). Set before Ray starts, which
# hands the environment to its worker processes.
_TESTS = os.path.dirname(os.path.abspath(__file__))
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (_TESTS, os.path.dirname(_TESTS), os.environ.get("PYTHONPATH")) if p
)



@pytest.fixture(scope="session")
def ray_session():
    """The session's local Ray (2 CPUs); yields the ``ray`` module."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
        )
    yield ray
    ray.shutdown()


@pytest.fixture
def ray_ctx(ray_session):
    """Function-scoped alias of :func:`ray_session` that also checks the session Ray is up."""
    if not ray_session.is_initialized():  # a cluster test shut it down; bring it back
        ray_session.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    return ray_session


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
