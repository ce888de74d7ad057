"""Snakemake on the tiny study (tests/data/tiny_config.yaml), for the workflow tests."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny_config.yaml"


def snakemake_command(*args, config=TINY, results, cores=2, root=ROOT) -> list[str]:
    """``snakemake --cores N`` on ``config`` with its results in ``results``: nothing about resuming.
    ``root``: the checkout whose workflow runs (a :func:`copy_study` copy, say)."""
    return [
        sys.executable, "-m", "snakemake", "--cores", str(cores), "--configfile", str(config),
        "--replace-workflow-config", "--config", f"results={results}", "--directory", str(root), *args,
    ]


def checkout_env(root=ROOT) -> dict[str, str]:
    """The environment of a run of checkout ``root``: its own critscale first on the path."""
    path = [str(Path(root) / "workflow"), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


def snakemake(*args, config=TINY, results, cores=2, check=True, root=ROOT, **popen):
    """Run :func:`snakemake_command` to the end (or start it, given Popen keywords)."""
    command = snakemake_command(*args, config=config, results=results, cores=cores, root=root)
    if popen:
        return subprocess.Popen(command, cwd=root, env=popen.pop("env", checkout_env(root)), **popen)
    run = subprocess.run(command, cwd=root, env=checkout_env(root), capture_output=True, text=True)
    if check and run.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{run.stdout}\n{run.stderr[-6000:]}")
    return run


def planned_jobs(run) -> dict[str, int]:
    """Rule -> job count from the 'Job stats' table of a dry run."""
    text = run.stdout + run.stderr
    table = text.split("Job stats:")[-1] if "Job stats:" in text else ""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M) if m.group(1) != "total"}


def job_priorities(run) -> dict[str, set[int]]:
    """Rule -> the priorities of its planned jobs, from the job blocks of a dry run (Snakemake
    prints ``priority:`` only where it is not 0)."""
    priorities: dict[str, set[int]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", run.stdout):
        rule = re.match(r"(?:local)?rule (\w+):", block)
        if rule:
            found = re.search(r"^\s+priority: (\d+)", block, re.M)
            priorities.setdefault(rule.group(1), set()).add(int(found.group(1)) if found else 0)
    return priorities


#: What a checkout needs to run the workflow (copied by :func:`copy_study`).
CHECKOUT = ("Snakefile", "config.yaml", "requirements.lock", "profiles", "workflow")


def _record_name(path: str) -> list[str]:
    """Snakemake's file name of the metadata record of output ``path`` (persistence/file.py: the
    urlsafe base64 of the path, in parts of at most 254 characters, all but the last '@'-prefixed)."""
    b64 = base64.urlsafe_b64encode(path.encode()).decode()
    parts = [b64[i : i + 254] for i in range(0, len(b64), 254)]
    return ["@" + part for part in parts[:-1]] + parts[-1:]


def copy_study(results: Path, dest: Path) -> tuple[Path, Path]:
    """A private copy of this checkout's workflow and of the finished ``results`` of a run in it,
    with Snakemake's records of every output (params, code, checksums), so a test can edit the
    code or the outputs and ask what would rerun. Returns ``(checkout, results)``; run it with
    ``snakemake(..., root=checkout, results=results)``."""
    checkout, copied = dest / "checkout", dest / "results"
    for name in CHECKOUT:
        source, target = ROOT / name, checkout / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    shutil.copytree(results, copied, symlinks=True)
    records = ROOT / ".snakemake" / "metadata"
    (checkout / ".snakemake" / "incomplete").mkdir(parents=True)  # (else Snakemake migrates the folder)
    for record in (r for r in records.rglob("*") if r.is_file()):
        path = base64.urlsafe_b64decode("".join(part.lstrip("@") for part in record.relative_to(records).parts)).decode()
        if path == str(results) or path.startswith(f"{results}/"):
            target = checkout / ".snakemake" / "metadata" / Path(*_record_name(str(copied) + path[len(str(results)) :]))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(record.read_text().replace(f'"{results}', f'"{copied}'))  # its input and log paths
    return checkout, copied
