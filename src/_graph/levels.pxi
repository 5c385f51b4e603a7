# Level packing (see the module docstring). Included by _core.pyx; the twins are
# ``_group_levels``, ``_merge_levels``, ``_pack_level`` and ``_renumber`` in _pure.py.


cdef _Buf _group_levels(i64 ng, i64 *gptr, i64 *gsucc):
    """Top level of every group in the group graph (Kahn's algorithm, groups in id order): 0
    for a group without inputs from other groups, else one more than its highest input."""
    cdef _Buf gdeg_b = _Buf(ng, 0)
    cdef i64 *gdeg = gdeg_b.p
    cdef _Buf level = _Buf(ng, 0)
    cdef _Buf queue_b = _Buf(ng, 0)
    cdef i64 *queue = queue_b.p
    cdef i64 q, g, h, head = 0, tail = 0
    for q in range(gptr[ng]):
        gdeg[gsucc[q]] += 1
    for g in range(ng):
        if gdeg[g] == 0:
            queue[tail] = g
            tail += 1
    while head < tail:
        g = queue[head]
        head += 1
        for q in range(gptr[g], gptr[g + 1]):
            h = gsucc[q]
            if level.p[g] + 1 > level.p[h]:
                level.p[h] = level.p[g] + 1
            gdeg[h] -= 1
            if gdeg[h] == 0:
                queue[tail] = h
                tail += 1
    return level


cdef void _merge_levels(_Work w, i64 parallelism, i64 group_weight) except *:
    """Levels: groups of one top level never depend on each other, so any merge among them
    keeps the group graph acyclic. A level (per class) of more than ``parallelism`` groups is
    packed, in order of their first members, into ``max(parallelism, weight / group_weight)``
    groups of about equal weight; groups holding a ``BLOCK_FUSION`` or ``PACK_ALONE`` node stay
    alone."""
    cdef i64 ng = w.ng
    cdef Py_ssize_t m = w.m, i
    cdef i64 *order = w.order
    cdef i64 *gid = w.gid
    cdef _Buf gw_b = _Buf(ng, 0)
    cdef _Buf first_b = _Buf(ng, m)
    cdef _Buf gk_b = _Buf(ng, 0)
    cdef _Buf blocked_b = _Buf(ng, 0)
    cdef i64 *gw = gw_b.p
    cdef i64 *first = first_b.p
    cdef i64 *gk = gk_b.p
    cdef i64 *blocked = blocked_b.p
    cdef i64 v, g, start, end, total, k
    for i in range(m):
        v = order[i]
        g = gid[v]
        gw[g] += w.weights[v]
        if first[g] == m:
            first[g] = i
            gk[g] = w.classes[v]
        if w.flags[v] & (BLOCK | ALONE):
            blocked[g] = 1
    cdef _Buf gptr_b = _Buf(ng + 1, 0)
    cdef _Buf gsucc_b = _transpose(w.indptr, w.indices, order, m, gid, gptr_b.p, ng)
    cdef _Buf level = _group_levels(ng, gptr_b.p, gsucc_b.p)
    cdef list runs = sorted([(level.p[g], gk[g], first[g], g) for g in range(ng) if not blocked[g]])
    cdef _Buf rep_b = _Buf(ng, 0)
    cdef i64 *rep = rep_b.p
    for g in range(ng):
        rep[g] = g
    cdef Py_ssize_t nruns = len(runs)
    start = 0
    while start < nruns:
        end = start
        total = 0
        while end < nruns and runs[end][:2] == runs[start][:2]:
            total += gw[<i64> runs[end][3]]
            end += 1
        k = max(parallelism, (total + group_weight - 1) // group_weight)
        if end - start > k:
            _pack_level(runs, start, end, total, k, gw, rep)
        start = end
    _renumber(w, rep)


cdef void _pack_level(list runs, i64 start, i64 end, i64 total, i64 k, i64 *gw,
                      i64 *rep) except *:
    # groups runs[start:end] (in order) into k bins by their weight's position in the level;
    # a group of a bin's weight (total / k) or more stays alone
    cdef i64 acc = 0, last_bin = -1, head = -1, j, g, b
    for j in range(start, end):
        g = runs[j][3]
        b = (acc * k) // total if total > 0 else ((j - start) * k) // (end - start)
        acc += gw[g]
        if gw[g] * k >= total > 0:
            last_bin = -1
            continue
        if b != last_bin:
            last_bin = b
            head = g
        rep[g] = head


cdef void _renumber(_Work w, i64 *rep) except *:
    """Group ids after merges: every group takes its representative's, renumbered densely."""
    cdef _Buf dense_b = _Buf(w.ng, -1)
    cdef i64 *dense = dense_b.p
    cdef i64 ng = 0, g, r, v
    cdef Py_ssize_t i
    for g in range(w.ng):
        r = rep[g]
        if dense[r] == -1:
            dense[r] = ng
            ng += 1
    cdef i64 *gid = w.gid
    cdef i64 *order = w.order
    for i in range(w.m):
        v = order[i]
        gid[v] = dense[rep[gid[v]]]
    w.ng = ng
