# Order (see the module docstring). Included by _core.pyx; the twin is ``_order`` in _pure.py.


cdef void _order(_Work w, list names, array tgt) except *:
    """Order: a depth-first post-order from the targets (iterative), culling what they do not
    need and raising :class:`CycleError` on a cycle; sets ``order`` and ``m``."""
    cdef Py_ssize_t n = w.n
    cdef i64 *indptr = w.indptr
    cdef i64 *indices = w.indices
    cdef _Buf state_b = _Buf(n, 0)  # 0 unseen, 1 on the stack, 2 done
    cdef _Buf pos_b = _Buf(n, 0)
    cdef _Buf stack_b = _Buf(n, 0)
    cdef i64 *state = state_b.p
    cdef i64 *pos = pos_b.p
    cdef i64 *stack = stack_b.p
    cdef array order_a = _new(n, False)
    cdef i64 *order = order_a.data.as_longlongs
    cdef Py_ssize_t m = 0, top, i, q
    cdef i64 t, u, v, p, c
    for i in range(len(tgt)):
        t = tgt.data.as_longlongs[i]
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
    resize(order_a, m)
    w.order = w.hold(order_a)
    w.order_a = order_a
    w.m = m
