"""Resampling independent sequences: draws of sequence multiplicities and the medians over rows
that every draw implies, for all replicates, lanes and rows in one compiled pass.

A *sequence* is what is independent in the data: a window of a model source, a row of a
synthetic family (the store's ``sequence`` coordinate; a *unit* is a head, the store's ``unit``
dimension).  All rows of a drawn sequence, at every ``n``, enter a replicate with the
sequence's multiplicity, so the dependence between the rows of one window is kept.
"""

from __future__ import annotations

import numba
import numpy as np


def sequence_multiplicities(n_sequences: int, replicates: int, seed: int) -> np.ndarray:
    """``(replicates, n_sequences)`` counts of a bootstrap draw of ``n_sequences`` sequences with
    replacement (each row sums to ``n_sequences``)."""
    if n_sequences < 1 or replicates < 1:
        raise ValueError(f"need at least one sequence and one replicate, got {n_sequences} and {replicates}")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_sequences, np.full(n_sequences, 1.0 / n_sequences), size=replicates).astype(np.int64)


@numba.njit(parallel=True, cache=True)
def _weighted_medians(sorted_values, sorted_sequences, totals, multiplicity):  # pragma: no cover - compiled
    """``(replicate, lane)`` medians: lane ``l``'s sorted rows, row ``k`` counted
    ``multiplicity[b, sorted_sequences[l, k]]`` times (a missing row, sorted last, has code ``G``
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
                cumulative += multiplicity[b, sorted_sequences[lane, k]]
                if cumulative > low_position and np.isnan(low):
                    low = sorted_values[lane, k]
                if cumulative > high_position:
                    out[b, lane] = 0.5 * low + 0.5 * sorted_values[lane, k]
                    break
    return out


class SortedRows:
    """Rows of a ``(..., row)`` array sorted once, so that the median under any sequence
    multiplicities costs one partial walk per lane and replicate.

    ``sequences[i]`` is the sequence (0..G-1) of row ``i``.  NaN marks a missing row and never counts;
    ``inf`` is a value (a tied row).  The median of an even count is the mean of the two middle
    values; a lane without rows gives NaN.
    """

    def __init__(self, values: np.ndarray, sequences: np.ndarray):
        values = np.asarray(values, dtype=np.float64)
        sequences = np.asarray(sequences, dtype=np.int64)
        if sequences.shape != values.shape[-1:] or (sequences.size and sequences.min() < 0):
            raise ValueError(f"sequences must be one code >= 0 per row ({values.shape[-1]}), "
                             f"got shape {sequences.shape}")
        self.shape = values.shape[:-1]
        self.n_sequences = int(sequences.max()) + 1 if sequences.size else 0
        lanes = values.reshape(-1, values.shape[-1])
        order = np.argsort(lanes, axis=-1, kind="stable")  # NaN sorts last
        self.sorted = np.take_along_axis(lanes, order, axis=-1)
        missing = np.isnan(self.sorted)
        # A missing row gets code G, which reads a zero multiplicity appended after the last sequence.
        self.sorted_sequences = np.where(missing, self.n_sequences, sequences[order])
        # Valid rows per (lane, sequence): one bincount over lane-offset codes.
        codes = (np.arange(len(lanes))[:, None] * self.n_sequences + self.sorted_sequences)[~missing]
        self.sequence_counts = np.bincount(codes, minlength=len(lanes) * self.n_sequences).reshape(len(lanes), self.n_sequences)

    def medians(self, multiplicity: np.ndarray) -> np.ndarray:
        """Medians for unit multiplicities ``(G,)`` -> ``shape``, or ``(B, G)`` -> ``(B, *shape)``."""
        multiplicity = np.asarray(multiplicity, dtype=np.int64)
        if multiplicity.shape[-1] != self.n_sequences or multiplicity.ndim not in (1, 2):
            raise ValueError(f"multiplicity must be (G,) or (B, G) with G = {self.n_sequences}, got {multiplicity.shape}")
        replicates = np.atleast_2d(multiplicity)
        padded = np.concatenate([replicates, np.zeros((len(replicates), 1), np.int64)], axis=1)
        # Weighted row counts per (replicate, lane) by one product (exact: integers far below 2**53).
        totals = np.rint(replicates.astype(np.float64) @ self.sequence_counts.T.astype(np.float64)).astype(np.int64)
        medians = _weighted_medians(self.sorted, self.sorted_sequences, totals, padded)
        medians = medians.reshape((-1, *self.shape))
        return medians[0] if multiplicity.ndim == 1 else medians
