"""What every synthetic family is: validated parameters, how a row is drawn, and the answers the
predictions, the theory check and the config validation ask of it.

A family answers for itself, so that adding one touches its own class only: whether its rows
are tied at the maximum (:attr:`ScoreFamily.ties_at_maximum`), whether ``Lambda_n`` has a closed
form (:meth:`ScoreFamily.exact_accumulation_scale`), whether every row equals the prediction
(:meth:`ScoreFamily.predicted_exactly`), how ``Lambda_n`` grows (:attr:`ScoreFamily.growth`) and
towards which exponent (:attr:`ScoreFamily.asymptotic_exponent`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

REQUIRED = object()


@dataclass(frozen=True)
class Growth:
    """How ``Lambda_n`` of a family grows: the exponent the theory check compares (its name, also
    the fit table's column) is the slope of ``log median Lambda_n`` on ``axis(n)``."""

    exponent: str
    axis_name: str
    axis: Callable[[np.ndarray], np.ndarray]


def _log_log(n: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n >= 3, np.log(np.log(n)), np.nan)


#: ``Lambda_n ~ c (log n)^xi``
LOG_POWER = Growth("xi", "log log n", _log_log)
#: ``Lambda_n ~ c n^p``
N_POWER = Growth("power_exponent", "log n", np.log)


def rounded_to(dtype):
    """``x`` rounded to ``dtype`` (as stored rows are), back in float64."""
    dtype = np.dtype(dtype)
    return lambda x: np.asarray(x, dtype=dtype).astype(np.float64)


def positive(x):
    return x > 0 and math.isfinite(x)


def finite(x):
    return math.isfinite(x)


def integer_at_least(k):
    return lambda x: float(x).is_integer() and x >= k


class ScoreFamily:
    """Base class of a score family; subclasses set the class attributes below."""

    name: str = ""
    #: parameter -> (default or REQUIRED, check, text naming the allowed values)
    parameters: dict = {}
    iid = False
    #: score of an explicit maximum placed on top of ``n - 1`` i.i.d. draws (shrinking gaps)
    explicit_top: float | None = None
    asymptotic_xi = math.nan
    growth = LOG_POWER

    def __init__(self, **params):
        unknown = sorted(set(params) - set(self.parameters))
        if unknown:
            raise ValueError(
                f"family {self.name!r}: unknown parameter {unknown[0]!r}; allowed: {sorted(self.parameters)}"
            )
        values = {}
        for key, (default, check, allowed) in self.parameters.items():
            if key not in params:
                if default is REQUIRED:
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

    @property
    def ties_at_maximum(self) -> int:
        """Keys every row ties at its maximum by construction (0: ties only by chance)."""
        return 0

    @property
    def asymptotic_exponent(self) -> float:
        """The asymptotic value of :attr:`growth`'s exponent (NaN where the theory gives none)."""
        return float(self.asymptotic_xi)

    def exact_accumulation_scale(self, n: int, dtype) -> float | None:
        """Every row's ``Lambda_n`` in closed form, for scores stored in ``dtype``; None where it
        has to be computed from the family's law."""
        return None

    def predicted_exactly(self, sampling: str) -> bool:
        """Whether every row's ``Lambda_n`` equals the prediction (so rows are checked against it
        exactly, not through their median): the deterministic quantile rows do."""
        return sampling == "quantile"

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
        """The deterministic row ``s_k = F_bar^-1((k - 1/2)/m)``, largest first (i.i.d. families;
        :func:`critscale.families.spec.check_sampling` refuses the others by name)."""
        m = self.draws_per_row(n)
        values = self.isf((np.arange(1, m + 1) - 0.5) / m)
        if self.explicit_top is not None:
            values = np.concatenate([[self.explicit_top], values])
        return values
