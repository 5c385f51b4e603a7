"""The daskray command line: bench (JSON + PNG chart) and info."""

from __future__ import annotations

import json

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
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "tiny-tree" in capsys.readouterr().out


def test_bench_rejects_unknown_workload(ray_ctx, tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit):
        cli.main(["bench", "nope", "--output", str(tmp_path / "x")])
    assert "unknown workloads ['nope']" in capsys.readouterr().err


def test_info(ray_ctx, capsys):
    assert cli.main(["info"]) == 0
    text = capsys.readouterr().out
    assert f"compiled core: {_graph.COMPILED}" in text
    assert "ray cluster: 1 node(s)" in text and "'GPU': 1.0" in text


def test_unknown_command(capsys):
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err
