"""Compiled per-row kernel of :mod:`critscale.gapstats` (numba).

One call fills the packed feature vectors of a batch of rows whose gaps are already sorted.  Per
row, in this order and only from the row itself:

* one pass over the sorted gaps gives ``N(0)``, ``Lambda`` with its contact index and every
  resolved scale ``Lambda^(r)``;
* ``N(t)`` by binary search;
* the Laplace envelope ``S(beta) = max_k (log N(D_(k)) - beta D_(k))`` from the upper concave
  hull of the points ``(D_(k), log N(D_(k)))``: the maximiser moves left along the hull as beta
  grows, so one hull pass and one walk serve every beta of a grid, with no exponential at all;
* the softmax responses from ``Z`` and ``Z' = sum exp(-beta D) D``: for each chain of a grid
  (``beta, 2 beta, 4 beta, ...``) the row is walked once, each term computed by one ``exp`` at the
  chain's first beta and squared up the chain in registers.  Terms only shrink along a sorted
  row, so a level stops once the terms left cannot change its sums (relative ``2**-56``).

Every sum runs over the row in key order with scalar additions, so a row's result does not depend
on the rows beside it, the memory alignment, the chunking, the scheduler or the number of cores.

Compiled once per machine: ``cache=True`` stores the machine code in ``__pycache__`` next to this
file, or, when that folder is not writable (a read-only install), in numba's per-user cache
(``NUMBA_CACHE_DIR`` chooses another place).
"""

from __future__ import annotations

import numpy as np
from numba import njit

# A level of a chain stops once the sum of every term left is below this fraction of its sums.
_TAIL = 2.0**-56
_BIG = np.finfo(np.float64).max


@njit(cache=True, nogil=True)
def _scalars(gaps, m, log_count, resolutions, resolved):
    """Scalars of one row and its resolved scales (into ``resolved``); returns the scalars
    ``(ties, Lambda, D_Lambda, alpha, C)`` with the conventions of :mod:`critscale.gapstats`."""
    nan = np.nan
    ties = 0
    while ties < m and gaps[ties] == 0.0:
        ties += 1
    if m == 0:
        resolved[:] = nan
        return 0, nan, nan, nan, nan
    scale = -np.inf
    contact = m - 1
    resolved[:] = 0.0
    for k in range(ties, m):  # positive gaps only
        ratio = log_count[k] / gaps[k]
        if ratio >= scale:  # >=: the sup is attained at the largest gap achieving it
            scale = ratio
            contact = k
        # 1 / D capped so that a subnormal gap times (log k - r) = 0 stays 0, never NaN
        inverse = min(1.0 / gaps[k], _BIG)
        for i in range(len(resolutions)):
            value = (log_count[k] - resolutions[i]) * inverse
            if value > resolved[i]:
                resolved[i] = value
    log_ties = np.log(max(ties, 1))
    for i in range(len(resolutions)):
        if log_ties > resolutions[i]:
            resolved[i] = np.inf
    if m == 1:
        return ties, 0.0, nan, nan, 0.0
    if ties >= 2:
        return ties, np.inf, 0.0, log_ties / np.log(m), log_ties
    entropy = np.log(contact + 1.0)
    return ties, scale, gaps[contact], entropy / np.log(m), entropy


@njit(cache=True, nogil=True)
def _upper_hull(gaps, m, log_count, hull):
    """Indices of the upper concave hull of ``(D_(k), log N(D_(k)))`` into ``hull``; returns its
    length.  Of tied gaps only the last (largest count) can be on it."""
    size = 0
    for k in range(m):
        if k + 1 < m and gaps[k + 1] == gaps[k]:
            continue
        x, y = gaps[k], log_count[k]
        while size >= 2:
            a, b = hull[size - 2], hull[size - 1]
            # drop b when it is not strictly above the segment from a to the new point
            if (log_count[b] - log_count[a]) * (x - gaps[a]) <= (y - log_count[a]) * (gaps[b] - gaps[a]):
                size -= 1
            else:
                break
        hull[size] = k
        size += 1
    return size


@njit(cache=True, nogil=True)
def _envelope(gaps, log_count, hull, size, betas, order, out, at, stride):
    """``S(beta)`` at every beta (visited in ascending ``order``): the maximiser walks left."""
    j = size - 1
    for b in order:
        beta = betas[b]
        if not np.isfinite(beta):
            continue
        while j > 0 and log_count[hull[j - 1]] - beta * gaps[hull[j - 1]] >= log_count[hull[j]] - beta * gaps[hull[j]]:
            j -= 1
        out[at + 4 * stride + b] = log_count[hull[j]] - beta * gaps[hull[j]]


@njit(cache=True, nogil=True)
def _chain_sums(gaps, m, beta, levels, rest, first):
    """``rest[l] = sum_{k>=1} exp(-2^l beta D_(k))`` and ``first[l]`` the same weighted by
    ``D_(k)``, for ``l < levels``: one ``exp`` per key, squared up the chain."""
    rest[:levels] = 0.0
    first[:levels] = 0.0
    depth = levels
    last_gap = gaps[m - 1] if m > 0 else 0.0
    reach = max(last_gap, 1.0)
    for k in range(1, m):
        if depth == 0:
            break
        g = gaps[k]
        term = np.exp(-beta * g)
        for level in range(depth):
            rest[level] += term
            first[level] += term * g
            if level + 1 < depth:
                term *= term
        # every later term is <= this one (gaps sorted): stop the top level when its tail is negligible
        tail = (m - 1 - k) * term
        top = depth - 1
        if tail <= _TAIL * rest[top] and tail * reach <= _TAIL * first[top]:
            depth -= 1


@njit(cache=True, nogil=True)
def _responses(gaps, m, grid, scale, chain_start, chain_nodes, rest, first, out, at):
    """Softmax responses at ``beta = grid * scale`` into ``out[at:]`` (``RESPONSE_NAMES`` order,
    one block of ``len(grid)`` per name); the envelope is written by :func:`_envelope`."""
    stride = len(grid)
    log_n = np.log(max(m, 1))
    second_gap = gaps[1] if m >= 2 else 0.0
    last_gap = gaps[m - 1] if m > 0 else 0.0
    for c in range(len(chain_start) - 1):
        nodes = chain_nodes[chain_start[c] : chain_start[c + 1]]
        beta0 = grid[nodes[0]] * scale
        if m == 0 or not np.isfinite(beta0):
            continue  # NaN stays
        if beta0 == 0.0:  # uniform weights (beta = 0, or Lambda = 0 for one key: the whole chain)
            for b in nodes:
                out[at + b] = log_n
                out[at + stride + b] = log_n
                out[at + 2 * stride + b] = 1.0 if m == 1 else 0.0
                out[at + 3 * stride + b] = 0.0
            continue
        _chain_sums(gaps, m, beta0, len(nodes), rest, first)
        beta = beta0
        for level in range(len(nodes)):
            b = nodes[level]
            z = 1.0 + rest[level]  # the top key contributes exactly 1
            free = np.log1p(rest[level])  # accurate when the other keys carry almost nothing
            out[at + b] = free
            out[at + stride + b] = free + beta * first[level] / z
            out[at + 2 * stride + b] = (-np.expm1(-beta * second_gap) if m >= 2 else 1.0) / z
            out[at + 3 * stride + b] = -np.expm1(-beta * last_gap) / z
            beta = beta * 2.0


@njit(cache=True, nogil=True)
def fill_rows(gaps, n_keys, t, resolutions, beta, beta_order, beta_chains, beta_nodes,
              rho, rho_order, rho_chains, rho_nodes, out):
    """Packed statistics (layout of :func:`critscale.gapstats.feature_layout`) of rows whose
    gaps are sorted ascending with masked keys last; ``out`` must be filled with NaN."""
    rows, width = gaps.shape
    log_count = np.log(np.arange(1, width + 1).astype(np.float64))
    resolved = np.empty(len(resolutions))
    hull = np.empty(max(width, 1), dtype=np.int64)
    longest = max(np.diff(beta_chains).max() if len(beta) else 0, np.diff(rho_chains).max() if len(rho) else 0)
    rest = np.empty(max(longest, 1))
    first = np.empty(max(longest, 1))
    at_t = 6
    at_r = at_t + len(t)
    at_beta = at_r + len(resolutions)
    at_rho = at_beta + 5 * len(beta)
    for i in range(rows):
        row = gaps[i]
        m = n_keys[i]
        ties, scale, contact_gap, exponent, entropy = _scalars(row, m, log_count, resolutions, resolved)
        o = out[i]
        o[0] = m
        o[1] = ties
        o[2] = scale
        o[3] = contact_gap
        o[4] = exponent
        o[5] = entropy
        for j in range(len(t)):
            o[at_t + j] = np.searchsorted(row[:m], t[j], side="right")
        o[at_r : at_r + len(resolutions)] = resolved
        if m == 0:
            continue
        relative = scale if np.isfinite(scale) else np.nan  # ties: relative beta undefined
        _responses(row, m, beta, 1.0, beta_chains, beta_nodes, rest, first, o, at_beta)
        _responses(row, m, rho, relative, rho_chains, rho_nodes, rest, first, o, at_rho)
        size = _upper_hull(row, m, log_count, hull)
        _envelope(row, log_count, hull, size, beta, beta_order, o, at_beta, len(beta))
        _envelope(row, log_count, hull, size, rho * relative, rho_order, o, at_rho, len(rho))
