"""Stale Snakemake locks after a hard kill.

Snakemake locks a working directory by writing ``.snakemake/locks/*.lock`` and deletes them when
it exits; a SIGKILL (power loss, OOM killer, pre-emption) leaves them behind, and the next run
stops with "Directory cannot be locked". The lock files record no process id, so Snakemake
cannot tell a stale lock from a live one. Here every run of the workflow records its own process
when it starts (:func:`start_run`, from ``workflow/rules/common.smk``, before Snakemake takes the
lock): ``.snakemake/critscale-runs/<pid>.json`` with the process id, its start time (which a
later process given the same id does not share), the host and the boot. A lock counts as stale
only when every recorded run is gone (no such process, another start time, or the machine has
rebooted since) and no snakemake process shows in this directory's command lines; only then are
the lock files removed (what ``snakemake --unlock`` does). When unsure it keeps the lock: a lock no
run recorded, a run recorded by another host (a shared file system), a process it may not
inspect. A run started through Snakemake's Python API (``snakemake.cli.main``) records itself the
same way, whatever its command line.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import psutil

#: Where each run records its process, below the working directory (outside ``locks/``, which
#: Snakemake deletes as a whole when any run ends).
RUNS = Path(".snakemake", "critscale-runs")
ALIVE, GONE, UNKNOWN = "alive", "gone", "unknown"


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
    ``workdir`` (by command line: a run through the Python API does not show here)."""
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


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def process_start(pid: int) -> str | None:
    """When process ``pid`` started, as a string no later process with this id shares: on Linux
    its start in clock ticks since boot (``/proc/<pid>/stat`` field 22, exact, unaffected by clock
    changes), elsewhere psutil's creation time. None when there is no such process (or it is a
    zombie: it has ended and holds nothing). Raises ``PermissionError`` when it exists but may not
    be inspected."""
    if Path("/proc/self/stat").exists():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            try:
                os.kill(pid, 0)  # hidden from this user's /proc (hidepid) yet alive?
            except ProcessLookupError:
                return None
            raise PermissionError(f"process {pid} exists but /proc/{pid}/stat cannot be read") from None
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": field 3 onwards
        return None if fields[0] in ("Z", "X") else f"ticks:{fields[19]}"
    try:
        process = psutil.Process(pid)
        return None if process.status() == psutil.STATUS_ZOMBIE else f"created:{process.create_time():.6f}"
    except psutil.NoSuchProcess:
        return None
    except psutil.AccessDenied as error:
        raise PermissionError(f"process {pid} exists but cannot be inspected") from error


def _this_run() -> dict:
    return {
        "pid": os.getpid(),
        "start": process_start(os.getpid()),
        "host": socket.gethostname(),
        "boot": _boot_id(),
        "cmdline": sys.argv,
    }


def record_run(workdir) -> Path:
    """Record this process as a run of ``workdir`` (it may take Snakemake's lock from now on)."""
    folder = Path(workdir, RUNS)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{os.getpid()}.json"
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(_this_run()))
    os.replace(partial, path)
    return path


def run_state(record: dict) -> str:
    """Whether the run ``record`` describes is ALIVE, GONE, or UNKNOWN (another host, a process
    that may not be inspected, a record that cannot be read)."""
    try:
        if record["host"] != socket.gethostname() or not isinstance(record["start"], str):
            return UNKNOWN
        boot = _boot_id()
        if boot is not None and record["boot"] is not None and boot != record["boot"]:
            return GONE  # the machine has rebooted since: every process of that boot has ended
        start = process_start(int(record["pid"]))
    except (PermissionError, KeyError, TypeError, ValueError, AttributeError):
        return UNKNOWN
    return ALIVE if start is not None and start == record["start"] else GONE


def recorded_runs(workdir) -> dict[Path, dict | None]:
    """Every run record of ``workdir`` but this process's own (None: unreadable). A record of an
    earlier process that had this id is kept: it is gone."""
    me = {"pid": os.getpid(), "start": process_start(os.getpid())}
    runs = {}
    for path in sorted(Path(workdir, RUNS).glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            runs[path] = None
            continue
        if not (isinstance(record, dict) and record.get("pid") == me["pid"] and record.get("start") == me["start"]):
            runs[path] = record
    return runs


def remove_stale_locks(workdir) -> list[Path]:
    """Remove ``workdir/.snakemake/locks/*.lock`` when every run recorded in ``workdir`` is gone
    and no other snakemake process shows in it; return the files removed (none while a recorded
    run lives, and none when unsure). Records of ended runs are dropped with the locks (or when
    there is no lock)."""
    locks = sorted(Path(workdir, ".snakemake", "locks").glob("*.lock"))
    states = {path: UNKNOWN if record is None else run_state(record) for path, record in recorded_runs(workdir).items()}
    gone = [path for path, state in states.items() if state == GONE]
    if locks:
        if not states or any(state != GONE for state in states.values()):
            return []  # a lock that no recorded run explains, or a run that may still hold it
        if other_snakemake_pids(workdir):
            return []  # a snakemake process that recorded nothing (another workflow, an old one)
        for lock in locks:
            lock.unlink(missing_ok=True)
    for path in gone:
        path.unlink(missing_ok=True)
    return locks


def start_run(workdir) -> list[Path]:
    """At the start of a run of the workflow in ``workdir``: remove the locks a killed run left
    (:func:`remove_stale_locks`), then record this process as the run that may hold the lock.
    Returns the lock files removed."""
    removed = remove_stale_locks(workdir)
    record_run(workdir)
    return removed
