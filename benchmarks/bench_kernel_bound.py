"""Benchmark: how close the kernel can come to the read+sort floor at the same bytes.

Run: ``python benchmarks/bench_kernel_bound.py [--n 4096]``.

Issue 17 asks for the library (sort and kernel, :func:`critscale.gapstats.pack`) within 1.5x the
time of the floor (read the store and sort, ``bench_gapstats.floor``).  The softmax responses fix
their own work: one exponential per key and chain of the beta grids (:func:`kernels._exp_neg`),
then every term the chain's levels keep (:func:`kernels._cutoff`), squared and summed in four
fixed lanes.  The same bytes need those operations in that order, so their multiplies at the
CPU's peak, and nothing else of the kernel, bound the library from below:

    library >= sort + (exponentials x 18 + summed terms x 2) / multiplies per second

18 multiplies per key in ``_exp_neg`` (the Cody-Waite split, the degree-13 Horner polynomial and
``2**n``; no fused multiply-adds, as numba emits it without fast-math), 2 per summed term (the
square and the product with the gap).  The multiplies per second are measured on this CPU
(:func:`multiply_rate`: independent products the compiler vectorises, one thread), so the bound
needs no clock or pipe count (a Zen 4 does 8 doubles a cycle, a Xeon with two 512-bit FMA units
16).  Prints the parts of a row's time, the counts, the bound and, last, a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import zarr
from numba import njit

from bench_gapstats import GRIDS, floor, make_store, timed
from critscale import kernels, rowsort
from critscale.gapstats import Grids, pack
from machine import describe, summary_line

MULTIPLIES_PER_EXPONENTIAL = 18
MULTIPLIES_PER_TERM = 2


@njit(cache=False)
def _products(values, out, rounds):
    for _ in range(rounds):
        for k in range(len(values)):  # four independent chains of four multiplies a key, in vectors
            v = values[k]
            a, b, c, d = v * 1.0000001, v * 0.9999999, v * 1.0000002, v * 0.9999998
            a, b, c, d = a * 1.0000003, b * 0.9999997, c * 1.0000004, d * 0.9999996
            a, b, c, d = a * 1.0000005, b * 0.9999995, c * 1.0000006, d * 0.9999994
            a, b, c, d = a * 1.0000007, b * 0.9999993, c * 1.0000008, d * 0.9999992
            out[k] = (a + b) + (c + d)


def multiply_rate(keys: int = 1024, rounds: int = 20000) -> float:
    """Float64 multiplies a second of one thread at its best: 16 a key over a vector in L1."""
    values, out = np.random.default_rng(0).random(keys), np.empty(keys)
    _products(values, out, 1)
    return 16 * keys * rounds / min(timed(lambda: _products(values, out, rounds)) for _ in range(5))


def row_work(gaps: np.ndarray, m: int, grids: Grids) -> tuple[int, int]:
    """``(exponentials, summed terms)`` of one row's responses: :func:`kernels._chain_sums`'
    groups of levels replayed with the kernel's own exponential and cutoff (counted, not summed)."""
    log_count = np.log(np.arange(1, m + 1, dtype=np.float64))
    scratch = np.empty((2, m))
    resolved = np.empty(len(grids.resolutions))
    ties, scale = kernels._scalars(gaps, m, log_count, grids.resolutions, resolved, *scratch)[:2]
    terms = np.empty(m)
    exponentials = summed = 0
    for name, factor in (("beta", 1.0), ("rho", scale)):
        grid = getattr(grids, name)
        _, chain_start, chain_nodes = grids.chains(name)
        for c in range(len(chain_start) - 1):
            levels = chain_start[c + 1] - chain_start[c]
            beta0 = grid[chain_nodes[chain_start[c]]] * factor
            if not np.isfinite(beta0) or beta0 == 0.0:
                continue
            kernels._exp_neg(beta0, gaps, m, terms)
            terms[0] = 0.0
            exponentials += m
            reach, stop = max(gaps[m - 1], 1.0), m
            for group in range(0, levels, kernels._GROUP):
                size = min(kernels._GROUP, levels - group)
                for j in range(size):
                    stop = kernels._cutoff(terms, gaps, m, stop, ties, reach, j)
                    summed += stop
                for _ in range(size):  # the kept terms become the next group's, as the lane passes leave them
                    terms[:stop] = terms[:stop] * terms[:stop]
    return exponentials, summed


def _per_row(function, rows: int, repeats: int) -> float:
    function()
    return min(timed(function) for _ in range(repeats)) / rows * 1e6


def parts_us(values: np.ndarray, store: Path, repeats: int) -> dict[str, float]:
    """Microseconds a row of the floor's read and sort, the library, and the kernel with and
    without the responses (on rows sorted beforehand)."""
    rows = len(values)
    scores = zarr.open_array(str(store / "scores"), mode="r")
    chunk = scores.chunks[2]
    ascending = rowsort.ascending(values)
    bare = Grids(t=GRIDS.t, resolutions=GRIDS.resolutions, beta=np.array([]), rho=np.array([]))

    def kernel(grids):
        out = np.full((rows, grids.width), np.nan)
        return lambda: kernels.fill_rows(ascending, grids.t, grids.resolutions, grids.beta, *grids.chains("beta"),
                                         grids.rho, *grids.chains("rho"), out)

    functions = {
        "read": lambda: [scores[0, 0, s : s + chunk] for s in range(0, rows, chunk)],
        "sort": lambda: [rowsort.ascending(values[s : s + chunk]) for s in range(0, rows, chunk)],
        "floor": lambda: floor(store),
        "library": lambda: pack(values, GRIDS),
        "kernel": kernel(GRIDS),
        "kernel without responses": kernel(bare),
    }
    return {name: _per_row(function, rows, repeats) for name, function in functions.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--elements", type=int, default=2**24, help="rows x keys timed, as bench_gapstats.py times")
    parser.add_argument("--count-rows", type=int, default=32, help="rows whose work is counted")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    machine = describe()
    print(summary_line(machine))
    rows = max(args.elements // args.n, args.count_rows)
    with tempfile.TemporaryDirectory() as tmp:
        values = make_store(Path(tmp) / "scores.zarr", args.n, rows)
        times = parts_us(values, Path(tmp) / "scores.zarr", args.repeats)
    gaps = np.empty((args.count_rows, args.n))
    keys = np.empty(args.count_rows, dtype=np.int64)
    kernels.gaps_of_sorted(rowsort.ascending(values[: args.count_rows]), gaps, keys)
    work = np.mean([row_work(gaps[i], int(keys[i]), GRIDS) for i in range(args.count_rows)], axis=0)
    rate = multiply_rate()
    multiplies = work[0] * MULTIPLIES_PER_EXPONENTIAL + work[1] * MULTIPLIES_PER_TERM
    bound = {"responses_us": multiplies / rate * 1e6}
    bound["library_us"] = times["sort"] + bound["responses_us"]
    bound["library_over_floor"] = bound["library_us"] / times["floor"]
    times["responses"] = times["kernel"] - times["kernel without responses"]
    betas = len(GRIDS.beta) + len(GRIDS.rho)
    print(f"n = {args.n}, {rows} Gaussian rows; {betas} betas; one thread multiplies {rate / 1e9:.1f} G doubles a second")
    for name, value in times.items():
        print(f"  {name:26s} {value:7.1f} us a row")
    print(f"  the library takes {times['library'] / times['floor']:.1f}x the floor's time (target 1.5x)")
    print(f"  a row's responses: {work[0]:.0f} exponentials, {work[1]:.0f} summed terms "
          f"({work[1] / (betas * args.n):.0%} of {betas} betas x {args.n} keys)")
    print(f"  their multiplies at the peak: {bound['responses_us']:.1f} us a row; with the sort and nothing else, "
          f"the library >= {bound['library_us']:.1f} us = {bound['library_over_floor']:.2f}x the floor")
    print(json.dumps({"machine": machine, "n": args.n, "us_per_row": times, "exponentials": work[0],
                      "summed_terms": work[1], "multiplies_per_second": rate, "bound": bound}))


if __name__ == "__main__":
    main()
