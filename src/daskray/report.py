"""Performance reports: what daskray's computes did on the cluster, as HTML or a Chrome trace.

``with daskray.performance_report("report.html", trace="trace.json"):`` records every daskray
compute (and persist) in its block, ``debug=True`` computes (run in this process, node
``local``) included. While a report is open, each Ray task runs its group timed
(:func:`daskray.worker.run_group_profiled`) and returns, as one extra small ObjectRef, the
group's wall-clock span, worker process, node, per key prefix the number of tasks and seconds,
and the sizes of its inputs and outputs. The driver adds what only it knows: the plan (which
group produced each input), and the time spent planning, submitting and waiting. The extra
returns are fetched once, when the block ends.

From those the report draws

* the task stream: one lane per node and worker process, one bar per Ray task (coloured by
  its main key prefix; hover for its tasks);
* the fused group sizes, the slowest key prefixes (seconds in all, per task, per group);
* bytes moved: every input a Ray task read, and the part produced on another node (or put by
  the driver, or persisted earlier);
* plan time against run time per compute;
* object store spilling: per compute and node, the bytes (and objects) Ray's object store
  spilled to external storage and restored from it while the compute ran.

The spilling figures are Ray's own per-node counters (the raylet's ``GetNodeStats``, what
``ray memory --stats-only`` adds up), read through :func:`daskray._ray.store_counters` as a
compute is planned and again as it ends; the report keeps the difference. They are node-wide:
what anything else on those nodes spilled meanwhile (a compute in another thread, another job)
counts too, and a spill Ray finishes writing after the compute ended counts for the next one.
They are read only while a report is open (one RPC per node, twice per compute), never for a
``debug=True`` compute.

:meth:`performance_report.chrome_trace` gives the same task stream in the Chrome trace event
format (``chrome://tracing``, https://ui.perfetto.dev); :meth:`performance_report.prefixes`
the per-prefix durations that :func:`daskray.tune` writes into a profile. Nothing here imports
Ray; profiles and counters are fetched through :mod:`daskray._ray`.
"""

from __future__ import annotations

import html
import json
import threading
import time
from typing import Any

from dask.utils import format_bytes, key_split

_stack: list = []
_lock = threading.Lock()


def active() -> performance_report | None:
    """The innermost open report, if any."""
    return _stack[-1] if _stack else None


class Compute:
    """What the driver knows of one compute: its plan's shape, its phases, its profiles."""

    __slots__ = (
        "label",
        "tasks",
        "started",
        "planned",
        "submitted",
        "finished",
        "sizes",
        "producers",
        "made",
        "refs",
        "records",
        "store_before",
        "store_after",
    )

    def __init__(self, label: str, tasks: int, started: float) -> None:
        self.label = label
        self.tasks = tasks
        self.started = started
        self.planned = self.submitted = self.finished = started
        self.sizes: dict[int, int] = {}  # group -> dask tasks in it
        self.producers: dict[int, list[int]] = {}  # group -> producing group of each input
        self.made: dict[int, list[str]] = {}  # group -> key prefix of each output
        self.refs: list = []  # (group, profile ref)
        self.records: dict[int, dict] = {}  # group -> its profile, once fetched
        # node -> its object store's spill/restore counters, read as the compute was planned
        # and as it ended (None: not read, a compute run in this process)
        self.store_before: dict[str, dict[str, int]] | None = None
        self.store_after: dict[str, dict[str, int]] | None = None

    def spilling(self) -> dict[str, dict[str, int]]:
        """Per node: ``spilled_bytes``, ``spilled_objects``, ``restored_bytes`` and
        ``restored_objects`` of its object store while the compute ran (the counters' growth
        between the two reads); nodes where nothing was spilled or restored are left out."""
        before, after = self.store_before, self.store_after
        if before is None or after is None:
            return {}
        out = {}
        for node, counts in after.items():
            was = before.get(node, {})  # a node that joined meanwhile counted from zero
            grew = {k: max(0, v - was.get(k, 0)) for k, v in counts.items()}
            if any(grew.values()):
                out[node] = grew
        return out

    def describe(self, plan: Any) -> None:
        """Keep the plan's shape (the plan itself is dropped after submission)."""
        mptr, iptr, optr = plan.members_ptr, plan.inputs_ptr, plan.outputs_ptr
        inputs, outputs = plan.inputs, plan.outputs
        made_by: dict[int, int] = {}
        for g in range(plan.ngroups):
            for q in range(optr[g], optr[g + 1]):
                made_by[outputs[q]] = g
        ray_tasks = {g for g, _ in self.refs}
        names = plan.names
        for g in ray_tasks:
            self.sizes[g] = mptr[g + 1] - mptr[g]
            self.made[g] = [key_split(names[i]) for i in outputs[optr[g] : optr[g + 1]]]
            self.producers[g] = [
                p if (p := made_by.get(i, -1)) in ray_tasks else -1
                for i in inputs[iptr[g] : iptr[g + 1]]
            ]


class performance_report:
    """Record the daskray computes run inside the block; write an HTML report (and a Chrome
    trace) when it ends.

    Parameters
    ----------
    filename : str or None
        The self-contained HTML report to write (None: write none, e.g. to read
        :meth:`summary` or :meth:`prefixes` instead).
    trace : str or None
        Also write the task stream as a Chrome trace (JSON) to this path.
    title : str, optional
        The report's heading.
    """

    def __init__(
        self,
        filename: str | None = "daskray-report.html",
        trace: str | None = None,
        title: str = "daskray performance report",
    ) -> None:
        self.filename = filename
        self.trace = trace
        self.title = title
        self.computes: list[Compute] = []
        self.opened = self.closed = 0.0

    def __enter__(self) -> performance_report:
        self.opened = time.time()
        with _lock:
            _stack.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        with _lock:
            _stack.remove(self)
        self.closed = time.time()
        self.collect()
        if self.filename:
            with open(self.filename, "w", encoding="utf-8") as f:
                f.write(self.html())
        if self.trace:
            with open(self.trace, "w", encoding="utf-8") as f:
                json.dump(self.chrome_trace(), f)

    # -- recording (called by daskray.scheduler) -------------------------------------------

    def start(self, label: str, tasks: int, started: float, on_ray: bool = True) -> Compute:
        """A new compute's record: it began at ``started`` and is planned now. ``on_ray``:
        it runs on Ray, whose object store counters are read now and by :meth:`end`."""
        c = Compute(label, tasks, started)
        c.planned = time.time()  # the counters' read counts as submission, not planning
        if on_ray:
            from . import _ray

            c.store_before = _ray.store_counters()
        with _lock:
            self.computes.append(c)
        return c

    def end(self, c: Compute) -> None:
        """Compute ``c`` ended (its values are back, or it failed): read the object store
        counters again."""
        if c.store_before is not None:
            from . import _ray

            c.store_after = _ray.store_counters()

    def collect(self) -> None:
        """Fetch the profiles of every recorded Ray task (waits for tasks still running)."""
        from . import _ray

        for c in self.computes:
            if c.refs:
                # refs of Ray tasks' profiles; dicts for groups run in this process (the
                # driver's own groups, debug=True computes)
                refs = [r for _, r in c.refs if type(r) is not dict]
                fetched = iter(_ray.fetch(refs) if refs else ())
                for g, r in c.refs:
                    record = r if type(r) is dict else next(fetched)
                    if record is not None:  # None: the Ray task failed or was cancelled
                        c.records[g] = record
                c.refs = []
            if c.records:
                c.finished = max(c.finished, max(r["end"] for r in c.records.values()))

    # -- figures -----------------------------------------------------------------------------

    def prefixes(self) -> dict[str, dict[str, float]]:
        """Per key prefix: ``tasks``, ``seconds`` in all, ``mean`` seconds per task, the
        ``slowest_group`` (seconds its tasks took in one Ray task), and, for prefixes whose
        values left a Ray task (outputs), ``bytes``: their mean size (``dask.sizeof``)."""
        out: dict[str, dict[str, float]] = {}
        sizes: dict[str, list] = {}
        for c in self.computes:
            for g, r in c.records.items():
                for prefix, (n, secs) in r["prefixes"].items():
                    p = out.setdefault(prefix, {"tasks": 0, "seconds": 0.0, "slowest_group": 0.0})
                    p["tasks"] += n
                    p["seconds"] += secs
                    p["slowest_group"] = max(p["slowest_group"], secs)
                for prefix, nbytes in zip(c.made.get(g, ()), r["out_bytes"]):
                    s = sizes.setdefault(prefix, [0, 0])
                    s[0] += 1
                    s[1] += nbytes
        for prefix, p in out.items():
            p["mean"] = p["seconds"] / max(1, p["tasks"])
            if prefix in sizes:
                p["bytes"] = sizes[prefix][1] / sizes[prefix][0]
        return dict(sorted(out.items(), key=lambda kv: -kv[1]["seconds"]))

    def summary(self) -> list[dict[str, Any]]:
        """Per compute: tasks, Ray tasks, plan/submit/run seconds, bytes read and moved, and
        what Ray's object stores spilled to external storage and restored from it meanwhile
        (in all, and ``spill_by_node``: per node where either happened, as
        :meth:`Compute.spilling`)."""
        rows = []
        for c in self.computes:
            by_node = c.spilling()
            read = moved = from_driver = 0
            for g, r in c.records.items():
                for p, nbytes in zip(c.producers.get(g, ()), r["in_bytes"]):
                    read += nbytes
                    if p < 0:
                        from_driver += nbytes
                    elif p in c.records and c.records[p]["node"] != r["node"]:
                        moved += nbytes
            busy = sum(r["end"] - r["start"] for r in c.records.values())
            rows.append(
                {
                    "compute": c.label,
                    "tasks": c.tasks,
                    "ray_tasks": len(c.sizes),
                    "plan_s": c.planned - c.started,
                    "submit_s": c.submitted - c.planned,
                    "run_s": c.finished - c.planned,
                    "busy_s": busy,
                    "nodes": len({r["node"] for r in c.records.values()}),
                    "read_bytes": read,
                    "cross_node_bytes": moved,
                    "driver_or_store_bytes": from_driver,
                    **{k: sum(n[k] for n in by_node.values()) for k in _SPILL_FIELDS},
                    "spill_by_node": by_node,
                }
            )
        return rows

    def group_sizes(self) -> dict[str, int]:
        """How many Ray tasks ran 1, 2-10, 11-100, 101-1000 and more dask tasks."""
        bins = {"1": 0, "2-10": 0, "11-100": 0, "101-1000": 0, ">1000": 0}
        for c in self.computes:
            for size in c.sizes.values():
                label = (
                    "1"
                    if size == 1
                    else "2-10"
                    if size <= 10
                    else "11-100"
                    if size <= 100
                    else "101-1000"
                    if size <= 1000
                    else ">1000"
                )
                bins[label] += 1
        return bins

    def _events(self) -> list[tuple]:
        """``(compute, group, record)`` for every recorded Ray task, by start time."""
        out = [(c, g, r) for c in self.computes for g, r in c.records.items()]
        out.sort(key=lambda e: e[2]["start"])
        return out

    def chrome_trace(self) -> dict:
        """The task stream in the Chrome trace event format: one process per node, one thread
        per worker process, one complete event per Ray task; the driver's plan and submit
        phases on a ``driver`` process."""
        t0 = self.opened
        nodes: dict[str, int] = {}
        events: list[dict] = [
            {"name": "process_name", "ph": "M", "pid": 0, "args": {"name": "driver"}}
        ]
        for i, c in enumerate(self.computes):
            for name, a, b in (("plan", c.started, c.planned), ("submit", c.planned, c.submitted)):
                events.append(_span(f"{name} {c.label}", "driver", a - t0, b - a, 0, i, {}))
        for c, g, r in self._events():
            pid = nodes.get(r["node"])
            if pid is None:
                pid = nodes[r["node"]] = len(nodes) + 1
                events.append(
                    {
                        "name": "process_name",
                        "ph": "M",
                        "pid": pid,
                        "args": {"name": f"node {r['node'][:12]}"},
                    }
                )
            args = {
                "compute": c.label,
                "group": g,
                "tasks": c.sizes.get(g, 0),
                "prefixes": {p: n for p, (n, _) in r["prefixes"].items()},
                "in_bytes": sum(r["in_bytes"]),
                "out_bytes": sum(r["out_bytes"]),
            }
            name = _main_prefix(r)
            events.append(
                _span(name, "ray-task", r["start"] - t0, r["end"] - r["start"], pid, r["pid"], args)
            )
        return {"traceEvents": events, "displayTimeUnit": "ms"}

    def html(self) -> str:
        """The report as one self-contained HTML page (inline CSS and SVG, no scripts)."""
        from importlib.metadata import version

        from . import _graph

        e = html.escape
        summary = self.summary()
        parts = [
            "<!DOCTYPE html><html><head><meta charset='utf-8'>",
            f"<title>{e(self.title)}</title><style>{_CSS}</style></head><body>",
            f"<h1>{e(self.title)}</h1>",
            f"<p class='meta'>{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.opened))}"
            f" &middot; {self.closed - self.opened:.2f} s &middot; daskray {version('daskray')}"
            f" (compiled core: {_graph.COMPILED}) &middot; ray {version('ray')}"
            f" &middot; dask {version('dask')}</p>",
            "<h2>Computes: plan time vs run time</h2>",
            _table(
                [
                    "compute",
                    "dask tasks",
                    "Ray tasks",
                    "plan",
                    "submit",
                    "run",
                    "task time",
                    "nodes",
                    "bytes read",
                    "cross-node",
                    "driver/store",
                    "spilled",
                    "restored",
                ],
                [
                    [
                        s["compute"],
                        s["tasks"],
                        s["ray_tasks"],
                        f"{s['plan_s']:.3f} s",
                        f"{s['submit_s']:.3f} s",
                        f"{s['run_s']:.3f} s",
                        f"{s['busy_s']:.3f} s",
                        s["nodes"],
                        format_bytes(s["read_bytes"]),
                        format_bytes(s["cross_node_bytes"]),
                        format_bytes(s["driver_or_store_bytes"]),
                        format_bytes(s["spilled_bytes"]),
                        format_bytes(s["restored_bytes"]),
                    ]
                    for s in summary
                ],
            ),
            "<p class='note'>plan: ingest, order and fuse; submit: the one pass handing the "
            "plan to Ray; run: from the end of planning to the last Ray task's end. Bytes read "
            "are the Ray tasks' inputs (dask.sizeof); cross-node: produced by a Ray task on "
            "another node; driver/store: put by the driver or persisted earlier; spilled, "
            "restored: what Ray's object stores wrote to external storage and read back while "
            "the compute ran.</p>",
            "<h2>Object store spilling</h2>",
            _spill_tables(summary),
            "<p class='note'>Per node, the growth of its object store's spill and restore "
            "counters between the start and the end of the compute: node-wide, so whatever "
            "else ran there meanwhile (another compute, another job) counts too.</p>",
            "<h2>Task stream</h2>",
            self._stream_svg(),
            "<h2>Fused group sizes</h2>",
            _bars(self.group_sizes(), "dask tasks per Ray task", "Ray tasks"),
            "<h2>Slowest task prefixes</h2>",
            _table(
                ["prefix", "tasks", "seconds", "per task", "slowest group"],
                [
                    [
                        p,
                        v["tasks"],
                        f"{v['seconds']:.3f} s",
                        f"{v['mean'] * 1e3:.3f} ms",
                        f"{v['slowest_group']:.3f} s",
                    ]
                    for p, v in list(self.prefixes().items())[:20]
                ],
            ),
            "</body></html>",
        ]
        return "\n".join(parts)

    def _stream_svg(self) -> str:
        events = self._events()
        if not events:
            return "<p>No Ray tasks ran.</p>"
        lanes: dict[tuple, int] = {}
        for _, _, r in events:
            lanes.setdefault((r["node"], r["pid"]), len(lanes))
        t0 = min(c.started for c in self.computes)
        span = max(max(r["end"] for _, _, r in events) - t0, 1e-6)
        width, left, lane_h = 1000, 190, 18
        height = 30 + lane_h * len(lanes)
        scale = (width - left - 10) / span
        colours: dict[str, str] = {}
        out = [
            f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
            "class='stream'>"
        ]
        for (node, pid), y in lanes.items():
            out.append(f"<text x='4' y='{22 + y * lane_h + 12}'>node {node[:8]} pid {pid}</text>")
        for k in range(6):
            x = left + (width - left - 10) * k / 5
            out.append(f"<text x='{x:.0f}' y='12' class='axis'>{span * k / 5:.2f} s</text>")
        for c, g, r in events:
            prefix = _main_prefix(r)
            colour = colours.setdefault(prefix, _PALETTE[len(colours) % len(_PALETTE)])
            x = left + (r["start"] - t0) * scale
            w = max(1.0, (r["end"] - r["start"]) * scale)
            y = 20 + lanes[(r["node"], r["pid"])] * lane_h
            tip = (
                f"{c.label} group {g}: {c.sizes.get(g, 0)} tasks, "
                f"{(r['end'] - r['start']) * 1e3:.1f} ms, "
                + ", ".join(f"{p} x{n}" for p, (n, _) in r["prefixes"].items())
            )
            out.append(
                f"<rect x='{x:.1f}' y='{y}' width='{w:.1f}' height='{lane_h - 3}' "
                f"fill='{colour}'><title>{html.escape(tip)}</title></rect>"
            )
        out.append("</svg>")
        legend = " ".join(
            f"<span class='key' style='background:{c}'></span>{html.escape(p)}"
            for p, c in colours.items()
        )
        return "".join(out) + f"<p class='legend'>{legend}</p>"


#: the object store counters of a summary row (in all) and of ``spill_by_node`` (per node)
_SPILL_FIELDS = ("spilled_bytes", "spilled_objects", "restored_bytes", "restored_objects")


def _spill_tables(summary: list[dict[str, Any]]) -> str:
    """Per compute that spilled or restored: one row per node, bytes and objects."""
    parts = []
    for s in summary:
        by_node = s["spill_by_node"]
        if not by_node:
            continue
        rows = [
            [
                node[:12],
                format_bytes(n["spilled_bytes"]),
                format_bytes(n["restored_bytes"]),
                f"{n['spilled_objects']} / {n['restored_objects']}",
            ]
            for node, n in sorted(by_node.items(), key=lambda kv: -kv[1]["spilled_bytes"])
        ]
        parts.append(f"<h3>{html.escape(s['compute'])}</h3>")
        parts.append(_table(["node", "spilled", "restored", "objects (spilled / restored)"], rows))
    if not parts:
        return "<p>No object was spilled or restored during these computes.</p>"
    return "\n".join(parts)


def _main_prefix(record: dict) -> str:
    prefixes = record["prefixes"]
    if not prefixes:
        return "task"
    return max(prefixes, key=lambda p: prefixes[p][1])


def _span(name: str, cat: str, start: float, dur: float, pid: int, tid: int, args: dict) -> dict:
    return {
        "name": name,
        "cat": cat,
        "ph": "X",
        "ts": round(start * 1e6, 1),
        "dur": round(dur * 1e6, 1),
        "pid": pid,
        "tid": tid,
        "args": args,
    }


def _table(header: list, rows: list) -> str:
    e = html.escape
    head = "".join(f"<th>{e(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _bars(counts: dict[str, int], label: str, unit: str) -> str:
    top = max(counts.values()) or 1
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td><span class='bar' "
        f"style='width:{300 * v / top:.0f}px'></span> {v}</td></tr>"
        for k, v in counts.items()
    )
    head = f"<tr><th>{html.escape(label)}</th><th>{html.escape(unit)}</th></tr>"
    return f"<table>{head}{rows}</table>"


def label_of(names: list, targets: list) -> str:
    """A short name for a compute: the key prefixes it asked for."""
    prefixes = list(dict.fromkeys(key_split(names[t]) for t in targets[:50]))
    return ", ".join(prefixes[:3]) + (" ..." if len(prefixes) > 3 else "")


_PALETTE = [
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
]

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em}h3{font-size:1em}
table{border-collapse:collapse;font-size:.9em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.meta,.note{color:#666;font-size:.85em}.stream text{font-size:11px}.axis{fill:#666}
.bar{display:inline-block;height:10px;background:#4e79a7}
.key{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px}
.legend{font-size:.85em}
"""
