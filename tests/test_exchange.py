"""dask's tasks shuffle run as one exchange (:mod:`daskray.exchange`).

Recognised in the graphs of every operation that shuffles (``shuffle``, ``set_index``,
``sort_values``, hash ``merge``, ``groupby(split_out=...)``), single-stage (<= 32 partitions)
and staged (more); exact -- every output partition equals dask's own, rows in the same order;
planned as one Ray task per map and per reducer when the data is made in tasks; and beyond the
object store, in a driver of its own with Ray's store capped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from unittest import mock

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

import daskray
from daskray import exchange
from daskray._compat import Task, convert_legacy_graph
from daskray.ingest import ingest


def make(i: int, rows: int = 300) -> pd.DataFrame:
    """Partition ``i``: random int64 keys, a small-range key and a float column."""
    rng = np.random.default_rng(i)
    return pd.DataFrame(
        {
            "k": rng.integers(0, 1 << 62, rows),
            "k2": rng.integers(0, 50, rows),
            "v": rng.random(rows),
        }
    )


def frames(n: int, rows: int = 300):
    return dd.from_map(make, range(n), rows=rows)


@pytest.fixture(autouse=True)
def tasks_shuffle():
    with dask.config.set({"dataframe.shuffle.method": "tasks"}):
        yield


def _ops(n: int) -> dict:
    a = frames(n)
    b = dd.from_map(make, range(100, 100 + max(2, n // 2)), rows=200)
    b = b.assign(k=b.k % 97)
    return {
        "shuffle": a.shuffle("k"),
        "set_index": a.set_index("k"),
        "sort_values": a.sort_values("k"),
        "merge": a.assign(k=a.k % 97).merge(b, on="k", how="inner", broadcast=False),
        "groupby": a.groupby("k2").agg({"v": "sum"}, split_out=n),
        # a staged right side (> 32 partitions) repartitioned to the left's count: dask pads
        # its stages' outputs to k ** stages, and the padding receives no rows
        "merge-uneven": frames(68, rows=50).merge(
            dd.from_map(make, range(200, 234), rows=50), on="k", broadcast=False
        ),
    }


def graph_of(collection):
    return ingest(collection.__dask_graph__(), collection.__dask_keys__())


@pytest.mark.parametrize("n", [8, 40])  # dask stages the shuffle above 32 partitions
def test_a_tasks_shuffle_becomes_one_exchange(n):
    x = frames(n).shuffle("k")
    g = graph_of(x)
    assert g.exchange is not None
    prefixes = [k[0].split("-")[0] for k in g.names if isinstance(k, tuple)]
    assert "group" not in prefixes and "split" not in prefixes and "stage" not in prefixes
    pieces = [k for k in g.names if isinstance(k, tuple) and k[0].startswith("exchange-piece-")]
    assert len(maps_of(g)) == n and len(pieces) == n * n
    # the output keys keep their names
    assert all(k in g.index for k in x.__dask_keys__())


@pytest.mark.parametrize("n", [8, 40])
@pytest.mark.parametrize(
    "op", ["shuffle", "set_index", "sort_values", "merge", "groupby", "merge-uneven"]
)
def test_every_output_partition_is_dasks_own(ray_ctx, op, n):
    x = _ops(n)[op]
    assert graph_of(x).exchange is not None, "not recognised"
    got = dask.compute(*x.to_delayed(), scheduler=daskray.get)
    want = dask.compute(*x.to_delayed(), scheduler="sync")
    assert len(got) == len(want) == x.npartitions
    for g, w in zip(got, want):
        pd.testing.assert_frame_equal(g, w)  # rows in the same order, too
    # ... and as one compute (to_delayed's graphs are optimized apart)
    pd.testing.assert_frame_equal(x.compute(scheduler=daskray.get), pd.concat(want))
    if op == "shuffle":  # every key in exactly one output partition
        seen: set = set()
        for part in got:
            ks = set(part.k)
            assert not ks & seen
            seen |= ks
        assert sum(map(len, got)) == 300 * n


def maps_of(g) -> list:
    return [k for k in g.names if isinstance(k, tuple) and k[0].startswith("exchange-map-")]


def test_batched_maps_are_exact(ray_ctx):
    x = frames(40).shuffle("k")
    want = x.compute(scheduler="sync")
    with dask.config.set({"daskray.exchange.max-pieces": 400}):  # 40 x 40 pieces: 4 per map
        assert len(maps_of(graph_of(x))) == 10
        pd.testing.assert_frame_equal(x.compute(scheduler=daskray.get), want)
        # ... but never more than map-bytes of partitions in one (300 rows: ~10 KiB each)
        with dask.config.set({"daskray.exchange.map-bytes": 25_000}):
            assert len(maps_of(graph_of(x))) == 20
            pd.testing.assert_frame_equal(x.compute(scheduler=daskray.get), want)


def test_a_shuffle_whose_pieces_are_read_elsewhere_stays_as_dask_built_it(ray_ctx):
    x = frames(8).shuffle("k")
    dsk = dict(x.__dask_graph__())
    split = next(k for k in dsk if isinstance(k, tuple) and k[0].startswith("split-"))
    keys = [*x.__dask_keys__(), split]
    assert ingest(dsk, keys).exchange is None
    got = daskray.get(dsk, keys)
    want = dask.get(dsk, keys)
    pd.testing.assert_frame_equal(got[-1], want[-1])
    pd.testing.assert_frame_equal(pd.concat(got[:-1]), pd.concat(want[:-1]))


def test_exchange_can_be_turned_off():
    x = frames(8).shuffle("k")
    with dask.config.set({"daskray.exchange.enabled": False}):
        assert graph_of(x).exchange is None
    assert graph_of(x).exchange is not None


def _tasks_of(explanation, prefix: str) -> list:
    return [g for g in explanation.groups if prefix in g.prefixes]


def test_heavy_partitions_run_one_ray_task_per_map_and_reducer():
    x = frames(40).shuffle("k").map_partitions(len)
    with dask.config.set({"daskray.exchange.heavy-bytes": 1000}):  # 300 rows: ~10 KiB
        e = daskray.explain(x, cpus=2)
        # what fits in half the object store is light, however large its partitions
        assert daskray.explain(x, cpus=2, store=2 * 10**5).plan.ngroups == e.plan.ngroups
        assert daskray.explain(x, cpus=2, store=10**7).plan.ngroups < 40
    maps = _tasks_of(e, "exchange-map-taskshuffle")
    assert len(maps) == 40
    for g in maps:  # a map with its pieces, the tasks making its input inlined, alone
        assert g.prefixes == {"exchange-map-taskshuffle": 1, "exchange-piece-taskshuffle": 40}
        assert g.outputs == 40 and g.inputs == 0
    assert not _tasks_of(e, "make")
    reducers = _tasks_of(e, "taskshuffle")
    assert len(reducers) == 40
    for g in reducers:  # a reducer with the chain reading its output
        assert g.prefixes["taskshuffle"] == 1 and g.inputs == 40 and g.outputs == 1


def _diamond(n: int):
    """A partition read twice before its shuffle, as ``set_index`` reads it (its key column
    for the partitioning, and the whole to assign it): a diamond no tree fusion takes."""
    a = frames(n)
    return a.assign(p=a.k % 7).shuffle("p").map_partitions(len)


def test_the_tasks_making_a_heavy_maps_partitions_are_inlined_into_it(ray_ctx):
    x = _diamond(12)
    want = x.compute(scheduler="sync")
    with dask.config.set({"daskray.exchange.heavy-bytes": 1000}):
        e = daskray.explain(x, cpus=2)
        maps = _tasks_of(e, "exchange-map-taskshuffle")
        assert len(maps) == 12 and all(g.inputs == 0 for g in maps)
        assert [g for g in e.groups if "make" in g.prefixes or "assign" in g.prefixes] == []
        got = x.compute(scheduler=daskray.get)
    assert list(got) == list(want)


def test_a_task_read_outside_the_maps_or_annotated_is_not_inlined(ray_ctx):
    a = frames(6)
    shuffled = a.assign(p=a.k % 7).shuffle("p").map_partitions(len)
    with dask.config.set({"daskray.exchange.heavy-bytes": 1000}):
        # the source partitions are also summed elsewhere: they stay tasks of their own
        both = daskray.explain(shuffled, a.v.sum(), cpus=2)
        assert sum(g.prefixes.get("make", 0) for g in both.groups) == 6
        assert dask.compute(shuffled, a.v.sum(), scheduler=daskray.get)[1] == pytest.approx(
            a.v.sum().compute(scheduler="sync")
        )
        # an annotated task (dask.annotate on an array or a task graph: dask-expr frames
        # drop annotations) carries them in a Ray task of its own
        graph = convert_legacy_graph(dict(shuffled.__dask_graph__()))
        names, nodes = list(graph), list(graph.values())
        funcs = [n.func for n in nodes if type(n) is Task]
        makes = [k for k in names if isinstance(k, tuple) and k[0].startswith("make")]
        plain = exchange.rewrite(names, nodes, [], funcs)
        marked = exchange.rewrite(names, nodes, [], funcs, frozenset(makes[:1]))
    assert len(makes) == 6 and not set(makes) & set(plain[0])
    assert set(makes) & set(marked[0]) == {makes[0]}


def test_the_two_sides_of_a_heavy_merge_share_a_barrier_and_chained_exchanges_do_not(ray_ctx):
    """A merge's reducers wait for every map of both sides (an exchange's whose maps finish
    first would otherwise pin the store with restored pieces while the other side's maps run);
    an exchange fed by another's outputs cannot wait for that one's maps: no barrier."""
    x = _ops(12)["merge"]
    want = x.compute(scheduler="sync")
    chained = frames(12).shuffle("k").assign(p=lambda d: d.k % 5).shuffle("p")
    with dask.config.set({"daskray.exchange.heavy-bytes": 1000}):
        graph = graph_of(x)
        barriers = [k for k in graph.names if isinstance(k, str) and "exchange-barrier" in k]
        assert len(barriers) == 1
        maps = [k for k in graph.names if isinstance(k, tuple) and "exchange-map" in k[0]]
        done = graph.nodes[graph.index[barriers[0]]].dependencies
        assert len(done) == len(maps) > 12  # every map of both sides
        readers = [k for k, n in zip(graph.names, graph.nodes) if barriers[0] in n.dependencies]
        assert len(readers) == 2 * 12  # the reducers of both sides
        got = x.compute(scheduler=daskray.get)
        assert not any("exchange-barrier" in str(k) for k in graph_of(chained).names)
        assert chained.map_partitions(len).compute(scheduler=daskray.get).sum() == 12 * 300
    pd.testing.assert_frame_equal(got, want)


def _tokens_waited(graph) -> dict:
    """Reducer key -> the token key it waits for (its window), from the ingested graph."""
    out = {}
    for key, node in zip(graph.names, graph.nodes):
        for d in node.dependencies:
            if isinstance(d, tuple) and d[0].startswith("exchange-token-"):
                out[key] = d
    return out


def test_a_heavy_merge_runs_its_reducers_in_a_window_and_its_joins_apart(ray_ctx):
    """The reducers feeding a merge's joins wait, K places back, for a token of an earlier
    one (both sides in one sequence, outputs interleaved): no more than K have their pieces
    pulled into the store at once. Each join is a Ray task of its own, not fused into the
    tree reading them all. A shuffle's reducers (whose outputs a chain reads, fused with
    them) have no window. Results equal dask's."""
    x = _ops(12)["merge"]
    want = x.compute(scheduler="sync")
    cfg = {"daskray.exchange.heavy-bytes": 1000, "daskray.exchange.reduce-window": 3}
    with dask.config.set(cfg):
        graph = graph_of(x)
        waits = _tokens_waited(graph)
        tokens = [k for k in graph.names if isinstance(k, tuple) and "exchange-token" in k[0]]
        assert len({k[0] for k in tokens}) == 2  # both sides windowed
        assert len(tokens) == len(waits) == 2 * 12 - 3  # the last 3 return none
        assert sorted(waits.values()) == sorted(tokens)  # each waited for once
        e = daskray.explain(x, cpus=2)
        joins = [g for g in e.groups if any("merge" in p for p in g.prefixes)]
        assert len(joins) == 12 and all(g.inputs == 2 for g in joins)
        got = x.compute(scheduler=daskray.get)
        assert not _tokens_waited(graph_of(_ops(12)["shuffle"]))
    pd.testing.assert_frame_equal(got, want)
    with dask.config.set({**cfg, "daskray.exchange.reduce-window": 0}):
        with pytest.raises(ValueError, match="reduce-window is 0"):
            graph_of(x)


def test_windows_interleave_the_sides_sharing_a_barrier():
    """A merge's two sides form one sequence, outputs interleaved (what a join reads becomes
    ready together): position p waits for position p - K. An exchange without the barrier is
    a sequence of its own."""

    def ex(name: str, n: int, m: int):
        stage = exchange._Stage(name, 0, ("k", m, n, False, m))
        return exchange.Exchange(
            [stage], list(range(n)), [(("o", name, r), r) for r in range(m)], set()
        )

    a, b, c = ex("a", 4, 4), ex("b", 2, 3), ex("c", 2, 3)
    sized = [(a, 10**6, 1, []), (b, 10**6, 1, []), (c, 10**6, 1, [])]
    cfg = {"heavy-bytes": 1000}
    with dask.config.set({"daskray.exchange.reduce-window": 2}):
        waits, tokens = exchange._windows(sized, [0, 1, 2], {0, 1}, cfg, None)
    # a0 b0 a1 b1 a2 b2 a3: p waits for p - 2
    assert waits[0] == {
        1: ("exchange-token-a", 0),
        2: ("exchange-token-a", 1),
        3: ("exchange-token-a", 2),
    }
    assert waits[1] == {1: ("exchange-token-b", 0), 2: ("exchange-token-b", 1)}
    assert tokens[0] == {0, 1, 2} and tokens[1] == {0, 1}
    assert waits[2] == {2: ("exchange-token-c", 0)} and tokens[2] == {0}
    # unset and no cluster known (debug mode): no window
    assert exchange._windows(sized, [0, 1, 2], {0, 1}, cfg, None) == (
        [{}, {}, {}],
        [set(), set(), set()],
    )


def test_the_window_is_sized_from_the_store_and_only_beyond_half_of_it():
    """Unset, the window comes from the cluster's CPUs and store (what ``explain(store=...)``
    plans for): none when what the merge moves fits in half the store."""
    x = _ops(12)["merge"]
    # partitions of 100 kB (as assumed where the probe tells nothing; set for both sides)
    sizes = {"daskray.exchange.heavy-bytes": 1000, "daskray.exchange.partition-bytes": 10**5}
    with dask.config.set(sizes), mock.patch.object(exchange, "partition_bytes", lambda *a: None):
        # each side moves more than half of 1 MB (12 and 6 partitions); outputs of 100 kB at
        # most: K = 1e6 // 8e5 = 1, the sides in one sequence of 24
        small = daskray.explain(x, cpus=2, store=10**6)
        assert sum("exchange-token" in str(n) for n in small.graph.names) == 2 * 12 - 1
        # of 2 MB, only the side of 12 partitions: K = 2, alone
        middle = daskray.explain(x, cpus=2, store=2 * 10**6)
        assert sum("exchange-token" in str(n) for n in middle.graph.names) == 12 - 2
        big = daskray.explain(x, cpus=2, store=10**7)  # fits in half the store: no window
        assert not any("exchange-token" in str(n) for n in big.graph.names)
    assert exchange.window(256 * 2**20, 20 * 2**20) == 1
    assert exchange.window(2**20, 2**30) == 1  # never none
    assert exchange.window(2**30, 2**20) == 128


def test_small_literal_data_is_light_and_fused():
    pdf = make(0, rows=4000)
    x = dd.from_pandas(pdf, npartitions=40).shuffle("k").map_partitions(len)
    e = daskray.explain(x, cpus=2)
    assert e.plan.ngroups < 40  # maps and reducers share Ray tasks
    with dask.config.set({"daskray.exchange.heavy-bytes": 1}):  # now each partition is heavy
        assert daskray.explain(x, cpus=2).plan.ngroups > 80


def test_batches():
    mib = 2**20
    assert exchange.batches(40, 40, 20 * mib, 2048, 192 * mib) == 1
    assert exchange.batches(100, 100, 20 * mib, 2048, 192 * mib) == 5  # 2000 pieces
    assert exchange.batches(250, 250, 20 * mib, 2048, 192 * mib) == 9  # memory-bound
    assert exchange.batches(250, 250, 400 * mib, 2048, 192 * mib) == 1
    assert exchange.batches(3, 3, 1, 0, 10) == 9


def test_partition_size_from_literal_data_or_a_probe():
    def size_of(x):
        g = dict(x.__dask_graph__())
        from daskray._compat import convert_legacy_graph

        nodes = convert_legacy_graph(g)
        names = list(nodes)
        index = {k: i for i, k in enumerate(names)}
        (ex,) = exchange.find(names, list(nodes.values()), index)
        return exchange.partition_bytes(ex, index, list(nodes.values()))

    from dask.sizeof import sizeof

    pdf = make(0, rows=4000)
    literal = size_of(dd.from_pandas(pdf, npartitions=8).shuffle("k"))
    assert sizeof(pdf) / 8 <= literal <= 1.5 * sizeof(pdf) / 8  # the index and meta too
    probed = size_of(frames(8, rows=4000).shuffle("k"))  # make(0, 4000), run here
    assert probed == pytest.approx(sizeof(pdf), rel=0.01)


def test_small_partitions_made_in_tasks_are_probed_light():
    x = frames(40, rows=300).shuffle("k").map_partitions(len)
    assert daskray.explain(x, cpus=2).plan.ngroups < 40


DRIVER = """
import json, os, sys, tempfile, shutil
import dask, numpy as np, pandas as pd, ray
import daskray
from test_exchange import frames

spill = sys.argv[1]
ray.init(address="local", num_cpus=2, object_store_memory=80 * 2**20, include_dashboard=False,
         object_spilling_directory=spill, log_to_driver=False)
daskray.enable()
n, rows = 30, 400_000  # 30 partitions of 9.2 MiB: 275 MiB, 3.4x the store
x = frames(n, rows).shuffle("k")
def summary(p):
    h = pd.util.hash_pandas_object(p[["k", "v"]], index=False).to_numpy()
    return pd.DataFrame({"rows": [len(p)], "sum": [int(h.sum(dtype="uint64")) % 2**61],
                         })
got = x.map_partitions(summary).compute()
want = frames(n, rows).map_partitions(summary).compute()
# every key in exactly one output partition: partitions of a hash shuffle hold disjoint keys
keys = x.map_partitions(lambda p: pd.DataFrame({"k": p.k.unique()})).compute()
print(json.dumps({
    "rows": int(got.rows.sum()), "want_rows": int(want.rows.sum()),
    "sum": sum(map(int, got["sum"])) % 2**61, "want_sum": sum(map(int, want["sum"])) % 2**61,
    "distinct": int(keys.k.nunique()), "listed": len(keys),
    "spilled": os.path.isdir(spill) and any(os.scandir(spill)),
}))
ray.shutdown()
"""


@pytest.mark.once
def test_beyond_the_object_store(tmp_path):
    """275 MiB shuffled through an 80 MiB object store: every row, checksum and key."""
    spill = tmp_path / "spill"
    spill.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(__file__), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(DRIVER), str(spill)],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["rows"] == got["want_rows"] == 30 * 400_000
    assert got["sum"] == got["want_sum"]
    assert got["distinct"] == got["listed"]  # no key listed by two partitions
    assert got["spilled"], "the store never spilled: the data was not beyond it"


def stamp(part: pd.DataFrame) -> pd.Series:
    """When this partition's reducer chain ran (wall clock of this machine)."""
    import time

    return pd.Series([time.time()])


def test_progress_moves_during_the_map_phase(ray_ctx):
    """dask's callbacks (what its ProgressBar draws) report the maps while they run: before
    any reducer has started."""
    import time

    from dask.callbacks import Callback

    seen: list = []
    # 16 maps of 200,000 rows on 2 CPUs: a map phase of several waves, each far longer than
    # gather's polls (0.1 s), so that the first maps are seen while the last still run
    x = frames(16, rows=200_000).shuffle("k").map_partitions(stamp, meta=(None, float))
    with Callback(posttask=lambda key, *_: seen.append((time.time(), key))):
        reduced_at = x.compute(scheduler=daskray.get)
    maps = [t for t, k in seen if isinstance(k, tuple) and k[0].startswith("exchange-map-")]
    assert len(maps) == 16 and len(reduced_at) == 16
    assert min(maps) < reduced_at.min()  # the first map was reported before any reducer ran


def test_persisted_inputs_are_not_sized_by_their_refs(ray_ctx):
    from daskray._compat import convert_legacy_graph

    p = frames(8, rows=4000).persist(scheduler=daskray.get)
    x = p.shuffle("k")
    nodes = convert_legacy_graph(dict(x.__dask_graph__()))
    names = list(nodes)
    index = {k: i for i, k in enumerate(names)}
    (ex,) = exchange.find(names, list(nodes.values()), index)
    assert exchange.partition_bytes(ex, index, list(nodes.values())) is None
    want = frames(8, rows=4000).shuffle("k").compute(scheduler="sync")
    pd.testing.assert_frame_equal(x.compute(scheduler=daskray.get), want)


def test_sources_read_twice_are_not_bundled_before_a_heavy_exchange():
    """Source partitions read by the exchange and by something else (a sum here; set_index's
    sample, were it in the same graph) are not inlined into the maps and make no tree below
    them, yet no one Ray task may make them all."""
    a = frames(40)
    x = a.set_index("k").map_partitions(len)
    with dask.config.set({"daskray.exchange.heavy-bytes": 1000}):
        e = daskray.explain(x, a.v.sum(), cpus=2, store=10**5)
    makes = [gr.prefixes["make"] for gr in e.groups if "make" in gr.prefixes]
    assert sum(makes) == 40 and max(makes) == 1
