"""The ML pipeline runs end to end at a small size: ``daskray demo --ml`` and
``examples/ml_pipeline.py`` (dask ETL -> Ray Data map_batches inference with a scikit-learn
model -> dask aggregate), on the session's Ray."""

from __future__ import annotations

import os
import runpy

import numpy as np
import pytest

from daskray import cli

# Ray Data actor pools and a whole pipeline: nothing here depends on which graph core plans,
# so CI runs this module once, in its compiled-core pass
pytestmark = pytest.mark.once

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "ml_pipeline.py")


def test_demo_ml(ray_ctx, capsys):
    assert cli.main(["demo", "--ml", "--rows", "40000"]) == 0
    out = capsys.readouterr().out
    assert "hand-off to Ray Data (2 blocks)" in out and "Ray Data map_batches inference" in out
    assert "R^2 0.99" in out


def test_example_pipeline(ray_ctx):
    example = runpy.run_path(EXAMPLE)  # not as __main__: it reuses the session's Ray
    per_store = example["main"](rows=20_000, partitions=4)
    assert list(per_store.index) == list(range(8))
    assert (per_store.err < 0.2).all()  # the model fits: noise is 0.1
    np.testing.assert_allclose(per_store.pred, per_store.y, atol=0.05)
