"""Does ``xi`` depend on the genre?  Per head, paired across the corpora one model reads.

A *group* is one model (and sink variant, ``exclude_first_keys``) of the ``studies`` that reads two
or more corpora; its *pairs* are every two of its corpora ``(A, B)`` in config order.  Heads are
paired by ``(layer, head)``.

* **Per head.** ``shift = xi_B - xi_A`` (the point ``xi`` of the two fit tables).  The corpora's
  windows are independent samples, so the two resampling distributions are independent and the
  shift's standard error is ``sqrt(se_A^2 + se_B^2)``, each ``se`` the fit's own resampling
  standard error (``xi_resampling_se``: the fit's replicates, recomputed here from the statistics
  store with the fit's seed and checked against it).  Test of ``H0: xi_A = xi_B``: Welch's ``t`` on
  Welch-Satterthwaite degrees of freedom from ``G_A - 1`` and ``G_B - 1`` (``G`` = windows), the
  two-corpus form of the fit's own Student-``t`` test (:mod:`critscale.intervals`); the interval is
  ``shift +- t_df((1 + level) / 2) se``.  This Welch form is used whatever ``fitting.method``.
  A head is compared when both fits have an interval (``fit_status = fitted``).
* **Family of the FDR control.** Every ``(head, pair)`` test of one group: with three corpora,
  3 x heads tests, decided together at ``fitting.fdr`` by ``fitting.fdr_method``
  (:func:`critscale.intervals.fdr_decisions`; Benjamini-Yekutieli by default, valid under any
  dependence: the heads of one corpus share its windows and the pairs share corpora).  A head
  *differs* in a pair when its test is a discovery of that family.  Groups are separate families
  (the fraction is a per-model claim).
* **Median shift.** Per pair (and layer type), the median over the compared heads of ``shift``.
  Heads share windows, so heads are not independent and are never resampled; the median is
  recomputed on each corpus's window replicates with the other corpus at its point values, and
  ``se^2 = v_A + v_B`` (each ``v`` the replicate variance times ``G / (G - 1)``, as for one
  head), with the Welch interval and p-value as above.  A replicate in which a head has no slope
  leaves that head out of that replicate's median.

Outputs: :func:`compare_study` gives a per-head table and a summary per group, pair and layer
type (Gemma 3's sliding and global layers apart, as in :func:`critscale.fitting.headline`, plus
their union).
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from critscale import intervals

#: Fit table columns carried into the per-head table, per corpus.
HEAD_LABELS = ("unit", "layer", "head", "layer_type")
PER_CORPUS = ("xi", "xi_low", "xi_high", "fit_status")
#: The se recomputed from the statistics store must equal the fit's to rounding.
SE_TOLERANCE = 1e-8


# -- the plan (parse time: cheap imports only) ------------------------------------------------


def groups(model_runs: dict) -> list[dict]:
    """Per model and ``exclude_first_keys`` of ``model_runs`` (:func:`critscale.config.model_sources`)
    that reads two or more corpora: ``{"model", "exclude_first_keys", "corpora", "sources"}``
    (corpora and their sources in config order)."""
    found: dict[tuple, dict] = {}
    for source, run in model_runs.items():
        key = (run["model"], int(run.get("exclude_first_keys", 0)))
        group = found.setdefault(key, {"model": key[0], "exclude_first_keys": key[1], "corpora": [], "sources": []})
        if run["corpus"] not in group["corpora"]:
            group["corpora"].append(run["corpus"])
            group["sources"].append(source)
    return [group for group in found.values() if len(group["corpora"]) >= 2]


def pairs(group: dict) -> list[tuple[str, str]]:
    """Every two corpora ``(A, B)`` of a group, in config order."""
    return list(itertools.combinations(group["corpora"], 2))


def sources(plan: list[dict]) -> list[str]:
    """The model sources the comparisons read, each once."""
    return list(dict.fromkeys(source for group in plan for source in group["sources"]))


# -- one corpus: the fit and its replicates ---------------------------------------------------


@dataclass
class CorpusFit:
    """One source's fitted heads: ``table`` (one row per unit: labels, ``xi``, its interval,
    ``se`` and ``fit_status``), ``replicates`` ``(B, unit)`` of ``xi`` in the table's row order
    (NaN for units without an interval) and ``windows`` (independent sequences ``G``)."""

    table: pd.DataFrame
    replicates: np.ndarray
    windows: int


def xi_replicates(stats, n_boot: int, seed: int) -> tuple[list[str], np.ndarray, int]:
    """``(units, replicates (B, unit), G)``: the slopes of ``xi`` on every resample of the store's
    windows, drawn as :func:`critscale.fitting.fit_source` draws them (same seed, same draws)."""
    from critscale import fitting  # statsmodels: seconds per import, so never at parse time
    from critscale.resampling import SortedRows, sequence_multiplicities

    values, ladder, sequence_codes = fitting._row_variables(stats)
    n_sequences = int(sequence_codes.max()) + 1
    medians = SortedRows(values[:1], sequence_codes).medians(sequence_multiplicities(n_sequences, n_boot, seed))
    log_log_n = np.log(np.log(ladder.astype(np.float64)))
    slopes = fitting._ols_slopes(log_log_n, fitting._positive_logs(medians[:, 0]))
    return [str(unit) for unit in stats["unit"].values], slopes, n_sequences


def corpus_fit(fits: pd.DataFrame, stats, n_boot: int, seed: int, level: float) -> CorpusFit:
    """The fit table of one source with its replicates; refuses replicates whose standard error
    is not the fit's (the fit was made with other settings, or from another store)."""
    units, replicates, windows = xi_replicates(stats, n_boot, seed)
    table = fits.assign(unit=fits["unit"].astype(str)).reset_index(drop=True)
    if "layer_type" not in table:
        table["layer_type"] = np.nan
    order = pd.Index(units).get_indexer(table["unit"])
    if (order < 0).any():
        missing = list(table["unit"][order < 0])[:5]
        raise ValueError(f"units of the fit table missing from the statistics store: {missing}")
    fitted = (table["fit_status"] == "fitted").to_numpy()
    replicates = np.where(fitted[None, :], replicates[:, order], np.nan)
    point = table["xi"].to_numpy(dtype=np.float64)
    se = intervals.resampling_interval(point, replicates, windows, level, "student_t")["se"]
    stored = table["xi_resampling_se"].to_numpy(dtype=np.float64)
    mismatch = fitted & ~np.isclose(se, stored, rtol=SE_TOLERANCE, atol=SE_TOLERANCE, equal_nan=True)
    if mismatch.any():
        source = table["source"].iloc[0] if "source" in table and len(table) else "?"
        raise ValueError(
            f"{source}: the resampling se of {int(mismatch.sum())} heads differs from the fit's "
            f"(e.g. {se[mismatch][0]} against {stored[mismatch][0]}): the fit was made with other "
            "settings (seed, bootstrap, level) or from another statistics store"
        )
    table = table[[*HEAD_LABELS, *PER_CORPUS]].assign(se=np.where(fitted, se, np.nan))
    return CorpusFit(table, replicates, windows)


# -- two corpora ------------------------------------------------------------------------------


def welch(estimate, var_a, var_b, df_a, df_b, level: float) -> dict[str, np.ndarray]:
    """Welch's ``t`` for an estimate whose variance is ``var_a + var_b`` from two independent
    samples with ``df_a`` and ``df_b`` degrees of freedom: ``se, df, low, high, p_value``
    (NaN p-value at zero or undefined variance: no variation is no evidence)."""
    estimate, var_a, var_b = (np.asarray(x, dtype=np.float64) for x in (estimate, var_a, var_b))
    variance = var_a + var_b
    se = np.sqrt(variance)
    with np.errstate(invalid="ignore", divide="ignore"):
        df = variance**2 / (var_a**2 / df_a + var_b**2 / df_b)
        quantile = scipy_stats.t.ppf((1 + level) / 2, df)
        p_value = 2 * scipy_stats.t.sf(np.abs(estimate) / se, df)
    usable = np.isfinite(se) & (se > 0) & np.isfinite(estimate)
    return {
        "se": se,
        "df": np.where(usable, df, np.nan),
        "low": np.where(usable, estimate - quantile * se, np.nan),
        "high": np.where(usable, estimate + quantile * se, np.nan),
        "p_value": np.where(usable, p_value, np.nan),
    }


def _inflation(windows: int) -> float:
    """``G / (G - 1)``: the bootstrap variance of a mean of ``G`` sequences is ``(G - 1) / G`` of the
    unbiased one (as in :func:`critscale.intervals.resampling_interval`)."""
    return windows / max(windows - 1, 1)


def compare_heads(a: CorpusFit, b: CorpusFit, level: float) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Per head of both tables (paired by unit, layer and head): both fits, ``shift = xi_B -
    xi_A`` with its Welch interval and p-value; with the rows' replicates of A and of B."""
    left = a.table.assign(row_a=np.arange(len(a.table)))
    right = b.table.drop(columns="layer_type").assign(row_b=np.arange(len(b.table)))
    heads = left.merge(right, on=["unit", "layer", "head"], suffixes=("_a", "_b"), validate="one_to_one")
    heads["shift"] = heads["xi_b"] - heads["xi_a"]
    test = welch(heads["shift"], heads["se_a"] ** 2, heads["se_b"] ** 2, a.windows - 1, b.windows - 1, level)
    heads["shift_se"], heads["shift_df"] = test["se"], test["df"]
    heads["shift_low"], heads["shift_high"], heads["p_value"] = test["low"], test["high"], test["p_value"]
    heads["windows_a"], heads["windows_b"] = a.windows, b.windows
    reps_a, reps_b = a.replicates[:, heads["row_a"]], b.replicates[:, heads["row_b"]]
    return heads.drop(columns=["row_a", "row_b"]), reps_a, reps_b


def _nanmedian_rows(values: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a replicate without any slope: NaN
        return np.nanmedian(values, axis=1)


def _replicate_variance(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(np.var(values, ddof=1)) if len(values) >= 2 else np.nan


def median_shift(xi_a, xi_b, reps_a, reps_b, windows_a: int, windows_b: int, level: float) -> dict[str, float]:
    """Median over heads of ``xi_B - xi_A`` with its Welch interval and p-value (see the module
    docstring): ``median_shift, median_shift_se, median_shift_df, median_shift_low,
    median_shift_high, median_shift_p``."""
    xi_a, xi_b = np.asarray(xi_a, dtype=np.float64), np.asarray(xi_b, dtype=np.float64)
    names = ("median_shift", "median_shift_se", "median_shift_df", "median_shift_low", "median_shift_high",
             "median_shift_p")
    if len(xi_a) == 0:
        return dict.fromkeys(names, np.nan)
    point = float(np.median(xi_b - xi_a))
    var_a = _inflation(windows_a) * _replicate_variance(_nanmedian_rows(xi_b[None, :] - reps_a))
    var_b = _inflation(windows_b) * _replicate_variance(_nanmedian_rows(reps_b - xi_a[None, :]))
    test = welch(point, var_a, var_b, windows_a - 1, windows_b - 1, level)
    values = (point, test["se"], test["df"], test["low"], test["high"], test["p_value"])
    return {name: float(value) for name, value in zip(names, values)}


# -- a group, the study ---------------------------------------------------------------------


def _layer_groups(heads: pd.DataFrame) -> list[tuple[str, pd.Series]]:
    """``(layers, mask)``: per layer type (``all`` without one), plus ``all`` over several."""
    layer_type = heads["layer_type"]
    layers = layer_type.astype(object).where(layer_type.notna(), "all")
    kinds = list(dict.fromkeys(layers))
    found = [(kind, layers == kind) for kind in kinds]
    if len(kinds) > 1:
        found.append(("all", pd.Series(True, index=heads.index)))
    return found


def _count(flags: pd.Series) -> int:
    return int(flags.astype("boolean").fillna(False).astype(bool).sum())


def _summary_row(heads: pd.DataFrame, reps_a, reps_b, level: float, fdr: float) -> dict:
    compared = heads["p_value"].notna().to_numpy()
    tested = heads[compared]
    differing = _count(tested["differs"])
    raw = int((tested["p_value"] < 1 - level).sum())
    windows_a, windows_b = int(heads["windows_a"].iloc[0]), int(heads["windows_b"].iloc[0])
    shift = median_shift(tested["xi_a"], tested["xi_b"], reps_a[:, compared], reps_b[:, compared],
                         windows_a, windows_b, level)
    return {
        "heads": len(heads),
        "heads_compared": len(tested),
        "windows_a": windows_a,
        "windows_b": windows_b,
        "median_xi_a": tested["xi_a"].median(),
        "median_xi_b": tested["xi_b"].median(),
        **shift,
        "differing_fdr": differing,
        "fraction_differing_fdr": differing / len(tested) if len(tested) else np.nan,
        # FDR = E[false / discoveries] <= fdr: about fdr x discoveries of them are false.
        "expected_false_fdr": fdr * differing,
        "higher_in_b_fdr": _count(tested["differs"] & (tested["shift"] > 0)),
        "lower_in_b_fdr": _count(tested["differs"] & (tested["shift"] < 0)),
        "differing_raw": raw,
        "fraction_differing_raw": raw / len(tested) if len(tested) else np.nan,
        # Uncontrolled: with no true shift, (1 - level) of the heads' intervals would still exclude 0.
        "expected_raw_if_none_differ": (1 - level) * len(tested),
    }


def compare_group(group: dict, fits_by_source: dict[str, CorpusFit], *, level: float, fdr: float,
                  fdr_method: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(heads, summary)`` of one group: every pair's per-head comparison, the FDR decisions
    over all of the group's tests (one family), and per pair and layer type the summary."""
    source_of = dict(zip(group["corpora"], group["sources"]))
    compared = []
    for corpus_a, corpus_b in pairs(group):
        a, b = fits_by_source[source_of[corpus_a]], fits_by_source[source_of[corpus_b]]
        heads, reps_a, reps_b = compare_heads(a, b, level)
        labels = {"model": group["model"], "exclude_first_keys": group["exclude_first_keys"], "corpus_a": corpus_a,
                  "corpus_b": corpus_b, "source_a": source_of[corpus_a], "source_b": source_of[corpus_b]}
        compared.append((labels, heads, reps_a, reps_b))
    family = pd.concat([heads for _, heads, _, _ in compared], ignore_index=True)
    differs, adjusted = intervals.fdr_decisions(family["p_value"].to_numpy(), fdr, fdr_method)
    tests = int(family["p_value"].notna().sum())
    start, head_tables, rows = 0, [], []
    for labels, heads, reps_a, reps_b in compared:
        stop = start + len(heads)
        heads = heads.assign(p_adjusted=adjusted[start:stop], differs=differs[start:stop])
        heads["excludes_zero"] = pd.array(np.where(heads["p_value"].notna(), heads["p_value"] < 1 - level, None),
                                          dtype="boolean")
        start = stop
        head_tables.append(heads.assign(**labels))
        for layers, mask in _layer_groups(heads):
            mask = mask.to_numpy()
            summary = _summary_row(heads[mask], reps_a[:, mask], reps_b[:, mask], level, fdr)
            rows.append({**labels, "layers": layers, **summary, "fdr": fdr, "fdr_method": fdr_method,
                         "family_tests": tests, "ci_level": level})
    heads = pd.concat(head_tables, ignore_index=True)
    first = ["model", "exclude_first_keys", "corpus_a", "corpus_b", "source_a", "source_b"]
    return heads[first + [c for c in heads.columns if c not in first]], pd.DataFrame(rows)


def settings(fitting_config: dict) -> dict:
    """``n_boot, level, fdr, fdr_method`` from the config's ``fitting`` section, the fit's defaults
    where it says nothing (so the replicates are the fit's)."""
    from critscale import fitting  # statsmodels: never at parse time

    chosen = fitting.settings_from_config(fitting_config)
    return {name: chosen[name] for name in ("n_boot", "level", "fdr", "fdr_method")}


def compare_study(plan: list[dict], fits: dict[str, pd.DataFrame], stats: dict, *, n_boot: int, seed: int,
                  level: float, fdr: float, fdr_method: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(heads, summary)`` of every group of ``plan`` (:func:`groups`), from each source's fit
    table and statistics store (``fits[source]``, ``stats[source]``)."""
    intervals.check_fdr(fdr, fdr_method)
    head_tables, summaries = [], []
    for group in plan:
        by_source = {source: corpus_fit(fits[source], stats[source], n_boot, seed, level)
                     for source in group["sources"]}
        heads, summary = compare_group(group, by_source, level=level, fdr=fdr, fdr_method=fdr_method)
        head_tables.append(heads)
        summaries.append(summary)
    if not plan:
        return pd.DataFrame(), pd.DataFrame()
    return pd.concat(head_tables, ignore_index=True), pd.concat(summaries, ignore_index=True)
