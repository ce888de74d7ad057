"""Shared test helpers."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from critscale.gapstats import Grids, row_statistics
from tiny_study import snakemake

GRID_DIMS = {"gap_count": "t", "resolved_scale": "r"}


def build_stats(rows_by_n: dict, grids: Grids, attrs: dict | None = None, extra: dict | None = None) -> xr.Dataset:
    """A statistics dataset in the layout of the Dask stage (``critscale.compute``), in memory.

    ``rows_by_n`` maps ``n`` to scores ``(rows, n)`` (one unit, ``"u0"``) or ``(units, rows, n)``;
    every ``n`` must have the same number of units and rows.  Per-row variables are
    :func:`critscale.gapstats.row_statistics` on dims ``(unit, n, row[, grid])``; ``extra``
    (name -> DataArray or ``(dims, values)``, e.g. ``predicted_accumulation_scale``) and ``attrs``
    are carried over as the Dask stage carries the score store's.
    """
    ladder = sorted(rows_by_n)
    per_n = []
    for n in ladder:
        scores = np.asarray(rows_by_n[n], dtype=np.float64)
        per_n.append(row_statistics(scores[None] if scores.ndim == 2 else scores, grids))
    units, rows = per_n[0]["n_keys"].shape
    variables = {}
    for name in per_n[0]:
        stacked = np.stack([stats[name] for stats in per_n], axis=1)  # (unit, n, row, ...)
        if name in GRID_DIMS:
            grid = (GRID_DIMS[name],)
        elif stacked.ndim == 4:
            grid = ("rho",) if name.endswith("_rel") else ("beta",)
        else:
            grid = ()
        variables[name] = (("unit", "n", "row") + grid, stacked)
    coords = {
        "unit": [f"u{i}" for i in range(units)],
        "n": np.asarray(ladder, dtype=np.int64),
        "row": np.arange(rows),
        "sequence": ("row", np.arange(rows)),
        "query": ("row", np.zeros(rows, dtype=np.int64)),
        "t": grids.t,
        "r": grids.resolutions,
        "beta": grids.beta,
        "rho": grids.rho,
    }
    stats = xr.Dataset(variables, coords=coords, attrs=dict(attrs or {}))
    for name, value in (extra or {}).items():
        stats[name] = value
    return stats


@pytest.fixture
def make_stats():
    """The builder :func:`build_stats`: ``make_stats(rows_by_n, grids, attrs=None, extra=None)``."""
    return build_stats


@pytest.fixture
def small_grids() -> Grids:
    """Grids wide enough to put beta on both sides of Lambda for rows of a few hundred keys."""
    return Grids(
        t=np.array([0.0, 0.1, 0.5, 1.0]),
        resolutions=np.array([0.0, 1.0]),
        beta=np.geomspace(0.05, 200.0, 25),
        rho=np.array([0.0, 0.1, 0.3, 0.5, 0.8, 0.95, 1.0, 1.05, 1.5, 3.0, 10.0]),
    )


def build_family_stats(name: str, spec: dict, n_ladder, rows: int, grids: Grids, *, seed=0, dtype="float32",
                       prediction_draws=2000) -> xr.Dataset:
    """Statistics of a synthetic family made by :func:`critscale.families.dataset.family_dataset`, with
    its predictions and attributes carried over as the Dask stage carries them."""
    from critscale.families.dataset import family_dataset

    scores = family_dataset(name, spec, n_ladder, rows, seed, row_chunk=64, dtype=dtype,
                            prediction_draws=prediction_draws).compute()
    rows_by_n = {int(n): scores["scores"].sel(n=n).values[..., : int(n)] for n in scores["n"].values}
    extra = {name: scores[name] for name in scores.data_vars if "key" not in scores[name].dims}
    stats = build_stats(rows_by_n, grids, attrs=scores.attrs, extra=extra)
    return stats.assign_coords(unit=scores["unit"].values)


@pytest.fixture
def family_stats():
    """The builder :func:`build_family_stats`."""
    return build_family_stats


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory):
    """The results folder of one finished default run of the tiny study, shared by the workflow,
    crash and report tests (a full run costs minutes). Tests may add targets to it (share,
    verify, a report) but copy it before changing what is there."""
    results = tmp_path_factory.mktemp("tiny_study") / "results"
    snakemake(results=results)
    return results
