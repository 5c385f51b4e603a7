"""The README's Python examples run, in order, in one namespace (against the session Ray,
which declares a GPU and a ``special`` resource); ``>>>`` blocks run as doctests."""

from __future__ import annotations

import doctest
import os
import re

import dask
import pytest

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def _readme() -> str:
    with open(README, encoding="utf-8") as f:
        return f.read()


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", _readme(), flags=re.S)


def test_readme_examples_run(ray_ctx, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the report and profile examples write files
    blocks = _blocks()
    assert len(blocks) >= 4
    ns: dict = {}
    try:
        for block in blocks:
            if block.lstrip().startswith(">>>"):
                test = doctest.DocTestParser().get_doctest(block, ns, "README", README, 0)
                runner = doctest.DocTestRunner(
                    optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
                )
                runner.run(test)
                assert runner.failures == 0, block
            else:
                exec(compile(block, README, "exec"), ns)
    finally:
        import daskray

        daskray.disable()
        dask.config.refresh()
    assert ns["done"] == ["a", "b"]  # the callback example saw both tasks finish
    assert ns["z"].compute(scheduler=ns["daskray"].get) == 3000
    assert (tmp_path / "daskray-report.html").stat().st_size > 0
    assert "traceEvents" in (tmp_path / "daskray-trace.json").read_text()
    assert "spin" in ns["profile"]["prefixes"]
    assert ns["back"].v.sum().compute(scheduler=ns["daskray"].get) == 1000.0  # the hand-off
    assert ns["ds"].num_blocks() == 4


def _commands() -> list[list[str]]:
    """The ``daskray ...`` lines of the README's command-line block, as argument lists."""
    text = _readme()
    block = re.search(r"## Command line\n\n```bash\n(.*?)```", text, flags=re.S).group(1)
    out = []
    for line in block.splitlines():
        words = line.split("#")[0].split()
        assert words[0] == "daskray", line
        out.append([w.strip("[]") for w in words[1:]])
    return out


# the README's commands as a user runs them (demo beside ray_dask_get, bench, tune, info):
# two minutes, nothing specific to the graph core, so CI runs it once (compiled-core pass)
@pytest.mark.once
def test_readme_commands_run(ray_ctx, tmp_path, monkeypatch, capsys):
    """Each command of the README runs (at a small scale: ``--scale`` given last wins)."""
    from daskray import cli

    monkeypatch.chdir(tmp_path)
    commands = _commands()
    assert [c[0] for c in commands] == ["demo", "bench", "bench", "tune", "info"]
    for argv in commands:
        if argv[0] in ("bench", "tune"):
            argv = [*argv, "--scale", "0.002"]
        if argv[0] == "tune":
            argv = [*argv, "--repeat", "1"]
        assert cli.main(argv) == 0, argv
    out = capsys.readouterr().out
    assert "ray_dask_get" in out and "with the profile" in out and "compiled core" in out
    assert (tmp_path / "daskray-bench.png").exists() and (
        tmp_path / "daskray-profile.json"
    ).exists()
