"""Resampling independent units: draws of unit multiplicities and the medians over rows that
every draw implies, for all replicates, lanes and rows in one compiled pass.

A *unit* is what is independent in the data: a window (sequence) of a model source, a row of a
synthetic family.  All rows of a drawn unit, at every ``n``, enter a replicate with the unit's
multiplicity, so the dependence between the rows of one window is kept.
"""

from __future__ import annotations

import numba
import numpy as np


def unit_multiplicities(n_units: int, replicates: int, seed: int) -> np.ndarray:
    """``(replicates, n_units)`` counts of a bootstrap draw of ``n_units`` units with replacement
    (each row sums to ``n_units``)."""
    if n_units < 1 or replicates < 1:
        raise ValueError(f"need at least one unit and one replicate, got {n_units} and {replicates}")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=replicates).astype(np.int64)


@numba.njit(parallel=True, cache=True)
def _weighted_medians(sorted_values, sorted_units, totals, multiplicity):  # pragma: no cover - compiled
    """``(replicate, lane)`` medians: lane ``l``'s sorted rows, row ``k`` counted
    ``multiplicity[b, sorted_units[l, k]]`` times (a missing row, sorted last, has code ``G``
    and ``multiplicity[:, G] = 0``); ``totals[b, l]`` is the lane's weighted row count."""
    lanes, rows = sorted_values.shape
    replicates = multiplicity.shape[0]
    out = np.empty((replicates, lanes))
    for lane in numba.prange(lanes):
        for b in range(replicates):
            total = totals[b, lane]
            if total == 0:
                out[b, lane] = np.nan
                continue
            low_position, high_position = (total - 1) // 2, total // 2
            cumulative, low = 0, np.nan
            for k in range(rows):
                cumulative += multiplicity[b, sorted_units[lane, k]]
                if cumulative > low_position and np.isnan(low):
                    low = sorted_values[lane, k]
                if cumulative > high_position:
                    out[b, lane] = 0.5 * low + 0.5 * sorted_values[lane, k]
                    break
    return out


class SortedRows:
    """Rows of a ``(..., row)`` array sorted once, so that the median under any unit
    multiplicities costs one partial walk per lane and replicate.

    ``units[i]`` is the unit (0..G-1) of row ``i``.  NaN marks a missing row and never counts;
    ``inf`` is a value (a tied row).  The median of an even count is the mean of the two middle
    values; a lane without rows gives NaN.
    """

    def __init__(self, values: np.ndarray, units: np.ndarray):
        values = np.asarray(values, dtype=np.float64)
        units = np.asarray(units, dtype=np.int64)
        if units.shape != values.shape[-1:] or (units.size and units.min() < 0):
            raise ValueError(f"units must be one code >= 0 per row ({values.shape[-1]}), got shape {units.shape}")
        self.shape = values.shape[:-1]
        self.n_units = int(units.max()) + 1 if units.size else 0
        lanes = values.reshape(-1, values.shape[-1])
        order = np.argsort(lanes, axis=-1, kind="stable")  # NaN sorts last
        self.sorted = np.take_along_axis(lanes, order, axis=-1)
        missing = np.isnan(self.sorted)
        # A missing row gets code G, which reads a zero multiplicity appended after the last unit.
        self.sorted_units = np.where(missing, self.n_units, units[order])
        # Valid rows per (lane, unit): one bincount over lane-offset codes.
        codes = (np.arange(len(lanes))[:, None] * self.n_units + self.sorted_units)[~missing]
        self.unit_counts = np.bincount(codes, minlength=len(lanes) * self.n_units).reshape(len(lanes), self.n_units)

    def medians(self, multiplicity: np.ndarray) -> np.ndarray:
        """Medians for unit multiplicities ``(G,)`` -> ``shape``, or ``(B, G)`` -> ``(B, *shape)``."""
        multiplicity = np.asarray(multiplicity, dtype=np.int64)
        if multiplicity.shape[-1] != self.n_units or multiplicity.ndim not in (1, 2):
            raise ValueError(f"multiplicity must be (G,) or (B, G) with G = {self.n_units}, got {multiplicity.shape}")
        replicates = np.atleast_2d(multiplicity)
        padded = np.concatenate([replicates, np.zeros((len(replicates), 1), np.int64)], axis=1)
        # Weighted row counts per (replicate, lane) by one product (exact: integers far below 2**53).
        totals = np.rint(replicates.astype(np.float64) @ self.unit_counts.T.astype(np.float64)).astype(np.int64)
        medians = _weighted_medians(self.sorted, self.sorted_units, totals, padded)
        medians = medians.reshape((-1, *self.shape))
        return medians[0] if multiplicity.ndim == 1 else medians
