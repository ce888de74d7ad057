"""Object storage for real: an S3-protocol server (moto) on 127.0.0.1, started and stopped here.

The share bundle's ``url: s3://...`` is written, read back with xarray and verified remotely; the
tiny study runs with Snakemake's S3 storage plugin against the same server and its stores arrive
there with their checksum manifests."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import boto3
import numpy as np
import pytest
import s3fs
import xarray as xr
from moto.server import ThreadedMotoServer

from critscale import compute, fitting, share, storage, verify
from critscale.gapstats import Grids, octave_grid


ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny_config.yaml"
CREDENTIALS = {"key": "testing", "secret": "testing"}


@pytest.fixture(scope="module")
def s3_endpoint():
    with socket.socket() as probe:  # a free port on the loopback interface only
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def s3_options(endpoint: str) -> dict:
    return {**CREDENTIALS, "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}


def make_bucket(endpoint: str, name: str) -> s3fs.S3FileSystem:
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=CREDENTIALS["key"], aws_secret_access_key=CREDENTIALS["secret"])
    client.create_bucket(Bucket=name)
    return s3fs.S3FileSystem(**s3_options(endpoint))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    ladder = [16, 32, 64]
    storage.create_scores_store(root / "scores.zarr", units=["g"], n_ladder=ladder, sequence=np.arange(6))
    rng = np.random.default_rng(1)
    for i, n in enumerate(ladder):
        storage.write_scores(root / "scores.zarr", rng.normal(size=(1, 6, n)), unit=slice(None), n_index=i, rows=slice(None))
    storage.consolidate(root / "scores.zarr")
    grids = Grids(t=np.linspace(0, 4, 5), resolutions=[0.0], beta=octave_grid(0.25, 8, 1), rho=octave_grid(0.5, 2, 1))
    compute.compute_statistics_store(root / "scores.zarr", root / "stats.zarr", grids)
    fits = fitting.fit_source(storage.open_store(root / "stats.zarr"), held_out=1, n_boot=10)
    fits.to_csv(root / "fits.csv", index=False)
    fitting.headline(fits).to_csv(root / "headline.csv", index=False)
    return root


def test_share_bundle_round_trips_through_s3(study, s3_endpoint, tmp_path):
    filesystem = make_bucket(s3_endpoint, "critscale-bundles")
    url = "s3://critscale-bundles/study/bundle.zarr"
    share.pack_bundle(
        tmp_path / "bundle.zarr.zip", stats={"g": study / "stats.zarr"}, fits_table=study / "fits.csv",
        headline_table=study / "headline.csv", config={}, url=url, storage_options=s3_options(s3_endpoint),
    )
    local = share.open_bundle(tmp_path / "bundle.zarr.zip", group="aggregates/g").load()
    remote = xr.open_zarr(url, group="aggregates/g", storage_options=s3_options(s3_endpoint)).load()
    xr.testing.assert_identical(remote, local)
    assert verify.verify_store(url, storage_options=s3_options(s3_endpoint)) == []
    chunk = "aggregates/g/median_lambda/c/0/0"
    damaged = bytearray(filesystem.cat_file(f"critscale-bundles/study/bundle.zarr/{chunk}"))
    damaged[-1] ^= 0x01
    filesystem.pipe_file(f"critscale-bundles/study/bundle.zarr/{chunk}", bytes(damaged))
    assert [m.key for m in verify.verify_store(url, storage_options=s3_options(s3_endpoint))] == [chunk]


def test_a_lower_level_share_replaces_the_previous_bundle_at_the_s3_url(study, s3_endpoint, tmp_path):
    filesystem = make_bucket(s3_endpoint, "critscale-levels")
    url, options = "s3://critscale-levels/bundle.zarr", s3_options(s3_endpoint)
    for level in ("rows", "aggregates"):
        share.pack_bundle(
            tmp_path / f"{level}.zarr.zip", stats={"g": study / "stats.zarr"}, fits_table=study / "fits.csv",
            headline_table=study / "headline.csv", config={}, level=level, url=url, storage_options=options,
        )
    assert not filesystem.exists("critscale-levels/bundle.zarr/stats")
    assert verify.verify_store(url, storage_options=options) == []


@pytest.mark.slow
def test_tiny_study_runs_with_the_snakemake_s3_storage_plugin(s3_endpoint, tmp_path):
    filesystem = make_bucket(s3_endpoint, "critscale-tiny")
    command = [
        sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", str(TINY), "--replace-workflow-config",
        "--config", "results=results-s3", "--directory", str(ROOT), "--until", "statistics",
        "--default-storage-provider", "s3", "--default-storage-prefix", "s3://critscale-tiny",
        "--storage-s3-endpoint-url", s3_endpoint, "--storage-s3-region", "us-east-1",
        "--local-storage-prefix", str(tmp_path / "storage-cache"),
    ]
    env = {**os.environ, "SNAKEMAKE_STORAGE_S3_ACCESS_KEY": "testing", "SNAKEMAKE_STORAGE_S3_SECRET_KEY": "testing"}
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    for family in ("simplex", "gaussian", "gaussian_quantile", "tied"):
        for kind in ("scores", "stats"):
            url = f"s3://critscale-tiny/results-s3/{kind}/{family}.zarr"
            assert filesystem.exists(f"{url}/{storage.MANIFEST}"), url
            assert verify.verify_store(url, storage_options=s3_options(s3_endpoint)) == [], url
    stats = xr.open_zarr("s3://critscale-tiny/results-s3/stats/gaussian.zarr", storage_options=s3_options(s3_endpoint))
    assert stats.accumulation_scale.sizes["row"] == 24 and np.isfinite(stats.accumulation_scale.values).all()
    assert not (ROOT / "results-s3").exists()  # nothing went to the local results folder
