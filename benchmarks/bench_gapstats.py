"""Benchmark: the gap statistics against a fair vectorised-numpy baseline, on identical rows.

Run: ``python benchmarks/bench_gapstats.py [--n 512 4096 32768] [--elements 16777216]``.  For each
``n`` (rows = elements / n) prints rows per second of

* the fair baseline: what a competent numpy user writes (rows batched, one ``exp`` per beta,
  ``log k`` precomputed, every response from the same weights);
* the library, ``critscale.gapstats.pack`` (one thread);
* the whole Zarr-to-Zarr Dask stage, ``compute.compute_statistics_store`` (1 and 2 threads), on a
  store chunked as the family writer chunks a store of one unit (``compute.row_chunk`` whole rows
  per chunk), and with 2 threads on the same rows chunked as the extraction writer chunks a model
  store (64 rows x 4096 keys);
* the floor: reading the store's chunks from Zarr and sorting their gaps, which no implementation
  avoids (by the library's sort, :mod:`critscale.rowsort`: the faster of ``np.sort`` and a radix sort
  on this CPU, printed);

with their ratios to the fair baseline, the largest difference of the library from the plain
reference ``critscale.reference`` (the correctness oracle, not a speed baseline), and the peak
memory of the stage for stores of growing size (each measured in a fresh process).
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
import zarr

from critscale import compute, rowsort, storage
from critscale import config as study_config
from critscale.gapstats import RESPONSE_NAMES, pack, sorted_gaps, unpack
from critscale.reference import reference_row
from critscale.score_writer import LARGEST_ROW_CHUNK
from machine import describe, summary_line

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "config.yaml").read_text())
GRIDS = study_config.grids(CONFIG["grids"])
ABSOLUTE = ("free_energy", "entropy", "laplace_envelope")  # logarithms: compared absolutely


def make_store(path: Path, n: int, rows: int, seed: int = 0, layout: str = "family") -> np.ndarray:
    """A store of ``rows`` Gaussian rows of ``n`` keys and one unit, chunked as the family writer
    chunks a store (``layout="family"``: ``compute.row_chunk`` whole rows) or as the extraction
    writer does (``"extraction"``: its largest row chunk by the default key chunk)."""
    values = np.random.default_rng(seed).normal(size=(1, rows, n)).astype(np.float32)
    chunks = {"family": {"row_chunk": CONFIG["compute"]["row_chunk"], "key_chunk": n},
              "extraction": {"row_chunk": LARGEST_ROW_CHUNK}}[layout]
    storage.create_scores_store(path, units=["gaussian"], n_ladder=[n], sequence=np.arange(rows), **chunks)
    storage.write_scores(path, values, unit=slice(None), n_index=0, rows=slice(None))
    return values[0]


def fair_baseline(scores: np.ndarray, grids=GRIDS, batch: int = 64) -> dict[str, np.ndarray]:
    """Vectorised numpy over batches of full rows (no masked keys): ``Lambda``, ``N(t)``,
    ``Lambda^(r)`` and the five responses on both grids, one ``exp`` per beta."""
    rows, n = scores.shape
    log_k = np.log(np.arange(1, n + 1))
    out = {name: [] for name in ("accumulation_scale", "gap_count", "resolved_scale", "response", "response_rel")}
    for start in range(0, rows, batch):
        x = scores[start : start + batch].astype(np.float64)
        gaps = np.sort(x.max(axis=1, keepdims=True) - x, axis=1)
        positive = gaps > 0
        with np.errstate(divide="ignore"):
            inverse = np.where(positive, 1.0 / gaps, 0.0)
        scale = np.max(np.where(positive, log_k * inverse, -np.inf), axis=1)
        out["accumulation_scale"].append(scale)
        out["gap_count"].append(np.stack([np.searchsorted(row, grids.t, side="right") for row in gaps]))
        out["resolved_scale"].append(np.stack([np.maximum((log_k - r) * inverse, 0).max(axis=1) for r in grids.resolutions], axis=1))
        for key, betas in (("response", np.broadcast_to(grids.beta, (len(x), len(grids.beta)))), ("response_rel", scale[:, None] * grids.rho)):
            responses = np.empty((len(x), betas.shape[1], len(RESPONSE_NAMES)))
            for b in range(betas.shape[1]):
                beta = betas[:, b : b + 1]
                weights = np.exp(-beta * gaps)
                z = weights.sum(axis=1)
                free = np.log(z)
                responses[:, b, 0] = free
                responses[:, b, 1] = free + beta[:, 0] * np.einsum("ij,ij->i", weights, gaps) / z
                responses[:, b, 2] = (weights[:, 0] - weights[:, 1]) / z
                responses[:, b, 3] = (weights[:, 0] - weights[:, -1]) / z
                responses[:, b, 4] = np.log(np.max(weights * np.arange(1, n + 1), axis=1))
            out[key].append(responses)
    return {name: np.concatenate(parts) for name, parts in out.items()}


def floor(path: Path) -> None:
    """What every implementation pays: read the scores from Zarr and sort the gaps, chunk by chunk
    of the store, as the stage reads it.  Not the whole store at once: its 256 MB of fresh arrays
    (scores, sorted, gaps) cost first-touch page faults, and numpy's huge pages compaction stalls
    after a large free, which made that floor 1.5 to 3 times slower and vary that much between runs."""
    scores = zarr.open_array(str(path / "scores"), mode="r")
    rows = scores.chunks[2]
    for start in range(0, scores.shape[2], rows):
        sorted_gaps(scores[0, 0, start : start + rows])


def largest_difference(fast: dict, reference: list[dict]) -> float:
    """Largest difference from the reference: absolute for F, H, S, relative otherwise."""
    worst = 0.0
    for i, ref in enumerate(reference):
        pairs = [("accumulation_scale", fast["accumulation_scale"][i], ref["accumulation_scale"])]
        pairs += [("resolved_scale", fast["resolved_scale"][i], ref["resolved_scale"])]
        for j, name in enumerate(RESPONSE_NAMES):
            pairs += [(name, fast[name][i], ref["response"][:, j]), (name, fast[name + "_rel"][i], ref["response_rel"][:, j])]
        for name, mine, theirs in pairs:
            mine, theirs = np.atleast_1d(mine), np.atleast_1d(theirs)
            ok = np.isfinite(theirs)
            scale = 1.0 if name in ABSOLUTE else np.abs(theirs[ok]) + 1e-300
            worst = max(worst, float(np.max(np.abs(mine[ok] - theirs[ok]) / scale, initial=0)))
        if not np.array_equal(fast["gap_count"][i], ref["gap_count"]):
            raise AssertionError(f"N(t) of row {i} differs from the reference")
    return worst


FAIR = "fair baseline (vectorised numpy)"
LIBRARY = "library pack(), 1 thread"
STAGES = {workers: f"Dask stage Zarr -> Zarr, {workers} thread(s)" for workers in (1, 2)}
EXTRACTION_STAGE = "the same, 2 threads, extraction's chunks"
FLOOR = "floor: read from Zarr + sort gaps"


def rates(functions: dict, rows: int, repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """Rows per second of each function, best and median of ``repeats`` rounds that run every
    function in turn (the machine is shared: interleaving exposes all of them to the same load, and
    the best is the least disturbed; the median shows how far the disturbance goes: on a virtual
    machine that hands freed memory back to its host, see ``machine.py``, a tenth or more)."""
    seconds = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            seconds[name].append(timed(function))
    return ({name: rows / min(times) for name, times in seconds.items()},
            {name: rows / float(np.median(times)) for name, times in seconds.items()})


def peak_memory_of_stage(n: int, rows: int, workers: int) -> float:
    """Peak resident memory (MiB) of a fresh process running the stage on a store of ``rows``
    (made beforehand by this process, so its arrays are not counted).  The peak is the new
    process's ``VmHWM``: Linux carries ``ru_maxrss`` over from the parent through fork and exec, so
    a child's ``getrusage`` reports this benchmark's own peak (1184 MiB whatever the rows)."""
    with tempfile.TemporaryDirectory() as tmp:
        make_store(Path(tmp) / "scores.zarr", n, rows)
        code = f"""
import pathlib, sys
sys.path.insert(0, {str(ROOT / 'benchmarks')!r})
from bench_gapstats import GRIDS
from critscale import compute
tmp = pathlib.Path({tmp!r})
compute.compute_statistics_store(tmp / "scores.zarr", tmp / "stats.zarr", GRIDS, workers={workers})
status = pathlib.Path("/proc/self/status").read_text()
print(next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")) / 1024)
"""
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def measure(n: int, rows: int, reference_rows: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        values = make_store(tmp / "scores.zarr", n, rows)
        make_store(tmp / "extraction.zarr", n, rows, layout="extraction")
        pack(values[:2], GRIDS)  # load the compiled kernel (once per process) outside the timings
        outputs = iter(range(10**6))  # a fresh output store each run: no removal of an old one timed

        def stage(workers, store="scores.zarr"):
            return lambda: compute.compute_statistics_store(
                tmp / store, tmp / f"stats{next(outputs)}.zarr", GRIDS, workers=workers
            )

        functions = {
            FAIR: lambda: fair_baseline(values),
            LIBRARY: lambda: pack(values, GRIDS),
            **{name: stage(workers) for workers, name in STAGES.items()},
            EXTRACTION_STAGE: stage(2, "extraction.zarr"),
            FLOOR: lambda: floor(tmp / "scores.zarr"),
        }
        measured, medians = rates(functions, rows, repeats)
        make_store(tmp / "one_row.zarr", n, 1)
        fixed = min(timed(lambda: compute.compute_statistics_store(
            tmp / "one_row.zarr", tmp / f"fixed{next(outputs)}.zarr", GRIDS)) for _ in range(repeats))
        reference = [reference_row(row, GRIDS) for row in values[:reference_rows]]
        library = largest_difference(unpack(pack(values[:reference_rows], GRIDS), GRIDS), reference)
        fair = fair_baseline(values[:reference_rows])
        fair = {"accumulation_scale": fair["accumulation_scale"], "resolved_scale": fair["resolved_scale"], "gap_count": fair["gap_count"]} | {
            name + suffix: fair[key][..., j] for j, name in enumerate(RESPONSE_NAMES) for suffix, key in (("", "response"), ("_rel", "response_rel"))
        }
        baseline = largest_difference(fair, reference)
    return {"rates": measured, "median_rates": medians, "library_difference": library, "baseline_difference": baseline,
            "stage_fixed_seconds": fixed, "library_sort": rowsort.chosen_sort(n)}


def best_stage(rates_n: dict[str, float]) -> float:
    """The faster of the 1- and 2-thread stage rates."""
    return max(rates_n[name] for name in STAGES.values())


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[512, 4096, 32768])
    parser.add_argument("--elements", type=int, default=2**24,
                        help="rows x keys timed per n (2^24: a store the size of a statistics job, "
                             "a tenth of a SmolLM2 store, so the stage's per-store cost is paid once as in a study)")
    parser.add_argument("--reference-rows", type=int, default=8, help="rows checked against the reference")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-n", type=int, default=4096, help="n of the peak-memory runs (0: skip)")
    parser.add_argument("--memory-rows", type=int, nargs="+", default=[256, 1024, 4096])
    args = parser.parse_args()
    print(f"{len(GRIDS.beta)} absolute + {len(GRIDS.rho)} relative betas, {len(GRIDS.t)} t, {len(GRIDS.resolutions)} r; best and median of {args.repeats}")
    machine = describe()
    print(summary_line(machine))
    report = {"machine": machine}
    for n in args.n:
        rows = max(args.elements // n, 2 * args.reference_rows)
        result = measure(n, rows, min(args.reference_rows, rows), args.repeats)
        report[n] = result
        fair = result["rates"][FAIR]
        print(f"\nn = {n}, {rows} Gaussian rows (float32 in the store); the library sorts rows by "
              f"{result['library_sort']} (the faster on this CPU; the fair baseline by np.sort)")
        for name, value in result["rates"].items():
            print(f"  {name:40s} {value:10.1f} rows/s   {value / fair:6.1f}x fair   (median {result['median_rates'][name]:10.1f})")
        rates_n, medians_n = result["rates"], result["median_rates"]
        stage, library = best_stage(rates_n), rates_n[LIBRARY]
        print(f"  the library takes {rates_n[FLOOR] / library:.1f}x the floor's time")
        print(f"  best stage / library: {stage / library:.2f}, in medians "
              f"{best_stage(medians_n) / medians_n[LIBRARY]:.2f} (extraction's chunks: "
              f"{rates_n[EXTRACTION_STAGE] / library:.2f}); per-store fixed cost "
              f"of the stage (a store of one row): {result['stage_fixed_seconds']:.2f} s")
        print(f"  largest difference from the reference (absolute for F, H, S; relative otherwise): "
              f"library {result['library_difference']:.1e}, fair baseline {result['baseline_difference']:.1e}")
    if args.memory_n:
        print(f"\npeak memory of the stage, n = {args.memory_n}, 2 threads (fresh process each):")
        peaks = {}
        for rows in args.memory_rows:
            peaks[rows] = peak_memory_of_stage(args.memory_n, rows, workers=2)
            print(f"  {rows:6d} rows ({rows * args.memory_n * 4 / 2**20:6.1f} MiB of float32 scores): {peaks[rows]:7.1f} MiB peak RSS")
        report["peak_mib"] = peaks
    print(json.dumps(report))


if __name__ == "__main__":
    main()
