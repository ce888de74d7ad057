"""The benchmarks say where they ran: CPU, numpy's SIMD level, numba's target, in their JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def test_machine_description_names_cpu_simd_and_numba_target():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from machine import describe, summary_line
    finally:
        sys.path.remove(str(BENCHMARKS))
    machine = describe(idle=0.1)
    assert machine["cores"] >= 1 and machine["cpu"]
    touch = machine["first_touch"]
    assert touch["recycled_ms_per_mib"] > 0 and touch["after_idle_ms_per_mib"] > 0 and touch["idle_seconds"] == 0.1
    assert machine["numpy_simd"]["best"] and isinstance(machine["numpy_simd"]["avx512"], bool)
    assert machine["numba"]["cpu"] and machine["numba"]["threads"] >= 1
    assert machine["numpy_simd"]["best"] in summary_line(machine)


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
