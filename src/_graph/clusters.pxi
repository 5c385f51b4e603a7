# Clusters (see the module docstring). Included by _core.pyx; the twins are ``_find``,
# ``_clusters``, ``_cluster_roots`` and ``_cluster_groups`` in _pure.py.


cdef inline i64 _find(i64 *up, i64 a) noexcept:
    # union-find root, halving the path; ``up[a]`` is a's parent + 1, 0 at a root
    cdef i64 g
    while up[a] != 0:
        g = up[up[a] - 1]
        if g == 0:
            return up[a] - 1
        up[a] = g
        a = g - 1
    return a


cdef void _clusters(_Work w, i64 fanout, i64 group_weight, i64 bundle_weight) except *:
    """Clusters: grow them (:func:`_cluster_roots`), then number the convex ones
    (:func:`_cluster_groups`). The per-node state is all zeros until a node joins a cluster
    (offsets from its natural start: parent + 1, weight beyond the root's own, nodes - 1):
    on a graph with few clusters, most of its pages are never touched."""
    cdef Py_ssize_t n = w.n
    cdef _Buf up_b = _Buf(n, 0)
    cdef _Buf cx_b = _Buf(n, 0)
    cdef _Buf cn_b = _Buf(n, 0)
    cdef _Buf incl_b = _Buf(n, 0)
    _cluster_roots(w, fanout, group_weight, up_b.p, cx_b.p, cn_b.p, incl_b.p)
    _cluster_groups(w, bundle_weight, up_b.p, cx_b.p, incl_b.p)


cdef void _cluster_roots(_Work w, i64 fanout, i64 group_weight, i64 *up, i64 *cx, i64 *cn,
                         i64 *incl) except *:
    """Union the nodes whose dependencies each have 2 to ``fanout`` dependents with those
    dependencies, then the chains hanging below a member; a root's weight is its own plus
    ``cx``, its number of nodes ``cn`` + 1; ``incl`` marks the members. A union past
    ``fanout`` squared nodes (a few inputs shared by a few readers) is not made: that is a
    mesh, such as a lattice, whose clusters would grow into long sequential blobs; the bands
    cut it instead."""
    cdef i64 *order = w.order
    cdef i64 *indptr = w.indptr
    cdef i64 *indices = w.indices
    cdef i64 *dptr = w.dptr
    cdef i64 *gid = w.gid
    cdef i64 *kl = w.classes
    cdef i64 *fl = w.flags
    cdef _Buf roots_b = _Buf(fanout + 1, 0)
    cdef i64 *roots = roots_b.p
    cdef Py_ssize_t i, j, nr
    cdef i64 d, k, c, p, r, rd, rv, u, v, total, count
    cdef bint ok, seen
    for i in range(w.m):
        d = order[i]
        k = indptr[d + 1] - indptr[d]
        if k == 0 or k > fanout or gid[d] != -1 or fl[d] & BLOCK:
            continue
        c = kl[d]
        ok = True
        for p in range(indptr[d], indptr[d + 1]):
            r = indices[p]
            if (gid[r] != -1
                    or fl[r] & BLOCK
                    or kl[r] != c
                    or dptr[r + 1] - dptr[r] < 2
                    or dptr[r + 1] - dptr[r] > fanout):
                ok = False
                break
        if not ok:
            continue
        rd = _find(up, d)
        roots[0] = rd
        nr = 1
        total = _weight(w, rd) + cx[rd]
        count = cn[rd] + 1
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
                total += _weight(w, r) + cx[r]
                count += cn[r] + 1
        if total > group_weight or count > fanout * fanout:
            continue
        for j in range(1, nr):
            up[roots[j]] = rd + 1
        cx[rd] = total - _weight(w, rd)
        cn[rd] = count - 1
        incl[d] = 1
        for p in range(indptr[d], indptr[d + 1]):
            incl[indices[p]] = 1
    for i in range(w.m):  # chains below a member: one dependency, the member's only dependent
        u = order[i]
        if incl[u] or gid[u] != -1 or fl[u] & BLOCK or indptr[u + 1] - indptr[u] != 1:
            continue
        v = indices[indptr[u]]
        if not incl[v] or dptr[v + 1] - dptr[v] != 1 or kl[v] != kl[u]:
            continue
        rv = _find(up, v)
        if _weight(w, rv) + cx[rv] + _weight(w, u) > group_weight:
            continue
        up[u] = rv + 1
        cx[rv] += _weight(w, u)
        incl[u] = 1


cdef void _cluster_groups(_Work w, i64 bundle_weight, i64 *up, i64 *cx, i64 *incl) except *:
    """Give the members of every convex cluster its group: an outside dependency must come
    before the cluster's first member in the order; clusters without outside inputs are
    bundled per class up to ``bundle_weight``. ``first`` (a root's first position in the
    order) and ``cgid`` (its group) are stored + 1, 0 meaning none yet."""
    cdef Py_ssize_t n = w.n, i
    cdef i64 *order = w.order
    cdef i64 *indptr = w.indptr
    cdef i64 *indices = w.indices
    cdef i64 *gid = w.gid
    cdef i64 *kl = w.classes
    cdef _Buf rank_b = _Buf(n, 0)
    cdef _Buf first_b = _Buf(n, 0)
    cdef _Buf src_b = _Buf(n, 0)
    cdef _Buf bad_b = _Buf(n, 0)
    cdef _Buf cgid_b = _Buf(n, 0)
    cdef i64 *rank = rank_b.p
    cdef i64 *first = first_b.p
    cdef i64 *src = src_b.p
    cdef i64 *bad = bad_b.p
    cdef i64 *cgid = cgid_b.p
    cdef i64 u, p, x, root, g, k
    for i in range(w.m):
        rank[order[i]] = i
    for i in range(w.m):
        u = order[i]
        if not incl[u]:
            continue
        root = _find(up, u)
        if first[root] == 0:
            first[root] = i + 1
            src[root] = 1
        for p in range(indptr[u], indptr[u + 1]):
            x = indices[p]
            if incl[x] and _find(up, x) == root:
                continue
            src[root] = 0
            if rank[x] + 1 >= first[root]:
                bad[root] = 1
    cdef dict bin_gid = {}
    cdef dict bin_w = {}
    for i in range(w.m):
        u = order[i]
        if not incl[u]:
            continue
        root = _find(up, u)
        if bad[root]:
            continue
        g = cgid[root] - 1
        if g == -1:
            if src[root]:  # independent clusters are bundled, per class
                k = kl[u]
                if k in bin_gid and <i64> bin_w[k] + _weight(w, root) + cx[root] > bundle_weight:
                    del bin_gid[k]
                if k not in bin_gid:
                    bin_gid[k] = w.ng
                    bin_w[k] = 0
                    w.ng += 1
                g = bin_gid[k]
                bin_w[k] = <i64> bin_w[k] + _weight(w, root) + cx[root]
                if <i64> bin_w[k] >= bundle_weight:
                    del bin_gid[k]
            else:
                g = w.ng
                w.ng += 1
            cgid[root] = g + 1
        gid[u] = g
