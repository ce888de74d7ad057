"""Stale Snakemake locks after a hard kill.

Snakemake locks a working directory by writing ``.snakemake/locks/*.lock`` and deletes them when
it exits; a SIGKILL (power loss, OOM killer, pre-emption) leaves them behind, and the next run
stops with "Directory cannot be locked". The lock files record no process id, so Snakemake
cannot tell a stale lock from a live one. Here a lock counts as stale when no snakemake process
other than the caller runs in the same directory on this machine; only then are the lock files
removed (what ``snakemake --unlock`` does). Runs of one directory from several machines (a shared
file system) cannot be seen from here: start those with ``--workflow-profile none`` or keep them
apart.
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil


def _is_snakemake(cmdline: list[str]) -> bool:
    """``snakemake ...``, ``python .../bin/snakemake ...`` or ``python -m snakemake ...``."""
    if not cmdline:
        return False
    if Path(cmdline[0]).name == "snakemake":
        return True
    rest = cmdline[1:]
    return bool(rest) and (Path(rest[0]).name == "snakemake" or rest[:2] == ["-m", "snakemake"])


def other_snakemake_pids(workdir, own_pid: int | None = None) -> list[int]:
    """Process ids of snakemake processes, other than ``own_pid``, whose working directory is
    ``workdir``."""
    own_pid = os.getpid() if own_pid is None else own_pid
    workdir = Path(workdir).resolve()
    found = []
    for process in psutil.process_iter(["pid", "cmdline", "cwd"]):
        info = process.info
        if info["pid"] == own_pid or not _is_snakemake(info["cmdline"] or []):
            continue
        if info["cwd"] and Path(info["cwd"]).resolve() == workdir:
            found.append(info["pid"])
    return found


def remove_stale_locks(workdir) -> list[Path]:
    """Remove ``workdir/.snakemake/locks/*.lock`` if no other snakemake runs in ``workdir``;
    return the files removed (none while another run holds the directory)."""
    locks = sorted(Path(workdir, ".snakemake", "locks").glob("*.lock"))
    if not locks or other_snakemake_pids(workdir):
        return []
    for lock in locks:
        lock.unlink(missing_ok=True)
    return locks
