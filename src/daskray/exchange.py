"""Exchange: dask's ``tasks`` shuffle, recognised in the graph and run as one all-to-all.

dask's tasks shuffle (dask-expr's ``TaskShuffle``, what ``daskray.enable()`` selects for
``shuffle``, ``set_index``, ``sort_values``, hash ``merge`` and ``groupby(split_out=...)``)
moves data in ``s = ceil(log_32 n)`` stages so that the task count stays below ``n^2``: per
stage, every partition is split into ``k`` pieces (``group-*`` tasks returning dicts, then
``split-*`` getitems) and every stage output concatenates ``k`` of them (``_concat``). Every
stage moves the whole dataset once more; on Ray each move is ``n k`` objects written to the
object store and, beyond memory, spilled and restored.

Here the stages collapse into one exchange, the shape of Exoshuffle's push-based shuffle and of
dask distributed's P2P shuffle -- map tasks with one return per reducer, the data moving once::

    map j        map_pieces(b input partitions): dask's own ``shuffle_group`` on each, its
                 rows cut once into one piece per output partition (``num_returns``)
    piece j, o   getitem: the Ray object holding map j's rows for output o
    output o     reduce_pieces(piece 0, o ... piece n/b - 1, o): concatenated in input order

``n/b + m`` tasks and ``(n/b) m`` pieces. Each output partition is exactly dask's: the rows of
the input partitions, in input order (the staged shuffle concatenates in that order too: stage
``t`` orders its inputs by digit ``t`` of the input index, so after the last stage the most
significant digit sorts first). The output keys keep their names, so whatever consumes them
(``set_index``'s sorts, a merge's joins) is untouched.

**Sizes.** Ray spends about a millisecond of CPU per object in all (created, tracked by the
driver that owns it, spilled, restored), so pieces cost more than their bytes when they are
many: past ``daskray.exchange.max-pieces`` a map takes ``b`` input partitions, as many as
bring the pieces back there but no more than ``daskray.exchange.map-bytes`` of them (a map
holds its batch in memory). A reducer takes one output partition only: Ray holds a task's
arguments in its object store together, and beyond memory that store is what is short. The
partition size comes from literal data the inputs are computed from (``from_pandas``), else
from a probe: the first input's source task (``from_map``'s function, a file reader), run once
in the driver and measured (:func:`partition_bytes`); else ``daskray.exchange.partition-bytes``.

**Maps make their own partitions.** When the partitions are over
``daskray.exchange.heavy-bytes``, the tasks that make a map's input partitions and are read by
nothing else (the partition's cone: a ``from_map`` source, dask-expr's string conversion,
``set_index``'s partitioning column and the ``assign`` of it -- a diamond no tree fusion takes)
are inlined into the map with dask's ``Task.fuse`` (:func:`_cone`): a partition goes from its
source to its pieces inside one Ray task, never written to the object store whole (beyond
memory, each value written there is spilled and restored once more). Requested and annotated
keys, and tasks read by anything outside the cone, stay tasks of their own.

**Heavy or light.** An exchange is heavy when its partitions are over
``daskray.exchange.heavy-bytes`` and all it moves is over half the cluster's object store (or
the store is not known: ``debug=True``): every map and every reducer is then its own Ray task
(:mod:`daskray.planning` flags them ``PACK_ALONE`` and weighs them over half a group, the
pieces nothing, so a map runs with its pieces as one multi-output task, a reducer with the
chain reading its output, and no two of them share a task). A light one is fused as any other
tasks: what fits in memory is not worth a Ray task per partition. dask's tasks rechunk is an
all-to-all already and is weighed the same way, without a rewrite.

**Joins.** Beyond memory, the tasks joining the outputs of two exchanges (a merge's) are Ray
tasks of their own (else they would fuse into the one task reading all of them), and the
reducers feeding them run in a window -- ``K`` at a time, each waiting for a token of the one
``K`` places before it (``daskray.exchange.reduce-window``; by default one per eighth of the
object store an output fills, :func:`window`). Ray pulls the arguments of every queued task
into the store and pins them, and a store full of pinned pieces makes each new output wait
out Ray's grace period (about 2 s) before it goes to a file (:func:`_exchanges`).

A shuffle whose intermediate keys something else depends on or is requested, or that does not
have the shape described above, is left as dask built it.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import dask
from dask.sizeof import sizeof

from ._compat import (
    DataNode,
    Task,
    TaskRef,
    execute_subgraph,
    frame_concat,
    rechunk_concat_function,
    rechunk_split_function,
    shuffle_group_function,
)


@dataclass
class _Stage:
    """The ``group-{name}`` tasks of one stage of a staged shuffle."""

    name: str
    stage: int
    spec: tuple  # (cols, k, npartitions_input, ignore_index, nfinal)
    groups: dict = field(default_factory=dict)  # input label -> (group key, source key)
    prev: str | None = None  # the stage feeding this one


@dataclass
class Exchange:
    """One recognised shuffle: its real inputs in order, its outputs and their target parts."""

    stages: list  # _Stage, first to last
    inputs: list  # source keys, in input-partition order
    outputs: list  # (output key, target partition), by target
    internal: set  # every key the exchange replaces

    @property
    def spec(self) -> tuple:
        return self.stages[-1].spec


def _index(label: Any, k: int) -> int:
    """The partition index of a stage label: an int, or a tuple of base-``k`` digits."""
    if isinstance(label, tuple):
        return sum(d * k**j for j, d in enumerate(label))
    return label


def _stages(names: list, nodes: list, group_fn: Any) -> dict:
    stages: dict[str, _Stage] = {}
    for key, node in zip(names, nodes):
        if type(node) is not Task or node.func is not group_fn:
            continue
        args = node.args
        deps = node.dependencies
        if not (isinstance(key, tuple) and len(key) == 2 and len(args) == 8 and len(deps) == 1):
            continue
        if not (isinstance(key[0], str) and key[0].startswith("group-")):
            continue
        _, _, cols, stage, k, nin, ignore, nfinal = args
        if not isinstance(cols, (str, list, tuple)):
            continue
        spec = (cols, k, nin, ignore, nfinal)
        st = stages.setdefault(key[0][6:], _Stage(key[0][6:], stage, spec))
        if st.spec != spec or st.stage != stage:
            st.stage = -1  # inconsistent: not a stage dask built
        st.groups[key[1]] = (key, next(iter(deps)))
    return stages


def _is_pad(src: Any, group_key: tuple) -> bool:
    return isinstance(src, tuple) and len(src) == 3 and src[:2] == group_key and src[2] == "empty"


def _chains(stages: dict) -> list[list[_Stage]]:
    """Stages linked first to last; a chain whose stage numbers are not 0..s-1 is dropped."""
    fed: set[str] = set()
    for st in stages.values():
        names = {src[0] for gk, src in st.groups.values() if not _is_pad(src, gk)}
        if len(names) == 1:
            (src_name,) = names
            if src_name in stages:
                st.prev = src_name
                fed.add(src_name)
    chains = []
    for st in stages.values():
        if st.name in fed:
            continue
        chain = [st]
        while chain[-1].prev is not None:
            chain.append(stages[chain[-1].prev])
        chain.reverse()
        if [c.stage for c in chain] == list(range(len(chain))) and all(
            c.spec == chain[0].spec for c in chain
        ):
            chains.append(chain)
    return chains


def _exchange(chain: list[_Stage], index: dict, nodes: list) -> Exchange | None:
    first, last = chain[0], chain[-1]
    k = first.spec[1]
    internal: set = set()
    for st, nxt in zip(chain, chain[1:] + [None]):
        internal.update(gk for gk, _ in st.groups.values())
        internal.update(src for gk, src in st.groups.values() if _is_pad(src, gk))
        if nxt is not None:  # this stage's outputs: the next stage's inputs
            internal.update(src for _, src in nxt.groups.values())
    real = [(label, src) for label, (gk, src) in first.groups.items() if not _is_pad(src, gk)]
    inputs = sorted(((_index(label, k), src) for label, src in real), key=operator.itemgetter(0))
    splits = {f"split-{st.name}" for st in chain}
    internal.update(
        key for key in index if isinstance(key, tuple) and len(key) == 3 and key[0] in splits
    )
    last_split = f"split-{last.name}"
    outputs = []
    for key, i in index.items():
        if key in internal:
            continue
        deps = nodes[i].dependencies
        inside = [d for d in deps if d in internal]
        if not inside:
            continue
        if not (
            isinstance(key, tuple)
            and key[0] == last.name
            and len(inside) == len(deps)
            and all(d[0] == last_split for d in inside)
        ):
            return None  # something outside reads the shuffle's intermediates
        _, idx, label = inside[0]
        if isinstance(label, tuple):  # staged: the output's digits are the label's, but one
            target = _index(label[: last.stage] + (idx,) + label[last.stage + 1 :], k)
        else:
            target = idx
        outputs.append((key, target))
    if not outputs or not inputs:
        return None
    outputs.sort(key=operator.itemgetter(1))
    return Exchange(chain, [src for _, src in inputs], outputs, internal)


def find(names: list, nodes: list, index: dict) -> list[Exchange]:
    """Every dask tasks shuffle in the graph that can run as one exchange (``index``: key ->
    position in ``names``)."""
    group_fn = shuffle_group_function()
    if group_fn is None:
        return []
    stages = _stages(names, nodes, group_fn)
    if not stages:
        return []
    found = []
    for chain in _chains(stages):
        ex = _exchange(chain, index, nodes)
        if ex is not None:
            found.append(ex)
    return found


def batches(n: int, m: int, nbytes: int, max_pieces: int, map_bytes: int) -> int:
    """Input partitions per map: 1 while ``n m`` pieces stay within ``max_pieces``, else as
    many as bring them there, but no more than ``map_bytes`` of partitions of ``nbytes``."""
    if n * m <= max_pieces:
        return 1
    return max(1, min(-(-n * m // max(1, max_pieces)), map_bytes // max(1, nbytes)))


def partition_bytes(ex: Exchange, index: dict, nodes: list) -> int | None:
    """How large the exchange's input partitions are, or None when no one can tell.

    Literal data the inputs are computed from (``from_pandas``), per input; else a probe:
    from the first input, down the dependencies of the same partition number, to a task with
    none (``from_map``'s function, a file reader), run here once and measured -- one
    partition's worth of work, ``1/n`` of the maps'. A probe that raises, a walk that finds
    no such task, or persisted inputs (ObjectRefs), tell nothing.
    """
    total = 0
    seen: set = set()
    stack = list(ex.inputs)
    while stack:
        key = stack.pop()
        if key in seen:
            continue
        seen.add(key)
        i = index.get(key)
        if i is None:  # persisted, referred to by key only: its size is Ray's
            return None
        node = nodes[i]
        if type(node) is DataNode:
            if type(node.value).__name__ == "ObjectRef":  # persisted, as a ref
                return None
            total += sizeof(node.value)
            continue
        deps = node.dependencies
        if not deps:
            return _probe(ex.inputs[0], index, nodes)
        stack.extend(deps)
    return total // len(ex.inputs)


def _upstream(ex: Exchange, index: dict, nodes: list) -> list:
    """The sources each input partition is made from (tasks without dependencies, reached
    down the dependencies of the same partition number): ``set_index`` reads its source
    partitions twice (to sample them and to move them), so they are no tree below the map, and
    without a weight of their own they would be bundled into one Ray task making all the data."""
    out = []
    for key in ex.inputs:
        part = key[-1] if isinstance(key, tuple) else None
        stack, seen = [key], set()
        while stack and len(seen) < 100:
            k = stack.pop()
            i = index.get(k)
            if i is None or k in seen:
                continue
            seen.add(k)
            deps = nodes[i].dependencies
            if not deps and k != key:
                out.append(k)
            stack.extend(d for d in deps if isinstance(d, tuple) and d[-1] == part)
    return out


def _probe(key: Any, index: dict, nodes: list) -> int | None:
    part = key[-1] if isinstance(key, tuple) else None
    for _ in range(1000):
        if key not in index:
            return None
        node = nodes[index[key]]
        deps = node.dependencies
        if type(node) is DataNode or not deps:
            break
        same = [d for d in deps if isinstance(d, tuple) and d[-1] == part]
        if len(same) != 1:
            return None
        key = same[0]
    else:
        return None
    try:
        value = node.value if type(node) is DataNode else node({})
    except Exception:  # the maps will raise it, naming their key
        return None
    return sizeof(value)


@dataclass
class Weighed:
    """What the planner needs of one exchange (or rechunk): the keys of its maps and reducers
    (its old blocks and merges), of its pieces (slices), how large its input partitions are
    and how many bytes it moves in all; :mod:`daskray.planning` decides whether it is heavy."""

    heavy: list
    free: list
    partition_bytes: int
    total_bytes: int
    upstream: list = field(default_factory=list)  # the sources the maps' partitions come from


def rewrite(
    names: list,
    nodes: list,
    wanted: list,
    funcs: set | list,
    annotated: frozenset = frozenset(),
    store: Any = None,
) -> tuple | None:
    """``names``/``nodes`` with every recognised shuffle replaced by an exchange (but those of
    which a ``wanted`` key is an intermediate) and every heavy tasks rechunk by a rechunk
    exchange (:func:`rechunks`), and a :class:`Weighed` for each; None when there is neither.
    ``funcs``: the functions of the graph's tasks (what tells, at C speed, whether it has a
    shuffle or a rechunk). ``annotated``: keys that carry annotations, never inlined into a
    map (:func:`_cone`). ``store``: a callable answering the cluster's object store bytes,
    called once a heavy exchange that joins read is found (it sizes its reducers' window,
    :func:`window`), or None: unknown, no window unless ``daskray.exchange.reduce-window``
    is set."""
    if not dask.config.get("daskray.exchange.enabled"):
        return None
    group_fn = shuffle_group_function()
    shuffles = group_fn is not None and group_fn in funcs
    concat = rechunk_concat_function()
    rechunking = concat is not None and (concat in funcs or execute_subgraph in funcs)
    if not (shuffles or rechunking):
        return None
    cfg = {k: int(dask.config.get(f"daskray.exchange.{k}")) for k in _SIZES}
    index = {k: i for i, k in enumerate(names)}
    asked = set()
    for k in wanted:
        try:
            if k in index:
                asked.add(k)
        except TypeError:  # unhashable: ingest names it once this returns
            pass
    weighed: list = []
    internal: set = set()
    replaced: dict = {}
    added: list = []
    if rechunking:
        for r in rechunks(names, nodes, index, asked, cfg):
            internal |= r.internal
            replaced.update(r.replaced)
            added.extend(r.added)
            weighed.append(r.weighed)
    found = find(names, nodes, index) if shuffles else []
    found = [ex for ex in found if ex.internal.isdisjoint(asked)]
    for ex in found:
        internal |= ex.internal
    # what no cone may take: the keys removed or rewritten, and those asked for
    blocked = internal | asked | set(replaced) | {k for ex in found for k, _ in ex.outputs}
    for new, w, cones in _exchanges(found, nodes, index, blocked, cfg, annotated, store):
        for cone in cones:
            internal.update(cone)
        for node in new:
            if node.key in index:
                replaced[node.key] = node
            else:
                added.append(node)
            (w.free if node.func is operator.getitem else w.heavy).append(node.key)
        weighed.append(w)
    if not weighed:
        return None
    out_names, out_nodes = [], []
    for key, node in zip(names, nodes):
        if key in internal:
            continue
        out_names.append(key)
        out_nodes.append(replaced.get(key, node))
    out_names.extend(n.key for n in added)
    out_nodes.extend(added)
    return out_names, out_nodes, weighed


@dataclass
class Rechunk:
    """One rechunk exchange: the split keys it removes, the consumers it rewrites, the maps and
    pieces it adds, and its :class:`Weighed`."""

    internal: set
    replaced: dict
    added: list
    weighed: Weighed


def rechunks(names: list, nodes: list, index: dict, asked: set, cfg: dict) -> list[Rechunk]:
    """Every stage of a dask tasks rechunk whose blocks are heavy, as one exchange.

    dask's tasks rechunk is an all-to-all already: per stage, ``rechunk-split-{token}``
    getitems slice every old block once per new block it overlaps, and each new block
    concatenates its slices (and old blocks it takes whole) -- a ``rechunk-merge`` task, or
    one fused by dask's blockwise optimization with what follows it. Every slice is an object
    of its own: ``n m`` of them for an all-to-all, about a millisecond of Ray's CPU each. When
    its blocks are over ``daskray.exchange.heavy-bytes`` (read from the slices taken of one, at
    8 bytes an element; ``partition-bytes`` when they do not tell), a stage becomes an
    exchange like a shuffle's: a map takes ``b`` consecutive old blocks (:func:`batches`) and
    returns one piece per new block they reach, the tuple of that block's slices of them
    (``cut_blocks``); each consumer reads its slices out of its pieces, inline. The slices are
    dask's own ``getitem`` arguments, so no shape is inferred. Smaller blocks are left as dask
    built them: fused as any tasks. A stage whose slices are requested is left too.
    """
    split_fn = rechunk_split_function()
    stages: dict[str, list] = {}
    for key, node in zip(names, nodes):
        if (
            type(key) is tuple
            and len(key) == 2
            and type(key[0]) is str
            and key[0].startswith("rechunk-split-")
            and type(node) is Task
            and node.func is split_fn
            and len(node.args) == 2
            and isinstance(node.args[0], TaskRef)
        ):
            stages.setdefault(key[0], []).append(key)
    out = []
    for split_name in sorted(stages):
        slices = set(stages[split_name])
        if slices & asked:
            continue
        r = _rechunk_stage(names, nodes, index, slices, cfg)
        if r is not None:
            out.append(r)
    return out


def _rechunk_stage(names: list, nodes: list, index: dict, slices: set, cfg: dict):
    sliced = {nodes[index[k]].args[0].key for k in slices}
    nbytes = _sliced_bytes(min(sliced, key=repr), slices, index, nodes)
    if nbytes is None:
        nbytes = cfg["partition-bytes"]
    if nbytes <= cfg["heavy-bytes"]:
        return None
    block_names = {b[0] for b in sliced if type(b) is tuple}
    # consumers in graph order, each with its fragments: (dependency key, block, slices|None)
    consumers = []
    for key, node in zip(names, nodes):
        deps = node.dependencies
        if deps.isdisjoint(slices) or key in slices:
            continue
        frags = []
        for d in sorted(deps, key=repr):
            if d in slices:
                split = nodes[index[d]]
                frags.append((d, split.args[0].key, split.args[1]))
            elif type(d) is tuple and d and d[0] in block_names and d in index:
                frags.append((d, d, None))  # an old block taken whole
        consumers.append((key, node, frags))
    blocks = sorted({f[1] for _, _, fs in consumers for f in fs}, key=_block_order)
    if not blocks or any(b not in index for b in blocks):
        return None
    position = {b: i for i, b in enumerate(blocks)}
    reach = sum(len(fs) for _, _, fs in consumers) // len(blocks) or 1
    per = batches(len(blocks), reach, nbytes, cfg["max-pieces"], cfg["map-bytes"])
    tag = next(iter(slices))[0][len("rechunk-split-") :]
    nmaps = -(-len(blocks) // per)
    # per map: its consumers in order, and per consumer the (batch position, slices) cut
    specs: list[dict] = [{} for _ in range(nmaps)]
    for c, (_, _, frags) in enumerate(consumers):
        for _, block, where in frags:
            j, pos = divmod(position[block], per)
            specs[j].setdefault(c, []).append((pos, where))
    added, free, piece_of = [], [], {}
    maps = []
    for j, spec in enumerate(specs):
        mkey = (f"rechunk-map-{tag}", j)
        targets = list(spec)
        refs = [TaskRef(b) for b in blocks[j * per : (j + 1) * per]]
        added.append(Task(mkey, cut_blocks, tuple(tuple(spec[c]) for c in targets), *refs))
        maps.append(mkey)
        for r, c in enumerate(targets):
            pkey = (f"rechunk-piece-{tag}", j, c)
            added.append(Task(pkey, operator.getitem, TaskRef(mkey), r))
            free.append(pkey)
            piece_of[(j, c)] = pkey
    replaced = {}
    for c, (key, node, frags) in enumerate(consumers):
        seen: dict = {}
        subs = {}
        for dep, block, _ in frags:
            j = position[block] // per
            i = seen.get(j, 0)
            seen[j] = i + 1
            subs[dep] = Task(dep, operator.getitem, TaskRef(piece_of[(j, c)]), i)
        replaced[key] = node.substitute(subs)
    heavy = maps + [key for key, _, _ in consumers]
    weighed = Weighed(heavy, free, nbytes, nbytes * len(blocks))
    return Rechunk(slices, replaced, added, weighed)


def _block_order(key: Any) -> tuple:
    return (key[0], key[1:]) if type(key) is tuple else (repr(key), ())


def _sliced_bytes(block: Any, slices: set, index: dict, nodes: list) -> int | None:
    """Bytes of ``block`` from the slices of it in ``slices`` (8 bytes an element), or None
    when a slice is not a tuple of ``slice`` objects with bounds."""
    elements = 0
    for k in slices:
        node = nodes[index[k]]
        if block not in node.dependencies:
            continue
        where = node.args[1] if len(node.args) == 2 else None
        if not isinstance(where, tuple):
            return None
        count = 1
        for sl in where:
            if not (
                isinstance(sl, slice) and isinstance(sl.start, int) and isinstance(sl.stop, int)
            ):
                return None
            count *= max(0, sl.stop - sl.start)
        elements += count
    return 8 * elements if elements else None


_SIZES = ("partition-bytes", "max-pieces", "map-bytes", "heavy-bytes")


def _exchanges(found, nodes, index, blocked, cfg, annotated, store=None):
    """Per exchange of ``found``: its new nodes, its :class:`Weighed` and the cones inlined
    into its maps (:func:`_cone`; when its partitions are over ``heavy-bytes``).

    Heavy exchanges that no other one feeds (a merge's two sides) share a barrier: their
    reducers wait for every map of all of them. Ray pulls a queued task's arguments into the
    object store as soon as they exist and pins them there until it runs, so the reducers of
    the side whose maps finish first would fill the store with restored pieces while the other
    side's maps still run, and with nothing left to spill each piece those maps return waits
    out Ray's grace period (seconds) before going to a file. For the same reason the reducers
    of heavy exchanges whose outputs joins read (:func:`_joins`: the outputs go to the store,
    where the joins' queued arguments pin them) run in a window (:func:`_windows`): reducer
    ``p`` of a sequence also waits for a token of reducer ``p - K``, so that no more than
    ``K`` have their pieces pulled at once; the reducers sharing a barrier form one sequence,
    their outputs interleaved (the first of each side, then the second ...: what a join reads
    becomes ready together). A reducer whose output a chain reads (a shuffle's) has no window:
    its output never reaches the store, and the chain is fused with it.
    """
    sized = []
    owners = None
    for ex in found:
        nbytes = partition_bytes(ex, index, nodes)
        if nbytes is None:
            nbytes = cfg["partition-bytes"]
        per = batches(len(ex.inputs), len(ex.outputs), nbytes, cfg["max-pieces"], cfg["map-bytes"])
        cones = []
        if nbytes > cfg["heavy-bytes"]:
            if owners is None:
                owners = _dependents(nodes, annotated)
            reads = _internal_reads(ex, index, nodes)
            cones = [
                _cone(ex.inputs[j : j + per], reads, blocked, index, nodes, owners)
                for j in range(0, len(ex.inputs), per)
            ]
        sized.append((ex, nbytes, per, cones))
    outputs = {k for ex in found for k, _ in ex.outputs}
    first = [
        e
        for e, (ex, nbytes, _, _) in enumerate(sized)
        if nbytes > cfg["heavy-bytes"] and not _fed_by(ex, outputs, index, nodes)
    ]
    gated = set(first) if len(first) > 1 else set()
    gate = f"exchange-barrier-{_tag(found[first[0]])}" if gated else None
    joins = _joins(found, nodes, index) if first else {}
    waits, tokens = _windows(sized, sorted(joins), gated, cfg, store)
    out = []
    done: list = []
    for e, (ex, nbytes, per, cones) in enumerate(sized):
        upstream = _upstream(ex, index, nodes)
        w = Weighed(joins.get(e, []), [], nbytes, nbytes * len(ex.inputs), upstream)
        new = _build(ex, per, cones or None, gate if e in gated else None, waits[e], tokens[e])
        if e in gated:
            done.extend(_done_key(ex, m) for m in range(-(-len(ex.inputs) // per)))
        out.append((new, w, cones))
    if gate is not None:
        out[0][0].append(Task(gate, barrier, *map(TaskRef, done)))
    return out


def _joins(found: list, nodes: list, index: dict) -> dict:
    """Position in ``found`` -> the tasks reading outputs of two or more exchanges, directly
    or through chains of one-dependency tasks (a merge's joins, after the column projections
    on each side), each listed under the first exchange it reads (the others it reads get an
    entry too). Weighed as reducers (:class:`Weighed` ``heavy``), each is a Ray task of its
    own: without that, the fuser would take them all into one task under the tree reading
    them (a sum, a ``repartition``), a task needing every output of both sides at once."""
    origin: dict = {k: e for e, ex in enumerate(found) for k, _ in ex.outputs}

    def reached(key: Any) -> Any:  # the exchange whose output a chain ending at key reads
        path = []
        while key not in origin:
            i = index.get(key)
            deps = nodes[i].dependencies if i is not None else ()
            if len(deps) != 1:
                origin[key] = None
                break
            path.append(key)
            key = next(iter(deps))
        for k in path:
            origin[k] = origin[key]
        return origin[key]

    out: dict = {}
    for node in nodes:
        if len(node.dependencies) > 1:
            read = {e for e in map(reached, node.dependencies) if e is not None}
            if len(read) > 1:
                for e in read:
                    out.setdefault(e, [])
                out[min(read)].append(node.key)
    return out


def window(store: int, output_bytes: int) -> int:
    """How many reducers making outputs of ``output_bytes`` each may be running or queued at
    once on a cluster with ``store`` bytes of object store: an eighth of the store per
    output, at least one. A reducer in flight holds far more of the store than its output:
    its pieces, pulled and pinned while it is queued, restored while it runs, its output, and
    the join reading that output holds it and the other side's beside it. Measured on one
    node (2 CPUs, merge of 2 GiB, 0.25 GiB store, outputs of ~20 MB): 1 at a time 29 s, 2 or
    3: 36 s, 4: 65 s, 6: 91 s (each new output then waits out Ray's grace period for room).

    >>> window(256 * 2**20, 20 * 2**20)
    1
    >>> window(200 * 2**30, 20 * 2**20)
    1280
    """
    return max(1, store // max(1, 8 * output_bytes))


def _windows(sized: list, joined: list, gated: set, cfg: dict, store: Any) -> tuple:
    """Per exchange of ``sized``: {reducer: the token key it waits for}, and the reducers
    returning a token. Windowed are the heavy exchanges in ``joined`` (their outputs read by
    joins: each goes to the object store), ``K`` reducers at a time:
    ``daskray.exchange.reduce-window`` when set, else :func:`window` of the cluster's object
    store (``store()``), for those moving more than half of it. The ``gated`` ones form one
    sequence (they feed none of each other, so no token waits on itself), their outputs
    interleaved; each other one is a sequence of its own."""
    waits: list = [{} for _ in sized]
    tokens: list = [set() for _ in sized]
    heavy = [e for e in joined if sized[e][1] > cfg["heavy-bytes"]]
    fixed = dask.config.get("daskray.exchange.reduce-window", None)
    if fixed is not None and (type(fixed) is not int or fixed < 1):
        raise ValueError(
            f"daskray.exchange.reduce-window is {fixed!r}; set it to a positive int (reducers "
            "at a time), or None to size it from the cluster's object store"
        )
    if not heavy or (fixed is None and store is None):
        return waits, tokens
    if fixed is None:
        total = store()
        heavy = [e for e in heavy if total and sized[e][1] * len(sized[e][0].inputs) > total // 2]
    sequences = [[(e, r) for r in range(len(sized[e][0].outputs))] for e in heavy if e not in gated]
    together = [e for e in heavy if e in gated]
    if together:
        longest = max(len(sized[e][0].outputs) for e in together)
        sequences.append(
            [(e, r) for r in range(longest) for e in together if r < len(sized[e][0].outputs)]
        )
    for seq in sequences:
        k = fixed or window(total, max(_output_bytes(sized[e]) for e, _ in seq))
        for p in range(k, len(seq)):
            (e, r), (f, q) = seq[p], seq[p - k]
            waits[e][r] = _token_key(sized[f][0], q)
            tokens[f].add(q)
    return waits, tokens


def _output_bytes(sized: tuple) -> int:
    """An exchange's output partition size, on average: all it moves over its outputs."""
    ex, nbytes = sized[0], sized[1]
    return nbytes * len(ex.inputs) // len(ex.outputs)


def _tag(ex: Exchange) -> str:
    """What names an exchange's keys: its last stage's name."""
    return ex.stages[-1].name


def _done_key(ex: Exchange, m: int) -> tuple:
    """The key of map ``m``'s empty value for the barrier."""
    return (f"exchange-done-{_tag(ex)}", m)


def _token_key(ex: Exchange, r: int) -> tuple:
    """The key of reducer ``r``'s token for its window."""
    return (f"exchange-token-{_tag(ex)}", r)


def _fed_by(ex: Exchange, outputs: set, index: dict, nodes: list) -> bool:
    """Whether one of ``outputs`` (another exchange's) is among the ancestors of ``ex``'s
    inputs."""
    stack, seen = list(ex.inputs), set()
    while stack:
        key = stack.pop()
        if key in seen:
            continue
        seen.add(key)
        if key in outputs:
            return True
        i = index.get(key)
        if i is not None:
            stack.extend(nodes[i].dependencies)
    return False


def _dependents(nodes: list, annotated: frozenset) -> dict:
    """Key -> how many tasks depend on it; annotated keys (whose annotations a Ray task of
    their own carries) get one more, so that no cone takes them."""
    count: dict = dict.fromkeys(annotated, 1)
    for node in nodes:
        for d in node.dependencies:
            count[d] = count.get(d, 0) + 1
    return count


#: most tasks a map's cone takes (a bound on the work one map may inline, not a limit
#: graphs reach: a partition is made by a few tasks)
CONE_TASKS = 10_000


def _internal_reads(ex: Exchange, index: dict, nodes: list) -> dict:
    """Input key of ``ex`` -> how many of the exchange's own (internal) tasks read it."""
    inputs = set(ex.inputs)
    reads: dict = {}
    for key in ex.internal:
        i = index.get(key)
        if i is not None:
            for d in nodes[i].dependencies:
                if d in inputs:
                    reads[d] = reads.get(d, 0) + 1
    return reads


def _cone(inputs: list, reads: dict, blocked: set, index: dict, nodes: list, owners: dict):
    """The tasks that make a map's ``inputs`` and nothing else: an input read only by the
    exchange's own tasks (``reads``: :func:`_internal_reads`), then each task all of whose
    dependents are in the cone
    (plain ``Task`` nodes not ``blocked``; counted as Kahn's algorithm counts in-degrees).
    Inlined into the map (dask's ``Task.fuse``), a partition goes from its source to its
    pieces in one Ray task instead of through the object store between the tasks making it:
    the fuser cannot take a diamond (``set_index`` reads a partition's key column and the
    partition to assign it) into a map, and beyond memory each value in between is written,
    spilled and restored once more. Key -> node, in the order taken."""
    seen = {k: reads.get(k, 0) for k in inputs}  # key -> its dependents in the cone or internal
    cone: dict = {}
    stack = [k for k in inputs if seen.get(k, 0) == owners.get(k, 0)]
    while stack and len(cone) < CONE_TASKS:
        key = stack.pop()
        i = index.get(key)
        if key in cone or key in blocked or i is None or type(nodes[i]) is not Task:
            continue
        node = cone[key] = nodes[i]
        for d in node.dependencies:
            seen[d] = seen.get(d, 0) + 1
            if seen[d] == owners.get(d, 0):
                stack.append(d)
    return cone


def _build(
    ex: Exchange,
    per: int,
    cones: list | None,
    gate: str | None = None,
    waits: dict | None = None,
    tokens: set | frozenset = frozenset(),
) -> list:
    """The maps, pieces and reducers of ``ex`` (``per`` input partitions a map; ``cones``:
    per map, the tasks inlined into it, or None; ``gate``: the barrier key the reducers wait
    for, each map then returning one more, empty, value for it: ``exchange-done-*``;
    ``waits`` and ``tokens``: the reducers' window (:func:`_windows`): reducer ``r`` waits
    for token key ``waits[r]``; a reducer in ``tokens`` returns a token beside its output
    (``exchange-reduce-*`` returns both, ``exchange-token-*`` and the output key read them))."""
    cols, _, nin, ignore, nfinal = ex.spec
    n = len(ex.inputs)
    tag = _tag(ex)
    spec = (cols, nin, nfinal, ignore, tuple(t for _, t in ex.outputs), gate is not None)
    waits = waits or {}
    new = []
    maps = []
    for j in range(0, n, per):
        key = (f"exchange-map-{tag}", j // per)
        maps.append(key)
        refs = [TaskRef(k) for k in ex.inputs[j : j + per]]
        node = Task(key, map_pieces, spec, *refs)
        cone = cones[j // per] if cones is not None else None
        new.append(Task.fuse(*cone.values(), node, key=key) if cone else node)
        if gate is not None:
            done = _done_key(ex, j // per)
            new.append(Task(done, operator.getitem, TaskRef(key), len(ex.outputs)))
    for r, (okey, _) in enumerate(ex.outputs):
        pieces = []
        for mk in maps:
            pk = (f"exchange-piece-{tag}", mk[1], r)
            new.append(Task(pk, operator.getitem, TaskRef(mk), r))
            pieces.append(TaskRef(pk))
        first = [TaskRef(k) for k in (gate, waits.get(r)) if k is not None]
        if r not in tokens:
            new.append(Task(okey, reduce_pieces, ignore, *first, *pieces))
            continue
        rkey = (f"exchange-reduce-{tag}", r)
        new.append(Task(rkey, reduce_token, ignore, *first, *pieces))
        new.append(Task(okey, operator.getitem, TaskRef(rkey), 0))
        new.append(Task(_token_key(ex, r), operator.getitem, TaskRef(rkey), 1))
    return new


# ---------------------------------------------------------------------------------------------
# what runs in the Ray tasks
# ---------------------------------------------------------------------------------------------


def map_pieces(spec: tuple, *frames: Any) -> tuple:
    """Cut each of ``frames`` (a batch of input partitions) by target partition, once, with
    dask's own ``shuffle_group``: one piece per output partition, the batch's frames for it in
    input order."""
    from dask.dataframe.shuffle import shuffle_group

    cols, nin, nfinal, ignore, targets, gated = spec
    # one frame of the batch: each piece is then one slice of one frame, fewer buffers for Ray
    # to write than the slices of several frames
    batch = frames[0] if len(frames) == 1 else frame_concat()(list(frames), ignore)
    cut = shuffle_group(batch, cols, 0, nin, nin, ignore, nfinal)
    # a staged shuffle that repartitions pads its outputs to k ** stages: those past the
    # input count receive no rows (their empty frames are what dask's stages make of them)
    empty = cut[0].iloc[:0] if any(t >= nin for t in targets) else None
    pieces = tuple([cut[t] if t < nin else empty] for t in targets)
    return pieces + (None,) if gated else pieces


def barrier(*done: None) -> None:
    """What the reducers of exchanges sharing a barrier wait for: every map of them done."""
    return None


def cut_blocks(spec: tuple, *blocks: Any) -> tuple:
    """A rechunk map: for each new block the batch reaches, the tuple of its slices of
    ``blocks`` (dask's own ``getitem`` arguments; None: the whole block), in the order the new
    block's task reads them."""
    return tuple(
        tuple(blocks[pos] if where is None else blocks[pos][where] for pos, where in cut)
        for cut in spec
    )


def reduce_pieces(ignore_index: bool, *pieces: list | None) -> Any:
    """One output partition: every map's frames for it, concatenated in input order (dask's
    ``_concat``); leading Nones are the barrier's and the window's tokens."""
    return frame_concat()([f for piece in pieces if piece is not None for f in piece], ignore_index)


def reduce_token(ignore_index: bool, *pieces: list | None) -> tuple:
    """:func:`reduce_pieces`, and a token for the reducer waiting on this one (its window)."""
    return reduce_pieces(ignore_index, *pieces), None
