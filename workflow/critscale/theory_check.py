"""Checks of a statistics store against the theory (``shared/theory.md``).

* :func:`theorem_violations`: the per-row finite-``n`` theorems, on every row and grid point.
* :func:`compare_with_theory`: a synthetic family's measured ``Lambda_n`` against the finite-``n``
  prediction from its law (:func:`critscale.families.predict_accumulation_scale`) -- never against
  the asymptote, which study-sized ``n`` are far from.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
from scipy import stats as sps

from .families import MEDIAN_CHECK_ALPHA, Simplex, Sphere, Tied, make_family, median_interval_levels

VIOLATION_COLUMNS = ("source", "unit", "n", "row", "inequality", "beta", "lhs", "rhs")
COMPARISON_COLUMNS = (
    "source", "unit", "check", "n", "measured", "predicted", "ratio", "lower", "upper", "passed", "note",
)
#: Relative tolerance of checks whose prediction is exact (simplex, quantile rows).
EXACT_RTOL = 1e-9


def _violations(lhs, rhs, applies, rtol):
    """Mask of grid points where ``lhs <= rhs`` fails by more than rounding.

    Every side is a float64 sum, log or max over at most ``n`` terms of one row: relative
    rounding error is below ``n * 2**-52`` (``2e-10`` at ``n = 2**20``), so ``rtol = 1e-9``
    absorbs rounding and nothing a theorem could be wrong by.
    """
    with np.errstate(invalid="ignore"):
        tolerance = rtol * np.maximum(1.0, np.maximum(np.abs(lhs), np.abs(rhs)))
        return applies & np.isfinite(lhs) & np.isfinite(rhs) & (lhs > rhs + tolerance)


def _unit_violations(unit_stats, grid, rtol):
    """Violations of one unit on one grid (``"beta"`` absolute, ``"rho"`` relative)."""
    suffix = "" if grid == "beta" else "_rel"
    n_keys = unit_stats["n_keys"].values.astype(np.float64)[..., None]  # (n, row, 1)
    scale = unit_stats["accumulation_scale"].values[..., None]
    alpha = unit_stats["contact_exponent"].values[..., None]
    grid_values = unit_stats[grid].values[None, None, :]
    free_energy = unit_stats[f"free_energy{suffix}"].values
    envelope = unit_stats[f"laplace_envelope{suffix}"].values
    top_two = unit_stats[f"top_two_gap{suffix}"].values
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        beta = np.broadcast_to(grid_values if grid == "beta" else grid_values * scale, free_energy.shape)
        rho = beta / scale
        log_n = np.log(np.where(n_keys >= 1, n_keys, np.nan))
        valid = np.broadcast_to(n_keys >= 1, free_energy.shape)
        finite_scale = np.broadcast_to(np.isfinite(scale), free_energy.shape)
        above = finite_scale & (beta > scale)
        below = finite_scale & (beta < scale) & (n_keys >= 2)
        x = alpha * log_n
        top_two_middle = rho * x * np.exp(-x * (1 - rho))
        checks = {
            "envelope_lower": (envelope, free_energy, valid),
            "envelope_upper": (free_energy, envelope + np.log1p(log_n), valid),
            "partition_bound": (np.exp(free_energy), beta / (beta - scale), above),
            "top_two_bound": (top_two, top_two_middle, below),
            "top_two_chain": (top_two_middle, rho / (math.e * (1 - rho)), below),
        }
    frames = []
    for name, (lhs, rhs, applies) in checks.items():
        lhs, rhs = np.broadcast_to(lhs, beta.shape), np.broadcast_to(rhs, beta.shape)
        where = np.nonzero(_violations(lhs, rhs, applies, rtol))
        if len(where[0]):
            frames.append(
                pd.DataFrame(
                    {
                        "n": unit_stats["n"].values[where[0]],
                        "row": unit_stats["row"].values[where[1]],
                        "inequality": name + suffix,
                        "beta": beta[where],
                        "lhs": lhs[where],
                        "rhs": rhs[where],
                    }
                )
            )
    return frames


def theorem_violations(stats, rtol: float = 1e-9) -> pd.DataFrame:
    """Every row and grid point of a statistics store where a per-row theorem fails.

    Inequalities (``n = n_keys``, ``rho = beta / Lambda``), on the absolute grid ``beta`` and,
    with suffix ``_rel``, on the relative grid ``rho``:

    * ``envelope_lower`` ``S <= F``; ``envelope_upper`` ``F <= S + log(1 + log n)`` (every row);
    * ``partition_bound`` ``Z = exp(F) <= beta / (beta - Lambda)`` for ``beta > Lambda``;
    * ``top_two_bound`` ``Dtop <= rho alpha log n n^(-alpha (1 - rho))`` and ``top_two_chain``
      ``rho alpha log n n^(-alpha (1 - rho)) <= rho / (e (1 - rho))`` for ``beta < Lambda``.

    Rows with ties (``Lambda = inf``) skip the ``Lambda`` inequalities; NaN entries (empty rows,
    undefined relative responses) are skipped, not counted.  ``rtol`` absorbs float64 rounding
    (see :func:`_violations`).  Returns one row per violation, columns :data:`VIOLATION_COLUMNS`.
    """
    needed = ["n_keys", "accumulation_scale", "contact_exponent"] + [
        f"{name}{suffix}" for suffix in ("", "_rel") for name in ("free_energy", "laplace_envelope", "top_two_gap")
    ]
    source = stats.attrs.get("source", "")
    frames = []
    for unit in stats["unit"].values:
        unit_stats = stats[needed].sel(unit=unit).transpose("n", "row", ...).load()
        for grid in ("beta", "rho"):
            for frame in _unit_violations(unit_stats, grid, rtol):
                frames.append(frame.assign(source=source, unit=unit))
    if not frames:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in VIOLATION_COLUMNS})
    return pd.concat(frames, ignore_index=True)[list(VIOLATION_COLUMNS)]


def _ols(x, y):
    """Slope of the OLS line of ``y`` on ``x`` and the weights ``c`` with ``slope = c @ y``."""
    centred = x - x.mean()
    weights = centred / (centred @ centred)
    return float(weights @ y), weights


def _interval(predicted, levels, p_lo, p_hi):
    """Predicted quantiles bracketing ``[p_lo, p_hi]``, widened to stored levels (conservative)."""
    below, above = levels[levels <= p_lo + 1e-12], levels[levels >= p_hi - 1e-12]
    lower = predicted[np.searchsorted(levels, below[-1])] if len(below) else 0.0
    upper = predicted[np.searchsorted(levels, above[0])] if len(above) else np.inf
    return float(lower), float(upper)


def _exponent_check(source, unit, check, x, measured, predicted, lower, upper, note):
    """Slope of ``log median`` on ``x``: measured against predicted, tolerance from the per-``n``
    median intervals (``half width / z`` as a standard deviation, propagated through OLS)."""
    usable = np.isfinite(x) & (measured > 0) & np.isfinite(measured) & (predicted > 0) & np.isfinite(predicted)
    usable &= (lower > 0) & np.isfinite(upper)
    if usable.sum() < 2:
        return None
    x = x[usable]
    measured_slope, weights = _ols(x, np.log(measured[usable]))
    predicted_slope, _ = _ols(x, np.log(predicted[usable]))
    z = sps.norm.isf(MEDIAN_CHECK_ALPHA / 2)
    sd = (np.log(upper[usable]) - np.log(lower[usable])) / (2 * z)
    tolerance = z * math.sqrt(float(np.sum(weights**2 * sd**2)))
    tolerance = max(tolerance, EXACT_RTOL * max(1.0, abs(predicted_slope)))
    return {
        "source": source, "unit": unit, "check": check, "n": np.nan,
        "measured": measured_slope, "predicted": predicted_slope,
        "ratio": measured_slope / predicted_slope if predicted_slope else np.nan,
        "lower": predicted_slope - tolerance, "upper": predicted_slope + tolerance,
        "passed": abs(measured_slope - predicted_slope) <= tolerance, "note": note,
    }


def _measured_exponent(fit, unit, column):
    """The caller's measured exponent for ``unit``: a number, or a fits table
    (:func:`critscale.fitting.fit_source`: columns ``unit``, ``xi``, ``power_exponent``)."""
    if fit is None:
        return None
    if isinstance(fit, pd.DataFrame):
        match = fit[fit["unit"].astype(str) == str(unit)]
        if match.empty or column not in match:
            return None
        return float(match[column].iloc[0])
    return float(fit) if column == "xi" else None


def compare_with_theory(stats, fit: float | pd.DataFrame | None = None) -> pd.DataFrame:
    """Measured ``Lambda_n`` of a synthetic family against its finite-``n`` prediction.

    Columns :data:`COMPARISON_COLUMNS`; ``check`` is one of

    * ``median`` (random i.i.d. rows, per ``n``): the median over rows must lie in the interval of
      predicted quantiles that holds the median of that many rows with probability
      ``1 - MEDIAN_CHECK_ALPHA`` (:func:`critscale.families.median_interval_levels`, which also
      accounts for the Monte-Carlo error of the prediction);
    * ``every_row_exact`` (simplex, quantile rows, per ``n``): every row equals the prediction
      to ``EXACT_RTOL``; ``every_row_tied`` (tied): every row has ties and ``Lambda = inf``;
    * ``xi``: OLS slope of log median on ``log log n`` against the same fit of the predicted
      medians on the same ladder; ``power_exponent`` instead for keys on the sphere (slope on
      ``log n``).  ``fit`` (a number: ``xi`` of every unit; or the fits table of
      :func:`critscale.fitting.fit_source`, matched on ``unit``) replaces the measured slope;
      both fit OLS of log medians over rows, so they agree up to rounding;
    * ``asymptotic_xi`` / ``asymptotic_power_exponent``: the asymptotic value, for information
      only (``passed`` is NA): at study-sized ``n`` it is not a pass criterion.

    Stores that are not synthetic families (no ``predicted_accumulation_scale``) give an empty
    frame.
    """
    empty = pd.DataFrame({name: pd.Series(dtype=object) for name in COMPARISON_COLUMNS})
    if stats.attrs.get("kind") != "family" or "predicted_accumulation_scale" not in stats:
        return empty
    family = make_family(stats.attrs["family"], json.loads(stats.attrs.get("params", "{}")))
    sampling = stats.attrs.get("sampling", "random")
    source = stats.attrs.get("source", "")
    draws = int(stats.attrs.get("prediction_draws", 2000))
    prediction = stats["predicted_accumulation_scale"].transpose("n", ...).load()
    levels = prediction[prediction.dims[1]].values
    predicted_median = np.array([_interval(p, levels, 0.5, 0.5)[0] for p in prediction.values])
    n_values = stats["n"].values.astype(np.float64)
    exact = isinstance(family, Simplex) or sampling == "quantile"

    records = []
    for unit in stats["unit"].values:
        unit_stats = stats[["accumulation_scale", "ties"]].sel(unit=unit).transpose("n", "row").load()
        lam_all = unit_stats["accumulation_scale"].values
        ties_all = unit_stats["ties"].values
        medians, lowers, uppers = [], [], []
        for i, n in enumerate(n_values):
            valid = ~np.isnan(lam_all[i])
            lam, rows = lam_all[i][valid], int(valid.sum())
            median = float(np.median(lam)) if rows else np.nan
            base = {"source": source, "unit": unit, "n": n, "measured": median, "predicted": predicted_median[i]}
            with np.errstate(invalid="ignore", divide="ignore"):
                base["ratio"] = median / predicted_median[i]
            if isinstance(family, Tied):
                tied = int(np.sum((ties_all[i][valid] >= 2) & np.isposinf(lam)))
                passed = rows > 0 and tied == rows and np.isposinf(predicted_median[i])
                records.append(base | {"check": "every_row_tied", "lower": np.inf, "upper": np.inf,
                                       "passed": passed, "note": f"{tied} of {rows} rows tied"})
                lower = upper = np.inf
            elif exact:
                target = predicted_median[i]
                with np.errstate(invalid="ignore"):
                    deviation = np.abs(lam - target) / max(abs(target), 1e-300)
                worst = float(np.max(deviation)) if rows else np.nan
                lower, upper = target * (1 - EXACT_RTOL), target * (1 + EXACT_RTOL)
                passed = bool(rows > 0 and np.all((lam == target) | (deviation <= EXACT_RTOL)))
                records.append(base | {"check": "every_row_exact", "lower": lower, "upper": upper,
                                       "passed": passed, "note": f"largest relative deviation {worst:.3g}"})
            else:
                p_lo, p_hi = median_interval_levels(max(rows, 1), draws)
                lower, upper = _interval(prediction.values[i], levels, p_lo, p_hi)
                passed = bool(rows > 0 and lower <= median <= upper)
                records.append(base | {"check": "median", "lower": lower, "upper": upper, "passed": passed,
                                       "note": f"{rows} rows; median interval at levels {p_lo:.4f}-{p_hi:.4f}"})
            medians.append(median)
            lowers.append(lower)
            uppers.append(upper)
        if isinstance(family, Tied):
            continue
        medians, lowers, uppers = map(np.asarray, (medians, lowers, uppers))
        if isinstance(family, Sphere):
            check = _exponent_check(source, unit, "power_exponent", np.log(n_values), medians,
                                    predicted_median, lowers, uppers, "slope of log median on log n")
            asymptote, asymptote_name = 2.0 / (int(family.params["d"]) - 1), "asymptotic_power_exponent"
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                x = np.where(n_values >= 3, np.log(np.log(n_values)), np.nan)
            check = _exponent_check(source, unit, "xi", x, medians, predicted_median, lowers, uppers,
                                    "slope of log median on log log n")
            asymptote, asymptote_name = float(family.asymptotic_xi), "asymptotic_xi"
        if check is None:
            continue
        given = _measured_exponent(fit, unit, check["check"])
        if given is not None:
            check["measured"], check["note"] = given, f"measured {check['check']} given by the caller (fits)"
            check["ratio"] = given / check["predicted"] if check["predicted"] else np.nan
            check["passed"] = bool(check["lower"] <= given <= check["upper"])
        records.append(check)
        records.append({
            "source": source, "unit": unit, "check": asymptote_name, "n": np.nan,
            "measured": check["measured"], "predicted": asymptote,
            "ratio": check["measured"] / asymptote if asymptote else np.nan,
            "lower": np.nan, "upper": np.nan, "passed": None,
            "note": "information only: asymptotes are approached at a log-log rate",
        })
    if not records:
        return empty
    frame = pd.DataFrame.from_records(records)[list(COMPARISON_COLUMNS)]
    frame["passed"] = frame["passed"].astype("boolean")
    return frame


class TheoryCheckError(RuntimeError):
    """A synthetic family disagrees with its prediction, or a per-row theorem fails."""


def raise_on_failure(comparison: pd.DataFrame, violations: pd.DataFrame, show: int = 10) -> None:
    """Raise :class:`TheoryCheckError` if any comparison failed (``passed`` False; NA is
    information only) or any theorem violation was found; the message lists the first ``show``."""
    failed = comparison[comparison["passed"].astype("boolean").eq(False).fillna(False)] if len(comparison) else comparison
    if failed.empty and violations.empty:
        return
    lines = [f"theory check failed: {len(failed)} comparison(s) failed, {len(violations)} theorem violation(s)"]
    if not failed.empty:
        lines.append(failed.head(show).to_string(index=False))
    if not violations.empty:
        lines.append(violations.head(show).to_string(index=False))
    raise TheoryCheckError("\n".join(lines))
