"""Golden plans: a fixed corpus of graphs whose plans must not change by accident.

Every entry of :func:`corpus` is a graph for the core -- the hand-drawn shapes of
``test_core.py`` at the parameters its tests use, seeded random DAGs with classes, flags,
weights and priorities, and every ``daskray.bench`` workload at scale 0.01 as daskray's planning
layer hands it to the core (2 CPUs, default options) -- and ``golden_plans.json`` holds the
sha256 of every array of its plan. Both the compiled core and the pure twin must reproduce
every digest: a refactor keeps them all; a change of plans on purpose regenerates the file
in one commit of its own, saying why (``python tests/test_golden.py --write``).

The bench entries depend on the graphs dask builds, so they are checked only under the dask
version the file was written with (they are skipped, with that reason, under another). A
workload whose graph dask builds in an order that depends on the string hash seed
(:data:`SEEDED`) is planned in a child interpreter with ``PYTHONHASHSEED=0``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "golden_plans.json")
sys.path.insert(0, HERE)  # for test_core's shapes when run as a script

from daskray._graph import BLOCK_FUSION, PlanOptions  # noqa: E402
from test_core import (  # noqa: E402
    chain,
    independent_chains,
    sources_graph,
    split_graph,
    tree_reduction,
)

#: the bench workloads, at this scale, planned for this many CPUs
BENCH_SCALE = 0.01
BENCH_CPUS = 2
#: workloads whose graph comes out of dask in an order that depends on the string hash seed
#: (map_overlap builds part of its graph from sets): planned under PYTHONHASHSEED=0
SEEDED = ("stencil",)


def digest(plan) -> str:
    """sha256 over every array of ``plan`` (and its group count), in a fixed order."""
    h = hashlib.sha256()
    h.update(str(plan.ngroups).encode())
    for name in (
        "order",
        "group_of",
        "members_ptr",
        "members",
        "inputs_ptr",
        "inputs",
        "outputs_ptr",
        "outputs",
    ):
        a = getattr(plan, name)
        h.update(name.encode())
        h.update(len(a).to_bytes(8, "little"))
        h.update(b"".join(int(v).to_bytes(8, "little", signed=True) for v in a))
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# the corpus: name -> (graph {key: deps}, target keys, plan keyword arguments)
# --------------------------------------------------------------------------------------------


def _hand_shapes() -> dict:
    out: dict = {}
    c12 = chain(12)
    out["chain12-gw1"] = (c12, ["a11"], {"group_weight": 1})
    out["chain12-gw100"] = (c12, ["a11"], {"group_weight": 100})
    out["chain12-classes"] = (
        c12,
        ["a11"],
        {"group_weight": 100, "classes": [0, 0, 0, 1, 1, 1, 0, 0, 0, 2, 2, 2]},
    )
    out["chain5-block"] = (chain(5), ["a4"], {"group_weight": 100, "flags": [0, 0, 1, 0, 0]})
    tree, root = tree_reduction(64, 8)
    for gw in (4, 10, 20, 30, 1000):
        out[f"tree64-gw{gw}"] = (tree, [root], {"group_weight": gw})
        out[f"tree64-ones-gw{gw}"] = (tree, [root], {"group_weight": gw, "weights": "ones"})
    tree2, root2 = tree_reduction(2000, 32)
    out["tree2000-gw40"] = (tree2, [root2], {"group_weight": 40, "bundle_weight": 10})
    chains, tops = independent_chains(50, 5)
    out["chains50-gw50"] = (chains, tops, {"group_weight": 50, "weights": "ones"})
    for bw in (10, 100, 1000):
        out[f"chains50-bw{bw}"] = (
            chains,
            tops,
            {"group_weight": 50, "bundle_weight": bw, "weights": "ones"},
        )
    src, st = sources_graph(10, fan=5)
    out["sources10x5"] = (src, st, {"group_weight": 5, "weights": "ones"})
    out["sources10x5-bw1"] = (src, st, {"group_weight": 5, "bundle_weight": 1, "weights": "ones"})
    pairs = {("r", i): () for i in range(12)}
    pairs.update({("t", i): (("r", i), ("r", i ^ 1)) for i in range(12)})
    out["transpose-pairs"] = (
        pairs,
        [("t", i) for i in range(12)],
        {"group_weight": 8, "bundle_weight": 8, "weights": "ones"},
    )
    ring, rt = sources_graph(12, fan=2)
    out["ring12"] = (ring, rt, {"group_weight": 6, "bundle_weight": 6, "weights": "ones"})
    detour = {
        "r1": (),
        "z": (),
        "a": ("r1",),
        "x": ("a", "z"),
        "r2": ("x",),
        "b": ("r1", "r2"),
        "e": ("r2",),
    }
    out["cluster-detour"] = (detour, ["b", "e"], {"group_weight": 100, "weights": "ones"})
    piece = {
        "p2": (),
        "y": ("p2",),
        "p1": ("y",),
        "t1": ("p1",),
        "t2": ("p1",),
        "t3": ("p2",),
        "t4": ("y",),
    }
    out["piece-input"] = (
        piece,
        ["t1", "t2", "t3", "t4"],
        {"group_weight": 20, "split_fanout": 0, "cluster_fanout": 0, "weights": "ones"},
    )
    for with_load in (False, True):
        sg, stg = split_graph(8, with_load)
        out[f"split8-load{with_load}"] = (sg, stg, {"group_weight": 20, "weights": "ones"})
        flags = {"s": BLOCK_FUSION}
        out[f"split8-load{with_load}-blocked"] = (sg, stg, {"group_weight": 20, "flags": flags})
    sg, stg = split_graph(8, False)
    for sf in (0, 1, 9):
        out[f"split8-fanout{sf}"] = (
            sg,
            stg,
            {"group_weight": 20, "split_fanout": sf, "weights": "ones"},
        )
    sg40, st40 = split_graph(40, False)
    out["split40-gw10"] = (sg40, st40, {"group_weight": 10, "weights": "ones"})
    prio = {"a0": (), "a1": ("a0",), "a2": ("a1",), "b0": (), "b1": ("b0",), "b2": ("b1",)}
    out["priorities"] = (prio, ["a2", "b2"], {"priorities": {"b0": 1, "b1": 1, "b2": 1}})
    long = {i: (() if i == 0 else (i - 1,)) for i in range(20_000)}
    out["chain20000-gw1000"] = (long, [19_999], {"group_weight": 1000})
    return out


def _random_dags(count: int = 40) -> dict:
    """Seeded random layered DAGs with edges across layers, and random plan parameters."""
    out = {}
    for seed in range(count):
        rng = random.Random(seed)
        n = rng.randint(5, 400)
        keys = [("n", i) if i % 3 else f"n{i}" for i in range(n)]
        graph = {}
        for i, k in enumerate(keys):
            nd = 0 if i == 0 else rng.choice([0, 1, 1, 1, 2, 2, 3, 5])
            graph[k] = tuple(keys[rng.randrange(i)] for _ in range(nd)) if i else ()
        targets = rng.sample(keys, rng.randint(1, max(1, n // 10)))
        kw: dict = {"group_weight": rng.choice([1, 2, 5, 20, 60, 200])}
        kw["bundle_weight"] = rng.choice([0, 0, 3, 15])
        kw["split_fanout"] = rng.choice([0, 2, 2, 3])
        kw["cluster_fanout"] = rng.choice([0, 4, 4, 6])
        if rng.random() < 0.5:
            kw["weights"] = [rng.randint(0, 6) for _ in keys]
        if rng.random() < 0.4:
            kw["classes"] = [rng.choice([0, 0, 0, 1, 2]) for _ in keys]
        if rng.random() < 0.3:
            kw["flags"] = {k: BLOCK_FUSION for k in keys if rng.random() < 0.05}
        if rng.random() < 0.3:
            kw["priorities"] = {k: rng.randint(-2, 2) for k in keys if rng.random() < 0.3}
        if rng.random() < 0.5:
            kw["parallelism"] = rng.choice([1, 2, 4, 8])
        out[f"random-{seed}"] = (graph, targets, kw)
    return out


def corpus() -> dict:
    """Every core-level entry: ``{name: (graph, targets, plan keywords)}``."""
    return {**_hand_shapes(), **_random_dags()}


def _plan_args(graph: dict, targets: list, kw: dict, core):
    """``core.plan``'s arguments for a corpus entry: per-node values given by key become
    lists; ``"ones"`` weights become unit weights."""
    names = list(graph)
    index, indptr, indices = core.intern(names, [graph[k] for k in names])
    kw = dict(kw)
    for field in ("weights", "classes", "flags", "priorities"):
        value = kw.get(field)
        if value == "ones":
            kw[field] = [1] * len(names)
        elif isinstance(value, dict):
            per_node = [0] * len(names)
            for k, v in value.items():
                per_node[index[k]] = v
            kw[field] = per_node
    return names, indptr, indices, [index[t] for t in targets], kw


def core_plan(core, graph: dict, targets: list, kw: dict):
    names, indptr, indices, tids, kw = _plan_args(graph, targets, kw, core)
    return core.plan(names, indptr, indices, tids, PlanOptions(**kw))


def bench_plans(names=None) -> dict:
    """The ``daskray.bench`` workloads ``names`` (default: all but :data:`SEEDED`) at
    :data:`BENCH_SCALE`, planned by daskray's planning layer (with whichever core
    ``daskray._graph.plan`` is), under daskray's default options and the tasks shuffle that
    ``daskray.enable`` selects: plans depend on both (dask sizes a groupby's ``split_out``
    shuffle by ``dataframe.shuffle.method``), and a test that leaves either changed must not
    change the plans."""
    import copy

    import dask

    from daskray import bench, config, explain, ingest, planning

    if names is None:
        names = [name for name in bench.WORKLOADS if name not in SEEDED]
    pinned = {"daskray": copy.deepcopy(config.DEFAULTS), "dataframe.shuffle.method": "tasks"}
    out = {}
    with dask.config.set(pinned):
        for name in names:
            obj, keys = bench.WORKLOADS[name].make(BENCH_SCALE)
            if keys is None:
                out[f"bench-{name}"] = explain(obj, cpus=BENCH_CPUS).plan
            else:
                graph = ingest.ingest(obj, keys)
                out[f"bench-{name}"] = planning.make_plan(graph, BENCH_CPUS)
    return out


def seeded_digests(core_name: str) -> dict:
    """The digests of the :data:`SEEDED` workloads' plans, made by ``core_name``
    (``"_core"`` or ``"_pure"``) in a child interpreter whose string hash seed is 0."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    args = [sys.executable, os.path.abspath(__file__), "--seeded", core_name]
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


def _print_seeded(core_name: str) -> None:
    import importlib

    from daskray import _graph

    _graph.plan = importlib.import_module(f"daskray._graph.{core_name}").plan
    print(json.dumps({name: digest(p) for name, p in bench_plans(SEEDED).items()}))


def _load() -> dict:
    with open(GOLDEN, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def golden() -> dict:
    return _load()


def test_corpus_is_complete(golden):
    assert set(golden["core"]) == set(corpus())


@pytest.mark.parametrize("name", sorted(corpus()))
def test_core_plans_match_golden(core, golden, name):
    graph, targets, kw = corpus()[name]
    assert digest(core_plan(core, graph, targets, kw)) == golden["core"][name]


def test_bench_plans_match_golden(core, golden, monkeypatch):
    import dask

    if dask.__version__ != golden["dask"]:
        pytest.skip(f"golden bench plans were written with dask {golden['dask']}")
    from daskray import _graph

    monkeypatch.setattr(_graph, "plan", core.plan)
    digests = {name: digest(p) for name, p in bench_plans().items()}
    digests.update(seeded_digests(core.__name__.rsplit(".", 1)[1]))
    assert set(digests) == set(golden["bench"])
    wrong = [name for name, d in digests.items() if d != golden["bench"][name]]
    assert not wrong, f"plans changed: {wrong}"


def write() -> None:
    import dask

    from daskray import _graph

    data = {
        "dask": dask.__version__,
        "core": {
            name: digest(core_plan(_graph, *entry)) for name, entry in sorted(corpus().items())
        },
        "bench": {name: digest(p) for name, p in bench_plans().items()},
    }
    data["bench"].update(seeded_digests(_graph.plan.__module__.rsplit(".", 1)[1]))
    data["bench"] = dict(sorted(data["bench"].items()))
    with open(GOLDEN, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    print(f"wrote {len(data['core'])} core and {len(data['bench'])} bench digests to {GOLDEN}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--seeded"] and len(sys.argv) == 3:
        _print_seeded(sys.argv[2])
    elif sys.argv[1:] == ["--write"]:
        write()
    else:
        sys.exit("usage: python tests/test_golden.py --write")
