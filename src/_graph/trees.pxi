# Trees and bundles (see the module docstring). Included by _core.pyx; the twins are
# ``_Pieces``, ``_Bin``, ``_bin_add``, ``_bin_close``, ``_parents``, ``_trees``, ``_grow`` and
# ``_pack`` in _pure.py.


cdef class _Pieces:
    """The pending pieces of the tree walk: linked lists of node ids (``nxt``), with per piece
    root its ``tail``, pending weight ``pend_w`` and whether it receives a value from outside
    itself (``ext``)."""
    cdef _Work w
    cdef i32 *nxt
    cdef i32 *tail
    cdef i64 *pend_w
    cdef i32 *ext
    cdef i32 *parent  # every node's parent (:func:`_parents`), or -1
    cdef tuple keep  # the buffers, freed with the pieces when the tree walk ends

    def __cinit__(self, _Work w, _Ids parent):
        self.w = w
        self.keep = (_Ids(w.n, -1), _Ids(w.n, -1), _Buf(w.n, 0), _Ids(w.n, 0), parent)
        self.nxt = (<_Ids> self.keep[0]).p
        self.tail = (<_Ids> self.keep[1]).p
        self.pend_w = (<_Buf> self.keep[2]).p
        self.ext = (<_Ids> self.keep[3]).p
        self.parent = parent.p

    cdef void close(self, i64 h) noexcept:
        """Make the piece starting at ``h`` a group."""
        cdef i64 *gid = self.w.gid
        cdef i32 *nxt = self.nxt
        while h != -1:
            gid[h] = self.w.ng
            h = nxt[h]
        self.w.ng += 1


cdef struct _Bin:
    # child pieces packed together, in order, until they weigh about ``group_weight``
    i64 head
    i64 tail
    i64 weight
    bint ext


cdef inline void _bin_add(_Bin *b, _Pieces pieces, i64 c) noexcept:
    if b.head == -1:
        b.head = c
    else:
        pieces.nxt[b.tail] = c
    b.tail = pieces.tail[c]
    b.weight += pieces.pend_w[c]
    b.ext = b.ext or pieces.ext[c] != 0


cdef inline void _bin_close(_Bin *b, _Pieces pieces) noexcept:
    pieces.close(b.head)
    b.head = -1
    b.tail = -1
    b.weight = 0
    b.ext = False


cdef _Ids _parents(_Work w):
    """A node with exactly one dependent hangs below it (its ``parent``), when both may fuse."""
    cdef i64 *order = w.order
    cdef i64 *dptr = w.dptr
    cdef i64 *dep_of = w.dep_of
    cdef i64 *gid = w.gid
    cdef i64 *kl = w.classes
    cdef i64 *fl = w.flags
    cdef _Ids parent_b = _Ids(w.n, -1)
    cdef i32 *parent = parent_b.p
    cdef Py_ssize_t i
    cdef i64 u, d
    for i in range(w.m):
        u = order[i]
        if dptr[u + 1] - dptr[u] != 1 or gid[u] != -1 or fl[u] & BLOCK:
            continue
        d = dep_of[dptr[u]]
        if (gid[d] == -1 or w.head_of_split[d]) and kl[d] == kl[u] and not fl[d] & BLOCK:
            parent[u] = d
    return parent_b


cdef void _trees(_Work w, bint fuse, i64 group_weight, i64 bundle_weight) except *:
    """Trees and bundles: walk the order (children before parents); every node collects its
    children's pending pieces (:func:`_grow`); a tree's top is closed, joins its split group,
    or is bundled with other small sinks or sources."""
    cdef i64 *order = w.order
    cdef i64 *gid = w.gid
    cdef i64 *head_of_split = w.head_of_split
    cdef _Pieces pieces = _Pieces(w, _parents(w) if fuse else _Ids(w.n, -1))
    w.drop_dependents(True)  # every node knows its parent: the walk needs only the counts
    cdef i32 *parent = pieces.parent
    cdef i64 *dptr = w.dptr
    cdef i32 *nxt = pieces.nxt
    cdef dict bin_head = {}
    cdef dict bin_tail = {}
    cdef dict bin_w = {}
    cdef Py_ssize_t i
    cdef i64 u, h
    cdef tuple k
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
        elif (fuse
                and pieces.pend_w[u] < bundle_weight
                and (dptr[u + 1] == dptr[u] or not pieces.ext[u])
                and not w.flags[u] & BLOCK
                and not (w.flags[u] & PASS and pieces.tail[u] == u)):
            # bundle: small sink pieces (nothing depends on them) or small source pieces
            # (nothing flows into them), per class; a lone pass-through node stays alone
            k = (w.classes[u], dptr[u + 1] != dptr[u])
            if k in bin_head and <i64> bin_w[k] + pieces.pend_w[u] > bundle_weight:  # overfill
                pieces.close(bin_head.pop(k))
            if k in bin_head:
                nxt[<i64> bin_tail[k]] = u
                bin_w[k] = <i64> bin_w[k] + pieces.pend_w[u]
            else:
                bin_head[k] = u
                bin_w[k] = pieces.pend_w[u]
            bin_tail[k] = pieces.tail[u]
            if <i64> bin_w[k] >= bundle_weight:
                pieces.close(bin_head.pop(k))
        else:
            pieces.close(u)
    for k in sorted(bin_head):
        pieces.close(bin_head[k])


cdef void _grow(_Work w, _Pieces pieces, i64 u, i64 group_weight) noexcept:
    """The pending piece of ``u``: ``u`` and its children's pieces -- linked up whole when they
    fit ``group_weight``, else packed into groups (:func:`_pack`)."""
    cdef i64 *indptr = w.indptr
    cdef i64 *indices = w.indices
    cdef i32 *parent = pieces.parent
    cdef i32 *nxt = pieces.nxt
    cdef i32 *tail = pieces.tail
    cdef i64 *pend_w = pieces.pend_w
    cdef i32 *ext = pieces.ext
    cdef i64 total = _weight(w, u)
    cdef i64 p, c
    cdef bint x = False
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


cdef void _pack(_Work w, _Pieces pieces, i64 u, i64 group_weight, bint x) noexcept:
    """``u``'s children weigh more than ``group_weight``: a child piece that reaches it alone
    is a group; the others are packed, in order, into groups of about ``group_weight`` (a bin
    is closed before a piece would overfill it); a leftover of half a group or more is a group
    too, and a smaller one stays pending on ``u``."""
    cdef i64 *indptr = w.indptr
    cdef i64 *indices = w.indices
    cdef i32 *parent = pieces.parent
    cdef i64 *pend_w = pieces.pend_w
    cdef _Bin b = _Bin(head=-1, tail=-1, weight=0, ext=False)
    cdef i64 p, c
    for p in range(indptr[u], indptr[u + 1]):
        c = indices[p]
        if parent[c] != u:
            continue
        if pend_w[c] >= group_weight:
            pieces.close(c)
            x = True
            continue
        if b.head != -1 and b.weight + pend_w[c] > group_weight:  # c would overfill the bin
            _bin_close(&b, pieces)
            x = True
        _bin_add(&b, pieces, c)
        if b.weight >= group_weight:
            _bin_close(&b, pieces)
            x = True
    if b.head != -1 and 2 * b.weight >= group_weight:
        # half a group or more left over: its own group. Carried up, it would wait for the
        # groups just closed below u although nothing in it needs them
        _bin_close(&b, pieces)
        x = True
    if b.head != -1:
        pieces.nxt[u] = b.head
        pieces.tail[u] = b.tail
    pend_w[u] = _weight(w, u) + b.weight
    pieces.ext[u] = x or b.ext
