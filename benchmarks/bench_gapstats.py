"""Benchmark: the gap-statistics stage against the plain per-row reference, on identical rows.

Run: ``python benchmarks/bench_gapstats.py [--n 4096] [--rows 256]``.  Prints rows per second of
the reference (per-row sort plus a direct softmax at every beta), of the library function and of
the whole Dask stage (Zarr in, Zarr out), their ratios, the largest disagreement with the
reference, and the peak memory of the stage for stores of growing size (each measured in a fresh
process).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from critscale import compute, storage
from critscale import config as study_config
from critscale.gapstats import RESPONSE_NAMES, pack, unpack
from critscale.reference import reference_row

ROOT = Path(__file__).resolve().parents[1]
GRIDS = study_config.grids(yaml.safe_load((ROOT / "config.yaml").read_text())["grids"])


def make_store(path: Path, n: int, rows: int, seed: int = 0) -> np.ndarray:
    values = np.random.default_rng(seed).normal(size=(1, rows, n)).astype(np.float32)
    storage.create_scores_store(path, units=["gaussian"], n_ladder=[n], sequence=np.arange(rows), row_chunk=64)
    storage.write_scores(path, values, unit=slice(None), n_index=0, rows=slice(None))
    return values[0]


def peak_memory_of_stage(n: int, rows: int, workers: int) -> float:
    """Peak resident memory (MiB) of a fresh process running the stage on a store of ``rows``."""
    code = f"""
import resource, sys, tempfile, pathlib
sys.path.insert(0, {str(ROOT / 'benchmarks')!r})
from bench_gapstats import make_store, GRIDS
from critscale import compute
tmp = pathlib.Path(tempfile.mkdtemp())
make_store(tmp / "scores.zarr", {n}, {rows})
compute.compute_statistics_store(tmp / "scores.zarr", tmp / "stats.zarr", GRIDS, workers={workers})
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--reference-rows", type=int, default=64, help="rows timed for the slow reference")
    args = parser.parse_args()
    n, rows = args.n, args.rows
    betas = len(GRIDS.beta) + len(GRIDS.rho)
    print(f"n = {n}, rows = {rows}, {len(GRIDS.beta)} absolute + {len(GRIDS.rho)} relative betas")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        values = make_store(tmp / "scores.zarr", n, rows)

        start = time.perf_counter()
        reference = [reference_row(row, GRIDS) for row in values[: args.reference_rows]]
        reference_rate = args.reference_rows / (time.perf_counter() - start)

        start = time.perf_counter()
        packed = pack(values, GRIDS)
        library_rate = rows / (time.perf_counter() - start)

        rates = {}
        for workers in (1, 2):
            start = time.perf_counter()
            compute.compute_statistics_store(tmp / "scores.zarr", tmp / f"stats{workers}.zarr", GRIDS, workers=workers)
            rates[workers] = rows / (time.perf_counter() - start)

        fast = unpack(packed, GRIDS)
        # F and H are logarithms: compare them absolutely; weights-derived quantities relatively.
        worst = 0.0
        for i, ref in enumerate(reference):
            for j, name in enumerate(RESPONSE_NAMES):
                for mine, theirs in ((fast[name][i], ref["response"][:, j]), (fast[name + "_rel"][i], ref["response_rel"][:, j])):
                    ok = np.isfinite(theirs)
                    scale = 1.0 if name in ("free_energy", "entropy", "laplace_envelope") else np.abs(theirs[ok]) + 1e-300
                    worst = max(worst, float(np.max(np.abs(mine[ok] - theirs[ok]) / scale, initial=0)))
            assert fast["accumulation_scale"][i] == ref["accumulation_scale"], "Lambda differs from the reference"

    print(f"reference (per row: sort + direct softmax at {betas} betas): {reference_rate:8.1f} rows/s")
    print(f"library pack(), one thread:                  {library_rate:8.1f} rows/s   ratio {library_rate / reference_rate:5.1f}x")
    for workers, rate in rates.items():
        print(f"Dask stage Zarr -> Zarr, {workers} thread(s):          {rate:8.1f} rows/s   ratio {rate / reference_rate:5.1f}x")
    print(f"largest difference from the reference (absolute for F, H, S; relative otherwise): {worst:.2e}")

    print("peak memory of the stage (fresh process each):")
    peaks = {}
    for size in (rows // 4, rows):
        peaks[size] = peak_memory_of_stage(n, size, workers=2)
        print(f"  {size:6d} rows x {n} keys ({size * n * 4 / 2**20:6.1f} MiB of float32 scores): {peaks[size]:7.1f} MiB peak RSS")
    growth = peaks[rows] / peaks[rows // 4]
    print(f"  peak grows {growth:.2f}x for 4x the rows")
    print(json.dumps({"reference_rows_per_s": reference_rate, "library_rows_per_s": library_rate,
                      "stage_rows_per_s": rates, "ratio_stage_1_thread": rates[1] / reference_rate,
                      "peak_mib": peaks, "max_relative_difference": worst}))


if __name__ == "__main__":
    main()
