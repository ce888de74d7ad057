"""Plain, obviously correct per-row reference for :mod:`critscale.gapstats`.

One row at a time: the definitions of ``docs/theory.md`` written out literally (``N(t)`` by
counting, the sup over every gap, a direct softmax at every beta).  Tests compare the fast path
against it and the benchmark measures the fast path against it.
"""

from __future__ import annotations

import numpy as np

from .gapstats import RESPONSE_NAMES, Grids


def _softmax_response(valid: np.ndarray, gaps: np.ndarray, counts: np.ndarray, beta: float) -> list[float]:
    """Direct softmax of one row at inverse temperature ``beta``."""
    if not np.isfinite(beta):
        return [np.nan] * len(RESPONSE_NAMES)
    weights = np.exp(beta * (valid - valid.max()))
    z = weights.sum()
    weights /= z
    nonzero = weights[weights > 0]
    entropy = -np.sum(nonzero * np.log(nonzero))
    first = weights.max()
    second = np.partition(weights, -2)[-2] if len(weights) > 1 else 0.0
    envelope = np.max(np.log(counts) - beta * gaps)
    return [np.log(z), entropy, first - second, first - weights.min(), envelope]


def reference_row(row: np.ndarray, grids: Grids) -> dict[str, object]:
    """All quantities of one row, computed straight from the definitions."""
    row = np.asarray(row, dtype=np.float64)
    if np.isposinf(row).any():
        raise ValueError("scores contain +inf")
    valid = row[np.isfinite(row)]
    n = len(valid)
    nan_response = [[np.nan] * len(RESPONSE_NAMES)] * len(grids.beta)
    if n == 0:
        return {
            "n_keys": 0, "ties": 0, "accumulation_scale": np.nan, "contact_gap": np.nan,
            "contact_exponent": np.nan, "contact_entropy": np.nan,
            "gap_count": np.zeros(len(grids.t), dtype=int),
            "resolved_scale": np.full(len(grids.resolutions), np.nan),
            "response": np.array(nan_response), "response_rel": np.full((len(grids.rho), len(RESPONSE_NAMES)), np.nan),
        }
    gaps = np.sort(valid.max() - valid)
    counts = np.searchsorted(gaps, gaps, side="right")  # N(D_(k)) = #{j : D_j <= D_(k)}
    ties = int(np.sum(gaps == 0))
    positive = gaps > 0
    if ties >= 2:
        scale, contact_gap, contact_count = np.inf, 0.0, ties
    elif n == 1:
        scale, contact_gap, contact_count = 0.0, np.nan, 1
    else:
        ratios = np.log(counts[positive]) / gaps[positive]
        scale = ratios.max()
        attained = gaps[positive][ratios == scale]
        contact_gap = attained.max()
        contact_count = int(np.sum(gaps <= contact_gap))
    contact_entropy = np.log(contact_count)
    exponent = contact_entropy / np.log(n) if n > 1 else np.nan
    resolved = []
    for r in grids.resolutions:
        if np.log(ties) > r:
            resolved.append(np.inf)
            continue
        keep = positive & (np.log(counts) > r)
        resolved.append(np.max((np.log(counts[keep]) - r) / gaps[keep]) if keep.any() else 0.0)
    response = [_softmax_response(valid, gaps, counts, b) for b in grids.beta]
    with np.errstate(invalid="ignore"):  # rho * inf at rho = 0 for tied rows: undefined, NaN
        relative_betas = [rho * scale for rho in grids.rho]
    response_rel = [_softmax_response(valid, gaps, counts, b) for b in relative_betas]
    return {
        "n_keys": n,
        "ties": ties,
        "accumulation_scale": scale,
        "contact_gap": contact_gap,
        "contact_exponent": exponent,
        "contact_entropy": contact_entropy,
        "gap_count": np.array([np.sum(gaps <= t) for t in grids.t]),
        "resolved_scale": np.array(resolved),
        "response": np.array(response),
        "response_rel": np.array(response_rel),
    }
