"""Stale Snakemake locks are removed only when no other snakemake runs in the folder."""

import subprocess
import sys
import time

from critscale import stalelock


def make_locks(folder):
    locks = folder / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    for name in ("0.input.lock", "0.output.lock"):
        (locks / name).write_text("results/x\n")
    return locks


def test_stale_locks_are_removed(tmp_path):
    locks = make_locks(tmp_path)
    removed = stalelock.remove_stale_locks(tmp_path)
    assert [p.name for p in removed] == ["0.input.lock", "0.output.lock"]
    assert not list(locks.glob("*.lock"))


def test_locks_of_a_running_snakemake_stay(tmp_path):
    locks = make_locks(tmp_path)
    # A process that looks like `python -m snakemake` and works in the folder.
    fake = tmp_path / "snakemake"
    fake.write_text("import time\ntime.sleep(60)\n")
    process = subprocess.Popen([sys.executable, str(fake)], cwd=tmp_path)
    try:
        deadline = time.time() + 10
        while not stalelock.other_snakemake_pids(tmp_path) and time.time() < deadline:
            time.sleep(0.05)
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
