"""Fixtures shared by tests/ and benchmarks/: one local Ray per test session.

Ray takes seconds to start, so every test that needs it shares the session's Ray (2 CPUs,
started with ``address="local"`` so that it never attaches to some other cluster on the box).
Tests that start their own ``ray.cluster_utils.Cluster`` shut the shared one down first and
restart it afterwards through :func:`ray_session`.
"""

from __future__ import annotations

import contextlib
import os

import pytest

# Ray workers unpickle module-level functions by module name: let them import the test modules
# (pytest imports them as top-level modules from their folders). Set before Ray starts, which
# hands the environment to its worker processes.
_ROOT = os.path.dirname(os.path.abspath(__file__))
os.environ["PYTHONPATH"] = os.pathsep.join(
    p
    for p in (
        os.path.join(_ROOT, "tests"),
        os.path.join(_ROOT, "benchmarks"),
        _ROOT,
        os.environ.get("PYTHONPATH"),
    )
    if p
)


#: the session's Ray: 2 CPUs, and a declared GPU and custom resource (no hardware needed) so
#: that annotation tests can place tasks on them
RAY_KWARGS = dict(
    address="local",
    num_cpus=2,
    num_gpus=1,
    resources={"special": 2},
    include_dashboard=False,
    log_to_driver=False,
)


@pytest.fixture(scope="session")
def ray_session():
    """The session's local Ray (:data:`RAY_KWARGS`); yields the ``ray`` module."""
    import ray

    if not ray.is_initialized():
        ray.init(**RAY_KWARGS)
    yield ray
    ray.shutdown()


@pytest.fixture
def ray_ctx(ray_session):
    """Function-scoped alias of :func:`ray_session` that also checks the session Ray is up."""
    if not ray_session.is_initialized():  # a cluster test shut it down; bring it back
        ray_session.init(**RAY_KWARGS)
    return ray_session


@contextlib.contextmanager
def _local_cluster(head: dict, *nodes: dict):
    """A multi-node ``ray.cluster_utils.Cluster`` on this box, this process its driver: the
    session's Ray is shut down first (``ray_ctx`` brings it back for later tests), and the
    cluster always after, even on failure. Yields the cluster and its added nodes."""
    import ray
    from ray.cluster_utils import Cluster

    from daskray import _ray

    ray.shutdown()
    _ray.reset()
    c = None
    try:
        c = Cluster(initialize_head=True, head_node_args=head)
        added = [c.add_node(**n) for n in nodes]
        ray.init(address=c.address, log_to_driver=False)
        c.wait_for_nodes()
        yield c, added
    finally:
        ray.shutdown()
        if c is not None:
            c.shutdown()
        _ray.reset()


@pytest.fixture(scope="session")
def local_cluster():
    """:func:`_local_cluster`, for module-scoped cluster fixtures."""
    return _local_cluster
