"""The share bundle: zip or directory, a data card, and a copy at an fsspec URL (object storage)."""

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from critscale import compute, fitting, share, storage
from critscale.gapstats import Grids, octave_grid

GRIDS = Grids(t=np.linspace(0, 4, 5), resolutions=[0.0], beta=octave_grid(0.25, 8, 1), rho=octave_grid(0.5, 2, 1))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    ladder = [16, 32, 64, 128]
    storage.create_scores_store(root / "scores.zarr", units=["g"], n_ladder=ladder, sequence=np.arange(12),
                                attrs={"source": "g", "kind": "family"})
    rng = np.random.default_rng(0)
    for i, n in enumerate(ladder):
        storage.write_scores(root / "scores.zarr", rng.normal(size=(1, 12, n)), unit=slice(None), n_index=i, rows=slice(None))
    compute.compute_statistics_store(root / "scores.zarr", root / "stats.zarr", GRIDS)
    fits = fitting.fit_source(storage.open_store(root / "stats.zarr"), held_out=1, n_boot=20)
    fits.to_csv(root / "fits.csv", index=False)
    fitting.headline(fits).to_csv(root / "headline.csv", index=False)
    return root


@pytest.mark.parametrize("fmt", ["zip", "directory"])
def test_bundle_formats_open_with_xarray(study, tmp_path, fmt):
    name = "bundle.zarr.zip" if fmt == "zip" else "bundle.zarr"
    out = share.pack_bundle(
        tmp_path / name, stats={"g": study / "stats.zarr"}, scores={"g": study / "scores.zarr"},
        fits_table=study / "fits.csv", headline_table=study / "headline.csv", config={"seed": 1}, fmt=fmt,
    )
    path = f"zip::{out}" if fmt == "zip" else str(out)
    fits = xr.open_zarr(path).load()
    assert float(fits.xi.values[0]) == pytest.approx(pd.read_csv(study / "fits.csv").xi[0])
    card = fits.attrs["datacard"]
    assert "accumulation_scale" in card and "1/logit" in card and "xi_alpha" in card
    assert json.loads(fits.attrs["config"]) == {"seed": 1}
    assert set(json.loads(fits.attrs["checksums"])) == {"stats/g", "scores/g"}
    stats = xr.open_zarr(path, group="stats/g")
    original = storage.open_store(study / "stats.zarr")
    np.testing.assert_array_equal(stats.accumulation_scale.values, original.accumulation_scale.values)
    assert stats.accumulation_scale.attrs["units"] == "1/logit"
    assert xr.open_zarr(path, group="scores/g").scores.shape == (1, 4, 12, 128)
    assert (tmp_path / f"{name}.DATACARD.md").read_text() == card


def test_bundle_is_also_written_to_an_fsspec_url(study, tmp_path):
    share.pack_bundle(
        tmp_path / "bundle.zarr.zip", stats={"g": study / "stats.zarr"}, fits_table=study / "fits.csv",
        headline_table=study / "headline.csv", config={}, url="memory://critscale-test/bundle.zarr",
    )
    remote = xr.open_zarr("memory://critscale-test/bundle.zarr", group="headline").load()
    assert list(remote.source.values) == ["g"]
