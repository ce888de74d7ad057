"""Quantiles over rows of a response curve at the default study's scale, against the fair baseline.

The baseline is what a user of xarray writes: ``values.quantile(levels, dim="row",
method="inverted_cdf", skipna=True)``; the library is ``critscale.compute.row_quantiles``, which
the statistics stage and the bundle's aggregates use.  Identical inputs (270 heads x 6 lengths x
43 betas x 128 rows, a few NaN and inf rows as in real stores), in one process, best of
``--repeat``; prints both times, the ratio, and whether the results are identical.

    python benchmarks/bench_row_quantiles.py [--rows 128] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import xarray as xr

from critscale.compute import row_quantiles
from machine import describe, summary_line

LEVELS = [0.1, 0.25, 0.5, 0.75, 0.9]


def curve(units: int, lengths: int, grid: int, rows: int, seed: int = 0) -> xr.DataArray:
    """A ``(unit, n, beta, row)`` curve with 1% missing (NaN) and 1% tied (inf) rows."""
    rng = np.random.default_rng(seed)
    values = rng.lognormal(size=(units, lengths, grid, rows))
    values[rng.random(values.shape) < 0.01] = np.nan
    values[rng.random(values.shape) < 0.01] = np.inf
    return xr.DataArray(values, dims=("unit", "n", "beta", "row"))


def best_time(function, repeat: int):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - t0)
    return min(times), result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    print(summary_line(describe()))
    values = curve(270, 6, 43, args.rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        fair, expected = best_time(
            lambda: values.quantile(LEVELS, dim="row", method="inverted_cdf", skipna=True), args.repeat
        )
    library, got = best_time(lambda: row_quantiles(values, LEVELS).compute(), args.repeat)
    same = got.dtype == expected.dtype and got.identical(expected)
    print(f"{values.shape} (unit, n, beta, row), best of {args.repeat}: xarray quantile {fair:.2f} s, "
          f"critscale row_quantiles {library:.2f} s ({fair / library:.1f}x); identical: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
