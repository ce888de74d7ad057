"""What the figures of one statistics store show: which units (at most ``max_units``, spanning
the range of median ``Lambda`` at the largest ``n``), their median scale, their titles and their
rows of the fit table.

Per ``(unit, n)`` the aggregate of per-row ``Lambda`` is the median over rows, as in
:mod:`critscale.fitting`; a tied row (``Lambda = inf``) enters it, so a median is infinite exactly
when at least half the rows are tied."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from critscale.figures.canvas import quiet_nan_reductions


def median_scale(stats: xr.Dataset) -> xr.DataArray:
    """Median over rows of per-row ``Lambda``, ``(unit, n)``; ties count as ``inf``."""
    with quiet_nan_reductions():
        return stats["accumulation_scale"].load().median("row", skipna=True)


def select_units(stats: xr.Dataset, unit=None, max_units: int = 4) -> list[str]:
    """Units to draw: ``unit`` (one label or a list), or all units if there are at most
    ``max_units``, or else ``max_units`` units whose median ``Lambda`` at the largest ``n`` sits
    at evenly spaced ranks (smallest to largest, infinite last), so the panels span the store."""
    if unit is not None:
        chosen = [unit] if isinstance(unit, str) else list(unit)
        missing = sorted(set(chosen) - {str(u) for u in stats["unit"].values})
        if missing:
            raise KeyError(f"unit(s) {missing} not in the store {stats.attrs.get('source', '')!r}")
        return chosen
    labels = [str(u) for u in stats["unit"].values]
    if len(labels) <= max_units:
        return labels
    largest = median_scale(stats.isel(n=[-1])).isel(n=0).values
    order = np.argsort(np.where(np.isnan(largest), np.inf, largest), kind="stable")
    ranks = np.unique(np.round(np.linspace(0, len(order) - 1, max_units)).astype(int))
    return [labels[i] for i in order[ranks]]


def unit_title(stats: xr.Dataset, unit: str) -> str:
    source = stats.attrs.get("source", "")
    if "layer" in stats.coords and "head" in stats.coords:
        labels = stats[["layer", "head"]].sel(unit=unit)
        return f"{source}: layer {int(labels['layer'])}, head {int(labels['head'])}"
    return source if unit == source else f"{source}: {unit}"


def fit_row(fits: pd.DataFrame | None, source: str, unit: str) -> pd.Series | None:
    """The fit table's row of ``(source, unit)``, or None."""
    if fits is None or fits.empty:
        return None
    match = fits[(fits["source"].astype(str) == source) & (fits["unit"].astype(str) == unit)]
    return None if match.empty else match.iloc[0]
