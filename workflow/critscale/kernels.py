"""Compiled per-row kernel of :mod:`critscale.gapstats` (numba).

One call fills the packed feature vectors of a batch of rows whose scores are sorted ascending
(``np.sort``: float32 sorts twice as fast as float64 and the gaps are taken in float64 here all
the same).  Per row, in this order and only from the row itself:

* the gaps ``D_(k)``, ascending, from the sorted scores;
* one pass over them gives ``N(0)``, ``Lambda`` with its contact index and every resolved scale
  ``Lambda^(r)`` (a division only where a maximum can move);
* ``N(t)`` by binary search;
* the Laplace envelope ``S(beta) = max_k (log N(D_(k)) - beta D_(k))`` from the upper concave
  hull of the points ``(D_(k), log N(D_(k)))``: the maximiser moves left along the hull as beta
  grows, so one hull pass and one walk serve every beta of a grid, with no exponential at all;
* the softmax responses from ``Z`` and ``Z' = sum exp(-beta D) D``: for each chain of a grid
  (``beta, 2 beta, 4 beta, ...``) one exponential per key at the chain's first beta (an inlined
  ``exp`` the compiler vectorises), then level by level a sum over the keys that squares the terms
  in place for the next level.  Terms only shrink along a sorted row, so each level sums only as
  far as the terms left can change its sums (relative ``2**-56``), and the next level no further.

Every sum runs over the row's keys in an order fixed by this code (four interleaved lanes, then
the rest in key order; no ``fastmath`` reassociation), so a row's result does not depend on the
rows beside it, the memory alignment, the chunking, the scheduler or the number of cores.  Rows
run one after another: the Dask stage runs blocks in parallel, and a ``prange`` inside its tasks
would oversubscribe the cores (numba's default threading layer is not even safe to call from
several threads at once).

Compiled once per machine: ``cache=True`` stores the machine code in ``__pycache__`` next to this
file, or, when that folder is not writable (a read-only install), in numba's per-user cache
(``NUMBA_CACHE_DIR`` chooses another place).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# A level of a chain stops once the sum of every term left is below this fraction of its sums.
_TAIL = 2.0**-56
_NEAR = 1.0 - 2.0**-50  # a product this close below a bound may still be a new maximum
# exp(x) = 2**n exp(r), x = n log 2 + r: Cody-Waite split of log 2 (n * _LN2_HI is exact) and the
# Taylor series of exp(r) to degree 13 (truncation below 1e-17 for |r| <= log(2) / 2).
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_SHIFT = 6755399441055744.0  # 1.5 * 2**52
_SHIFT_BITS = int(np.array([_SHIFT]).view(np.int64)[0])
_C1, _C2, _C3, _C4, _C5, _C6, _C7, _C8, _C9, _C10, _C11, _C12, _C13 = (1.0 / math.factorial(i) for i in range(1, 14))


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
        # Divide only where a maximum can move: the products are within 2 ulp of the ratios.
        # Once a subnormal gap has made the scale inf, inf * gap hides the later gaps whose ratio
        # is inf too; the contact is the largest of them (as the reference), so divide there.
        if scale == np.inf or log_count[k] >= scale * gaps[k] * _NEAR:
            ratio = log_count[k] / gaps[k]
            if ratio >= scale:  # >=: the sup is attained at the largest gap achieving it
                scale = ratio
                contact = k
        for i in range(len(resolutions)):
            excess = log_count[k] - resolutions[i]
            if excess > resolved[i] * gaps[k] * _NEAR:
                # excess > 0 here, so a gap whose reciprocal overflows gives inf (as the reference), never NaN
                value = excess * (1.0 / gaps[k])
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
def _exp_neg(beta, gaps, stop, terms, work):
    """``terms[k] = exp(-beta D_(k))`` for ``k < stop`` within 1 ulp, in loops the compiler
    vectorises (a libm ``exp`` call per key is three times dearer).  Terms below
    ``exp(-708)`` become ``exp(-708)``-sized or 0: far below anything the sums can see next to the
    top key's 1."""
    for k in range(stop):
        x = max(-beta * gaps[k], -708.0)
        shifted = x * _LOG2E + _SHIFT  # rounds x / log 2 to the integer held in its low bits
        work[k] = shifted
        n = shifted - _SHIFT
        r = (x - n * _LN2_HI) - n * _LN2_LO  # |r| <= log(2) / 2
        p = ((((_C13 * r + _C12) * r + _C11) * r + _C10) * r + _C9) * r + _C8
        p = ((((((p * r + _C7) * r + _C6) * r + _C5) * r + _C4) * r + _C3) * r + _C2) * r + _C1
        terms[k] = p * r + 1.0
    bits = work[:stop].view(np.int64)
    for k in range(stop):  # 2**n from the integer in the low bits
        bits[k] = (bits[k] - _SHIFT_BITS + 1023) << 52
    for k in range(stop):
        terms[k] *= work[k]


@njit(cache=True, nogil=True)
def _cutoff(terms, gaps, m, stop, ties, reach):
    """Smallest ``K <= stop`` whose tail ``sum_{k >= K}`` is below ``_TAIL`` of the sums: every
    later term is ``<= terms[K]`` (gaps sorted), so the tails are at most ``(m - K) terms[K]``
    (and times the largest gap for the weighted sum), against lower bounds of the sums."""
    low_rest = terms[1]
    low_first = terms[ties] * gaps[ties] if ties < m else 0.0
    lo, hi = 1, stop
    while lo < hi:
        mid = (lo + hi) // 2
        tail = (m - mid) * terms[mid]
        if tail <= _TAIL * low_rest and tail * reach <= _TAIL * low_first:
            hi = mid
        else:
            lo = mid + 1
    return lo


@njit(cache=True, nogil=True)
def _lane_sums(terms, gaps, stop, square):
    """``(sum terms[:stop], sum terms[:stop] * gaps[:stop])`` in four fixed interleaved lanes
    (the compiler may keep them in one vector register, the order is the code's), squaring the
    terms in place for the next level of the chain when ``square``."""
    a0 = a1 = a2 = a3 = 0.0
    b0 = b1 = b2 = b3 = 0.0
    k = 0
    while k + 4 <= stop:
        t0, t1, t2, t3 = terms[k], terms[k + 1], terms[k + 2], terms[k + 3]
        a0 += t0
        a1 += t1
        a2 += t2
        a3 += t3
        b0 += t0 * gaps[k]
        b1 += t1 * gaps[k + 1]
        b2 += t2 * gaps[k + 2]
        b3 += t3 * gaps[k + 3]
        if square:
            terms[k], terms[k + 1], terms[k + 2], terms[k + 3] = t0 * t0, t1 * t1, t2 * t2, t3 * t3
        k += 4
    a = (a0 + a1) + (a2 + a3)
    b = (b0 + b1) + (b2 + b3)
    while k < stop:
        t = terms[k]
        a += t
        b += t * gaps[k]
        if square:
            terms[k] = t * t
        k += 1
    return a, b


@njit(cache=True, nogil=True)
def _chain_sums(gaps, m, ties, beta, levels, rest, first, terms, work):
    """``rest[l] = sum_{k>=1} exp(-2^l beta D_(k))`` and ``first[l]`` the same weighted by
    ``D_(k)``, for ``l < levels``: one exponential per key, squared up the chain, each level
    summed only as far as its terms matter."""
    _exp_neg(beta, gaps, m, terms, work)
    terms[0] = 0.0  # the top key is counted apart: exactly 1
    reach = max(gaps[m - 1], 1.0)
    stop = m
    for level in range(levels):
        stop = _cutoff(terms, gaps, m, stop, ties, reach) if m > 1 else m
        rest[level], first[level] = _lane_sums(terms, gaps, stop, level + 1 < levels)


@njit(cache=True, nogil=True)
def _responses(gaps, m, ties, grid, scale, chain_start, chain_nodes, rest, first, terms, work, out, at):
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
        _chain_sums(gaps, m, ties, beta0, len(nodes), rest, first, terms, work)
        for level in range(len(nodes)):
            b = nodes[level]
            beta = grid[b] * scale  # exactly 2**level beta0, or inf: undefined, NaN stays
            if not np.isfinite(beta):
                break
            z = 1.0 + rest[level]  # the top key contributes exactly 1
            free = np.log1p(rest[level])  # accurate when the other keys carry almost nothing
            out[at + b] = free
            out[at + stride + b] = free + beta * first[level] / z
            out[at + 2 * stride + b] = (-np.expm1(-beta * second_gap) if m >= 2 else 1.0) / z
            out[at + 3 * stride + b] = -np.expm1(-beta * last_gap) / z


@njit(cache=True, nogil=True)
def row_gaps(ascending, gaps):
    """Gaps ``D_(k)`` of one row from its scores sorted ascending (``-inf`` first, NaN last, as
    ``np.sort`` leaves them) into ``gaps[:m]``, ``+inf`` after; returns ``m``, the visible keys."""
    lo, hi = 0, len(ascending)
    while hi > 0 and np.isnan(ascending[hi - 1]):
        hi -= 1
    while lo < hi and ascending[lo] == -np.inf:
        lo += 1
    if hi > lo:
        top = np.float64(ascending[hi - 1])
        for k in range(hi - lo):
            gaps[k] = top - np.float64(ascending[hi - 1 - k])
    gaps[hi - lo :] = np.inf
    return hi - lo


@njit(cache=True, nogil=True)
def gaps_of_sorted(ascending, gaps, n_keys):
    """:func:`row_gaps` of every row."""
    for i in range(ascending.shape[0]):
        n_keys[i] = row_gaps(ascending[i], gaps[i])


@njit(cache=True, nogil=True)
def fill_rows(ascending, t, resolutions, beta, beta_order, beta_chains, beta_nodes,
              rho, rho_order, rho_chains, rho_nodes, out):
    """Packed statistics (layout of :func:`critscale.gapstats.feature_layout`) of rows whose
    scores are sorted ascending (``np.sort``); ``out`` must be filled with NaN."""
    rows, width = ascending.shape
    row = np.empty(max(width, 1))
    log_count = np.log(np.arange(1, width + 1).astype(np.float64))
    resolved = np.empty(len(resolutions))
    hull = np.empty(max(width, 1), dtype=np.int64)
    longest = max(np.diff(beta_chains).max() if len(beta) else 0, np.diff(rho_chains).max() if len(rho) else 0)
    rest = np.empty(max(longest, 1))
    first = np.empty(max(longest, 1))
    terms = np.empty(max(width, 1))
    work = np.empty(max(width, 1))
    at_t = 6
    at_r = at_t + len(t)
    at_beta = at_r + len(resolutions)
    at_rho = at_beta + 5 * len(beta)
    for i in range(rows):
        m = row_gaps(ascending[i], row)
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
        _responses(row, m, ties, beta, 1.0, beta_chains, beta_nodes, rest, first, terms, work, o, at_beta)
        _responses(row, m, ties, rho, relative, rho_chains, rho_nodes, rest, first, terms, work, o, at_rho)
        size = _upper_hull(row, m, log_count, hull)
        _envelope(row, log_count, hull, size, beta, beta_order, o, at_beta, len(beta))
        _envelope(row, log_count, hull, size, rho * relative, rho_order, o, at_rho, len(rho))
