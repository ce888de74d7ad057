"""Synthetic score families with known answers (``docs/theory.md``, "Synthetic families").

Each family is a class in :data:`FAMILIES` with validated parameters, ``sample(n, rng)`` and, for
i.i.d. families, the inverse survival function ``isf(u)`` (accurate down to ``u = 2**-200``),
the asymptotic exponent ``xi`` and the leading-order asymptotic ``Lambda_n``.

Two samplings:

* ``random``: every row is an independent draw, seeded per row with
  ``SeedSequence([seed, n, row])``, so scores never depend on chunking or the number of workers.
* ``quantile`` (i.i.d. families only): the deterministic row ``s_k = F^-1(1 - (k - 1/2)/m)``,
  ``k = 1..m``, identical for every row.  ``shrinking_gaps`` keeps its explicit maximum ``0`` and
  takes quantile values for its ``m = n - 1`` other scores.

Finite-``n`` predictions of per-row ``Lambda_n`` (``docs/theory.md``, section 3) come from the
family's law, not from the asymptote: see :func:`predict_accumulation_scale`.
"""

from __future__ import annotations

import json
import math

import dask
import dask.array as da
import numpy as np
import xarray as xr
from scipy import special, stats

from . import storage

SAMPLINGS = ("random", "quantile")
#: Quantile levels always stored in ``predicted_accumulation_scale``; the levels that bracket the
#: median of the store's rows (:func:`median_interval_levels`) are added per dataset.
PREDICTION_QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
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
_REQUIRED = object()


class ScoreFamily:
    """Base class of a score family; subclasses set the class attributes below."""

    name: str = ""
    #: parameter -> (default or _REQUIRED, check, text naming the allowed values)
    parameters: dict = {}
    iid = False
    #: score of an explicit maximum placed on top of ``n - 1`` i.i.d. draws (shrinking gaps)
    explicit_top: float | None = None
    asymptotic_xi = math.nan

    def __init__(self, **params):
        unknown = sorted(set(params) - set(self.parameters))
        if unknown:
            raise ValueError(
                f"family {self.name!r}: unknown parameter {unknown[0]!r}; allowed: {sorted(self.parameters)}"
            )
        values = {}
        for key, (default, check, allowed) in self.parameters.items():
            if key not in params:
                if default is _REQUIRED:
                    raise ValueError(f"family {self.name!r}: parameter {key!r} is required ({allowed})")
                values[key] = default
                continue
            value = params[key]
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not check(value):
                raise ValueError(f"family {self.name!r}: parameter {key!r}={value!r} not allowed; must be {allowed}")
            values[key] = value
        self.params = values
        self._check_params()

    def _check_params(self):
        """Constraints between parameters (override)."""

    def __repr__(self):
        return f"{type(self).__name__}({self.params})"

    def draws_per_row(self, n: int) -> int:
        """How many i.i.d. draws a row of ``n`` keys holds."""
        return n - 1 if self.explicit_top is not None else n

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """One random row of ``n`` scores (float64)."""
        raise NotImplementedError

    def isf(self, u):
        """Inverse survival function ``F_bar^-1(u)`` of one i.i.d. score."""
        raise ValueError(f"family {self.name!r} is not i.i.d.: it has no marginal isf")

    def asymptotic_accumulation_scale(self, n):
        """Leading-order ``Lambda_n`` of the table in ``docs/theory.md`` (NaN where it gives none)."""
        return np.full(np.shape(n), np.nan)

    def quantile_row(self, n: int) -> np.ndarray:
        """The deterministic row ``s_k = F_bar^-1((k - 1/2)/m)``, largest first."""
        if not self.iid:
            raise ValueError(
                f"sampling 'quantile' needs an i.i.d. family ({', '.join(sorted(IID_FAMILIES))}), "
                f"not {self.name!r}"
            )
        m = self.draws_per_row(n)
        values = self.isf((np.arange(1, m + 1) - 0.5) / m)
        if self.explicit_top is not None:
            values = np.concatenate([[self.explicit_top], values])
        return values


def _positive(x):
    return x > 0 and math.isfinite(x)


def _finite(x):
    return math.isfinite(x)


class Simplex(ScoreFamily):
    """One score ``q`` and ``n - 1`` scores ``p < q`` (Chen et al.): ``Lambda = log n / (q - p)``."""

    name = "simplex"
    parameters = {
        "q": (_REQUIRED, _finite, "a finite number > p"),
        "p": (_REQUIRED, _finite, "a finite number < q"),
    }
    asymptotic_xi = 1.0

    def _check_params(self):
        if not self.params["p"] < self.params["q"]:
            raise ValueError(f"family 'simplex': parameter 'p'={self.params['p']!r} must be < q={self.params['q']!r}")

    def sample(self, n, rng):
        row = np.full(n, float(self.params["p"]))
        row[0] = self.params["q"]
        return row

    def asymptotic_accumulation_scale(self, n):
        return np.log(np.asarray(n, dtype=np.float64)) / (self.params["q"] - self.params["p"])


class Gaussian(ScoreFamily):
    """i.i.d. ``N(0, sigma^2)`` scores (random-energy model): ``Lambda_n ~ sqrt(2 log n)/sigma``."""

    name = "gaussian"
    parameters = {"sigma": (1.0, _positive, "a finite number > 0")}
    iid = True
    asymptotic_xi = 0.5

    def sample(self, n, rng):
        return rng.normal(0.0, self.params["sigma"], n)

    def isf(self, u):
        return -self.params["sigma"] * special.ndtri(u)

    def asymptotic_accumulation_scale(self, n):
        return np.sqrt(2 * np.log(np.asarray(n, dtype=np.float64))) / self.params["sigma"]


class Weibull(ScoreFamily):
    """i.i.d. scores with ``P(s > x) = exp(-x^gamma)``, ``x > 0`` (``gamma = 1``: exponential)."""

    name = "weibull"
    parameters = {"gamma": (_REQUIRED, _positive, "a finite number > 0")}
    iid = True

    @property
    def asymptotic_xi(self):
        return 1.0 - 1.0 / self.params["gamma"]

    def sample(self, n, rng):
        return rng.standard_exponential(n) ** (1.0 / self.params["gamma"])

    def isf(self, u):
        return (-np.log(u)) ** (1.0 / self.params["gamma"])

    def asymptotic_accumulation_scale(self, n):
        gamma = self.params["gamma"]
        return gamma * np.log(np.asarray(n, dtype=np.float64)) ** (1.0 - 1.0 / gamma)


class ShrinkingGaps(ScoreFamily):
    """One score ``0`` and ``n - 1`` scores ``-D_j``, ``P(D <= u) = exp(-c/u)`` (``D = c/E``)."""

    name = "shrinking_gaps"
    parameters = {"c": (_REQUIRED, _positive, "a finite number > 0")}
    iid = True
    explicit_top = 0.0
    asymptotic_xi = 2.0

    def sample(self, n, rng):
        return np.concatenate([[0.0], -self.params["c"] / rng.standard_exponential(n - 1)])

    def isf(self, u):
        # P(-D > x) = exp(c/x) for x < 0, so the score with survival u is c / log(u).
        return self.params["c"] / np.log(u)

    def asymptotic_accumulation_scale(self, n):
        return np.log(np.asarray(n, dtype=np.float64)) ** 2 / (4 * self.params["c"])


def _integer_at_least(k):
    return lambda x: float(x).is_integer() and x >= k


class Sphere(ScoreFamily):
    """``s_j = <q, k_j>``, keys uniform on ``S^(d-1)``, ``|q| = query_norm`` (Bruno et al.).

    Marginal: ``(s/|q| + 1)/2 ~ Beta((d-1)/2, (d-1)/2)``; ``Lambda_n`` grows as ``n^(2/(d-1))``.
    """

    name = "sphere"
    parameters = {
        "d": (_REQUIRED, _integer_at_least(2), "an integer >= 2"),
        "query_norm": (1.0, _positive, "a finite number > 0"),
    }
    iid = True

    @property
    def _shape(self):
        return (int(self.params["d"]) - 1) / 2

    def sample(self, n, rng):
        d = int(self.params["d"])
        keys = rng.standard_normal((n, d))
        keys /= np.linalg.norm(keys, axis=1, keepdims=True)
        query = rng.standard_normal(d)
        query *= self.params["query_norm"] / np.linalg.norm(query)
        return keys @ query

    def isf(self, u):
        # By symmetry of Beta(a, a), P(s > x) = u at x = |q| (1 - 2 B^-1(u)), B^-1 accurate for
        # tiny u; the score itself resolves the distance to its bound |q| only to |q| 2**-53.
        a = self._shape
        return self.params["query_norm"] * (1.0 - 2.0 * special.betaincinv(a, a, u))

    def asymptotic_accumulation_scale(self, n):
        # N(u) ~ 1 + n C u^a near the top with C = (2|q|)^-a / (a B(a, a)); Lambda is of the order
        # of the inverse gap scale (n C)^(1/a).  docs/theory.md gives only the power n^(2/(d-1)).
        a = self._shape
        scale = np.asarray(n, dtype=np.float64) / (a * special.beta(a, a))
        return scale ** (1.0 / a) / (2.0 * self.params["query_norm"])


class Tied(ScoreFamily):
    """A Gaussian row whose top ``ties`` scores are set equal to its maximum: ``Lambda = inf``."""

    name = "tied"
    parameters = {
        "sigma": (1.0, _positive, "a finite number > 0"),
        "ties": (2, _integer_at_least(2), "an integer >= 2"),
    }

    def sample(self, n, rng):
        ties = int(self.params["ties"])
        if n < ties:
            raise ValueError(f"family 'tied': n={n} is smaller than ties={ties}")
        row = rng.normal(0.0, self.params["sigma"], n)
        top = np.argpartition(row, n - ties)[n - ties :]
        row[top] = row[top].max()
        return row

    def asymptotic_accumulation_scale(self, n):
        return np.full(np.shape(n), np.inf)


FAMILIES = {cls.name: cls for cls in (Simplex, Gaussian, Weibull, ShrinkingGaps, Sphere, Tied)}
IID_FAMILIES = tuple(name for name, cls in FAMILIES.items() if cls.iid)


def make_family(family: str, params: dict | None = None) -> ScoreFamily:
    """The validated family ``family`` with ``params`` (ValueError names bad keys and values)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; allowed: {sorted(FAMILIES)}")
    return FAMILIES[family](**(params or {}))


def _check_sampling(family: ScoreFamily, sampling: str) -> None:
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown sampling {sampling!r}; allowed: {list(SAMPLINGS)}")
    if sampling == "quantile" and not family.iid:
        raise ValueError(
            f"sampling 'quantile' needs an i.i.d. family ({', '.join(IID_FAMILIES)}), not {family.name!r}"
        )


#: Keys of a family's config entry that the study (not the family) interprets.
STUDY_KEYS = ("rows", "ladder", "dtype")


def parse_spec(spec: dict) -> tuple[ScoreFamily, str]:
    """Family and sampling of a config entry ``{family, params, sampling}``.

    ``params`` defaults to ``{}`` and ``sampling`` to ``"random"``; the study keys
    :data:`STUDY_KEYS` are allowed and left to the caller; any other key is an error.
    """
    allowed = {"family", "params", "sampling", *STUDY_KEYS}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ValueError(f"family spec: unknown key {unknown[0]!r}; allowed: {sorted(allowed)}")
    if "family" not in spec:
        raise ValueError(f"family spec: key 'family' is required; allowed families: {sorted(FAMILIES)}")
    family = make_family(spec["family"], spec.get("params"))
    sampling = spec.get("sampling", "random")
    _check_sampling(family, sampling)
    return family, sampling


def row_seed(seed: int, n: int, row: int) -> np.random.SeedSequence:
    """The seed of one random row: it depends on nothing but ``(seed, n, row)``."""
    return np.random.SeedSequence([int(seed), int(n), int(row)])


def generate_rows(family: str, params: dict | None, sampling: str, n: int, rows, seed: int) -> np.ndarray:
    """Scores of rows ``rows`` at length ``n``: float64 ``(len(rows), n)``.

    Random rows are seeded per row (:func:`row_seed`), so any split of ``rows`` gives the same
    scores; quantile rows are the same deterministic row for every row index.
    """
    fam = make_family(family, params)
    _check_sampling(fam, sampling)
    rows = np.atleast_1d(np.asarray(rows, dtype=np.int64))
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if sampling == "quantile":
        return np.tile(fam.quantile_row(n), (len(rows), 1))
    out = np.empty((len(rows), n))
    for i, row in enumerate(rows):
        out[i] = fam.sample(n, np.random.default_rng(row_seed(seed, n, row)))
    return out


# --------------------------------------------------------------------------------------------
# Finite-n predictions of per-row Lambda_n


def _rounder(dtype):
    dtype = np.dtype(dtype)
    return lambda x: np.asarray(x, dtype=dtype).astype(np.float64)


def _quantile_row_scale(fam: ScoreFamily, n, dtype, rtol: float = 1e-12) -> float:
    """Exact ``Lambda`` of the quantile row of length ``n`` with scores rounded to ``dtype``.

    ``Lambda = max_k log N_k / D_(k)`` over the row's ``m`` i.i.d. points (``N_k`` = rank among
    all keys).  Branch and bound over the index ``k``: on ``[a, b]``,
    ``log N_b / D_(a)`` bounds every term, so only intervals whose bound can beat the best value
    found are refined; small intervals are enumerated.  The result is an attained term, within
    ``rtol`` of the sup (exact wherever an interval is enumerated); it works for any ``n``
    (``2**200`` included) at a cost of a few thousand evaluations.
    """
    rnd = _rounder(dtype)
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
    rnd = _rounder(dtype)
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

    simplex: ``log n / (q - p)`` exactly; tied: ``inf``; quantile rows: the row's exact value;
    random i.i.d. rows: ``draws`` exact simulated rows (:func:`_random_row_scales`), quantiles
    with ``inverted_cdf`` (always an attained value, so ``inf`` never becomes NaN).
    """
    fam = make_family(family, params)
    _check_sampling(fam, sampling)
    quantiles = np.atleast_1d(np.asarray(quantiles, dtype=np.float64))
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if isinstance(fam, Simplex):
        rnd = _rounder(dtype)
        value = math.log(n) / float(rnd(fam.params["q"]) - rnd(fam.params["p"]))
        return np.full(len(quantiles), value)
    if isinstance(fam, Tied):
        return np.full(len(quantiles), np.inf if n >= 2 else 0.0)
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


def _score_block(family, params, sampling, n, rows, seed, width, dtype) -> np.ndarray:
    block = np.full((1, 1, len(rows), width), np.nan, dtype=dtype)
    block[0, 0, :, :n] = generate_rows(family, params, sampling, n, rows, seed)
    return block


def family_dataset(
    name: str,
    spec: dict,
    n_ladder,
    rows: int,
    seed: int,
    row_chunk: int,
    dtype: str = "float32",
    prediction_draws: int = 2000,
    quantiles=PREDICTION_QUANTILES,
) -> xr.Dataset:
    """Lazy score dataset of one family in the canonical layout of :mod:`critscale.storage`.

    ``spec`` is the config entry ``{family, params, sampling}`` (see :func:`parse_spec`);
    ``rows`` is the number of rows per ``n``.  One Dask task per ``(n, row chunk)`` block (the key
    axis is one chunk).  Besides ``scores``: ``predicted_accumulation_scale(n,
    prediction_quantile)`` (finite-``n`` prediction for rows stored in ``dtype``, one Dask task
    per ``n``) and ``asymptotic_accumulation_scale(n)``.  Its levels are ``quantiles``, the median
    and the levels that bracket the median of ``rows`` rows (:func:`median_interval_levels`, used
    by :func:`critscale.theory_check.compare_with_theory`).  The quantile dimension is not called
    ``quantile`` because the statistics stage adds its own ``quantile`` coordinate; two different
    sets of levels on one name would silently be aligned to NaN.
    """
    family, sampling = parse_spec(spec)
    n_ladder = [int(n) for n in n_ladder]
    if not n_ladder or sorted(set(n_ladder)) != n_ladder or n_ladder[0] < 1:
        raise ValueError(f"n_ladder must be strictly increasing positive integers, got {n_ladder}")
    rows, row_chunk, dtype = int(rows), max(1, int(row_chunk)), np.dtype(dtype)
    width = n_ladder[-1]
    params = family.params
    per_n = []
    for n in n_ladder:
        blocks = []
        for start in range(0, rows, row_chunk):
            chunk_rows = np.arange(start, min(rows, start + row_chunk))
            task = dask.delayed(_score_block, pure=True)(family.name, params, sampling, n, chunk_rows, seed, width, dtype)
            blocks.append(da.from_delayed(task, shape=(1, 1, len(chunk_rows), width), dtype=dtype))
        per_n.append(da.concatenate(blocks, axis=2))
    scores = da.concatenate(per_n, axis=1)

    levels = sorted({float(q) for q in quantiles} | {0.5} | set(median_interval_levels(rows, prediction_draws)))
    predictions = da.stack(
        [
            da.from_delayed(
                dask.delayed(predict_accumulation_scale, pure=True)(
                    family.name, params, sampling, n, prediction_draws, seed, levels, dtype.name
                ),
                shape=(len(levels),),
                dtype=np.float64,
            )
            for n in n_ladder
        ]
    )
    asymptotic_xi = float(family.asymptotic_xi)
    return xr.Dataset(
        {
            "scores": (storage.SCORE_DIMS, scores),
            "predicted_accumulation_scale": (("n", "prediction_quantile"), predictions),
            "asymptotic_accumulation_scale": (("n",), family.asymptotic_accumulation_scale(n_ladder)),
        },
        coords={
            "unit": ("unit", np.asarray([name], dtype=object)),
            "n": ("n", np.asarray(n_ladder, dtype=np.int64)),
            "row": ("row", np.arange(rows)),
            "key": ("key", np.arange(width)),
            "sequence": ("row", np.arange(rows)),
            "query": ("row", np.zeros(rows, dtype=np.int64)),
            "prediction_quantile": ("prediction_quantile", np.asarray(levels)),
        },
        attrs={
            "source": name,
            "kind": "family",
            "family": family.name,
            "sampling": sampling,
            "params": json.dumps(params, sort_keys=True),
            "seed": int(seed),
            "prediction_draws": int(prediction_draws),
            "asymptotic_xi": asymptotic_xi,
            "provenance": storage.provenance(spec),
        },
    )
