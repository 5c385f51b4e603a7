# The plan's CSR arrays (see the module docstring). Included by _core.pyx; the twin is
# ``_plan_csr`` in _pure.py.


cdef object _plan_csr(_Work w, list names, i64 *newid, array tgt):
    """The plan's CSR arrays: members of each group in order, its external inputs, and its
    outputs (members that are targets or feed another group). ``seen[u]`` is the last group
    + 1 that took ``u`` as an input (0: none)."""
    cdef Py_ssize_t n = w.n, m = w.m, i
    cdef i64 ng = w.ng
    cdef i64 *order = w.order
    cdef i64 *indptr = w.indptr
    cdef i64 *indices = w.indices
    cdef i64 g, v, u, p
    cdef array group_of = _new(n, False)
    cdef i64 *gof = group_of.data.as_longlongs
    for i in range(n):
        gof[i] = -1
    cdef array members_ptr = _new(ng + 1)
    cdef i64 *mptr = members_ptr.data.as_longlongs
    for i in range(m):
        v = order[i]
        g = newid[w.gid[v]]
        gof[v] = g
        mptr[g + 1] += 1
    for g in range(ng):
        mptr[g + 1] += mptr[g]
    cdef array members = _new(m, False)
    cdef i64 *mem = members.data.as_longlongs
    cdef _Buf fill_b = _Buf(ng, 0)
    cdef i64 *fill = fill_b.p
    for g in range(ng):
        fill[g] = mptr[g]
    for i in range(m):
        v = order[i]
        g = gof[v]
        mem[fill[g]] = v
        fill[g] += 1
    cdef _Buf is_output_b = _Buf(n, 0)  # targets, and values read by another group
    cdef i64 *is_output = is_output_b.p
    for i in range(len(tgt)):
        is_output[tgt.data.as_longlongs[i]] = 1
    for i in range(m):
        v = order[i]
        for p in range(indptr[v], indptr[v + 1]):
            if gof[indices[p]] != gof[v]:
                is_output[indices[p]] = 1
    cdef _Buf seen_b = _Buf(n, 0)
    cdef i64 *seen = seen_b.p
    cdef array inputs_ptr = _new(ng + 1)
    cdef array outputs_ptr = _new(ng + 1)
    cdef array inputs = _new(m, False)
    cdef array outputs = _new(m, False)  # every output is a member: m is enough
    cdef i64 ni = 0, no = 0, icap = m
    for g in range(ng):
        for i in range(mptr[g], mptr[g + 1]):
            v = mem[i]
            for p in range(indptr[v], indptr[v + 1]):
                u = indices[p]
                if gof[u] != g and seen[u] != g + 1:
                    seen[u] = g + 1
                    if ni == icap:
                        icap = icap * 2 + 16
                        resize(inputs, icap)
                    inputs.data.as_longlongs[ni] = u
                    ni += 1
            if is_output[v]:
                outputs.data.as_longlongs[no] = v
                no += 1
        inputs_ptr.data.as_longlongs[g + 1] = ni
        outputs_ptr.data.as_longlongs[g + 1] = no
    resize(inputs, ni)
    resize(outputs, no)
    return Plan(names, w.order_a, group_of, ng, members_ptr, members, inputs_ptr, inputs,
                outputs_ptr, outputs)
