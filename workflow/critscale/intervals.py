"""Intervals and p-values from resampling replicates, and false-discovery control over units.

Two interval methods, both computed from the same replicates of a statistic (one per resample of
the independent units):

* ``student_t`` (the default): the replicates give a standard error, inflated by
  ``sqrt(G / (G - 1))`` (the bootstrap variance of a mean of ``G`` units is ``(G - 1) / G`` of
  the unbiased one), and the interval is ``point +- t_{G-1} * se`` with Student-``t`` quantiles on
  ``G - 1`` degrees of freedom.  Its p-value for ``H0: value = null`` is the two-sided ``t`` tail
  of ``(point - null) / se``, so "the interval excludes ``null``" and "p < 1 - level" are the
  same statement.
* ``percentile``: the replicate quantiles; p-value ``2 min(P(rep <= null), P(rep >= null))``.

Why the default: with few units the percentile bootstrap is too narrow (it knows only the
spread of ``G`` units and has no small-sample correction); the ``t`` quantile on ``G - 1``
degrees of freedom is that correction.  Coverage is measured, not assumed: :mod:`critscale.coverage`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

METHODS = ("student_t", "percentile")
FDR_METHODS = {"by": "fdr_by", "bh": "fdr_bh"}
#: Relative spread of the replicates below which they count as equal (rounding, not variation).
ZERO_SPREAD = 1e-12


def check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"fitting method must be one of {METHODS}, got {method!r}")


def check_fdr(fdr: float, fdr_method: str) -> None:
    if not 0 < fdr < 1:
        raise ValueError(f"fitting fdr must be in (0, 1), got {fdr}")
    if fdr_method not in FDR_METHODS:
        raise ValueError(f"fitting fdr_method must be one of {tuple(FDR_METHODS)}, got {fdr_method!r}")


def _replicate_sd(replicates: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Standard deviation (``ddof=1``) over the valid replicates; NaN with fewer than two."""
    count = valid.sum(axis=0)
    values = np.where(valid, replicates, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = values.sum(axis=0) / count
        squares = np.sum(np.where(valid, (values - mean) ** 2, 0.0), axis=0)
        return np.where(count >= 2, np.sqrt(squares / (count - 1)), np.nan)


def resampling_interval(
    point: np.ndarray,
    replicates: np.ndarray,
    n_units: int,
    level: float,
    method: str,
    null: float = 1.0,
) -> dict[str, np.ndarray]:
    """Per entry of ``point`` (shape ``S``), from ``replicates`` (shape ``(B, *S)``, NaN = a
    replicate without a value): ``low, high, p_value, se, valid_fraction``.

    NaN interval and p-value where fewer than ``level`` of the replicates are valid (the interval
    could not hold ``level`` of the resampling mass) or ``point`` is not finite.  A zero spread
    (every replicate equal) keeps its zero-width interval but has no p-value: zero width says the
    resampling saw no variation, not that the value is certain.
    """
    check_method(method)
    point = np.asarray(point, dtype=np.float64)
    valid = np.isfinite(replicates)
    valid_fraction = valid.mean(axis=0)
    usable = (valid_fraction >= level) & np.isfinite(point)
    se = np.where(usable, _replicate_sd(replicates, valid) * np.sqrt(n_units / max(n_units - 1, 1)), np.nan)
    # Replicates equal to rounding (e.g. a deterministic law) have no spread at all.
    se = np.where(se <= ZERO_SPREAD * (1 + np.abs(point)), 0.0, se)
    if method == "student_t":
        quantile = stats.t.ppf((1 + level) / 2, df=max(n_units - 1, 1))
        low, high = point - quantile * se, point + quantile * se
        with np.errstate(invalid="ignore", divide="ignore"):
            p_value = 2 * stats.t.sf(np.abs(point - null) / se, df=max(n_units - 1, 1))
    else:
        low, high = _percentiles(replicates, usable, level)
        below = np.sum(valid & (replicates <= null), axis=0)
        above = np.sum(valid & (replicates >= null), axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            p_value = np.minimum(1.0, 2 * np.minimum(below, above) / valid.sum(axis=0))
    p_value = np.where(usable & (se > 0), p_value, np.nan)
    low, high = np.where(usable, low, np.nan), np.where(usable, high, np.nan)
    return {"low": low, "high": high, "p_value": p_value, "se": se, "valid_fraction": valid_fraction}


def _percentiles(replicates: np.ndarray, usable: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    quantiles = [(1 - level) / 2, (1 + level) / 2]
    bounds = np.full((2, *usable.shape), np.nan)
    complete = usable & np.all(np.isfinite(replicates), axis=0)
    bounds[:, complete] = np.quantile(replicates[:, complete], quantiles, axis=0)
    partial = usable & ~complete  # nanquantile is slow: only where needed
    if partial.any():
        bounds[:, partial] = np.nanquantile(replicates[:, partial], quantiles, axis=0)
    return bounds[0], bounds[1]


def fdr_decisions(p_values: np.ndarray, fdr: float, method: str) -> tuple[pd.array, np.ndarray]:
    """``(discovery, adjusted p)`` per entry: Benjamini-Yekutieli (``by``, valid under any
    dependence, e.g. heads sharing windows) or Benjamini-Hochberg (``bh``) over the entries with a
    p-value; NA / NaN where there is none."""
    check_fdr(fdr, method)
    p_values = np.asarray(p_values, dtype=np.float64)
    tested = np.isfinite(p_values)
    adjusted = np.full(p_values.shape, np.nan)
    discovery = np.full(p_values.shape, None, dtype=object)
    if tested.any():
        reject, adjusted[tested], _, _ = multipletests(p_values[tested], alpha=fdr, method=FDR_METHODS[method])
        discovery[tested] = reject
    return pd.array(discovery, dtype="boolean"), adjusted


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (NaN without trials)."""
    if trials == 0:
        return np.nan, np.nan
    z = stats.norm.isf((1 - confidence) / 2)
    share = successes / trials
    centre = (share + z**2 / (2 * trials)) / (1 + z**2 / trials)
    half = z * np.sqrt(share * (1 - share) / trials + z**2 / (4 * trials**2)) / (1 + z**2 / trials)
    return float(centre - half), float(centre + half)
