"""daskray.performance_report (HTML + Chrome trace) and benchmark-driven tuning (daskray.tune)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

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

    reads = []
    counters = _ray.store_counters
    monkeypatch.setattr(_ray, "submit", spy)
    monkeypatch.setattr(_ray, "store_counters", lambda: reads.append(1) or counters())
    assert da.ones(10, chunks=5).sum().compute(scheduler=daskray.get) == 10
    assert not reads  # no object store counters read either
    with daskray.performance_report(None):
        assert da.ones(10, chunks=5).sum().compute(scheduler=daskray.get) == 10
    assert len(reads) == 2  # as the compute was planned, as it ended
    assert seen[0] is None  # untimed
    groups = [g for g, _ in seen[1]]  # (group, profile ref) of each Ray task
    assert groups and groups == sorted(set(groups))


def test_spilling_tables_from_made_up_counters():
    """The per-node differences of the object store counters, in the summary and the HTML."""
    rep = report.performance_report(None)
    spilled = rep.start("shuffle", 10, 0.0, on_ray=False)
    spilled.store_before = {
        "aa" * 28: _counts(100, 1, 0, 0),
        "bb" * 28: _counts(0, 0, 0, 0),
        "cc" * 28: _counts(5, 5, 5, 5),
    }
    spilled.store_after = {
        "aa" * 28: _counts(100 + 3 * 2**20, 4, 2**20, 1),
        "bb" * 28: _counts(0, 0, 512, 2),
        "cc" * 28: _counts(5, 5, 5, 5),  # nothing happened there: left out
        "dd" * 28: _counts(2**20, 1, 0, 0),  # joined meanwhile: counted from zero
    }
    quiet = rep.start("len", 2, 0.0, on_ray=False)
    quiet.store_before = quiet.store_after = {"aa" * 28: _counts(7, 7, 7, 7)}
    local = rep.start("debug", 2, 0.0, on_ray=False)  # never read: a compute run here
    first, second, third = rep.summary()
    assert first["spilled_bytes"] == 4 * 2**20 and first["spilled_objects"] == 4
    assert first["restored_bytes"] == 2**20 + 512 and first["restored_objects"] == 3
    assert first["spill_by_node"] == {
        "aa" * 28: _counts(3 * 2**20, 3, 2**20, 1),
        "bb" * 28: _counts(0, 0, 512, 2),
        "dd" * 28: _counts(2**20, 1, 0, 0),
    }
    for row in (second, third):
        assert row["spill_by_node"] == {}
        assert row["spilled_bytes"] == row["restored_bytes"] == row["spilled_objects"] == 0
    assert local.store_before is None and local.spilling() == {}

    text = rep.html()
    assert "Object store spilling" in text and "<h3>shuffle</h3>" in text
    assert "<h3>len</h3>" not in text  # a compute that spilled nothing has no table
    assert "<td>aaaaaaaaaaaa</td><td>3.00 MiB</td><td>1.00 MiB</td><td>3 / 1</td>" in text
    assert "<td>bbbbbbbbbbbb</td><td>0 B</td><td>512 B</td><td>0 / 2</td>" in text
    assert "<td>4.00 MiB</td><td>1.00 MiB</td></tr>" in text  # the computes table's columns
    assert "No object was spilled" in report.performance_report(None).html()


def _counts(spilled: int, spilled_objects: int, restored: int, restored_objects: int) -> dict:
    return {
        "spilled_bytes": spilled,
        "spilled_objects": spilled_objects,
        "restored_bytes": restored,
        "restored_objects": restored_objects,
    }


def blob(i: int, rows: int = 650_000):
    """Partition ``i`` of the spilling test: 10 MiB of random int64 keys and floats."""
    import pandas as pd

    rng = np.random.default_rng(i)
    return pd.DataFrame({"k": rng.integers(0, 1 << 62, rows), "v": rng.random(rows)})


SPILLING_DRIVER = """
import json, sys
import dask, dask.dataframe as dd, ray
import daskray
from test_report import blob

ray.init(address="local", num_cpus=2, object_store_memory=80 * 2**20, include_dashboard=False,
         object_spilling_directory=sys.argv[1], log_to_driver=False)
daskray.enable()
with dask.config.set({"dataframe.shuffle.method": "tasks"}):
    with daskray.performance_report(sys.argv[2]) as rep:
        meta = blob(0, rows=0)  # dask would compute it, as a compute of the report's own
        big = dd.from_map(blob, range(28), meta=meta).shuffle("k").map_partitions(len)
        small = dd.from_map(blob, range(2), rows=100, meta=meta).map_partitions(len)
        big, small = big.compute(), small.compute()
print(json.dumps({
    "rows": [int(big.sum()), int(small.sum())],
    "node": ray.get_runtime_context().get_node_id(),
    "summary": rep.summary(),
}))
ray.shutdown()
"""


@pytest.mark.once
def test_the_report_shows_what_the_object_store_spilled(tmp_path):
    """280 MiB shuffled through an 80 MiB object store, in a driver with its own Ray: the
    report's first compute spilled more than the store holds and restored some of it; the
    second, of a few KiB, spilled nothing."""
    spill = tmp_path / "spill"
    spill.mkdir()
    page = tmp_path / "r.html"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(__file__), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SPILLING_DRIVER), str(spill), str(page)],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["rows"] == [28 * 650_000, 200]
    big, small = got["summary"]
    store = 80 * 2**20
    assert big["spilled_bytes"] > store and big["spilled_objects"] > 0
    assert big["restored_bytes"] > 0 and big["restored_objects"] > 0
    assert list(big["spill_by_node"]) == [got["node"]]  # the one node
    assert small["spilled_bytes"] < store / 100 and small["restored_bytes"] < store / 100
    text = page.read_text()
    assert "Object store spilling" in text and f"<td>{got['node'][:12]}</td>" in text


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
    # the values that left a Ray task (ints, whatever their prefix): their mean size
    assert profile["sizes"] and set(profile["sizes"]) <= set(secs)
    assert all(20 <= b <= 100 for b in profile["sizes"].values()), profile["sizes"]
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
        ({"prefixes": {"a": 1}, "sizes": {"a": -5}}, "not a daskray profile"),
        ({"prefixes": {"a": 1}, "sizes": [1]}, "not a daskray profile"),
    ],
)
def test_bad_profiles_are_named(profile, match):
    with pytest.raises(ValueError, match=match):
        planning.load_profile(profile)


def test_a_profiles_sizes_keep_heavy_values_inside_groups():
    """With ``sizes`` in the profile, the bands of the group graph are picked charging every
    value a group reads from another group its bytes over ``transfer-rate``: a lattice of
    heavy values (4 MB each, 4 ms to move) is cut with fewer values crossing groups."""
    dsk, key = bench.lattice(0.16)  # 40 x 40
    graph = ingest.ingest(dsk, key)
    timed = {"prefixes": {"lat": 2e-4}, "default": 1e-5}
    with dask.config.set({"daskray.fusion.profile": timed}):
        light = planning.make_plan(graph, 2)
    heavy = {**timed, "sizes": {"lat": 4_000_000}}
    with dask.config.set({"daskray.fusion.profile": heavy}):
        assert planning.sizing(graph, 2).moves[graph.index[("lat", 3, 0)]] == 4000
        plan = planning.make_plan(graph, 2)
        with dask.config.set({"daskray.fusion.transfer-rate": 1e15}):  # free: as without
            assert planning.make_plan(graph, 2) == light
    assert len(plan.inputs) < len(light.inputs)


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
