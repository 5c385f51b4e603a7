"""dask's callback protocol and ProgressBar, driven by execution on Ray."""

from __future__ import annotations

import io
import re
import time

import dask.array as da
import pytest
from dask.callbacks import Callback
from dask.diagnostics import ProgressBar

import daskray


def slow_inc(x):
    time.sleep(0.05)
    return x + 1


class Recorder(Callback):
    def __init__(self):
        super().__init__()
        self.events = []
        self.state = None

    def _start(self, dsk):
        self.events.append(("start", len(dsk)))

    def _start_state(self, dsk, state):
        self.state = state
        self.events.append(("start_state", len(state["waiting"])))

    def _pretask(self, key, dsk, state):
        self.events.append(("pre", key))

    def _posttask(self, key, result, dsk, state, worker_id):
        self.events.append(("post", key, len(state["finished"])))

    def _finish(self, dsk, state, errored):
        self.events.append(("finish", errored, len(state["finished"])))


@pytest.mark.parametrize("mode", ["ray", "unfused", "debug"])
def test_callback_protocol(ray_ctx, mode):
    kw = {"fuse": False} if mode == "unfused" else {"debug": True} if mode == "debug" else {}
    dsk = {("x", i): (slow_inc, i) for i in range(6)}
    dsk["total"] = (sum, [("x", i) for i in range(6)])
    with Recorder() as rec:
        assert daskray.get(dsk, "total", **kw) == 21
    kinds = [e[0] for e in rec.events]
    assert kinds[0] == "start" and kinds[1] == "start_state" and kinds[-1] == "finish"
    assert rec.events[1] == ("start_state", 7)
    pre = [e[1] for e in rec.events if e[0] == "pre"]
    post = [e[1] for e in rec.events if e[0] == "post"]
    assert sorted(map(str, pre)) == sorted(map(str, dsk)) == sorted(map(str, post))
    for key in dsk:  # every task's pretask comes before its posttask
        assert kinds.index("pre") <= rec.events.index(("pre", key))
        i_pre = rec.events.index(("pre", key))
        i_post = next(i for i, e in enumerate(rec.events) if e[0] == "post" and e[1] == key)
        assert i_pre < i_post
    # "finished" grows as Ray tasks finish: the last posttask sees every task finished
    assert rec.events[-1] == ("finish", False, 7)
    assert not rec.state["waiting"] and not rec.state["running"]


def test_callbacks_keyword_and_errors(ray_ctx):
    def boom(x):
        raise ValueError("no")

    rec = Recorder()
    with pytest.raises(ValueError):
        daskray.get({"a": 1, "b": (boom, "a")}, "b", callbacks=[rec._callback])
    assert rec.events[-1][:2] == ("finish", True)


def test_progress_bar_moves_with_execution(ray_ctx):
    """A ProgressBar over a compute whose groups finish one by one shows intermediate states."""
    out = io.StringIO()
    x = da.ones(40, chunks=1).map_blocks(slow_inc, dtype=float).sum()
    with ProgressBar(dt=0.02, out=out):
        assert x.compute(scheduler=daskray.get, fuse=False) == 80
    text = out.getvalue()
    assert "100%" in text
    percents = {int(p) for p in re.findall(r"(\d+)% Completed", text)}
    assert any(0 < p < 100 for p in percents), text[-500:]
