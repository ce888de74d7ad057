"""Snakemake on the tiny study (tests/data/tiny_config.yaml), for the workflow tests."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny_config.yaml"


def snakemake_command(*args, config=TINY, results, cores=2) -> list[str]:
    """``snakemake --cores N`` on ``config`` with its results in ``results``: nothing about resuming."""
    return [
        sys.executable, "-m", "snakemake", "--cores", str(cores), "--configfile", str(config),
        "--replace-workflow-config", "--config", f"results={results}", "--directory", str(ROOT), *args,
    ]


def snakemake(*args, config=TINY, results, cores=2, check=True, **popen):
    """Run :func:`snakemake_command` to the end (or start it, given Popen keywords)."""
    command = snakemake_command(*args, config=config, results=results, cores=cores)
    if popen:
        return subprocess.Popen(command, cwd=ROOT, **popen)
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if check and run.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{run.stdout}\n{run.stderr[-6000:]}")
    return run


def planned_jobs(run) -> dict[str, int]:
    """Rule -> job count from the 'Job stats' table of a dry run."""
    text = run.stdout + run.stderr
    table = text.split("Job stats:")[-1] if "Job stats:" in text else ""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M) if m.group(1) != "total"}
