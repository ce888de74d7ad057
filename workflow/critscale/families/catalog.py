"""The synthetic families (``docs/theory.md``, "Synthetic families") and their registry.

Each family is a class in :data:`FAMILIES` with validated parameters, ``sample(n, rng)`` and, for
i.i.d. families, the inverse survival function ``isf(u)`` (accurate down to ``u = 2**-200``),
the asymptotic exponent ``xi`` and the leading-order asymptotic ``Lambda_n``.  A new family is a
class here, added to :data:`FAMILIES`, with its parameters in the config schema.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

from critscale.families.base import (N_POWER, REQUIRED, ScoreFamily, finite, integer_at_least, positive,
                                     rounded_to)


class Simplex(ScoreFamily):
    """One score ``q`` and ``n - 1`` scores ``p < q`` (Chen et al.): ``Lambda = log n / (q - p)``."""

    name = "simplex"
    parameters = {
        "q": (REQUIRED, finite, "a finite number > p"),
        "p": (REQUIRED, finite, "a finite number < q"),
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

    def exact_accumulation_scale(self, n, dtype):
        rnd = rounded_to(dtype)
        return math.log(n) / float(rnd(self.params["q"]) - rnd(self.params["p"]))

    def predicted_exactly(self, sampling):
        return True


class Gaussian(ScoreFamily):
    """i.i.d. ``N(0, sigma^2)`` scores (random-energy model): ``Lambda_n ~ sqrt(2 log n)/sigma``."""

    name = "gaussian"
    parameters = {"sigma": (1.0, positive, "a finite number > 0")}
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
    parameters = {"gamma": (REQUIRED, positive, "a finite number > 0")}
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
    parameters = {"c": (REQUIRED, positive, "a finite number > 0")}
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


class Sphere(ScoreFamily):
    """``s_j = <q, k_j>``, keys uniform on ``S^(d-1)``, ``|q| = query_norm`` (Bruno et al.).

    Marginal: ``(s/|q| + 1)/2 ~ Beta((d-1)/2, (d-1)/2)``; ``Lambda_n`` grows as ``n^(2/(d-1))``.
    """

    name = "sphere"
    parameters = {
        "d": (REQUIRED, integer_at_least(2), "an integer >= 2"),
        "query_norm": (1.0, positive, "a finite number > 0"),
    }
    iid = True
    growth = N_POWER

    @property
    def asymptotic_exponent(self):
        return 2.0 / (int(self.params["d"]) - 1)

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
        "sigma": (1.0, positive, "a finite number > 0"),
        "ties": (2, integer_at_least(2), "an integer >= 2"),
    }

    @property
    def ties_at_maximum(self):
        return int(self.params["ties"])

    def exact_accumulation_scale(self, n, dtype):
        return np.inf if n >= 2 else 0.0

    def sample(self, n, rng):
        ties = self.ties_at_maximum
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
