"""Checks of a statistics store against the theory (``docs/theory.md``).

* :func:`theorem_violations`: the per-row finite-``n`` theorems, on every row and grid point.
* :func:`compare_with_theory`: a synthetic family's measured ``Lambda_n`` against the finite-``n``
  prediction from its law (:func:`critscale.families.predictions.predict_accumulation_scale`) -- never against
  the asymptote, which study-sized ``n`` are far from.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from .families.base import ScoreFamily
from .families.catalog import make_family
from .families.predictions import MEDIAN_CHECK_ALPHA, median_interval_levels

VIOLATION_COLUMNS = ("source", "unit", "n", "row", "inequality", "grid", "at", "lhs", "rhs")
COMPARISON_COLUMNS = (
    "source", "family", "unit", "check", "n", "measured", "predicted", "ratio", "lower", "upper", "passed", "note",
)
#: Relative tolerance of checks whose prediction is exact (simplex, quantile rows).
EXACT_RTOL = 1e-9
#: Per-row variables the theorem checks read; a store without one of them cannot be checked.
CHECKED_VARIABLES = (
    "n_keys", "ties", "accumulation_scale", "contact_gap", "contact_exponent", "contact_entropy", "gap_count",
    "resolved_scale",
) + tuple(f"{name}{suffix}" for suffix in ("", "_rel") for name in ("free_energy", "laplace_envelope", "top_two_gap"))
#: Elements of one ``(unit, n, row, grid)`` work array: units are checked in blocks of this size,
#: so memory stays bounded for model stores of hundreds of heads.
BLOCK_ELEMENTS = 2**21


def _violations(lhs, rhs, applies, rtol, two_sided=False):
    """Mask of points where ``lhs <= rhs`` (``lhs == rhs`` if ``two_sided``) fails by more than
    rounding.

    Every side is a float64 sum, log or max over at most ``n`` terms of one row: relative
    rounding error is below ``n * 2**-52`` (``2e-10`` at ``n = 2**20``), so ``rtol = 1e-9``
    absorbs rounding and nothing a theorem could be wrong by.
    """
    with np.errstate(invalid="ignore"):
        tolerance = rtol * np.maximum(1.0, np.maximum(np.abs(lhs), np.abs(rhs)))
        excess = np.abs(lhs - rhs) if two_sided else lhs - rhs
        return applies & np.isfinite(lhs) & np.isfinite(rhs) & (excess > tolerance)


def _response_checks(block, grid):
    """Inequalities between the softmax responses of a block on one grid (``"beta"`` absolute,
    ``"rho"`` relative): name -> ``(lhs, rhs, applies, two_sided)`` on ``(unit, n, row, grid)``."""
    suffix = "" if grid == "beta" else "_rel"
    n_keys = block["n_keys"].values.astype(np.float64)[..., None]
    scale = block["accumulation_scale"].values[..., None]
    alpha = block["contact_exponent"].values[..., None]
    contact_gap = block["contact_gap"].values[..., None]
    contact_entropy = block["contact_entropy"].values[..., None]
    grid_values = block[grid].values
    free_energy = block[f"free_energy{suffix}"].values
    envelope = block[f"laplace_envelope{suffix}"].values
    top_two = block[f"top_two_gap{suffix}"].values
    shape = free_energy.shape
    beta = np.broadcast_to(grid_values if grid == "beta" else grid_values * scale, shape)
    rho = beta / scale
    log_n = np.log(np.where(n_keys >= 1, n_keys, np.nan))
    valid = np.broadcast_to(n_keys >= 1, shape)
    finite_scale = np.broadcast_to(np.isfinite(scale), shape)
    above = finite_scale & (beta > scale)
    below = finite_scale & (beta < scale) & (n_keys >= 2)
    x = alpha * log_n
    top_two_middle = rho * x * np.exp(-x * (1 - rho))
    return beta, {
        "envelope_lower": (envelope, free_energy, valid, False),
        "envelope_upper": (free_energy, envelope + np.log1p(log_n), valid, False),
        "partition_bound": (np.exp(free_energy), beta / (beta - scale), above, False),
        "top_two_bound": (top_two, top_two_middle, below, False),
        "top_two_chain": (top_two_middle, rho / (math.e * (1 - rho)), below, False),
        # S(beta) = sup_t (log N(t) - beta t) is 0 exactly when log N(t) <= beta t for every t,
        # i.e. for beta >= Lambda; at t = D_Lambda it is at least C - beta D_Lambda, which is
        # (Lambda - beta) D_Lambda > 0 below Lambda.  Together they pin Lambda to the row.
        "envelope_vanishes": (envelope, np.zeros(shape), finite_scale & (beta >= scale), False),
        "envelope_contact": (contact_entropy - beta * contact_gap, envelope, valid, False),
    }


def _row_checks(block):
    """Identities and bounds of the per-row scalars and ``N(t)``: name -> ``(lhs, rhs, applies,
    two_sided, grid values)``; ``grid values`` is the ``t`` grid or None."""
    n_keys = block["n_keys"].values.astype(np.float64)
    scale = block["accumulation_scale"].values
    contact_gap = block["contact_gap"].values
    contact_entropy = block["contact_entropy"].values
    alpha = block["contact_exponent"].values
    finite = np.isfinite(scale) & (scale > 0)
    checks = {
        # C = log N(D_Lambda) = Lambda D_Lambda = alpha log n (theory: contact-count entropy)
        "contact_identity": (contact_entropy, scale * contact_gap, finite, True, None),
        "contact_exponent_identity": (contact_entropy, alpha * np.log(np.maximum(n_keys, 1)), n_keys >= 2, True, None),
    }
    resolutions = block["r"].values
    if (resolutions == 0).any():
        zero = int(np.flatnonzero(resolutions == 0)[0])
        checks["resolved_at_zero"] = (block["resolved_scale"].values[..., zero], scale, np.isfinite(scale), True, None)
    t = block["t"].values
    counts = block["gap_count"].values.astype(np.float64)
    ties = block["ties"].values.astype(np.float64)
    has_keys = (n_keys >= 1) & ~np.isnan(scale)
    # Lambda = inf exactly when the maximum is tied, N(0) >= 2 (theory: ties at the maximum)
    checks["tied_iff_infinite"] = (np.isposinf(scale) * 1.0, (ties >= 2) * 1.0, has_keys, True, None)
    if (t == 0).any():
        checks["ties_are_count_at_zero"] = (ties, counts[..., int(np.flatnonzero(t == 0)[0])], has_keys, True, None)
    with np.errstate(divide="ignore"):
        log_count = np.log(counts)
    checks["count_bound"] = (log_count, scale[..., None] * t, finite[..., None] & (t > 0) & (counts >= 1), False, t)
    return checks


def _frames(block, checks, grid_name, grid_values, rtol):
    """One violation frame per failed check of a block."""
    frames = []
    for name, (lhs, rhs, applies, two_sided) in checks.items():
        lhs, rhs = np.broadcast_to(lhs, applies.shape), np.broadcast_to(rhs, applies.shape)
        where = np.nonzero(_violations(lhs, rhs, applies, rtol, two_sided))
        if not len(where[0]):
            continue
        frames.append(
            pd.DataFrame(
                {
                    "unit": block["unit"].values[where[0]],
                    "n": block["n"].values[where[1]],
                    "row": block["row"].values[where[2]],
                    "inequality": name,
                    "grid": grid_name,
                    "at": grid_values[where] if grid_values is not None else np.nan,
                    "lhs": lhs[where],
                    "rhs": rhs[where],
                }
            )
        )
    return frames


def _block_violations(block, rtol):
    """Violations of every check in a block of units (arrays ``(unit, n, row[, grid])``)."""
    frames = []
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for grid in ("beta", "rho"):
            beta, checks = _response_checks(block, grid)
            suffix = "" if grid == "beta" else "_rel"
            checks = {name + suffix: value for name, value in checks.items()}
            frames += _frames(block, checks, "beta", beta, rtol)
        for name, (lhs, rhs, applies, two_sided, t) in _row_checks(block).items():
            grid_values = None if t is None else np.broadcast_to(t, applies.shape)
            frames += _frames(block, {name: (lhs, rhs, applies, two_sided)}, "" if t is None else "t",
                              grid_values, rtol)
    return frames


def theorem_violations(stats, rtol: float = 1e-9, block_elements: int = BLOCK_ELEMENTS) -> pd.DataFrame:
    """Every row and grid point of a statistics store (a family's or a model's) where a per-row
    theorem or identity fails.

    Inequalities (``n = n_keys``, ``rho = beta / Lambda``), on the absolute grid ``beta`` and,
    with suffix ``_rel``, on the relative grid ``rho`` (column ``at`` holds the absolute beta):

    * ``envelope_lower`` ``S <= F``; ``envelope_upper`` ``F <= S + log(1 + log n)`` (every row);
    * ``partition_bound`` ``Z = exp(F) <= beta / (beta - Lambda)`` for ``beta > Lambda``;
    * ``top_two_bound`` ``Dtop <= rho alpha log n n^(-alpha (1 - rho))`` and ``top_two_chain``
      ``rho alpha log n n^(-alpha (1 - rho)) <= rho / (e (1 - rho))`` for ``beta < Lambda``;
    * ``envelope_vanishes`` ``S(beta) <= 0`` for ``beta >= Lambda`` (no ``t`` with
      ``log N(t) > Lambda t``) and ``envelope_contact`` ``C - beta D_Lambda <= S(beta)``.

    Per row (column ``grid`` empty, or ``t`` for ``N(t)``):

    * ``contact_identity`` ``C = Lambda D_Lambda``; ``contact_exponent_identity``
      ``C = alpha log n``; ``resolved_at_zero`` ``Lambda^(0) = Lambda`` (if ``r = 0`` is stored);
    * ``count_bound`` ``log N(t) <= Lambda t`` on the ``t`` grid;
    * ``tied_iff_infinite`` ``Lambda = inf`` exactly when ``ties >= 2``; ``ties_are_count_at_zero``
      ``ties = N(0)`` (if ``t = 0`` is stored).

    Rows with ties (``Lambda = inf``) skip the ``Lambda`` inequalities; NaN entries (empty rows,
    undefined relative responses) are skipped, not counted.  ``rtol`` absorbs float64 rounding
    (see :func:`_violations`).  Units are loaded in blocks of at most ``block_elements`` elements
    per work array.  Returns one row per violation, columns :data:`VIOLATION_COLUMNS`.
    """
    missing = [name for name in CHECKED_VARIABLES if name not in stats]
    if missing:
        raise ValueError(f"statistics store {stats.attrs.get('source', '')!r} lacks {missing}; "
                         f"the theorem checks need {list(CHECKED_VARIABLES)}")
    source = stats.attrs.get("source", "")
    per_unit = stats.sizes["n"] * stats.sizes["row"] * max(stats.sizes[d] for d in ("beta", "rho", "t"))
    step = max(1, block_elements // per_unit)
    frames = []
    for start in range(0, stats.sizes["unit"], step):
        block = stats[list(CHECKED_VARIABLES)].isel(unit=slice(start, start + step))
        block = block.transpose("unit", "n", "row", ...).load()
        frames += _block_violations(block, rtol)
    if not frames:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in VIOLATION_COLUMNS})
    found = pd.concat(frames, ignore_index=True).assign(source=source)[list(VIOLATION_COLUMNS)]
    # one order whatever the blocks: by unit, n, row, check and grid point
    return found.sort_values(["unit", "n", "row", "inequality", "at"], kind="stable", ignore_index=True)


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
        return _failure(source, unit, check, f"{note}: only {int(usable.sum())} usable length(s), need 2")
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


def _failure(source, unit, check, note, n=np.nan):
    """A comparison that could not be made: it fails, with a message saying why."""
    return {"source": source, "unit": unit, "check": check, "n": n, "measured": np.nan, "predicted": np.nan,
            "ratio": np.nan, "lower": np.nan, "upper": np.nan, "passed": False, "note": note}


def _measured_exponent(fit, unit, column):
    """The caller's measured exponent for ``unit`` (NaN if the fits table lacks it), or None when
    the caller gives none: ``fit`` is a number (``xi`` of every unit) or a fits table
    (:func:`critscale.fitting.fit_source`: columns ``unit``, ``xi``, ``power_exponent``)."""
    if fit is None:
        return None
    if isinstance(fit, pd.DataFrame):
        match = fit[fit["unit"].astype(str) == str(unit)]
        if match.empty or column not in match:
            return math.nan
        return float(match[column].iloc[0])
    return float(fit) if column == "xi" else None


def compare_with_theory(stats, fit: float | pd.DataFrame | None = None) -> pd.DataFrame:
    """Measured ``Lambda_n`` of a synthetic family against its finite-``n`` prediction.

    Columns :data:`COMPARISON_COLUMNS`; ``check`` is one of

    * ``median`` (random i.i.d. rows, per ``n``): the median over rows must lie in the interval of
      predicted quantiles that holds the median of that many rows with probability
      ``1 - MEDIAN_CHECK_ALPHA`` (:func:`critscale.families.predictions.median_interval_levels`, which also
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

    Every family yields its complete set: a check that cannot be made (no prediction in the
    store, fewer than 2 usable lengths for the exponent, a unit missing from ``fit``) is a failed
    record whose note says why.  Stores that are not synthetic families (``kind`` other than
    ``family``) give an empty frame.
    """
    empty = pd.DataFrame({name: pd.Series(dtype=object) for name in COMPARISON_COLUMNS})
    if stats.attrs.get("kind") != "family":
        return empty
    source = stats.attrs.get("source", "")
    if "predicted_accumulation_scale" not in stats:
        record = _failure(source, "", "prediction", "store has no predicted_accumulation_scale")
        return _comparison_frame([record], stats.attrs.get("family", ""))
    prediction = _StoredPrediction.of(stats)
    records = []
    for unit in stats["unit"].values:
        per_n, medians, lowers, uppers = _per_n_checks(stats, source, unit, prediction)
        records += per_n
        if not prediction.family.ties_at_maximum:  # Lambda is infinite at every n: no exponent to fit
            records += _exponent_records(source, unit, prediction, medians, lowers, uppers, fit)
    return _comparison_frame(records, prediction.family.name)


@dataclass(frozen=True)
class _StoredPrediction:
    """What a family's store predicts: per ``n`` the quantiles of per-row ``Lambda_n`` at
    ``levels`` and their median, for the family and sampling its attributes name."""

    family: ScoreFamily
    exact: bool
    draws: int
    n: np.ndarray
    levels: np.ndarray
    quantiles: np.ndarray  # (n, level)
    median: np.ndarray  # (n,)

    @classmethod
    def of(cls, stats) -> _StoredPrediction:
        family = make_family(stats.attrs["family"], json.loads(stats.attrs.get("params", "{}")))
        prediction = stats["predicted_accumulation_scale"].transpose("n", ...).load()
        levels = prediction[prediction.dims[1]].values
        return cls(
            family=family,
            exact=family.predicted_exactly(stats.attrs.get("sampling", "random")),
            draws=int(stats.attrs.get("prediction_draws", 2000)),
            n=stats["n"].values.astype(np.float64),
            levels=levels,
            quantiles=prediction.values,
            median=np.array([_interval(p, levels, 0.5, 0.5)[0] for p in prediction.values]),
        )


def _per_n_checks(stats, source, unit, prediction: _StoredPrediction):
    """One record per ``n`` of ``unit`` (``every_row_tied``, ``every_row_exact`` or ``median``),
    and per ``n`` the measured median with the interval the record allows."""
    unit_stats = stats[["accumulation_scale", "ties"]].sel(unit=unit).transpose("n", "row").load()
    lam_all = unit_stats["accumulation_scale"].values
    ties_all = unit_stats["ties"].values
    records = []
    for i, n in enumerate(prediction.n):
        valid = ~np.isnan(lam_all[i])
        lam, rows = lam_all[i][valid], int(valid.sum())
        median = float(np.median(lam)) if rows else np.nan
        predicted = prediction.median[i]
        base = {"source": source, "unit": unit, "n": n, "measured": median, "predicted": predicted}
        with np.errstate(invalid="ignore", divide="ignore"):
            base["ratio"] = median / predicted
        if prediction.family.ties_at_maximum:
            check = _tied_check(lam, ties_all[i][valid], rows, predicted)
        elif prediction.exact:
            check = _exact_check(lam, rows, predicted)
        else:
            check = _median_check(median, rows, prediction.quantiles[i], prediction.levels, prediction.draws)
        records.append(base | check)
    medians, lowers, uppers = (np.asarray([record[key] for record in records]) for key in ("measured", "lower", "upper"))
    return records, medians, lowers, uppers


def _tied_check(lam, ties, rows: int, predicted: float) -> dict:
    tied = int(np.sum((ties >= 2) & np.isposinf(lam)))
    passed = rows > 0 and tied == rows and np.isposinf(predicted)
    return {"check": "every_row_tied", "lower": np.inf, "upper": np.inf, "passed": passed,
            "note": f"{tied} of {rows} rows tied"}


def _exact_check(lam, rows: int, target: float) -> dict:
    with np.errstate(invalid="ignore"):
        deviation = np.abs(lam - target) / max(abs(target), 1e-300)
    worst = float(np.max(deviation)) if rows else np.nan
    passed = bool(rows > 0 and np.all((lam == target) | (deviation <= EXACT_RTOL)))
    return {"check": "every_row_exact", "lower": target * (1 - EXACT_RTOL), "upper": target * (1 + EXACT_RTOL),
            "passed": passed, "note": f"largest relative deviation {worst:.3g}"}


def _median_check(median: float, rows: int, quantiles, levels, draws: int) -> dict:
    p_lo, p_hi = median_interval_levels(max(rows, 1), draws)
    lower, upper = _interval(quantiles, levels, p_lo, p_hi)
    passed = bool(rows > 0 and lower <= median <= upper)
    return {"check": "median", "lower": lower, "upper": upper, "passed": passed,
            "note": f"{rows} rows; median interval at levels {p_lo:.4f}-{p_hi:.4f}"}


def _exponent_records(source, unit, prediction: _StoredPrediction, medians, lowers, uppers, fit) -> list[dict]:
    """The growth exponent of ``unit`` against the prediction's (measured by the caller's
    ``fit`` where given), then its asymptotic value for information."""
    growth = prediction.family.growth
    check = _exponent_check(source, unit, growth.exponent, growth.axis(prediction.n), medians, prediction.median,
                            lowers, uppers, f"slope of log median on {growth.axis_name}")
    if np.isnan(check["predicted"]):
        return [check]
    given = _measured_exponent(fit, unit, check["check"])
    if given is not None:
        check["measured"], check["note"] = given, f"measured {check['check']} given by the caller (fits)"
        check["ratio"] = given / check["predicted"] if check["predicted"] else np.nan
        check["passed"] = bool(check["lower"] <= given <= check["upper"])
        if np.isnan(given):
            check["note"] = f"fits table has no finite {check['check']} for unit {unit!r}"
    asymptote = prediction.family.asymptotic_exponent
    return [check, {
        "source": source, "unit": unit, "check": f"asymptotic_{growth.exponent}", "n": np.nan,
        "measured": check["measured"], "predicted": asymptote,
        "ratio": check["measured"] / asymptote if asymptote else np.nan,
        "lower": np.nan, "upper": np.nan, "passed": None,
        "note": "information only: asymptotes are approached at a log-log rate",
    }]


def _comparison_frame(records, family_name):
    frame = pd.DataFrame.from_records(records).assign(family=family_name)[list(COMPARISON_COLUMNS)]
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
    for record in failed.head(show).itertuples():
        where = "" if pd.isna(record.n) else f" at n={int(record.n)}"
        lines.append(
            f"family {record.family!r} (source {record.source!r}, unit {record.unit!r}): check {record.check!r}"
            f"{where} failed: measured {record.measured:.6g}, allowed [{record.lower:.6g}, {record.upper:.6g}]"
            f" ({record.note})"
        )
    for record in violations.head(show).itertuples():
        at = f" at {record.grid}={record.at:.6g}" if record.grid else ""
        lines.append(
            f"source {record.source!r}, unit {record.unit!r}, n={int(record.n)}, row {int(record.row)}: "
            f"check {record.inequality!r}{at} failed: {record.lhs:.6g} vs {record.rhs:.6g}"
        )
    raise TheoryCheckError("\n".join(lines))
