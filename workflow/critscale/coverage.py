"""Coverage of the fit's intervals, measured by running the whole fit on synthetic sources whose
truth is known.

Sources (per-row ``Lambda`` simulated directly, no score rows, so the harness is cheap):

* ``gaussian``, ``weibull3``: i.i.d. rows of the family (a row is a sequence, as in the study).  Each
  row's ``Lambda_n`` is drawn from a pool of exact simulated rows
  (:func:`critscale.families.predictions.predict_accumulation_scale`, the top-``K`` simulation of
  ``docs/theory.md``), independently per row and ``n``.  The truth is the finite-``n`` exponent:
  the OLS slope of the log *population* median (the pool's median, the population the draws come
  from) on ``log log n`` over the ladder.
* ``log_exact``: ``Lambda = log n * exp(u_g + v_gn + e)`` with a per-sequence factor ``u_g``
  shared by all rows and lengths of sequence ``g``, a per-(sequence, ``n``) factor ``v_gn`` and a
  per-row ``e``, all centred normal, so the population median is exactly ``log n`` and ``xi = 1``.
  Several rows per sequence share the factors, like the queries of one model window.

One fit of :func:`critscale.fitting.fit_source` covers all replications of a source and sequence
count at once: the replications are the store's units (they share the resampling draws, each
with its own data).  The table's ``units`` column (its published name) is that sequence count.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from critscale.families.predictions import predict_accumulation_scale
from critscale.fitting import fit_source, settings_from_config
from critscale.intervals import wilson_interval

FAMILY_SOURCES = {"gaussian": ("gaussian", {"sigma": 1.0}), "weibull3": ("weibull", {"gamma": 3.0})}
CONSTRUCTED_SOURCE = "log_exact"
SOURCES = (*FAMILY_SOURCES, CONSTRUCTED_SOURCE)
#: Log-scale standard deviations of the constructed source: per sequence, per (sequence, n), per row.
CONSTRUCTED_NOISE = {"sequence": 0.3, "sequence_length": 0.15, "row": 0.5}
MC_CONFIDENCE = 0.95


def stats_from_rows(
    accumulation_scale,
    n_ladder,
    sequence=None,
    contact_exponent=None,
    contact_gap=None,
    ties=None,
    units=None,
    layer=None,
    head=None,
    source="synthetic",
    kind="family",
) -> xr.Dataset:
    """A statistics store from ``(unit, n, row)`` arrays; ``alpha`` defaults to 0.5 and
    ``D_Lambda`` to ``alpha log n / Lambda`` (the identity ``Lambda = alpha log n / D``)."""
    accumulation_scale = np.asarray(accumulation_scale, dtype=np.float64)
    n_units, n_lengths, n_rows = accumulation_scale.shape
    log_n = np.log(np.asarray(n_ladder, dtype=np.float64))[None, :, None]
    if contact_exponent is None:
        contact_exponent = np.full(accumulation_scale.shape, 0.5)
    if contact_gap is None:
        with np.errstate(divide="ignore"):
            contact_gap = contact_exponent * log_n / accumulation_scale
    if ties is None:
        ties = np.where(np.isposinf(accumulation_scale), 2, 1)
    coords = {
        "unit": [f"u{i}" for i in range(n_units)] if units is None else list(units),
        "n": np.asarray(n_ladder, dtype=np.int64),
        "row": np.arange(n_rows),
        "sequence": ("row", np.arange(n_rows) if sequence is None else np.asarray(sequence)),
        "query": ("row", np.zeros(n_rows, dtype=np.int64)),
    }
    if layer is not None:
        coords["layer"] = ("unit", np.asarray(layer))
        coords["head"] = ("unit", np.asarray(head))
    dims = ("unit", "n", "row")
    data = {
        "accumulation_scale": (dims, accumulation_scale),
        "contact_exponent": (dims, np.asarray(contact_exponent, dtype=np.float64)),
        "contact_gap": (dims, np.asarray(contact_gap, dtype=np.float64)),
        "ties": (dims, np.asarray(ties, dtype=np.int64)),
        "n_keys": (dims, np.broadcast_to(np.asarray(n_ladder)[None, :, None], accumulation_scale.shape)),
    }
    return xr.Dataset(data, coords=coords, attrs={"source": source, "kind": kind, "provenance": "{}"})


def _loglog_slope(ladder, values) -> float:
    x = np.log(np.log(np.asarray(ladder, dtype=np.float64)))
    centred = x - x.mean()
    return float(np.sum(np.log(values) * centred) / np.sum(centred**2))


def family_pool(family: str, params: dict, ladder, draws: int, seed: int) -> np.ndarray:
    """``(n, draws)`` exact simulated per-row ``Lambda_n`` of the family (sorted per ``n``):
    the ``draws`` mid-quantiles of ``draws`` simulated rows are those rows themselves."""
    levels = (np.arange(draws) + 0.5) / draws
    return np.stack([
        predict_accumulation_scale(family, params, "random", int(n), draws=draws, seed=seed, quantiles=levels)
        for n in ladder
    ])


def _family_replications(pool, replications, sequences, rng) -> np.ndarray:
    """``(replication, n, row)``: every row of every length drawn independently from the pool."""
    picks = rng.integers(0, pool.shape[1], size=(replications, sequences, pool.shape[0]))
    return np.transpose(np.take_along_axis(pool.T[None], picks, axis=1), (0, 2, 1))


def _constructed_replications(ladder, replications, sequences, rows_per_sequence, rng) -> np.ndarray:
    """``(replication, n, unit x row)`` of the ``log_exact`` source."""
    shape = (replications, len(ladder), sequences, rows_per_sequence)
    noise = (
        rng.normal(0, CONSTRUCTED_NOISE["sequence"], (replications, 1, sequences, 1))
        + rng.normal(0, CONSTRUCTED_NOISE["sequence_length"], (replications, len(ladder), sequences, 1))
        + rng.normal(0, CONSTRUCTED_NOISE["row"], shape)
    )
    log_n = np.log(np.asarray(ladder, dtype=np.float64))[None, :, None, None]
    return (log_n * np.exp(noise)).reshape(replications, len(ladder), sequences * rows_per_sequence)


def _coverage_row(source, sequences, truth, fits, level) -> dict:
    with_interval = fits[np.isfinite(fits["xi_low"]) & np.isfinite(fits["xi_high"])]
    covered = int(((with_interval["xi_low"] <= truth) & (truth <= with_interval["xi_high"])).sum())
    trials = len(with_interval)
    low, high = wilson_interval(covered, trials, MC_CONFIDENCE)
    return {
        "source": source, "units": sequences, "nominal_level": level,  # published name
        "coverage": covered / trials if trials else np.nan, "coverage_low": low, "coverage_high": high,
        "replications": trials, "replications_without_interval": len(fits) - trials, "truth": truth,
        "median_width": float((with_interval["xi_high"] - with_interval["xi_low"]).median()),
        "method": fits["interval_method"].iloc[0],
    }


def coverage_table(
    ladder,
    sequence_counts,
    replications: int,
    family_sequence_counts=(),
    rows_per_sequence: int = 8,
    pool_draws: int = 4001,
    seed: int = 0,
    sources=SOURCES,
    **fit_settings,
) -> pd.DataFrame:
    """Achieved coverage of the ``xi`` intervals per source and unit count (see the module
    docstring); ``family_sequence_counts`` are extra sequence counts for the family sources only.
    ``fit_settings`` go to :func:`critscale.fitting.fit_source` (its ``level`` is the
    nominal level).  Columns: ``source, units`` (the sequence count), ``nominal_level, coverage,
    coverage_low, coverage_high`` (Wilson interval at 95% of the Monte-Carlo error), ``replications`` (those
    with an interval), ``replications_without_interval, truth, median_width, method``."""
    unknown = set(sources) - set(SOURCES)
    if unknown:
        raise ValueError(f"coverage sources must be among {SOURCES}, got {sorted(unknown)}")
    counts = [*sequence_counts, *family_sequence_counts]
    if replications < 1 or rows_per_sequence < 1 or pool_draws < 1 or min(counts, default=0) < 1:
        raise ValueError("coverage replications, rows_per_sequence, pool_draws and sequence counts must be >= 1")
    level = fit_settings.get("level", 0.9)
    rows = []
    for source_index, source in enumerate(sources):
        if source in FAMILY_SOURCES:
            family, params = FAMILY_SOURCES[source]
            pool = family_pool(family, params, ladder, pool_draws, seed)
            truth = _loglog_slope(ladder, np.median(pool, axis=1))
        else:
            truth = 1.0
        for sequences in [*sequence_counts, *(family_sequence_counts if source in FAMILY_SOURCES else ())]:
            rng = np.random.default_rng(np.random.SeedSequence([seed, source_index, int(sequences)]))
            if source in FAMILY_SOURCES:
                values, per_sequence = _family_replications(pool, replications, sequences, rng), 1
            else:
                values = _constructed_replications(ladder, replications, sequences, rows_per_sequence, rng)
                per_sequence = rows_per_sequence
            sequence = np.repeat(np.arange(sequences), per_sequence)
            stats = stats_from_rows(values, ladder, sequence=sequence, source=source)
            fits = fit_source(stats, seed=int(rng.integers(2**31)), **fit_settings)
            rows.append(_coverage_row(source, sequences, truth, fits, level))
    return pd.DataFrame(rows)


def coverage_from_config(fitting_config: dict, seed: int) -> pd.DataFrame:
    """:func:`coverage_table` with the validated config's ``fitting`` section (its ``coverage``
    settings, defaults filled from the schema, and the fit settings of the study)."""
    harness = dict(fitting_config["coverage"])
    ladder, counts, replications = harness.pop("ladder"), harness.pop("sequence_counts"), harness.pop("replications")
    return coverage_table(ladder, counts, replications, seed=seed, **harness,
                          **settings_from_config(fitting_config))
