from array import array
from collections.abc import Iterable, Sequence
from typing import Any

from ._common import Plan

def intern(
    names: list, deps: Sequence[Iterable[Any]], source: dict | None = None
) -> tuple[dict, array, array]: ...
def plan(
    names: list,
    indptr_in: array,
    indices_in: array,
    targets: Iterable[int],
    weights: Sequence[int] | None = ...,
    classes: Sequence[int] | None = ...,
    flags: Sequence[int] | None = ...,
    group_weight: int = ...,
    split_fanout: int = ...,
    bundle_weight: int = ...,
    priorities: Sequence[int] | None = ...,
) -> Plan: ...
