"""The beyond-memory benchmark family: ``daskray bench big``.

An all-to-all operation (a shuffle, a sort, a hash merge, a many-group groupby, an array
rechunk) over more data than the schedulers are given memory for -- Ray's object store
(``--store-gb``), a LocalCluster worker's memory limit -- so that they spill. Every
(operation, scheduler) pair runs in a fresh Python subprocess, one after another: no scheduler
inherits another's warm workers, caches, heap or leaked memory, and one that crashes, is
killed for memory or runs past its limit costs its own row, not the command::

    parent: daskray bench big                  child: python -c "...bigbench.child_main(...)"
    ----------------------------------------   ------------------------------------------
    for each op:                               start its scheduler (a local Ray with the
      reference child (threads): input            store and a spilling directory, or a
        checksums, input bytes                    LocalCluster, or nothing)
      for each scheduler:                      warm-up: the same op on a tiny layout
        spec (JSON) ------------------------>  idle: PSS of the process tree, before the run
        poll the progress file; past the       progress file <- "running" (+ peak so far)
          limit: kill the tree, row = DNF      timed: make -> op -> one summary a partition
        result file <------------------------  (a sampler thread: peak PSS every 0.25 s)
        compare with the reference: ok?        exit (Ray's atexit shuts the local Ray down)
        remove its temporary directory

Schedulers (:data:`SCHEDULERS`): ``daskray`` (``daskray.enable()``, dask's "tasks" shuffle)
and ``ray_dask_get`` (Ray's own, "tasks" shuffle) on ``ray.init(address="local",
num_cpus=CPUS, object_store_memory=STORE, object_spilling_directory=<temporary>)`` started
through :func:`daskray._ray.connect` (this module never imports Ray); ``disk``: dask's threaded
scheduler with its partd disk shuffle; ``p2p``: dask distributed's P2P shuffle (and P2P
rechunk) on a ``LocalCluster`` of CPUS one-thread worker processes, each with a memory limit of
STORE + 1 GiB. Arrays have no disk method: ``disk`` rechunks with dask's tasks rechunk.

Data are made inside the tasks (``dd.from_map``/``da.map_blocks`` over this module's
functions, which Ray's workers import by name), one seeded numpy Generator a partition, so
generation is part of every timed graph alike and nothing is shipped from the driver. The
timed graph ends in one small summary row per output partition (:func:`summarize`): a
beyond-memory result is never gathered, but every row of it is counted and hashed. Keys are
built so that what a correct answer must look like is known from the input alone:

- frame row ``g`` (``0 <= g < N``, rows in random order within a partition):
  ``k = mix64(g mod ceil(N/2))`` -- every key exactly twice (partitions P/2 apart), spread over
  int64's full range by a bijective mixer -- so there are exactly ``ceil(N/2)`` distinct keys;
  ``k2 = g mod (N // 10)``: groups of ten rows; ``x, y, z``: uniform floats.
- merge: the left frame's ``k`` is uniform in ``[0, 2R)``; the right frame (half the
  partitions, ``R`` rows) holds the keys ``R .. 2R-1`` once each, with columns that are
  functions of the key (:func:`right_columns`): half the left rows match one right row, and
  the joined frame follows from the left frame alone.
- rechunk: an ``(N, 64)`` float64 array in row blocks, rechunked to column blocks of about the
  input blocks' size (all rows, ``64/P`` columns; beyond 64 partitions, one column of
  ``64 x`` a block's rows) and reduced to a hash of every value and its position.

The checks (:func:`verify`): rows and an order-free hash sum (uint64 wrap-around of
``pd.util.hash_pandas_object`` over the sorted columns) equal to the input's (to the expected
join's, for merge); shuffle: the distinct keys counted per output partition sum to the global
count (no key split over partitions); set_index, sort_values: each partition sorted and the
non-empty partitions' key ranges strictly increasing; groupby: one row per group, the sum of
the group keys, the wrapped int64 sum of ``k`` and the float sums (to 1e-6) equal to the
input's; rechunk: element count and position-aware hash sum.

Measurements: seconds of the timed compute alone; MB/s per core = input bytes (pandas
``memory_usage(deep=True)`` summed over the input partitions, array ``nbytes``) / 1e6 /
seconds / CPUs; peak = the largest sampled sum of PSS over the child and all its descendants
(Ray's GCS, raylet and workers; LocalCluster's nannies and workers: shared object-store pages
count once); idle = that sum after start-up and the warm-up, before the timed run. ``--limit``
bounds the timed run (start-up and warm-up get :data:`START_S` more).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from .bench import PeakRss

GIB = 2**30
#: default input bytes a partition (block)
PART_BYTES = 20 * 2**20
#: bytes a frame row: five 8-byte columns
ROW_BYTES = 40
#: columns of the rechunk array
WIDTH = 64
#: Ray refuses a smaller object store (``ray_constants.OBJECT_STORE_MINIMUM_MEMORY_BYTES``)
MIN_STORE_BYTES = 75 * 2**20
OPS = ("shuffle", "set_index", "sort_values", "merge", "groupby", "rechunk")
SCHEDULERS = ("daskray", "ray_dask_get", "disk", "p2p")
RAY_SCHEDULERS = ("daskray", "ray_dask_get")
#: seconds a timed run may take (``--limit``)
DEFAULT_LIMIT = 1800.0
#: seconds a child may take to start its scheduler and warm up, on top of the limit
START_S = 600.0
#: seconds between two samples of the process tree's PSS
SAMPLE_S = 0.25


# ---------------------------------------------------------------- data (runs inside tasks)


def mix64(u: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a bijection of uint64 that scatters neighbours.

    >>> mix64(np.arange(3, dtype=np.uint64)).tolist()
    [0, 6238072747940578789, 15839785061582574730]
    """
    z = np.asarray(u, dtype=np.uint64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@dataclass(frozen=True)
class Layout:
    """Where the data are: ``nparts`` partitions (row blocks) of ``rows`` rows, and for merge
    a right frame of ``right_parts`` partitions of ``right_rows`` rows."""

    op: str
    nparts: int
    rows: int
    right_parts: int = 0
    right_rows: int = 0
    seed: int = 0

    @property
    def n(self) -> int:
        return self.nparts * self.rows

    @property
    def distinct_k(self) -> int:
        """Distinct ``k`` of a (non-merge) frame: each key stands exactly twice."""
        return (self.n + 1) // 2

    @property
    def distinct_k2(self) -> int:
        return max(1, self.n // 10)

    @property
    def right_n(self) -> int:
        return self.right_parts * self.right_rows

    def tiny(self) -> Layout:
        """The same operation on a few small partitions (the warm-up)."""
        return replace(
            self,
            nparts=min(self.nparts, 4),
            rows=min(self.rows, 256 if self.op == "rechunk" else 2000),
            right_parts=min(self.right_parts, 2),
            right_rows=min(self.right_rows, 2000),
        )


def plan_layout(op: str, data_bytes: float, partitions: int | None = None, seed: int = 0) -> Layout:
    """The layout of ``data_bytes`` of input: ``partitions`` partitions (default: one per
    :data:`PART_BYTES`); for merge, the left frame's, the right frame having half as many.

    >>> plan_layout("shuffle", 2**30)
    Layout(op='shuffle', nparts=51, rows=526344, right_parts=0, right_rows=0, seed=0)
    >>> plan_layout("merge", 2**30, 8)
    Layout(op='merge', nparts=8, rows=2236962, right_parts=4, right_rows=2236962, seed=0)
    """
    if op not in OPS:
        raise ValueError(f"unknown operation {op!r}; choose from {', '.join(OPS)}")
    auto = max(1, round(data_bytes / PART_BYTES))
    if op == "merge":
        nparts = partitions or max(2, round(auto * 2 / 3))
        right = max(2, nparts // 2)  # one right partition would make it a broadcast join
        rows = max(1, int(data_bytes // (ROW_BYTES * (nparts + right))))
        return Layout(op, nparts, rows, right, rows, seed)
    nparts = partitions or auto
    row_bytes = WIDTH * 8 if op == "rechunk" else ROW_BYTES
    return Layout(op, nparts, max(1, int(data_bytes // (row_bytes * nparts))), seed=seed)


def make_part(i: int, layout: Layout) -> pd.DataFrame:
    """Partition ``i`` of the (left) frame: columns k, k2 (int64), x, y, z (float64)."""
    rng = np.random.default_rng([layout.seed, i])
    g = rng.permutation(np.arange(i * layout.rows, (i + 1) * layout.rows, dtype=np.int64))
    if layout.op == "merge":
        k = rng.integers(0, 2 * layout.right_n, layout.rows, dtype=np.int64)
    else:
        k = mix64((g % layout.distinct_k).astype(np.uint64)).view(np.int64)
    f = rng.random((3, layout.rows))
    return pd.DataFrame({"k": k, "k2": g % layout.distinct_k2, "x": f[0], "y": f[1], "z": f[2]})


def right_columns(keys: np.ndarray) -> dict[str, np.ndarray]:
    """The right frame's columns besides ``k``: functions of the key alone."""
    keys = np.asarray(keys, dtype=np.int64)
    return {"k2": keys // 10, "x": keys * 0.5, "y": np.sqrt(keys), "z": (keys % 1000) / 1000.0}


def make_right(j: int, layout: Layout) -> pd.DataFrame:
    """Partition ``j`` of merge's right frame: the keys ``R + j * rows ...`` once each."""
    rng = np.random.default_rng([layout.seed, 1 << 20, j])
    start = layout.right_n + j * layout.right_rows
    keys = rng.permutation(np.arange(start, start + layout.right_rows, dtype=np.int64))
    return pd.DataFrame({"k": keys, **right_columns(keys)})


def make_block(layout: Layout, block_id: tuple[int, int] | None = None) -> np.ndarray:
    """Row block ``block_id[0]`` of the rechunk array: ``(rows, WIDTH)`` uniform floats."""
    rng = np.random.default_rng([layout.seed, block_id[0]])
    return rng.random((layout.rows, WIDTH))


def frame(layout: Layout, right: bool = False) -> Any:
    """The layout's (left, or right) dask DataFrame, made inside its tasks."""
    import dask.dataframe as dd

    make, nparts = (make_right, layout.right_parts) if right else (make_part, layout.nparts)
    meta = make(0, replace(layout, rows=0, right_rows=0))
    return dd.from_map(make, range(nparts), args=(layout,), meta=meta, label="bigbench-make")


def array(layout: Layout) -> Any:
    """The layout's ``(N, WIDTH)`` dask array, made inside its tasks."""
    import dask.array as da

    chunks = ((layout.rows,) * layout.nparts, (WIDTH,))
    return da.map_blocks(make_block, layout, chunks=chunks, dtype=np.float64, name="bigbench-make")


def column_chunks(layout: Layout) -> tuple[int, int]:
    """Rechunk's target blocks: all rows and ``WIDTH / P`` columns, about an input block
    each; beyond ``WIDTH`` partitions one column of ``WIDTH`` blocks' rows.

    >>> column_chunks(Layout("rechunk", nparts=8, rows=100))
    (800, 8)
    >>> column_chunks(Layout("rechunk", nparts=128, rows=100))
    (6400, 1)
    """
    cols = max(1, WIDTH // layout.nparts)
    return min(layout.n, layout.rows * WIDTH // cols), cols


# ---------------------------------------------------------------- checksums


def wrap_sum(values: Any) -> int:
    """The sum of int64 or uint64 values modulo 2**64 (order-free, overflow-free)."""
    a = np.ascontiguousarray(np.asarray(values))
    return int(a.view(np.uint64).sum(dtype=np.uint64)) if a.size else 0


def hash_sum(df: pd.DataFrame) -> int:
    """An order-free checksum of a frame's rows: their hashes summed modulo 2**64."""
    return wrap_sum(pd.util.hash_pandas_object(df, index=False).to_numpy())


#: one summary row a partition: its columns and dtypes
SUMMARY = {
    "rows": "int64",
    "bytes": "int64",
    "hash": "uint64",
    "distinct": "int64",
    "kmin": "int64",
    "kmax": "int64",
    "sorted": "bool",
    "ksum": "uint64",
    "keysum": "uint64",
    "fsum": "float64",
}
SUMMARY_META = pd.DataFrame({c: pd.Series(dtype=t) for c, t in SUMMARY.items()})


def summarize(df: pd.DataFrame, op: str) -> pd.DataFrame:
    """One partition of ``op``'s output (``"input"``: of its input) as one summary row.

    Index-keyed outputs (set_index, groupby) are reset first; the hash runs over the columns
    in name order; the key is ``k`` (``k2`` for groupby).

    >>> summarize(pd.DataFrame({"k": [3, 1, 3], "x": [0.5, 1.0, 2.0]}), "input")[
    ...     ["rows", "distinct", "kmin", "kmax", "sorted", "ksum", "fsum"]].values.tolist()
    [[3, 2, 1, 3, False, 7, 3.5]]
    """
    flat = df.reset_index() if op in ("set_index", "groupby") else df
    flat = flat[sorted(flat.columns)]
    keys = flat["k2" if op == "groupby" else "k"].to_numpy()
    n = len(keys)
    floats = [c for c in flat.columns if flat[c].dtype.kind == "f"]
    row = {
        "rows": n,
        "bytes": int(df.memory_usage(deep=True).sum()),
        "hash": 0 if op == "groupby" else hash_sum(flat),  # group sums' rounding varies
        "distinct": len(pd.unique(keys)),
        "kmin": keys.min() if n else 0,
        "kmax": keys.max() if n else 0,
        "sorted": bool(np.all(keys[:-1] <= keys[1:])),
        "ksum": wrap_sum(flat["k"].to_numpy()),
        "keysum": wrap_sum(keys),
        "fsum": float(flat[floats].to_numpy().sum()) if floats else 0.0,
    }
    return pd.DataFrame({c: np.array([v], dtype=SUMMARY[c]) for c, v in row.items()})


def expected_merge(df: pd.DataFrame, layout: Layout) -> pd.DataFrame:
    """The summary of this left partition's share of the merge (its rows with a key in the
    right frame, each joined to its one right row), ``bytes`` being the left partition's."""
    m = df[df["k"].to_numpy() >= layout.right_n]
    cols = {"k": m["k"].to_numpy()}
    cols.update({f"{c}_x": m[c].to_numpy() for c in ("k2", "x", "y", "z")})
    cols.update({f"{c}_y": v for c, v in right_columns(cols["k"]).items()})
    out = summarize(pd.DataFrame(cols), "merge")
    out["bytes"] = np.int64(df.memory_usage(deep=True).sum())
    return out


def block_summary(block: np.ndarray, block_info: dict | None = None) -> np.ndarray:
    """``[[count, hash]]`` of a block: its values' bits mixed with their positions, summed
    modulo 2**64 -- the same for any blocking of the same array."""
    (r0, _), (c0, _) = block_info[0]["array-location"]
    rows, cols = block.shape
    pos = np.arange(r0, r0 + rows, dtype=np.uint64)[:, None] * np.uint64(WIDTH)
    pos = pos + np.arange(c0, c0 + cols, dtype=np.uint64)
    bits = np.ascontiguousarray(block, dtype=np.float64).view(np.uint64)
    return np.array([[block.size, wrap_sum(mix64(bits ^ mix64(pos)))]], dtype=np.uint64)


def _block_summaries(x: Any) -> Any:
    nr, nc = len(x.chunks[0]), len(x.chunks[1])
    chunks = ((1,) * nr, (2,) * nc)
    return x.map_blocks(block_summary, chunks=chunks, dtype=np.uint64, name="bigbench-summary")


def build(layout: Layout) -> Any:
    """The timed graph: make -> the operation -> one summary a partition (block)."""
    op = layout.op
    if op == "rechunk":
        return _block_summaries(array(layout).rechunk(column_chunks(layout)))
    df = frame(layout)
    if op == "shuffle":
        out = df.shuffle("k")
    elif op == "set_index":
        out = df.set_index("k", npartitions=layout.nparts)
    elif op == "sort_values":
        out = df.sort_values("k", npartitions=layout.nparts)
    elif op == "merge":
        out = df.merge(frame(layout, right=True), on="k", broadcast=False)
    elif op == "groupby":
        out = df.groupby("k2").agg("sum", split_out=layout.nparts)
    else:
        raise ValueError(f"unknown operation {op!r}; choose from {', '.join(OPS)}")
    return out.map_partitions(summarize, op, meta=SUMMARY_META, enforce_metadata=False)


def reference(layout: Layout) -> list:
    """The untimed reference graphs: summaries of the input (merge: of the expected join and
    of the right frame)."""
    if layout.op == "rechunk":
        return [_block_summaries(array(layout))]
    left = frame(layout)
    if layout.op != "merge":
        return [left.map_partitions(summarize, "input", meta=SUMMARY_META)]
    right = frame(layout, right=True)
    return [
        left.map_partitions(expected_merge, layout, meta=SUMMARY_META),
        right.map_partitions(summarize, "input", meta=SUMMARY_META),
    ]


def observe(op: str, parts: Any) -> dict[str, Any]:
    """The totals of the computed per-partition summaries (a frame, or rechunk's array)."""
    if op == "rechunk":
        pairs = np.asarray(parts, dtype=np.uint64).reshape(-1, 2)
        return {"rows": int(pairs[:, 0].sum()), "hash": wrap_sum(pairs[:, 1]), "parts": len(pairs)}
    full = parts[parts["rows"] > 0]
    kmax, kmin = full["kmax"].to_numpy(), full["kmin"].to_numpy()
    return {
        "rows": int(parts["rows"].sum()),
        "bytes": int(parts["bytes"].sum()),
        "hash": wrap_sum(parts["hash"].to_numpy()),
        "distinct": int(parts["distinct"].sum()),
        "ordered": bool(full["sorted"].all() and np.all(kmax[:-1] < kmin[1:])),
        "ksum": wrap_sum(parts["ksum"].to_numpy()),
        "keysum": wrap_sum(parts["keysum"].to_numpy()),
        "fsum": float(parts["fsum"].sum()),
        "parts": len(parts),
    }


def expect(layout: Layout, refs: list) -> dict[str, Any]:
    """What a correct run of ``layout.op`` must observe, from the reference summaries:
    ``exact`` totals, ``close`` float totals (rtol 1e-6), ``ordered``, and the input bytes."""
    op = layout.op
    first = observe(op, refs[0])
    if op == "rechunk":
        nbytes = layout.n * WIDTH * 8
        return {"input_bytes": nbytes, "exact": {"rows": first["rows"], "hash": first["hash"]}}
    if op == "merge":
        right = observe(op, refs[1])
        exact = {"rows": first["rows"], "hash": first["hash"]}
        return {"input_bytes": first["bytes"] + right["bytes"], "exact": exact}
    out: dict[str, Any] = {"input_bytes": first["bytes"]}
    if op == "groupby":
        u = layout.distinct_k2
        exact = {"rows": u, "keysum": u * (u - 1) // 2 % 2**64, "ksum": first["ksum"]}
        out["close"] = {"fsum": first["fsum"]}
    else:
        exact = {"rows": first["rows"], "hash": first["hash"], "distinct": layout.distinct_k}
    out["exact"] = exact
    if op in ("set_index", "sort_values"):
        out["ordered"] = True
    return out


def verify(observed: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """What is wrong with a run's totals (an empty list: it is right).

    >>> verify({"rows": 9, "hash": 5}, {"exact": {"rows": 10, "hash": 5}})
    ['rows 9, expected 10']
    """
    problems = [
        f"{name} {observed.get(name)}, expected {value}"
        for name, value in expected["exact"].items()
        if observed.get(name) != value
    ]
    for name, value in expected.get("close", {}).items():
        if not math.isclose(observed.get(name, math.nan), value, rel_tol=1e-6):
            problems.append(f"{name} {observed.get(name)}, expected about {value}")
    if expected.get("ordered") and not observed.get("ordered"):
        problems.append("partitions unsorted, or their key ranges overlap")
    return problems


# ---------------------------------------------------------------- memory


def _psutil() -> Any:
    try:
        import psutil
    except ImportError as e:  # pragma: no cover - psutil comes with the bench/test extras
        raise RuntimeError("daskray bench big needs psutil: pip install 'daskray[bench]'") from e
    return psutil


def tree_pss(pid: int | None = None) -> int:
    """Bytes of PSS of a process and all its descendants (this process by default)."""
    psutil = _psutil()
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_full_info().pss
        except psutil.Error:  # gone, or a zombie, between the listing and the read
            pass
    return total


class PeakPss(PeakRss):
    """A sampler thread: the largest :func:`tree_pss` of this process while the block runs,
    every ``interval`` seconds (``.peak``, bytes); ``report(peak)`` is called with the peak
    at most every 2 s."""

    def __init__(self, interval: float = SAMPLE_S, report: Callable | None = None) -> None:
        super().__init__(tree_pss, interval)
        self._report = report
        self._reported = float("-inf")

    def sampled(self, value: int) -> None:
        super().sampled(value)
        if self._report is not None and time.monotonic() - self._reported > 2.0:
            self._report(self.peak)
            self._reported = time.monotonic()


# ---------------------------------------------------------------- child: one scheduler


@contextmanager
def scheduler(name: str, cpus: int, store_bytes: int, workdir: str):
    """Start scheduler ``name`` (or ``"threads"``, the reference pass's) and make it dask's
    default inside the block."""
    import dask

    tasks = {"dataframe.shuffle.method": "tasks", "array.rechunk.method": "tasks"}
    if name in RAY_SCHEDULERS:
        from . import _ray

        spill = os.path.join(workdir, "spill")
        os.makedirs(spill, exist_ok=True)
        init = {
            "object_store_memory": store_bytes,
            "object_spilling_directory": spill,
            "include_dashboard": False,
            "log_to_driver": False,
        }
        _ray.connect(None, cpus, init)
        if name == "daskray":
            import daskray

            chosen = daskray.enable()
        else:
            chosen = dask.config.set(scheduler=_ray.ray_dask_get())
        with chosen, dask.config.set(tasks):
            yield
    elif name in ("disk", "threads"):
        method = {"dataframe.shuffle.method": "disk"} if name == "disk" else {}
        with dask.config.set(
            {**tasks, **method, "temporary-directory": workdir},
            scheduler="threads",
            num_workers=cpus,
        ):
            yield
    elif name == "p2p":
        from distributed import Client, LocalCluster

        cluster = LocalCluster(
            n_workers=cpus,
            threads_per_worker=1,
            processes=True,
            memory_limit=store_bytes + GIB,
            local_directory=workdir,
            dashboard_address=None,
        )
        p2p = {"dataframe.shuffle.method": "p2p", "array.rechunk.method": "p2p"}
        with cluster, Client(cluster), dask.config.set(p2p):
            yield
    else:
        raise ValueError(f"unknown scheduler {name!r}; choose from {', '.join(SCHEDULERS)}")


def _write_json(path: str, obj: dict) -> None:
    """Write ``obj`` to ``path`` in one step (a reader never sees half a file)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def measure(spec: dict, out: dict) -> None:
    """One child's work (see the module docstring), filling ``out`` as it goes so that a
    failure leaves what was measured before it."""
    import dask

    layout = Layout(**spec["layout"])
    progress = spec["progress"]
    with scheduler(spec["scheduler"], spec["cpus"], spec["store_bytes"], spec["workdir"]):
        if spec["scheduler"] == "threads":  # the reference pass
            _write_json(progress, {"running": True})
            t0 = time.perf_counter()
            refs = dask.compute(*reference(layout))
            out["seconds"] = time.perf_counter() - t0
            out["expected"] = expect(layout, list(refs))
            return
        dask.compute(build(layout.tiny()))  # warm-up: workers, imports
        out["idle_bytes"] = tree_pss()
        _write_json(progress, {"running": True, "idle_bytes": out["idle_bytes"]})
        graph = build(layout)

        def report(peak: int) -> None:
            _write_json(progress, {"running": True, "idle_bytes": out["idle_bytes"], "peak": peak})

        with PeakPss(report=report) as sampler:
            t0 = time.perf_counter()
            try:
                (parts,) = dask.compute(graph)
            finally:
                out["peak_bytes"] = sampler.peak
                out["elapsed"] = time.perf_counter() - t0
        out["seconds"] = out["elapsed"]
        out["observed"] = observe(layout.op, parts)


def child_main(argv: list[str]) -> int:
    """The child process's entry point: ``argv = [spec JSON]``; writes ``spec["result"]``."""
    spec = json.loads(argv[0])
    out: dict[str, Any] = {"error": None}
    try:
        measure(spec, out)
    except BaseException as e:  # noqa: BLE001 - reported in the row, whatever it is
        out["error"] = f"{type(e).__name__}: {e}"[:2000]
    _write_json(spec["result"], out)
    return 0


# ---------------------------------------------------------------- parent: one row a child

#: how the parent starts a child: ``daskray.bigbench`` by name, never as ``__main__`` (Ray's
#: workers import the task functions by their module's name)
CHILD = "import sys; from daskray import bigbench; sys.exit(bigbench.child_main(sys.argv[1:]))"


def _watch(proc: Any, progress: str, limit: float, seen: dict, poll: float) -> str | None:
    """Wait for the child; None when it exits, else why it was stopped (the DNF text).
    ``seen`` collects its descendants (pid -> psutil.Process) as they come."""
    psutil = _psutil()
    started, running = time.monotonic(), None
    while proc.poll() is None:
        try:
            for p in psutil.Process(proc.pid).children(recursive=True):
                seen.setdefault(p.pid, p)
        except psutil.Error:
            pass
        now = time.monotonic()
        if running is None and os.path.exists(progress):
            running = now
        if running is not None and now - running > limit:
            return f"did not finish within {limit:g} s"
        if running is None and now - started > START_S:
            return f"did not start within {START_S:g} s"
        time.sleep(poll)
    return None


def _reap(proc: Any, seen: dict) -> None:
    """End the child, if it still runs, and whatever it started that outlived it (a Ray
    whose driver was killed, say): terminate, then kill what is left after 10 s."""
    psutil = _psutil()
    procs = [p for p in seen.values() if p.is_running()]
    if proc.poll() is None:
        procs.insert(0, psutil.Process(proc.pid))
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    proc.wait()


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _died(returncode: int, log: str) -> str:
    """Why a child ended without a result: its exit status and its output's last lines."""
    try:
        with open(log, errors="replace") as f:
            tail = f.read()[-1500:].strip()
    except OSError:
        tail = ""
    if returncode < 0:
        import signal

        why = f"killed by {signal.Signals(-returncode).name}"
        if returncode == -signal.SIGKILL:
            why += " (out of memory?)"
    else:
        why = f"exited with status {returncode}"
    return f"{why}{': ' + tail if tail else ''}"


def run_child(spec: dict, limit: float, tmpdir: str | None = None, poll: float = 0.25) -> dict:
    """Run one child (``spec``: scheduler, layout, cpus, store_bytes) under ``limit`` seconds
    for its timed part, in a temporary directory removed afterwards. Returns its result, with
    ``dnf`` (why it was stopped) or ``error`` set when it did not finish."""
    workdir = tempfile.mkdtemp(prefix=f"daskray-big-{spec['scheduler']}-", dir=tmpdir)
    spec = {
        **spec,
        "workdir": workdir,
        "progress": os.path.join(workdir, "progress.json"),
        "result": os.path.join(workdir, "result.json"),
    }
    log = os.path.join(workdir, "child.log")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # always a local Ray
    seen: dict = {}
    try:
        with open(log, "wb") as f:
            proc = subprocess.Popen(
                [sys.executable, "-c", CHILD, json.dumps(spec)],
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        try:
            dnf = _watch(proc, spec["progress"], limit, seen, poll)
        finally:
            _reap(proc, seen)
        result = _read_json(spec["result"])
        if dnf:
            return {**_read_json(spec["progress"]), "dnf": dnf, "error": None}
        if not result:
            return {"error": _died(proc.returncode, log)}
        return result
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------- rows, the table, the command


def make_row(name: str, layout: Layout, cpus: int, store_bytes: int, result: dict, ref: dict):
    """One row of the table from a child's ``result`` and the reference pass's ``ref``
    (its result: ``expected``, or ``error``/``dnf`` when it failed)."""
    expected = ref.get("expected")
    data = expected["input_bytes"] if expected else _input_bytes(layout)
    seconds = result.get("seconds")
    problems: list[str] = []
    if result.get("skipped"):
        status, error = "skipped", result["skipped"]
    elif result.get("dnf"):
        status, error = "DNF", result["dnf"]
    elif result.get("error"):
        status, error = "error", result["error"]
    elif not expected:
        status, error = "error", f"no reference to check against: {_failure(ref)}"
    else:
        problems = verify(result["observed"], expected)
        status, error = ("wrong", "; ".join(problems)) if problems else ("ok", None)
    peak = result.get("peak_bytes", result.get("peak"))
    idle = result.get("idle_bytes")
    return {
        "scheduler": name,
        "op": layout.op,
        "data_gib": data / GIB,
        "store_gib": store_bytes / GIB if name in (*RAY_SCHEDULERS, "p2p") else None,
        "partitions": layout.nparts,
        "right_partitions": layout.right_parts or None,
        "out_partitions": (result.get("observed") or {}).get("parts"),
        "cpus": cpus,
        "seconds": seconds if status in ("ok", "wrong") else None,
        "mb_s_per_core": data / 1e6 / seconds / cpus if status in ("ok", "wrong") else None,
        "peak_gib": peak / GIB if peak else None,
        "idle_gib": idle / GIB if idle else None,
        "status": status,
        "ok": status == "ok",
        "error": error,
        "elapsed_s": result.get("elapsed"),  # the timed run's seconds until it ended or failed
    }


def _input_bytes(layout: Layout) -> int:
    """The input's bytes by arithmetic (when the reference pass gave none)."""
    if layout.op == "rechunk":
        return layout.n * WIDTH * 8
    return (layout.n + layout.right_n) * ROW_BYTES


def _failure(result: dict) -> str:
    return result.get("dnf") or result.get("error") or "it gave no result"


#: the table's columns: (title, width, row field, format)
COLUMNS = (
    ("scheduler", 13, "scheduler", "{}"),
    ("op", 11, "op", "{}"),
    ("data GiB", 9, "data_gib", "{:.2f}"),
    ("store GiB", 9, "store_gib", "{:.3f}"),
    ("parts", 7, "partitions", "{}"),
    ("seconds", 9, "seconds", "{:.1f}"),
    ("MB/s/core", 9, "mb_s_per_core", "{:.2f}"),
    ("peak GiB", 8, "peak_gib", "{:.2f}"),
    ("idle GiB", 8, "idle_gib", "{:.2f}"),
    ("ok", 7, "status", "{}"),
)
HEADER = " ".join(f"{t:<{w}}" if i < 2 else f"{t:>{w}}" for i, (t, w, _, _) in enumerate(COLUMNS))


def format_row(row: dict) -> str:
    """A row of the table; ``-`` where a value does not apply, ``DNF`` as its seconds.

    >>> print(HEADER)  # doctest: +NORMALIZE_WHITESPACE
    scheduler  op  data GiB  store GiB  parts  seconds  MB/s/core  peak GiB  idle GiB  ok
    """
    cells = []
    for i, (_, width, field, fmt) in enumerate(COLUMNS):
        value = row.get(field)
        if field == "partitions" and row.get("right_partitions"):
            text = f"{value}+{row['right_partitions']}"
        elif field == "seconds" and row["status"] == "DNF":
            text = "DNF"
        elif field == "status":
            text = "yes" if value == "ok" else value.upper() if value == "wrong" else value
        else:
            text = "-" if value is None else fmt.format(value)
        cells.append(f"{text:<{width}}" if i < 2 else f"{text:>{width}}")
    line = " ".join(cells)
    return f"{line}  {row['error']}" if row.get("error") else line


def parse_choices(text: str, choices: tuple[str, ...], what: str) -> list[str]:
    """A comma list of ``choices``; unknown names raise ``ValueError`` naming the choices.

    >>> parse_choices("shuffle,merge", OPS, "operations")
    ['shuffle', 'merge']
    """
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in choices]
    if unknown or not names:
        raise ValueError(f"unknown {what} {unknown or text!r}; choose from {', '.join(choices)}")
    return names


def parse_limits(text: str) -> dict[str, float]:
    """``--limit``: seconds for every scheduler, and/or ``NAME=SECONDS`` for one.

    >>> parse_limits("600,ray_dask_get=300")
    {'*': 600.0, 'ray_dask_get': 300.0}
    """
    limits = {"*": DEFAULT_LIMIT}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, _, secs = item.rpartition("=")
        if name and name not in SCHEDULERS:
            raise ValueError(f"--limit: unknown scheduler {name!r} in {item!r}")
        try:
            seconds = float(secs)
        except ValueError:
            raise ValueError(f"--limit: {item!r} is not SECONDS or NAME=SECONDS") from None
        if not seconds > 0:
            raise ValueError(f"--limit: {item!r} must be a positive number of seconds")
        limits[name or "*"] = seconds
    return limits


def check_store(store_gb: float) -> int:
    """The object store's bytes; below Ray's minimum (75 MiB) raises ``ValueError``."""
    store = int(store_gb * GIB)
    if store < MIN_STORE_BYTES:
        raise ValueError(
            f"--store-gb {store_gb:g} is {store / 2**20:.1f} MiB: Ray's object store needs at "
            f"least 75 MiB (--store-gb {MIN_STORE_BYTES / GIB:.4f})"
        )
    return store


def _missing(name: str) -> str | None:
    """Why scheduler ``name`` cannot run here, if it cannot."""
    import importlib.util

    if name == "p2p" and importlib.util.find_spec("distributed") is None:
        return "dask distributed is not installed (pip install distributed): no p2p row"
    return None


def run_family(
    ops: list[str],
    gb: float,
    store_gb: float,
    schedulers: list[str],
    cpus: int | None = None,
    partitions: int | None = None,
    limits: dict[str, float] | None = None,
    tmpdir: str | None = None,
    seed: int = 0,
    echo: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Run every operation under every scheduler, each in its own subprocess (see the module
    docstring); ``echo`` each row as it comes. Returns the report (what ``--output`` holds)."""
    cpus = cpus or os.cpu_count() or 1
    store = check_store(store_gb)
    limits = {"*": DEFAULT_LIMIT, **(limits or {})}
    rows, refs = [], {}
    echo(HEADER)
    for op in ops:
        layout = plan_layout(op, gb * GIB, partitions, seed)
        base = {"layout": asdict(layout), "cpus": cpus, "store_bytes": store}
        # the reference pass is no contestant: the largest limit, and never under the default
        ref_limit = max(DEFAULT_LIMIT, *limits.values())
        ref = run_child({**base, "scheduler": "threads"}, ref_limit, tmpdir)
        refs[op] = {"seconds": ref.get("seconds"), "expected": ref.get("expected")}
        if not ref.get("expected"):
            echo(f"# {op}: the reference pass failed: {_failure(ref)}")
        for name in schedulers:
            missing = _missing(name)
            limit = limits.get(name, limits["*"])
            if missing:
                result = {"skipped": missing}
            else:
                result = run_child({**base, "scheduler": name}, limit, tmpdir)
            rows.append({**make_row(name, layout, cpus, store, result, ref), "limit_s": limit})
            echo(format_row(rows[-1]))
    return {
        "ops": ops,
        "gb": gb,
        "store_gb": store_gb,
        "cpus": cpus,
        "partitions": partitions,
        "limits": limits,
        "schedulers": schedulers,
        "reference": refs,
        "rows": rows,
    }


def main(args: Any) -> int:
    """``daskray bench big``: validate, run, print the table, write ``--output`` (JSON).
    Exit status 1 when a row is wrong or its scheduler failed (DNF is a measurement)."""
    try:
        ops = parse_choices(args.op, OPS, "operations")
        names = parse_choices(args.schedulers, SCHEDULERS, "schedulers")
        limits = parse_limits(args.limit)
        check_store(args.store_gb)
        if not args.gb > 0:
            raise ValueError(f"--gb {args.gb:g}: the data size must be positive")
        if args.partitions is not None and args.partitions < 1:
            raise ValueError(f"--partitions {args.partitions}: at least 1")
    except ValueError as e:
        args.parser.error(str(e))
    report = run_family(
        ops,
        args.gb,
        args.store_gb,
        names,
        args.num_cpus,
        args.partitions,
        limits,
        args.tmpdir,
        args.seed,
        echo=lambda line: print(line, flush=True),
    )
    path = args.output if args.output.endswith(".json") else f"{args.output}.json"
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {path}")
    return 1 if any(r["status"] in ("wrong", "error") for r in report["rows"]) else 0
