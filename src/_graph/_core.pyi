from array import array
from collections.abc import Iterable, Sequence
from typing import Any

from ._common import Plan, PlanOptions

def intern(
    names: list, deps: Sequence[Iterable[Any]], source: dict | None = None
) -> tuple[dict, array, array]: ...
def plan(
    names: list,
    indptr: Sequence[int],
    indices: Sequence[int],
    targets: Iterable[int],
    options: PlanOptions | None = None,
) -> Plan: ...
def transpose(
    indptr: Sequence[int], indices: Sequence[int], rows: Iterable[int] | None = None
) -> tuple[array, array]: ...
