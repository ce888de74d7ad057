"""The whole DAG on a tiny config: runs, caches, reruns only what changed, and gives the same
statistics for any --cores and for an interrupted-then-resumed run."""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from critscale import storage
from tiny_study import TINY, planned_jobs, snakemake

pytestmark = pytest.mark.slow


def stats_stores(results: Path) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for path in sorted((results / "stats").glob("*.zarr")):
        ds = storage.open_store(path).load()
        out[path.name] = {name: ds[name].values for name in ds.data_vars}
    return out


def assert_same_stats(a: Path, b: Path):
    left, right = stats_stores(a), stats_stores(b)
    assert left.keys() == right.keys() and left
    for store in left:
        for name, values in left[store].items():
            np.testing.assert_array_equal(values, right[store][name], err_msg=f"{store}:{name}")


def sigint_as_in_a_terminal() -> None:
    """A child started from a background job (``make test &``, nohup, some CI runners) inherits
    SIGINT ignored, and Python then never raises KeyboardInterrupt: restore the terminal's default
    so the test's Ctrl-C reaches Snakemake wherever the suite runs."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def finished(tiny_study):
    return tiny_study


def test_full_run_produces_every_target(finished):
    for family in yaml.safe_load(TINY.read_text())["families"]:
        assert (finished / "scores" / f"{family}.zarr").is_dir()
        assert (finished / "stats" / f"{family}.zarr").is_dir()
        assert (finished / "fits" / f"{family}.csv").is_file()
    assert (finished / "tables" / "fits.csv").is_file()
    assert (finished / "tables" / "coverage.csv").is_file()
    assert (finished / "tables" / "theory_check.csv").is_file()
    assert any((finished / "figures").rglob("*.png"))


def test_second_dry_run_has_nothing_to_do(finished):
    run = snakemake("-n", results=finished)
    assert "Nothing to be done" in run.stdout + run.stderr, run.stdout


def test_changing_one_family_reruns_only_its_jobs(finished, tmp_path):
    config = yaml.safe_load(TINY.read_text())
    config["families"]["gaussian"]["params"]["sigma"] = 2.0
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(config))
    run = snakemake("-n", config=changed, results=finished)
    jobs = planned_jobs(run)
    assert jobs.get("family_scores") == 1 and jobs.get("statistics") == 1 and jobs.get("fit") == 1, jobs
    assert "family=gaussian" in run.stdout
    assert "source=simplex" not in run.stdout and "family=simplex" not in run.stdout


def test_scheduler_and_settings_of_other_rules_rerun_no_statistics_or_fit(finished, tmp_path):
    config = yaml.safe_load(TINY.read_text())
    config["compute"]["scheduler"] = "synchronous"
    config["fitting"]["coverage"]["replications"] += 1
    config["fitting"]["training_length"] *= 2
    config["fitting"]["extension_factors"] = [2]
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(config))
    jobs = planned_jobs(snakemake("-n", config=changed, results=finished))
    assert "statistics" not in jobs and "fit" not in jobs and jobs.get("coverage") == 1, jobs


def test_cores_do_not_change_the_statistics(finished, tmp_path):
    serial = tmp_path / "serial"
    snakemake("--until", "theory_check", cores=1, results=serial)
    assert_same_stats(finished, serial)


def test_interrupted_run_resumes_to_the_same_statistics(finished, tmp_path):
    resumed = tmp_path / "resumed"
    process = snakemake(cores=1, results=resumed, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        preexec_fn=sigint_as_in_a_terminal)
    deadline = time.time() + 120
    while not list((resumed / "stats").glob("*.zarr")) and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)  # Ctrl-C while statistics are being written
    assert process.wait(timeout=120) != 0, "the run finished before it was interrupted"
    snakemake("--rerun-incomplete", "--until", "theory_check", results=resumed)
    assert_same_stats(finished, resumed)


def test_share_bundle_opens_in_a_fresh_process_and_reproduces_a_headline(finished):
    snakemake("share", results=finished)
    bundle = finished / "share" / "critscale-bundle.zarr.zip"
    assert bundle.is_file() and (finished / "share" / "critscale-bundle.zarr.zip.DATACARD.md").is_file()
    # Recompute the Gaussian family's xi from the bundle's aggregates alone, in a new process:
    # the OLS slope of log median Lambda_n on log log n, compared with the bundle's own fit table.
    code = f"""
import json, numpy as np, xarray as xr
path = "zip::{bundle}"
fits = xr.open_zarr(path).load()
summary = xr.open_zarr(path, group="aggregates/gaussian")
median = summary.median_lambda.isel(unit=0).values
slope = np.polyfit(np.log(np.log(summary.n.values.astype(float))), np.log(median), 1)[0]
stored = float(fits.xi.where(fits.source == "gaussian", drop=True).values[0])
assert "accumulation_scale" in fits.attrs["datacard"] and json.loads(fits.attrs["config"])["seed"] == 7
print(json.dumps({{"recomputed": slope, "stored": stored}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    numbers = json.loads(out.stdout.strip().splitlines()[-1])
    assert numbers["recomputed"] == pytest.approx(numbers["stored"], rel=1e-9, abs=1e-12)


def test_verify_passes_on_the_study_and_names_a_flipped_chunk(finished, tmp_path):
    run = snakemake("verify", results=finished)
    assert "FAILED" not in (finished / "logs" / "verify.log").read_text(), run.stdout
    copy = tmp_path / "results"
    shutil.copytree(finished, copy)
    chunk = copy / "stats" / "gaussian.zarr" / "accumulation_scale" / "c" / "0" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x01
    chunk.write_bytes(bytes(data))
    run = snakemake("verify", results=copy, check=False)
    assert run.returncode != 0
    log = (copy / "logs" / "verify.log").read_text()
    assert f"MISMATCH {copy / 'stats' / 'gaussian.zarr'}: accumulation_scale/c/0/0/0: checksum differs" in log
