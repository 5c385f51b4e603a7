# Bands of levels (see the module docstring). Included by _core.pyx; the twins are
# ``_group_levels``, ``_merge_levels``, ``_cut_bands``, ``_makespan``, ``_add_moves``,
# ``_pack_level`` and ``_renumber`` in _pure.py (``_Heap`` stands for Python's ``heapq``).


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


cdef class _Heap:
    """A binary min-heap of ``(k1, k2, value)`` entries ordered by ``(k1, k2)``; ``pop``
    returns the value and leaves the entry's ``k1`` in ``top``."""
    cdef i64 *a
    cdef Py_ssize_t size
    cdef i64 top

    def __cinit__(self, Py_ssize_t capacity):
        self.a = <i64 *> PyMem_Malloc(3 * max(capacity, 1) * sizeof(i64))
        if self.a == NULL:
            raise MemoryError()
        self.size = 0

    def __dealloc__(self):
        PyMem_Free(self.a)

    cdef inline bint _less(self, Py_ssize_t i, Py_ssize_t j) noexcept:
        cdef i64 *a = self.a
        return a[3 * i] < a[3 * j] or (a[3 * i] == a[3 * j] and a[3 * i + 1] < a[3 * j + 1])

    cdef inline void _swap(self, Py_ssize_t i, Py_ssize_t j) noexcept:
        cdef i64 *a = self.a
        cdef i64 t
        cdef int c
        for c in range(3):
            t = a[3 * i + c]
            a[3 * i + c] = a[3 * j + c]
            a[3 * j + c] = t

    cdef void push(self, i64 k1, i64 k2, i64 value) noexcept:
        cdef Py_ssize_t i = self.size, up
        self.a[3 * i] = k1
        self.a[3 * i + 1] = k2
        self.a[3 * i + 2] = value
        self.size += 1
        while i > 0:
            up = (i - 1) // 2
            if not self._less(i, up):
                break
            self._swap(i, up)
            i = up

    cdef i64 pop(self) noexcept:
        cdef i64 value = self.a[2]
        cdef Py_ssize_t i = 0, c
        self.top = self.a[0]
        self.size -= 1
        if self.size > 0:
            self._swap(0, self.size)
            while True:
                c = 2 * i + 1
                if c >= self.size:
                    break
                if c + 1 < self.size and self._less(c + 1, c):
                    c += 1
                if not self._less(c, i):
                    break
                self._swap(c, i)
                i = c
        return value


cdef void _merge_levels(_Work w, i64 parallelism, i64 group_weight, i64 cpus,
                        i64 task_weight, i64 *moves) except *:
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
    cdef i64 ng = w.ng
    cdef Py_ssize_t m = w.m, i
    cdef i64 *order = w.order
    cdef i64 *gid = w.gid
    cdef _Buf gw_b = _Buf(ng, 0)
    cdef _Buf first_b = _Buf(ng, m)
    cdef _Buf gk_b = _Buf(ng, 0)
    cdef _Buf blocked_b = _Buf(ng, 0)
    cdef _Buf size_b = _Buf(ng, 0)
    cdef i64 *gw = gw_b.p
    cdef i64 *first = first_b.p
    cdef i64 *gk = gk_b.p
    cdef i64 *blocked = blocked_b.p
    cdef i64 *size = size_b.p
    cdef i64 v, g, h, depth = 1, cost, best_cost = 0, cap
    for i in range(m):
        v = order[i]
        g = gid[v]
        gw[g] += _weight(w, v)
        size[g] += 1
        if first[g] == m:
            first[g] = i
            gk[g] = w.classes[v]
        if w.flags[v] & (BLOCK | ALONE):
            blocked[g] = 1
    for g in range(ng):
        if size[g] == 1 and w.flags[order[first[g]]] & PASS:
            blocked[g] = 1
    cdef _Buf gptr_b = _Buf(ng + 1, 0)
    cdef _Buf gsucc_b = _transpose(w.indptr, w.indices, order, m, gid, gptr_b.p, ng)
    cdef _Buf level = _group_levels(ng, gptr_b.p, gsucc_b.p)
    for g in range(ng):
        if level.p[g] + 1 > depth:
            depth = level.p[g] + 1
    cdef i64 low = max(1, min(cpus, parallelism))
    cdef list caps = [parallelism]
    if low != parallelism:
        caps.append(low)
    cdef _Buf rep
    cdef _Buf best = None
    for cap in caps:
        h = 1
        while True:
            rep = _cut_bands(ng, gptr_b.p, gsucc_b.p, level.p, h, gw, gk, first, blocked, low,
                             cap, group_weight, task_weight)
            cost = _makespan(w, gptr_b.p, gsucc_b.p, rep.p, gw, first, cpus, task_weight, moves)
            if best is None or cost < best_cost:
                best_cost = cost
                best = rep
            if h >= depth:
                break
            h *= 2
    _renumber(w, best.p)


cdef _Buf _cut_bands(i64 ng, i64 *gptr, i64 *gsucc, i64 *level, i64 h, i64 *gw, i64 *gk,
                     i64 *first, i64 *blocked, i64 low, i64 cap, i64 group_weight,
                     i64 task_weight):
    """Every group's representative when the group graph is cut into bands of ``h`` top levels:
    a topological order, band by band (earliest first member first), each band's stretches of
    one class (and no ``blocked`` group) cut into contiguous segments (:func:`_pack_level`);
    with ``h`` = 1 a level's groups are independent, so each class is one stretch. A stretch
    gets ``cap`` segments, fewer as long as each carries ``task_weight``, never fewer than
    ``low`` (the CPUs: weights are estimates -- a count says nothing of a 30 ms chunk -- and a
    stretch that could keep every CPU busy is not packed onto fewer on their strength)."""
    cdef _Buf deg_b = _Buf(ng, 0)
    cdef _Buf seq_b = _Buf(ng, 0)
    cdef _Buf run_b = _Buf(ng, 0)
    cdef _Buf rep = _Buf(ng, 0)
    cdef i64 *deg = deg_b.p
    cdef i64 *seq = seq_b.p
    cdef i64 *run = run_b.p
    cdef _Heap heap = _Heap(ng)
    cdef i64 q, g, x, nseq = 0, start, end, band, nrun, i, j, total, k
    cdef list stretch
    for q in range(gptr[ng]):
        deg[gsucc[q]] += 1
    for g in range(ng):
        rep.p[g] = g
        if deg[g] == 0:
            heap.push(level[g] // h, first[g], g)
    while heap.size:
        g = heap.pop()
        seq[nseq] = g
        nseq += 1
        for q in range(gptr[g], gptr[g + 1]):
            x = gsucc[q]
            deg[x] -= 1
            if deg[x] == 0:
                heap.push(level[x] // h, first[x], x)
    start = 0
    while start < ng:
        band = level[seq[start]] // h
        end = start
        while end < ng and level[seq[end]] // h == band:
            end += 1
        nrun = 0
        if h == 1:  # a level: its groups never depend on each other
            stretch = sorted([(gk[seq[i]], i, seq[i]) for i in range(start, end)
                              if not blocked[seq[i]]])
            for i in range(len(stretch)):
                run[i] = stretch[i][2]
            nrun = len(stretch)
        else:
            for i in range(start, end):
                run[nrun] = seq[i]
                nrun += 1
        i = 0
        while i < nrun:
            j = i
            while j < nrun and not blocked[run[j]] and gk[run[j]] == gk[run[i]]:
                j += 1
            if j > i:
                total = 0
                for x in range(i, j):
                    total += gw[run[x]]
                k = (total + group_weight - 1) // group_weight
                if task_weight > 0:
                    k = max(k, min(cap, max(low, (total + task_weight - 1) // task_weight)))
                else:
                    k = max(k, cap)
                if j - i > k:
                    _pack_level(run, i, j, total, k, gw, rep.p)
            i = max(j, i + 1)
        start = end
    return rep


cdef i64 _makespan(_Work w, i64 *gptr, i64 *gsucc, i64 *rep, i64 *gw, i64 *first, i64 cpus,
                   i64 task_weight, i64 *moves) except -1:
    """When a list schedule on ``cpus`` CPUs finishes the groups merged as ``rep`` says, each
    costing ``task_weight`` plus its members' weights, plus, with ``moves``, what moving each
    value it reads from another group costs (ready groups by earliest first member)."""
    cdef i64 ng = w.ng
    cdef _Buf weight_b = _Buf(ng, 0)
    cdef _Buf deg_b = _Buf(ng, 0)
    cdef _Buf sptr_b = _Buf(ng + 1, 0)
    cdef i64 *weight = weight_b.p
    cdef i64 *deg = deg_b.p
    cdef i64 *sptr = sptr_b.p
    cdef i64 g, q, r, x, nq = 0
    for g in range(ng):
        r = rep[g]
        weight[r] += gw[g]
        for q in range(gptr[g], gptr[g + 1]):
            x = rep[gsucc[q]]
            if x != r:
                sptr[r + 1] += 1
                deg[x] += 1
                nq += 1
    for g in range(ng):
        sptr[g + 1] += sptr[g]
    if moves != NULL:
        _add_moves(w, rep, moves, weight)
    cdef _Buf fill_b = _Buf(ng, 0)
    cdef _Buf succ_b = _Buf(nq, 0)
    cdef i64 *fill = fill_b.p
    cdef i64 *succ = succ_b.p
    for g in range(ng):
        fill[g] = sptr[g]
    for g in range(ng):
        r = rep[g]
        for q in range(gptr[g], gptr[g + 1]):
            x = rep[gsucc[q]]
            if x != r:
                succ[fill[r]] = x
                fill[r] += 1
    cdef _Heap ready = _Heap(ng)
    cdef _Heap running = _Heap(ng)
    cdef i64 free = max(1, cpus), now = 0
    for r in range(ng):
        if rep[r] == r and deg[r] == 0:
            ready.push(first[r], r, r)
    while ready.size or running.size:
        while ready.size and free:
            r = ready.pop()
            running.push(now + task_weight + weight[r], r, r)
            free -= 1
        r = running.pop()
        now = running.top
        free += 1
        for q in range(sptr[r], sptr[r + 1]):
            x = succ[q]
            deg[x] -= 1
            if deg[x] == 0:
                ready.push(first[x], x, x)
    return now


cdef void _add_moves(_Work w, i64 *rep, i64 *moves, i64 *weight) except *:
    """Add to every merged group's ``weight`` the ``moves`` of the values it reads from other
    groups, each value once (members visited group by group)."""
    cdef i64 *gid = w.gid
    cdef i64 *order = w.order
    cdef _Buf start_b = _Buf(w.ng + 1, 0)
    cdef _Buf fill_b = _Buf(w.ng, 0)
    cdef _Buf members_b = _Buf(w.m, 0)
    cdef _Buf mark_b = _Buf(w.n, -1)
    cdef i64 *start = start_b.p
    cdef i64 *fill = fill_b.p
    cdef i64 *members = members_b.p
    cdef i64 *mark = mark_b.p
    cdef Py_ssize_t i
    cdef i64 g, r, v, q, p, d
    for i in range(w.m):
        start[rep[gid[order[i]]] + 1] += 1
    for g in range(w.ng):
        start[g + 1] += start[g]
        fill[g] = start[g]
    for i in range(w.m):
        v = order[i]
        r = rep[gid[v]]
        members[fill[r]] = v
        fill[r] += 1
    for r in range(w.ng):
        for q in range(start[r], start[r + 1]):
            v = members[q]
            for p in range(w.indptr[v], w.indptr[v + 1]):
                d = w.indices[p]
                if rep[gid[d]] != r and mark[d] != r:
                    mark[d] = r
                    weight[r] += moves[d]


cdef void _pack_level(i64 *run, i64 start, i64 end, i64 total, i64 k, i64 *gw,
                      i64 *rep) noexcept:
    # groups run[start:end] (in order) into k bins by their weight's position in the stretch;
    # a group of a bin's weight (total / k) or more stays alone
    cdef i64 acc = 0, last_bin = -1, head = -1, j, g, b
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
