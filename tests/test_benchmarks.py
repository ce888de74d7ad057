"""The benchmarks say where they ran: CPU, numpy's SIMD level, numba's target, in their JSON."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def _benchmark(name: str):
    """A module of benchmarks/ (which imports its neighbours as top-level modules)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_machine_description_names_cpu_simd_and_numba_target():
    machine_module = _benchmark("machine")
    describe, summary_line = machine_module.describe, machine_module.summary_line
    machine = describe(idle=0.1)
    assert machine["cores"] >= 1 and machine["cpu"]
    touch = machine["first_touch"]
    assert touch["recycled_ms_per_mib"] > 0 and touch["after_idle_ms_per_mib"] > 0 and touch["idle_seconds"] == 0.1
    assert machine["numpy_simd"]["best"] and isinstance(machine["numpy_simd"]["avx512"], bool)
    assert machine["numba"]["cpu"] and machine["numba"]["threads"] >= 1
    assert machine["numpy_simd"]["best"] in summary_line(machine)


def test_machine_description_reads_the_kernels_policy_for_idle_memory(tmp_path):
    """Free page reporting and DAMON schemes (which make fresh memory cost on the README's host)
    read from a sysfs tree; a tree without them, or one that cannot be read, reports none."""
    machine_module = _benchmark("machine")
    balloon = tmp_path / "bus/virtio/drivers/virtio_balloon/virtio0"
    balloon.mkdir(parents=True)
    (balloon / "features").write_text("0110010100000000000000000000000010000000\n")
    kdamond = tmp_path / "kernel/mm/damon/admin/kdamonds/0"
    scheme = kdamond / "contexts/0/schemes/0"
    (scheme / "access_pattern/age").mkdir(parents=True)
    (kdamond / "contexts/0/monitoring_attrs/intervals").mkdir(parents=True)
    (kdamond / "state").write_text("on\n")
    (kdamond / "contexts/0/monitoring_attrs/intervals/aggr_us").write_text("5000000\n")
    (scheme / "access_pattern/age/min").write_text("12\n")
    (scheme / "action").write_text("pageout\n")
    policy = machine_module._idle_memory_policy(tmp_path)
    assert policy == {"free_page_reporting": True, "damon_schemes": [{"action": "pageout", "idle_seconds": 60.0}]}
    (kdamond / "state").write_text("off\n")
    (balloon / "features").write_text("0110000100\n")
    nothing = {"free_page_reporting": False, "damon_schemes": []}
    assert machine_module._idle_memory_policy(tmp_path) == nothing
    assert machine_module._idle_memory_policy(tmp_path / "absent") == nothing
    machine = machine_module.describe(idle=0.0)
    for idle_memory, said in ((policy, "free pages reported to the host, DAMON pageout after 60 s idle"), (nothing, "kept")):
        assert machine_module.summary_line(machine | {"idle_memory": idle_memory}).endswith(f"idle memory: {said}")


@pytest.mark.slow
def test_gapstats_benchmark_reports_machine_and_rates():
    run = subprocess.run([sys.executable, str(BENCHMARKS / "bench_gapstats.py"), "--n", "64", "--elements", "4096",
                          "--repeats", "1", "--memory-n", "0"], capture_output=True, text=True, check=True)
    assert any(line.startswith("machine: ") for line in run.stdout.splitlines())
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["machine"]["numpy_simd"]["best"]
    assert set(summary["64"]["rates"]) >= {"fair baseline (vectorised numpy)"}


@pytest.mark.slow
def test_a_study_of_8_model_sources_and_20_families_plans_in_under_30_seconds():
    run = subprocess.run([sys.executable, str(BENCHMARKS / "bench_plan.py")], capture_output=True, text=True, check=True)
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert (summary["families"], summary["model_sources"]) == (20, 8)
    assert summary["jobs"] > 8 * 4 + 20 * 3  # extraction, statistics, fit, figures per source at least
    assert summary["plan_seconds"] < 30, run.stdout


def test_kernel_bound_counts_every_key_of_every_level_where_no_term_is_negligible():
    import numpy as np

    from critscale import kernels, rowsort
    from critscale.gapstats import Grids

    bound = _benchmark("bench_kernel_bound")
    rows = np.random.default_rng(0).standard_normal((2, 256)).astype(np.float32)
    gaps, keys = np.empty((2, 256)), np.empty(2, dtype=np.int64)
    kernels.gaps_of_sorted(rowsort.ascending(rows), gaps, keys)
    tiny = Grids(t=[0.5], resolutions=[1.0], beta=[1e-6, 2e-6, 4e-6, 8e-6, 1.6e-5], rho=[1e-6, 2e-6])
    assert bound.row_work(gaps[0], 256, tiny) == (2 * 256, 7 * 256)  # one chain each, every key at every level
    steep = Grids(t=[0.5], resolutions=[1.0], beta=[100.0, 200.0, 400.0, 800.0, 1600.0], rho=[1e-6])
    exponentials, summed = bound.row_work(gaps[0], 256, steep)
    assert exponentials == 2 * 256 and summed - 256 < 5 * 256  # rho keeps all 256; the large betas' cutoffs drop keys


@pytest.mark.slow
def test_kernel_bound_benchmark_reports_parts_counts_and_bound():
    run = subprocess.run([sys.executable, str(BENCHMARKS / "bench_kernel_bound.py"), "--n", "256", "--elements", "16384",
                          "--count-rows", "4", "--repeats", "1"], capture_output=True, text=True, check=True)
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["machine"]["numba"]["cpu"] and summary["multiplies_per_second"] > 1e8
    assert set(summary["us_per_row"]) >= {"read", "sort", "floor", "library", "kernel", "responses"}
    assert summary["bound"]["library_us"] > summary["us_per_row"]["sort"] > 0
