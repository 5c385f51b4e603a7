"""daskray's graph core: the compiled extension ``_core``, or its pure-Python twin ``_pure``.

``DASKRAY_NO_EXTENSIONS=1`` (any non-empty value but ``0``) selects the twin; otherwise the
compiled module is used, and its absence is an error rather than a silent slowdown (set the
variable to run from a source tree that was never built).
"""

import os

from ._common import (
    BLOCK_FUSION,
    PACK_ALONE,
    PASS_THROUGH,
    CycleError,
    GraphError,
    InvalidKeyError,
    MissingDependencyError,
    Plan,
    PlanOptions,
)

NO_EXTENSIONS = os.environ.get("DASKRAY_NO_EXTENSIONS", "") not in ("", "0")

if NO_EXTENSIONS:
    from ._pure import intern, plan, transpose

    COMPILED = False
else:
    from ._core import intern, plan, transpose

    COMPILED = True

__all__ = [
    "BLOCK_FUSION",
    "COMPILED",
    "CycleError",
    "GraphError",
    "InvalidKeyError",
    "MissingDependencyError",
    "PACK_ALONE",
    "PASS_THROUGH",
    "Plan",
    "PlanOptions",
    "intern",
    "plan",
    "transpose",
]
