"""Statistics of the intervention: paired by window, with intervals, controls and Holm's
correction over the contrasts fixed in advance.

Per window ``w``, handling and arm, ``y_w`` is the mean NLL (nats per token) of the targets whose
query sees more than ``L`` keys.  A contrast ``a - b`` is the window-paired difference
``d_w = y_w(a) - y_w(b)``: its mean, a studentized (bootstrap-t) interval over windows (``level``,
``bootstrap`` resamples; the percentile bootstrap covered 0.88 instead of 0.95 at 8 windows,
tests/test_intervention.py measures both coverage and the test's size) and a two-sided paired t-test p-value (with 8 windows an exact sign-flip
test cannot go below ``2 / 256``, too coarse for a corrected family; the per-window means average
thousands of tokens).  Holm's step-down correction runs over every contrast of the table.

Contrasts, fixed before the run: every arm against ``none``; and ``per_head`` against the best
published rule of the same handling (lowest mean ``y``: the choice favours the published rule),
against ``dose_matched`` and against ``shuffled``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests

from .intervention import PUBLISHED


def beyond_length(buckets: pd.DataFrame, training_length: int) -> pd.DataFrame:
    """``window, handling, arm, nll``: mean NLL of the targets beyond ``L`` per window and arm."""
    beyond = buckets[buckets["n_low"] >= training_length]
    grouped = beyond.groupby(["window", "handling", "arm"])[["nll_sum", "tokens"]].sum()
    return (grouped["nll_sum"] / grouped["tokens"]).rename("nll").reset_index()


def _paired(differences: np.ndarray, level: float, bootstrap: int, rng) -> dict:
    """Mean, studentized-bootstrap interval and paired t-test p of window differences."""
    n = len(differences)
    mean, se = differences.mean(), differences.std(ddof=1) / np.sqrt(n) if n > 1 else 0.0
    samples = rng.choice(differences, size=(bootstrap, n), replace=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_star = (samples.mean(axis=1) - mean) / (samples.std(axis=1, ddof=1) / np.sqrt(n))
    t_star = t_star[np.isfinite(t_star)]
    tail = (1 - level) / 2
    low, high = (mean - np.quantile(t_star, 1 - tail) * se, mean - np.quantile(t_star, tail) * se) \
        if len(t_star) and se > 0 else (mean, mean)
    p = scipy_stats.ttest_1samp(differences, 0.0).pvalue if np.ptp(differences) > 0 else float(differences[0] == 0)
    return {"mean_difference": float(mean), "low": float(low), "high": float(high), "p": float(p), "windows": n}


def contrast_plan(arms_by_handling: dict, means: pd.DataFrame) -> list[tuple[str, str, str]]:
    """``(handling, arm, baseline)`` of every contrast (see the module docstring)."""
    plan = []
    for handling, names in arms_by_handling.items():
        plan += [(handling, arm, "none") for arm in names if arm != "none" and "none" in names]
        if "per_head" not in names:
            continue
        published = [arm for arm in names if arm in PUBLISHED]
        if published:
            here = means[means["handling"] == handling].groupby("arm")["nll"].mean()
            best = min(published, key=lambda arm: here[arm])
            plan.append((handling, "per_head", best))
        plan += [(handling, "per_head", control) for control in ("dose_matched", "shuffled") if control in names]
    return plan


def contrasts(per_window: pd.DataFrame, arms_by_handling: dict, *, level=0.95, bootstrap=10000, seed=0):
    """The intervention table: ``handling, arm, baseline, contrast, mean_difference, low, high,
    p, p_holm, windows`` (``mean_difference`` in nats per token; negative = the arm is better)."""
    rng = np.random.default_rng(seed)
    wide = per_window.pivot_table(index=["handling", "window"], columns="arm", values="nll")
    rows = []
    for handling, arm, baseline in contrast_plan(arms_by_handling, per_window):
        table = wide.loc[handling]
        differences = (table[arm] - table[baseline]).dropna().to_numpy()
        rows.append({"handling": handling, "arm": arm, "baseline": baseline, "contrast": f"{arm} - {baseline}",
                     **_paired(differences, level, bootstrap, rng)})
    frame = pd.DataFrame(rows)
    frame["p_holm"] = multipletests(frame["p"], method="holm")[1] if len(frame) else []
    return frame


def by_bucket(buckets: pd.DataFrame, *, level=0.95, bootstrap=2000, seed=0) -> pd.DataFrame:
    """Per handling, arm and bucket: the window-paired mean NLL difference to ``none`` with a
    bootstrap interval (the figure's curves)."""
    rng = np.random.default_rng(seed)
    buckets = buckets.assign(nll=buckets["nll_sum"] / buckets["tokens"])
    keys = ["handling", "bucket", "n_low", "n_high", "window"]
    wide = buckets.pivot_table(index=keys, columns="arm", values="nll").reset_index()
    rows = []
    for (handling, bucket, n_low, n_high), group in wide.groupby(keys[:4]):
        for arm in [c for c in group.columns if c not in keys and c != "none"]:
            differences = (group[arm] - group["none"]).dropna().to_numpy()
            if len(differences):
                rows.append({"handling": handling, "arm": arm, "bucket": bucket, "n_low": n_low, "n_high": n_high,
                             **_paired(differences, level, bootstrap, rng)})
    return pd.DataFrame(rows)
