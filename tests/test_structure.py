"""Checks that keep the package's structure from drifting (see ARCHITECTURE.md): who imports Ray,
no import cycles, short functions, the core and its twin alike (signatures, docstrings, stub),
and dask's private names in one module."""

from __future__ import annotations

import ast
import inspect
import os
import re

import pytest

from daskray import _graph

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "src")
PACKAGES = {"daskray": os.path.join(SRC, "daskray"), "daskray._graph": os.path.join(SRC, "_graph")}
MAX_LINES = 150


def _sources(ext: tuple[str, ...] = (".py",)) -> dict[str, str]:
    """Module name (or file name, for Cython sources) -> path, for every source in src/."""
    out = {}
    for package, folder in PACKAGES.items():
        for name in sorted(os.listdir(folder)):
            if not name.endswith(ext):
                continue
            stem = name.rsplit(".", 1)[0]
            if name.endswith(".py"):
                module = package if stem == "__init__" else f"{package}.{stem}"
            else:
                module = f"{package}/{name}"
            out[module] = os.path.join(folder, name)
    return out


def _tree(path: str) -> ast.Module:
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read(), path)


def _imports(module: str, path: str) -> set[str]:
    """Every module ``module`` imports, at any depth (inside functions too), absolute."""
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module
            known = _sources()
            for a in node.names:  # ``from pkg import sub`` imports the submodule
                sub = f"{base}.{a.name}"
                out.add(sub if sub in known else base)
    return out


def _allowed_ray_modules() -> set[str]:
    with open(os.path.join(ROOT, "ARCHITECTURE.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split("## Modules that import Ray", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^- `([\w.]+)`", section, re.M))


def test_only_the_listed_modules_import_ray():
    allowed = _allowed_ray_modules()
    sources = _sources()
    assert allowed and allowed <= set(sources), allowed - set(sources)
    importing = {
        m
        for m, path in sources.items()
        if any(i == "ray" or i.startswith("ray.") for i in _imports(m, path))
    }
    assert importing <= allowed, f"import Ray but are not listed in ARCHITECTURE.md: {importing}"
    assert importing == allowed, f"listed but import no Ray: {allowed - importing}"


def test_the_compiled_core_knows_nothing_of_ray_or_dask():
    for name, path in _sources((".pyx", ".pxi")).items():
        with open(path, encoding="utf-8") as f:
            text = f.read()
        assert not re.search(r"^\s*(import|from)\s+(ray|dask)\b", text, re.M), name


def test_dask_private_names_live_in_compat():
    for module, path in _sources().items():
        if module == "daskray._compat":
            continue
        private = {i for i in _imports(module, path) if re.match(r"dask\._|dask\.\w+\._", i)}
        assert not private, f"{module} imports {private}: go through daskray._compat"


def test_ray_data_internals_live_in_raydata_compat():
    for module, path in _sources().items():
        if module == "daskray._raydata_compat":
            continue
        private = {i for i in _imports(module, path) if i.startswith("ray.data._internal")}
        assert not private, f"{module} imports {private}: go through daskray._raydata_compat"


def _import_graph() -> dict[str, set[str]]:
    sources = _sources()
    return {m: {i for i in _imports(m, p) if i in sources and i != m} for m, p in sources.items()}


def test_no_import_cycles():
    graph = _import_graph()
    assert "daskray.planning" in graph["daskray.scheduler"]  # the graph sees relative imports
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    for start in sorted(graph):
        if state.get(start):
            continue
        stack = [(start, iter(sorted(graph[start])))]
        state[start] = 1
        path = [start]
        while stack:
            module, deps = stack[-1]
            nxt = next(deps, None)
            if nxt is None:
                stack.pop()
                path.pop()
                state[module] = 2
            elif state.get(nxt) == 1:
                cycle = path[path.index(nxt) :] + [nxt]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, iter(sorted(graph[nxt]))))


def _python_functions(path: str):
    for node in ast.walk(_tree(path)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.lineno, node.end_lineno


_CY_DEF = re.compile(
    r"^(\s*)(?:cpdef|cdef|def)\s+(?!class\b|struct\b|extern\b|enum\b|inline\s+class\b)"
    r"[^=(]*?\b(\w+)\s*\("
)


def _cython_functions(path: str):
    """``(name, first line, last line)`` of every def/cdef/cpdef function of a Cython file:
    it runs to the last non-blank line indented deeper than its ``def``."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines):
        m = _CY_DEF.match(line)
        if not m:
            continue
        indent = len(m.group(1))
        last = i
        j = i + 1
        in_signature = not line.rstrip().endswith(":")
        while j < len(lines):
            text = lines[j]
            if in_signature:
                last = j
                in_signature = not text.rstrip().endswith(":")
            elif text.strip() and not text.lstrip().startswith("#"):
                if len(text) - len(text.lstrip()) <= indent:
                    break
                last = j
            j += 1
        yield m.group(2), i + 1, last + 1


def test_no_function_longer_than_150_lines():
    long = []
    for name, path in {**_sources(), **_sources((".pyx", ".pxi"))}.items():
        functions = _cython_functions(path) if path.endswith(("x", "i")) else None
        for fn, first, last in functions or _python_functions(path):
            if last - first + 1 > MAX_LINES:
                long.append(f"{name}:{first} {fn} ({last - first + 1} lines)")
    assert not long, long


def test_the_function_length_check_sees_cython_functions():
    found = {fn for fn, _, _ in _cython_functions(os.path.join(SRC, "_graph", "trees.pxi"))}
    assert {"_trees", "_grow", "_pack", "_parents", "close", "_bin_add"} <= found
    spans = {fn: (a, b) for fn, a, b in _cython_functions(os.path.join(SRC, "_graph", "_core.pyx"))}
    assert spans["plan"][1] - spans["plan"][0] > 20  # the driver, docstring included


def _public(module) -> list[str]:
    return sorted(module.__all__)


@pytest.mark.skipif(not _graph.COMPILED, reason="compiled core deselected")
def test_core_and_twin_have_the_same_functions_signatures_and_docstrings():
    from daskray._graph import _core, _pure

    assert _public(_core) == _public(_pure) == ["intern", "plan", "transpose"]
    for name in _public(_core):
        compiled, twin = getattr(_core, name), getattr(_pure, name)
        assert inspect.signature(compiled) == inspect.signature(twin), name
        assert compiled.__doc__ == twin.__doc__, name


@pytest.mark.parametrize("module", ["_pure", "_core"])
def test_stub_matches_both_cores(module):
    import importlib

    if module == "_core" and os.environ.get("DASKRAY_NO_EXTENSIONS", "") not in ("", "0"):
        pytest.skip("compiled core deselected by DASKRAY_NO_EXTENSIONS")
    core = importlib.import_module(f"daskray._graph.{module}")
    stub = _tree(os.path.join(SRC, "_graph", "_core.pyi"))
    stubbed = {n.name: n for n in stub.body if isinstance(n, ast.FunctionDef)}
    assert sorted(stubbed) == _public(core)
    for name, node in stubbed.items():
        params = inspect.signature(getattr(core, name)).parameters
        args = node.args.args
        assert [a.arg for a in args] == list(params), name
        with_default = [a.arg for a in args[len(args) - len(node.args.defaults) :]]
        assert with_default == [p for p, v in params.items() if v.default is not v.empty], name
