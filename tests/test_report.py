"""daskray.performance_report (HTML + Chrome trace) and benchmark-driven tuning (daskray.tune)."""

from __future__ import annotations

import json

import dask
import dask.array as da
import numpy as np
import pytest

import daskray
from daskray import bench, cli, ingest, planning, report


def _stream(rep):
    return [e for e in rep.chrome_trace()["traceEvents"] if e.get("cat") == "ray-task"]


def test_report_html_and_trace(ray_ctx, tmp_path):
    html_path, trace_path = tmp_path / "r.html", tmp_path / "t.json"
    x = da.arange(64_000, chunks=1_000)
    dsk, keys = _graph((x + 1).sum())
    with daskray.performance_report(str(html_path), trace=str(trace_path)) as rep:
        assert report.active() is rep
        (total,) = daskray.get(dsk, keys)
        (y,) = dask.persist(x * 2, scheduler=daskray.get)  # profiles fetched when the block ends
    assert report.active() is None
    assert total == sum(range(1, 64_001))
    np.testing.assert_array_equal(y.compute(scheduler=daskray.get), np.arange(64_000) * 2)

    summary = rep.summary()
    assert len(summary) == 2
    first = summary[0]
    planned = planning.make_plan(ingest.ingest(dsk, keys), 2)
    assert first["tasks"] == len(planned.order)
    assert first["ray_tasks"] == planned.ngroups
    assert first["plan_s"] >= 0 and first["run_s"] >= first["submit_s"] >= 0
    assert first["read_bytes"] > 0 and first["cross_node_bytes"] == 0  # one node
    assert first["nodes"] == 1
    # every Ray task of both computes is in the stream, the trace and the group sizes
    ray_tasks = sum(s["ray_tasks"] for s in summary)
    assert len(_stream(rep)) == ray_tasks == sum(rep.group_sizes().values())
    prefixes = rep.prefixes()
    # dask fused each block's arange and add / mul into one task
    assert prefixes["arange-sum"]["tasks"] == 64 and prefixes["arange-mul"]["tasks"] == 64
    assert all(p["mean"] > 0 for p in prefixes.values())

    text = html_path.read_text()
    for part in ("Task stream", "Fused group sizes", "Slowest task prefixes", "<svg", "cross-node"):
        assert part in text
    assert "arange-sum x" in text  # a task's tooltip: its prefixes
    trace = json.loads(trace_path.read_text())
    events = [e for e in trace["traceEvents"] if e.get("cat") == "ray-task"]
    assert len(events) == ray_tasks
    assert all(e["ph"] == "X" and e["dur"] >= 0 for e in events)
    assert {e["name"] for e in trace["traceEvents"] if e["ph"] == "M"} == {"process_name"}


def test_no_profiling_outside_a_report(ray_ctx, monkeypatch):
    from daskray import _ray

    seen = []
    real = _ray.submit

    def spy(*args, **kwargs):
        seen.append(kwargs["observer"].profiles)
        return real(*args, **kwargs)

    monkeypatch.setattr(_ray, "submit", spy)
    assert da.ones(10, chunks=5).sum().compute(scheduler=daskray.get) == 10
    with daskray.performance_report(None):
        assert da.ones(10, chunks=5).sum().compute(scheduler=daskray.get) == 10
    assert seen[0] is None  # untimed
    groups = [g for g, _ in seen[1]]  # (group, profile ref) of each Ray task
    assert groups and groups == sorted(set(groups))


def _graph(collection):
    (opt,) = dask.optimize(collection)
    return opt.__dask_graph__(), opt.__dask_keys__()


# -- tuning ----------------------------------------------------------------------------------


def _spins_per_group(profile) -> list[int]:
    dsk, key = bench.uneven(1.0)
    with dask.config.set({"daskray.fusion.profile": profile}):
        graph = ingest.ingest(dsk, key)
        plan = planning.make_plan(graph, 2)
    out = []
    for g in range(plan.ngroups):
        members, _, _ = plan.group(g)
        n = sum(1 for i in members if graph.names[i][0] == "spin")
        if n:
            out.append(n)
    return out


def test_a_profile_spreads_slow_tasks_across_groups():
    # by count, the 16 neighbouring slow tasks fuse into one Ray task
    assert _spins_per_group(None) == [16]
    profile = {"prefixes": {"spin": 0.04, "inc": 2e-5, "total": 5e-5}, "default": 1e-5}
    spread = _spins_per_group(profile)
    assert sum(spread) == 16 and max(spread) <= 2 and len(spread) >= 8


def test_min_duration_keeps_groups_worth_a_ray_task():
    dsk, key = bench.tiny_tree(0.05)
    fast = {"prefixes": {"leaf": 1e-6, "reduce": 1e-6}, "default": 1e-6}
    graph = ingest.ingest(dsk, key)
    with dask.config.set({"daskray.fusion.profile": fast}):
        assert planning.make_plan(graph, 2).ngroups == 1  # 1 ms of work: one Ray task
        with dask.config.set({"daskray.fusion.min-duration": 0}):
            assert planning.make_plan(graph, 2).ngroups > 4


def test_tune_measures_and_the_profile_is_used(ray_ctx, tmp_path):
    path = tmp_path / "profile.json"
    dsk, key = bench.uneven(0.04)  # 8 ms spins, 160 tiny tasks
    from dask.delayed import Delayed

    profile = daskray.tune(Delayed(key, dsk), filename=str(path))
    assert json.loads(path.read_text()) == profile
    secs = profile["prefixes"]
    assert secs["spin"] > 0.006 > secs["inc"]  # 8 ms spins, microsecond incs
    assert profile["default"] > 0
    # by count all 16 share one group; measured, they spread (how far depends on how slow the
    # tiny tasks measured, which a loaded machine changes)
    spread = _spins_per_group(str(path))
    assert sum(spread) == 16 and max(spread) <= 4 and len(spread) >= 4
    with dask.config.set({"daskray.fusion.profile": str(path)}):
        assert daskray.get(dsk, key) == sum(range(16)) + sum(range(1, 161))


@pytest.mark.parametrize(
    "profile, match",
    [
        ("/nonexistent/profile.json", "cannot be read"),
        ({"prefixes": {"a": -1}}, "not a daskray profile"),
        ({"spin": 1}, "not a daskray profile"),
    ],
)
def test_bad_profiles_are_named(profile, match):
    with pytest.raises(ValueError, match=match):
        planning.load_profile(profile)


def test_profile_file_must_be_json(tmp_path):
    bad = tmp_path / "p.json"
    bad.write_text("{nope")
    with pytest.raises(ValueError, match="is not JSON"):
        planning.load_profile(str(bad))


def test_cli_tune(ray_ctx, tmp_path, capsys):
    out = tmp_path / "p.json"
    rc = cli.main(["tune", "uneven", "--scale", "0.01", "--repeat", "1", "--output", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "spin" in text and "with the profile" in text
    assert "spin" in json.loads(out.read_text())["prefixes"]


def fails(x):
    raise ValueError("boom")


def test_a_failing_compute_keeps_its_error_and_the_report(ray_ctx, tmp_path):
    path = tmp_path / "r.html"
    x = da.ones(40, chunks=10)
    with pytest.raises(ValueError, match="boom"):
        with daskray.performance_report(str(path)) as rep:
            assert (x + 1).sum().compute(scheduler=daskray.get) == 80
            x.map_blocks(fails, meta=np.array((), dtype=float)).sum().compute(scheduler=daskray.get)
    assert path.exists()  # written all the same, with what ran
    first, failed = rep.summary()
    assert first["ray_tasks"] > 0 and len(rep.computes[0].records) == first["ray_tasks"]
    assert len(rep.computes[1].records) < failed["ray_tasks"]


def test_debug_computes_and_driver_groups_are_in_the_report(ray_ctx):
    """A ``debug=True`` compute (run here) is recorded like any other, on node ``local``; a
    store into a numpy array (written by the driver) shows its driver groups on ``driver``."""
    x = da.arange(4_000, chunks=1_000)
    out = np.zeros(4_000)
    with daskray.performance_report(None) as rep:
        assert (x + 1).sum().compute(scheduler=daskray.get, debug=True) == sum(range(1, 4_001))
        da.store(x * 2, out, lock=False, scheduler=daskray.get)
    np.testing.assert_array_equal(out, np.arange(4_000) * 2)
    debug, stored = rep.summary()
    assert debug["tasks"] > 0 and debug["ray_tasks"] > 0 and debug["nodes"] == 1
    assert {r["node"] for r in rep.computes[0].records.values()} == {"local"}
    nodes = {r["node"] for r in rep.computes[1].records.values()}
    assert "driver" in nodes and len(nodes) == 2  # the chunks on Ray, the writes here
    assert rep.prefixes()["store-map"]["tasks"] == 4
