"""Dask ETL -> Ray Data inference -> dask aggregate, in one program on one Ray cluster.

    python examples/ml_pipeline.py [--rows 2000000] [--address auto]

The data moves through Ray's object store only: daskray computes the dask dataframe on Ray and
hands Ray Data the partitions' ObjectRefs (``daskray.to_ray_dataset``); Ray Data's actors score
the blocks with a scikit-learn model (loaded once per actor); daskray wraps the scored blocks'
refs as a dask dataframe (``daskray.from_ray_dataset``) and aggregates them where they are.
"""

from __future__ import annotations

import argparse

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import ray
from sklearn.linear_model import LinearRegression

import daskray

FEATURES = ["x1", "x2", "x3", "x3_sq"]


def sales(part: int, rows: int) -> pd.DataFrame:
    """Raw records, made in a Ray task: a few have a bad ``x1``."""
    rng = np.random.default_rng(part)
    x1, x2, x3 = rng.random(rows) * 10, rng.random(rows), rng.normal(size=rows)
    y = 3 * x1 - 2 * x2 + x3**2 + rng.normal(scale=0.1, size=rows)
    x1[rng.random(rows) < 0.01] = -1.0
    return pd.DataFrame({"store": rng.integers(0, 8, rows), "x1": x1, "x2": x2, "x3": x3, "y": y})


class Predictor:
    """One per Ray Data actor: the model arrives once, then scores batch after batch."""

    def __init__(self, model):
        self.model = model

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        return batch.assign(pred=self.model.predict(batch[FEATURES]))


def main(rows: int = 2_000_000, partitions: int = 100) -> pd.DataFrame:
    # 1. dask ETL, computed on Ray by daskray
    raw = dd.from_map(sales, range(partitions), rows=rows // partitions)
    clean = raw[raw.x1 >= 0]
    clean = clean.assign(x3_sq=clean.x3**2)
    sample = clean.partitions[: max(1, partitions // 10)].compute(scheduler=daskray.get)
    model = LinearRegression().fit(sample[FEATURES], sample.y)

    # 2. hand-off: the partitions' ObjectRefs become the Dataset's blocks
    ds = daskray.to_ray_dataset(clean)

    # 3. Ray Data batch inference on a pool of actors
    scored = ds.map_batches(
        Predictor,
        fn_constructor_args=(model,),
        batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(size=2),
        num_cpus=0.5,
    )

    # 4. back into dask, aggregated by daskray where the blocks are
    back = daskray.from_ray_dataset(scored)
    back = back.assign(err=(back.pred - back.y).abs())
    (per_store,) = dask.compute(
        back.groupby("store")[["y", "pred", "err"]].mean(), scheduler=daskray.get
    )
    return per_store


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--partitions", type=int, default=100)
    parser.add_argument("--address", default=None, help="a Ray cluster (default: a local Ray)")
    args = parser.parse_args()
    if not ray.is_initialized():
        ray.init(address=args.address)
    print(main(args.rows, args.partitions).round(3).to_string())
