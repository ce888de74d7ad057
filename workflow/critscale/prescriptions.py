"""Published ``beta_n`` prescriptions confronted with measured accumulation scales (issue 4).

Each rule gives the factor that multiplies the logits at context length ``n``
(``docs/theory.md``, "Published prescriptions").  A head stays at a constant distance from
criticality when ``beta_rule(n) / Lambda_n`` is constant along the ladder, so a rule is scored per
head by its *drift*: the standard deviation across the ladder of ``log(beta_rule(n) / median
Lambda_n)``.  The drift does not depend on a rule's overall scale, only on its shape in ``n``.

Conventions chosen where the theory is silent (also in the README):

* The ladder's ``n`` is the number of visible keys; the query of such a row sits at position
  ``n - 1``, so Llama 4's rule, written for a position ``pos``, is evaluated at ``pos = n - 1``.
* The drift is the population standard deviation (``ddof = 0``) over the lengths where the median
  ``Lambda`` is finite and positive; NaN if any length is not (a tied or degenerate head).
* SSMax's ``s`` is fitted per head by least squares of ``log(s log n / Lambda_n)`` to zero, i.e.
  ``s`` = geometric mean of ``Lambda_n / log n``; it moves the mean log ratio, not the drift.
* Operating point: the model runs at ``beta = 1`` on its captured logits, i.e. at
  ``rho = 1 / median Lambda_n``.  ``critical`` is the band ``OPERATING_BAND`` around 1 (inclusive),
  ``subcritical`` below it, ``supercritical`` above it, ``tied`` where the median ``Lambda`` is
  infinite (most rows tied: softmax can neither separate nor collapse them).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from critscale.fitting import median_aggregates, unit_labels

#: Band of ``rho = beta / Lambda`` called critical in :func:`operating_points`.
OPERATING_BAND = (0.5, 2.0)
#: Rules scored by :func:`rule_drift`, in report order.
RULES = ("ssmax", "qwen_logn", "su_log512", "llama4", "yarn", "random_energy")


def ssmax(n, s=1.0):
    """SSMax (Nakanishi 2025): ``s log n``."""
    return s * np.log(np.asarray(n, dtype=np.float64))


def qwen_logn(n, training_length):
    """Qwen logn attention: ``log_L(n)`` for ``n > L``, else 1."""
    n = np.asarray(n, dtype=np.float64)
    return np.where(n > training_length, np.log(n) / np.log(training_length), 1.0)


def su_log512(n, base=512):
    """Su's entropy-invariant attention: ``log_512(n)``."""
    return np.log(np.asarray(n, dtype=np.float64)) / np.log(base)


def llama4(n, floor_scale=8192, attn_scale=0.1):
    """Llama 4 temperature tuning at the last query of ``n`` keys (``pos = n - 1``):
    ``log(floor((pos + 1) / floor_scale) + 1) * attn_scale + 1``."""
    position = np.asarray(n, dtype=np.float64) - 1
    return np.log(np.floor((position + 1) / floor_scale) + 1) * attn_scale + 1


def yarn(n, training_length):
    """YaRN: ``(0.1 ln s + 1)^2`` with ``s = n / L`` for ``n > L``, else 1 (the factor
    ``0.1 ln s + 1`` is applied to both queries and keys)."""
    n = np.asarray(n, dtype=np.float64)
    extension = np.maximum(n / training_length, 1.0)
    return (0.1 * np.log(extension) + 1) ** 2


def random_energy(n):
    """Random-energy model transition (Giorlandino & Goldt): ``sqrt(2 log n)``."""
    return np.sqrt(2 * np.log(np.asarray(n, dtype=np.float64)))


def _medians(stats_or_medians: xr.Dataset) -> xr.Dataset:
    """:func:`critscale.fitting.median_aggregates` of a statistics store, or the aggregates as given."""
    if "median_lambda" in stats_or_medians:
        return stats_or_medians
    return median_aggregates(stats_or_medians)


def _unit_columns(medians: xr.Dataset) -> pd.DataFrame:
    """``source, unit, layer, head, layer_type, window`` per unit."""
    labels = unit_labels(medians)
    labels.insert(0, "source", medians.attrs.get("source", ""))
    return labels


def rule_drift(
    stats_or_medians: xr.Dataset,
    training_length: int,
    su_base: float = 512,
    llama_floor_scale: int = 8192,
    llama_attn_scale: float = 0.1,
) -> pd.DataFrame:
    """Drift of every rule in :data:`RULES` for every unit: one row per ``(unit, rule)``.

    Accepts a statistics store or its :func:`~critscale.fitting.median_aggregates`.  Columns:
    ``source, unit, layer, head, rule, drift`` (std of ``log(beta_rule / median Lambda)`` over the
    ladder), ``mean_log_ratio`` (its mean: where the rule puts the head, 0 = critical on average),
    ``fitted_s`` (SSMax's per-head ``s``; NaN for other rules), ``n_lengths``.
    """
    medians = _medians(stats_or_medians)
    ladder = medians["n"].values.astype(np.float64)
    median_lambda = medians["median_lambda"].transpose("unit", "n").values
    usable = np.all(np.isfinite(median_lambda) & (median_lambda > 0), axis=-1)
    log_lambda = np.log(np.where(usable[:, None], median_lambda, np.nan))
    log_s = np.mean(log_lambda - np.log(np.log(ladder)), axis=-1)
    rule_values = {
        "qwen_logn": qwen_logn(ladder, training_length),
        "su_log512": su_log512(ladder, su_base),
        "llama4": llama4(ladder, llama_floor_scale, llama_attn_scale),
        "yarn": yarn(ladder, training_length),
        "random_energy": random_energy(ladder),
    }
    labels = _unit_columns(medians)
    tables = []
    for rule in RULES:
        if rule == "ssmax":
            log_beta = log_s[:, None] + np.log(np.log(ladder))
        else:
            log_beta = np.broadcast_to(np.log(rule_values[rule]), log_lambda.shape)
        log_ratio = log_beta - log_lambda
        table = labels.copy()
        table["rule"] = rule
        table["drift"] = np.std(log_ratio, axis=-1)
        table["mean_log_ratio"] = np.mean(log_ratio, axis=-1)
        table["fitted_s"] = np.exp(log_s) if rule == "ssmax" else np.nan
        table["n_lengths"] = len(ladder)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def recommendations(
    fits: pd.DataFrame,
    training_length: int,
    extension_factors=(2, 4, 8),
) -> pd.DataFrame:
    """Per unit and extension factor ``s``: the logit factor ``beta(sL) / beta(L)`` that keeps the
    unit at the distance from criticality it had at the training length ``L``, from the fitted
    free law ``Lambda_n = c (log n)^xi``: ``(log(sL) / log L)^xi`` (with its interval from the
    ``xi`` interval), next to YaRN's ``(0.1 ln s + 1)^2``, SSMax's (and Qwen's)
    ``log(sL) / log L`` and the fitted power law's ``s^p``.

    ``fits`` is :func:`critscale.fitting.fit_source` output.  Columns: ``source, unit, layer,
    head, fit_status, xi, xi_low, xi_high, free_law_coefficient, power_exponent, law_winner,
    training_length, extension_factor, fitted_factor, fitted_factor_low, fitted_factor_high,
    power_law_factor, yarn_factor, ssmax_factor``.  Unfitted units have NaN factors.
    """
    keep = [
        "source", "unit", "layer", "head", "fit_status", "xi", "xi_low", "xi_high",
        "free_law_coefficient", "power_exponent", "law_winner",
    ]
    tables = []
    for factor in extension_factors:
        log_ratio = np.log(np.log(factor * training_length) / np.log(training_length))
        table = fits[keep].copy()
        table["training_length"] = training_length
        table["extension_factor"] = factor
        # log(sL)/log(L) > 1, so the factor is increasing in xi and the interval maps through.
        table["fitted_factor"] = np.exp(fits["xi"].to_numpy() * log_ratio)
        table["fitted_factor_low"] = np.exp(fits["xi_low"].to_numpy() * log_ratio)
        table["fitted_factor_high"] = np.exp(fits["xi_high"].to_numpy() * log_ratio)
        table["power_law_factor"] = float(factor) ** fits["power_exponent"].to_numpy()
        table["yarn_factor"] = float(yarn(factor * training_length, training_length))
        table["ssmax_factor"] = float(np.exp(log_ratio))
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def operating_points(stats_or_medians: xr.Dataset, band: tuple[float, float] = OPERATING_BAND) -> pd.DataFrame:
    """Where the model's own ``beta = 1`` sits relative to criticality, per unit and ``n``.

    Columns: ``source, unit, layer, head, layer_type, window, n, median_lambda, rho_at_beta1`` (``1 / median
    Lambda``), ``regime`` (``subcritical`` below ``band``, ``critical`` inside it,
    ``supercritical`` above it, ``tied`` for an infinite median; missing for a NaN median),
    ``tied_fraction``.
    """
    medians = _medians(stats_or_medians)
    median_lambda = medians["median_lambda"].transpose("unit", "n").values
    with np.errstate(divide="ignore"):
        rho = 1.0 / median_lambda
    low, high = band
    regime = np.select(
        [np.isposinf(median_lambda), rho < low, rho > high, np.isfinite(rho)],
        ["tied", "subcritical", "supercritical", "critical"],
        default=None,
    )
    labels = _unit_columns(medians)
    units, lengths = median_lambda.shape
    table = labels.loc[labels.index.repeat(lengths)].reset_index(drop=True)
    table["n"] = np.tile(medians["n"].values, units)
    table["median_lambda"] = median_lambda.ravel()
    table["rho_at_beta1"] = rho.ravel()
    table["regime"] = regime.ravel()
    table["tied_fraction"] = medians["tied_fraction"].transpose("unit", "n").values.ravel()
    return table
