"""A hard kill of the whole Snakemake process group mid-run, then a plain rerun: the rerun needs
no extra flag (profiles/default sets rerun-incomplete; common.smk removes the stale lock) and its
stores equal those of an uninterrupted run, array by array and chunk by chunk."""

import base64
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from critscale import storage
from tiny_study import ROOT, snakemake_command

pytestmark = pytest.mark.slow


def incomplete_outputs(results: Path) -> list[str]:
    """Outputs of ``results`` that Snakemake marked as being written: a marker's path below
    .snakemake/incomplete is the output's urlsafe base64, split into '@'-prefixed folders."""
    folder = ROOT / ".snakemake" / "incomplete"
    markers = [marker for marker in folder.rglob("*") if marker.is_file()]
    paths = [base64.urlsafe_b64decode("".join(part.lstrip("@") for part in m.relative_to(folder).parts)).decode() for m in markers]
    return [path for path in paths if path.startswith(str(results))]


def kill_group_when_a_job_of(rules: tuple[str, ...], results: Path, timeout: float = 300) -> None:
    """Start the run in its own session and SIGKILL its whole process group as soon as a job of
    ``rules`` has started writing (its log folder exists and an output is marked incomplete)."""
    process = subprocess.Popen(snakemake_command(results=results), cwd=ROOT, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and process.poll() is None:
            started = any((results / "logs" / rule).is_dir() for rule in rules)
            if started and any("/stats/" in path or "/scores/" in path for path in incomplete_outputs(results)):
                break
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before a job could be killed"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)


def store_contents(results: Path) -> dict[str, dict]:
    """Every array of every score and statistics store: values and a checksum of its chunks."""
    contents = {}
    for path in sorted([*results.glob("scores/*.zarr"), *results.glob("stats/*.zarr")]):
        group = zarr.open_group(str(path), mode="r")
        for name, array in group.arrays():
            key = f"{path.relative_to(results)}/{name}"
            contents[key] = {"values": array[...], "chunks": storage.store_checksum(path, name)}
    return contents


def test_killed_run_resumes_with_a_plain_rerun_to_identical_stores(tmp_path, tiny_study):
    reference = tiny_study  # an uninterrupted run
    crashed = tmp_path / "crashed"
    kill_group_when_a_job_of(("statistics", "model_scores"), crashed)
    assert list((ROOT / ".snakemake" / "locks").glob("*.lock")), "the kill should leave Snakemake's lock behind"
    assert incomplete_outputs(crashed), "the kill should leave a store half-written"

    rerun = subprocess.run(snakemake_command(results=crashed), cwd=ROOT, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "removed the stale lock" in rerun.stderr
    assert not incomplete_outputs(crashed)

    expected, resumed = store_contents(reference), store_contents(crashed)
    assert expected.keys() == resumed.keys() and any("stats/" in key for key in expected)
    for key, array in expected.items():
        np.testing.assert_array_equal(resumed[key]["values"], array["values"], err_msg=key)
        assert resumed[key]["chunks"] == array["chunks"], key
    attrs = zarr.open_group(str(crashed / "scores" / "gaussian.zarr"), mode="r").attrs
    assert f'"lock_sha256": "{storage.lock_sha256()}"' in attrs["provenance"]
