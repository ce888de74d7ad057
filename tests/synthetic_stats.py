"""Statistics stores with known exponents, built directly with xarray (no scores needed)."""

from __future__ import annotations

import numpy as np
import xarray as xr

from critscale import coverage

LADDER = (2**6, 2**8, 2**10, 2**12, 2**14, 2**16)


def stats_from_rows(accumulation_scale, n_ladder=LADDER, **kwargs) -> xr.Dataset:
    """:func:`critscale.coverage.stats_from_rows` on :data:`LADDER` unless told otherwise."""
    return coverage.stats_from_rows(accumulation_scale, n_ladder, **kwargs)


def log_law_stats(
    exponents,
    n_sequences=64,
    rows_per_sequence=1,
    sigma=0.3,
    seed=0,
    n_ladder=LADDER,
    identical_within_sequence=False,
    **kwargs,
) -> xr.Dataset:
    """``Lambda = (log n)^xi * lognormal(0, sigma)`` per row, one unit per exponent, so the median
    ``Lambda_n`` follows ``(log n)^xi`` exactly in expectation.  With
    ``identical_within_sequence`` all rows of a sequence share one noise draw (at every n)."""
    rng = np.random.default_rng(seed)
    exponents = np.asarray(exponents, dtype=np.float64)
    n_rows = n_sequences * rows_per_sequence
    sequence = np.repeat(np.arange(n_sequences), rows_per_sequence)
    if identical_within_sequence:
        noise = rng.normal(0, sigma, (len(exponents), len(n_ladder), n_sequences))[..., sequence]
    else:
        noise = rng.normal(0, sigma, (len(exponents), len(n_ladder), n_rows))
    log_log_n = np.log(np.log(np.asarray(n_ladder, dtype=np.float64)))
    scale = np.exp(exponents[:, None, None] * log_log_n[None, :, None] + noise)
    return stats_from_rows(scale, n_ladder=n_ladder, sequence=sequence, **kwargs)
