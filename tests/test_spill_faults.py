"""Faults in the middle of a beyond-memory shuffle: the object-spilling directory breaks.

Ray (2.60) does not fail a task when its spilling directory is deleted or made unwritable: its
IO workers log the ``FileNotFoundError``/``PermissionError`` and the raylet retries the spills
and the restores forever, so the compute hangs. daskray's gather notices the stall, looks at
the directory and raises :class:`daskray._ray.SpillDirectoryError` naming it and the compute.

Each scenario runs in a subprocess driver with its own Ray (an 80 MiB store)::

    driver                                   fault thread
    ------                                   ------------
    ray.init(store 80 MiB, spill=DIR)
    shuffle 200 MiB (made in tasks) ----+    wait until Ray has spilled into DIR
                                        |    break DIR (rmtree / chmod 000), note the time
    SpillDirectoryError <---------------+
    restore DIR (mkdir / chmod 755)
    shuffle 160 MiB again: correct

As root, ``chmod 000`` stops nobody: the chmod driver runs without the capabilities that let
root ignore permissions (``CAP_DAC_OVERRIDE``, ``CAP_DAC_READ_SEARCH``, dropped from its
bounding set before it starts), as an ordinary user's would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.once

DRIVER = """
import json, os, shutil, sys, threading, time
import dask, ray
import daskray
from daskray import bigbench as bb
from daskray._ray import SpillDirectoryError

spill, mode = sys.argv[1], sys.argv[2]
ray.init(address="local", num_cpus=2, object_store_memory=80 * 2**20, include_dashboard=False,
         object_spilling_directory=spill, log_to_driver=False)
daskray.enable()
fault = {}

def spilled():
    try:
        return any(any(os.scandir(s.path)) for s in os.scandir(spill) if s.is_dir())
    except OSError:  # a file Ray is deleting
        return False

def inject():
    while not spilled():
        time.sleep(0.05)
    if mode == "delete":
        shutil.rmtree(spill)
    else:
        os.chmod(spill, 0)
    fault["at"] = time.monotonic()

def shuffle(mib):
    layout = bb.plan_layout("shuffle", mib * 2**20, 16)
    (parts,) = dask.compute(bb.build(layout))
    seen = bb.observe("shuffle", parts)
    return seen["rows"] == layout.n and seen["distinct"] == layout.distinct_k

out = {}
with dask.config.set({"dataframe.shuffle.method": "tasks", "daskray.spill-check-s": 5}):
    threading.Thread(target=inject, daemon=True).start()
    try:
        shuffle(200)
        out["error"] = out["type"] = None
    except Exception as e:
        out["after_fault_s"] = time.monotonic() - fault["at"]
        out["error"] = "\\n".join([str(e), *getattr(e, "__notes__", ())])
        out["type"] = type(e).__name__
        out["filename"] = getattr(e, "filename", None)
    if out["type"] != "SpillDirectoryError":  # the raylet died: no next compute
        print(json.dumps(out))
        sys.exit(0)
    if mode == "delete":
        os.makedirs(spill, exist_ok=True)  # Ray may have made it anew
    else:
        os.chmod(spill, 0o755)
    t = time.monotonic()
    out["next_ok"] = shuffle(160)
    out["next_s"] = time.monotonic() - t
print(json.dumps(out))
ray.shutdown()
"""


def _without_dac_override() -> None:
    """In the child, before exec: drop the capabilities that let root ignore file modes from
    the bounding set (an exec'd root process then never has them)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def _run(tmp_path, mode: str) -> dict:
    spill = tmp_path / "spill"
    spill.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    root = os.geteuid() == 0 and mode == "chmod"
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(DRIVER), str(spill), mode],
        capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path,
        preexec_fn=_without_dac_override if root else None,
    )  # fmt: skip
    if not spill.exists():
        spill.mkdir()
    spill.chmod(0o755)  # for pytest to clean up
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no result: {proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1])


def test_a_deleted_spilling_directory_fails_the_shuffle_and_the_next_one_runs(tmp_path):
    """Ray's IO workers make the deleted directory anew (the test's mkdir finds it there),
    but what was spilled in it is lost and Ray retries its restores forever."""
    _check(tmp_path, _run(tmp_path, "delete"))


@pytest.mark.xfail(
    reason="sometimes (2 runs in 4 here) Ray 2.60's raylet aborts (dlmalloc.cc create_buffer: "
    "Permission denied, its fallback allocation in the spilling directory), during the "
    "shuffle or the next one: LocalRayletDiedError (daskray notes the directory if it is "
    "still broken) and the Ray session is gone",
    strict=False,
)
def test_an_unwritable_spilling_directory_fails_the_shuffle_and_the_next_one_runs(tmp_path):
    got = _run(tmp_path, "chmod")
    assert str(tmp_path / "spill") in got["error"], got  # named, SpillDirectoryError or not
    assert got["after_fault_s"] < 60
    _check(tmp_path, got)


def _check(tmp_path, got: dict) -> None:
    assert got["error"] is not None, "the shuffle finished with its spilling directory broken"
    assert got["type"] == "SpillDirectoryError", got["error"]
    spill = str(tmp_path / "spill")
    assert got["filename"].startswith(spill)
    assert spill in got["error"] and "summarize" in got["error"]
    assert "exchange" in got["error"]  # the shuffle's tasks are named
    assert got["after_fault_s"] < 60
    assert got["next_ok"], "the next shuffle, with the directory restored, was wrong"


def test_the_watch_tells_a_directory_made_anew_from_the_one_it_holds(tmp_path, monkeypatch):
    """No Ray here: the spilling paths are set by hand. A directory deleted and made anew at
    once may get the freed inode number back on many file systems; the watch holds the first
    one open, so its number cannot be reused and the new one is told apart."""
    import shutil

    from daskray import _ray

    top, sub = tmp_path / "spill", tmp_path / "spill" / "ray_spilled_objects_node"
    top.mkdir()
    monkeypatch.setattr(_ray, "_spill_cache", [[(str(top), str(sub))]])
    fds = _ray.spill_watch()
    try:
        assert fds[0] is not None and fds[1] is None  # Ray makes the subdirectory later
        assert _ray.spill_fault(fds) is None
        sub.mkdir()
        fds[1] = _ray.spill_watch()[1]
        assert _ray.spill_fault(fds) is None
        shutil.rmtree(top)
        assert _ray.spill_fault(fds)[1:] == ("does not exist (deleted?)", str(top))
        sub.mkdir(parents=True)  # as Ray's IO workers do
        code, wrong, path = _ray.spill_fault(fds)
        assert (wrong.startswith("was deleted and made anew"), path) == (True, str(top))
        assert _ray.spill_fault() is None  # without the watch, nothing looks wrong
    finally:
        _ray.close_watch(fds)
