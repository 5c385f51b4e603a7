"""Actor pools inside dask graphs: ``dask.annotate(ray_actor_pool=...)`` (see daskray.pools).

The pools' ``setup`` writes one file per call into a folder the test reads, so the tests count
model loads across Ray's processes. The session Ray has 2 CPUs: pools here ask for half a CPU
(or none) per actor, so that the tasks feeding them always find a CPU.
"""

from __future__ import annotations

import functools
import os
import time

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

import daskray
from daskray import ingest, planning
from daskray.annotations import AnnotationError, ResourceError


def load_model(folder: str, scale: float = 2.0) -> dict:
    """The "model": loading it leaves a file per call in ``folder``."""
    with open(os.path.join(folder, f"load-{os.getpid()}-{os.urandom(4).hex()}"), "w"):
        pass
    return {"scale": scale, "pid": os.getpid()}


def loads(folder) -> int:
    return sum(1 for f in os.listdir(folder) if f.startswith("load-"))


def predict(block):
    """Uses the actor's model; returns ``[value * scale, pid]`` per element."""
    model = daskray.actor_state()
    return np.stack([block * model["scale"], np.full(block.shape, os.getpid())], axis=-1)


def outside(block):
    """``[pid, 1 if this task sees an actor state else 0]`` per row."""
    try:
        daskray.actor_state()
        has = 1
    except RuntimeError:
        has = 0
    return np.stack([np.full(block.shape[:1], os.getpid()), np.full(block.shape[:1], has)], 1)


@pytest.fixture
def pool(ray_ctx, tmp_path):
    p = daskray.ActorPool(
        "model", functools.partial(load_model, str(tmp_path)), size=2, num_cpus=0.5
    )
    yield p
    p.close()


def test_200_tasks_on_2_actors_load_the_model_twice(pool, tmp_path):
    x = da.arange(200, chunks=1)
    with dask.annotate(ray_actor_pool="model"):
        y = x.map_blocks(predict, new_axis=1, chunks=(1, 2), meta=np.array((), dtype=float))
    z = y.map_blocks(outside, chunks=(1, 2), meta=np.array((), dtype=float))  # not on the pool
    got_y, got_z = dask.compute(y, z, scheduler=daskray.get)
    np.testing.assert_array_equal(got_y[:, 0], np.arange(200) * 2.0)
    actor_pids = set(got_y[:, 1].astype(int))
    assert loads(tmp_path) == 2 and len(actor_pids) == 2  # both actors used, one load each
    assert not got_z[:, 1].any()  # the unannotated tasks saw no actor state ...
    assert not actor_pids & set(got_z[:, 0].astype(int))  # ... and ran elsewhere
    # the pool lives on: a second compute (its groups dealt to the actors in its own way)
    # loads nothing
    again = y.compute(scheduler=daskray.get)
    np.testing.assert_array_equal(again[:, 0], np.arange(200) * 2.0)
    assert set(again[:, 1].astype(int)) <= actor_pids
    assert loads(tmp_path) == 2


def test_pool_tasks_never_fuse_with_other_tasks(pool):
    """
    a (plain) -> b (pool) -> c (plain) -> d (pool, retries=2) -> sum (plain)   x 40 blocks
    """
    x = da.ones(400, chunks=10)
    a = x + 1
    with dask.annotate(ray_actor_pool=pool):
        b = a.map_blocks(lambda v: v * 2)
    c = b - 1
    with dask.annotate(ray_actor_pool="model", retries=2):
        d = c.map_blocks(lambda v: v / 3)
    total = d.sum()
    graph = ingest.ingest(total.__dask_graph__(), total.__dask_keys__())
    classes = planning.option_classes(graph, {})
    assert len(classes.options) == 3  # plain, pool, pool with retries
    on_pool = classes.options[1:]
    assert all(o["ray_actor_pool"] is pool for o in on_pool)
    assert sorted(o["max_retries"] for o in on_pool) == [2, 3]  # annotated, Ray's default
    plan = planning.make_plan(graph, 2, None, classes)
    kinds = set()
    for g in range(plan.ngroups):
        members = plan.group(g)[0]
        assert len({classes.of[m] for m in members}) == 1
        kinds.add(classes.of[members[0]])
    assert kinds == {0, 1, 2}
    assert total.compute(scheduler=daskray.get) == pytest.approx(400 * 1.0)


def die_once(block, marker: str):
    """Kill this (actor) process the first time it runs, then compute normally."""
    if not os.path.exists(marker):
        with open(marker, "w"):
            pass
        os._exit(1)
    return block * daskray.actor_state()["scale"]


def test_a_dead_actor_is_replaced_and_its_tasks_retried(ray_ctx, tmp_path):
    with daskray.ActorPool(
        "fragile", functools.partial(load_model, str(tmp_path)), size=1, num_cpus=0.5
    ):
        x = da.arange(8, chunks=4)
        # the group that kills the actor is retried, and so is the other group, which was
        # queued on the actor when it died (and may find it restarting once)
        with dask.annotate(ray_actor_pool="fragile", retries=3):
            y = x.map_blocks(die_once, str(tmp_path / "died"), meta=np.array((), dtype=float))
        np.testing.assert_array_equal(y.compute(scheduler=daskray.get), np.arange(8) * 2.0)
        assert loads(tmp_path) == 2  # the first actor, then its replacement
        with dask.annotate(ray_actor_pool="fragile", retries=0):
            w = x.map_blocks(die_once, str(tmp_path / "died-again"), meta=np.array((), dtype=float))
        with pytest.raises(ray_ctx.exceptions.RayActorError):
            w.compute(scheduler=daskray.get)


def gpus(block):
    import ray

    return np.array([",".join(map(str, ray.get_gpu_ids())) or "-"] * len(block), dtype="U8")


def test_a_pool_can_hold_a_gpu(ray_ctx, tmp_path):
    """The session's Ray declares ``num_gpus=1``: a pool of one GPU actor gets it; a pool of two
    cannot exist, and says so before anything is submitted."""
    x = da.arange(6, chunks=2)
    with daskray.ActorPool(
        "gpu", functools.partial(load_model, str(tmp_path)), num_gpus=1, num_cpus=0
    ):
        with dask.annotate(ray_actor_pool="gpu"):
            y = x.map_blocks(gpus, dtype="U8")
        assert set(y.compute(scheduler=daskray.get)) == {"0"}
        assert set(x.map_blocks(gpus, dtype="U8").compute(scheduler=daskray.get)) == {"-"}
    with daskray.ActorPool("two-gpus", dict, size=2, num_gpus=1, num_cpus=0):
        with dask.annotate(ray_actor_pool="two-gpus"):
            z = x.map_blocks(gpus, dtype="U8")
        with pytest.raises(ResourceError, match="needs 2 actors") as info:
            z.compute(scheduler=daskray.get)
        assert info.value.request == {"GPU": 1}


def test_dataframe_tasks_on_a_pool_by_compute_keyword(pool, tmp_path):
    """dask-expr ignores dask.annotate: a compute-wide ``ray_actor_pool=`` puts a dataframe's
    tasks on the pool; ``debug=True`` runs them in-process with a local ``setup()``."""

    def scaled(part):
        return part * daskray.actor_state()["scale"]

    pdf = pd.DataFrame({"v": np.arange(20.0)})
    df = dd.from_pandas(pdf, npartitions=4).map_partitions(scaled, meta=pdf.iloc[:0])
    pd.testing.assert_frame_equal(
        df.compute(scheduler=daskray.get, ray_actor_pool="model"), pdf * 2
    )
    assert loads(tmp_path) == 2
    pd.testing.assert_frame_equal(
        df.compute(scheduler=daskray.get, ray_actor_pool="model", debug=True), pdf * 2
    )
    assert loads(tmp_path) == 3  # one local setup


def test_bad_pool_annotations(pool, monkeypatch):
    from daskray import _ray

    monkeypatch.setattr(_ray, "submit", lambda *a, **k: pytest.fail("submitted"))
    x = da.ones(4, chunks=2)
    with dask.annotate(ray_actor_pool="nope"):
        y = x + 1
    with pytest.raises(AnnotationError, match="Unknown actor pool 'nope'.*declared: \\['model'\\]"):
        y.compute(scheduler=daskray.get)
    with dask.annotate(ray_actor_pool="model", resources={"GPU": 1}):
        y = x + 1
    with pytest.raises(AnnotationError, match="runs where its actors are"):
        y.compute(scheduler=daskray.get)
    with dask.annotate(ray_actor_pool=3):
        y = x + 1
    with pytest.raises(AnnotationError, match="a daskray.ActorPool or its name"):
        y.compute(scheduler=daskray.get)


def test_closing_a_pool_stops_its_actors_and_a_new_one_starts_fresh(ray_ctx, tmp_path):
    setup = functools.partial(load_model, str(tmp_path))
    x = da.arange(4, chunks=2)
    with dask.annotate(ray_actor_pool="p"):
        y = x.map_blocks(predict, new_axis=1, chunks=(2, 2), meta=np.array((), dtype=float))
    with daskray.ActorPool("p", setup, num_cpus=0.5) as first:
        y.compute(scheduler=daskray.get)
        (actor,) = first._live.actors
    assert first._live is None and "p" not in daskray.pools.names()
    # ray.kill is asynchronous: a call racing it may still run; within 30 s one must fail
    deadline = time.monotonic() + 30
    with pytest.raises(ray_ctx.exceptions.RayActorError):
        while time.monotonic() < deadline:
            ray_ctx.get(actor.run.remote(([], [], [])), timeout=30)
            time.sleep(0.2)
    with daskray.ActorPool("p", functools.partial(load_model, str(tmp_path), 3.0), num_cpus=0.5):
        np.testing.assert_array_equal(y.compute(scheduler=daskray.get)[:, 0], np.arange(4) * 3.0)
    assert loads(tmp_path) == 2


def test_pool_tasks_in_a_performance_report(pool, tmp_path):
    """Timed runs (``run_profiled``) work on actors too: the report sees the pool's tasks."""
    x = da.arange(40, chunks=10)
    with dask.annotate(ray_actor_pool="model"):
        y = x.map_blocks(predict, new_axis=1, chunks=(10, 2), meta=np.array((), dtype=float))
    with daskray.performance_report(str(tmp_path / "r.html")) as rep:
        got = y.compute(scheduler=daskray.get)
    np.testing.assert_array_equal(got[:, 0], np.arange(40) * 2.0)
    prefixes = rep.prefixes()
    assert prefixes[next(p for p in prefixes if p.startswith("predict"))]["tasks"] == 4
    assert loads(tmp_path) == 2
