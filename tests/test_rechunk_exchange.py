"""dask's tasks rechunk run as a rechunk exchange (:func:`daskray.exchange.rechunks`).

Heavy stages (blocks over ``daskray.exchange.heavy-bytes``; the tests lower it) lose their
``rechunk-split`` objects: maps of consecutive old blocks return one piece per new block, and
the new blocks -- plain merges, or merges dask fused with what follows -- read their slices out
of the pieces. Every result equals dask's own (sync scheduler), element for element.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest

import daskray
from daskray.ingest import ingest

HEAVY = {"daskray.exchange.heavy-bytes": 1000, "array.rechunk.method": "tasks"}
#: dask's default threshold, with blocks of at most 256 KiB between stages
STAGED = {"array.rechunk.threshold": 4, "array.chunk-size": "256KiB"}


def graph_of(x):
    return ingest(x.__dask_graph__(), x.__dask_keys__())


def prefixes(g) -> set:
    return {k[0].rsplit("-", 1)[0] for k in g.names if type(k) is tuple}


def base(shape, chunks, seed=0):
    return da.random.default_rng(seed).random(shape, chunks=chunks)


CASES = {
    # every new block reads every old one (row blocks to column blocks)
    "rows_to_columns": ((2000, 64), (250, 64), (2000, 8), {}),
    # dask plans it in two stages: both are exchanges, the second reading the first's blocks
    "two_stages": ((4000, 64), (500, 64), (4000, 8), {**STAGED}),
    # merging whole old blocks (no slice taken of them) and splitting others
    "whole_and_sliced": ((3000, 10), (300, 10), (500, 5), {}),
    # irregular chunks in three dimensions
    "irregular_3d": ((60, 50, 40), ((10, 20, 30), (25, 25), (40,)), (15, 50, 8), {}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_heavy_rechunks_equal_dasks_own(ray_ctx, case):
    shape, old, new, extra = CASES[case]
    x = base(shape, old)
    with dask.config.set({**HEAVY, "array.rechunk.threshold": 64, **extra}):
        y = x.rechunk(new)
        want = y.compute(scheduler="sync")
        g = graph_of(y)
        got = y.compute(scheduler=daskray.get)
    assert "rechunk-split" not in prefixes(g) and "rechunk-map" in prefixes(g)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    # the blocks themselves, not only the assembled array
    with dask.config.set({**HEAVY, "array.rechunk.threshold": 64, **extra}):
        blocks = dask.compute(*y.to_delayed().ravel(), scheduler=daskray.get)
    for got_block, sl in zip(blocks, da.core.slices_from_chunks(y.chunks)):
        np.testing.assert_array_equal(got_block, want[sl])


def test_two_stages_are_two_exchanges_and_light_rechunks_are_left_alone():
    x = base((4000, 64), (500, 64))
    with dask.config.set({**HEAVY, **STAGED}):
        y = x.rechunk((4000, 8))
        g = graph_of(y)
    maps = {k[0] for k in g.names if type(k) is tuple and k[0].startswith("rechunk-map-")}
    assert len(maps) == 2
    assert len(g.exchange) == 2
    light = graph_of(y)  # 256 KiB blocks under the default heavy-bytes: as dask built it
    assert light.exchange is None and "rechunk-split" in prefixes(light)


def test_maps_batch_consecutive_blocks_past_max_pieces():
    x = base((4000, 64), (125, 64))  # 32 row blocks of 64 KB
    cfg = {**HEAVY, "array.rechunk.threshold": 64, "daskray.exchange.max-pieces": 256}
    with dask.config.set(cfg):
        y = x.rechunk((4000, 2))  # 32 column blocks: 1024 slices
        g = graph_of(y)
        got = y.compute(scheduler="sync")  # the rewritten graph runs in the sync scheduler too
    maps = [n for k, n in zip(g.names, g.nodes) if type(k) is tuple and "rechunk-map" in k[0]]
    assert len(maps) == 8  # 4 blocks each: 8 maps x 32 pieces = 256
    assert all(len(m.dependencies) == 4 for m in maps)
    pieces = [k for k in g.names if type(k) is tuple and "rechunk-piece" in k[0]]
    assert len(pieces) == 256
    np.testing.assert_array_equal(got, x.compute(scheduler="sync"))


def test_a_heavy_rechunk_runs_each_map_with_its_pieces_and_each_new_block_alone(ray_ctx):
    x = base((4000, 64), (500, 64))  # 8 row blocks
    with dask.config.set({**HEAVY, "array.rechunk.threshold": 64}):
        y = x.rechunk((4000, 8)).map_blocks(np.sqrt)  # merges fused with sqrt by dask
        e = daskray.explain(y, cpus=2)
        got = y.compute(scheduler=daskray.get)
    maps = [gr for gr in e.groups if "rechunk-map" in gr.prefixes]
    assert len(maps) == 8 and all(gr.prefixes["rechunk-map"] == 1 for gr in maps)
    assert all(gr.outputs == 8 for gr in maps)  # one piece per new block, as one Ray task
    assert sum(gr.prefixes.get("random", 0) for gr in maps) == 8  # each makes its block
    news = [gr for gr in e.groups if "rechunk-merge-sqrt" in gr.prefixes]
    assert len(news) == 8 and all(gr.prefixes["rechunk-merge-sqrt"] == 1 for gr in news)
    np.testing.assert_array_equal(got, np.sqrt(x.compute(scheduler="sync")))


def test_a_stage_whose_slices_are_requested_is_left_as_dask_built_it(ray_ctx):
    x = base((2000, 64), (250, 64))
    with dask.config.set({**HEAVY, "array.rechunk.threshold": 64}):
        y = x.rechunk((2000, 8))
        dsk = dict(y.__dask_graph__())
        split = next(k for k in dsk if k[0].startswith("rechunk-split-"))
        keys = [split, (y.name, 0, 0)]
        g = ingest(dsk, keys)
        got = daskray.get(dsk, keys)
    assert g.exchange is None
    want = dask.get(dsk, keys)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_rechunk_exchange_can_be_turned_off():
    x = base((2000, 64), (250, 64))
    with dask.config.set({**HEAVY, "daskray.exchange.enabled": False}):
        g = graph_of(x.rechunk((2000, 8)))
    assert g.exchange is None and "rechunk-split" in prefixes(g)
