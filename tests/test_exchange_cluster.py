"""The exchange on a real multi-node Ray cluster: three ``ray.cluster_utils.Cluster`` nodes on
this box, 1 CPU and a small object store each.

Every row survives a shuffle, a ``set_index`` and a hash merge (counted), and the bytes the
shuffle moves between nodes (from the performance report: inputs a Ray task read that another
node produced) stay within 1.1x of what any shuffle must move, ``(k - 1) / k`` of the data on
``k`` nodes. One code path serves one node and many: nothing here is cluster-specific.
"""

from __future__ import annotations

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

import daskray
from daskray.ingest import ingest

pytestmark = [pytest.mark.cluster, pytest.mark.once]

NODES = 3


def make(i: int, rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(i)
    return pd.DataFrame(
        {
            "k": rng.integers(0, 1 << 62, rows),
            "j": rng.integers(0, 5000, rows),
            "v": rng.random(rows),
        }
    )


def frames(n: int, rows: int, offset: int = 0):
    return dd.from_map(make, range(offset, offset + n), rows=rows)


@pytest.fixture(scope="module")
def cluster(local_cluster):
    node = {"num_cpus": 1, "object_store_memory": 100 * 2**20}
    with local_cluster({**node, "include_dashboard": False}, *[node] * (NODES - 1)) as (c, _):
        with dask.config.set({"dataframe.shuffle.method": "tasks"}):
            yield c


def rows_of(part: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"n": [len(part)], "keys": [part.k.nunique()]})


def test_shuffle_keeps_every_row_and_moves_the_minimum(cluster):
    n, rows = 12, 100_000  # 12 x 2.3 MiB, made on whichever node runs each map
    x = frames(n, rows).shuffle("k")
    with daskray.performance_report(filename=None) as report:
        got = x.map_partitions(rows_of).compute(scheduler=daskray.get)
    assert got.n.sum() == n * rows
    assert got["keys"].sum() == frames(n, rows).k.nunique().compute(scheduler=daskray.get)
    (s,) = report.summary()
    assert s["nodes"] == NODES
    # every reducer reads one piece from every map: what crosses nodes is the pieces read by
    # reducers on other nodes than their map's -- the data's (k - 1) / k at best
    assert s["read_bytes"] > n * rows * 24
    assert s["cross_node_bytes"] <= 1.1 * (NODES - 1) / NODES * s["read_bytes"]


def test_set_index_and_merge_keep_every_row(cluster):
    n, rows = 9, 50_000
    a = frames(n, rows)
    by_k = a.set_index("k").map_partitions(len).compute(scheduler=daskray.get)
    assert by_k.sum() == n * rows
    b = frames(4, 20_000, offset=100).drop(columns="k").rename(columns={"v": "w"})
    b = b.drop_duplicates(subset="j")  # each j at most once: a merge keeps a's row count
    merged = a.merge(b, on="j", how="left", broadcast=False)
    counted = merged.map_partitions(len).compute(scheduler=daskray.get)
    assert counted.sum() == n * rows
    sync = merged.w.sum().compute(scheduler="sync")
    assert merged.w.sum().compute(scheduler=daskray.get) == pytest.approx(sync)


def test_a_windowed_heavy_merge_keeps_every_row(cluster):
    """The reducers of both sides run two at a time, each waiting for a token of an earlier
    one (which may sit on another node), the joins as tasks of their own: every row kept."""
    n, rows = 9, 50_000  # partitions of ~1.2 MB: heavy over 1 MiB
    a = frames(n, rows)
    b = frames(4, 20_000, offset=100).drop(columns="k").rename(columns={"v": "w"})
    b = b.drop_duplicates(subset="j")
    merged = a.merge(b, on="j", how="left", broadcast=False)
    cfg = {"daskray.exchange.heavy-bytes": 2**20, "daskray.exchange.reduce-window": 2}
    with dask.config.set(cfg):
        graph = ingest(merged.__dask_graph__(), merged.__dask_keys__())
        assert any("exchange-token" in str(k) for k in graph.names)
        counted = merged.map_partitions(len).compute(scheduler=daskray.get)
        total = merged.w.sum().compute(scheduler=daskray.get)
    assert counted.sum() == n * rows
    assert total == pytest.approx(merged.w.sum().compute(scheduler="sync"))
