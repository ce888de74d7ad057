"""The share bundle: levels, aggregates checked against plain numpy, float32 where it buys
nothing, a data card that cites, a checksum manifest, and a copy at an fsspec URL."""

import json
import zipfile

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from critscale import compute, fitting, share, storage, verify
from critscale.gapstats import Grids, octave_grid

GRIDS = Grids(t=np.linspace(0, 4, 5), resolutions=[0.0], beta=octave_grid(0.25, 8, 1), rho=octave_grid(0.5, 2, 1))
QUANTILES = (0.1, 0.5, 0.9)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    ladder = [16, 32, 64, 128]
    storage.create_scores_store(root / "scores.zarr", units=["g", "h"], n_ladder=ladder, sequence=np.arange(12),
                                attrs={"source": "g", "kind": "family"},
                                unit_coords={"layer_type": np.array(["sliding_attention", "full_attention"])})
    rng = np.random.default_rng(0)
    for i, n in enumerate(ladder):
        storage.write_scores(root / "scores.zarr", rng.normal(size=(2, 12, n)), unit=slice(None), n_index=i, rows=slice(None))
    storage.consolidate(root / "scores.zarr")
    compute.compute_statistics_store(root / "scores.zarr", root / "stats.zarr", GRIDS, quantiles=QUANTILES, row_chunk=5)
    fits = fitting.fit_source(storage.open_store(root / "stats.zarr"), held_out=1, n_boot=20)
    fits.to_csv(root / "fits.csv", index=False)
    fitting.headline(fits).to_csv(root / "headline.csv", index=False)
    pd.DataFrame({"source": ["log_exact"], "coverage": [0.91]}).to_csv(root / "coverage.csv", index=False)
    return root


def pack(study, out, **kwargs):
    kwargs.setdefault("scores", {"g": study / "scores.zarr"})
    return share.pack_bundle(out, stats={"g": study / "stats.zarr"}, fits_table=study / "fits.csv",
                             headline_table=study / "headline.csv", config={"seed": 1}, **kwargs)


@pytest.fixture(scope="module")
def bundles(study, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bundles")
    return {
        level: pack(study, folder / f"{level}.zarr.zip", level=level, coverage_table=study / "coverage.csv")
        for level in share.LEVELS
    }


def groups(bundle) -> set[str]:
    with zipfile.ZipFile(bundle) as archive:
        return {name.rsplit("/", 2)[0] for name in archive.namelist() if name.count("/") >= 2 and name.endswith("/zarr.json")}


def test_levels_hold_what_they_promise_and_grow(bundles):
    assert {g for g in groups(bundles["aggregates"]) if "/" in g} == {"aggregates/g"}
    assert {g for g in groups(bundles["rows"]) if "/" in g} == {"aggregates/g", "stats/g"}
    assert {g for g in groups(bundles["scores"]) if "/" in g} == {"aggregates/g", "stats/g", "scores/g"}
    sizes = [bundles[level].stat().st_size for level in share.LEVELS]
    assert sizes == sorted(sizes) and sizes[0] < sizes[1] < sizes[2]


def test_aggregates_equal_plain_numpy_quantiles_and_the_fits_medians(study, bundles):
    stats = storage.open_store(study / "stats.zarr").load()
    summary = share.open_bundle(bundles["aggregates"], group="aggregates/g").load()
    assert list(summary["quantile"].values) == list(QUANTILES)
    # Every per-row variable, scalars and curves on t, r, beta and rho alike.
    per_row = [name for name, var in stats.data_vars.items() if "row" in var.dims]
    assert {"gap_count", "free_energy", "free_energy_rel", "resolved_scale", "ties"} <= set(per_row)
    for name in per_row:
        values = stats[name].transpose("unit", "n", ..., "row").values.astype(np.float64)
        expected = np.nanquantile(values, QUANTILES, axis=-1, method="inverted_cdf")
        got = summary[f"{name}_quantiles"].transpose("quantile", "unit", "n", ...).values
        np.testing.assert_allclose(got, expected.astype(got.dtype), rtol=1e-6, err_msg=name)
    # The medians the fits use, in float64: the fit's xi follows from them exactly.
    medians = summary.median_lambda.sel(unit="g").values
    assert summary.median_lambda.dtype == np.float64
    np.testing.assert_array_equal(medians, np.median(stats.accumulation_scale.sel(unit="g").values, axis=-1))
    slope = np.polyfit(np.log(np.log(summary.n.values.astype(float))), np.log(medians), 1)[0]
    fits = pd.read_csv(study / "fits.csv")
    assert slope == pytest.approx(fits.loc[fits.unit == "g", "xi"].item(), rel=1e-9)
    np.testing.assert_array_equal(summary.tied_rows.values, stats.tied_rows.values)


def test_float32_where_float64_buys_nothing(bundles, study):
    summary = share.open_bundle(bundles["rows"], group="aggregates/g")
    rows = share.open_bundle(bundles["rows"], group="stats/g")
    assert summary.free_energy_quantiles.dtype == np.float32 and summary.gap_count_quantiles.dtype == np.int32
    assert rows.free_energy.dtype == np.float32 and rows.gap_count.dtype == np.int32
    assert rows.accumulation_scale.dtype == np.float64  # an input of the fits, kept exact
    original = storage.open_store(study / "stats.zarr")
    np.testing.assert_array_equal(rows.accumulation_scale.values, original.accumulation_scale.values)
    np.testing.assert_array_equal(rows.free_energy.values, original.free_energy.values.astype(np.float32))
    assert "accumulation_scale_quantiles" not in rows  # the aggregates group has them
    scores = share.open_bundle(bundles["scores"], group="scores/g")
    np.testing.assert_array_equal(scores.scores.values, storage.open_store(study / "scores.zarr").scores.values)


def test_root_tables_coverage_and_datacard(study, bundles, tmp_path):
    fits = share.open_bundle(bundles["aggregates"]).load()
    assert float(fits.xi.values[0]) == pytest.approx(pd.read_csv(study / "fits.csv").xi[0])
    card = fits.attrs["datacard"]
    assert "accumulation_scale" in card and "1/logit" in card and "xi_alpha" in card
    assert "CITATION.cff" in card and "arXiv 2605.12697" in card and "Hayase" in card and "Karakida" in card
    assert "critscale-verify aggregates.zarr.zip" in card
    assert json.loads(fits.attrs["citation"])["paper"].endswith("arXiv:2605.12697.")
    assert json.loads(fits.attrs["config"]) == {"seed": 1} and fits.attrs["level"] == "aggregates"
    manifests = json.loads(fits.attrs["source_manifests"])
    assert manifests == {"stats/g": storage.file_checksum([study / "stats.zarr" / storage.MANIFEST])}
    coverage = share.open_bundle(bundles["aggregates"], group="coverage").load()
    assert coverage.coverage.values.tolist() == [0.91]
    assert (bundles["aggregates"].parent / "aggregates.zarr.zip.DATACARD.md").read_text() == card


def test_directory_format_opens_and_verifies(study, tmp_path):
    out = pack(study, tmp_path / "bundle.zarr", fmt="directory")
    assert out.is_dir() and verify.verify_store(out) == []
    assert xr.open_zarr(out, group="aggregates/g").accumulation_scale_quantiles.shape == (3, 2, 4)


def test_text_is_stored_as_variable_length_utf8(study, tmp_path):
    """Zarr's fixed-width UTF-32 type has no Zarr 3 specification (other libraries may not read it)."""
    out = pack(study, tmp_path / "bundle.zarr", fmt="directory")
    types = {
        str(meta.parent.relative_to(root)): json.loads(meta.read_text()).get("data_type")
        for root in (study / "scores.zarr", study / "stats.zarr", out)
        for meta in root.rglob("zarr.json")
    }
    assert types["layer_type"] == "string" and types["unit"] == "string"
    assert not [name for name, kind in types.items() if kind == "fixed_length_utf32"]


def test_every_bundle_verifies_and_a_flipped_byte_is_named(bundles, tmp_path):
    for bundle in bundles.values():
        assert verify.verify_store(bundle) == []
    original = bundles["rows"]
    chunk = "stats/g/free_energy/c/0/0/0/0"
    damaged = tmp_path / "damaged.zarr.zip"
    with zipfile.ZipFile(original) as source, zipfile.ZipFile(damaged, "w") as target:
        for item in source.infolist():
            data = bytearray(source.read(item))
            if item.filename == chunk:
                data[len(data) // 2] ^= 0x01
            target.writestr(item, bytes(data))
    mismatches = verify.verify_store(damaged)
    assert [(m.store, m.key) for m in mismatches] == [(str(damaged), chunk)]
    assert "checksum differs" in str(mismatches[0])


def test_a_score_store_shared_by_two_sources_goes_in_once(study, tmp_path):
    # a sink variant (first keys masked in its statistics) reads its pair's score store
    out = share.pack_bundle(tmp_path / "b.zarr.zip", stats={"g": study / "stats.zarr", "g__skip4": study / "stats.zarr"},
                            scores={"g": study / "scores.zarr", "g__skip4": study / "scores.zarr"},
                            fits_table=study / "fits.csv", headline_table=study / "headline.csv", config={}, level="scores")
    names = {g for g in groups(out) if g.startswith("scores/")}
    assert names == {"scores/g"}


def test_bad_level_and_missing_scores_are_clear_errors(study, tmp_path):
    with pytest.raises(ValueError, match="share.level must be one of aggregates, rows, scores"):
        pack(study, tmp_path / "b.zarr.zip", level="everything")
    with pytest.raises(ValueError, match="needs the score store of every source"):
        pack(study, tmp_path / "b.zarr.zip", level="scores", scores=None)


def test_chunks_split_until_they_fit():
    ds = xr.Dataset({"a": (("unit", "n", "row"), np.zeros((4, 3, 100), dtype=np.float32))})
    assert share._chunks(ds, target_bytes=10**6) == {"unit": 4, "n": 3, "row": 100}
    assert share._chunks(ds, target_bytes=2400) == {"unit": 2, "n": 3, "row": 100}
    assert share._chunks(ds, target_bytes=400) == {"unit": 1, "n": 1, "row": 100}
    assert share._chunks(ds, target_bytes=200) == {"unit": 1, "n": 1, "row": 50}


def test_bundle_is_also_written_to_an_fsspec_url(study, tmp_path):
    pack(study, tmp_path / "bundle.zarr.zip", url="memory://critscale-test/bundle.zarr")
    remote = xr.open_zarr("memory://critscale-test/bundle.zarr", group="headline").load()
    assert list(remote.source.values) == ["g", "g"]  # one row per layer type
    assert verify.verify_store("memory://critscale-test/bundle.zarr") == []


def test_a_url_holds_exactly_the_latest_bundle_and_refuses_foreign_files(study, tmp_path):
    url = str(tmp_path / "published" / "bundle.zarr")
    pack(study, tmp_path / "rows.zarr.zip", level="rows", url=url)
    assert (tmp_path / "published/bundle.zarr/stats/g").is_dir()
    pack(study, tmp_path / "aggregates.zarr.zip", level="aggregates", url=url)
    assert not (tmp_path / "published/bundle.zarr/stats").exists()  # no per-row groups left behind
    assert verify.verify_store(url) == []
    foreign = tmp_path / "someone-elses"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    with pytest.raises(FileExistsError, match=f"share url {foreign} holds files that are not a critscale bundle"):
        pack(study, tmp_path / "again.zarr.zip", url=str(foreign))
    assert (foreign / "thesis.tex").read_text() == "keep me"
