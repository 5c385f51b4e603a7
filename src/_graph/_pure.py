"""Pure-Python twin of the compiled core (``_core.pyx``): same functions, results and errors.

Selected with ``DASKRAY_NO_EXTENSIONS=1``; the test suite runs both and a parity test feeds both
the same random graphs. Read ``_core.pyx`` for the design; the two files follow the same steps in
the same order, so that ties break the same way and plans come out identical.
"""

from __future__ import annotations

import heapq
from array import array

from ._common import (
    BLOCK_FUSION,
    CLUSTER_FANOUT,
    Plan,
    cycle_error,
    invalid_key_error,
    missing_dependency_error,
)

__all__ = ["intern", "plan"]


def _check_list(names):
    # the compiled module types the argument as a list; say so in its words
    if not isinstance(names, list):
        raise TypeError(
            f"Argument 'names' has incorrect type (expected list, got {type(names).__name__})"
        )


def intern(names: list, deps: list, source: dict | None = None) -> tuple[dict, array, array]:
    """Intern keys to dense ids and build the dependency CSR.

    ``names[i]`` is the key of node ``i``; ``deps[i]`` iterates the keys node ``i`` depends
    on. ``source`` (the dict ``names`` came from) only lets the compiled core reuse its
    stored hashes; the result is the same without it. Returns ``(index, indptr, indices)``:
    ``index`` maps key -> id, and node ``i`` depends on ``indices[indptr[i]:indptr[i+1]]``
    (sorted, without repeats).
    """
    if len(deps) != len(names):
        raise ValueError(f"names and deps differ in length: {len(names)} != {len(deps)}")
    _check_list(names)
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


def _clusters(
    fanout,
    order,
    rank,
    indptr,
    indices,
    dcount,
    weights,
    classes,
    flags,
    gid,
    ng,
    group_weight,
    bundle_weight,
) -> int:
    """Clusters (see ``_core.pyx``): a node whose dependencies all have between 2 and
    ``fanout`` dependents runs with them, and so do chains hanging below; assigns
    ``gid`` to the members of convex clusters, returns the new group count."""
    n = len(gid)
    up = list(range(n))
    cw = list(weights)
    incl = [False] * n

    def find(a):
        while up[a] != a:
            up[a] = up[up[a]]
            a = up[a]
        return a

    for d in order:
        k = indptr[d + 1] - indptr[d]
        if k == 0 or k > fanout or gid[d] != -1 or flags[d] & BLOCK_FUSION:
            continue
        c = classes[d]
        ok = True
        for p in range(indptr[d], indptr[d + 1]):
            r = indices[p]
            if (
                gid[r] != -1
                or flags[r] & BLOCK_FUSION
                or classes[r] != c
                or not 2 <= dcount[r] <= fanout
            ):
                ok = False
                break
        if not ok:
            continue
        rd = find(d)
        roots = [rd]
        total = cw[rd]
        for p in range(indptr[d], indptr[d + 1]):
            r = find(indices[p])
            if r not in roots:
                roots.append(r)
                total += cw[r]
        if total > group_weight:
            continue
        for r in roots[1:]:
            up[r] = rd
        cw[rd] = total
        incl[d] = True
        for p in range(indptr[d], indptr[d + 1]):
            incl[indices[p]] = True
    for u in order:  # chains below a member: one dependency, the member's only dependent
        if incl[u] or gid[u] != -1 or flags[u] & BLOCK_FUSION or indptr[u + 1] - indptr[u] != 1:
            continue
        v = indices[indptr[u]]
        if not incl[v] or dcount[v] != 1 or classes[v] != classes[u]:
            continue
        rv = find(v)
        if cw[rv] + weights[u] > group_weight:
            continue
        up[u] = rv
        cw[rv] += weights[u]
        incl[u] = True

    # convex: an outside dependency must come before the cluster's first member in ``order``
    # (so no path leaves the cluster and comes back); sources: no outside dependency at all
    first = {}
    bad = set()
    source = {}
    for u in order:
        if not incl[u]:
            continue
        root = find(u)
        if root not in first:
            first[root] = rank[u]
            source[root] = True
        for p in range(indptr[u], indptr[u + 1]):
            x = indices[p]
            if incl[x] and find(x) == root:
                continue
            source[root] = False
            if rank[x] >= first[root]:
                bad.add(root)
    cgid = {}
    bin_gid = {}
    bin_w = {}
    for u in order:
        if not incl[u]:
            continue
        root = find(u)
        if root in bad:
            continue
        g = cgid.get(root)
        if g is None:
            if source[root]:  # independent clusters are bundled, per class
                k = classes[u]
                if k in bin_gid and bin_w[k] + cw[root] > bundle_weight:
                    del bin_gid[k]
                if k not in bin_gid:
                    bin_gid[k] = ng
                    bin_w[k] = 0
                    ng += 1
                g = bin_gid[k]
                bin_w[k] += cw[root]
                if bin_w[k] >= bundle_weight:
                    del bin_gid[k]
            else:
                g = ng
                ng += 1
            cgid[root] = g
        gid[u] = g
    return ng


def plan(
    names: list,
    indptr: array,
    indices: array,
    targets,
    weights=None,
    classes=None,
    flags=None,
    group_weight: int = 1,
    split_fanout: int = 2,
    bundle_weight: int = 0,
    priorities=None,
    cluster_fanout: int = CLUSTER_FANOUT,
) -> Plan:
    """Order, cull and fuse a graph into groups; see ``_core.pyx`` for the algorithm."""
    _check_list(names)
    n = len(names)
    if bundle_weight <= 0:
        bundle_weight = group_weight
    if len(indptr) != n + 1:
        raise ValueError(f"indptr must have {n + 1} entries, got {len(indptr)}")
    targets = list(targets)
    for t in targets:
        if not 0 <= t < n:
            raise IndexError(f"target id {t} out of range for {n} nodes")
    if weights is None:  # default cost: 1 + number of dependencies
        weights = [1 + indptr[i + 1] - indptr[i] for i in range(n)]
    classes = [0] * n if classes is None else classes
    flags = [0] * n if flags is None else flags
    for what, seq in (("weights", weights), ("classes", classes), ("flags", flags)):
        if len(seq) != n:
            raise ValueError(f"{what} must have {n} entries, got {len(seq)}")

    # 1. order: iterative depth-first post-order from the targets (culls as it goes)
    state = [0] * n  # 0 unseen, 1 on the stack, 2 done
    pos = [0] * n
    order = array("q")
    for t in targets:
        if state[t]:
            continue
        stack = [t]
        state[t] = 1
        pos[t] = indptr[t]
        while stack:
            u = stack[-1]
            p = pos[u]
            if p < indptr[u + 1]:
                pos[u] = p + 1
                v = indices[p]
                if state[v] == 0:
                    state[v] = 1
                    pos[v] = indptr[v]
                    stack.append(v)
                elif state[v] == 1:
                    cyc = stack[stack.index(v) :]
                    cyc.append(v)
                    raise cycle_error([names[c] for c in cyc])
            else:
                stack.pop()
                state[u] = 2
                order.append(u)
    m = len(order)
    rank = [-1] * n
    for i in range(m):
        rank[order[i]] = i

    # 2. dependents among the needed nodes (CSR), in order
    dcount = [0] * n
    for u in order:
        for p in range(indptr[u], indptr[u + 1]):
            dcount[indices[p]] += 1
    dptr = [0] * (n + 1)
    for i in range(n):
        dptr[i + 1] = dptr[i] + dcount[i]
    fill = dptr[:n]
    dep_of = [0] * dptr[n]
    for u in order:
        for p in range(indptr[u], indptr[u + 1]):
            v = indices[p]
            dep_of[fill[v]] = u
            fill[v] += 1

    # 3. fusion into tentative groups
    gid = [-1] * n
    ng = 0
    fuse = group_weight > 1
    head_of_split = [False] * n

    def solo(d, s):  # d depends on s alone and may join s's split group
        return (
            indptr[d + 1] - indptr[d] == 1
            and gid[d] == -1
            and classes[d] == classes[s]
            and not flags[d] & BLOCK_FUSION
        )

    if fuse and split_fanout >= 2:
        for s in order:
            if gid[s] != -1 or flags[s] & BLOCK_FUSION:
                continue
            cnt = 0
            for q in range(dptr[s], dptr[s + 1]):
                if solo(dep_of[q], s):
                    cnt += 1
            if cnt < split_fanout:
                continue
            gid[s] = ng
            head_of_split[s] = True
            w = weights[s]
            for q in range(dptr[s], dptr[s + 1]):
                if w >= group_weight:
                    break
                d = dep_of[q]
                if solo(d, s):
                    gid[d] = ng
                    w += weights[d]
            ng += 1

    if fuse and cluster_fanout >= 2:
        ng = _clusters(
            cluster_fanout,
            order,
            rank,
            indptr,
            indices,
            dcount,
            weights,
            classes,
            flags,
            gid,
            ng,
            group_weight,
            bundle_weight,
        )

    parent = [-1] * n
    if fuse:
        for u in order:
            if dcount[u] != 1 or gid[u] != -1 or flags[u] & BLOCK_FUSION:
                continue
            d = dep_of[dptr[u]]
            if (
                (gid[d] == -1 or head_of_split[d])
                and classes[d] == classes[u]
                and not flags[d] & BLOCK_FUSION
            ):
                parent[u] = d

    # pieces are linked lists of node ids: head/tail per piece root, nxt per node
    nxt = [-1] * n
    tail = [-1] * n
    pend_w = [0] * n
    ext = [False] * n  # does the pending piece of u receive values from outside it?
    bin_head: dict = {}
    bin_tail: dict = {}
    bin_w: dict = {}

    def close(h):
        nonlocal ng
        while h != -1:
            gid[h] = ng
            h = nxt[h]
        ng += 1

    for u in order:
        if gid[u] != -1 and not head_of_split[u]:
            continue
        total = weights[u]
        x = False
        for p in range(indptr[u], indptr[u + 1]):
            c = indices[p]
            if parent[c] == u:
                total += pend_w[c]
            else:
                x = True
        tail[u] = u
        if total > group_weight:
            bh = bt = -1
            bw = 0
            bx = False
            for p in range(indptr[u], indptr[u + 1]):
                c = indices[p]
                if parent[c] != u:
                    continue
                if pend_w[c] >= group_weight:
                    close(c)
                    x = True
                    continue
                if bh != -1 and bw + pend_w[c] > group_weight:  # c would overfill the bin
                    close(bh)
                    x = True
                    bh = bt = -1
                    bw = 0
                    bx = False
                if bh == -1:
                    bh = c
                else:
                    nxt[bt] = c
                bt = tail[c]
                bw += pend_w[c]
                bx = bx or ext[c]
                if bw >= group_weight:
                    close(bh)
                    x = True
                    bh = bt = -1
                    bw = 0
                    bx = False
            if bh != -1 and 2 * bw >= group_weight:
                # half a group or more left over: its own group. Carried up, it would wait
                # for the groups just closed below u although nothing in it needs them
                close(bh)
                x = True
                bh = -1
                bw = 0
                bx = False
            if bh != -1:
                nxt[u] = bh
                tail[u] = bt
            pend_w[u] = weights[u] + bw
            ext[u] = x or bx
        else:
            for p in range(indptr[u], indptr[u + 1]):
                c = indices[p]
                if parent[c] == u:
                    nxt[tail[u]] = c
                    tail[u] = tail[c]
                    x = x or ext[c]
            pend_w[u] = total
            ext[u] = x
        if parent[u] != -1:
            continue
        if head_of_split[u]:
            h = nxt[u]
            while h != -1:
                gid[h] = gid[u]
                h = nxt[h]
        elif (
            fuse
            and pend_w[u] < bundle_weight
            and (dcount[u] == 0 or not ext[u])
            and not flags[u] & BLOCK_FUSION
        ):
            # bundle: small sink pieces (nothing depends on them) or small source pieces
            # (nothing flows into them), per class
            k = (classes[u], dcount[u] != 0)
            if k in bin_head and bin_w[k] + pend_w[u] > bundle_weight:  # u would overfill it
                close(bin_head.pop(k))
            if k in bin_head:
                nxt[bin_tail[k]] = u
                bin_w[k] += pend_w[u]
            else:
                bin_head[k] = u
                bin_w[k] = pend_w[u]
            bin_tail[k] = tail[u]
            if bin_w[k] >= bundle_weight:
                close(bin_head.pop(k))
        else:
            close(u)
    for k in sorted(bin_head):
        close(bin_head[k])

    # 4. number the groups in a topological order of the groups (Kahn), earliest first
    first = [m] * ng
    for i in range(m):
        g = gid[order[i]]
        if first[g] == m:
            first[g] = i
    gdeg = [0] * ng
    gcount = [0] * (ng + 1)
    for v in order:
        g = gid[v]
        for p in range(indptr[v], indptr[v + 1]):
            h = gid[indices[p]]
            if h != g:
                gcount[h + 1] += 1
                gdeg[g] += 1
    for g in range(ng):
        gcount[g + 1] += gcount[g]
    gfill = gcount[:ng]
    gsucc = [0] * gcount[ng]
    for v in order:
        g = gid[v]
        for p in range(indptr[v], indptr[v + 1]):
            h = gid[indices[p]]
            if h != g:
                gsucc[gfill[h]] = g
                gfill[h] += 1
    key = first
    if priorities is not None:  # a group's priority is its members' highest; higher first
        if len(priorities) != n:
            raise ValueError(f"priorities must have {n} entries, got {len(priorities)}")
        gprio: list = [None] * ng
        for v in order:
            g = gid[v]
            if gprio[g] is None or priorities[v] > gprio[g]:
                gprio[g] = priorities[v]
        key = [0] * ng
        for r, g in enumerate(sorted(range(ng), key=lambda g: (-gprio[g], first[g]))):
            key[g] = r
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

    # 5. the plan's CSR arrays
    group_of = array("q", [-1]) * n
    members_ptr = array("q", [0]) * (ng + 1)
    for v in order:
        g = newid[gid[v]]
        group_of[v] = g
        members_ptr[g + 1] += 1
    for g in range(ng):
        members_ptr[g + 1] += members_ptr[g]
    members = array("q", [0]) * m
    mfill = members_ptr[:ng]
    for v in order:
        g = group_of[v]
        members[mfill[g]] = v
        mfill[g] += 1
    is_target = [False] * n
    for t in targets:
        is_target[t] = True
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
            out = is_target[v]
            if not out:
                for q in range(dptr[v], dptr[v + 1]):
                    if group_of[dep_of[q]] != g:
                        out = True
                        break
            if out:
                outputs.append(v)
        inputs_ptr.append(len(inputs))
        outputs_ptr.append(len(outputs))
    return Plan(
        names,
        order,
        group_of,
        ng,
        members_ptr,
        members,
        inputs_ptr,
        inputs,
        outputs_ptr,
        outputs,
    )
