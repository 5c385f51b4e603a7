"""The dask ecosystem on daskray: xarray, zarr, dask-ml and dask-image give what they give on
dask's synchronous scheduler.

Each library is optional (``pip install daskray[ecosystem]``, which the ``test`` extra
includes): a test skips, saying which, when its library is missing. Data sets are small: these
tests check that the libraries' graphs, keywords (``flush=True``), futures (``.result()``),
locks and file handles work through daskray, not speed.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import dask
import dask.array as da
import numpy as np
import pytest

import daskray

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def need(module: str):
    return pytest.importorskip(module, reason=f"{module} is not installed (daskray[ecosystem])")


def need_engine(engine: str) -> None:
    need("netCDF4" if engine == "netcdf4" else "h5netcdf")


@pytest.fixture(scope="module")
def dataset():
    xr = need("xarray")
    rng = np.random.default_rng(0)
    time = np.arange("2026-01-01", "2026-03-02", dtype="datetime64[D]")
    return xr.Dataset(
        {
            "t2m": (("time", "y", "x"), rng.normal(280, 5, (len(time), 6, 8))),
            "rain": (("time", "y", "x"), rng.gamma(2.0, 1.0, (len(time), 6, 8)).astype("f4")),
        },
        coords={"time": time, "y": np.arange(6.0), "x": np.arange(8.0)},
        attrs={"title": "daskray test"},
    ).chunk({"time": 15, "y": 3})


# -- xarray: round trips through files -----------------------------------------------------


@pytest.mark.parametrize("engine", ["netcdf4", "h5netcdf"])
def test_xarray_netcdf_round_trip(ray_ctx, dataset, tmp_path, engine):
    """to_netcdf of dask-backed data under daskray (its writes run in the driver, which holds
    the file), eager and with compute=False; reading back, chunked, computes on Ray."""
    xr = need("xarray")
    need_engine(engine)
    eager, lazy = tmp_path / "eager.nc", tmp_path / "lazy.nc"
    with daskray.enable():
        (dataset * 2).to_netcdf(eager, engine=engine)
    writes = (dataset + 1).to_netcdf(lazy, engine=engine, compute=False)
    writes.compute(scheduler=daskray.get)
    for path, want in ((eager, dataset * 2), (lazy, dataset + 1)):
        with xr.open_dataset(path, engine=engine, chunks={"time": 20}) as back:
            assert back.t2m.chunks is not None
            got = back.compute(scheduler=daskray.get)
            xr.testing.assert_allclose(got, want.compute(scheduler="sync"))
            assert got.attrs["title"] == "daskray test"
            mean = back.t2m.mean("time").compute(scheduler=daskray.get)
            sync = back.t2m.mean("time").compute(scheduler="sync")
            xr.testing.assert_allclose(mean, sync)


def test_xarray_zarr_round_trip(ray_ctx, dataset, tmp_path):
    """to_zarr writes from the Ray tasks (zarr arrays travel); open_zarr reads on Ray."""
    xr = need("xarray")
    need("zarr")
    path = tmp_path / "ds.zarr"
    with daskray.enable():
        dataset.to_zarr(path, mode="w", consolidated=False)
        dataset.isel(time=slice(0, 15)).to_zarr(path, mode="r+", region="auto", consolidated=False)
    back = xr.open_zarr(path, consolidated=False)
    xr.testing.assert_allclose(
        back.compute(scheduler=daskray.get), dataset.compute(scheduler="sync")
    )
    appended = tmp_path / "appended.zarr"
    dataset.isel(time=slice(0, 30)).to_zarr(appended, consolidated=False, compute=False).compute(
        scheduler=daskray.get
    )
    dataset.isel(time=slice(30, None)).to_zarr(
        appended, append_dim="time", consolidated=False, compute=False
    ).compute(scheduler=daskray.get)
    xr.testing.assert_allclose(
        xr.open_zarr(appended, consolidated=False).compute(scheduler=daskray.get),
        dataset.compute(scheduler="sync"),
    )


# -- xarray: computations ----------------------------------------------------------------------


def anomaly(block):
    """A map_blocks function: each block minus its time mean (module-level: Ray pickles it)."""
    return block - block.mean("time")


COMPUTATIONS = {
    "rolling": lambda ds, s: ds.t2m.rolling(time=5, center=True).mean(),
    "groupby": lambda ds, s: ds.rain.groupby("time.month").mean(),
    "resample": lambda ds, s: ds.t2m.resample(time="7D").max(),
    "map_blocks": lambda ds, s: ds.map_blocks(anomaly, template=ds),
    "weighted": lambda ds, s: ds.t2m.weighted(ds.y * 0 + 1).mean(("x", "y")),
    "persist": lambda ds, s: (ds.t2m - ds.t2m.mean()).persist(scheduler=s).std("x"),
}


@pytest.mark.parametrize("name", list(COMPUTATIONS))
def test_xarray_computations(ray_ctx, dataset, name):
    """rolling, groupby, resample, map_blocks, weighted, persist: as on the sync scheduler."""
    xr = need("xarray")
    f = COMPUTATIONS[name]
    got = f(dataset, daskray.get).compute(scheduler=daskray.get)
    want = f(dataset, "sync").compute(scheduler="sync")
    xr.testing.assert_allclose(got, want)


# -- zarr --------------------------------------------------------------------------------------


def test_zarr_with_dask_array(ray_ctx, tmp_path):
    zarr = need("zarr")
    x = da.arange(400, chunks=50).reshape(20, 20).rechunk(10) * 1.5
    with dask.config.set(scheduler=daskray.get):
        x.to_zarr(str(tmp_path / "x.zarr"))
    back = da.from_zarr(str(tmp_path / "x.zarr"))
    np.testing.assert_array_equal(
        back.sum(axis=0).compute(scheduler=daskray.get), x.sum(axis=0).compute(scheduler="sync")
    )
    z = zarr.open_array(str(tmp_path / "x.zarr"), mode="r")
    np.testing.assert_array_equal(z[:], x.compute(scheduler="sync"))


# -- dask-ml -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ml_data():
    rng = np.random.default_rng(1)
    X = da.from_array(rng.normal(size=(400, 4)), chunks=100)
    y = da.from_array((rng.normal(size=400) > 0).astype(int), chunks=100)
    return X, y


def test_dask_ml_pipeline_split_and_parallel_post_fit(ray_ctx, ml_data):
    need("dask_ml")
    need("sklearn")
    from dask_ml.model_selection import train_test_split
    from dask_ml.preprocessing import MinMaxScaler, StandardScaler
    from dask_ml.wrappers import ParallelPostFit
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    X, y = ml_data
    results = []
    for scheduler in ("sync", daskray.get):
        with dask.config.set(scheduler=scheduler):
            scaled = make_pipeline(StandardScaler(), MinMaxScaler()).fit_transform(X)
            Xtr, Xte, ytr, yte = train_test_split(X, y, random_state=0, shuffle=True)
            model = ParallelPostFit(LogisticRegression()).fit(Xtr.compute(), ytr.compute())
            proba = model.predict_proba(Xte)
            results.append(dask.compute(scaled, Xte, yte, model.predict(Xte), proba))
    for got, want in zip(results[1], results[0]):
        np.testing.assert_allclose(got, want)


# -- dask-image --------------------------------------------------------------------------------


def test_dask_image_filters_labels_and_measurements(ray_ctx):
    need("dask_image")
    import dask_image.ndfilters as ndfilters
    import dask_image.ndmeasure as ndmeasure

    rng = np.random.default_rng(2)
    image = da.from_array(rng.random((48, 48)), chunks=24)
    results = []
    for scheduler in ("sync", daskray.get):
        with dask.config.set(scheduler=scheduler):
            smooth = ndfilters.gaussian_filter(image, sigma=1.5)
            edges = ndfilters.sobel(smooth, axis=0)
            labels, n = ndmeasure.label(smooth > 0.6)
            labels, n = dask.compute(labels, n)
            index = np.arange(1, min(int(n), 4) + 1)
            means = ndmeasure.mean(image, labels, index=index)
            area = ndmeasure.area(image, labels, index=index)
            results.append((*dask.compute(smooth, edges, means, area), labels, n))
    for got, want in zip(results[1], results[0]):
        np.testing.assert_allclose(got, want)


# -- the example -------------------------------------------------------------------------------


def test_example_xarray_io_runs(ray_ctx, tmp_path):
    need("xarray")
    need("zarr")
    need("netCDF4")
    need("h5netcdf")
    path = os.path.join(ROOT, "examples", "xarray_io.py")
    spec = importlib.util.spec_from_file_location("daskray_example_xarray_io", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        written = module.main(str(tmp_path))
    finally:
        del sys.modules[spec.name]
    assert sorted(os.path.basename(p) for p in written) == [
        "weather-h5netcdf.nc",
        "weather-netcdf4.nc",
        "weather.zarr",
    ]


# -- a multi-node cluster ----------------------------------------------------------------------


def node_of(block):
    """The id of the Ray node this block was computed on, per element (as a float code)."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    return block * 0 + int(node[:8], 16)


@pytest.fixture
def two_workers():
    """A Ray cluster on this box: a head without CPUs (the driver's node: no task runs there)
    and two worker nodes; the session's Ray is shut down first (``ray_ctx`` restarts it)."""
    import ray
    from ray.cluster_utils import Cluster

    from daskray import _ray

    ray.shutdown()
    _ray.reset()
    c = None
    try:
        c = Cluster(
            initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False}
        )
        workers = [c.add_node(num_cpus=1) for _ in range(2)]
        ray.init(address=c.address, log_to_driver=False)
        c.wait_for_nodes()
        yield {int(w.node_id[:8], 16) for w in workers}
    finally:
        ray.shutdown()
        if c is not None:
            c.shutdown()
        _ray.reset()


@pytest.mark.cluster
@pytest.mark.once
def test_xarray_writes_on_a_multi_node_cluster(two_workers, dataset, tmp_path):
    """On nodes sharing the target's file system: the chunks are computed on the worker nodes;
    zarr chunks are written there too, the netCDF files by the driver."""
    xr = need("xarray")
    need("zarr")
    need("netCDF4")
    need("h5netcdf")
    where = dataset.t2m.map_blocks(node_of).rename("node")
    ds = xr.merge([dataset, where])
    with daskray.enable():
        ds.to_zarr(tmp_path / "ds.zarr", mode="w", consolidated=False)
        for engine in ("netcdf4", "h5netcdf"):
            ds.to_netcdf(tmp_path / f"ds-{engine}.nc", engine=engine)
    stores = [xr.open_zarr(tmp_path / "ds.zarr", consolidated=False)]
    stores += [xr.open_dataset(tmp_path / f"ds-{e}.nc", engine=e) for e in ("netcdf4", "h5netcdf")]
    for back in stores:
        with back:
            got = back.compute(scheduler=daskray.get)
        assert set(np.unique(got.node.values).astype(int)) <= two_workers
        xr.testing.assert_allclose(got.drop_vars("node"), dataset.compute(scheduler="sync"))
