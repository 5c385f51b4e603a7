"""The daskray command line: subcommands, bench (JSON + PNG chart) and info."""

from __future__ import annotations

import json

import pytest

from daskray import _graph, cli


def test_bench_writes_json_and_chart(ray_ctx, tmp_path, capsys):
    out = tmp_path / "b"
    rc = cli.main(
        [
            "bench",
            "tiny-tree",
            "chains",
            "--scale",
            "0.002",
            "--schedulers",
            "daskray,sync",
            "--output",
            str(out),
        ]
    )
    assert rc == 0
    report = json.loads((tmp_path / "b.json").read_text())
    assert [r["workload"] for r in report["rows"]] == ["tiny-tree", "chains"]
    for row in report["rows"]:
        assert set(row["seconds"]) == {"daskray", "sync"} and row["agree"]
        assert all(t > 0 for t in row["seconds"].values())
        assert all(0 < gb < 64 for gb in row["peak_rss_gb"].values())  # the driver's, sampled
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "tiny-tree" in capsys.readouterr().out


def test_bench_rejects_unknown_workload(ray_ctx, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["bench", "nope", "--output", str(tmp_path / "x")])
    assert "unknown workloads ['nope']" in capsys.readouterr().err


def test_info(ray_ctx, capsys):
    assert cli.main(["info"]) == 0
    text = capsys.readouterr().out
    assert f"compiled core: {_graph.COMPILED}" in text
    assert "ray cluster: 1 node(s)" in text and "'GPU': 1.0" in text


def test_unknown_command_exits_nonzero_with_usage(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["frobnicate"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: daskray") and "invalid choice: 'frobnicate'" in err


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "bench", "tune", "info"):
        assert f"    {command} " in out, command


def test_no_command_runs_the_demo(monkeypatch):
    """``daskray`` and ``daskray --small`` run the demo, with its options."""
    from daskray import demo

    seen = []
    monkeypatch.setattr(demo, "run", lambda args: seen.append(args) or 0)
    assert cli.main([]) == 0 and cli.main(["--small", "--repeat", "1"]) == 0
    assert [(a.small, a.repeat) for a in seen] == [(False, 2), (True, 1)]


def test_bench_plan_only_times_interning_and_planning(tmp_path, capsys):
    out = tmp_path / "p"
    assert (
        cli.main(
            ["bench", "tiny-tree", "chains", "--plan-only", "--scale", "0.01", "--output", str(out)]
        )
        == 0
    )
    rows = json.loads((tmp_path / "p.json").read_text())["rows"]
    assert [(r["workload"], r["tasks"]) for r in rows] == [("tiny-tree", 208), ("chains", 201)]
    assert all(r["plan_s"] > 0 and r["groups"] >= 1 for r in rows)
    assert "us/task" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["bench", "transpose", "--plan-only", "--output", str(out)])
    assert "--plan-only times raw graphs" in capsys.readouterr().err


def test_peak_rss_sees_memory_that_comes_and_goes_between_samples():
    """The driver's peak comes from the kernel's high-water mark, reset on entry: a compiled
    loop holds the GIL for seconds, so a sampling thread alone misses what it allocates and
    frees (here the sampler runs only on entry and exit)."""
    import os

    from daskray import bench

    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("no resettable high-water mark (Linux /proc/self/clear_refs)")
    before = bench.rss()
    with bench.PeakRss(interval=3600) as peak:
        transient = b"\1" * 300_000_000
        del transient
    assert bench.rss() < before + 100_000_000
    assert peak.peak >= before + 280_000_000
