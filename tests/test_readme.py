"""The README's Python examples run, in order, in one namespace (against the session Ray,
which declares a GPU and a ``special`` resource); ``>>>`` blocks run as doctests."""

from __future__ import annotations

import doctest
import os
import re

import dask

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", open(README).read(), flags=re.S)


def test_readme_examples_run(ray_ctx):
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
