"""daskray's compiled graph core: intern, order, cull and fuse a task graph into a plan.

The core sees a graph as ``names`` (the key objects) and, per key, the keys it depends on. It
knows nothing of Ray or of dask's task objects; ``daskray`` turns dask graphs into that form and
turns the :class:`Plan` into Ray tasks. ``_pure.py`` is a pure-Python twin with the same steps in
the same order (selected by ``DASKRAY_NO_EXTENSIONS=1``); one test suite checks both.

Interning
---------
``intern(names, deps)`` maps each key to its position (a dense ``int64`` id) once, at the
boundary, and builds the dependency CSR: node ``i`` depends on
``indices[indptr[i]:indptr[i+1]]``, sorted by id without repeats, so plans do not depend on
``frozenset`` iteration order. A dependency that is not a key raises
:class:`MissingDependencyError` naming it and the tasks that need it, before anything runs.

Order
-----
``plan`` walks from the targets along dependencies with an explicit stack (no recursion: graphs
of 10^6 nodes are long chains as often as wide fans) and emits each node after its
dependencies: a depth-first post-order. That order is topological, culls everything the targets
do not need, and finishes one branch before it starts the next, which is what keeps dask.order's
memory low. A dependency met while it is still on the stack is a cycle; :class:`CycleError`
lists its keys. A node's position in ``order`` is its priority.

Fusion
------
Ray costs about a millisecond per task, so tiny dask tasks are run in groups; one Ray task runs
one group. Groups are built so that the graph of groups stays acyclic *by construction*: in
every group, each node that receives a value from outside reaches, inside the group, every node
whose value leaves it. A cycle of groups would then be a cycle of nodes. Four shapes qualify:

* split groups -- a node ``s`` with at least ``split_fanout`` dependents whose only dependency is
  ``s`` (dask's ``split``/``getitem`` fan-out of a shuffle) runs with those dependents, each of
  which becomes its own output (``num_returns``)::

        s ─┬─> getitem 0 ─> ...          one Ray task, outputs getitem 0..k
           ├─> getitem 1 ─> ...
           └─> getitem k ─> ...

* clusters -- a node whose dependencies each have between 2 and ``cluster_fanout`` (4)
  dependents runs with them, and they with their other readers: block ``(i, j)`` of
  ``x + x.T`` reads blocks ``(i, j)`` and ``(j, i)``, and so does block ``(j, i)``, so the two
  sources and their two readers form one cluster whose 2 MB blocks never leave it (chains
  hanging below a member join too). Clusters stop growing at ``group_weight``; one that would
  read a value computed from its own members (an outside dependency later in the order than
  its first member) is not made; clusters without outside inputs are bundled per class, up to
  ``bundle_weight``::

        r_ij  r_ji                  one Ray task; only the small means leave it
          │ ╲╱ │
          │ ╱╲ │
        a_ij  a_ji ──> mean chunks

* trees -- a node with exactly one dependent hangs below it (its *parent*); the nodes below a
  node form a tree whose values leave only through its top. Walking ``order`` (children before
  parents), a node collects the pending weight of its children. When that exceeds
  ``group_weight`` the children's pending pieces are packed, in order, into groups of about
  ``group_weight`` (siblings, all feeding the node): these run in parallel, which is what keeps
  a tree reduction of 20,000 leaves as wide as the cluster. What is left stays pending on the
  node and moves up -- unless it is half a group or more: then it is a group of its own, since
  on the node it would wait for the groups just closed although nothing in it needs them (16
  slow tasks side by side would otherwise leave their last pair to run after the rest). A bin
  is closed before a piece would take it past ``group_weight``, so groups stay near the target
  instead of up to twice it. A tree ends at a node with no or several dependents and is closed
  there::

        a b c d   e f g h          group_weight 4: [a b c d] [e f g h] run in parallel,
        └┬┘ └┬┘   └┬┘ └┬┘          and the sums above them form a third group
         s1  s2    s3  s4
         └─┬─┘     └─┬─┘
           t1        t2
           └────┬────┘
               sum

* bundles -- small trees whose top nothing depends on (outputs only), and small trees into
  which nothing flows (sources, such as the random chunks that ``x + x.T`` reads twice), are
  bundled, in order and per class, up to ``bundle_weight``: 1,000 independent chains become a
  few Ray tasks. A group with no outputs to other groups, or no inputs from them, cannot be on a
  cycle of groups.

Linear chains are trees with one child per node. Nodes of different ``classes`` (annotations,
Ray options) are never grouped together, and a ``BLOCK_FUSION`` flag keeps a node alone.
``group_weight <= 1`` turns fusion off (one group per node). Groups are then numbered by a
topological sort of the group graph (Kahn's algorithm, earliest member first), members keep
``order``, and each group lists its external inputs and its outputs.
"""

from cpython.array cimport array, clone, resize
from cpython.dict cimport PyDict_GetItemWithError
from cpython.long cimport PyLong_AsLongLong
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.ref cimport PyObject
from libc.string cimport memset

from ._common import (
    BLOCK_FUSION,
    CLUSTER_FANOUT,
    Plan,
    cycle_error,
    invalid_key_error,
    missing_dependency_error,
)

__all__ = ["intern", "plan"]

ctypedef long long i64


cdef extern from *:
    """
    /* Reuse the hashes that a dict or set already stores for its keys: on 10^6 keys (tuples,
       whose hashes Python never caches) rehashing costs more than the rest of interning.
       These calls are CPython's own; 3.13 no longer exports the first three, so there the
       plain path runs. */
    #if PY_VERSION_HEX < 0x030D0000
    #define DR_KNOWN_HASH 1
    static int dr_dict_next(PyObject *d, Py_ssize_t *pos, PyObject **key, Py_hash_t *hash) {
        return _PyDict_Next(d, pos, key, NULL, hash);
    }
    static int dr_set_next(PyObject *s, Py_ssize_t *pos, PyObject **key, Py_hash_t *hash) {
        return _PySet_NextEntry(s, pos, key, hash);
    }
    static int dr_dict_set(PyObject *d, PyObject *key, PyObject *value, Py_hash_t hash) {
        return _PyDict_SetItem_KnownHash(d, key, value, hash);
    }
    #else
    #define DR_KNOWN_HASH 0
    static int dr_dict_next(PyObject *d, Py_ssize_t *pos, PyObject **key, Py_hash_t *hash) {
        return 0;
    }
    static int dr_set_next(PyObject *s, Py_ssize_t *pos, PyObject **key, Py_hash_t *hash) {
        return 0;
    }
    static int dr_dict_set(PyObject *d, PyObject *key, PyObject *value, Py_hash_t hash) {
        return PyDict_SetItem(d, key, value);
    }
    #endif
    """
    bint DR_KNOWN_HASH
    int dr_dict_next(object d, Py_ssize_t *pos, PyObject **key, Py_hash_t *hash)
    int dr_set_next(object s, Py_ssize_t *pos, PyObject **key, Py_hash_t *hash)
    int dr_dict_set(object d, object key, object value, Py_hash_t hash) except -1
    PyObject *_PyDict_GetItem_KnownHash(object d, PyObject *key, Py_hash_t hash) except? NULL
    dict _PyDict_NewPresized(Py_ssize_t minused)

cdef array _I64 = array("q")


cdef inline array _new(Py_ssize_t n, bint zero=True):
    return clone(_I64, n, zero)


cdef class _Buf:
    """A malloc'ed int64 scratch array freed with its owner."""
    cdef i64 *p
    cdef Py_ssize_t n

    def __cinit__(self, Py_ssize_t n, i64 fill):
        cdef Py_ssize_t i
        self.n = n
        self.p = <i64 *> PyMem_Malloc(max(n, 1) * sizeof(i64))
        if self.p == NULL:
            raise MemoryError()
        if fill == 0:
            memset(self.p, 0, max(n, 1) * sizeof(i64))
        else:
            for i in range(n):
                self.p[i] = fill

    def __dealloc__(self):
        PyMem_Free(self.p)


cdef void _sort_row(i64 *a, Py_ssize_t n) noexcept nogil:
    # insertion sort: dask rows are short (a handful of dependencies)
    cdef Py_ssize_t i, j
    cdef i64 x
    for i in range(1, n):
        x = a[i]
        j = i - 1
        while j >= 0 and a[j] > x:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = x


cdef dict _known_hash_index(list names, object source):
    # key -> id from ``source``'s stored hashes; None unless its keys are ``names``, in order
    cdef Py_ssize_t n = len(names)
    if type(source) is not dict or len(<dict> source) != n:
        return None
    cdef dict index = _PyDict_NewPresized(n)
    cdef Py_ssize_t pos = 0
    cdef Py_ssize_t i = 0
    cdef PyObject *kp
    cdef Py_hash_t h
    while dr_dict_next(source, &pos, &kp, &h):
        if kp != <PyObject *> names[i]:
            return None
        dr_dict_set(index, <object> kp, i, h)
        i += 1
    return index


cdef void _missing(dict missing, object d, Py_ssize_t i) except *:
    # remember that node i needs the absent key d (once per node)
    cdef list who = missing.setdefault(d, [])
    if not who or who[len(who) - 1] != i:
        who.append(i)


def intern(list names, deps, source=None):
    """Intern keys to dense ids and build the dependency CSR.

    Parameters
    ----------
    names : list
        ``names[i]`` is the key of node ``i``.
    deps : sequence
        ``deps[i]`` iterates the keys node ``i`` depends on.
    source : dict, optional
        A dict whose keys are ``names``, in the same order (the graph mapping they came from):
        its stored hashes are reused instead of hashing every key again.

    Returns
    -------
    (index, indptr, indices)
        ``index`` maps key -> id; node ``i`` depends on ``indices[indptr[i]:indptr[i+1]]``.

    Examples
    --------
    >>> index, indptr, indices = intern(["x", "y"], [(), ("x",)])
    >>> index, list(indptr), list(indices)
    ({'x': 0, 'y': 1}, [0, 0, 1], [0])
    """
    cdef Py_ssize_t n = len(names)
    cdef Py_ssize_t i, k, r, e, start
    cdef dict index
    cdef dict missing = {}
    cdef object key, d
    cdef PyObject *j
    cdef list who
    cdef list deps_l = deps if type(deps) is list else list(deps)
    if len(deps_l) != n:
        raise ValueError(f"names and deps differ in length: {n} != {len(deps_l)}")
    index = _known_hash_index(names, source) if DR_KNOWN_HASH and source is not None else None
    if index is None:
        try:
            index = dict(zip(names, range(n)))
        except TypeError:
            index = {}
            for i in range(n):
                key = names[i]
                try:
                    index[key] = i
                except TypeError:
                    raise invalid_key_error(key, "it is not hashable") from None
    cdef Py_ssize_t total = 0
    cdef object row
    for i in range(n):
        row = deps_l[i]
        try:
            total += len(row)
        except TypeError:  # an iterator: take it as a tuple (in a copy of the caller's list)
            if deps_l is deps:
                deps_l = list(deps_l)
            deps_l[i] = row = tuple(row)
            total += len(row)
    cdef array indptr = _new(n + 1)
    cdef array indices = _new(total, False)
    cdef i64 *ind = indices.data.as_longlongs
    cdef Py_ssize_t spos
    cdef PyObject *kp
    cdef Py_hash_t h
    e = 0
    for i in range(n):
        start = e
        row = deps_l[i]
        if DR_KNOWN_HASH and (type(row) is frozenset or type(row) is set):
            spos = 0
            while dr_set_next(row, &spos, &kp, &h):  # a set stores its keys' hashes
                j = _PyDict_GetItem_KnownHash(index, kp, h)
                if j == NULL:
                    _missing(missing, <object> kp, i)
                else:
                    ind[e] = PyLong_AsLongLong(<object> j)
                    e += 1
        else:
            for d in row:
                try:
                    j = PyDict_GetItemWithError(index, d)
                except TypeError:
                    raise invalid_key_error(d, f"it is not hashable (a dependency of {names[i]!r})") from None
                if j == NULL:
                    _missing(missing, d, i)
                else:
                    ind[e] = PyLong_AsLongLong(<object> j)
                    e += 1
        _sort_row(ind + start, e - start)
        # drop repeats in place
        if e - start > 1:
            k = start + 1
            for r in range(start + 1, e):
                if ind[r] != ind[k - 1]:
                    ind[k] = ind[r]
                    k += 1
            e = k
        indptr.data.as_longlongs[i + 1] = e
    if missing:
        key, who = next(iter(missing.items()))
        raise missing_dependency_error(key, [names[r] for r in who])
    resize(indices, e)
    return index, indptr, indices


cdef array _as_i64(object seq, Py_ssize_t n, i64 default, str what):
    cdef array a
    cdef Py_ssize_t i
    if seq is None:
        a = _new(n, default == 0)
        if default != 0:
            for i in range(n):
                a.data.as_longlongs[i] = default
        return a
    if isinstance(seq, array) and (<array> seq).ob_descr.typecode == b"q":
        a = <array> seq
    else:
        a = array("q", seq)
    if len(a) != n:
        raise ValueError(f"{what} must have {n} entries, got {len(a)}")
    return a


def plan(list names, indptr_in, indices_in, targets, weights=None, classes=None, flags=None,
         i64 group_weight=1, Py_ssize_t split_fanout=2, i64 bundle_weight=0, priorities=None,
         i64 cluster_fanout=CLUSTER_FANOUT):
    """Order, cull and fuse a graph into groups.

    Parameters
    ----------
    names : list
        The keys (``Plan.names``).
    indptr_in, indices_in : array
        The dependency CSR from :func:`intern`.
    targets : iterable of int
        Ids of the requested keys.
    weights, classes, flags : sequence of int, optional
        Per node: estimated cost (default: 1 + its number of dependencies), fusion class (nodes of different classes never
        share a group; default 0) and ``BLOCK_FUSION``/``DATA_PRODUCER`` bits.
    group_weight : int
        Target weight of a group; ``<= 1`` disables fusion.
    split_fanout : int
        Minimum number of single-dependency dependents that make a split group.
    bundle_weight : int
        Target weight of a bundle of small sink or source trees (``<= 0``: ``group_weight``).
    priorities : sequence of int, optional
        Per node (dask's ``priority`` annotation): among groups ready at the same point of the
        group order, those holding a higher priority come first.
    cluster_fanout : int
        Largest number of dependents of an input shared in a cluster (``< 2``: no clusters).

    Returns
    -------
    Plan

    Examples
    --------
    >>> index, indptr, indices = intern(["x", "y", "z"], [(), ("x",), ("y",)])
    >>> p = plan(["x", "y", "z"], indptr, indices, [2], group_weight=10)
    >>> list(p.order), p.ngroups, list(p.outputs)
    ([0, 1, 2], 1, [2])
    """
    cdef Py_ssize_t n = len(names)
    if bundle_weight <= 0:
        bundle_weight = group_weight
    cdef array indptr_a = _as_i64(indptr_in, n + 1, 0, "indptr")
    cdef array indices_a = _as_i64(indices_in, len(indices_in), 0, "indices")
    cdef i64 *indptr = indptr_a.data.as_longlongs
    cdef i64 *indices = indices_a.data.as_longlongs
    targets = list(targets)
    cdef array tgt = _as_i64(targets, len(targets), 0, "targets")
    cdef Py_ssize_t nt = len(tgt)
    cdef Py_ssize_t i, q, m, top
    cdef i64 t, u, v, p, c, d, g, h, s, w, cnt, total, bh, bt, bw, sh
    for i in range(nt):
        t = tgt.data.as_longlongs[i]
        if not 0 <= t < n:
            raise IndexError(f"target id {t} out of range for {n} nodes")
    cdef array weights_a
    if weights is None:  # default cost: 1 + number of dependencies
        weights_a = _new(n, False)
        for i in range(n):
            weights_a.data.as_longlongs[i] = 1 + indptr[i + 1] - indptr[i]
    else:
        weights_a = _as_i64(weights, n, 1, "weights")
    cdef array classes_a = _as_i64(classes, n, 0, "classes")
    cdef array flags_a = _as_i64(flags, n, 0, "flags")
    cdef i64 *wt = weights_a.data.as_longlongs
    cdef i64 *kl = classes_a.data.as_longlongs
    cdef i64 *fl = flags_a.data.as_longlongs
    cdef i64 BLOCK = BLOCK_FUSION

    # 1. order: iterative depth-first post-order from the targets
    cdef _Buf state_b = _Buf(n, 0)
    cdef _Buf pos_b = _Buf(n, 0)
    cdef _Buf stack_b = _Buf(n, 0)
    cdef i64 *state = state_b.p
    cdef i64 *pos = pos_b.p
    cdef i64 *stack = stack_b.p
    cdef array order = _new(n, False)
    cdef i64 *od = order.data.as_longlongs
    m = 0
    for i in range(nt):
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
                od[m] = u
                m += 1
    resize(order, m)
    od = order.data.as_longlongs

    # 2. dependents among the needed nodes (CSR)
    cdef _Buf dcount_b = _Buf(n, 0)
    cdef _Buf dptr_b = _Buf(n + 1, 0)
    cdef i64 *dcount = dcount_b.p
    cdef i64 *dptr = dptr_b.p
    for i in range(m):
        u = od[i]
        for p in range(indptr[u], indptr[u + 1]):
            dcount[indices[p]] += 1
    for i in range(n):
        dptr[i + 1] = dptr[i] + dcount[i]
    cdef _Buf fill_b = _Buf(n, 0)
    cdef i64 *fill = fill_b.p
    for i in range(n):
        fill[i] = dptr[i]
    cdef _Buf depof_b = _Buf(dptr[n], 0)
    cdef i64 *dep_of = depof_b.p
    for i in range(m):
        u = od[i]
        for p in range(indptr[u], indptr[u + 1]):
            v = indices[p]
            dep_of[fill[v]] = u
            fill[v] += 1

    # 3. fusion into tentative groups
    cdef _Buf gid_b = _Buf(n, -1)
    cdef _Buf split_b = _Buf(n, 0)
    cdef _Buf parent_b = _Buf(n, -1)
    cdef i64 *gid = gid_b.p
    cdef i64 *head_of_split = split_b.p
    cdef i64 *parent = parent_b.p
    cdef i64 ng = 0
    cdef bint fuse = group_weight > 1
    if fuse and split_fanout >= 2:
        for i in range(m):
            s = od[i]
            if gid[s] != -1 or fl[s] & BLOCK:
                continue
            cnt = 0
            for q in range(dptr[s], dptr[s + 1]):
                if _solo(dep_of[q], s, indptr, gid, kl, fl, BLOCK):
                    cnt += 1
            if cnt < split_fanout:
                continue
            gid[s] = ng
            head_of_split[s] = 1
            w = wt[s]
            for q in range(dptr[s], dptr[s + 1]):
                if w >= group_weight:
                    break
                d = dep_of[q]
                if _solo(d, s, indptr, gid, kl, fl, BLOCK):
                    gid[d] = ng
                    w += wt[d]
            ng += 1

    if fuse and cluster_fanout >= 2:
        ng = _clusters(cluster_fanout, n, m, od, indptr, indices, dcount, wt, kl, fl, BLOCK, gid,
                       ng, group_weight, bundle_weight)

    if fuse:
        for i in range(m):
            u = od[i]
            if dcount[u] != 1 or gid[u] != -1 or fl[u] & BLOCK:
                continue
            d = dep_of[dptr[u]]
            if (gid[d] == -1 or head_of_split[d]) and kl[d] == kl[u] and not fl[d] & BLOCK:
                parent[u] = d

    cdef _Buf nxt_b = _Buf(n, -1)
    cdef _Buf tail_b = _Buf(n, -1)
    cdef _Buf pend_b = _Buf(n, 0)
    cdef _Buf ext_b = _Buf(n, 0)
    cdef i64 *nxt = nxt_b.p
    cdef i64 *tail = tail_b.p
    cdef i64 *pend_w = pend_b.p
    cdef i64 *ext = ext_b.p
    cdef dict bin_head = {}
    cdef dict bin_tail = {}
    cdef dict bin_w = {}
    cdef bint x, bx
    cdef tuple bkey

    for i in range(m):
        u = od[i]
        if gid[u] != -1 and not head_of_split[u]:
            continue
        total = wt[u]
        x = False
        for p in range(indptr[u], indptr[u + 1]):
            c = indices[p]
            if parent[c] == u:
                total += pend_w[c]
            else:
                x = True
        tail[u] = u
        if total > group_weight:
            bh = -1
            bt = -1
            bw = 0
            bx = False
            for p in range(indptr[u], indptr[u + 1]):
                c = indices[p]
                if parent[c] != u:
                    continue
                if pend_w[c] >= group_weight:
                    ng = _close(gid, nxt, c, ng)
                    x = True
                    continue
                if bh != -1 and bw + pend_w[c] > group_weight:  # c would overfill the bin
                    ng = _close(gid, nxt, bh, ng)
                    x = True
                    bh = -1
                    bt = -1
                    bw = 0
                    bx = False
                if bh == -1:
                    bh = c
                else:
                    nxt[bt] = c
                bt = tail[c]
                bw += pend_w[c]
                bx = bx or ext[c] != 0
                if bw >= group_weight:
                    ng = _close(gid, nxt, bh, ng)
                    x = True
                    bh = -1
                    bt = -1
                    bw = 0
                    bx = False
            if bh != -1 and 2 * bw >= group_weight:
                # half a group or more left over: its own group. Carried up, it would wait
                # for the groups just closed below u although nothing in it needs them
                ng = _close(gid, nxt, bh, ng)
                x = True
                bh = -1
                bw = 0
                bx = False
            if bh != -1:
                nxt[u] = bh
                tail[u] = bt
            pend_w[u] = wt[u] + bw
            ext[u] = x or bx
        else:
            for p in range(indptr[u], indptr[u + 1]):
                c = indices[p]
                if parent[c] == u:
                    nxt[tail[u]] = c
                    tail[u] = tail[c]
                    x = x or ext[c] != 0
            pend_w[u] = total
            ext[u] = x
        if parent[u] != -1:
            continue
        if head_of_split[u]:
            h = nxt[u]
            while h != -1:
                gid[h] = gid[u]
                h = nxt[h]
        elif (fuse and pend_w[u] < bundle_weight and (dcount[u] == 0 or not ext[u])
                and not fl[u] & BLOCK):
            # bundle: small sink pieces (nothing depends on them) or small source pieces
            # (nothing flows into them), per class
            bkey = (kl[u], dcount[u] != 0)
            if bkey in bin_head and bin_w[bkey] + pend_w[u] > bundle_weight:  # would overfill
                sh = bin_head.pop(bkey)
                ng = _close(gid, nxt, sh, ng)
            if bkey in bin_head:
                nxt[<i64> bin_tail[bkey]] = u
                bin_w[bkey] += pend_w[u]
            else:
                bin_head[bkey] = u
                bin_w[bkey] = pend_w[u]
            bin_tail[bkey] = tail[u]
            if bin_w[bkey] >= bundle_weight:
                sh = bin_head.pop(bkey)
                ng = _close(gid, nxt, sh, ng)
        else:
            ng = _close(gid, nxt, u, ng)
    for bkey in sorted(bin_head):
        sh = bin_head[bkey]
        ng = _close(gid, nxt, sh, ng)

    # 4. number the groups in a topological order of the groups (Kahn), earliest first
    cdef _Buf first_b = _Buf(ng, m)
    cdef _Buf gdeg_b = _Buf(ng, 0)
    cdef _Buf gcount_b = _Buf(ng + 1, 0)
    cdef i64 *first = first_b.p
    cdef i64 *gdeg = gdeg_b.p
    cdef i64 *gcount = gcount_b.p
    for i in range(m):
        g = gid[od[i]]
        if first[g] == m:
            first[g] = i
    for i in range(m):
        v = od[i]
        g = gid[v]
        for p in range(indptr[v], indptr[v + 1]):
            h = gid[indices[p]]
            if h != g:
                gcount[h + 1] += 1
                gdeg[g] += 1
    for g in range(ng):
        gcount[g + 1] += gcount[g]
    cdef _Buf gfill_b = _Buf(ng, 0)
    cdef i64 *gfill = gfill_b.p
    for g in range(ng):
        gfill[g] = gcount[g]
    cdef _Buf gsucc_b = _Buf(gcount[ng], 0)
    cdef i64 *gsucc = gsucc_b.p
    for i in range(m):
        v = od[i]
        g = gid[v]
        for p in range(indptr[v], indptr[v + 1]):
            h = gid[indices[p]]
            if h != g:
                gsucc[gfill[h]] = g
                gfill[h] += 1
    cdef _Buf newid_b = _Buf(ng, -1)
    cdef i64 *newid = newid_b.p
    cdef _Buf heap_b = _Buf(ng, 0)  # binary min-heap of groups keyed by key[]
    cdef i64 *heap = heap_b.p
    cdef Py_ssize_t hn = 0
    cdef i64 done = 0
    cdef i64 *key = first
    cdef _Buf rank_b
    cdef list gprio
    if priorities is not None:  # a group's priority is its members' highest; higher first
        if len(priorities) != n:
            raise ValueError(f"priorities must have {n} entries, got {len(priorities)}")
        gprio = [None] * ng
        for i in range(m):
            v = od[i]
            g = gid[v]
            if gprio[g] is None or priorities[v] > gprio[g]:
                gprio[g] = priorities[v]
        rank_b = _Buf(ng, 0)
        key = rank_b.p
        for i, g in enumerate(sorted(range(ng), key=lambda g: (-gprio[g], first[g]))):
            key[g] = i
    for g in range(ng):
        if gdeg[g] == 0:
            hn = _heap_push(heap, hn, key, g)
    while hn > 0:
        g = heap[0]
        hn = _heap_pop(heap, hn, key)
        newid[g] = done
        done += 1
        for q in range(gcount[g], gcount[g + 1]):
            h = gsucc[q]
            gdeg[h] -= 1
            if gdeg[h] == 0:
                hn = _heap_push(heap, hn, key, h)
    if done != ng:
        raise RuntimeError("daskray internal error: fused groups form a cycle; please report this graph")

    # 5. the plan's CSR arrays
    cdef array group_of = _new(n, False)
    cdef i64 *gof = group_of.data.as_longlongs
    for i in range(n):
        gof[i] = -1
    cdef array members_ptr = _new(ng + 1)
    cdef i64 *mptr = members_ptr.data.as_longlongs
    for i in range(m):
        v = od[i]
        g = newid[gid[v]]
        gof[v] = g
        mptr[g + 1] += 1
    for g in range(ng):
        mptr[g + 1] += mptr[g]
    cdef array members = _new(m, False)
    cdef i64 *mem = members.data.as_longlongs
    for g in range(ng):
        gfill[g] = mptr[g]
    for i in range(m):
        v = od[i]
        g = gof[v]
        mem[gfill[g]] = v
        gfill[g] += 1
    cdef _Buf is_target_b = _Buf(n, 0)
    cdef i64 *is_target = is_target_b.p
    for i in range(nt):
        is_target[tgt.data.as_longlongs[i]] = 1
    cdef _Buf seen_b = _Buf(n, -1)
    cdef i64 *seen = seen_b.p
    cdef array inputs_ptr = _new(ng + 1)
    cdef array outputs_ptr = _new(ng + 1)
    cdef array inputs = _new(m, False)
    cdef array outputs = _new(m, False)
    cdef i64 ni = 0, no = 0, icap = m
    cdef bint out
    for g in range(ng):
        for i in range(mptr[g], mptr[g + 1]):
            v = mem[i]
            for p in range(indptr[v], indptr[v + 1]):
                u = indices[p]
                if gof[u] != g and seen[u] != g:
                    seen[u] = g
                    if ni == icap:
                        icap = icap * 2 + 16
                        resize(inputs, icap)
                    inputs.data.as_longlongs[ni] = u
                    ni += 1
            out = is_target[v] != 0
            if not out:
                for q in range(dptr[v], dptr[v + 1]):
                    if gof[dep_of[q]] != g:
                        out = True
                        break
            if out:
                outputs.data.as_longlongs[no] = v
                no += 1
        inputs_ptr.data.as_longlongs[g + 1] = ni
        outputs_ptr.data.as_longlongs[g + 1] = no
    resize(inputs, ni)
    resize(outputs, no)
    return Plan(names, order, group_of, ng, members_ptr, members, inputs_ptr, inputs,
                outputs_ptr, outputs)


cdef inline i64 _find(i64 *up, i64 a) noexcept:
    # union-find root, halving the path
    while up[a] != a:
        up[a] = up[up[a]]
        a = up[a]
    return a


cdef i64 _clusters(i64 fanout, Py_ssize_t n, Py_ssize_t m, i64 *od, i64 *indptr, i64 *indices,
                   i64 *dcount, i64 *wt, i64 *kl, i64 *fl, i64 block, i64 *gid, i64 ng,
                   i64 group_weight, i64 bundle_weight) except -1:
    # clusters: see the module docstring; assigns gid to the members of convex clusters and
    # returns the new group count
    cdef _Buf up_b = _Buf(n, 0)
    cdef _Buf cw_b = _Buf(n, 0)
    cdef _Buf incl_b = _Buf(n, 0)
    cdef _Buf rank_b = _Buf(n, -1)
    cdef _Buf roots_b = _Buf(fanout + 1, 0)
    cdef i64 *up = up_b.p
    cdef i64 *cw = cw_b.p
    cdef i64 *incl = incl_b.p
    cdef i64 *rank = rank_b.p
    cdef i64 *roots = roots_b.p
    cdef Py_ssize_t i, j, nr
    cdef i64 d, k, c, p, r, rd, rv, u, v, x, total, root, g
    cdef bint ok, seen
    for i in range(n):
        up[i] = i
        cw[i] = wt[i]
    for i in range(m):
        rank[od[i]] = i
    for i in range(m):
        d = od[i]
        k = indptr[d + 1] - indptr[d]
        if k == 0 or k > fanout or gid[d] != -1 or fl[d] & block:
            continue
        c = kl[d]
        ok = True
        for p in range(indptr[d], indptr[d + 1]):
            r = indices[p]
            if gid[r] != -1 or fl[r] & block or kl[r] != c or dcount[r] < 2 or dcount[r] > fanout:
                ok = False
                break
        if not ok:
            continue
        rd = _find(up, d)
        roots[0] = rd
        nr = 1
        total = cw[rd]
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
        if total > group_weight:
            continue
        for j in range(1, nr):
            up[roots[j]] = rd
        cw[rd] = total
        incl[d] = 1
        for p in range(indptr[d], indptr[d + 1]):
            incl[indices[p]] = 1
    for i in range(m):  # chains below a member: one dependency, the member's only dependent
        u = od[i]
        if incl[u] or gid[u] != -1 or fl[u] & block or indptr[u + 1] - indptr[u] != 1:
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

    # convex: every outside dependency comes before the cluster's first member in the order
    cdef _Buf first_b = _Buf(n, -1)
    cdef _Buf src_b = _Buf(n, 0)
    cdef _Buf bad_b = _Buf(n, 0)
    cdef _Buf cgid_b = _Buf(n, -1)
    cdef i64 *first = first_b.p
    cdef i64 *src = src_b.p
    cdef i64 *bad = bad_b.p
    cdef i64 *cgid = cgid_b.p
    for i in range(m):
        u = od[i]
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
    cdef dict bin_gid = {}
    cdef dict bin_w = {}
    for i in range(m):
        u = od[i]
        if not incl[u]:
            continue
        root = _find(up, u)
        if bad[root]:
            continue
        g = cgid[root]
        if g == -1:
            if src[root]:  # independent clusters are bundled, per class
                k = kl[u]
                if k in bin_gid and <i64> bin_w[k] + cw[root] > bundle_weight:
                    del bin_gid[k]
                if k not in bin_gid:
                    bin_gid[k] = ng
                    bin_w[k] = 0
                    ng += 1
                g = bin_gid[k]
                bin_w[k] = <i64> bin_w[k] + cw[root]
                if <i64> bin_w[k] >= bundle_weight:
                    del bin_gid[k]
            else:
                g = ng
                ng += 1
            cgid[root] = g
        gid[u] = g
    return ng


cdef inline bint _solo(i64 d, i64 s, i64 *indptr, i64 *gid, i64 *kl, i64 *fl,
                       i64 block) noexcept:
    # d depends on s alone and may join s's split group
    return (indptr[d + 1] - indptr[d] == 1 and gid[d] == -1 and kl[d] == kl[s]
            and not fl[d] & block)


cdef inline i64 _close(i64 *gid, i64 *nxt, i64 h, i64 ng) noexcept:
    while h != -1:
        gid[h] = ng
        h = nxt[h]
    return ng + 1


cdef inline Py_ssize_t _heap_push(i64 *heap, Py_ssize_t hn, i64 *key, i64 g) noexcept:
    cdef Py_ssize_t i = hn, parent
    heap[i] = g
    while i > 0:
        parent = (i - 1) >> 1
        if key[heap[parent]] <= key[heap[i]]:
            break
        heap[parent], heap[i] = heap[i], heap[parent]
        i = parent
    return hn + 1


cdef inline Py_ssize_t _heap_pop(i64 *heap, Py_ssize_t hn, i64 *key) noexcept:
    cdef Py_ssize_t i = 0, l, r, smallest
    hn -= 1
    heap[0] = heap[hn]
    while True:
        l = 2 * i + 1
        r = l + 1
        smallest = i
        if l < hn and key[heap[l]] < key[heap[smallest]]:
            smallest = l
        if r < hn and key[heap[r]] < key[heap[smallest]]:
            smallest = r
        if smallest == i:
            break
        heap[i], heap[smallest] = heap[smallest], heap[i]
        i = smallest
    return hn
