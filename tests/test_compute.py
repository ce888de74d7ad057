"""The Dask stage: same store for any chunking, scheduler or worker count; carries metadata."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
import xarray as xr

from critscale import compute, storage
from critscale.gapstats import Grids, octave_grid, row_statistics

GRIDS = Grids(t=np.linspace(0, 4, 5), resolutions=[0.0, 1.0], beta=octave_grid(0.125, 16, 2), rho=octave_grid(0.25, 4, 2))
LADDER = [8, 32, 128]


@pytest.fixture(scope="module")
def scores_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("scores") / "scores.zarr"
    rng = np.random.default_rng(0)
    storage.create_scores_store(
        path, units=["a", "b"], n_ladder=LADDER, sequence=np.arange(10) // 2, row_chunk=4, key_chunk=16,
        attrs={"source": "test", "kind": "family"},
    )
    for i, n in enumerate(LADDER):
        values = rng.normal(size=(2, 10, n))
        values[0, 3, : n // 2] = np.nan  # masked keys
        values[1, 4, :2] = 5.0  # a tie at the top
        storage.write_scores(path, values, unit=slice(None), n_index=i, rows=slice(None))
    return path


def stats_with(scores_path, tmp_path, name, **kwargs):
    out = tmp_path / f"{name}.zarr"
    compute.compute_statistics_store(scores_path, out, GRIDS, **kwargs)
    return storage.open_store(out).load()


def assert_same_store(a: xr.Dataset, b: xr.Dataset):
    assert set(a.data_vars) == set(b.data_vars)
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


def test_matches_row_statistics_and_carries_metadata(scores_path, tmp_path):
    stats = stats_with(scores_path, tmp_path, "s")
    scores = storage.open_store(scores_path).load()
    for i, n in enumerate(LADDER):
        direct = row_statistics(scores.scores.values[:, i, :, :n], GRIDS)
        for name, value in direct.items():
            np.testing.assert_array_equal(stats[name].isel(n=i).values, value, err_msg=name)
    assert stats.attrs["source"] == "test"
    assert json.loads(stats.attrs["statistics_provenance"])["scores_checksum"].startswith("sha256:")
    assert list(stats.sequence.values) == list(np.arange(10) // 2)
    assert int(stats.tied_rows.sel(unit="b").isel(n=0)) == 1
    assert np.isposinf(stats.accumulation_scale.sel(unit="b").isel(row=4)).all()
    # quantile aggregates are observed values (inverted CDF), inf-safe
    median = stats.accumulation_scale_quantiles.sel(quantile=0.5, unit="a").values
    expected = np.quantile(stats.accumulation_scale.sel(unit="a").values, 0.5, axis=-1, method="inverted_cdf")
    np.testing.assert_array_equal(median, expected)


@given(
    data=hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=2, max_dims=3, max_side=9),
        elements=st.sampled_from([np.nan, np.inf, -np.inf, 0.0, 1.0, 2.5, -3.0, 1e-300]) | st.floats(-1e6, 1e6),
    ),
    levels=st.lists(st.floats(0, 1), min_size=1, max_size=6),
)
@settings(max_examples=200, deadline=None)
def test_row_quantiles_equal_xarrays_nan_skipping_inverted_cdf(data, levels):
    values = xr.DataArray(data, dims=("unit", *[f"d{i}" for i in range(data.ndim - 2)], "row"))
    values = values.assign_coords(unit=np.arange(data.shape[0]), row=np.arange(data.shape[-1]))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices
        expected = values.quantile(levels, dim="row", method="inverted_cdf", skipna=True)
    got = compute.row_quantiles(values.chunk(unit=1), levels).compute()
    xr.testing.assert_identical(got, expected)
    assert got.dtype == expected.dtype


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.float32])
def test_row_quantiles_keep_the_dtype_like_xarrays(dtype):
    values = xr.DataArray((np.arange(24).reshape(2, 12) % 5).astype(dtype), dims=("unit", "row"))
    expected = values.quantile([0.1, 0.5, 1.0], dim="row", method="inverted_cdf", skipna=True)
    got = compute.row_quantiles(values, [0.1, 0.5, 1.0]).compute()
    xr.testing.assert_identical(got, expected)
    assert got.dtype == expected.dtype == dtype


# block_elements=1: blocks of row_chunk rows of one unit (the test store would be one block per
# length otherwise); 1024 = 4 rows of both units at n = 128, so row_chunk=2 grows to 4 rows.
@pytest.mark.parametrize(
    "kwargs",
    [
        {"row_chunk": 3, "block_elements": 1},
        {"row_chunk": 10, "memory_budget": 1, "block_elements": 1},  # one row per batch in each block
        {"scheduler": "processes", "workers": 2, "row_chunk": 4},
        {"scheduler": "synchronous"},
        {"scheduler": "threads", "workers": 2, "row_chunk": 7, "block_elements": 1},
        {"row_chunk": 2, "block_elements": 1024},
    ],
    ids=["chunk3", "tiny-budget", "processes", "synchronous", "threads2", "grown-rows"],
)
def test_same_store_for_any_chunking_and_scheduler(scores_path, tmp_path, kwargs):
    baseline = stats_with(scores_path, tmp_path, "base", row_chunk=4, block_elements=1)
    assert_same_store(baseline, stats_with(scores_path, tmp_path, "other", **kwargs))


@pytest.mark.parametrize(
    "store, elements, block",
    [
        ((270, 64, 2048, 256), 2**20, (8, 64)),  # a model store: units join, rows stay
        ((270, 128, 64, 256), 2**20, (69, 128)),  # its short rows: units bounded by the packed output
        ((1, 256, 32768, 256), 2**20, (1, 256)),  # a family store of long rows: row_chunk rows
        ((1, 32768, 512, 256), 2**20, (1, 2048)),  # many short rows: rows grow to 2^20 scores
        ((1, 10**6, 64, 256), 2**20, (1, 8704)),  # shorter still: bounded by the packed output
        ((2, 10, 128, 3), 2560, (2, 9)),  # rows grow in multiples of row_chunk
        ((3, 10, 128, 4), 1024, (2, 4)),  # not every unit fits: rows stay
    ],
)
def test_blocks_grow_to_their_element_budget(store, elements, block):
    units, rows, longest, row_chunk = store
    assert compute.block_shape(units, rows, longest, row_chunk, elements, width=470) == block


def test_same_store_on_a_distributed_cluster(scores_path, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        on_cluster = stats_with(scores_path, tmp_path, "cluster", scheduler=cluster.scheduler_address)
    assert_same_store(stats_with(scores_path, tmp_path, "threads"), on_cluster)


def test_unknown_scheduler_is_a_clear_error(scores_path, tmp_path):
    with pytest.raises(ValueError, match="dask scheduler 'fast'"):
        stats_with(scores_path, tmp_path, "bad", scheduler="fast")


def test_store_opens_with_one_line_of_xarray(scores_path, tmp_path):
    import warnings

    stats_with(scores_path, tmp_path, "open")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback-to-unconsolidated warning
        ds = xr.open_zarr(tmp_path / "open.zarr")
    assert "accumulation_scale" in ds


def test_per_row_scalars_and_quantiles_are_one_chunk_whatever_the_blocks(scores_path, tmp_path):
    # the fits read every (unit, n, row) scalar whole: one chunk each, not one per block (a SmolLM2
    # store took 7 s to yield its medians from 408 chunks per variable, 0.3 s from one)
    out = tmp_path / "chunks.zarr"
    compute.compute_statistics_store(scores_path, out, GRIDS, row_chunk=3)
    stats = storage.open_store(out)
    for name in ("accumulation_scale", "ties", "n_keys", "accumulation_scale_quantiles", "tied_rows"):
        assert stats[name].encoding["chunks"] == stats[name].shape, name
    assert stats["gap_count"].encoding["chunks"][0] == stats.sizes["unit"]  # blocks merged across units


def assert_same_bytes(a: xr.Dataset, b: xr.Dataset):
    """Byte-for-byte equality of every variable (also tells -0.0 from 0.0 and NaN payloads)."""
    assert set(a.data_vars) == set(b.data_vars)
    for name in a.data_vars:
        assert a[name].values.tobytes() == b[name].values.tobytes(), name


@contextmanager
def external_dask_cluster(tmp_path, workers=2, timeout=120):
    """``dask scheduler`` plus ``dask worker --nworkers 2 --nthreads 1`` as subprocesses on
    127.0.0.1 (not a LocalCluster), stopped whatever happens; yields the scheduler address."""
    scheduler_file = tmp_path / "scheduler.json"
    common = ["--no-dashboard"]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
             "--scheduler-file", str(scheduler_file), *common],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
    ]
    try:
        deadline = time.monotonic() + timeout
        while not scheduler_file.exists():
            assert time.monotonic() < deadline and processes[0].poll() is None, "dask scheduler did not start"
            time.sleep(0.2)
        time.sleep(0.2)  # the file is written in one go, but give it a moment
        address = json.loads(scheduler_file.read_text())["address"]
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nworkers", str(workers),
                 "--nthreads", "1", "--host", "127.0.0.1", *common],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )
        )
        from distributed import Client

        with Client(address, timeout=timeout) as client:
            client.wait_for_workers(workers, timeout=timeout)
        yield address
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in reversed(processes):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # its own session: only what it started
                process.wait(timeout=30)


def test_same_bytes_on_an_external_scheduler(scores_path, tmp_path, caplog, monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setattr(compute, "PROGRESS_INTERVAL", 0.0)
    with caplog.at_level(logging.INFO, logger="critscale.compute"):
        with external_dask_cluster(tmp_path) as address:
            remote = stats_with(scores_path, tmp_path, "remote", scheduler=address, row_chunk=4, block_elements=1)
    assert_same_bytes(stats_with(scores_path, tmp_path, "local", row_chunk=3, workers=2), remote)
    # 3 lengths x 3 row blocks x 2 unit blocks, counted by the scheduler
    assert "statistics: 18 of 18 blocks done" in caplog.text


def test_progress_of_blocks_in_the_log(scores_path, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(compute, "PROGRESS_INTERVAL", 0.0)
    with caplog.at_level(logging.INFO, logger="critscale.compute"):
        stats_with(scores_path, tmp_path, "progress", row_chunk=5, block_elements=1)
    lines = [line for line in caplog.messages if "blocks done" in line]
    assert lines[0] == "statistics: 1 of 12 blocks done"  # 3 lengths x 2 row blocks x 2 unit blocks
    assert lines[-1] == "statistics: 12 of 12 blocks done"


def test_short_rows_come_in_blocks_sized_by_their_own_n(scores_path, tmp_path, caplog, monkeypatch):
    # 640 scores a block: 4 blocks of 1 unit x 5 rows at n = 128, but one block of every unit
    # and row at n = 32 and 8, whose rows are padded with NaN to 128 keys in the store
    monkeypatch.setattr(compute, "PROGRESS_INTERVAL", 0.0)
    with caplog.at_level(logging.INFO, logger="critscale.compute"):
        sized = stats_with(scores_path, tmp_path, "sized", row_chunk=5, block_elements=640)
    assert [line for line in caplog.messages if "blocks done" in line][-1] == "statistics: 6 of 6 blocks done"
    assert_same_store(stats_with(scores_path, tmp_path, "base", row_chunk=4, block_elements=1), sized)


def test_progress_counts_a_length_of_one_block_once(scores_path, tmp_path, caplog, monkeypatch):
    # one block per length leaves the block task unfused, and the read before it is named after it
    monkeypatch.setattr(compute, "PROGRESS_INTERVAL", 0.0)
    with caplog.at_level(logging.INFO, logger="critscale.compute"):
        stats_with(scores_path, tmp_path, "one-block", row_chunk=10)
    assert [line for line in caplog.messages if "blocks done" in line][-1] == "statistics: 3 of 3 blocks done"


@pytest.mark.parametrize("k", [3, 10])  # 10: every row at n = 8 is left with no key
def test_exclude_first_keys_equals_masking_by_hand(scores_path, tmp_path, k):
    stats = stats_with(scores_path, tmp_path, f"skip{k}", exclude_first_keys=k)
    scores = storage.open_store(scores_path).load()
    for i, n in enumerate(LADDER):
        masked = scores.scores.values[:, i, :, :n].copy()
        masked[..., :k] = np.nan
        for name, value in row_statistics(masked, GRIDS).items():
            np.testing.assert_array_equal(stats[name].isel(n=i).values, value, err_msg=name)
    if k >= LADDER[0]:
        assert (stats.n_keys.isel(n=0) == 0).all() and np.isnan(stats.accumulation_scale.isel(n=0)).all()
    assert stats.attrs["statistics_exclude_first_keys"] == k
    assert json.loads(stats.attrs["statistics_provenance"])["exclude_first_keys"] == k
    # the score store is untouched
    np.testing.assert_array_equal(storage.open_store(scores_path).scores.values, scores.scores.values)


def test_exclude_first_keys_must_be_a_count(scores_path, tmp_path):
    with pytest.raises(ValueError, match="exclude_first_keys must be an integer >= 0"):
        stats_with(scores_path, tmp_path, "bad-skip", exclude_first_keys=-1)


def store_files(path) -> dict:
    return {str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()}


def test_lazy_writes_make_the_files_xarray_makes(scores_path, tmp_path):
    """The lazy write (metadata made in memory, written in one go; Dask targets named by path)
    gives, file for file and byte for byte, what xarray's own ``to_zarr`` writes: a statistics
    store (string, integer and float coordinates, per-row and quantile variables, attributes)
    and an empty score store (metadata and coordinates only, its chunks never written)."""
    import dask

    stats = compute.gap_statistics(storage.open_store(scores_path, chunks=None), GRIDS)
    stats.attrs["note"] = "written twice"
    dask.compute(storage.write_dataset(stats, tmp_path / "lazy.zarr", compute=False), scheduler="threads", num_workers=2)
    encoding = {name: {"compressors": storage.COMPRESSORS} for name, var in stats.data_vars.items() if var.dtype.kind in "biuf"}
    with storage.quiet_consolidation():
        storage.portable_strings(stats).to_zarr(tmp_path / "xarray.zarr", mode="w", consolidated=True, encoding=encoding, zarr_format=3)
    lazy, own = store_files(tmp_path / "lazy.zarr"), store_files(tmp_path / "xarray.zarr")
    assert lazy.pop(storage.MANIFEST) and lazy.keys() == own.keys()
    assert [key for key in lazy if lazy[key] != own[key]] == []
    storage.create_scores_store(tmp_path / "empty.zarr", units=["a"], n_ladder=[4, 8], sequence=np.arange(3), row_chunk=2, key_chunk=4)
    empty = store_files(tmp_path / "empty.zarr")
    assert all(key.endswith("zarr.json") or not key.startswith("scores/") for key in empty)
    opened = storage.open_store(tmp_path / "empty.zarr")
    assert opened.scores.shape == (1, 2, 3, 8) and np.isnan(opened.scores.values).all()


def test_a_lazy_write_that_xarray_would_encode_is_an_error(tmp_path):
    """The lazy write stores a Dask variable's values as they are, while a thread writes the
    metadata: a variable xarray would encode (packed to int16 by ``scale_factor``) must fail the
    write, not store unencoded values under metadata that says they are packed."""
    import dask
    import dask.array as da

    ds = xr.Dataset({"x": ("i", da.arange(6.0, chunks=3))})
    write = storage.write_dataset(ds, tmp_path / "packed.zarr", compute=False, encoding={"x": {"scale_factor": 0.5, "dtype": "int16", "_FillValue": -1}})
    with pytest.raises(RuntimeError, match=r"encodes the values of \['x'\]"):
        dask.compute(write, scheduler="threads", num_workers=2)
    plain = storage.write_dataset(ds, tmp_path / "plain.zarr", compute=False)
    dask.compute(plain, scheduler="processes", num_workers=2)  # targets pickled once the metadata is in
    assert storage.open_store(tmp_path / "plain.zarr").x.values.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_late_attributes_wait_for_nothing_and_are_written_as_if_known_at_once(tmp_path):
    """``late_attrs`` (how the stage adds its input's checksum) gives the files of the same
    attributes set before the write, and in a lazy write the chunks compute while it waits:
    here it waits for a block to have run, which would never happen if the write waited for it."""
    import threading

    import dask
    import dask.array as da

    block_ran = threading.Event()

    def mark(block):
        block_ran.set()
        return block

    def late() -> dict:
        return {"checksum": "sha256:0", "block_ran_first": block_ran.wait(timeout=30)}

    data = da.arange(8.0, chunks=4).map_blocks(mark, dtype=float, meta=np.empty(0))  # mark runs only in the write
    ds = xr.Dataset({"x": ("i", data)}, attrs={"source": "test"})
    dask.compute(storage.write_dataset(ds, tmp_path / "late.zarr", compute=False, late_attrs=late), scheduler="threads", num_workers=2)
    known = ds.assign_attrs(checksum="sha256:0", block_ran_first=True)
    storage.write_dataset(known, tmp_path / "known.zarr")
    storage.write_dataset(ds, tmp_path / "eager.zarr", late_attrs=late)
    assert store_files(tmp_path / "late.zarr") == store_files(tmp_path / "known.zarr") == store_files(tmp_path / "eager.zarr")
