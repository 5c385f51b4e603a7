"""Pure-Python twin of the compiled core (``_core.pyx``): same functions, results and errors.

Selected with ``DASKRAY_NO_EXTENSIONS=1``; the test suite runs both, a parity test feeds both the
same random graphs, and ``tests/test_golden.py`` holds both to the same plan digests. Read
``_core.pyx`` for the design. Each step of ``plan`` is a function here named like the ``.pxi``
file that holds it there (``_order`` in ``order.pxi``, ``_clusters`` in ``clusters.pxi``, ...),
with the same local names, so that the two read line for line and break ties the same way.
"""

from __future__ import annotations

import heapq
from array import array

from ._common import (
    BLOCK_FUSION,
    PACK_ALONE,
    PASS_THROUGH,
    Plan,
    PlanOptions,
    checked_targets,
    cycle_error,
    invalid_key_error,
    missing_dependency_error,
    per_node,
)

__all__ = ["intern", "plan", "transpose"]


def _check_list(names):
    # the compiled module types the argument as a list; say so in its words
    if not isinstance(names, list):
        raise TypeError(
            f"Argument 'names' has incorrect type (expected list, got {type(names).__name__})"
        )


# --------------------------------------------------------------------------------------------
# interning (intern.pxi)
# --------------------------------------------------------------------------------------------


def intern(names, deps, source=None):
    """Intern keys to dense ids and build the dependency CSR.

    Parameters
    ----------
    names : list
        ``names[i]`` is the key of node ``i``.
    deps : sequence
        ``deps[i]`` iterates the keys node ``i`` depends on.
    source : dict, optional
        A dict whose keys are ``names``, in the same order (the graph mapping they came from):
        its stored hashes may be reused instead of hashing every key again. The result is the
        same without it.

    Returns
    -------
    (index, indptr, indices)
        ``index`` maps key -> id (a read-only mapping); node ``i`` depends on
        ``indices[indptr[i]:indptr[i+1]]`` (sorted, without repeats).

    Examples
    --------
    >>> index, indptr, indices = intern(["x", "y"], [(), ("x",)])
    >>> dict(index), list(indptr), list(indices)
    ({'x': 0, 'y': 1}, [0, 0, 1], [0])
    """
    _check_list(names)
    if len(deps) != len(names):
        raise ValueError(f"names and deps differ in length: {len(names)} != {len(deps)}")
    index = {}
    for i, k in enumerate(names):
        try:
            index[k] = i
        except TypeError:
            raise invalid_key_error(k, "it is not hashable") from None
    indptr = array("q", [0])
    indices = array("q")
    missing: dict = {}
    for i, ds in enumerate(deps):
        row = []
        for d in ds:
            try:
                j = index.get(d)
            except TypeError:
                raise invalid_key_error(
                    d, f"it is not hashable (a dependency of {names[i]!r})"
                ) from None
            if j is None:
                who = missing.setdefault(d, [])
                if not who or who[-1] != i:
                    who.append(i)
            else:
                row.append(j)
        row.sort()
        last = -1
        for j in row:
            if j != last:
                indices.append(j)
                last = j
        indptr.append(len(indices))
    if missing:
        key, who = next(iter(missing.items()))
        raise missing_dependency_error(key, [names[i] for i in who])
    return index, indptr, indices


# --------------------------------------------------------------------------------------------
# the plan and its steps
# --------------------------------------------------------------------------------------------


class _Work:
    """The graph and the state that ``plan``'s steps share."""

    __slots__ = (
        "n",
        "m",
        "ng",
        "indptr",
        "indices",
        "order",
        "rank",
        "dcount",
        "dptr",
        "dep_of",
        "weights",
        "classes",
        "flags",
        "gid",
        "head_of_split",
        "parent",
    )


def plan(names, indptr, indices, targets, options=None):
    """Order, cull and fuse a graph into groups.

    Parameters
    ----------
    names : list
        The keys (``Plan.names``).
    indptr, indices : array
        The dependency CSR from :func:`intern`.
    targets : iterable of int
        Ids of the requested keys.
    options : PlanOptions, optional
        How to fuse (group weights, fan-outs, per-node weights, classes, flags, priorities);
        the default fuses nothing.

    Returns
    -------
    Plan

    Examples
    --------
    >>> from daskray._graph import PlanOptions
    >>> index, indptr, indices = intern(["x", "y", "z"], [(), ("x",), ("y",)])
    >>> p = plan(["x", "y", "z"], indptr, indices, [2], PlanOptions(group_weight=10))
    >>> list(p.order), p.ngroups, list(p.outputs)
    ([0, 1, 2], 1, [2])
    """
    _check_list(names)
    opts = PlanOptions() if options is None else options
    n = len(names)
    w = _Work()
    w.n = n
    w.indptr = per_node(indptr, n + 1, "indptr")
    w.indices = per_node(indices, len(indices), "indices")
    tgt = checked_targets(targets, n)
    weights = per_node(opts.weights, n, "weights")
    classes = per_node(opts.classes, n, "classes")
    flags = per_node(opts.flags, n, "flags")
    priorities = per_node(opts.priorities, n, "priorities", typed=False)
    if weights is None:  # default cost: 1 + number of dependencies
        weights = [1 + w.indptr[i + 1] - w.indptr[i] for i in range(n)]
    w.weights = weights
    w.classes = [0] * n if classes is None else classes
    w.flags = [0] * n if flags is None else flags
    group_weight = opts.group_weight
    bundle_weight = opts.bundle_weight if opts.bundle_weight > 0 else group_weight
    fuse = group_weight > 1

    _order(w, names, tgt)
    _dependents(w)
    w.gid = [-1] * n
    w.head_of_split = [0] * n
    w.ng = 0
    if fuse and opts.split_fanout >= 2:
        _split_groups(w, opts.split_fanout, group_weight)
    if fuse and opts.cluster_fanout >= 2:
        _clusters(w, opts.cluster_fanout, group_weight, bundle_weight)
    _trees(w, fuse, group_weight, bundle_weight)
    if fuse and opts.parallelism > 0:
        cpus = opts.cpus if opts.cpus > 0 else opts.parallelism
        moves = per_node(opts.move_weights, n, "move_weights")
        _merge_levels(w, opts.parallelism, group_weight, cpus, opts.task_weight, moves)
    newid = _number_groups(w, priorities)
    return _plan_csr(w, names, newid, tgt)


# --------------------------------------------------------------------------------------------
# order.pxi
# --------------------------------------------------------------------------------------------


def _order(w, names, tgt):
    """Order: a depth-first post-order from the targets (iterative), culling what they do not
    need and raising :class:`CycleError` on a cycle; sets ``order``, ``m`` and ``rank``."""
    n = w.n
    indptr = w.indptr
    indices = w.indices
    state = [0] * n  # 0 unseen, 1 on the stack, 2 done
    pos = [0] * n
    stack = [0] * n
    order = array("q", [0]) * n
    m = 0
    for i in range(len(tgt)):
        t = tgt[i]
        if state[t]:
            continue
        top = 0
        stack[0] = t
        state[t] = 1
        pos[t] = indptr[t]
        while top >= 0:
            u = stack[top]
            p = pos[u]
            if p < indptr[u + 1]:
                pos[u] = p + 1
                v = indices[p]
                if state[v] == 0:
                    state[v] = 1
                    pos[v] = indptr[v]
                    top += 1
                    stack[top] = v
                elif state[v] == 1:
                    q = 0
                    while stack[q] != v:
                        q += 1
                    raise cycle_error([names[stack[c]] for c in range(q, top + 1)] + [names[v]])
            else:
                top -= 1
                state[u] = 2
                order[m] = u
                m += 1
    del order[m:]
    rank = [-1] * n
    for i in range(m):
        rank[order[i]] = i
    w.order = order
    w.m = m
    w.rank = rank


# --------------------------------------------------------------------------------------------
# dependents.pxi
# --------------------------------------------------------------------------------------------


def _transpose(ptr, ind, rows, remap, nout):
    """The one CSR transpose: for every row ``r`` of ``rows`` (in that order) and every entry
    ``c`` of row ``r``, an entry ``r`` in row ``c`` -- both mapped through ``remap`` when it is
    given (node -> group), dropping the entries that map a row onto itself. Returns ``(tptr,
    tind)`` with ``nout`` rows, each row's entries in the order of ``rows``."""
    tptr = [0] * (nout + 1)
    for r in rows:
        s = r if remap is None else remap[r]
        for p in range(ptr[r], ptr[r + 1]):
            t = ind[p] if remap is None else remap[ind[p]]
            if remap is None or t != s:
                tptr[t + 1] += 1
    for i in range(nout):
        tptr[i + 1] += tptr[i]
    fill = tptr[:nout]
    tind = [0] * tptr[nout]
    for r in rows:
        s = r if remap is None else remap[r]
        for p in range(ptr[r], ptr[r + 1]):
            t = ind[p] if remap is None else remap[ind[p]]
            if remap is None or t != s:
                tind[fill[t]] = s
                fill[t] += 1
    return tptr, tind


def transpose(indptr, indices, rows=None):
    """The reverse of a dependency CSR: node ``i``'s dependents.

    Parameters
    ----------
    indptr, indices : array
        A CSR as :func:`intern` returns it: node ``i`` depends on
        ``indices[indptr[i]:indptr[i+1]]``.
    rows : iterable of int, optional
        Only the dependencies of these nodes count, in this order (default: every node, in
        id order).

    Returns
    -------
    (dptr, dependents)
        Node ``i`` is depended on by ``dependents[dptr[i]:dptr[i+1]]``, in the order of
        ``rows``.

    Examples
    --------
    >>> dptr, dependents = transpose([0, 0, 1, 2], [0, 0])
    >>> list(dptr), list(dependents)
    ([0, 2, 2, 2], [1, 2])
    """
    n = len(indptr) - 1
    rows = range(n) if rows is None else [int(r) for r in rows]
    for r in rows:
        if not 0 <= r < n:
            raise IndexError(f"row id {r} out of range for {n} nodes")
    tptr, tind = _transpose(indptr, indices, rows, None, n)
    return array("q", tptr), array("q", tind)


def _dependents(w):
    """Dependents among the needed nodes (CSR ``dptr``/``dep_of``, in order) and their counts."""
    dptr, dep_of = _transpose(w.indptr, w.indices, w.order, None, w.n)
    w.dptr = dptr
    w.dep_of = dep_of
    w.dcount = [dptr[i + 1] - dptr[i] for i in range(w.n)]


# --------------------------------------------------------------------------------------------
# split.pxi
# --------------------------------------------------------------------------------------------


def _solo(w, d, s):
    # d depends on s alone and may join s's split group
    return (
        w.indptr[d + 1] - w.indptr[d] == 1
        and w.gid[d] == -1
        and w.classes[d] == w.classes[s]
        and not w.flags[d] & BLOCK_FUSION
    )


def _split_groups(w, split_fanout, group_weight):
    """Split groups: a node with at least ``split_fanout`` dependents that depend on it alone
    runs with them (up to ``group_weight``); marks it ``head_of_split``."""
    order = w.order
    dptr = w.dptr
    dep_of = w.dep_of
    gid = w.gid
    wt = w.weights
    for i in range(w.m):
        s = order[i]
        if gid[s] != -1 or w.flags[s] & BLOCK_FUSION:
            continue
        cnt = 0
        for q in range(dptr[s], dptr[s + 1]):
            if _solo(w, dep_of[q], s):
                cnt += 1
        if cnt < split_fanout:
            continue
        gid[s] = w.ng
        w.head_of_split[s] = 1
        weight = wt[s]
        for q in range(dptr[s], dptr[s + 1]):
            if weight >= group_weight:
                break
            d = dep_of[q]
            if _solo(w, d, s):
                gid[d] = w.ng
                weight += wt[d]
        w.ng += 1


# --------------------------------------------------------------------------------------------
# clusters.pxi
# --------------------------------------------------------------------------------------------


def _find(up, a):
    # union-find root, halving the path
    while up[a] != a:
        up[a] = up[up[a]]
        a = up[a]
    return a


def _clusters(w, fanout, group_weight, bundle_weight):
    """Clusters: grow them (:func:`_cluster_roots`), then number the convex ones
    (:func:`_cluster_groups`)."""
    n = w.n
    up = list(range(n))
    cw = list(w.weights)
    incl = [0] * n
    _cluster_roots(w, fanout, group_weight, up, cw, [1] * n, incl)
    _cluster_groups(w, bundle_weight, up, cw, incl)


def _cluster_roots(w, fanout, group_weight, up, cw, cn, incl):
    """Union the nodes whose dependencies each have 2 to ``fanout`` dependents with those
    dependencies, then the chains hanging below a member; ``cw`` is a root's weight, ``cn``
    its number of nodes, ``incl`` marks the members. A union past ``fanout`` squared nodes
    (a few inputs shared by a few readers) is not made: that is a mesh, such as a lattice,
    whose clusters would grow into long sequential blobs; the bands cut it instead."""
    order = w.order
    indptr = w.indptr
    indices = w.indices
    dcount = w.dcount
    gid = w.gid
    kl = w.classes
    fl = w.flags
    wt = w.weights
    roots = [0] * (fanout + 1)
    for i in range(w.m):
        d = order[i]
        k = indptr[d + 1] - indptr[d]
        if k == 0 or k > fanout or gid[d] != -1 or fl[d] & BLOCK_FUSION:
            continue
        c = kl[d]
        ok = True
        for p in range(indptr[d], indptr[d + 1]):
            r = indices[p]
            if (
                gid[r] != -1
                or fl[r] & BLOCK_FUSION
                or kl[r] != c
                or dcount[r] < 2
                or dcount[r] > fanout
            ):
                ok = False
                break
        if not ok:
            continue
        rd = _find(up, d)
        roots[0] = rd
        nr = 1
        total = cw[rd]
        count = cn[rd]
        for p in range(indptr[d], indptr[d + 1]):
            r = _find(up, indices[p])
            seen = False
            for j in range(nr):
                if roots[j] == r:
                    seen = True
                    break
            if not seen:
                roots[nr] = r
                nr += 1
                total += cw[r]
                count += cn[r]
        if total > group_weight or count > fanout * fanout:
            continue
        for j in range(1, nr):
            up[roots[j]] = rd
        cw[rd] = total
        cn[rd] = count
        incl[d] = 1
        for p in range(indptr[d], indptr[d + 1]):
            incl[indices[p]] = 1
    for i in range(w.m):  # chains below a member: one dependency, the member's only dependent
        u = order[i]
        if incl[u] or gid[u] != -1 or fl[u] & BLOCK_FUSION or indptr[u + 1] - indptr[u] != 1:
            continue
        v = indices[indptr[u]]
        if not incl[v] or dcount[v] != 1 or kl[v] != kl[u]:
            continue
        rv = _find(up, v)
        if cw[rv] + wt[u] > group_weight:
            continue
        up[u] = rv
        cw[rv] += wt[u]
        incl[u] = 1


def _cluster_groups(w, bundle_weight, up, cw, incl):
    """Give the members of every convex cluster its group: an outside dependency must come
    before the cluster's first member in the order; clusters without outside inputs are
    bundled per class up to ``bundle_weight``."""
    n = w.n
    order = w.order
    indptr = w.indptr
    indices = w.indices
    rank = w.rank
    gid = w.gid
    kl = w.classes
    first = [-1] * n
    src = [0] * n
    bad = [0] * n
    cgid = [-1] * n
    for i in range(w.m):
        u = order[i]
        if not incl[u]:
            continue
        root = _find(up, u)
        if first[root] == -1:
            first[root] = i
            src[root] = 1
        for p in range(indptr[u], indptr[u + 1]):
            x = indices[p]
            if incl[x] and _find(up, x) == root:
                continue
            src[root] = 0
            if rank[x] >= first[root]:
                bad[root] = 1
    bin_gid: dict = {}
    bin_w: dict = {}
    for i in range(w.m):
        u = order[i]
        if not incl[u]:
            continue
        root = _find(up, u)
        if bad[root]:
            continue
        g = cgid[root]
        if g == -1:
            if src[root]:  # independent clusters are bundled, per class
                k = kl[u]
                if k in bin_gid and bin_w[k] + cw[root] > bundle_weight:
                    del bin_gid[k]
                if k not in bin_gid:
                    bin_gid[k] = w.ng
                    bin_w[k] = 0
                    w.ng += 1
                g = bin_gid[k]
                bin_w[k] = bin_w[k] + cw[root]
                if bin_w[k] >= bundle_weight:
                    del bin_gid[k]
            else:
                g = w.ng
                w.ng += 1
            cgid[root] = g
        gid[u] = g


# --------------------------------------------------------------------------------------------
# trees.pxi
# --------------------------------------------------------------------------------------------


class _Pieces:
    """The pending pieces of the tree walk: linked lists of node ids (``nxt``), with per piece
    root its ``tail``, pending weight ``pend_w`` and whether it receives a value from outside
    itself (``ext``)."""

    __slots__ = ("w", "nxt", "tail", "pend_w", "ext")

    def __init__(self, w):
        self.w = w
        self.nxt = [-1] * w.n
        self.tail = [-1] * w.n
        self.pend_w = [0] * w.n
        self.ext = [0] * w.n

    def close(self, h):
        """Make the piece starting at ``h`` a group."""
        gid = self.w.gid
        nxt = self.nxt
        while h != -1:
            gid[h] = self.w.ng
            h = nxt[h]
        self.w.ng += 1


class _Bin:
    """Child pieces packed together, in order, until they weigh about ``group_weight``."""

    __slots__ = ("head", "tail", "weight", "ext")

    def __init__(self):
        self.head = -1
        self.tail = -1
        self.weight = 0
        self.ext = False


def _bin_add(b, pieces, c):
    if b.head == -1:
        b.head = c
    else:
        pieces.nxt[b.tail] = c
    b.tail = pieces.tail[c]
    b.weight += pieces.pend_w[c]
    b.ext = b.ext or pieces.ext[c] != 0


def _bin_close(b, pieces):
    pieces.close(b.head)
    b.head = -1
    b.tail = -1
    b.weight = 0
    b.ext = False


def _parents(w):
    """A node with exactly one dependent hangs below it (its ``parent``), when both may fuse."""
    order = w.order
    dptr = w.dptr
    dep_of = w.dep_of
    gid = w.gid
    kl = w.classes
    fl = w.flags
    parent = [-1] * w.n
    for i in range(w.m):
        u = order[i]
        if w.dcount[u] != 1 or gid[u] != -1 or fl[u] & BLOCK_FUSION:
            continue
        d = dep_of[dptr[u]]
        if (gid[d] == -1 or w.head_of_split[d]) and kl[d] == kl[u] and not fl[d] & BLOCK_FUSION:
            parent[u] = d
    w.parent = parent


def _trees(w, fuse, group_weight, bundle_weight):
    """Trees and bundles: walk the order (children before parents); every node collects its
    children's pending pieces (:func:`_grow`); a tree's top is closed, joins its split group,
    or is bundled with other small sinks or sources."""
    order = w.order
    gid = w.gid
    head_of_split = w.head_of_split
    if fuse:
        _parents(w)
    else:
        w.parent = [-1] * w.n
    parent = w.parent
    pieces = _Pieces(w)
    nxt = pieces.nxt
    bin_head: dict = {}
    bin_tail: dict = {}
    bin_w: dict = {}
    for i in range(w.m):
        u = order[i]
        if gid[u] != -1 and not head_of_split[u]:
            continue
        _grow(w, pieces, u, group_weight)
        if parent[u] != -1:
            continue
        if head_of_split[u]:
            h = nxt[u]
            while h != -1:
                gid[h] = gid[u]
                h = nxt[h]
        elif (
            fuse
            and pieces.pend_w[u] < bundle_weight
            and (w.dcount[u] == 0 or not pieces.ext[u])
            and not w.flags[u] & BLOCK_FUSION
            and not (w.flags[u] & PASS_THROUGH and pieces.tail[u] == u)
        ):
            # bundle: small sink pieces (nothing depends on them) or small source pieces
            # (nothing flows into them), per class; a lone pass-through node stays alone
            k = (w.classes[u], w.dcount[u] != 0)
            if k in bin_head and bin_w[k] + pieces.pend_w[u] > bundle_weight:  # would overfill
                pieces.close(bin_head.pop(k))
            if k in bin_head:
                nxt[bin_tail[k]] = u
                bin_w[k] += pieces.pend_w[u]
            else:
                bin_head[k] = u
                bin_w[k] = pieces.pend_w[u]
            bin_tail[k] = pieces.tail[u]
            if bin_w[k] >= bundle_weight:
                pieces.close(bin_head.pop(k))
        else:
            pieces.close(u)
    for k in sorted(bin_head):
        pieces.close(bin_head[k])


def _grow(w, pieces, u, group_weight):
    """The pending piece of ``u``: ``u`` and its children's pieces -- linked up whole when they
    fit ``group_weight``, else packed into groups (:func:`_pack`)."""
    indptr = w.indptr
    indices = w.indices
    parent = w.parent
    nxt = pieces.nxt
    tail = pieces.tail
    pend_w = pieces.pend_w
    ext = pieces.ext
    total = w.weights[u]
    x = False
    for p in range(indptr[u], indptr[u + 1]):
        c = indices[p]
        if parent[c] == u:
            total += pend_w[c]
        else:
            x = True
    tail[u] = u
    if total > group_weight:
        _pack(w, pieces, u, group_weight, x)
        return
    for p in range(indptr[u], indptr[u + 1]):
        c = indices[p]
        if parent[c] == u:
            nxt[tail[u]] = c
            tail[u] = tail[c]
            x = x or ext[c] != 0
    pend_w[u] = total
    ext[u] = x


def _pack(w, pieces, u, group_weight, x):
    """``u``'s children weigh more than ``group_weight``: a child piece that reaches it alone
    is a group; the others are packed, in order, into groups of about ``group_weight`` (a bin
    is closed before a piece would overfill it); a leftover of half a group or more is a group
    too, and a smaller one stays pending on ``u``."""
    indptr = w.indptr
    indices = w.indices
    parent = w.parent
    pend_w = pieces.pend_w
    b = _Bin()
    for p in range(indptr[u], indptr[u + 1]):
        c = indices[p]
        if parent[c] != u:
            continue
        if pend_w[c] >= group_weight:
            pieces.close(c)
            x = True
            continue
        if b.head != -1 and b.weight + pend_w[c] > group_weight:  # c would overfill the bin
            _bin_close(b, pieces)
            x = True
        _bin_add(b, pieces, c)
        if b.weight >= group_weight:
            _bin_close(b, pieces)
            x = True
    if b.head != -1 and 2 * b.weight >= group_weight:
        # half a group or more left over: its own group. Carried up, it would wait for the
        # groups just closed below u although nothing in it needs them
        _bin_close(b, pieces)
        x = True
    if b.head != -1:
        pieces.nxt[u] = b.head
        pieces.tail[u] = b.tail
    pend_w[u] = w.weights[u] + b.weight
    pieces.ext[u] = x or b.ext


# --------------------------------------------------------------------------------------------
# levels.pxi
# --------------------------------------------------------------------------------------------


def _group_levels(ng, gptr, gsucc):
    """Top level of every group in the group graph (Kahn's algorithm, groups in id order): 0
    for a group without inputs from other groups, else one more than its highest input."""
    gdeg = [0] * ng
    for q in range(gptr[ng]):
        gdeg[gsucc[q]] += 1
    level = [0] * ng
    queue = [g for g in range(ng) if gdeg[g] == 0]
    head = 0
    while head < len(queue):
        g = queue[head]
        head += 1
        for q in range(gptr[g], gptr[g + 1]):
            h = gsucc[q]
            if level[g] + 1 > level[h]:
                level[h] = level[g] + 1
            gdeg[h] -= 1
            if gdeg[h] == 0:
                queue.append(h)
    return level


def _merge_levels(w, parallelism, group_weight, cpus, task_weight, moves):
    """Bands: groups of one top level never depend on each other, so any merge among them
    keeps the group graph acyclic; a band of ``h`` levels, cut along a topological order into
    contiguous segments, keeps it acyclic too (every edge runs forward in that order). For
    ``h`` = 1, 2, 4, ... up to the depth of the group graph, and at most ``parallelism`` or
    ``cpus`` segments per band, each band (per class) is cut into segments of about equal
    weight (:func:`_cut_bands`); the cut whose groups a list schedule on ``cpus`` CPUs runs
    soonest, each group costing ``task_weight`` more than its members (and ``moves`` of every
    value it reads from another group), wins (:func:`_makespan`); groups holding a
    ``BLOCK_FUSION`` or ``PACK_ALONE`` node, and groups of one ``PASS_THROUGH`` node, stay
    alone."""
    ng = w.ng
    m = w.m
    order = w.order
    gid = w.gid
    gw = [0] * ng
    first = [m] * ng
    gk = [0] * ng
    blocked = [0] * ng
    size = [0] * ng
    for i in range(m):
        v = order[i]
        g = gid[v]
        gw[g] += w.weights[v]
        size[g] += 1
        if first[g] == m:
            first[g] = i
            gk[g] = w.classes[v]
        if w.flags[v] & (BLOCK_FUSION | PACK_ALONE):
            blocked[g] = 1
    for g in range(ng):
        if size[g] == 1 and w.flags[order[first[g]]] & PASS_THROUGH:
            blocked[g] = 1
    gptr, gsucc = _transpose(w.indptr, w.indices, order, gid, ng)
    level = _group_levels(ng, gptr, gsucc)
    depth = max(level, default=0) + 1
    best = None
    low = max(1, min(cpus, parallelism))
    for cap in sorted({parallelism, low}, reverse=True):
        h = 1
        while True:
            rep = _cut_bands(
                ng,
                gptr,
                gsucc,
                level,
                h,
                gw,
                gk,
                first,
                blocked,
                low,
                cap,
                group_weight,
                task_weight,
            )
            cost = _makespan(w, gptr, gsucc, rep, gw, first, cpus, task_weight, moves)
            if best is None or cost < best[0]:
                best = (cost, rep)
            if h >= depth:
                break
            h *= 2
    _renumber(w, best[1])


def _cut_bands(
    ng, gptr, gsucc, level, h, gw, gk, first, blocked, low, cap, group_weight, task_weight
):
    """Every group's representative when the group graph is cut into bands of ``h`` top levels:
    a topological order, band by band (earliest first member first), each band's stretches of
    one class (and no ``blocked`` group) cut into contiguous segments (:func:`_pack_level`);
    with ``h`` = 1 a level's groups are independent, so each class is one stretch. A stretch
    gets ``cap`` segments, fewer as long as each carries ``task_weight``, never fewer than
    ``low`` (the CPUs: weights are estimates -- a count says nothing of a 30 ms chunk -- and a
    stretch that could keep every CPU busy is not packed onto fewer on their strength)."""
    deg = [0] * ng
    for q in range(gptr[ng]):
        deg[gsucc[q]] += 1
    heap = [(level[g] // h, first[g], g) for g in range(ng) if deg[g] == 0]
    heapq.heapify(heap)
    seq = []
    while heap:
        g = heapq.heappop(heap)[2]
        seq.append(g)
        for q in range(gptr[g], gptr[g + 1]):
            x = gsucc[q]
            deg[x] -= 1
            if deg[x] == 0:
                heapq.heappush(heap, (level[x] // h, first[x], x))
    rep = list(range(ng))
    start = 0
    while start < ng:
        band = level[seq[start]] // h
        end = start
        while end < ng and level[seq[end]] // h == band:
            end += 1
        run = seq[start:end]
        if h == 1:  # a level: its groups never depend on each other
            run = sorted((g for g in run if not blocked[g]), key=gk.__getitem__)
        i = 0
        while i < len(run):
            j = i
            while j < len(run) and not blocked[run[j]] and gk[run[j]] == gk[run[i]]:
                j += 1
            if j > i:
                total = sum(gw[g] for g in run[i:j])
                k = -(-total // group_weight)
                k = max(k, min(cap, max(low, -(-total // task_weight))) if task_weight > 0 else cap)
                if j - i > k:
                    _pack_level(run, i, j, total, k, gw, rep)
            i = max(j, i + 1)
        start = end
    return rep


def _makespan(w, gptr, gsucc, rep, gw, first, cpus, task_weight, moves):
    """When a list schedule on ``cpus`` CPUs finishes the groups merged as ``rep`` says, each
    costing ``task_weight`` plus its members' weights, plus, with ``moves``, what moving each
    value it reads from another group costs (ready groups by earliest first member)."""
    ng = w.ng
    weight = [0] * ng
    deg = [0] * ng
    succ: list = [[] for _ in range(ng)]
    for g in range(ng):
        r = rep[g]
        weight[r] += gw[g]
        for q in range(gptr[g], gptr[g + 1]):
            x = rep[gsucc[q]]
            if x != r:
                succ[r].append(x)
                deg[x] += 1
    if moves is not None:
        _add_moves(w, rep, moves, weight)
    ready = [(first[r], r) for r in range(ng) if rep[r] == r and deg[r] == 0]
    heapq.heapify(ready)
    running: list = []
    free = max(1, cpus)
    now = 0
    while ready or running:
        while ready and free:
            r = heapq.heappop(ready)[1]
            heapq.heappush(running, (now + task_weight + weight[r], r))
            free -= 1
        now, r = heapq.heappop(running)
        free += 1
        for x in succ[r]:
            deg[x] -= 1
            if deg[x] == 0:
                heapq.heappush(ready, (first[x], x))
    return now


def _add_moves(w, rep, moves, weight):
    """Add to every merged group's ``weight`` the ``moves`` of the values it reads from other
    groups, each value once (members visited group by group)."""
    gid = w.gid
    order = w.order
    start = [0] * (w.ng + 1)
    for i in range(w.m):
        start[rep[gid[order[i]]] + 1] += 1
    for g in range(w.ng):
        start[g + 1] += start[g]
    fill = start[:-1]
    members = [0] * w.m
    for i in range(w.m):
        v = order[i]
        r = rep[gid[v]]
        members[fill[r]] = v
        fill[r] += 1
    mark = [-1] * w.n
    for r in range(w.ng):
        for q in range(start[r], start[r + 1]):
            v = members[q]
            for p in range(w.indptr[v], w.indptr[v + 1]):
                d = w.indices[p]
                if rep[gid[d]] != r and mark[d] != r:
                    mark[d] = r
                    weight[r] += moves[d]


def _pack_level(run, start, end, total, k, gw, rep):
    # groups run[start:end] (in order) into k bins by their weight's position in the stretch;
    # a group of a bin's weight (total / k) or more stays alone
    acc = 0
    last_bin = -1
    head = -1
    for j in range(start, end):
        g = run[j]
        b = (acc * k) // total if total > 0 else ((j - start) * k) // (end - start)
        acc += gw[g]
        if gw[g] * k >= total > 0:
            last_bin = -1
            continue
        if b != last_bin:
            last_bin = b
            head = g
        rep[g] = head


def _renumber(w, rep):
    """Group ids after merges: every group takes its representative's, renumbered densely."""
    dense = [-1] * w.ng
    ng = 0
    for g in range(w.ng):
        r = rep[g]
        if dense[r] == -1:
            dense[r] = ng
            ng += 1
    gid = w.gid
    order = w.order
    for i in range(w.m):
        v = order[i]
        gid[v] = dense[rep[gid[v]]]
    w.ng = ng


# --------------------------------------------------------------------------------------------
# numbering.pxi
# --------------------------------------------------------------------------------------------


def _number_groups(w, priorities):
    """Group numbering: a topological order of the group graph (Kahn's algorithm), earliest
    first member first -- or, with ``priorities``, highest priority first; returns the new id
    of every group."""
    order = w.order
    gid = w.gid
    ng = w.ng
    m = w.m
    first = [m] * ng
    for i in range(m):
        g = gid[order[i]]
        if first[g] == m:
            first[g] = i
    gcount, gsucc = _transpose(w.indptr, w.indices, order, gid, ng)
    gdeg = [0] * ng
    for q in range(gcount[ng]):
        gdeg[gsucc[q]] += 1
    key = first
    if priorities is not None:  # a group's priority is its members' highest; higher first
        gprio: list = [None] * ng
        for i in range(m):
            v = order[i]
            g = gid[v]
            if gprio[g] is None or priorities[v] > gprio[g]:
                gprio[g] = priorities[v]
        key = [0] * ng
        for i, g in enumerate(sorted(range(ng), key=lambda g: (-gprio[g], first[g]))):
            key[g] = i
    heap = [(key[g], g) for g in range(ng) if gdeg[g] == 0]
    heapq.heapify(heap)
    newid = [-1] * ng
    done = 0
    while heap:
        _, g = heapq.heappop(heap)
        newid[g] = done
        done += 1
        for q in range(gcount[g], gcount[g + 1]):
            h = gsucc[q]
            gdeg[h] -= 1
            if gdeg[h] == 0:
                heapq.heappush(heap, (key[h], h))
    if done != ng:
        raise RuntimeError(
            "daskray internal error: fused groups form a cycle; please report this graph"
        )
    return newid


# --------------------------------------------------------------------------------------------
# csr.pxi
# --------------------------------------------------------------------------------------------


def _plan_csr(w, names, newid, tgt):
    """The plan's CSR arrays: members of each group in order, its external inputs, and its
    outputs (members that are targets or feed another group)."""
    n = w.n
    m = w.m
    ng = w.ng
    order = w.order
    indptr = w.indptr
    indices = w.indices
    group_of = array("q", [-1]) * n
    members_ptr = array("q", [0]) * (ng + 1)
    for i in range(m):
        v = order[i]
        g = newid[w.gid[v]]
        group_of[v] = g
        members_ptr[g + 1] += 1
    for g in range(ng):
        members_ptr[g + 1] += members_ptr[g]
    members = array("q", [0]) * m
    fill = members_ptr[:ng]
    for i in range(m):
        v = order[i]
        g = group_of[v]
        members[fill[g]] = v
        fill[g] += 1
    is_output = [0] * n  # targets, and values read by another group
    for i in range(len(tgt)):
        is_output[tgt[i]] = 1
    for i in range(m):
        v = order[i]
        for p in range(indptr[v], indptr[v + 1]):
            if group_of[indices[p]] != group_of[v]:
                is_output[indices[p]] = 1
    seen = [-1] * n
    inputs_ptr = array("q", [0])
    inputs = array("q")
    outputs_ptr = array("q", [0])
    outputs = array("q")
    for g in range(ng):
        for i in range(members_ptr[g], members_ptr[g + 1]):
            v = members[i]
            for p in range(indptr[v], indptr[v + 1]):
                u = indices[p]
                if group_of[u] != g and seen[u] != g:
                    seen[u] = g
                    inputs.append(u)
            if is_output[v]:
                outputs.append(v)
        inputs_ptr.append(len(inputs))
        outputs_ptr.append(len(outputs))
    return Plan(
        names,
        w.order,
        group_of,
        ng,
        members_ptr,
        members,
        inputs_ptr,
        inputs,
        outputs_ptr,
        outputs,
    )
