"""Statistics stores with known exponents, built directly with xarray (no scores needed)."""

from __future__ import annotations

import numpy as np
import xarray as xr

LADDER = (2**6, 2**8, 2**10, 2**12, 2**14, 2**16)


def stats_from_rows(
    accumulation_scale,
    n_ladder=LADDER,
    sequence=None,
    contact_exponent=None,
    contact_gap=None,
    ties=None,
    units=None,
    layer=None,
    head=None,
    source="synthetic",
    kind="family",
) -> xr.Dataset:
    """A statistics store from ``(unit, n, row)`` arrays; ``alpha`` defaults to 0.5 and
    ``D_Lambda`` to ``alpha log n / Lambda`` (the identity ``Lambda = alpha log n / D``)."""
    accumulation_scale = np.asarray(accumulation_scale, dtype=np.float64)
    n_units, n_lengths, n_rows = accumulation_scale.shape
    log_n = np.log(np.asarray(n_ladder, dtype=np.float64))[None, :, None]
    if contact_exponent is None:
        contact_exponent = np.full(accumulation_scale.shape, 0.5)
    if contact_gap is None:
        with np.errstate(divide="ignore"):
            contact_gap = contact_exponent * log_n / accumulation_scale
    if ties is None:
        ties = np.where(np.isposinf(accumulation_scale), 2, 1)
    coords = {
        "unit": [f"u{i}" for i in range(n_units)] if units is None else list(units),
        "n": np.asarray(n_ladder, dtype=np.int64),
        "row": np.arange(n_rows),
        "sequence": ("row", np.arange(n_rows) if sequence is None else np.asarray(sequence)),
        "query": ("row", np.zeros(n_rows, dtype=np.int64)),
    }
    if layer is not None:
        coords["layer"] = ("unit", np.asarray(layer))
        coords["head"] = ("unit", np.asarray(head))
    dims = ("unit", "n", "row")
    data = {
        "accumulation_scale": (dims, accumulation_scale),
        "contact_exponent": (dims, np.asarray(contact_exponent, dtype=np.float64)),
        "contact_gap": (dims, np.asarray(contact_gap, dtype=np.float64)),
        "ties": (dims, np.asarray(ties, dtype=np.int64)),
        "n_keys": (dims, np.broadcast_to(np.asarray(n_ladder)[None, :, None], accumulation_scale.shape)),
    }
    return xr.Dataset(data, coords=coords, attrs={"source": source, "kind": kind, "provenance": "{}"})


def log_law_stats(
    exponents,
    n_sequences=64,
    rows_per_sequence=1,
    sigma=0.3,
    seed=0,
    n_ladder=LADDER,
    identical_within_sequence=False,
    **kwargs,
) -> xr.Dataset:
    """``Lambda = (log n)^xi * lognormal(0, sigma)`` per row, one unit per exponent, so the median
    ``Lambda_n`` follows ``(log n)^xi`` exactly in expectation.  With
    ``identical_within_sequence`` all rows of a sequence share one noise draw (at every n)."""
    rng = np.random.default_rng(seed)
    exponents = np.asarray(exponents, dtype=np.float64)
    n_rows = n_sequences * rows_per_sequence
    sequence = np.repeat(np.arange(n_sequences), rows_per_sequence)
    if identical_within_sequence:
        noise = rng.normal(0, sigma, (len(exponents), len(n_ladder), n_sequences))[..., sequence]
    else:
        noise = rng.normal(0, sigma, (len(exponents), len(n_ladder), n_rows))
    log_log_n = np.log(np.log(np.asarray(n_ladder, dtype=np.float64)))
    scale = np.exp(exponents[:, None, None] * log_log_n[None, :, None] + noise)
    return stats_from_rows(scale, n_ladder=n_ladder, sequence=sequence, **kwargs)
