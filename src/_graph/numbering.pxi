# Group numbering (see the module docstring). Included by _core.pyx; the twin is
# ``_number_groups`` in _pure.py (which keeps its heap with :mod:`heapq`).


cdef inline Py_ssize_t _heap_push(i64 *heap, Py_ssize_t hn, i64 *key, i64 g) noexcept:
    # binary min-heap of group ids keyed by key[] (keys are distinct)
    cdef Py_ssize_t i = hn, up
    heap[i] = g
    while i > 0:
        up = (i - 1) >> 1
        if key[heap[up]] <= key[heap[i]]:
            break
        heap[up], heap[i] = heap[i], heap[up]
        i = up
    return hn + 1


cdef inline Py_ssize_t _heap_pop(i64 *heap, Py_ssize_t hn, i64 *key) noexcept:
    # drop heap[0]
    cdef Py_ssize_t i = 0, left, right, smallest
    hn -= 1
    heap[0] = heap[hn]
    while True:
        left = 2 * i + 1
        right = left + 1
        smallest = i
        if left < hn and key[heap[left]] < key[heap[smallest]]:
            smallest = left
        if right < hn and key[heap[right]] < key[heap[smallest]]:
            smallest = right
        if smallest == i:
            break
        heap[i], heap[smallest] = heap[smallest], heap[i]
        i = smallest
    return hn


cdef _Buf _number_groups(_Work w, list priorities):
    """Group numbering: a topological order of the group graph (Kahn's algorithm), earliest
    first member first -- or, with ``priorities``, highest priority first; returns the new id
    of every group."""
    cdef i64 *order = w.order
    cdef i64 *gid = w.gid
    cdef i64 ng = w.ng
    cdef Py_ssize_t m = w.m, i, hn = 0
    cdef i64 g, h, q, v, done = 0
    cdef _Buf first_b = _Buf(ng, m)
    cdef i64 *first = first_b.p
    for i in range(m):
        g = gid[order[i]]
        if first[g] == m:
            first[g] = i
    cdef _Buf gcount_b = _Buf(ng + 1, 0)
    cdef i64 *gcount = gcount_b.p
    cdef _Buf gsucc_b = _transpose(w.indptr, w.indices, order, m, gid, gcount, ng)
    cdef i64 *gsucc = gsucc_b.p
    cdef _Buf gdeg_b = _Buf(ng, 0)
    cdef i64 *gdeg = gdeg_b.p
    for q in range(gcount[ng]):
        gdeg[gsucc[q]] += 1
    cdef i64 *key = first
    cdef _Buf key_b
    cdef list gprio
    if priorities is not None:  # a group's priority is its members' highest; higher first
        gprio = [None] * ng
        for i in range(m):
            v = order[i]
            g = gid[v]
            if gprio[g] is None or priorities[v] > gprio[g]:
                gprio[g] = priorities[v]
        key_b = _Buf(ng, 0)
        key = key_b.p
        for i, g in enumerate(sorted(range(ng), key=lambda g: (-gprio[g], first[g]))):
            key[g] = i
    cdef _Buf heap_b = _Buf(ng, 0)
    cdef i64 *heap = heap_b.p
    for g in range(ng):
        if gdeg[g] == 0:
            hn = _heap_push(heap, hn, key, g)
    cdef _Buf newid = _Buf(ng, -1)
    while hn > 0:
        g = heap[0]
        hn = _heap_pop(heap, hn, key)
        newid.p[g] = done
        done += 1
        for q in range(gcount[g], gcount[g + 1]):
            h = gsucc[q]
            gdeg[h] -= 1
            if gdeg[h] == 0:
                hn = _heap_push(heap, hn, key, h)
    if done != ng:
        raise RuntimeError(
            "daskray internal error: fused groups form a cycle; please report this graph"
        )
    return newid
