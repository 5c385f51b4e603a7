"""``daskray bench big`` (:mod:`daskray.bigbench`): its arguments, the data's keys, the
checksums and the checks they feed, every operation checked on dask's threaded scheduler, the
table's rows, and the subprocesses: a run past its limit (DNF), a child that fails, a whole
small command."""

from __future__ import annotations

import json

import dask
import numpy as np
import pandas as pd
import pytest

from daskray import bigbench, cli
from daskray.bigbench import Layout, expect, make_part, observe, summarize, verify


def test_a_store_below_rays_minimum_is_refused(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "big", "--store-gb", "0.05"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: daskray bench big")
    assert "--store-gb 0.05 is 51.2 MiB: Ray's object store needs at least 75 MiB" in err
    assert bigbench.check_store(0.0733) >= bigbench.MIN_STORE_BYTES


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--op", "shuffle,nope"], "unknown operations ['nope']; choose from shuffle, set_index"),
        (["--schedulers", "daskray,dask"], "unknown schedulers ['dask']"),
        (["--limit", "soon"], "--limit: 'soon' is not SECONDS or NAME=SECONDS"),
        (["--limit", "p2p=0"], "--limit: 'p2p=0' must be a positive number of seconds"),
        (["--limit", "x=3"], "--limit: unknown scheduler 'x'"),
        (["--gb", "0"], "--gb 0: the data size must be positive"),
        (["--partitions", "0"], "--partitions 0: at least 1"),
    ],
)
def test_bad_arguments_exit_with_what_to_do(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "big", *argv])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_limits_take_a_default_and_per_scheduler_seconds():
    assert bigbench.parse_limits("") == {"*": 1800.0}
    assert bigbench.parse_limits("ray_dask_get=300") == {"*": 1800.0, "ray_dask_get": 300.0}
    assert bigbench.parse_limits("60, disk=5") == {"*": 60.0, "disk": 5.0}


def test_bench_big_has_its_own_help_and_bench_keeps_its_workloads(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "big", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: daskray bench big") and "--store-gb" in out
    args = cli.parser().parse_args(["bench", "tiny-tree", "chains"])  # unchanged
    assert args.workloads == ["tiny-tree", "chains"] and args.run is cli.bench
    with pytest.raises(SystemExit):
        cli.main(["bench", "--help"])
    assert "daskray bench big --help" in capsys.readouterr().out


def test_layouts_size_partitions_at_about_20_mib():
    shuffle = bigbench.plan_layout("shuffle", 2**30)
    assert shuffle.nparts == 51
    assert abs(shuffle.n * bigbench.ROW_BYTES - 2**30) < bigbench.ROW_BYTES * shuffle.nparts
    merge = bigbench.plan_layout("merge", 2**30)
    assert (merge.nparts, merge.right_parts) == (34, 17) and merge.rows == merge.right_rows
    assert bigbench.plan_layout("merge", 1e6, 2).right_parts == 2  # never a broadcast join
    rechunk = bigbench.plan_layout("rechunk", 2**30, partitions=16)
    assert rechunk.rows * bigbench.WIDTH * 8 == 2**26
    assert bigbench.column_chunks(rechunk) == (rechunk.n, 4)  # 16 blocks out, 64 MiB each
    with pytest.raises(ValueError, match="unknown operation 'sort'"):
        bigbench.plan_layout("sort", 1e6)


def test_keys_stand_twice_over_the_int64_range_and_groups_hold_ten_rows():
    layout = Layout("shuffle", nparts=4, rows=1000)
    parts = [make_part(i, layout) for i in range(4)]
    df = pd.concat(parts)
    assert df["k"].value_counts().eq(2).all() and df["k"].nunique() == layout.distinct_k
    assert df["k2"].value_counts().eq(10).all() and df["k2"].nunique() == layout.distinct_k2
    assert df["k"].min() < -(2**62) and df["k"].max() > 2**62
    # a key's two copies stand in different partitions: leaving rows in place is no shuffle
    assert sum(p["k"].nunique() for p in parts) == 2 * layout.distinct_k
    assert make_part(2, layout).equals(parts[2])  # seeded
    assert list(df.dtypes.astype(str)) == ["int64", "int64", "float64", "float64", "float64"]


def test_merge_keys_match_half_the_left_rows_once():
    layout = bigbench.plan_layout("merge", 4e6, 4)
    left = pd.concat(make_part(i, layout) for i in range(layout.nparts))
    right = pd.concat(bigbench.make_right(j, layout) for j in range(layout.right_parts))
    assert right["k"].is_unique and len(right) == layout.right_n
    joined = left.merge(right, on="k")
    assert 0.45 < len(joined) / len(left) < 0.55
    expected = observe("merge", bigbench.expected_merge(left, layout))
    got = observe("merge", summarize(joined, "merge"))
    assert (got["rows"], got["hash"]) == (expected["rows"], expected["hash"])


def test_checksums_ignore_row_order_and_see_any_change():
    df = make_part(0, Layout("shuffle", nparts=2, rows=500))
    shuffled = df.sample(frac=1.0, random_state=1)
    assert bigbench.hash_sum(shuffled) == bigbench.hash_sum(df)
    changed = df.copy()
    changed.loc[3, "x"] = np.nextafter(changed.loc[3, "x"], 2.0)
    assert bigbench.hash_sum(changed) != bigbench.hash_sum(df)
    assert bigbench.wrap_sum(np.array([2**62] * 4, dtype=np.int64)) == 0  # modulo 2**64
    assert bigbench.wrap_sum(np.array([], dtype=np.int64)) == 0


def _totals(op: str, parts: list[pd.DataFrame]) -> dict:
    return observe(op, pd.concat([summarize(p, op) for p in parts], ignore_index=True))


def test_a_split_key_or_overlapping_ranges_fail_the_checks():
    layout = Layout("shuffle", nparts=2, rows=500)
    parts = [make_part(i, layout) for i in range(2)]
    whole = pd.concat(parts, ignore_index=True)
    expected = expect(layout, [pd.concat([summarize(p, "input") for p in parts])])
    by_parity = [whole[whole["k"] % 2 == 0], whole[whole["k"] % 2 == 1]]
    assert verify(_totals("shuffle", by_parity), expected) == []
    assert verify(_totals("shuffle", parts), expected) == ["distinct 1000, expected 500"]

    layout = Layout("sort_values", nparts=2, rows=500)
    expected = expect(layout, [pd.concat([summarize(p, "input") for p in parts])])
    s = whole.sort_values("k", ignore_index=True)
    cut = next(i for i in range(500, 1000) if s["k"][i - 1] != s["k"][i])
    assert verify(_totals("sort_values", [s[:cut], s[cut:]]), expected) == []
    swapped = verify(_totals("sort_values", [s[cut:], s[:cut]]), expected)
    assert swapped == ["partitions unsorted, or their key ranges overlap"]
    pair = next(i for i in range(1, 1000) if s["k"][i - 1] == s["k"][i])  # a key's two copies
    split = verify(_totals("sort_values", [s[:pair], s[pair:]]), expected)
    assert "partitions unsorted, or their key ranges overlap" in split
    unsorted = verify(_totals("sort_values", [s[:cut][::-1], s[cut:]]), expected)
    assert unsorted == ["partitions unsorted, or their key ranges overlap"]
    lost = verify(_totals("sort_values", [s[: cut - 1], s[cut:]]), expected)
    assert lost[0] == "rows 999, expected 1000" and lost[1].startswith("hash ")


@pytest.mark.parametrize("op", bigbench.OPS)
def test_each_operation_checks_out_on_dask_threads(op):
    """What ``daskray bench big`` checks holds for dask's own tasks shuffle and rechunk."""
    layout = bigbench.plan_layout(op, 4e6, 8 if op == "rechunk" else 4)
    config = {"dataframe.shuffle.method": "tasks", "array.rechunk.method": "tasks"}
    with dask.config.set(config, scheduler="threads"):
        expected = expect(layout, list(dask.compute(*bigbench.reference(layout))))
        (parts,) = dask.compute(bigbench.build(layout))
    got = observe(op, parts)
    assert verify(got, expected) == []
    assert expected["input_bytes"] >= 0.99 * 4e6 and got["parts"] >= layout.nparts
    tiny = layout.tiny()
    assert tiny.op == op and tiny.n <= layout.n


def _row(**changes) -> dict:
    row = {
        "scheduler": "daskray",
        "op": "merge",
        "data_gib": 0.5,
        "store_gib": 0.08,
        "partitions": 17,
        "right_partitions": 8,
        "seconds": 12.345,
        "mb_s_per_core": 21.7,
        "peak_gib": 1.234,
        "idle_gib": 0.9,
        "status": "ok",
        "error": None,
    }
    return {**row, **changes}


def test_rows_print_under_the_header():
    header = bigbench.HEADER.split()
    assert header[:4] == ["scheduler", "op", "data", "GiB"] and header[-1] == "ok"
    ok = bigbench.format_row(_row())
    assert ok.split() == "daskray merge 0.50 0.080 17+8 12.3 21.70 1.23 0.90 yes".split()
    assert len(ok) == len(bigbench.HEADER)
    dnf = bigbench.format_row(
        _row(op="shuffle", store_gib=None, right_partitions=None, seconds=None, status="DNF")
        | {"mb_s_per_core": None, "error": "did not finish within 300 s"}
    )
    assert dnf.split()[:6] == ["daskray", "shuffle", "0.50", "-", "17", "DNF"]
    assert dnf.endswith("1.23     0.90     DNF  did not finish within 300 s")
    wrong = bigbench.format_row(_row(status="wrong", error="rows 9, expected 10"))
    assert wrong.endswith("WRONG  rows 9, expected 10")


def test_a_missing_distributed_makes_a_skipped_p2p_row(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "distributed" else real(name)
    )
    why = bigbench._missing("p2p")
    assert why == "dask distributed is not installed (pip install distributed): no p2p row"
    assert bigbench._missing("disk") is None
    layout = Layout("shuffle", nparts=2, rows=10)
    row = bigbench.make_row("p2p", layout, 2, 2**27, {"skipped": why}, {})
    assert (row["status"], row["ok"], row["error"], row["seconds"]) == ("skipped", False, why, None)


def test_a_run_past_its_limit_is_dnf_and_leaves_nothing_behind(tmp_path):
    lines: list[str] = []
    report = bigbench.run_family(
        ["shuffle"], 0.15, 0.08, ["disk"], cpus=2, limits={"disk": 0.05}, tmpdir=str(tmp_path),
        echo=lines.append,
    )  # fmt: skip
    (row,) = report["rows"]
    assert report["reference"]["shuffle"]["expected"]["exact"]["rows"] > 0  # not bound by it
    assert (row["status"], row["ok"], row["seconds"], row["limit_s"]) == ("DNF", False, None, 0.05)
    assert row["error"] == "did not finish within 0.05 s"
    assert row["idle_gib"] > 0 and row["store_gib"] is None
    assert lines[0] == bigbench.HEADER and " DNF " in lines[1]
    assert list(tmp_path.iterdir()) == []  # spill and work folders removed


def test_a_failing_child_reports_its_error(tmp_path):
    layout = Layout("shuffle", nparts=2, rows=10)
    spec = {"layout": bigbench.asdict(layout), "cpus": 1, "store_bytes": 2**27}
    result = bigbench.run_child({**spec, "scheduler": "nope"}, 60.0, str(tmp_path))
    assert result["error"].startswith("ValueError: unknown scheduler 'nope'; choose from daskray")
    row = bigbench.make_row("nope", layout, 1, 2**27, result, {})
    assert row["status"] == "error" and row["elapsed_s"] is None  # it failed before the run
    assert list(tmp_path.iterdir()) == []
    died = tmp_path / "log"
    died.write_text("Traceback ...\nMemoryError\n")
    why = "killed by SIGKILL (out of memory?): Traceback ...\nMemoryError"
    assert bigbench._died(-9, str(died)) == why
    assert bigbench._died(3, str(tmp_path / "none")) == "exited with status 3"


def test_the_command_runs_each_scheduler_and_writes_json(tmp_path, capsys):
    out = tmp_path / "big"
    argv = ["bench", "big", "--gb", "0.02", "--store-gb", "0.08", "--num-cpus", "2"]
    argv += ["--schedulers", "disk,p2p", "--tmpdir", str(tmp_path), "--output", str(out)]
    assert cli.main(argv) == 0
    report = json.loads((tmp_path / "big.json").read_text())
    assert [(r["scheduler"], r["op"], r["status"]) for r in report["rows"]] == [
        ("disk", "shuffle", "ok"),
        ("p2p", "shuffle", "ok"),
    ]
    for row in report["rows"]:
        assert row["seconds"] > 0 and row["mb_s_per_core"] > 0 and row["data_gib"] > 0.019
        assert row["peak_gib"] >= row["idle_gib"] > 0
    assert report["rows"][1]["store_gib"] == pytest.approx(0.08)
    text = capsys.readouterr().out
    assert bigbench.HEADER in text and f"wrote {out}.json" in text
    assert [p.name for p in tmp_path.iterdir()] == ["big.json"]
