"""daskray's compiled graph core: intern, order, cull and fuse a task graph into a plan.

The core sees a graph as ``names`` (the key objects) and, per key, the keys it depends on. It
knows nothing of Ray or of dask's task objects; ``daskray`` turns dask graphs into that form and
turns the :class:`Plan` into Ray tasks. ``_pure.py`` is a pure-Python twin with the same steps in
the same order (selected by ``DASKRAY_NO_EXTENSIONS=1``); one test suite checks both, and
``tests/golden_plans.json`` holds both to the same plans.

``plan(names, indptr, indices, targets, options)`` runs the steps below in this order, each in
its own file included here, each a function with the name of its twin in ``_pure.py``:

=================  ==============================================================
``intern.pxi``     ``intern``: keys -> ids, the dependency CSR
``order.pxi``      ``_order``: post-order from the targets, cull, cycles
``dependents.pxi`` ``_dependents`` and ``transpose`` (the one CSR transpose)
``split.pxi``      ``_split_groups``: a fan-out runs with its dependents
``clusters.pxi``   ``_clusters``: small groups of nodes sharing inputs
``trees.pxi``      ``_trees``: trees, their packing into groups, bundles
``levels.pxi``     ``_merge_levels``: bands of levels cut into segments
``numbering.pxi``  ``_number_groups``: a topological order of the groups
``csr.pxi``        ``_plan_csr``: members, inputs and outputs of every group
=================  ==============================================================

The steps share one ``_Work`` record (the graph as raw ``int64`` pointers and the state built
so far); every knob comes in one :class:`PlanOptions`. Memory is what a plan of 10^7 nodes runs
out of first (and, on a fresh machine, what it waits for: the first touch of a page costs more
than the work done on it), so a step's scratch lives only as long as the step, node ids in
scratch are ``int32``, all-zero scratch comes from ``calloc`` and stays untouched where a
step writes nothing (state is stored as offsets from zero for that), default weights are
computed, not stored, and the dependents are dropped once the tree walk has read them: the
plan of the 9.5M-task bench graph peaks at about 100 bytes a task over the caller's graph.

Interning
---------
``intern(names, deps)`` maps each key to its position (a dense ``int64`` id) once, at the
boundary -- in a :class:`KeyIndex`, an open-addressing table of 8 bytes a key where a dict
would take about 70 -- and builds the dependency CSR: node ``i`` depends on
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

Dependents
----------
The reverse CSR (who reads each node) counts only the needed nodes, in ``order``. It is one
transpose, :func:`transpose`, also used to number the groups (with nodes mapped to their
groups) and, from Python, to place tasks near their inputs.

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
  hanging below a member join too). Clusters stop growing at ``group_weight``, and at
  ``cluster_fanout`` squared nodes (a few inputs shared by a few readers: past that the
  cluster is a mesh, such as a lattice, and would grow into long sequential blobs); one that
  would read a value computed from its own members (an outside dependency later in the order than
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
``group_weight <= 1`` turns fusion off (one group per node).

Levels and bands
----------------
What the four shapes leave is a graph of groups, acyclic by construction; on DAGs of other
shapes (edges reaching across layers, lattices, halo exchanges) many of its groups hold one
node. Groups at the same *top level* of the group graph (the longest path to them from a group
without inputs) never depend on each other, directly or not: every edge climbs at least one
level, so any merge among the groups of one level keeps the group graph acyclic -- the
level-wise clustering step of acyclic DAG partitioners (Herrmann, Özkaya, Uçar, Kaya,
Çatalyürek, "Multilevel algorithms for acyclic partitioning of directed acyclic graphs", SIAM J.
Sci. Comput. 2019). Their partitioners' other tool is a topological order cut into contiguous
parts: every edge runs forward, so the parts' graph is acyclic too. ``_merge_levels`` does both
at once: the group graph is cut into *bands* of ``h`` levels, walked band by band in a
topological order (earliest first member first), and each band's stretches of one class are
cut into contiguous segments of about equal weight -- at least ``weight / group_weight`` of
them, and up to a cap of segments (``parallelism``, or ``cpus``) as long as each carries a Ray
task's cost (``task_weight``) of work. A band of one level (``h`` = 1) is a level: its groups
are independent, so all groups of one class form one stretch; in taller bands a group of
another class, or one that must stay alone, ends a stretch.

Which ``h`` (1, 2, 4, ... up to the depth of the group graph) and which cap? Each candidate's
groups are list-scheduled (Graham) on ``cpus`` CPUs, each costing ``task_weight`` more than
its members -- and, with ``move_weights`` (a value's estimated bytes, from a profile), what
moving each value it reads from another group costs -- and the one finishing soonest is
kept: Brent's bound (run time <= work / CPUs + the heaviest path) is what the schedule trades,
fewer Ray tasks against a longer heaviest path. A 100 x 100 wavefront lattice of tiny tasks
goes from 1,754 groups in 236 dependent levels (each level packed on its own) to 92 tiles in
44; a random layered DAG of 12,000 tiny tasks from 95 groups to 28. A group holding a
``PACK_ALONE`` node (a heavy value: an exchange's map or reducer), or ``BLOCK_FUSION``, or that
is one ``PASS_THROUGH`` node (an alias, which costs nothing alone), is never packed.

Numbering and the plan
----------------------
Groups are numbered by a topological sort of the group graph (Kahn's algorithm, the group
whose first member comes earliest in ``order`` first, or the highest ``priorities`` first).
Members keep ``order``, and each group lists its external inputs and its outputs: the members
that are targets or feed another group.
"""

from cpython.array cimport array, clone, resize
from cpython.list cimport PyList_GET_ITEM
from cpython.mem cimport PyMem_Calloc, PyMem_Free, PyMem_Malloc
from cpython.object cimport Py_EQ, PyObject_RichCompareBool
from cpython.ref cimport PyObject
from libc.stdint cimport uint64_t

from ._common import (
    BLOCK_FUSION,
    PACK_ALONE,
    PASS_THROUGH,
    Plan,
    PlanOptions,
    checked_targets,
    cycle_error,
    invalid_key_error,
    missing_dependency_error,
    per_node,
)

__all__ = ["intern", "plan", "transpose"]

ctypedef long long i64
ctypedef int i32

cdef i64 BLOCK = BLOCK_FUSION
cdef i64 ALONE = PACK_ALONE
cdef i64 PASS = PASS_THROUGH
cdef array _I64 = array("q")


cdef inline array _new(Py_ssize_t n, bint zero=True):
    return clone(_I64, n, zero)


cdef class _Buf:
    """A malloc'ed int64 scratch array freed with its owner."""
    cdef i64 *p
    cdef Py_ssize_t n

    def __cinit__(self, Py_ssize_t n, i64 fill):
        # zeros come from calloc: a large block is fresh mapped memory, so pages never
        # written (the classes and flags of a graph that has none) take no memory at all
        cdef Py_ssize_t i
        self.n = n
        if fill == 0:
            self.p = <i64 *> PyMem_Calloc(max(n, 1), sizeof(i64))
        else:
            self.p = <i64 *> PyMem_Malloc(max(n, 1) * sizeof(i64))
        if self.p == NULL:
            raise MemoryError()
        if fill != 0:
            for i in range(n):
                self.p[i] = fill

    def __dealloc__(self):
        PyMem_Free(self.p)


cdef class _Ids:
    """A malloc'ed int32 scratch array of node ids (or -1) freed with its owner: half the
    memory of a :class:`_Buf` where a value is an id (graphs stay under 2**31 nodes)."""
    cdef i32 *p

    def __cinit__(self, Py_ssize_t n, i32 fill):
        cdef Py_ssize_t i
        if n >= 0x7FFFFFFF:
            raise OverflowError(f"a graph of {n} nodes is more than int32 ids can number")
        self.p = <i32 *> PyMem_Malloc(max(n, 1) * sizeof(i32))
        if self.p == NULL:
            raise MemoryError()
        for i in range(n):
            self.p[i] = fill

    def __dealloc__(self):
        PyMem_Free(self.p)


cdef class _Work:
    """The graph and the state that ``plan``'s steps share: raw pointers into arrays and
    buffers that ``keep`` holds alive as long as the record."""
    cdef Py_ssize_t n, m
    cdef i64 ng
    cdef i64 *indptr
    cdef i64 *indices
    cdef array order_a
    cdef i64 *order
    cdef i64 *dptr
    cdef i64 *dep_of
    cdef i64 *weights
    cdef i64 *classes
    cdef i64 *flags
    cdef i64 *gid
    cdef i64 *head_of_split
    cdef list keep
    cdef _Buf dptr_b, dep_of_b  # the dependents (``_dependents``), dropped once unneeded

    def __cinit__(self):
        self.keep = []

    cdef void drop_dependents(self, bint ids_only) noexcept:
        # free the dependents' ids (``dep_of``), and with ``ids_only`` false their counts
        self.dep_of_b = None
        self.dep_of = NULL
        if not ids_only:
            self.dptr_b = None
            self.dptr = NULL

    cdef i64 *buf(self, Py_ssize_t n, i64 fill) except NULL:
        # a scratch array of n entries set to fill, alive as long as the record
        cdef _Buf b = _Buf(n, fill)
        self.keep.append(b)
        return b.p

    cdef i64 *hold(self, array a) except? NULL:
        # a's data, alive as long as the record
        self.keep.append(a)
        return a.data.as_longlongs

    cdef i64 *node_values(self, object values, str what, i64 fill) except? NULL:
        # per-node values checked to n entries, or n entries set to fill when None
        if values is None:
            return self.buf(self.n, fill)
        return self.hold(per_node(values, self.n, what))


cdef inline i64 _weight(_Work w, i64 u) noexcept:
    # the weight of node u: given, or 1 + its number of dependencies
    if w.weights != NULL:
        return w.weights[u]
    return 1 + w.indptr[u + 1] - w.indptr[u]


include "intern.pxi"
include "order.pxi"
include "dependents.pxi"
include "split.pxi"
include "clusters.pxi"
include "trees.pxi"
include "levels.pxi"
include "numbering.pxi"
include "csr.pxi"


def plan(list names, indptr, indices, targets, options=None):
    """Order, cull and fuse a graph into groups.

    Parameters
    ----------
    names : list
        The keys (``Plan.names``).
    indptr, indices : array
        The dependency CSR from :func:`intern`.
    targets : iterable of int
        Ids of the requested keys.
    options : PlanOptions, optional
        How to fuse (group weights, fan-outs, per-node weights, classes, flags, priorities);
        the default fuses nothing.

    Returns
    -------
    Plan

    Examples
    --------
    >>> from daskray._graph import PlanOptions
    >>> index, indptr, indices = intern(["x", "y", "z"], [(), ("x",), ("y",)])
    >>> p = plan(["x", "y", "z"], indptr, indices, [2], PlanOptions(group_weight=10))
    >>> list(p.order), p.ngroups, list(p.outputs)
    ([0, 1, 2], 1, [2])
    """
    opts = PlanOptions() if options is None else options
    cdef Py_ssize_t n = len(names), i
    cdef _Work w = _Work()
    w.n = n
    w.indptr = w.hold(per_node(indptr, n + 1, "indptr"))
    w.indices = w.hold(per_node(indices, len(indices), "indices"))
    cdef array tgt = checked_targets(targets, n)
    if opts.weights is not None:  # else NULL: 1 + number of dependencies (_weight)
        w.weights = w.node_values(opts.weights, "weights", 0)
    w.classes = w.node_values(opts.classes, "classes", 0)
    w.flags = w.node_values(opts.flags, "flags", 0)
    cdef list priorities = per_node(opts.priorities, n, "priorities", typed=False)
    cdef i64 group_weight = opts.group_weight
    cdef i64 bundle_weight = opts.bundle_weight if opts.bundle_weight > 0 else group_weight
    cdef bint fuse = group_weight > 1

    _t("start")
    _order(w, names, tgt)
    _t("order")
    _dependents(w)
    _t("dependents")
    w.gid = w.buf(n, -1)
    w.head_of_split = w.buf(n, 0)
    w.ng = 0
    if fuse and opts.split_fanout >= 2:
        _split_groups(w, opts.split_fanout, group_weight)
    if fuse and opts.cluster_fanout >= 2:
        _clusters(w, opts.cluster_fanout, group_weight, bundle_weight)
    _t("split+clusters")
    _trees(w, fuse, group_weight, bundle_weight)
    w.drop_dependents(False)  # no later step reads them: the plan's peak of memory is past
    _t("trees")
    cdef i64 *moves = NULL
    if fuse and opts.parallelism > 0:
        if opts.move_weights is not None:
            moves = w.node_values(opts.move_weights, "move_weights", 0)
        _merge_levels(w, opts.parallelism, group_weight,
                      opts.cpus if opts.cpus > 0 else opts.parallelism, opts.task_weight, moves)
    _t("levels")
    cdef _Buf newid = _number_groups(w, priorities)
    _t("number")
    r = _plan_csr(w, names, newid.p, tgt)
    _t("csr")
    return r

TRACE = None
def _t(what):
    if TRACE is not None:
        TRACE(what)
