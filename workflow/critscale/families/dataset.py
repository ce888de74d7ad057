"""A family's lazy score dataset in the canonical layout of :mod:`critscale.storage`, with its
finite-``n`` predictions and asymptote."""

from __future__ import annotations

import json

import dask
import dask.array as da
import numpy as np
import xarray as xr

from critscale import storage
from critscale.families.base import ScoreFamily
from critscale.families.predictions import median_interval_levels, predict_accumulation_scale
from critscale.families.rows import generate_rows
from critscale.families.spec import parse_spec

#: Quantile levels always stored in ``predicted_accumulation_scale``; the levels that bracket the
#: median of the store's rows (:func:`median_interval_levels`) are added per dataset.
PREDICTION_QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)


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

    ``spec`` is the config entry ``{family, params, sampling}`` (see
    :func:`critscale.families.spec.parse_spec`); ``rows`` is the number of rows per ``n``.  One
    Dask task per ``(n, row chunk)`` block (the key axis is one chunk).  Besides ``scores``:
    ``predicted_accumulation_scale(n, prediction_quantile)`` (finite-``n`` prediction for rows
    stored in ``dtype``, one Dask task per ``n``) and ``asymptotic_accumulation_scale(n)``.  Its
    levels are ``quantiles``, the median and the levels that bracket the median of ``rows`` rows
    (:func:`median_interval_levels`, used by :func:`critscale.theory_check.compare_with_theory`).
    The quantile dimension is not called ``quantile`` because the statistics stage adds its own
    ``quantile`` coordinate; two different sets of levels on one name would silently be aligned
    to NaN.
    """
    family, sampling = parse_spec(spec)
    n_ladder = _checked_ladder(n_ladder)
    rows, row_chunk, dtype = int(rows), max(1, int(row_chunk)), np.dtype(dtype)
    levels = sorted({float(q) for q in quantiles} | {0.5} | set(median_interval_levels(rows, prediction_draws)))
    return xr.Dataset(
        {
            "scores": (storage.SCORE_DIMS, _lazy_scores(family, sampling, n_ladder, rows, row_chunk, seed, dtype)),
            "predicted_accumulation_scale": (
                ("n", "prediction_quantile"),
                _lazy_predictions(family, sampling, n_ladder, levels, prediction_draws, seed, dtype),
            ),
            "asymptotic_accumulation_scale": (("n",), family.asymptotic_accumulation_scale(n_ladder)),
        },
        coords={
            "unit": ("unit", np.asarray([name], dtype=object)),
            "n": ("n", np.asarray(n_ladder, dtype=np.int64)),
            "row": ("row", np.arange(rows)),
            "key": ("key", np.arange(n_ladder[-1])),
            "sequence": ("row", np.arange(rows)),
            "query": ("row", np.zeros(rows, dtype=np.int64)),
            "prediction_quantile": ("prediction_quantile", np.asarray(levels)),
        },
        attrs={
            "source": name,
            "kind": "family",
            "family": family.name,
            "sampling": sampling,
            "params": json.dumps(family.params, sort_keys=True),
            "seed": int(seed),
            "prediction_draws": int(prediction_draws),
            "asymptotic_xi": float(family.asymptotic_xi),
            "provenance": storage.provenance(spec),
        },
    )


def _checked_ladder(n_ladder) -> list[int]:
    n_ladder = [int(n) for n in n_ladder]
    if not n_ladder or sorted(set(n_ladder)) != n_ladder or n_ladder[0] < 1:
        raise ValueError(f"n_ladder must be strictly increasing positive integers, got {n_ladder}")
    return n_ladder


def _score_block(family, params, sampling, n, rows, seed, width, dtype) -> np.ndarray:
    block = np.full((1, 1, len(rows), width), np.nan, dtype=dtype)
    block[0, 0, :, :n] = generate_rows(family, params, sampling, n, rows, seed)
    return block


def _lazy_scores(family: ScoreFamily, sampling, n_ladder, rows, row_chunk, seed, dtype) -> da.Array:
    """``(unit, n, row, key)`` scores, NaN beyond each ``n``: one task per ``(n, row chunk)``."""
    width = n_ladder[-1]
    per_n = []
    for n in n_ladder:
        blocks = []
        for start in range(0, rows, row_chunk):
            chunk_rows = np.arange(start, min(rows, start + row_chunk))
            task = dask.delayed(_score_block, pure=True)(
                family.name, family.params, sampling, n, chunk_rows, seed, width, dtype
            )
            blocks.append(da.from_delayed(task, shape=(1, 1, len(chunk_rows), width), dtype=dtype))
        per_n.append(da.concatenate(blocks, axis=2))
    return da.concatenate(per_n, axis=1)


def _lazy_predictions(family: ScoreFamily, sampling, n_ladder, levels, draws, seed, dtype) -> da.Array:
    """``(n, level)`` predicted quantiles of per-row ``Lambda_n``: one task per ``n``."""
    return da.stack(
        [
            da.from_delayed(
                dask.delayed(predict_accumulation_scale, pure=True)(
                    family.name, family.params, sampling, n, draws, seed, levels, dtype.name
                ),
                shape=(len(levels),),
                dtype=np.float64,
            )
            for n in n_ladder
        ]
    )
