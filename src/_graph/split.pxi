# Split groups (see the module docstring). Included by _core.pyx; the twins are ``_solo`` and
# ``_split_groups`` in _pure.py.


cdef inline bint _solo(_Work w, i64 d, i64 s) noexcept:
    # d depends on s alone and may join s's split group
    return (w.indptr[d + 1] - w.indptr[d] == 1
            and w.gid[d] == -1
            and w.classes[d] == w.classes[s]
            and not w.flags[d] & BLOCK)


cdef void _split_groups(_Work w, i64 split_fanout, i64 group_weight) noexcept:
    """Split groups: a node with at least ``split_fanout`` dependents that depend on it alone
    runs with them (up to ``group_weight``); marks it ``head_of_split``."""
    cdef i64 *order = w.order
    cdef i64 *dptr = w.dptr
    cdef i64 *dep_of = w.dep_of
    cdef i64 *gid = w.gid
    cdef Py_ssize_t i
    cdef i64 s, d, q, cnt, weight
    for i in range(w.m):
        s = order[i]
        if gid[s] != -1 or w.flags[s] & BLOCK:
            continue
        cnt = 0
        for q in range(dptr[s], dptr[s + 1]):
            if _solo(w, dep_of[q], s):
                cnt += 1
        if cnt < split_fanout:
            continue
        gid[s] = w.ng
        w.head_of_split[s] = 1
        weight = _weight(w, s)
        for q in range(dptr[s], dptr[s + 1]):
            if weight >= group_weight:
                break
            d = dep_of[q]
            if _solo(w, d, s):
                gid[d] = w.ng
                weight += _weight(w, d)
        w.ng += 1
