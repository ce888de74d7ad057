"""Time the exponent fit at the study's scale: 270 heads x 32 windows x 8 queries x 6 lengths.

Prints the wall time of ``critscale.fitting.fit_source`` with the given number of resamples
(after one warm-up call that pays numba's compile or loads its disk cache), and of the resampled
medians alone.  ``--baseline PATH`` also times another ``fitting.py`` (e.g. the per-replicate
loop of an older checkout) on the same store, in the same process.

    python benchmarks/bench_fitting.py --resamples 1000 [--baseline /path/to/old/fitting.py]
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import numpy as np

from critscale.coverage import stats_from_rows
from critscale.fitting import fit_source
from critscale.resampling import SortedRows, sequence_multiplicities
from machine import describe, summary_line

LADDER = (64, 128, 256, 512, 1024, 2048)


def model_like_store(heads: int, windows: int, queries: int, seed: int = 0):
    """Rows ``Lambda = (log n)^xi_h * exp(window factor + row noise)`` for ``heads`` heads."""
    rng = np.random.default_rng(seed)
    xi = rng.uniform(0.2, 1.5, heads)[:, None, None, None]
    log_n = np.log(np.asarray(LADDER, dtype=np.float64))[None, :, None, None]
    noise = rng.normal(0, 0.3, (heads, 1, windows, 1)) + rng.normal(0, 0.5, (heads, len(LADDER), windows, queries))
    values = (log_n**xi * np.exp(noise)).reshape(heads, len(LADDER), windows * queries)
    return stats_from_rows(values, LADDER, sequence=np.repeat(np.arange(windows), queries), kind="model")


def best_of(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", type=int, default=270)
    parser.add_argument("--windows", type=int, default=32)
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", help="path of another fitting.py to time on the same store")
    args = parser.parse_args()
    print(summary_line(describe()))
    stats = model_like_store(args.heads, args.windows, args.queries)
    print(f"{args.heads} heads x {args.windows} windows x {args.queries} queries x {len(LADDER)} lengths, "
          f"{args.resamples} resamples (best of {args.repeats})")
    fit_source(stats, n_boot=10)  # warm-up: numba compile or cache load
    total = best_of(lambda: fit_source(stats, n_boot=args.resamples), args.repeats)
    values = np.stack([stats[name].values for name in ("accumulation_scale", "contact_exponent", "contact_gap")])
    rows = SortedRows(values, stats["sequence"].values)
    draws = sequence_multiplicities(args.windows, args.resamples, 0)
    medians = best_of(lambda: rows.medians(draws), args.repeats)
    print(f"fit_source: {total:.2f} s   resampled medians alone: {medians:.2f} s")
    if args.baseline:
        spec = importlib.util.spec_from_file_location("baseline_fitting", args.baseline)
        baseline = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(baseline)
        old = best_of(lambda: baseline.fit_source(stats, n_boot=args.resamples), 1)
        print(f"baseline fit_source: {old:.2f} s   ratio baseline / new: {old / total:.1f}")


if __name__ == "__main__":
    main()
