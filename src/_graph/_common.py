"""What the compiled core and its pure-Python twin share: the plan type, flags and errors.

Both implementations build their results and errors from this module, so a plan or an error
message from one is, field for field and character for character, the plan or message of the
other. Nothing here knows about Ray or about dask's task objects: a graph reaches the core as a
list of key objects (``names``) and, per key, an iterable of the keys it depends on.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "BLOCK_FUSION",
    "CycleError",
    "GraphError",
    "InvalidKeyError",
    "MissingDependencyError",
    "PACK_ALONE",
    "PASS_THROUGH",
    "Plan",
    "PlanOptions",
    "checked_targets",
    "cycle_error",
    "invalid_key_error",
    "missing_dependency_error",
    "per_node",
]

#: ``flags`` bit: never fuse this node with another (dask's ``GraphNode.block_fusion``).
BLOCK_FUSION = 1
#: ``flags`` bit: the node's group is never packed with others of its level (a heavy value, such
#: as an exchange's map or reducer: Ray holds a task's arguments in its object store together).
PACK_ALONE = 2
#: ``flags`` bit: the node costs nothing when it is its group's only member (an alias of one
#: key: its target's ref is handed on, no Ray task runs), so such a group is never packed
#: or bundled with others.
PASS_THROUGH = 4

_SHOWN = 10  # how many dependents an error message lists before it says "and N more"


class GraphError(ValueError):
    """A task graph that cannot be run as given; raised before anything is submitted.

    ``args[0]`` is the message; further args carry the offending keys.
    """

    def __str__(self):
        return str(self.args[0]) if self.args else ""


class CycleError(GraphError):
    """The graph has a cycle. ``args[1]`` (and ``.cycle``) is the cycle as a list of keys,
    first key repeated at the end, like :class:`graphlib.CycleError`."""

    @property
    def cycle(self) -> list:
        return self.args[1]


class MissingDependencyError(GraphError):
    """A task depends on a key that is neither in the graph nor supplied as data.

    ``.key`` is the missing key, ``.dependents`` the keys of the tasks that need it.
    """

    @property
    def key(self):
        return self.args[1]

    @property
    def dependents(self) -> list:
        return self.args[2]


class InvalidKeyError(GraphError, TypeError):
    """A key that dask cannot use: unhashable, or of a type dask keys never have."""

    @property
    def key(self):
        return self.args[1]


def cycle_error(cycle: list) -> CycleError:
    lines = "\n".join(f"  -> {k!r}" for k in cycle)
    return CycleError(
        "Cycle detected between the following keys:\n"
        f"{lines}\n"
        "A task may not depend on itself, directly or through other tasks: "
        "break the cycle by removing one of these dependencies.",
        cycle,
    )


def missing_dependency_error(key, dependents: list) -> MissingDependencyError:
    shown = ", ".join(repr(d) for d in dependents[:_SHOWN])
    if len(dependents) > _SHOWN:
        shown += f", ... and {len(dependents) - _SHOWN} more"
    return MissingDependencyError(
        f"Missing dependency {key!r} for dependents [{shown}]. "
        "Add a task or a value for this key to the graph, or fix the reference to it.",
        key,
        dependents,
    )


def invalid_key_error(key, reason: str) -> InvalidKeyError:
    return InvalidKeyError(
        f"Invalid key {key!r}: {reason}. Dask keys are str, bytes, int, float or tuples of "
        "those; rename the task.",
        key,
    )


@dataclass(frozen=True)
class PlanOptions:
    """How ``plan`` fuses: every knob of the core in one object (later work adds fields here,
    not arguments to ``plan``).

    Attributes
    ----------
    group_weight : int
        Target weight of a group; ``<= 1`` disables fusion (one group per node).
    bundle_weight : int
        Target weight of a bundle of small sink or source trees (``<= 0``: ``group_weight``).
    split_fanout : int
        Minimum number of single-dependency dependents that make a split group (``< 2``: none).
    cluster_fanout : int
        Largest number of dependents of an input shared in a cluster (``< 2``: no clusters).
    weights, classes, flags : sequence of int, optional
        Per node: estimated cost (default: 1 + its number of dependencies), fusion class (nodes
        of different classes never share a group; default 0) and flag bits (``BLOCK_FUSION``,
        ``PACK_ALONE``, ``PASS_THROUGH``).
    priorities : sequence of int, optional
        Per node (dask's ``priority`` annotation): among groups ready at the same point of the
        group order, those holding a higher priority come first.
    parallelism : int
        How many groups should be runnable at once (``groups-per-cpu`` x CPUs): a level of the
        group graph holding more groups than this is packed down to it (``<= 0``: never).
    cpus, task_weight : int
        With ``parallelism``: the CPUs a plan runs on (``<= 0``: ``parallelism``) and the cost
        of one Ray task in weight units; the bands of levels packed together are those whose
        groups a list schedule on ``cpus`` CPUs finishes soonest.
    move_weights : sequence of int, optional
        Per node, with ``parallelism``: what moving its value to another group costs, in
        weight units (from its estimated bytes); that schedule charges it to every group that
        reads the value from another group, so heavy edges stay inside groups.
    """

    group_weight: int = 1
    bundle_weight: int = 0
    split_fanout: int = 2
    cluster_fanout: int = 4
    weights: Sequence[int] | None = None
    classes: Sequence[int] | None = None
    flags: Sequence[int] | None = None
    priorities: Sequence[int] | None = None
    parallelism: int = 0
    cpus: int = 0
    task_weight: int = 0
    move_weights: Sequence[int] | None = None


def per_node(values, n: int, what: str, typed: bool = True):
    """``values`` as an ``array('q')`` (a list when not ``typed``) of exactly ``n`` entries, or
    None for None; a wrong length raises ``ValueError`` naming ``what``."""
    if values is None:
        return None
    if not typed:
        values = list(values)
    elif not (isinstance(values, array) and values.typecode == "q"):
        values = array("q", values)
    if len(values) != n:
        raise ValueError(f"{what} must have {n} entries, got {len(values)}")
    return values


def checked_targets(targets, n: int) -> array:
    """The target ids as an ``array('q')``; one out of range raises ``IndexError``."""
    tgt = array("q", targets)
    for t in tgt:
        if not 0 <= t < n:
            raise IndexError(f"target id {t} out of range for {n} nodes")
    return tgt


class Plan:
    """An execution plan: which nodes run, in which order, grouped into which Ray tasks.

    Node ids are positions in ``names``. Every integer array is an ``array('q')``.

    Attributes
    ----------
    names : list
        The keys, as given to :func:`intern`.
    order : array
        Ids of every node the targets need, dependencies first (a topological order); a node's
        position in it is its priority (lower runs first).
    group_of : array
        For every id, the group it runs in, or -1 when the targets do not need it.
    ngroups : int
        Number of groups. Group ids are a topological order of the groups themselves.
    members_ptr, members : array
        CSR: group ``g`` runs ``members[members_ptr[g]:members_ptr[g+1]]`` in that order.
    inputs_ptr, inputs : array
        CSR: the nodes of other groups whose values group ``g`` needs.
    outputs_ptr, outputs : array
        CSR: the nodes of group ``g`` needed by other groups or requested as targets; a Ray
        task running the group returns one value per output (``num_returns``).
    """

    __slots__ = (
        "names",
        "order",
        "group_of",
        "ngroups",
        "members_ptr",
        "members",
        "inputs_ptr",
        "inputs",
        "outputs_ptr",
        "outputs",
    )

    def __init__(
        self,
        names,
        order,
        group_of,
        ngroups,
        members_ptr,
        members,
        inputs_ptr,
        inputs,
        outputs_ptr,
        outputs,
    ):
        self.names = names
        self.order = order
        self.group_of = group_of
        self.ngroups = ngroups
        self.members_ptr = members_ptr
        self.members = members
        self.inputs_ptr = inputs_ptr
        self.inputs = inputs
        self.outputs_ptr = outputs_ptr
        self.outputs = outputs

    def _fields(self):
        return tuple(getattr(self, s) for s in self.__slots__)

    def __eq__(self, other):
        if type(other) is not Plan:
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # mutable arrays inside

    def __repr__(self):
        return (
            f"<Plan: {len(self.order)} of {len(self.names)} nodes in {self.ngroups} groups, "
            f"{len(self.outputs)} outputs>"
        )

    def group(self, g: int) -> tuple[array, array, array]:
        """``(members, inputs, outputs)`` of group ``g`` as arrays of node ids."""
        return (
            self.members[self.members_ptr[g] : self.members_ptr[g + 1]],
            self.inputs[self.inputs_ptr[g] : self.inputs_ptr[g + 1]],
            self.outputs[self.outputs_ptr[g] : self.outputs_ptr[g + 1]],
        )
