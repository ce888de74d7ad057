"""Exponent laws per unit (a head, or a family's one unit): ``xi`` with intervals from
resampling independent sequences, its decomposition, per-unit p-values with false-discovery control, and the law comparison.

Input is a statistics store (``unit, n, row`` per-row quantities, see ``docs/theory.md``);
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
* **Uncertainty.** The independent sequences (the ``sequence`` coordinate: windows of a model
  source, rows of a family) are resampled with replacement; all rows of a drawn sequence, at every
  ``n``, enter with its multiplicity, and the medians and slopes are recomputed
  (:mod:`critscale.resampling`).  The interval method (:mod:`critscale.intervals`, default
  ``student_t``: resampling standard error with Student-``t`` quantiles on ``sequences - 1``
  degrees of freedom) gives the interval and the p-value of ``H0: xi = 1``.  With fewer than
  ``min_sequences`` sequences there is no interval (``fit_status = too_few_units``, the label of
  the published tables; the point ``xi`` is still reported).  A replicate whose medians are not all finite and positive gives no slope;
  the interval is NaN when fewer than ``level`` of the replicates have one
  (``boot_valid_fraction``).  A zero-width interval (no variation between sequences) never
  "excludes 1" and has no p-value.
* **Many units.** ``excludes_one`` is the raw, per-unit statement.  The controlled one is
  ``discovery``: Benjamini-Yekutieli (or -Hochberg) over the units of the source with a p-value,
  at false-discovery rate ``fdr``; heads of one model share its windows, so their tests are
  dependent, which BY allows.
* **Law comparison.** :mod:`critscale.laws`: extrapolation by a rolling origin over the
  ``held_out`` largest lengths, on the point medians and on every replicate; ``law_winner`` is
  the law that wins at least ``law_share`` of the replicates, else ``undecided``.
"""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import pandas as pd
import statsmodels.api as sm
import xarray as xr

from critscale import intervals, laws
from critscale.laws import LAWS
from critscale.resampling import SortedRows, sequence_multiplicities
from critscale.storage import provenance

log = logging.getLogger(__name__)

#: An exact law (the simplex: xi = 1 to rounding) must never "exclude" 1.
EXCLUDES_ONE_TOLERANCE = 1e-9
#: Per-row variables aggregated by median, and the name of their aggregate.
MEDIAN_VARIABLES = {
    "accumulation_scale": "median_lambda",
    "contact_exponent": "median_alpha",
    "contact_gap": "median_contact_gap",
}
MIN_FIT_LENGTHS = 3
#: Units with a point fit; those with an interval are ``fitted``.
POINT_FIT_STATUSES = ("fitted", "too_few_units")
DEFAULTS = {
    "held_out": 3, "n_boot": 1000, "level": 0.9, "method": "student_t", "min_sequences": 4,
    "fdr": 0.05, "fdr_method": "by", "law_share": 0.8,
}


def _on_ladder(stats: xr.Dataset) -> xr.Dataset:
    """The store on its lengths ``n >= 2`` in ascending order (``log log n`` needs ``n >= 2``)."""
    stats = stats.sortby("n")
    return stats.isel(n=stats["n"].values >= 2)


def _row_variables(stats: xr.Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(values, n, sequence codes)``: the median variables stacked as ``(variable, unit, n, row)``
    on the ladder (see :func:`_on_ladder`).  Logs how long the read took (the study's read cost)."""
    started = time.perf_counter()
    stats = _on_ladder(stats)
    values = np.stack(
        [stats[name].transpose("unit", "n", "row").values for name in MEDIAN_VARIABLES]
    ).astype(np.float64)
    log.info("read %s of shape %s (unit, n, row) in %.2f s", ", ".join(MEDIAN_VARIABLES),
             values.shape[1:], time.perf_counter() - started)
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
    """``unit``, ``layer``, ``head``, ``layer_type`` and ``window`` per unit (NaN where the source
    has none; ``layer_type`` is ``sliding_attention`` or ``full_attention`` for model heads, so
    local and global layers can be told apart)."""
    labels = {"unit": [str(u) for u in stats["unit"].values]}  # zarr 3 gives StringDType labels
    for name in ("layer", "head", "layer_type", "window"):
        if name in stats.coords and stats[name].dims == ("unit",):
            values = stats[name].values
            labels[name] = [str(v) for v in values] if name == "layer_type" else values
        else:
            labels[name] = np.full(stats.sizes["unit"], np.nan)
    return pd.DataFrame(labels)


def median_aggregates(stats: xr.Dataset) -> xr.Dataset:
    """Per ``(unit, n)`` medians over rows of ``Lambda``, ``alpha``, ``D_Lambda`` and the tied
    fraction of rows, on the ladder ``n >= 2``.  Unit coordinates (``layer``, ``head``) and the
    store's attributes are kept."""
    values, ladder, sequence_codes = _row_variables(stats)
    medians = SortedRows(values, sequence_codes).medians(np.ones(int(sequence_codes.max()) + 1, dtype=np.int64))
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


def settings_from_config(fitting_config: dict) -> dict:
    """:func:`fit_source` keyword arguments from the config's ``fitting`` section (its
    ``bootstrap`` is ``n_boot``; missing keys take :data:`DEFAULTS`)."""
    names = {"bootstrap": "n_boot", **{key: key for key in DEFAULTS if key != "n_boot"}}
    return {argument: fitting_config.get(key, DEFAULTS[argument]) for key, argument in names.items()}


def _fit_status(median_lambda: np.ndarray, n_sequences: int, min_sequences: int) -> np.ndarray:
    """Why a unit is or is not fitted, from its ``(unit, n)`` median ``Lambda`` and the number
    of independent sequences of the store."""
    # `too_few_units` is the published label (tables stay as they were); it counts sequences.
    enough = n_sequences >= min_sequences
    status = np.full(median_lambda.shape[0], "fitted" if enough else "too_few_units", dtype=object)
    degenerate = ~np.all(np.isfinite(median_lambda) & (median_lambda > 0), axis=-1)
    status[degenerate] = "degenerate"
    status[np.any(np.isposinf(median_lambda), axis=-1)] = "tied"
    if median_lambda.shape[1] < MIN_FIT_LENGTHS:
        status[:] = "too_few_lengths"
    return status


def _check_settings(held_out, n_boot, level, method, min_sequences, fdr, fdr_method, law_share) -> None:
    if not 0 < level < 1:
        raise ValueError(f"fitting level must be in (0, 1), got {level}")
    if held_out < 1 or n_boot < 2:
        raise ValueError(f"fitting held_out must be >= 1 and bootstrap >= 2, got {held_out} and {n_boot}")
    if min_sequences < 2:
        raise ValueError(f"fitting min_sequences must be >= 2 (one sequence has no spread), got {min_sequences}")
    if not 0 < law_share <= 1:
        raise ValueError(f"fitting law_share must be in (0, 1], got {law_share}")
    intervals.check_method(method)
    intervals.check_fdr(fdr, fdr_method)


def _law_columns(log_n, point_logs, replicate_logs, held_out, tie_tolerance, law_share) -> dict:
    """Point errors and winner, per-replicate winner frequencies and the headline law."""
    n_heads = point_logs.shape[0]
    if not laws.can_score(len(log_n), held_out):
        nothing = np.full(n_heads, np.nan, dtype=object)
        return {"errors": np.full((n_heads, len(LAWS)), np.nan), "point_winner": nothing,
                "frequencies": np.full((n_heads, len(LAWS)), np.nan), "winner": nothing}
    errors = laws.extrapolation_errors(log_n, point_logs, held_out)
    replicate_winners = laws.winner_index(laws.extrapolation_errors(log_n, replicate_logs, held_out), tie_tolerance)
    frequencies = laws.winner_frequencies(replicate_winners)
    return {
        "errors": errors,
        "point_winner": laws.law_names(laws.winner_index(errors, tie_tolerance)),
        "frequencies": frequencies,
        "winner": laws.headline_laws(frequencies, law_share),
    }


def fit_source(
    stats: xr.Dataset,
    held_out: int = DEFAULTS["held_out"],
    n_boot: int = DEFAULTS["n_boot"],
    level: float = DEFAULTS["level"],
    seed: int = 0,
    tie_tolerance: float = 1e-10,
    method: str = DEFAULTS["method"],
    min_sequences: int = DEFAULTS["min_sequences"],
    fdr: float = DEFAULTS["fdr"],
    fdr_method: str = DEFAULTS["fdr_method"],
    law_share: float = DEFAULTS["law_share"],
) -> pd.DataFrame:
    """Fit every unit of a statistics store: one tidy row per unit (see the module docstring).

    Columns: ``source, kind, unit, layer, head, fit_status, n_min, n_max, n_lengths,
    n_sequences, tied_fraction, xi, xi_low, xi_high, xi_se, xi_resampling_se, p_value_xi_one,
    p_adjusted_xi_one, free_law_coefficient, xi_alpha, xi_alpha_low, xi_alpha_high, xi_D,
    xi_D_low, xi_D_high, xi_decomposed, decomposition_residual, power_exponent,
    power_exponent_low, power_exponent_high, power_exponent_se, boot_valid_fraction,
    law_winner, law_point_winner, law_frequency_<law>, heldout_error_<law>`` for each law in
    :data:`LAWS`, ``excludes_one`` (nullable bool, raw: the ``xi`` interval excludes 1),
    ``discovery`` (nullable bool, FDR-controlled: ``xi != 1`` at ``fdr``), ``ci_level, n_boot,
    interval_method, fdr, fdr_method, law_share``.  ``free_law_coefficient`` is ``c`` of
    ``median Lambda_n = c (log n)^xi``.  ``df.attrs["provenance"]`` records the settings and
    the store's provenance.
    """
    _check_settings(held_out, n_boot, level, method, min_sequences, fdr, fdr_method, law_share)
    values, ladder, sequence_codes = _row_variables(stats)
    if len(ladder) == 0:
        raise ValueError("the store has no context length n >= 2 to fit")
    n_sequences = int(sequence_codes.max()) + 1
    log_n = np.log(ladder.astype(np.float64))
    rows = SortedRows(values, sequence_codes)
    medians = rows.medians(np.ones(n_sequences, dtype=np.int64))  # (variable, unit, n)
    status = _fit_status(medians[0], n_sequences, min_sequences)
    has_point, resampled = np.isin(status, POINT_FIT_STATUSES), status == "fitted"
    point_logs = np.where(has_point[None, :, None], _positive_logs(medians), np.nan)
    # Every replicate draws the sequences once, for all variables, units and laws alike.
    replicate_medians = rows.medians(sequence_multiplicities(n_sequences, n_boot, seed))  # (B, variable, unit, n)
    replicate_logs = np.where(resampled[None, None, :, None], _positive_logs(replicate_medians), np.nan)

    point, bounds = _exponent_fits(log_n, point_logs, replicate_logs, n_sequences, level, method)
    law = _law_columns(log_n, point_logs[0], replicate_logs[:, 0], held_out, tie_tolerance, law_share)
    law["winner"] = np.where(resampled, law["winner"], np.nan)
    excludes_one, discovery, p_adjusted = _xi_one_decisions(bounds["xi"], fdr, fdr_method)

    table = unit_labels(stats)
    table.insert(0, "kind", stats.attrs.get("kind", ""))
    table.insert(0, "source", stats.attrs.get("source", ""))
    columns = {
        "fit_status": status, "n_min": int(ladder[0]), "n_max": int(ladder[-1]), "n_lengths": len(ladder),
        "n_sequences": n_sequences, "tied_fraction": _tied_rows(stats).mean(axis=(1, 2)),
        **_exponent_columns(point, bounds, p_adjusted, resampled),
        **_law_table_columns(law, resampled),
        "excludes_one": excludes_one, "discovery": discovery,
        "ci_level": level, "n_boot": n_boot, "interval_method": method,
        "fdr": fdr, "fdr_method": fdr_method, "law_share": law_share,
    }
    for name, column in columns.items():
        table[name] = column
    settings = {
        "held_out": held_out, "n_boot": n_boot, "level": level, "seed": seed,
        "tie_tolerance": tie_tolerance, "method": method, "min_sequences": min_sequences, "fdr": fdr,
        "fdr_method": fdr_method, "law_share": law_share,
        "aggregate": "median over rows", "resample": "sequence",
    }
    table.attrs["provenance"] = provenance(
        {"fitting": settings},
        source=stats.attrs.get("source", ""),
        stats_provenance=stats.attrs.get("provenance", ""),
    )
    return table


#: Exponents fitted per unit: the median variable (index into :data:`MEDIAN_VARIABLES`) whose
#: logs are regressed, and on which abscissa.
EXPONENTS = {
    "xi": (0, "log_log_n"),
    "xi_alpha": (1, "log_log_n"),
    "xi_D": (2, "log_log_n"),
    "power_exponent": (0, "log_n"),
}


def _exponent_fits(log_n, point_logs, replicate_logs, n_sequences, level, method) -> tuple[dict, dict]:
    """Per exponent of :data:`EXPONENTS`: the point fit ``(unit, [slope, intercept, se])`` and the
    resampling interval from the replicates' slopes."""
    abscissa = {"log_n": log_n, "log_log_n": np.log(log_n)}
    point = {name: _statsmodels_fits(abscissa[axis], point_logs[variable])
             for name, (variable, axis) in EXPONENTS.items()}
    replicate_slopes = {name: _ols_slopes(abscissa[axis], replicate_logs[:, variable])
                        for name, (variable, axis) in EXPONENTS.items()}
    bounds = {
        name: intervals.resampling_interval(point[name][:, 0], replicate_slopes[name], n_sequences, level, method)
        for name in point
    }
    return point, bounds


def _xi_one_decisions(xi: dict, fdr: float, fdr_method: str):
    """``excludes_one`` (raw: the interval excludes 1; never for a zero-width interval), the
    FDR-controlled ``discovery`` and the adjusted p-values of ``H0: xi = 1``."""
    positive_width = xi["high"] - xi["low"] > 0
    outside = (xi["low"] > 1 + EXCLUDES_ONE_TOLERANCE) | (xi["high"] < 1 - EXCLUDES_ONE_TOLERANCE)
    excludes_one = pd.array(np.where(positive_width, outside, None), dtype="boolean")
    discovery, p_adjusted = intervals.fdr_decisions(xi["p_value"], fdr, fdr_method)
    return excludes_one, discovery, p_adjusted


def _exponent_columns(point: dict, bounds: dict, p_adjusted, resampled) -> dict:
    """The fit table's exponent columns, in their order (``xi`` through ``boot_valid_fraction``)."""
    xi = bounds["xi"]
    columns = {
        "xi": point["xi"][:, 0], "xi_low": xi["low"], "xi_high": xi["high"], "xi_se": point["xi"][:, 2],
        "xi_resampling_se": xi["se"], "p_value_xi_one": xi["p_value"], "p_adjusted_xi_one": p_adjusted,
        "free_law_coefficient": np.exp(point["xi"][:, 1]),
    }
    for name in ("xi_alpha", "xi_D"):
        columns |= {name: point[name][:, 0], f"{name}_low": bounds[name]["low"], f"{name}_high": bounds[name]["high"]}
    columns["xi_decomposed"] = point["xi_alpha"][:, 0] - point["xi_D"][:, 0] + 1
    columns["decomposition_residual"] = columns["xi"] - columns["xi_decomposed"]
    columns |= {
        "power_exponent": point["power_exponent"][:, 0],
        "power_exponent_low": bounds["power_exponent"]["low"],
        "power_exponent_high": bounds["power_exponent"]["high"],
        "power_exponent_se": point["power_exponent"][:, 2],
        "boot_valid_fraction": np.where(resampled, xi["valid_fraction"], np.nan),
    }
    return columns


def _law_table_columns(law: dict, resampled) -> dict:
    """The fit table's law columns: winners, then per law its frequency and held-out error."""
    return {
        "law_winner": law["winner"], "law_point_winner": law["point_winner"],
        **{f"law_frequency_{name}": np.where(resampled, law["frequencies"][:, index], np.nan)
           for index, name in enumerate(LAWS)},
        **{f"heldout_error_{name}": law["errors"][:, index] for index, name in enumerate(LAWS)},
    }


#: What each fit column means (written into the dataset's variable attributes).
COLUMN_DESCRIPTIONS = {
    "fit_status": "fitted, or why not: tied (median Lambda inf at some n), degenerate, too_few_lengths, "
                  "too_few_units (point xi only: fewer independent sequences than min_sequences, no interval)",
    "tied_fraction": "fraction of rows (all n) with a tie at the maximum",
    "xi": "OLS slope of log median Lambda_n on log log n",
    "xi_se": "OLS standard error of xi (rows treated as exact medians; see xi_low/xi_high)",
    "free_law_coefficient": "c of median Lambda_n = c (log n)^xi",
    "xi_alpha": "OLS slope of log median alpha_n on log log n",
    "xi_D": "OLS slope of log median contact gap on log log n",
    "xi_decomposed": "xi_alpha - xi_D + 1",
    "decomposition_residual": "xi - xi_decomposed (medians need not compose)",
    "power_exponent": "OLS slope of log median Lambda_n on log n",
    "xi_resampling_se": "standard error of xi from resampling sequences (x sqrt(G/(G-1)))",
    "p_value_xi_one": "p-value of H0: xi = 1 from the interval method",
    "p_adjusted_xi_one": "p_value_xi_one adjusted for the false-discovery rate over the source's units",
    "boot_valid_fraction": "fraction of bootstrap replicates with finite positive medians",
    "law_winner": "law winning at least law_share of the resamples (lowest extrapolation error), else undecided",
    "law_point_winner": "law with the lowest extrapolation error on the point medians",
    "excludes_one": "raw, no multiplicity control: 1 if the xi interval (positive width) excludes 1, 0 if not, NaN without",
    "discovery": "FDR-controlled: 1 if xi != 1 is a discovery at the fdr over the source's units, 0 if not, NaN untested",
    **{f"law_frequency_{law}": f"share of resamples won by the {law} law" for law in LAWS},
    **{f"heldout_error_{law}": f"mean squared log extrapolation error of the {law} law" for law in LAWS},
}


def fits_to_dataset(fits: pd.DataFrame, provenance_json: str | None = None) -> xr.Dataset:
    """The fit table as an ``xarray.Dataset`` on a ``fit`` dimension (one entry per source x
    unit), ready for NetCDF or Zarr.  Text columns become ``str`` (missing as ``""``), the
    nullable booleans (``excludes_one``, ``discovery``) become float (1/0/NaN).  ``attrs["provenance"]`` is
    ``provenance_json`` or the table's own."""
    data = {}
    for column in fits.columns:
        series = fits[column]
        if isinstance(series.dtype, pd.BooleanDtype):
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


def _count(flags: pd.Series) -> int:
    return int(flags.astype("boolean").fillna(False).astype(bool).sum())


def headline(fits: pd.DataFrame) -> pd.DataFrame:
    """One row per source (and per ``layer_type`` of a model with sliding-window and global
    layers, which are kept apart): units with a point ``xi`` and with an interval, the median ``xi``, the
    paper's claim (``xi = 1`` is not universal) as the FDR-controlled fraction of units with
    ``xi != 1`` (``fraction_excluding_one_fdr``) next to the raw, uncontrolled fraction whose
    interval excludes 1 (``fraction_excluding_one_raw``) and the false discoveries to expect of
    each, and per law the units it wins decidedly (``won_by_<law>``), the undecided units and the
    law's mean winning frequency over resamples."""
    rows = []
    layer_type = fits["layer_type"] if "layer_type" in fits else pd.Series(np.nan, index=fits.index)
    layers_of = layer_type.astype(object).where(layer_type.notna(), "all")
    for (source, layers), table in fits.groupby([fits["source"], layers_of], sort=False):
        with_xi = table[np.isfinite(table["xi"].astype(float))]
        with_interval = table[table["excludes_one"].notna()]
        tested = table[table["discovery"].notna()]
        raw, discoveries = _count(with_interval["excludes_one"]), _count(tested["discovery"])
        level, fdr = float(table["ci_level"].iloc[0]), float(table["fdr"].iloc[0])
        row = {
            "source": source,
            "kind": table["kind"].iloc[0],
            "layers": layers,
            "units": len(table),
            "fitted_units": len(with_xi),
            "units_with_interval": len(with_interval),
            "median_xi": with_xi["xi"].median(),
            "xi_q10": with_xi["xi"].quantile(0.1),
            "xi_q90": with_xi["xi"].quantile(0.9),
            "fdr": fdr,
            "fdr_method": table["fdr_method"].iloc[0],
            "discoveries_fdr": discoveries,
            "fraction_excluding_one_fdr": discoveries / len(tested) if len(tested) else np.nan,
            # FDR = E[false / discoveries] <= fdr: about fdr x discoveries of them are false.
            "expected_false_discoveries_fdr": fdr * discoveries,
            "excluding_one_raw": raw,
            "fraction_excluding_one_raw": raw / len(with_interval) if len(with_interval) else np.nan,
            # Uncontrolled: if no unit had xi != 1, (1 - level) of the intervals would still exclude 1.
            "expected_false_raw_if_all_null": (1 - level) * len(with_interval),
            "undecided_units": int((table["law_winner"] == laws.UNDECIDED).sum()),
        }
        for law in LAWS:
            row[f"won_by_{law}"] = int((table["law_winner"] == law).sum())
        for law in LAWS:
            row[f"mean_frequency_{law}"] = table[f"law_frequency_{law}"].mean()
        rows.append(row)
    return pd.DataFrame(rows)
