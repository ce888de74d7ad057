"""Stale Snakemake locks are removed only when every run recorded in the folder is gone (and no
other snakemake shows in it): a live run keeps its lock however it was started."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from critscale import stalelock
from tiny_study import ROOT, TINY, checkout_env


def make_locks(folder):
    locks = folder / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    for name in ("0.input.lock", "0.output.lock"):
        (locks / name).write_text("results/x\n")
    return locks


def wait_for(condition, timeout=30.0):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def recording_process(folder, then="import time; time.sleep(60)"):
    """A stand-in run: a process that records itself in ``folder`` as the workflow does."""
    code = f"from critscale import stalelock; stalelock.record_run({str(folder)!r}); {then}"
    process = subprocess.Popen([sys.executable, "-c", code], env=checkout_env())
    wait_for(lambda: (folder / stalelock.RUNS / f"{process.pid}.json").exists() or process.poll() is not None)
    return process


def finished_run(folder):
    """The record of a run that has ended (as a hard kill leaves it)."""
    process = recording_process(folder, then="pass")
    assert process.wait() == 0
    return folder / stalelock.RUNS / f"{process.pid}.json"


def test_locks_of_a_finished_run_are_removed_with_its_record(tmp_path):
    locks = make_locks(tmp_path)
    record = finished_run(tmp_path)
    removed = stalelock.remove_stale_locks(tmp_path)
    assert [p.name for p in removed] == ["0.input.lock", "0.output.lock"]
    assert not list(locks.glob("*.lock")) and not record.exists()


def test_a_live_recorded_run_keeps_its_lock_until_it_is_gone(tmp_path):
    locks = make_locks(tmp_path)
    finished_run(tmp_path)
    process = recording_process(tmp_path)  # its command line shows no snakemake
    try:
        assert stalelock.other_snakemake_pids(tmp_path) == []
        assert stalelock.remove_stale_locks(tmp_path) == []
        assert len(list(locks.glob("*.lock"))) == 2
    finally:
        process.kill()
        process.wait()
    assert len(stalelock.remove_stale_locks(tmp_path)) == 2
    assert not list((tmp_path / stalelock.RUNS).glob("*.json"))


def test_a_lock_no_run_recorded_stays(tmp_path):
    locks = make_locks(tmp_path)
    assert stalelock.remove_stale_locks(tmp_path) == []
    assert len(list(locks.glob("*.lock"))) == 2


def write_record(folder, **fields):
    record = {"pid": os.getpid(), "start": stalelock.process_start(os.getpid()), "host": socket.gethostname(),
              "boot": stalelock._boot_id(), "cmdline": ["test"], **fields}
    (folder / stalelock.RUNS).mkdir(parents=True, exist_ok=True)
    path = folder / stalelock.RUNS / f"{record['pid']}-{len(fields)}.json"
    path.write_text(json.dumps(record))
    return path


def test_a_live_process_with_another_start_time_is_not_the_recorded_run(tmp_path):
    make_locks(tmp_path)
    parent = os.getppid()  # alive, but started before the recorded run did: the id was reused
    write_record(tmp_path, pid=parent, start="ticks:0")
    assert stalelock.run_state({"pid": parent, "start": "ticks:0", "host": socket.gethostname(), "boot": stalelock._boot_id()}) == stalelock.GONE
    assert len(stalelock.remove_stale_locks(tmp_path)) == 2


@pytest.mark.parametrize("fields", [{"host": "another-machine"}, {"pid": "not a pid"}, {"start": None}])
def test_when_unsure_the_lock_stays(tmp_path, fields):
    make_locks(tmp_path)
    finished_run(tmp_path)
    write_record(tmp_path, **{"pid": os.getppid(), "start": stalelock.process_start(os.getppid()), **fields})
    assert stalelock.remove_stale_locks(tmp_path) == []


def test_an_unreadable_record_keeps_the_lock(tmp_path):
    make_locks(tmp_path)
    (tmp_path / stalelock.RUNS).mkdir(parents=True)
    (tmp_path / stalelock.RUNS / "123.json").write_text("{half a rec")
    assert stalelock.remove_stale_locks(tmp_path) == []


@pytest.mark.skipif(stalelock._boot_id() is None, reason="no boot id outside Linux")
def test_a_reboot_ends_every_recorded_run(tmp_path):
    make_locks(tmp_path)
    write_record(tmp_path, pid=os.getppid(), start=stalelock.process_start(os.getppid()), boot="an earlier boot")
    assert len(stalelock.remove_stale_locks(tmp_path)) == 2


def test_start_run_records_this_process_and_ignores_its_own_record(tmp_path):
    assert stalelock.start_run(tmp_path) == []
    record = json.loads((tmp_path / stalelock.RUNS / f"{os.getpid()}.json").read_text())
    assert record["pid"] == os.getpid() and record["start"] == stalelock.process_start(os.getpid())
    assert stalelock.run_state(record) == stalelock.ALIVE
    assert stalelock.recorded_runs(tmp_path) == {}
    finished_run(tmp_path)
    make_locks(tmp_path)
    assert len(stalelock.start_run(tmp_path)) == 2  # its own record explains no lock


def test_a_zombie_is_gone(tmp_path):
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    wait_for(lambda: stalelock.process_start(process.pid) is None, timeout=30)  # exited, not yet reaped
    assert process.poll() == 0


def test_locks_of_a_running_snakemake_stay(tmp_path):
    locks = make_locks(tmp_path)
    finished_run(tmp_path)  # the only recorded run is gone, but a snakemake command line shows
    # A process that looks like `python -m snakemake` and works in the folder.
    fake = tmp_path / "snakemake"
    fake.write_text("import time\ntime.sleep(60)\n")
    process = subprocess.Popen([sys.executable, str(fake)], cwd=tmp_path)
    try:
        wait_for(lambda: stalelock.other_snakemake_pids(tmp_path), timeout=10)
        assert stalelock.other_snakemake_pids(tmp_path) == [process.pid]
        assert stalelock.remove_stale_locks(tmp_path) == []
        assert len(list(locks.glob("*.lock"))) == 2
        assert stalelock.other_snakemake_pids(tmp_path / ".snakemake") == []  # another folder
    finally:
        process.kill()
        process.wait()


def test_recognises_the_ways_snakemake_is_started():
    assert stalelock._is_snakemake(["/venv/bin/snakemake", "--cores", "2"])
    assert stalelock._is_snakemake(["/venv/bin/python", "/venv/bin/snakemake", "--cores", "2"])
    assert stalelock._is_snakemake(["python3", "-m", "snakemake", "-n"])
    assert not stalelock._is_snakemake(["/bin/sh", "-c", "snakemake --cores 2"])
    assert not stalelock._is_snakemake(["python", "-m", "pytest", "tests/test_snakemake.py"])
    assert not stalelock._is_snakemake([])


# A run through Snakemake's Python API whose lock is held until the test kills it: the lock is
# taken as in any run, then the process waits instead of running jobs.
API_RUN = """
import contextlib, os, sys, time
from pathlib import Path
from snakemake.persistence import PersistenceBase
from snakemake.cli import main

take_lock = PersistenceBase.lock

@contextlib.contextmanager
def lock_and_wait(self):
    with take_lock(self):
        Path(sys.argv[1]).write_text("locked")
        time.sleep(600)
        os._exit(3)
    yield

PersistenceBase.lock = lock_and_wait
main(sys.argv[2:])
"""


@pytest.mark.slow
def test_a_run_through_the_python_api_keeps_its_lock(tmp_path):
    locks = ROOT / ".snakemake" / "locks"
    assert not list(locks.glob("*.lock")), "another run holds this checkout's lock"
    results, marker = tmp_path / "results", tmp_path / "locked"
    arguments = ["--cores", "1", "--configfile", str(TINY), "--replace-workflow-config", "--config",
                 f"results={results}", "--directory", str(ROOT), str(results / "scores" / "simplex.zarr")]
    log = tmp_path / "api_run.log"
    with open(log, "w") as output:
        process = subprocess.Popen([sys.executable, "-c", API_RUN, str(marker), *arguments], cwd=ROOT, env=checkout_env(),
                                   stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: marker.exists() or process.poll() is not None, timeout=600)
        assert process.poll() is None, log.read_text()[-4000:]
        assert list(locks.glob("*.lock")), "the run should hold Snakemake's lock"
        assert stalelock.other_snakemake_pids(ROOT) == []  # invisible to the command-line check
        assert stalelock.remove_stale_locks(ROOT) == []
        assert list(locks.glob("*.lock"))
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    removed = stalelock.remove_stale_locks(ROOT)
    assert removed and not list(locks.glob("*.lock"))
