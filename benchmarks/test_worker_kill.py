"""A Ray worker SIGKILLed in the middle of a beyond-memory shuffle (issue #11 point 3).

One driver of its own (a local Ray with a small object store and a spilling directory), one
process for both runs: the shuffle fault-free (a second, warm run), then the same shuffle again
while a thread kills one of Ray's worker processes busy with a task (``ray::<task>``; never the
raylet or Ray's agents) once 30% of the fault-free time is gone (should the run end first, as
on a loaded machine, it is run again with the kill twice as soon, up to 6 times). Ray retries
the dead worker's task and rebuilds the objects it owned from lineage (the driver owns every
piece of the exchange); the answer must be every row and the same checksum, and the ratio of
the two times is recorded (the issue's target is <= 1.5; timings are never asserted). CI runs
it small:
``DASKRAY_BENCH_KILL_GB`` (default 0.25) of data through ``DASKRAY_BENCH_KILL_STORE_GB``
(0.08) of store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

GB = float(os.environ.get("DASKRAY_BENCH_KILL_GB", "0.25"))
STORE_GB = float(os.environ.get("DASKRAY_BENCH_KILL_STORE_GB", "0.08"))

DRIVER = """
import json, os, signal, sys, tempfile, threading, time, shutil
import dask, numpy as np, pandas as pd, psutil, ray
import daskray
from daskray.bigbench import frame, plan_layout

gb, store = float(sys.argv[1]), float(sys.argv[2])
spill = tempfile.mkdtemp(prefix="daskray-kill-")
ray.init(address="local", num_cpus=2, object_store_memory=int(store * 2**30),
         object_spilling_directory=spill, include_dashboard=False, log_to_driver=False)
daskray.enable()
layout = plan_layout("shuffle", gb * 2**30)

def summary(p):
    h = pd.util.hash_pandas_object(p, index=False).to_numpy()
    return pd.DataFrame({"rows": [len(p)], "sum": [int(h.sum(dtype="uint64")) % 2**61]})

def run(layout=layout):
    t = time.perf_counter()
    got = frame(layout).shuffle("k").map_partitions(summary).compute()
    return time.perf_counter() - t, int(got.rows.sum()), sum(map(int, got["sum"])) % 2**61

def workers():  # Ray's workers running a task now: not idle or IO workers, not Ray's agents
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            name = (p.cmdline() or [""])[0]
        except psutil.Error:
            continue
        if name.startswith("ray::") and not name.startswith("ray::IDLE") and "Agent" not in name:
            out.append((p, name))
    return out

run(plan_layout("shuffle", 2**24))  # warm-up: workers started, modules imported
run()  # ... and the spilling directory and Ray's IO workers
clean, rows, checksum = run()
killed = []
done = threading.Event()
def kill(after):
    time.sleep(after)
    while not killed and not done.is_set():  # the first worker busy with a task
        for p, name in workers()[:1]:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.Error:  # it ended between the listing and the kill
                continue
            killed.append(name)
        time.sleep(0.005)

for attempt in range(6):  # a run that ends before the kill is run again, the kill sooner
    done.clear()
    t = threading.Thread(target=kill, args=(clean * 0.3 / 2**attempt,), daemon=True)
    t.start()
    faulty, rows2, checksum2 = run()
    done.set()
    t.join()
    if killed:
        break
ray.shutdown()
shutil.rmtree(spill, ignore_errors=True)
print(json.dumps({"clean": clean, "faulty": faulty, "rows": [rows, rows2],
                  "checksum": [checksum, checksum2], "killed": killed,
                  "expected_rows": layout.nparts * layout.rows}))
"""


def test_a_worker_killed_mid_shuffle(benchmark, record, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}

    def once():
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(DRIVER), str(GB), str(STORE_GB)],
            capture_output=True, text=True, timeout=1200, env=env, cwd=tmp_path,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-4000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    got = benchmark.pedantic(once, rounds=1, iterations=1)
    assert got["killed"], "no Ray worker was running to kill"
    assert got["rows"] == [got["expected_rows"]] * 2  # every row, with and without the fault
    assert got["checksum"][0] == got["checksum"][1]
    record(
        "kill-a-worker",
        {"fault-free": got["clean"], "worker killed": got["faulty"]},
        gib=GB,
        store_gib=STORE_GB,
        ratio=round(got["faulty"] / got["clean"], 2),
    )
