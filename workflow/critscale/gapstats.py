"""Per-row gap statistics of attention scores (``shared/theory.md``, "One row").

Every quantity is computed from the sorted gaps ``D_(1) <= ... <= D_(n)`` of a row, because
every softmax property of the row depends on the row only through its gap-counting function
``N(t)``.  :func:`row_statistics` works on any array whose last axis holds the keys, so a user
can call it on their own attention matrix.

Conventions chosen where the theory is silent (also in the README):

* Masked keys (NaN or ``-inf``) are not competitors; ``+inf`` is an error.
* A tie at the maximum (``N(0) >= 2``) gives ``accumulation_scale = inf`` and ``contact_gap = 0``;
  relative-``beta`` responses are then undefined (NaN).
* A row with one valid key has ``accumulation_scale = 0``, ``contact_gap = NaN``,
  ``contact_exponent = NaN``, ``top_two_gap = 1`` and ``weight_spread = 0``.
  A row with no valid key gives NaN everywhere and ``n_keys = 0``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Terms with beta * gap above this contribute less than exp(-50) / n relative to Z >= 1:
# below float64 resolution, so truncating them changes nothing a float64 can hold.
_NEGLIGIBLE_EXPONENT = 50.0

#: Softmax-response quantities evaluated on each beta grid, in output order.
RESPONSE_NAMES = ("free_energy", "entropy", "top_two_gap", "weight_spread", "laplace_envelope")
#: Scalar per-row quantities, in output order.
SCALAR_NAMES = (
    "n_keys",
    "ties",
    "accumulation_scale",
    "contact_gap",
    "contact_exponent",
    "contact_entropy",
)


@dataclass(frozen=True)
class Grids:
    """Where the grid-valued quantities are evaluated.

    ``t``: gap values for ``N(t)``; ``resolutions``: the ``r`` of ``Lambda^(r)``; ``beta``:
    absolute inverse temperatures; ``rho``: inverse temperatures relative to each row's
    ``Lambda`` (``beta = rho * Lambda``).
    """

    t: np.ndarray
    resolutions: np.ndarray
    beta: np.ndarray
    rho: np.ndarray

    def __post_init__(self):
        for name in ("t", "resolutions", "beta", "rho"):
            values = np.atleast_1d(np.asarray(getattr(self, name), dtype=np.float64))
            if values.ndim != 1 or not np.all(np.isfinite(values)):
                raise ValueError(f"grid {name!r} must be a 1-d array of finite numbers")
            object.__setattr__(self, name, values)
        if np.any(self.t < 0) or np.any(self.resolutions < 0):
            raise ValueError("grids 't' and 'resolutions' must be >= 0")
        if np.any(self.beta < 0) or np.any(self.rho < 0):
            raise ValueError("grids 'beta' and 'rho' must be >= 0")

    @property
    def width(self) -> int:
        """Length of the packed feature vector of one row (see :func:`pack`)."""
        return (
            len(SCALAR_NAMES)
            + len(self.t)
            + len(self.resolutions)
            + len(RESPONSE_NAMES) * (len(self.beta) + len(self.rho))
        )


def sorted_gaps(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gaps ``D_j = s* - s_j`` of each row, sorted ascending, masked keys as ``+inf``.

    Returns ``(gaps, n_keys)`` with ``gaps`` of shape ``(rows, keys)`` in float64.
    """
    x = np.asarray(scores, dtype=np.float64)
    x = x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1)
    if np.isposinf(x).any():
        row = int(np.argwhere(np.isposinf(x))[0, 0])
        raise ValueError(f"scores contain +inf (first in row {row}); mask keys with NaN or -inf")
    valid = np.isfinite(x)
    n_keys = valid.sum(axis=1)
    top = np.max(np.where(valid, x, -np.inf), axis=1, initial=-np.inf)
    with np.errstate(invalid="ignore"):
        gaps = np.where(valid, top[:, None] - x, np.inf)
    gaps.sort(axis=1)
    return gaps, n_keys


def _counts_below(gaps: np.ndarray, thresholds: np.ndarray, strict: bool) -> np.ndarray:
    """Per row, how many sorted gaps are ``<= t`` (or ``< t`` if ``strict``) for each threshold.

    ``thresholds`` is ``(T,)`` shared by all rows or ``(rows, T)``.
    """
    side = "left" if strict else "right"
    thresholds = np.broadcast_to(thresholds, (gaps.shape[0], np.shape(thresholds)[-1]))
    return np.stack([np.searchsorted(g, th, side=side) for g, th in zip(gaps, thresholds)])


def _accumulation(gaps, n_keys, ties, resolutions):
    """``Lambda``, contact index and resolved scales ``Lambda^(r)`` from sorted gaps."""
    rows, width = gaps.shape
    log_count = np.log(np.arange(1, width + 1, dtype=np.float64))
    positive = (gaps > 0) & np.isfinite(gaps)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(positive, log_count / gaps, -np.inf)
    scale = ratio.max(axis=1, initial=-np.inf)
    # The sup is attained at the largest gap achieving it: last argmax along the sorted row.
    contact_index = width - 1 - np.argmax(ratio[:, ::-1] == scale[:, None], axis=1)
    resolved = np.empty((rows, len(resolutions)))
    for i, r in enumerate(resolutions):
        with np.errstate(divide="ignore", invalid="ignore"):
            vals = np.where(positive & (log_count > r), (log_count - r) / gaps, -np.inf)
        best = vals.max(axis=1, initial=-np.inf)
        best = np.where(np.log(np.maximum(ties, 1)) > r, np.inf, best)
        resolved[:, i] = np.where(np.isneginf(best), 0.0, best)
    return scale, contact_index, resolved


def _response(gaps, finite_gaps, n_keys, second_gap, last_gap, beta, cut):
    """Free energy, entropy, top-two gap, weight spread, Laplace envelope at one beta per row.

    ``beta`` is ``(rows,)``; ``cut`` is the per-row number of leading gaps that matter.
    Sums are prefix sums up to each row's own cut, so a row's result does not depend on which
    other rows share its block (chunking invariance).
    """
    rows = gaps.shape[0]
    out = np.full((rows, len(RESPONSE_NAMES)), np.nan)
    # Masked keys sort last and cut <= n_keys, so prefix sums never reach them.
    ok = np.isfinite(beta) & (n_keys > 0)
    if not ok.any():
        return out
    beta = np.where(ok, beta, 0.0)
    cut = np.where(ok, np.maximum(cut, 1), 1)
    width = int(cut.max())
    g = finite_gaps[:, :width]
    with np.errstate(invalid="ignore", over="ignore"):
        terms = np.exp(-beta[:, None] * g)
    take = (cut - 1)[:, None]
    z = np.take_along_axis(np.cumsum(terms, axis=1), take, axis=1)[:, 0]
    z1 = np.take_along_axis(np.cumsum(g * terms, axis=1), take, axis=1)[:, 0]
    free_energy = np.log(z)
    entropy = free_energy + beta * z1 / z
    top_two = np.where(n_keys >= 2, -np.expm1(-beta * second_gap), 1.0) / z
    spread = -np.expm1(-beta * last_gap) / z
    log_count = np.log(np.arange(1, width + 1, dtype=np.float64))
    with np.errstate(invalid="ignore"):
        envelope_terms = np.where(np.isfinite(gaps[:, :width]), log_count - beta[:, None] * g, -np.inf)
    envelope = envelope_terms.max(axis=1)
    out[:] = np.stack([free_energy, entropy, top_two, spread, envelope], axis=1)
    out[~ok] = np.nan
    return out


def _response_grid(gaps, finite_gaps, n_keys, second_gap, last_gap, betas):
    """Responses for a ``(rows, B)`` array of betas: ``(rows, B, len(RESPONSE_NAMES))``."""
    rows, n_beta = betas.shape
    out = np.empty((rows, n_beta, len(RESPONSE_NAMES)))
    log_n = np.log(np.maximum(n_keys, 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        # Beyond this gap exp(-beta * gap) is negligible and log N(t) - beta t < 0 = its value at 0.
        thresholds = np.where(betas > 0, (_NEGLIGIBLE_EXPONENT + log_n[:, None]) / betas, np.inf)
    cuts = _counts_below(gaps, np.nan_to_num(thresholds, nan=0.0), strict=True)
    cuts = np.minimum(np.maximum(cuts, 1), np.maximum(n_keys, 1)[:, None])
    for b in range(n_beta):
        out[:, b] = _response(gaps, finite_gaps, n_keys, second_gap, last_gap, betas[:, b], cuts[:, b])
    return out


def row_statistics(scores: np.ndarray, grids: Grids) -> dict[str, np.ndarray]:
    """All per-row quantities of ``scores`` (last axis = keys).

    Returns a dict of arrays whose leading shape is ``scores.shape[:-1]``:
    the scalars in :data:`SCALAR_NAMES`; ``gap_count`` (``N(t)`` on ``grids.t``);
    ``resolved_scale`` (on ``grids.resolutions``); and each name in :data:`RESPONSE_NAMES`
    on ``grids.beta`` plus the same with suffix ``_rel`` on ``grids.rho``.
    """
    scores = np.asarray(scores)
    lead = scores.shape[:-1]
    packed = pack(scores, grids)
    return {name: value.reshape(lead + value.shape[1:]) for name, value in unpack(packed, grids).items()}


def pack(scores: np.ndarray, grids: Grids) -> np.ndarray:
    """Per-row quantities packed into one float64 ``(rows, grids.width)`` array.

    This is the block function of the chunked stage: one array out keeps the Dask graph to one
    task per block.
    """
    gaps, n_keys = sorted_gaps(scores)
    rows = gaps.shape[0]
    ties = (gaps == 0).sum(axis=1)
    scale, contact_index, resolved = _accumulation(gaps, n_keys, ties, grids.resolutions)
    width = gaps.shape[1]
    idx = np.arange(rows)
    contact_count = contact_index + 1.0
    contact_gap = gaps[idx, contact_index]
    contact_entropy = np.log(contact_count)
    tied = ties >= 2
    scale = np.where(tied, np.inf, scale)
    contact_gap = np.where(tied, 0.0, contact_gap)
    contact_entropy = np.where(tied, np.log(np.maximum(ties, 1)), contact_entropy)
    single = n_keys == 1
    scale = np.where(single, 0.0, scale)
    contact_gap = np.where(single, np.nan, contact_gap)
    contact_entropy = np.where(single, 0.0, contact_entropy)
    with np.errstate(divide="ignore", invalid="ignore"):
        exponent = np.where(single, np.nan, contact_entropy / np.log(n_keys))
    empty = n_keys == 0
    for arr in (scale, contact_gap, contact_entropy, exponent):
        arr[empty] = np.nan
    resolved[empty] = np.nan

    gap_count = _counts_below(gaps, grids.t, strict=False).astype(np.float64)
    gap_count[empty] = 0.0

    finite_gaps = np.where(np.isfinite(gaps), gaps, 0.0)
    second_gap = finite_gaps[:, 1] if width > 1 else np.zeros(rows)  # unused below 2 keys
    last_gap = finite_gaps[idx, np.maximum(n_keys - 1, 0)]
    absolute = _response_grid(
        gaps, finite_gaps, n_keys, second_gap, last_gap, np.broadcast_to(grids.beta, (rows, len(grids.beta)))
    )
    with np.errstate(invalid="ignore"):
        rel_beta = np.where(np.isfinite(scale)[:, None], grids.rho[None, :] * scale[:, None], np.nan)
    relative = _response_grid(gaps, finite_gaps, n_keys, second_gap, last_gap, rel_beta)

    scalars = np.stack([n_keys, ties, scale, contact_gap, exponent, contact_entropy], axis=1).astype(np.float64)
    return np.concatenate(
        [
            scalars,
            gap_count,
            resolved,
            absolute.transpose(0, 2, 1).reshape(rows, -1),
            relative.transpose(0, 2, 1).reshape(rows, -1),
        ],
        axis=1,
    )


def feature_layout(grids: Grids) -> dict[str, tuple[slice, str | None]]:
    """Where each quantity sits in a packed row, and the name of its grid dimension."""
    layout: dict[str, tuple[slice, str | None]] = {}
    pos = 0

    def take(name, size, dim):
        nonlocal pos
        layout[name] = (slice(pos, pos + size) if dim else pos, dim)
        pos += size

    for name in SCALAR_NAMES:
        take(name, 1, None)
    take("gap_count", len(grids.t), "t")
    take("resolved_scale", len(grids.resolutions), "r")
    for name in RESPONSE_NAMES:
        take(name, len(grids.beta), "beta")
    for name in RESPONSE_NAMES:
        take(f"{name}_rel", len(grids.rho), "rho")
    assert pos == grids.width
    return layout


def unpack(packed: np.ndarray, grids: Grids) -> dict[str, np.ndarray]:
    """Inverse of :func:`pack`: named arrays from a packed ``(..., width)`` array."""
    out = {}
    for name, (where, _) in feature_layout(grids).items():
        value = packed[..., where]
        out[name] = value.astype(np.int64) if name in ("n_keys", "ties", "gap_count") else value
    return out
