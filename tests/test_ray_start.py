"""daskray on a Ray cluster started the way users start one: ``ray start`` processes.

::

    ray start --head --block   (2 CPUs)            one process group each, own --temp-dir and
    ray start --address=HEAD --block               free ports; stopped by pid (SIGTERM, then
        (1 CPU, 1 GPU declared, worker_node=1)     SIGKILL), never with `ray stop`

Token authentication stays on: every process of the cluster and every driver gets
``RAY_AUTH_MODE=token`` and the cluster's own ``RAY_AUTH_TOKEN`` (Ray 2.60 reads the token
from that variable before ``RAY_AUTH_TOKEN_PATH`` and ``~/.ray/auth_token``, so nothing is
written to the home directory). The drivers are subprocesses -- joining with
``ray.init(address="auto", _temp_dir=...)`` or through ``RAY_ADDRESS`` alone, as users do --
so the session's own Ray in this process (``ray_ctx``) is never touched. Each prints one JSON
line of what it saw.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from types import SimpleNamespace

import pytest

import daskray

# whole Ray clusters and driver processes: nothing here depends on which graph core plans,
# so CI runs this module once, in its compiled-core pass
pytestmark = [pytest.mark.cluster, pytest.mark.once]

RAY = os.path.join(os.path.dirname(sys.executable), "ray")


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 right now."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _node_ports() -> list[str]:
    nm, om, al, ag, me, rt = free_ports(6)
    return [
        f"--node-manager-port={nm}",
        f"--object-manager-port={om}",
        f"--dashboard-agent-listen-port={al}",
        f"--dashboard-agent-grpc-port={ag}",
        f"--metrics-export-port={me}",
        f"--runtime-env-agent-port={rt}",
    ]


def _stop(procs: list[subprocess.Popen]) -> None:
    """Stop ``ray start --block`` processes by their pids, all at once: SIGTERM (each drains
    and stops the processes it started), then SIGKILL to the process group of any that has
    not exited within 60 s."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture(scope="module")
def cluster():
    temp = tempfile.mkdtemp(prefix="daskray-", dir="/tmp")  # short: Ray's socket paths
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16))
    # no Serve proxies to quiesce: stop at SIGTERM without Ray's 30 s drain wait
    env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "0"
    gcs, client = free_ports(2)
    procs: list[subprocess.Popen] = []

    def start(args: list[str], log: str) -> None:
        with open(os.path.join(temp, log), "w") as out:
            procs.append(
                subprocess.Popen(
                    [RAY, "start", "--block", "--node-ip-address=127.0.0.1", *args,
                     *_node_ports(), "--disable-usage-stats"],
                    env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                )
            )  # fmt: skip

    try:
        start(
            ["--head", f"--temp-dir={temp}", f"--port={gcs}", "--num-cpus=2",
             "--include-dashboard=false", f"--ray-client-server-port={client}"],
            "head.log",
        )  # fmt: skip
        _wait_for(lambda: os.path.exists(os.path.join(temp, "ray_current_cluster")), procs)
        start(
            [f"--address=127.0.0.1:{gcs}", "--num-cpus=1", "--num-gpus=1",
             '--resources={"worker_node": 1}'],
            "worker.log",
        )  # fmt: skip
        yield SimpleNamespace(temp=temp, env=env, address=f"127.0.0.1:{gcs}", client=client)
    finally:
        _stop(procs)
        shutil.rmtree(temp, ignore_errors=True)


def _wait_for(ready, procs, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not ready():
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a `ray start` process exited while starting")
        if time.monotonic() > end:
            raise TimeoutError("the Ray head did not come up")
        time.sleep(0.2)


#: what every driver runs first: wait for both nodes, then import daskray
PRELUDE = """
import json, os, sys, time
import numpy as np
import ray
import dask, dask.array as da, dask.dataframe as dd, pandas as pd
import daskray

def wait_for_nodes(n=2):
    end = time.time() + 120
    while sum(x["Alive"] for x in ray.nodes()) < n:
        assert time.time() < end, "nodes missing"
        time.sleep(0.3)

def node_of(block):
    import ray
    return np.full(block.shape, ray.get_runtime_context().get_node_id(), dtype="U64")
"""


def drive(cluster, body: str, *args: str, env: dict | None = None, background=False):
    """Run a driver script (``PRELUDE`` + ``body``); its last stdout line, as JSON."""
    script = PRELUDE + textwrap.dedent(body)
    cmd = [sys.executable, "-c", script, *args]
    proc = subprocess.Popen(
        cmd, env={**cluster.env, **(env or {})}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, cwd=cluster.temp,
    )  # fmt: skip
    return proc if background else result_of(proc)


def result_of(proc: subprocess.Popen, timeout: float = 240.0) -> dict:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    assert proc.returncode == 0, f"driver failed ({proc.returncode}):\n{err[-4000:]}"
    return json.loads(out.strip().splitlines()[-1])


def test_address_auto_compute_handoff_and_gpu_pool(cluster):
    """``ray.init(address="auto", _temp_dir=...)``: annotated tasks run on the worker node,
    the Ray Data hand-off round-trips, and an actor pool asking for a GPU lands on the node
    that declares one."""
    got = drive(
        cluster,
        """
        ray.init(address="auto", _temp_dir=sys.argv[1], log_to_driver=False)
        wait_for_nodes()
        head = ray.get_runtime_context().get_node_id()
        x = da.arange(40, chunks=10)
        with dask.annotate(resources={"worker_node": 1}):
            on_worker = x.map_blocks(node_of, dtype="U64")
        where, total = dask.compute(on_worker, (x + 1).sum(), scheduler=daskray.get)

        pdf = pd.DataFrame({"a": np.arange(3000), "b": np.arange(3000) * 0.5})
        df = dd.from_pandas(pdf, npartitions=6)
        ds = daskray.to_ray_dataset(df)
        back = daskray.from_ray_dataset(ds).compute(scheduler=daskray.get)

        def load():
            return ray.get_runtime_context().get_node_id()

        def gpu_of(block):
            ids = ",".join(map(str, ray.get_gpu_ids()))
            return np.array([daskray.actor_state() + "|" + ids] * len(block), dtype="U80")

        with daskray.ActorPool("gpu", load, num_gpus=1, num_cpus=0):
            with dask.annotate(ray_actor_pool="gpu"):
                g = x.map_blocks(gpu_of, meta=np.array((), dtype="U80"))
            pooled = sorted(set(g.compute(scheduler=daskray.get).tolist()))
        print(json.dumps({
            "head": head, "worker_nodes": sorted(set(where.tolist())), "total": int(total),
            "blocks": ds.num_blocks(), "round_trip": bool(back.equals(pdf)),
            "pooled": pooled,
            "nodes": sorted(n["NodeID"] for n in ray.nodes() if n["Alive"]),
        }))
        """,
        cluster.temp,
    )
    worker = [n for n in got["nodes"] if n != got["head"]]
    assert len(got["nodes"]) == 2 and got["worker_nodes"] == worker
    assert got["total"] == sum(range(1, 41))
    assert got["blocks"] == 6 and got["round_trip"]
    assert got["pooled"] == [f"{worker[0]}|0"]  # the GPU node, GPU 0


TWO_DRIVERS = """
me, folder = int(sys.argv[1]), sys.argv[2]
other = 3 - me
# no ray.init: daskray connects through RAY_ADDRESS itself

def value(i, who):
    time.sleep(0.02)  # both drivers' tasks in flight together
    return np.full(4, i * 1000 + who)

keys = [("shared", i) for i in range(12)]
dsk = {k: (value, k[1], me) for k in keys}  # the same keys in both drivers, other values
from dask.highlevelgraph import HighLevelGraph
layer = {("kept", i): (np.full, 2, me * 10 + i) for i in range(4)}
kept = da.Array(HighLevelGraph.from_collections("kept", layer, dependencies=()), "kept",
                ((2,) * 4,), dtype=int)

daskray.get({"warm": (sum, [1, 2])}, "warm")
open(os.path.join(folder, f"ready-{me}"), "w").close()
while not os.path.exists(os.path.join(folder, "go")):
    time.sleep(0.05)
ok = []
for _ in range(6):
    got = daskray.get(dsk, keys)
    ok.append(all((v == i * 1000 + me).all() for i, v in enumerate(got)))
from dask.delayed import Delayed
only = Delayed(("only", me), {("only", me): (np.arange, 3)})
kept, only = dask.persist(kept, only, scheduler=daskray.get)
sums = [int(kept.sum().compute(scheduler=daskray.get)) for _ in range(3)]
refs = [v.ref.hex() for v in dict(kept.__dask_graph__()).values()
        if type(v).__name__ == "RayFuture"]
with open(os.path.join(folder, f"refs-{me}"), "w") as f:
    json.dump(refs, f)
while not os.path.exists(os.path.join(folder, f"refs-{other}")):
    time.sleep(0.05)
with open(os.path.join(folder, f"refs-{other}")) as f:
    theirs = json.load(f)
# the other driver's persisted keys and refs are not this driver's
from dask._task_spec import Task, TaskRef
try:
    daskray.get({"t": Task("t", np.sum, TaskRef(("only", other)))}, "t")
    by_key = "reachable"
except daskray.MissingDependencyError:
    by_key = "missing"
try:
    ray.get(ray.ObjectRef(bytes.fromhex(theirs[0])), timeout=5)
    by_ref = "reachable"
except Exception as e:
    by_ref = type(e).__name__
# the Ray Data hand-off both ways, through the RAY_ADDRESS connection
frame = dd.from_pandas(pd.DataFrame({"a": np.arange(600) * me}), npartitions=3)
back = daskray.from_ray_dataset(daskray.to_ray_dataset(frame)).compute(scheduler=daskray.get)
handoff = back.a.tolist() == list(range(0, 600 * me, me))
open(os.path.join(folder, f"done-{me}"), "w").close()
while not os.path.exists(os.path.join(folder, f"done-{other}")):
    time.sleep(0.05)  # keep this driver's values alive until the other has looked
print(json.dumps({"ok": ok, "sums": sums, "by_key": by_key, "by_ref": by_ref,
                  "mine_not_theirs": not set(refs) & set(theirs), "handoff": handoff,
                  "cpus": ray.cluster_resources()["CPU"]}))
"""


def test_two_drivers_with_identical_keys(cluster, tmp_path):
    """Two drivers that reach the cluster through ``RAY_ADDRESS`` alone compute graphs with the
    same keys at the same time: each gets its own values, and neither reaches the other's
    persisted values, by key or by ref; each hands a dataframe to Ray Data and back."""
    env = {"RAY_ADDRESS": cluster.address}
    procs = [drive(cluster, TWO_DRIVERS, str(me), str(tmp_path), env=env, background=True)
             for me in (1, 2)]  # fmt: skip
    try:
        end = time.monotonic() + 180
        while not all((tmp_path / f"ready-{me}").exists() for me in (1, 2)):
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            assert time.monotonic() < end, "drivers did not start"
            time.sleep(0.1)
        (tmp_path / "go").touch()
        results = [result_of(p) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for me, got in zip((1, 2), results):
        assert got["ok"] == [True] * 6
        assert got["sums"] == [2 * sum(me * 10 + i for i in range(4))] * 3
        assert got["by_key"] == "missing" and got["by_ref"] != "reachable"
        assert got["mine_not_theirs"] and got["cpus"] == 3.0
        assert got["handoff"]


def test_ray_client_is_refused_with_what_to_use_instead(cluster):
    # Ray Client's proxy starts one server process per client; on a loaded CI machine that
    # start failed once ("Starting Ray client server failed") before daskray was reached.
    # What is under test is daskray's refusal, so the connection is retried (a new server
    # each time) and, should every try fail, the servers' own logs are shown.
    try:
        got = drive(
            cluster,
            """
            for attempt in range(4):
                try:
                    ray.init(f"ray://127.0.0.1:{sys.argv[1]}")
                    break
                except ConnectionAbortedError:
                    if attempt == 3:
                        raise
                    time.sleep(5)
            try:
                daskray.get({"a": 1, "b": (sum, ["a", "a"])}, "b")
                print(json.dumps({"error": None}))
            except ConnectionError as e:
                print(json.dumps({"error": str(e)}))
            """,
            str(cluster.client),
        )
    except AssertionError as e:
        logs = os.path.join(cluster.temp, "session_latest", "logs")
        found = sorted(f for f in os.listdir(logs) if f.startswith("ray_client_server"))
        tails = [f"--- {f}\n" + open(os.path.join(logs, f)).read()[-1500:] for f in found]
        raise AssertionError("\n".join([str(e), *tails])) from None
    assert "does not run through Ray Client (this driver is a Ray Client)" in got["error"]
    assert "ray job submit" in got["error"] and "address='auto'" in got["error"]


def test_ray_client_address_is_refused_before_connecting(monkeypatch):
    from daskray import _ray

    monkeypatch.setattr(_ray.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(_ray.ray, "init", lambda *a, **k: pytest.fail("connected"))
    with pytest.raises(ConnectionError, match=r"address 'ray://10.0.0.1:10001'.*Ray Job"):
        daskray.get({"a": 1}, "a", address="ray://10.0.0.1:10001")
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    with pytest.raises(ConnectionError, match="does not run through Ray Client"):
        daskray.get({"a": 1}, "a")
