"""Write an xarray dataset to zarr and netCDF with daskray on a local Ray, and read it back.

    pip install "daskray[ecosystem]"
    python examples/xarray_io.py [DIRECTORY]

Under ``daskray.enable()`` every dask computation xarray starts runs on Ray: the zarr chunks
are written by Ray tasks (a zarr array can travel to them; on a multi-node cluster the store
must be shared), the netCDF file by the driver, which holds it open (daskray writes the chunks
computed on Ray there: HDF5 allows one writer per file). Reading back with ``chunks=`` gives
dask-backed variables again, computed on Ray.
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np
import xarray as xr

import daskray


def weather() -> xr.Dataset:
    """A small chunked dataset: two months of daily temperature and rain on a 6 x 8 grid."""
    rng = np.random.default_rng(0)
    time = np.arange("2026-01-01", "2026-03-01", dtype="datetime64[D]")
    shape = (len(time), 6, 8)
    return xr.Dataset(
        {
            "t2m": (("time", "y", "x"), rng.normal(280.0, 5.0, shape), {"units": "K"}),
            "rain": (("time", "y", "x"), rng.gamma(2.0, 1.0, shape), {"units": "mm"}),
        },
        coords={"time": time, "y": np.arange(6.0), "x": np.arange(8.0)},
    ).chunk({"time": 10})


def main(directory: str) -> list[str]:
    """Write :func:`weather`'s monthly anomalies to zarr and to netCDF (both engines), read
    each back, check it; return the paths written."""
    ds = weather()
    anomaly = ds.groupby("time.month") - ds.groupby("time.month").mean()
    written = []
    with daskray.enable():
        path = os.path.join(directory, "weather.zarr")
        anomaly.to_zarr(path, mode="w", consolidated=False)
        back = xr.open_zarr(path, consolidated=False).compute()
        xr.testing.assert_allclose(back, anomaly.compute())
        written.append(path)
        for engine in ("netcdf4", "h5netcdf"):
            path = os.path.join(directory, f"weather-{engine}.nc")
            anomaly.to_netcdf(path, engine=engine)
            with xr.open_dataset(path, engine=engine, chunks={"time": 10}) as back:
                xr.testing.assert_allclose(back.compute(), anomaly.compute())
                print(f"{path}: mean |anomaly| {float(abs(back.t2m).mean()):.3f} K")
            written.append(path)
    daskray.disable()
    return written


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="daskray-xarray-")
    for p in main(target):
        print("wrote", p)
