"""Locality hints: run the work on a persisted value where the value already is.

Ray itself prefers, for a task whose arguments are ObjectRefs, the node holding most of their
bytes -- but only once the arguments exist, and only while that node has a free CPU: a busy node
makes the raylet spill the task to an idle one, which then pulls the bytes. daskray submits a
whole plan in one pass, so what Ray sees as "existing arguments" at submission are the values
persisted by an earlier compute (``dask.persist``) and ObjectRefs placed in the graph by the
user. For those the driver knows where each one lives (Ray's object location table, one call
per compute) and how large it is, and this module turns that into placement:

* every task downstream of located values carries, per node, the bytes of located values it
  (transitively) reads; values under ``daskray.locality.min-bytes`` on their best node leave
  the task free;
* a task whose best node reaches that threshold gets the options class of its own class plus
  ``scheduling_strategy=("node_affinity", node, soft=True)``, unless its options already name a
  scheduling strategy (a ``workers`` annotation, a user's ``ray_remote_args``): a soft affinity
  waits for a CPU on that node instead of spilling, and falls back to any node only when that
  node is gone or cannot run the task;
* the core never fuses tasks of different classes, so a fused group holds tasks of one node
  only, and a chain on a persisted block stays one Ray task on the block's node.

Values produced inside the same compute are left to Ray's own locality-aware leasing. Nothing
here imports Ray: :func:`place` takes the locations as plain data (``daskray._ray`` reads them).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .annotations import NODE_AFFINITY, freeze


def place(
    indptr: Any,
    indices: Any,
    located: dict[int, tuple[str, int]],
    classes: list | None,
    class_options: list[dict],
    min_bytes: int,
) -> tuple[list | None, list[dict], dict[int, str]]:
    """Soft node affinity for the tasks reading located values.

    ``indptr``/``indices``: the graph's dependencies (CSR, node ``i`` depends on
    ``indices[indptr[i]:indptr[i+1]]``); ``located``: node id -> ``(Ray node id, bytes)`` of
    the values whose location is known; ``classes``/``class_options`` as from
    :func:`daskray.annotations.classes_of`. Returns the new ``(classes, class_options)`` and
    the node chosen for each placed task.

    >>> # 0 and 1 are persisted blocks on nodes "A" and "B"; 2 reads 0, 3 reads 1, 4 reads both
    >>> indptr, indices = [0, 0, 0, 1, 2, 4], [0, 1, 0, 1]
    >>> classes, options, home = place(indptr, indices, {0: ("A", 8), 1: ("B", 4)}, None,
    ...                                [{}], min_bytes=4)
    >>> home
    {2: 'A', 3: 'B', 4: 'A'}
    >>> classes, options[classes[3]]
    ([0, 0, 1, 2, 1], {'scheduling_strategy': ('node_affinity', 'B', True)})
    """
    n = len(indptr) - 1
    if not located or n == 0:
        return classes, class_options, {}
    ptr = np.asarray(indptr, dtype=np.int64)
    idx = np.asarray(indices, dtype=np.int64)
    # dependents (reverse CSR), to walk forward from the located values only
    consumer = np.repeat(np.arange(n, dtype=np.int64), np.diff(ptr))
    order = np.argsort(idx, kind="stable")
    rptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(idx, minlength=n), out=rptr[1:])
    rind = consumer[order].tolist()
    rptr = rptr.tolist()
    ptr_l = ptr.tolist()
    idx_l = idx.tolist()

    # the located values' descendants, and how many of each one's dependencies are among them
    seen = set(located)
    stack = list(located)
    while stack:
        i = stack.pop()
        for c in rind[rptr[i] : rptr[i + 1]]:
            if c not in seen:
                seen.add(c)
                stack.append(c)
    waiting = {i: sum(1 for d in idx_l[ptr_l[i] : ptr_l[i + 1]] if d in seen) for i in seen}

    # Kahn's order over those: bytes per node flow from each value to its consumers
    weight: dict[int, dict[str, int]] = {i: {node: b} for i, (node, b) in located.items()}
    home: dict[int, str] = {}
    ready = [i for i in located if waiting[i] == 0]
    while ready:
        i = ready.pop()
        if i not in located:
            acc: dict[str, int] = {}
            for d in idx_l[ptr_l[i] : ptr_l[i + 1]]:
                for node, b in weight.get(d, {}).items():
                    acc[node] = acc.get(node, 0) + b
            if acc:
                best = max(acc, key=acc.__getitem__)
                total = sum(acc.values())
                weight[i] = {best: total}  # its output, as large as its inputs, on ``best``
                if acc[best] >= min_bytes:
                    home[i] = best
        for c in rind[rptr[i] : rptr[i + 1]]:
            w = waiting[c] - 1
            waiting[c] = w
            if w == 0:
                ready.append(c)
    if not home:
        return classes, class_options, {}
    home = dict(sorted(home.items()))  # class ids in node order, whatever the walk's order

    classes = list(classes) if classes is not None else [0] * n
    options = list(class_options)
    table: dict[Any, int] = {freeze(o): c for c, o in enumerate(options)}
    derived: dict[tuple[int, str], int] = {}
    for i, node in home.items():
        cls = classes[i]
        if "scheduling_strategy" in options[cls]:
            continue  # the user's placement wins
        new = derived.get((cls, node))
        if new is None:
            opts = {**options[cls], "scheduling_strategy": (NODE_AFFINITY, node, True)}
            frozen = freeze(opts)
            new = table.get(frozen)
            if new is None:
                new = table[frozen] = len(options)
                options.append(opts)
            derived[(cls, node)] = new
        classes[i] = new
    return classes, options, home
