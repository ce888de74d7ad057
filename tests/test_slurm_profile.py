"""The SLURM profile plans the tiny study (dry run: no cluster needed, the executor plugin is)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny_config.yaml"


@pytest.mark.slow  # about 25 s: Snakemake plans the whole DAG
def test_slurm_profile_dry_runs(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", "workflow/profiles/slurm", "-n", "--configfile", str(TINY),
         "--replace-workflow-config", "--config", f"results={tmp_path / 'results'}"],
        cwd=ROOT, capture_output=True, text=True,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "This was a dry-run" in output
    assert "slurm_partition=compute" in output  # the profile's resources reach the jobs
    assert "statistics" in output and "mem_mb=32000" in output  # and its per-rule resources
