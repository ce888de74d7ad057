"""Per-row gap statistics of attention scores (``docs/theory.md``, "One row").

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
* Input: any integer or floating array with at least one axis; complex, string, object or
  boolean scores are a ``ValueError``.  Zero rows give empty results (leading shape kept); zero
  keys give rows with no valid key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import rowsort
from .kernels import fill_rows, gaps_of_sorted

# Squarings allowed in a chain exp(-2^j beta D) = exp(-beta D)^(2^j): the relative error grows
# to about 2^(j+1) ulp, so 16 keeps it below 2e-11.
_MAX_SQUARINGS = 16
# Scores sorted at a time by pack() (1 MiB of float32): a sorted copy of a whole large input would
# be fresh memory, whose first touch (and the kernel's compaction of huge pages) cost more than
# the sort.
_SORTED_ELEMENTS = 2**18

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
        object.__setattr__(self, "_chains", {name: doubling_chains(getattr(self, name)) for name in ("beta", "rho")})

    @classmethod
    def from_config(cls, g: dict) -> Grids:
        """The grids of the ``grids`` section of a study config (``t`` as a linspace, ``beta`` and
        ``rho`` as octave grids, see config.schema.yaml)."""
        return cls(
            t=np.linspace(g["t"]["start"], g["t"]["stop"], g["t"]["num"]),
            resolutions=np.asarray(g["resolutions"], dtype=float),
            beta=octave_grid(g["beta"]["min"], g["beta"]["max"], g["beta"]["per_octave"]),
            rho=octave_grid(g["rho"]["min"], g["rho"]["max"], g["rho"]["per_octave"]),
        )

    def chains(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:func:`doubling_chains` of grid ``name`` (``beta`` or ``rho``)."""
        return self._chains[name]

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


#: Every integer of magnitude up to 2**53 converts to float64 exactly; beyond it neighbours merge.
FLOAT64_EXACT_INTEGERS = 2**53


def _refuse_inexact_integers(x: np.ndarray) -> None:
    """A clear error for integers float64 cannot hold exactly: converting them would silently
    merge distinct scores into ties (two maxima, Lambda = inf).  A min/max check, so cheap."""
    if not np.issubdtype(x.dtype, np.integer) or x.size == 0:
        return
    low, high = int(x.min()), int(x.max())
    if max(-low, high) > FLOAT64_EXACT_INTEGERS:
        raise ValueError(
            f"integer scores range over [{low}, {high}]: exact integers beyond 2^53 in magnitude cannot be "
            "represented in float64, so distinct scores would merge into ties; rescale them or pass floats"
        )


def _as_rows(scores) -> np.ndarray:
    """Scores as a ``(rows, keys)`` float array (float32 kept: its sort is faster and its gaps
    are computed in float64 all the same); a clear error for what is not real numbers or
    holds ``+inf``."""
    x = np.asarray(scores)
    if x.dtype == bool or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise ValueError(
            f"scores must be real numbers (integer or floating dtype), got dtype {x.dtype}; "
            "complex, string, object and boolean arrays are not accepted"
        )
    if x.ndim == 0:
        raise ValueError("scores must have at least one axis (the last axis holds the keys), got a scalar")
    _refuse_inexact_integers(x)
    exact = np.float32 if x.dtype in (np.float16, np.float32) else np.float64
    x = x.astype(exact, copy=False).reshape(math.prod(x.shape[:-1]), x.shape[-1])
    if np.isposinf(x).any():
        row = int(np.argwhere(np.isposinf(x))[0, 0])
        raise ValueError(f"scores contain +inf (first in row {row}); mask keys with NaN or -inf")
    return x


def sorted_gaps(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gaps ``D_j = s* - s_j`` of each row, sorted ascending, masked keys as ``+inf``.

    Returns ``(gaps, n_keys)`` with ``gaps`` of shape ``(rows, keys)`` in float64.  Zero rows give
    empty results; zero keys give rows with no visible key (``n_keys = 0``).
    """
    ascending = rowsort.ascending(_as_rows(scores))
    gaps = np.empty(ascending.shape)
    n_keys = np.empty(len(ascending), dtype=np.int64)
    gaps_of_sorted(ascending, gaps, n_keys)
    return gaps, n_keys


def doubling_parents(grid: np.ndarray, max_chain: int = _MAX_SQUARINGS) -> np.ndarray:
    """For each grid point, an earlier point at exactly half its value (or -1).

    ``exp(-2 beta D) = exp(-beta D)**2``: one multiplication instead of an exponential.  Each
    squaring doubles the relative rounding error, so chains are cut after ``max_chain``
    squarings (error below ``2**max_chain`` ulp).
    """
    parents = np.full(len(grid), -1)
    depth = np.zeros(len(grid), dtype=int)
    for b, value in enumerate(grid):
        halves = np.flatnonzero((2.0 * grid[:b] == value) & (value > 0))
        if halves.size and depth[halves[0]] < max_chain:
            parents[b] = halves[0]
            depth[b] = depth[halves[0]] + 1
    return parents


def doubling_chains(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The grid as chains ``beta, 2 beta, 4 beta, ...`` for the kernel.

    Returns ``(order, starts, nodes)``: ``order`` visits the grid ascending; chain ``c`` is
    ``nodes[starts[c]:starts[c + 1]]`` (indices into ``grid``), each point exactly twice the one
    before.  A point whose half already has a successor (a repeated value) starts a new chain.
    """
    order = np.argsort(grid, kind="stable")
    parents = doubling_parents(grid[order])
    chains: list[list[int]] = []
    chain_of: dict[int, int] = {}
    for position, parent in enumerate(parents):
        if parent >= 0 and chains[chain_of[parent]][-1] == order[parent]:
            chain_of[position] = chain_of[parent]
        else:
            chain_of[position] = len(chains)
            chains.append([])
        chains[chain_of[position]].append(int(order[position]))
    starts = np.cumsum([0] + [len(c) for c in chains]).astype(np.int64)
    nodes = np.array([b for c in chains for b in c], dtype=np.int64)
    return order.astype(np.int64), starts, nodes


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
    task per block.  The work is done by the compiled kernel :func:`critscale.kernels.fill_rows`.
    """
    rows = _as_rows(scores)
    out = np.full((rows.shape[0], grids.width), np.nan)
    batch = max(1, _SORTED_ELEMENTS // max(rows.shape[1], 1))
    for start in range(0, rows.shape[0], batch):
        ascending = rowsort.ascending(rows[start : start + batch])
        fill_rows(ascending, grids.t, grids.resolutions, grids.beta, *grids.chains("beta"),
                  grids.rho, *grids.chains("rho"), out[start : start + batch])
    return out


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
