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

# Squarings allowed in a chain exp(-2^j beta D) = exp(-beta D)^(2^j): the relative error grows
# to about 2^(j+1) ulp, so 16 keeps it below 2e-11.
_MAX_SQUARINGS = 16
# Rows per batch are chosen so that a few work arrays stay in a core's L2 cache.
_CACHE_ELEMENTS = 1 << 17

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

#: What each stored quantity is (theory.md, "One row"), and its unit.  Scores are logits, so gaps
#: are in logit units and inverse temperatures in 1 / logit units.
DESCRIPTIONS = {
    "n_keys": ("number of visible (unmasked) keys n of the row", "count"),
    "ties": ("N(0): keys tied at the maximum (>= 2 means Lambda = inf)", "count"),
    "accumulation_scale": ("upper-tail accumulation scale Lambda = sup_t log N(t) / t", "1/logit"),
    "contact_gap": ("contact gap D_Lambda: largest gap where N(D) = exp(Lambda D)", "logit"),
    "contact_exponent": ("contact accumulation exponent alpha = log N(D_Lambda) / log n", "1"),
    "contact_entropy": ("contact-count entropy C = log N(D_Lambda) = Lambda D_Lambda", "nat"),
    "gap_count": ("gap-counting function N(t) = #{j : D_j <= t} on the t grid", "count"),
    "resolved_scale": ("resolved accumulation scale Lambda^(r) = sup_{log N(t) > r} (log N(t) - r) / t", "1/logit"),
    "free_energy": ("rank free energy F(beta) = log Z(beta); max weight = exp(-F)", "nat"),
    "entropy": ("attention entropy H(beta)", "nat"),
    "top_two_gap": ("largest minus second-largest attention weight", "1"),
    "weight_spread": ("largest minus smallest attention weight G(beta)", "1"),
    "laplace_envelope": ("Laplace envelope S(beta) = sup_t (log N(t) - beta t)", "nat"),
}


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


def octave_grid(minimum: float, maximum: float, per_octave: int) -> np.ndarray:
    """Geometric grid from ``minimum`` to at least ``maximum`` with ``per_octave`` points per
    doubling, built as ``base * 2**i`` so that each point is exactly twice the one an octave
    below (what lets the responses square instead of exponentiate)."""
    if not (0 < minimum < maximum) or per_octave < 1:
        raise ValueError("octave grid needs 0 < minimum < maximum and per_octave >= 1")
    octaves = int(np.ceil(np.log2(maximum / minimum) - 1e-12))
    base = minimum * 2.0 ** (np.arange(per_octave) / per_octave)
    grid = np.concatenate([base * 2.0**i for i in range(octaves + 1)])
    return grid[grid <= maximum * (1 + 1e-12)]


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


def _gap_counts(gaps: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``N(t)`` per row: how many sorted gaps are ``<= t``, for each ``t``."""
    return np.stack([np.searchsorted(row, t, side="right") for row in gaps])


def _accumulation(gaps, n_keys, ties, resolutions):
    """``Lambda``, contact index and resolved scales ``Lambda^(r)`` from sorted gaps."""
    rows, width = gaps.shape
    log_count = np.log(np.arange(1, width + 1, dtype=np.float64))
    positive = (gaps > 0) & np.isfinite(gaps)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = np.where(positive, log_count / gaps, -np.inf)
    scale = ratio.max(axis=1, initial=-np.inf)
    # The sup is attained at the largest gap achieving it: last argmax along the sorted row.
    contact_index = width - 1 - np.argmax(ratio[:, ::-1] == scale[:, None], axis=1)
    # Lambda^(r) = max_k (log k - r) / D_(k) over positive gaps with log k > r, else 0: with
    # 1 / D set to 0 where D is 0 or masked, the excluded terms are <= 0 and the max clips at 0.
    with np.errstate(divide="ignore", over="ignore"):  # a subnormal gap: 1 / D overflows
        inverse = np.where(positive, np.minimum(1.0 / gaps, np.finfo(np.float64).max), 0.0)
    resolved = np.empty((rows, len(resolutions)))
    for i, r in enumerate(resolutions):
        best = np.maximum(np.max((log_count - r) * inverse, axis=1, initial=0.0), 0.0)
        resolved[:, i] = np.where(np.log(np.maximum(ties, 1)) > r, np.inf, best)
    return scale, contact_index, resolved


def doubling_parents(grid: np.ndarray, max_chain: int = _MAX_SQUARINGS) -> np.ndarray:
    """For each grid point, an earlier point at exactly half its value (or -1).

    ``exp(-2 beta D) = exp(-beta D)**2``: one multiplication instead of an exponential, which is
    25 times dearer here.  Each squaring doubles the relative rounding error, so chains are cut
    after ``max_chain`` squarings (error below ``2**max_chain`` ulp).
    """
    parents = np.full(len(grid), -1)
    depth = np.zeros(len(grid), dtype=int)
    for b, value in enumerate(grid):
        halves = np.flatnonzero((2.0 * grid[:b] == value) & (value > 0))
        if halves.size and depth[halves[0]] < max_chain:
            parents[b] = halves[0]
            depth[b] = depth[halves[0]] + 1
    return parents


def _response_grid(gaps, finite_gaps, n_keys, second_gap, last_gap, grid, scale):
    """Responses at ``beta = grid * scale`` (per row): ``(rows, len(grid), len(RESPONSE_NAMES))``.

    Sums run over the full row width in a fixed order and the envelope is an exact max, so a row's
    result does not depend on which other rows share its block (chunking invariance).
    """
    rows, width = gaps.shape
    order = np.argsort(grid, kind="stable")
    parents = doubling_parents(grid[order])
    out = np.full((rows, len(grid), len(RESPONSE_NAMES)), np.nan)
    batch = max(1, _CACHE_ELEMENTS // max(width, 1))
    counts = np.broadcast_to(np.arange(1, width + 1, dtype=np.float64), (min(batch, rows), width)).copy()
    for start in range(0, rows, batch):
        part = slice(start, start + batch)
        g, gf, keys = gaps[part], finite_gaps[part], n_keys[part]
        index = np.arange(len(g))
        betas = grid[None, :] * scale[part, None]
        valid = np.isfinite(betas) & (keys[:, None] > 0)
        work = np.empty_like(g)
        children = np.bincount(parents[parents >= 0], minlength=len(grid))
        kept = {}
        # As beta grows the maximiser of log N(t) - beta t moves to smaller gaps, so the envelope
        # at the next beta only needs the columns up to the current maximiser.
        envelope_width = width
        for position, b in enumerate(order):
            beta = betas[:, b]
            parent = parents[position]
            if parent >= 0:
                terms = np.multiply(kept[parent], kept[parent])
                children[parent] -= 1
                if not children[parent]:
                    del kept[parent]
            else:
                with np.errstate(invalid="ignore"):
                    terms = np.exp(np.multiply(g, -beta[:, None]))
            if children[position]:
                kept[position] = terms
            # The top key contributes exactly 1; summing the rest apart keeps F = log1p(rest)
            # accurate when the other keys carry almost nothing (F ~ 1e-9 at large beta).
            rest = terms[:, 1:].sum(axis=1)
            z = 1.0 + rest
            z1 = np.vecdot(terms, gf)
            # S(beta) = sup_t log N(t) - beta t = log max_k k exp(-beta D_(k)).
            head = np.multiply(terms[:, :envelope_width], counts[: len(g), :envelope_width], out=work[:, :envelope_width])
            argmax = head.argmax(axis=1)
            peak = head[index, argmax]
            if np.all((beta > 0) | ~valid[:, b]):  # beta = 0 rows are handled below
                envelope_width = int(argmax.max()) + 1
            view = out[part, b]
            with np.errstate(divide="ignore", invalid="ignore"):
                view[:, 0] = np.log1p(rest)
                view[:, 1] = view[:, 0] + beta * z1 / z
                view[:, 2] = np.where(keys >= 2, -np.expm1(-beta * second_gap[part]), 1.0) / z
                view[:, 3] = -np.expm1(-beta * last_gap[part]) / z
                view[:, 4] = np.log(peak)
            # beta = 0: uniform weights (exp(-0 * inf) above is NaN for masked keys).
            uniform = beta == 0
            if uniform.any():
                log_n = np.log(np.maximum(keys[uniform], 1))
                view[uniform] = np.stack(
                    [log_n, log_n, (keys[uniform] == 1).astype(float), np.zeros_like(log_n), log_n], axis=1
                )
            view[~valid[:, b]] = np.nan
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

    gap_count = _gap_counts(gaps, grids.t).astype(np.float64)
    gap_count[empty] = 0.0

    finite_gaps = np.where(np.isfinite(gaps), gaps, 0.0)
    second_gap = finite_gaps[:, 1] if width > 1 else np.zeros(rows)  # unused below 2 keys
    last_gap = finite_gaps[idx, np.maximum(n_keys - 1, 0)]
    absolute = _response_grid(gaps, finite_gaps, n_keys, second_gap, last_gap, grids.beta, np.ones(rows))
    relative_scale = np.where(np.isfinite(scale), scale, np.nan)  # ties: relative beta undefined
    relative = _response_grid(gaps, finite_gaps, n_keys, second_gap, last_gap, grids.rho, relative_scale)

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
