"""Exponent laws per unit: ``xi`` with a sequence bootstrap, its decomposition, and law comparison.

Input is a statistics store (``unit, n, row`` per-row quantities, see ``shared/theory.md``);
output is one tidy row per unit (:func:`fit_source`).

Conventions chosen where the theory is silent (also in the README):

* **Aggregate.** Per ``(unit, n)`` the median over rows of ``Lambda``, ``alpha`` and ``D_Lambda``.
  A tied row has ``Lambda = inf`` and enters the median as such, so the median is ``inf`` exactly
  when at least half of the rows are tied.  NaN marks a missing row (no valid key, padding) and
  is left out.  The median of an even count is the mean of the two middle values.
* **Which units are fitted.** A unit is fitted only if its median ``Lambda`` is finite and
  positive at every length ``n >= 2`` of the ladder and the ladder has at least 3 such lengths.
  Otherwise its fit columns are NaN and ``fit_status`` says why (``tied``, ``degenerate``,
  ``too_few_lengths``); the unit is reported, not fitted.
* **Exponents.** ``xi`` is the OLS slope of ``log median Lambda_n`` on ``log log n`` (statsmodels
  for the point estimate and its standard error); ``xi_alpha`` and ``xi_D`` likewise for the
  medians of ``alpha`` and ``D_Lambda``; the power-of-``n`` exponent is the slope on ``log n``.
  OLS is linear, so ``xi_alpha - xi_D + 1`` equals ``xi`` exactly when the row medians compose
  (``median Lambda = median alpha * log n / median D``, e.g. deterministic ``alpha`` and ``D``);
  otherwise the difference is reported as ``decomposition_residual``.
* **Uncertainty.** Percentile bootstrap that resamples *sequences* (the independent units; all
  rows of a drawn sequence, at every ``n``, enter with the sequence's multiplicity), recomputing
  the medians and the slopes.  A replicate whose medians are not all finite and positive gives no
  slope; the interval uses the remaining replicates, their fraction is reported as
  ``boot_valid_fraction``, and the interval is NaN when that fraction is below ``level`` (the
  interval could not hold ``level`` of the bootstrap mass).
* **Law comparison.** Each law is fitted in log space on all but the ``held_out`` largest
  lengths and scored by the mean squared log error on them.  The winner has the lowest error;
  laws within ``tie_tolerance`` of the lowest are treated as tied and the simplest wins (the
  one-parameter laws, in the order of :data:`LAWS`, before the two-parameter ones), so that on
  noise-free data a fixed-exponent law is not beaten by the free law that contains it.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import statsmodels.api as sm
import xarray as xr

from critscale.storage import provenance

#: Candidate laws for ``Lambda_n``, simplest first (the order breaks ties in held-out error).
EXCLUDES_ONE_TOLERANCE = 1e-9
LAWS = ("sqrt_log", "log", "log_squared", "free", "power")
#: Exponent of ``log n`` of the fixed-exponent laws.
FIXED_LOG_EXPONENTS = {"sqrt_log": 0.5, "log": 1.0, "log_squared": 2.0}
#: Per-row variables aggregated by median, and the name of their aggregate.
MEDIAN_VARIABLES = {
    "accumulation_scale": "median_lambda",
    "contact_exponent": "median_alpha",
    "contact_gap": "median_contact_gap",
}
MIN_FIT_LENGTHS = 3


class _SortedRows:
    """Rows of a ``(..., row)`` array sorted once, so that the median under any row
    multiplicities (a bootstrap replicate) costs one gather, one cumulative sum and a search."""

    def __init__(self, values: np.ndarray):
        values = np.asarray(values, dtype=np.float64)
        self.shape = values.shape
        order = np.argsort(values, axis=-1, kind="stable")  # NaN sorts last
        sorted_values = np.take_along_axis(values, order, axis=-1)
        self.sorted = sorted_values.reshape(-1)
        # Missing rows (NaN) point at a zero-weight slot appended to the row weights.
        self.order = np.where(np.isnan(sorted_values), values.shape[-1], order)

    def medians(self, row_weights: np.ndarray) -> np.ndarray:
        """Median over rows where row ``i`` counts ``row_weights[i]`` times; NaN if no row."""
        rows = self.shape[-1]
        # int32 halves the memory traffic where the global cumulative sum cannot overflow it.
        bound = self.order.size * max(int(np.max(row_weights, initial=0)), 1)
        dtype = np.int32 if bound < 2**31 else np.int64
        weights = np.append(row_weights, 0).astype(dtype)[self.order].reshape(-1, rows)
        # One cumulative sum over all lanes: lane k's expanded position p is the global
        # position base_k + p, found on the first sorted row whose cumulative weight exceeds it.
        cumulative = np.cumsum(weights, axis=None, dtype=dtype)
        lane_end = cumulative[rows - 1 :: rows]
        total = np.diff(lane_end, prepend=dtype(0))
        base = lane_end - total
        lane_start = np.arange(len(total), dtype=dtype) * rows
        middle = []
        for position in ((total - 1) // 2, total // 2):
            found = np.searchsorted(cumulative, base + position, side="right")
            middle.append(self.sorted[np.clip(found, lane_start, lane_start + rows - 1)])
        medians = np.where(total > 0, 0.5 * middle[0] + 0.5 * middle[1], np.nan)
        return medians.reshape(self.shape[:-1])


def _on_ladder(stats: xr.Dataset) -> xr.Dataset:
    """The store on its lengths ``n >= 2`` in ascending order (``log log n`` needs ``n >= 2``)."""
    stats = stats.sortby("n")
    return stats.isel(n=stats["n"].values >= 2)


def _row_variables(stats: xr.Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(values, n, sequence codes)``: the median variables stacked as ``(variable, unit, n, row)``
    on the ladder (see :func:`_on_ladder`)."""
    stats = _on_ladder(stats)
    values = np.stack(
        [stats[name].transpose("unit", "n", "row").values for name in MEDIAN_VARIABLES]
    ).astype(np.float64)
    if "sequence" in stats.coords:
        sequence_codes, _ = pd.factorize(np.asarray(stats["sequence"].values))
    else:  # no sequence coordinate: every row is its own sequence
        sequence_codes = np.arange(stats.sizes["row"])
    return values, stats["n"].values.astype(np.int64), sequence_codes


def _tied_rows(stats: xr.Dataset) -> np.ndarray:
    """Boolean ``(unit, n, row)`` on the ladder: rows with a tie at the maximum (``N(0) >= 2``)."""
    stats = _on_ladder(stats)
    if "ties" in stats:
        return stats["ties"].transpose("unit", "n", "row").values >= 2
    return np.isposinf(stats["accumulation_scale"].transpose("unit", "n", "row").values)


def unit_labels(stats: xr.Dataset) -> pd.DataFrame:
    """``unit``, ``layer``, ``head`` per unit (NaN layer/head where the source has none)."""
    labels = {"unit": [str(u) for u in stats["unit"].values]}  # zarr 3 gives StringDType labels
    for name in ("layer", "head"):
        if name in stats.coords and stats[name].dims == ("unit",):
            labels[name] = stats[name].values
        else:
            labels[name] = np.full(stats.sizes["unit"], np.nan)
    return pd.DataFrame(labels)


def median_aggregates(stats: xr.Dataset) -> xr.Dataset:
    """Per ``(unit, n)`` medians over rows of ``Lambda``, ``alpha``, ``D_Lambda`` and the tied
    fraction of rows, on the ladder ``n >= 2``.  Unit coordinates (``layer``, ``head``) and the
    store's attributes are kept."""
    values, ladder, sequence_codes = _row_variables(stats)
    medians = _SortedRows(values).medians(np.ones(len(sequence_codes), dtype=np.int64))
    tied_fraction = _tied_rows(stats).mean(axis=-1)
    unit_coords = {
        name: ("unit", stats[name].values)
        for name in stats.coords
        if stats[name].dims == ("unit",) and name != "unit"
    }
    coords = {"unit": stats["unit"].values, "n": ladder, **unit_coords}
    data = {
        name: (("unit", "n"), medians[index])
        for index, name in enumerate(MEDIAN_VARIABLES.values())
    }
    data["tied_fraction"] = (("unit", "n"), tied_fraction)
    return xr.Dataset(data, coords=coords, attrs=dict(stats.attrs))


def _ols_slopes(x: np.ndarray, log_values: np.ndarray) -> np.ndarray:
    """Closed-form OLS slopes of ``log_values[..., k]`` on ``x[k]`` along the last axis."""
    centred = x - x.mean()
    return np.sum(log_values * centred, axis=-1) / np.sum(centred**2)


def _positive_logs(medians: np.ndarray) -> np.ndarray:
    """Logs of medians, NaN where a median is not finite and positive (no slope there)."""
    usable = np.isfinite(medians) & (medians > 0)
    return np.log(np.where(usable, medians, np.nan))


def _statsmodels_fits(x: np.ndarray, log_values: np.ndarray) -> np.ndarray:
    """``(unit, [slope, intercept, slope standard error])`` of the OLS fits of each row of
    ``log_values`` on ``x`` (one statsmodels fit with one column per unit); NaN for rows with a
    non-finite value."""
    out = np.full((log_values.shape[0], 3), np.nan)
    usable = np.all(np.isfinite(log_values), axis=-1)
    if not usable.any():
        return out
    result = sm.OLS(log_values[usable].T, sm.add_constant(x)).fit()
    # statsmodels' bse assumes one response; per column it is sqrt(sigma^2 (X'X)^-1).
    residual_variance = np.sum(result.resid**2, axis=0) / result.df_resid
    with np.errstate(divide="ignore", invalid="ignore"):
        slope_se = np.sqrt(residual_variance * result.normalized_cov_params[1, 1])
    out[usable] = np.column_stack([result.params[1], result.params[0], slope_se])
    return out


def heldout_errors(log_n: np.ndarray, log_lambda: np.ndarray, held_out: int) -> dict[str, np.ndarray]:
    """Held-out mean squared log error of each law in :data:`LAWS`.

    ``log_lambda`` is ``(unit, n)`` on the ascending ladder ``log_n``; each law is fitted in log
    space on all but the ``held_out`` largest lengths and scored on those.
    """
    train, test = slice(None, -held_out), slice(-held_out, None)
    log_log_n = np.log(log_n)
    y_train, y_test = log_lambda[:, train], log_lambda[:, test]
    predictions = {}
    for law, exponent in FIXED_LOG_EXPONENTS.items():
        level = np.mean(y_train - exponent * log_log_n[train], axis=-1, keepdims=True)
        predictions[law] = level + exponent * log_log_n[test]
    for law, regressor in (("free", log_log_n), ("power", log_n)):
        slope = _ols_slopes(regressor[train], y_train)[:, None]
        level = np.mean(y_train, axis=-1, keepdims=True) - slope * regressor[train].mean()
        predictions[law] = level + slope * regressor[test]
    return {law: np.mean((predictions[law] - y_test) ** 2, axis=-1) for law in LAWS}


def law_winners(errors: dict[str, np.ndarray], tie_tolerance: float) -> np.ndarray:
    """Per unit the law with the lowest held-out error, the simplest among those within
    ``tie_tolerance`` of it; NaN (object) where no law could be scored."""
    table = np.stack([errors[law] for law in LAWS], axis=-1)
    scored = np.all(np.isfinite(table), axis=-1)
    best = np.min(np.where(np.isfinite(table), table, np.inf), axis=-1, keepdims=True)
    first_within = np.argmax(table <= best + tie_tolerance, axis=-1)
    return np.where(scored, np.asarray(LAWS, dtype=object)[first_within], np.nan)


def _fit_status(median_lambda: np.ndarray) -> np.ndarray:
    """Why a unit is or is not fitted, from its ``(unit, n)`` median ``Lambda``."""
    status = np.full(median_lambda.shape[0], "fitted", dtype=object)
    degenerate = ~np.all(np.isfinite(median_lambda) & (median_lambda > 0), axis=-1)
    status[degenerate] = "degenerate"
    status[np.any(np.isposinf(median_lambda), axis=-1)] = "tied"
    if median_lambda.shape[1] < MIN_FIT_LENGTHS:
        status[:] = "too_few_lengths"
    return status


def _bootstrap_slopes(
    rows: _SortedRows,
    sequence_codes: np.ndarray,
    regressors: tuple[np.ndarray, ...],
    n_boot: int,
    seed: int,
) -> np.ndarray:
    """Bootstrap slopes ``(n_boot, regressor, variable, unit)``: sequences drawn with replacement,
    the medians of ``rows`` recomputed, and each variable's log medians regressed on each regressor.
    NaN where a replicate's medians are not all finite and positive."""
    n_sequences = int(sequence_codes.max()) + 1
    draws = np.random.default_rng(seed).integers(0, n_sequences, size=(n_boot, n_sequences))
    slopes = np.empty((n_boot, len(regressors)) + rows.shape[:2])
    for replicate, drawn in enumerate(draws):
        multiplicity = np.bincount(drawn, minlength=n_sequences)
        log_medians = _positive_logs(rows.medians(multiplicity[sequence_codes]))
        for index, x in enumerate(regressors):
            slopes[replicate, index] = _ols_slopes(x, log_medians)
    return slopes


def _percentile_interval(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(low, high, valid fraction)`` of percentile intervals over axis 0, ignoring NaN samples;
    NaN where fewer than ``level`` of the samples are valid."""
    valid_fraction = np.mean(np.isfinite(samples), axis=0)
    quantiles = [(1 - level) / 2, (1 + level) / 2]
    bounds = np.full((2,) + samples.shape[1:], np.nan)
    complete = valid_fraction == 1
    bounds[:, complete] = np.quantile(samples[:, complete], quantiles, axis=0)
    partial = (valid_fraction >= level) & ~complete  # nanquantile is slow: only where needed
    if partial.any():
        bounds[:, partial] = np.nanquantile(samples[:, partial], quantiles, axis=0)
    return bounds[0], bounds[1], valid_fraction


def fit_source(
    stats: xr.Dataset,
    held_out: int = 2,
    n_boot: int = 200,
    level: float = 0.9,
    seed: int = 0,
    tie_tolerance: float = 1e-10,
) -> pd.DataFrame:
    """Fit every unit of a statistics store: one tidy row per unit (see the module docstring).

    Columns: ``source, kind, unit, layer, head, fit_status, n_min, n_max, n_lengths,
    n_sequences, tied_fraction, xi, xi_low, xi_high, xi_se, free_law_coefficient, xi_alpha,
    xi_alpha_low, xi_alpha_high, xi_D, xi_D_low, xi_D_high, xi_decomposed,
    decomposition_residual, power_exponent, power_exponent_low, power_exponent_high,
    power_exponent_se, boot_valid_fraction, law_winner, heldout_error_<law>`` for each law in
    :data:`LAWS`, ``excludes_one`` (nullable bool: the ``xi`` interval excludes 1; NA where
    there is no interval), ``ci_level, n_boot``.  ``free_law_coefficient`` is ``c`` of
    ``median Lambda_n = c (log n)^xi``.  ``df.attrs["provenance"]`` records the settings and
    the store's provenance.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if held_out < 1 or n_boot < 1:
        raise ValueError(f"held_out and n_boot must be >= 1, got {held_out} and {n_boot}")
    values, ladder, sequence_codes = _row_variables(stats)
    if len(ladder) == 0:
        raise ValueError("the store has no context length n >= 2 to fit")
    log_n = np.log(ladder.astype(np.float64))
    log_log_n = np.log(log_n)
    rows = _SortedRows(values)
    medians = rows.medians(np.ones(len(sequence_codes), dtype=np.int64))  # (variable, unit, n)
    log_medians = _positive_logs(medians)
    status = _fit_status(medians[0])
    fitted = status == "fitted"
    fitted_logs = np.where(fitted[None, :, None], log_medians, np.nan)
    point = {
        "xi": _statsmodels_fits(log_log_n, fitted_logs[0]),
        "xi_alpha": _statsmodels_fits(log_log_n, fitted_logs[1]),
        "xi_D": _statsmodels_fits(log_log_n, fitted_logs[2]),
        "power": _statsmodels_fits(log_n, fitted_logs[0]),
    }

    slopes = _bootstrap_slopes(rows, sequence_codes, (log_log_n, log_n), n_boot, seed)
    slopes[..., ~fitted] = np.nan
    intervals = {
        "xi": _percentile_interval(slopes[:, 0, 0], level),
        "xi_alpha": _percentile_interval(slopes[:, 0, 1], level),
        "xi_D": _percentile_interval(slopes[:, 0, 2], level),
        "power_exponent": _percentile_interval(slopes[:, 1, 0], level),
    }

    if len(ladder) >= held_out + 2:  # two-parameter laws need two training lengths
        errors = heldout_errors(log_n, fitted_logs[0], held_out)
    else:
        errors = {law: np.full(len(status), np.nan) for law in LAWS}

    xi_decomposed = point["xi_alpha"][:, 0] - point["xi_D"][:, 0] + 1
    xi_low, xi_high, _ = intervals["xi"]
    has_interval = np.isfinite(xi_low) & np.isfinite(xi_high)
    # A tolerance, so that an exact law (the simplex: xi = 1 to rounding) never "excludes" 1.
    outside = (xi_low > 1 + EXCLUDES_ONE_TOLERANCE) | (xi_high < 1 - EXCLUDES_ONE_TOLERANCE)
    excludes_one = pd.array(np.where(has_interval, outside, None), dtype="boolean")

    table = unit_labels(stats)
    table.insert(0, "kind", stats.attrs.get("kind", ""))
    table.insert(0, "source", stats.attrs.get("source", ""))
    table["fit_status"] = status
    table["n_min"], table["n_max"] = int(ladder[0]), int(ladder[-1])
    table["n_lengths"] = len(ladder)
    table["n_sequences"] = int(sequence_codes.max()) + 1
    table["tied_fraction"] = _tied_rows(stats).mean(axis=(1, 2))
    table["xi"], table["xi_low"], table["xi_high"] = point["xi"][:, 0], xi_low, xi_high
    table["xi_se"] = point["xi"][:, 2]
    table["free_law_coefficient"] = np.exp(point["xi"][:, 1])
    for name in ("xi_alpha", "xi_D"):
        table[name] = point[name][:, 0]
        table[f"{name}_low"], table[f"{name}_high"], _ = intervals[name]
    table["xi_decomposed"] = xi_decomposed
    table["decomposition_residual"] = point["xi"][:, 0] - xi_decomposed
    table["power_exponent"] = point["power"][:, 0]
    table["power_exponent_low"], table["power_exponent_high"], _ = intervals["power_exponent"]
    table["power_exponent_se"] = point["power"][:, 2]
    table["boot_valid_fraction"] = np.where(fitted, intervals["xi"][2], np.nan)
    table["law_winner"] = law_winners(errors, tie_tolerance)
    for law in LAWS:
        table[f"heldout_error_{law}"] = errors[law]
    table["excludes_one"] = excludes_one
    table["ci_level"] = level
    table["n_boot"] = n_boot
    settings = {
        "held_out": held_out, "n_boot": n_boot, "level": level, "seed": seed,
        "tie_tolerance": tie_tolerance, "aggregate": "median over rows", "resample": "sequence",
    }
    table.attrs["provenance"] = provenance(
        {"fitting": settings},
        source=stats.attrs.get("source", ""),
        stats_provenance=stats.attrs.get("provenance", ""),
    )
    return table


#: What each fit column means (written into the dataset's variable attributes).
COLUMN_DESCRIPTIONS = {
    "fit_status": "fitted, or why not: tied (median Lambda inf at some n), degenerate, too_few_lengths",
    "tied_fraction": "fraction of rows (all n) with a tie at the maximum",
    "xi": "OLS slope of log median Lambda_n on log log n",
    "xi_se": "OLS standard error of xi (rows treated as exact medians; see xi_low/xi_high)",
    "free_law_coefficient": "c of median Lambda_n = c (log n)^xi",
    "xi_alpha": "OLS slope of log median alpha_n on log log n",
    "xi_D": "OLS slope of log median contact gap on log log n",
    "xi_decomposed": "xi_alpha - xi_D + 1",
    "decomposition_residual": "xi - xi_decomposed (medians need not compose)",
    "power_exponent": "OLS slope of log median Lambda_n on log n",
    "boot_valid_fraction": "fraction of bootstrap replicates with finite positive medians",
    "law_winner": "law with the lowest held-out mean squared log error",
    "excludes_one": "1 if the xi interval excludes 1, 0 if not, NaN without an interval",
}


def fits_to_dataset(fits: pd.DataFrame, provenance_json: str | None = None) -> xr.Dataset:
    """The fit table as an ``xarray.Dataset`` on a ``fit`` dimension (one entry per source x
    unit), ready for NetCDF or Zarr.  Text columns become ``str`` (missing as ``""``), the
    nullable ``excludes_one`` becomes float (1/0/NaN).  ``attrs["provenance"]`` is
    ``provenance_json`` or the table's own."""
    data = {}
    for column in fits.columns:
        series = fits[column]
        if column == "excludes_one":
            values = series.astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
        elif series.dtype == object:
            values = np.asarray(series.fillna("").astype(str), dtype=object)
        else:
            values = series.to_numpy()
        data[column] = xr.Variable("fit", values, attrs={"description": COLUMN_DESCRIPTIONS.get(column, column)})
    label_names = [name for name in ("source", "kind", "unit", "layer", "head") if name in data]
    ds = xr.Dataset(
        {name: value for name, value in data.items() if name not in label_names},
        coords={name: data[name] for name in label_names},
    )
    ds = ds.assign_coords(fit=np.arange(len(fits)))
    record = provenance_json if provenance_json is not None else fits.attrs.get("provenance", "")
    sources = sorted({str(s) for s in fits.get("source", pd.Series(dtype=str))})
    ds.attrs = {"provenance": record, "sources": json.dumps(sources), "laws": json.dumps(LAWS)}
    return ds


def headline(fits: pd.DataFrame) -> pd.DataFrame:
    """One row per source: how many units were fitted, the median ``xi``, the fraction of fitted
    units whose interval excludes 1 (the paper's claim: ``xi = 1`` is not universal) and how many
    units each law won on the held-out largest ``n``."""
    rows = []
    for source, table in fits.groupby("source", sort=False):
        fitted = table[table["fit_status"] == "fitted"]
        with_interval = fitted["excludes_one"].dropna()
        row = {
            "source": source,
            "kind": table["kind"].iloc[0],
            "units": len(table),
            "fitted_units": len(fitted),
            "median_xi": fitted["xi"].median(),
            "xi_q10": fitted["xi"].quantile(0.1),
            "xi_q90": fitted["xi"].quantile(0.9),
            "units_with_interval": len(with_interval),
            "fraction_excluding_one": with_interval.astype(bool).mean() if len(with_interval) else np.nan,
        }
        for law in LAWS:
            row[f"won_by_{law}"] = int((fitted["law_winner"] == law).sum())
        rows.append(row)
    return pd.DataFrame(rows)
