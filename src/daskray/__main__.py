"""``python -m daskray`` / ``daskray``: ``demo`` (the default) and ``info``."""

from __future__ import annotations

import sys


def info() -> int:
    import dask
    import ray

    import daskray
    from daskray import _graph

    print(f"daskray {daskray.__version__}")
    print(f"compiled core: {_graph.COMPILED} ({_graph.intern.__module__})")
    print(f"ray {ray.__version__}, dask {dask.__version__}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and not argv[0].startswith("-") else "demo"
    if command == "demo":
        from .demo import main as demo

        return demo(argv)
    if command == "info":
        return info()
    print(f"unknown command {command!r}; use: daskray [demo|info] [options]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
