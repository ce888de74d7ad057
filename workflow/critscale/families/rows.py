"""Rows of scores of a family at one length ``n``, the same whatever the split of the rows."""

from __future__ import annotations

import numpy as np

from critscale.families.catalog import make_family
from critscale.families.spec import check_sampling


def row_seed(seed: int, n: int, row: int) -> np.random.SeedSequence:
    """The seed of one random row: it depends on nothing but ``(seed, n, row)``."""
    return np.random.SeedSequence([int(seed), int(n), int(row)])


def generate_rows(family: str, params: dict | None, sampling: str, n: int, rows, seed: int) -> np.ndarray:
    """Scores of rows ``rows`` at length ``n``: float64 ``(len(rows), n)``.

    Random rows are seeded per row (:func:`row_seed`), so any split of ``rows`` gives the same
    scores; quantile rows are the same deterministic row for every row index.
    """
    fam = make_family(family, params)
    check_sampling(fam, sampling)
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
