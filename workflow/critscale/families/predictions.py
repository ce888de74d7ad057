"""Finite-``n`` predictions of per-row ``Lambda_n`` from a family's law (``docs/theory.md``,
section 3), not from its asymptote: closed forms, the exact value of the quantile row, and exact
simulated draws for random i.i.d. rows; and the levels that bracket the median of many rows.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from critscale.families.base import ScoreFamily, rounded_to
from critscale.families.catalog import make_family
from critscale.families.spec import check_sampling

#: Two-sided false-alarm rate of one per-``n`` median check: small, because a study checks many
#: ``(source, n)`` pairs and a spurious failure should be rare.
MEDIAN_CHECK_ALPHA = 1e-3
#: Random-row predictions draw bin counts with ``numpy``'s multinomial, which needs ``n < 2**62``.
MAX_RANDOM_PREDICTION_N = 2**62
#: Bins of the random-row simulation: linear over the first _LINEAR_BINS expected points, then
#: geometric; a bin's bound exceeds its terms by about log(_BIN_RATIO) / D.
_LINEAR_BINS = 64
_BIN_RATIO = 1.02
_PREDICTION_TAG = 0x9E3779B97F4A7C15  # separates prediction streams from row streams


def _quantile_row_scale(fam: ScoreFamily, n, dtype, rtol: float = 1e-12) -> float:
    """Exact ``Lambda`` of the quantile row of length ``n`` with scores rounded to ``dtype``.

    ``Lambda = max_k log N_k / D_(k)`` over the row's ``m`` i.i.d. points (``N_k`` = rank among
    all keys).  Branch and bound over the index ``k``: on ``[a, b]``,
    ``log N_b / D_(a)`` bounds every term, so only intervals whose bound can beat the best value
    found are refined; small intervals are enumerated.  The result is an attained term, within
    ``rtol`` of the sup (exact wherever an interval is enumerated); it works for any ``n``
    (``2**200`` included) at a cost of a few thousand evaluations.
    """
    rnd = rounded_to(dtype)
    m = float(fam.draws_per_row(n))
    if n <= 1 or m < 1:
        return 0.0
    extra = 0.0 if fam.explicit_top is None else 1.0
    top = fam.explicit_top if fam.explicit_top is not None else float(rnd(fam.isf(0.5 / m)))

    def terms(k):
        gap = top - rnd(fam.isf((k - 0.5) / m))
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(gap > 0, np.log(k + extra) / gap, np.where(k + extra >= 2, np.inf, -np.inf)), gap

    enumerate_below = 256.0
    head = np.arange(1.0, min(m, enumerate_below) + 1)
    best = float(np.max(terms(head)[0]))
    if m <= enumerate_below or np.isinf(best):
        return best
    edges = np.unique(np.floor(np.geomspace(enumerate_below + 1, m, 2000)))
    lo, hi = edges[:-1], edges[1:] - 1
    hi[-1] = m
    keep = hi >= lo
    lo, hi = lo[keep], hi[keep]
    while len(lo):
        value_hi, _ = terms(hi)
        value_lo, gap_lo = terms(lo)
        best = max(best, float(np.max(value_hi)), float(np.max(value_lo)))
        with np.errstate(divide="ignore"):
            bound = np.where(gap_lo > 0, np.log(hi + extra) / gap_lo, np.inf)
        open_ = bound > best * (1 + rtol)
        lo, hi = lo[open_], hi[open_]
        small = (hi - lo < enumerate_below) & (hi < 2.0**53)
        for a, b in zip(lo[small], hi[small]):
            best = max(best, float(np.max(terms(np.arange(a, b + 1))[0])))
        lo, hi = lo[~small], hi[~small]
        mid = np.floor(np.sqrt(lo) * np.sqrt(hi))
        # beyond 2**53 a float interval may not split; its bound is then within rounding of best
        splittable = (mid > lo) & (mid < hi) & (mid + 1 > mid)
        lo, hi, mid = lo[splittable], hi[splittable], mid[splittable]
        lo, hi = np.concatenate([lo, mid + 1]), np.concatenate([mid, hi])
    return best


def _bin_edges(rest: int) -> np.ndarray:
    """Edges in ``(0, 1]`` of the bins of ``rest`` i.i.d. uniforms: about one expected point per
    bin near the top, then geometric with ratio ``_BIN_RATIO``."""
    head = np.arange(0, min(rest, _LINEAR_BINS) + 1) / rest
    if rest <= _LINEAR_BINS:
        return head
    count = int(np.log(rest / _LINEAR_BINS) / np.log(_BIN_RATIO)) + 2
    return np.unique(np.concatenate([head, np.geomspace(head[-1], 1.0, count)]))


def _random_row_scales(fam: ScoreFamily, n: int, draws: int, rng: np.random.Generator, dtype) -> np.ndarray:
    """Exact draws of per-row ``Lambda`` for random rows of length ``n`` (scores rounded to dtype).

    The ``m`` i.i.d. points of a row are uniforms ``U`` mapped by ``F_bar^-1``.  The smallest,
    ``U_(1) = 1 - exp(-E/m)``, is drawn first; the other ``m - 1`` are i.i.d. on ``(U_(1), 1)``,
    and their counts in fixed bins of that interval are multinomial, so the rank of every point
    among all keys is known before any point of a bin is drawn.  A bin whose points are not drawn
    yet can contribute at most ``log N(right edge) / D(left edge)``; an empty bin contributes
    nothing beyond the last point above it.  Per row, bins are drawn best-bound first (uniforms
    within the bin), the number of drawn points roughly doubling per round, until the largest
    term drawn is at least every remaining bound: then it is the row's exact ``Lambda``.

    This is the top-K simulation of ``docs/theory.md`` (same exact joint law of the order statistics) with
    the certificate ``log n / D_(K)`` sharpened by the bin counts, and with points drawn where
    the sup can still be -- for exponential scores that is often the bottom of the row.
    """
    rnd = rounded_to(dtype)
    m = fam.draws_per_row(n)
    first_rank = 1 if fam.explicit_top is None else 2  # rank of the U_(1) point among all keys
    if n <= 1 or m < 1:
        return np.zeros(draws)
    u1 = -np.expm1(-rng.standard_exponential(draws) / m)
    first_score = rnd(fam.isf(u1))
    top = first_score if fam.explicit_top is None else np.full(draws, float(fam.explicit_top))
    first_gap = top - first_score
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(first_gap > 0, np.log(first_rank) / first_gap, -np.inf if first_rank == 1 else np.inf)
    if m == 1:
        return np.where(np.isneginf(scale), 0.0, scale)

    edges = _bin_edges(m - 1)
    counts = rng.multinomial(m - 1, np.diff(edges), size=draws)  # (draws, bins)
    before = first_rank + np.cumsum(counts, axis=1) - counts  # rank of the point before each bin
    bound = np.full(counts.shape, -np.inf)
    occupied = np.nonzero(counts)
    left_gap = top[occupied[0]] - rnd(fam.isf(u1[occupied[0]] + (1 - u1[occupied[0]]) * edges[occupied[1]]))
    with np.errstate(divide="ignore"):
        bound[occupied] = np.where(
            left_gap > 0, np.log(before[occupied] + counts[occupied]) / left_gap, np.inf
        )
    drawn = np.zeros(draws, dtype=np.int64)
    while True:
        open_rows = np.flatnonzero(scale < bound.max(axis=1))
        if not len(open_rows):
            break
        # Best bound first, until the points drawn this round reach max(64, points drawn so far).
        order = np.argsort(-bound[open_rows], axis=1, kind="stable")
        ranked_bound = np.take_along_axis(bound[open_rows], order, axis=1)
        ranked_count = np.take_along_axis(counts[open_rows], order, axis=1)
        budget = np.maximum(64, drawn[open_rows])
        take = (np.cumsum(ranked_count, axis=1) - ranked_count < budget[:, None]) & (
            ranked_bound > scale[open_rows, None]
        )
        take[:, 0] = True
        row_of, position = np.nonzero(take)
        bin_of = order[row_of, position]
        rows_taken = open_rows[row_of]
        per = counts[rows_taken, bin_of]
        drawn[open_rows] += np.bincount(row_of, weights=per, minlength=len(open_rows)).astype(np.int64)
        bound[rows_taken, bin_of] = -np.inf

        point_group = np.repeat(np.arange(len(bin_of)), per)  # one group per (row, bin)
        point_bin = bin_of[point_group]
        rel = edges[point_bin] + (edges[point_bin + 1] - edges[point_bin]) * rng.random(len(point_group))
        order_in_group = np.lexsort((rel, point_group))
        point_group, rel = point_group[order_in_group], rel[order_in_group]
        rows = rows_taken[point_group]
        gap = top[rows] - rnd(fam.isf(u1[rows] + (1 - u1[rows]) * rel))
        group_start = np.searchsorted(point_group, point_group, side="left")
        rank = before[rows, bin_of[point_group]] + 1 + np.arange(len(point_group)) - group_start
        with np.errstate(divide="ignore", invalid="ignore"):
            term = np.where(gap > 0, np.log(rank) / gap, np.inf)
        np.maximum.at(scale, rows, term)
    return np.where(np.isneginf(scale), 0.0, scale)


def predict_accumulation_scale(
    family: str,
    params: dict | None,
    sampling: str,
    n,
    draws: int = 2000,
    seed: int = 0,
    quantiles=(0.5,),
    dtype="float32",
) -> np.ndarray:
    """Quantiles of per-row ``Lambda_n`` predicted from the family's law, for rows stored in
    ``dtype`` (scores are rounded to it, as stored rows are, so float32 ties are predicted too).

    a closed form where the family has one (simplex: ``log n / (q - p)``, tied: ``inf``); quantile
    rows: the row's exact value;
    random i.i.d. rows: ``draws`` exact simulated rows (:func:`_random_row_scales`), quantiles
    with ``inverted_cdf`` (always an attained value, so ``inf`` never becomes NaN).
    """
    fam = make_family(family, params)
    check_sampling(fam, sampling)
    quantiles = np.atleast_1d(np.asarray(quantiles, dtype=np.float64))
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    exact = fam.exact_accumulation_scale(n, dtype)
    if exact is not None:
        return np.full(len(quantiles), exact)
    if sampling == "quantile":
        return np.full(len(quantiles), _quantile_row_scale(fam, n, dtype))
    if n >= MAX_RANDOM_PREDICTION_N:
        raise ValueError(f"random-row predictions need n < 2**62, got n={n}")
    rng = np.random.default_rng(np.random.SeedSequence([_PREDICTION_TAG, int(seed), int(n)]))
    scales = _random_row_scales(fam, int(n), int(draws), rng, dtype)
    return np.quantile(scales, quantiles, method="inverted_cdf")


def median_interval_levels(rows: int, draws: int, alpha: float = MEDIAN_CHECK_ALPHA) -> tuple[float, float]:
    """Probability levels ``(p_lo, p_hi)`` such that the median of ``rows`` i.i.d. rows lies
    between the population quantiles at ``p_lo`` and ``p_hi`` with probability ``1 - alpha``.

    The median of ``R`` rows is ``F^-1`` of the middle order statistic of ``R`` uniforms,
    ``Beta((R+1)/2, (R+1)/2)``.  The predicted quantiles carry Monte-Carlo error from ``draws``
    simulated rows; that widens the interval as if ``1/R_eff = 1/R + 1/draws``.
    """
    effective = 1.0 / (1.0 / rows + 1.0 / draws)
    k = (effective + 1) / 2
    return float(stats.beta.ppf(alpha / 2, k, k)), float(stats.beta.isf(alpha / 2, k, k))
