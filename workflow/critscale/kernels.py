"""Compiled per-row kernel of :mod:`critscale.gapstats` (numba).

One call fills the packed feature vectors of a batch of rows whose scores are sorted ascending
(``np.sort``: float32 sorts twice as fast as float64 and the gaps are taken in float64 here all
the same).  Per row, in this order and only from the row itself:

* the gaps ``D_(k)``, ascending, from the sorted scores;
* ``N(0)``, ``Lambda`` with its contact index and every resolved scale ``Lambda^(r)``: every
  ratio in vectorised loops, then their maxima in vector compares (a maximum is exact in any
  order; a running one branched on every key);
* ``N(t)`` by binary search;
* the Laplace envelope ``S(beta) = max_k (log N(D_(k)) - beta D_(k))`` from the upper concave
  hull of the points ``(D_(k), log N(D_(k)))``: the maximiser moves left along the hull as beta
  grows, so one hull pass and one walk serve every beta of a grid, with no exponential at all;
* the softmax responses from ``Z`` and ``Z' = sum exp(-beta D) D``: for each chain of a grid
  (``beta, 2 beta, 4 beta, ...``) one exponential per key at the chain's first beta (an inlined
  ``exp`` the compiler vectorises), then the sums of each level over the keys, the terms of a
  level being the squares of the level before.  Terms only shrink along a sorted row, so each
  level sums only as far as the terms left can change its sums (relative ``2**-56``), and the
  next level no further.  One pass over the keys serves four levels (their sums are independent,
  so the pass runs at the throughput of the adds, not their latency: 1.5x the whole kernel at
  ``n = 4096``), in explicit 4-wide vectors.

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
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# A level of a chain stops once the sum of every term left is below this fraction of its sums.
_TAIL = 2.0**-56
_GROUP = 4  # levels of a chain summed in one pass over the keys (the branches of _lane_passes)
_EXP_LOW = -708.0  # below it 2**n of the inlined exp would leave the normal range
# exp(x) = 2**n exp(r), x = n log 2 + r: Cody-Waite split of log 2 (n * _LN2_HI is exact) and the
# Taylor series of exp(r) to degree 13 (truncation below 1e-17 for |r| <= log(2) / 2).
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_SHIFT = 6755399441055744.0  # 1.5 * 2**52
_SHIFT_BITS = int(np.array([_SHIFT]).view(np.int64)[0])
_C1, _C2, _C3, _C4, _C5, _C6, _C7, _C8, _C9, _C10, _C11, _C12, _C13 = (1.0 / math.factorial(i) for i in range(1, 14))


def _contiguous_doubles(*arrays) -> bool:
    """Whether every argument type is a C-contiguous float64 array, as the vectors of the
    intrinsics below need: they address the arrays' data directly."""
    return all(isinstance(a, types.Array) and a.layout == "C" and a.dtype == types.float64 for a in arrays)


def _data(context, builder, array_type, array):
    """The data pointer of a numba array value."""
    return cgutils.create_struct_proxy(array_type)(context, builder, value=array).data


def _vector_at(builder, pointer, index, vector):
    """``pointer + index`` as a pointer to ``vector``."""
    return builder.bitcast(builder.gep(pointer, [index]), vector.as_pointer())


@intrinsic
def _vector_max(typingctx, values, end):
    """``max(values[:end])`` for ``end`` a multiple of 8 (``-inf`` if 0), eight keys per vector
    compare: a maximum is exact in any order.  numba leaves a running maximum scalar (LLVM
    vectorises it only with fast-math attributes on the whole function), hence the vectors."""
    if not _contiguous_doubles(values):
        return None  # a typing error

    def codegen(context, builder, signature, args):
        values_arg, end_arg = args
        vector = ir.VectorType(ir.DoubleType(), 8)
        data = _data(context, builder, signature.args[0], values_arg)
        intp = end_arg.type
        best = cgutils.alloca_once_value(builder, ir.Constant(vector, [-math.inf] * 8))
        with cgutils.for_range_slice(builder, ir.Constant(intp, 0), end_arg, ir.Constant(intp, 8), intp) as (k, _):
            key = builder.load(_vector_at(builder, data, k, vector), align=8)
            current = builder.load(best)
            builder.store(builder.select(builder.fcmp_ordered(">", key, current), key, current), best)
        lanes = builder.load(best)
        result = builder.extract_element(lanes, ir.Constant(ir.IntType(32), 0))
        for lane in range(1, 8):
            key = builder.extract_element(lanes, ir.Constant(ir.IntType(32), lane))
            result = builder.select(builder.fcmp_ordered(">", key, result), key, result)
        return result

    return types.float64(values, end), codegen


@njit(cache=True, nogil=True)
def _largest(values):
    """``max(values)`` (``-inf`` if empty), 8 keys at a time."""
    end = len(values) - len(values) % 8
    best = _vector_max(values, end)
    for k in range(end, len(values)):
        best = max(best, values[k])
    return best


# IEEE division (the gaps divided are > 0): without a zero check per key the loops vectorise.
@njit(cache=True, nogil=True, error_model="numpy")
def _scalars(gaps, m, log_count, resolutions, resolved, inverse, values):
    """Scalars of one row and its resolved scales (into ``resolved``); returns the scalars
    ``(ties, Lambda, D_Lambda, alpha, C)`` with the conventions of :mod:`critscale.gapstats`.
    ``inverse`` and ``values`` are scratch of at least ``m``.  Every ratio is computed in a loop
    the compiler vectorises and the maxima are taken after (exact in any order), where a running
    maximum would branch on every key."""
    nan = np.nan
    ties = 0
    while ties < m and gaps[ties] == 0.0:
        ties += 1
    if m == 0:
        resolved[:] = nan
        return 0, nan, nan, nan, nan
    # Views from the first positive gap: loops from 0 over a view vectorise (from a run-time
    # start, numba's negative-index wraparound keeps them scalar).
    positive, count, inverse, ratios = gaps[ties:m], log_count[ties:m], inverse[ties:m], values[ties:m]
    for k in range(len(positive)):
        ratios[k] = count[k] / positive[k]
        inverse[k] = 1.0 / positive[k]
    scale = _largest(ratios)
    contact = m - 1
    while contact > ties and ratios[contact - ties] != scale:  # the sup is attained at its largest gap
        contact -= 1
    # A gap below 1 / 1.8e308 (the smallest, so first) has an infinite reciprocal while
    # excess / gap may still be finite (excess < 1): those keys divide.
    tiny = 0
    while tiny < len(inverse) and inverse[tiny] == np.inf:
        tiny += 1
    for i in range(len(resolutions)):
        for k in range(tiny):
            excess = count[k] - resolutions[i]
            ratios[k] = excess / positive[k] if excess > 0.0 else 0.0
        rest, rest_count, rest_inverse = ratios[tiny:], count[tiny:], inverse[tiny:]
        for k in range(len(rest)):
            excess = rest_count[k] - resolutions[i]
            rest[k] = excess * rest_inverse[k] if excess > 0.0 else 0.0
        resolved[i] = max(_largest(ratios), 0.0)
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
def _upper_hull(gaps, m, log_count, hull_x, hull_y):
    """Points of the upper concave hull of ``(D_(k), log N(D_(k)))`` into ``hull_x``, ``hull_y``
    (copies: the comparisons read them directly, not through indices); returns its length.  Of
    tied gaps only the last (largest count) can be on it."""
    # The last two points stay in registers (the same comparisons in the same order as with
    # loads from the arrays), so the chain of pops waits on no store and reload.
    size = 0
    ax = ay = lx = ly = 0.0  # points size - 2 and size - 1
    for k in range(m):
        if k + 1 < m and gaps[k + 1] == gaps[k]:
            continue
        x, y = gaps[k], log_count[k]
        # drop the last point while it is not strictly above the segment from a to the new point
        while size >= 2 and (ly - ay) * (x - ax) <= (y - ay) * (lx - ax):
            size -= 1
            lx, ly = ax, ay
            if size >= 2:
                ax, ay = hull_x[size - 2], hull_y[size - 2]
        hull_x[size] = x
        hull_y[size] = y
        ax, ay, lx, ly = lx, ly, x, y
        size += 1
    return size


@njit(cache=True, nogil=True)
def _envelope(hull_x, hull_y, size, betas, order, out, at, stride):
    """``S(beta)`` at every beta (visited in ascending ``order``): the maximiser walks left."""
    j = size - 1
    for b in order:
        beta = betas[b]
        if not np.isfinite(beta):
            continue
        while j > 0 and hull_y[j - 1] - beta * hull_x[j - 1] >= hull_y[j] - beta * hull_x[j]:
            j -= 1
        out[at + 4 * stride + b] = hull_y[j] - beta * hull_x[j]


@intrinsic
def _power_of_two(typingctx, shifted):
    """``2**n`` from ``shifted = n + 1.5 * 2**52`` (``n`` in its low bits, ``-1022 <= n <= 1023``),
    by integer arithmetic on its bits: numba has no scalar bit cast, and with one the whole
    exponential stays one loop the compiler vectorises."""
    if shifted != types.float64:
        return None

    def codegen(context, builder, signature, args):
        int64 = ir.IntType(64)
        bits = builder.add(builder.bitcast(args[0], int64), ir.Constant(int64, 1023 - _SHIFT_BITS))
        return builder.bitcast(builder.shl(bits, ir.Constant(int64, 52)), ir.DoubleType())

    return types.float64(shifted), codegen


@njit(cache=True, nogil=True)
def _exp_neg(beta, gaps, stop, terms):
    """``terms[k] = exp(-beta D_(k))`` for ``k < stop`` within 1 ulp, in a loop the compiler
    vectorises (a libm ``exp`` call per key is three times dearer).  Below ``exp(-708)`` the
    power ``2**n`` would leave the normal range: those keys, the last of the sorted row, take
    libm's ``exp`` (subnormal or 0).  A clamped term would be negligible next to the top key's 1,
    but not in the weighted sum when its true value is itself subnormal and beta near 1e306."""
    for k in range(stop):
        x = max(-beta * gaps[k], _EXP_LOW)
        shifted = x * _LOG2E + _SHIFT  # rounds x / log 2 to the integer held in its low bits
        n = shifted - _SHIFT
        r = (x - n * _LN2_HI) - n * _LN2_LO  # |r| <= log(2) / 2
        p = ((((_C13 * r + _C12) * r + _C11) * r + _C10) * r + _C9) * r + _C8
        p = ((((((p * r + _C7) * r + _C6) * r + _C5) * r + _C4) * r + _C3) * r + _C2) * r + _C1
        terms[k] = (p * r + 1.0) * _power_of_two(shifted)
    k = stop
    while k > 0 and -beta * gaps[k - 1] < _EXP_LOW:
        k -= 1
        terms[k] = math.exp(-beta * gaps[k])


@njit(cache=True, nogil=True)
def _squared(value, times):
    for _ in range(times):
        value = value * value
    return value


@njit(cache=True, nogil=True)
def _negligible(terms, m, k, squarings, reach, low_rest, low_first):
    """Whether the tails from key ``k`` are below ``_TAIL`` of the sums (see :func:`_cutoff`)."""
    tail = (m - k) * _squared(terms[k], squarings)
    return tail <= _TAIL * low_rest and tail * reach <= _TAIL * low_first


@njit(cache=True, nogil=True)
def _cutoff(terms, gaps, m, stop, ties, reach, squarings):
    """Smallest ``K <= stop`` whose tail ``sum_{k >= K}`` is below ``_TAIL`` of the sums, for the
    terms squared ``squarings`` times (as the levels before would have left them): every later
    term is ``<= terms[K]`` (gaps sorted), so the tails are at most ``(m - K) terms[K]`` (and
    times the largest gap for the weighted sum), against lower bounds of the sums."""
    low_rest = _squared(terms[1], squarings)
    low_first = _squared(terms[ties], squarings) * gaps[ties] if ties < m else 0.0
    lo, hi = 1, stop
    # The test only turns true as K grows (the bound (m - K) terms[K] shrinks with K: a term
    # exceeds the one before by at most a few ulps, far less than the factor (m - K) / (m - K - 1)),
    # so where it fails at the last key the bisection would end at ``stop``: one test, not log2(m),
    # for the levels of small beta, which keep every key.
    if lo < hi and not _negligible(terms, m, hi - 1, squarings, reach, low_rest, low_first):
        return hi
    while lo < hi:
        mid = (lo + hi) // 2
        if _negligible(terms, m, mid, squarings, reach, low_rest, low_first):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _shuffle(builder, first, second, indices):
    """LLVM's ``shufflevector``: the lanes ``indices`` of ``first`` and ``second`` end to end."""
    return builder.shuffle_vector(first, second, ir.Constant(ir.VectorType(ir.IntType(32), len(indices)), indices))


@intrinsic(prefer_literal=True)
def _lane_pass(typingctx, terms, gaps, start, end, lanes, levels, square):
    """For keys ``start <= k < end`` (multiples of 4), four at a time in one vector: add the
    terms to the four lanes of ``lanes[8 l : 8 l + 4]`` and the terms times the gaps to
    ``lanes[8 l + 4 : 8 l + 8]``, squaring the terms from level ``l`` to ``l + 1``, for
    ``l < levels`` (a literal); the terms become their ``2**levels``-th powers when ``square``.
    Vector adds and multiplies without fast-math flags round each lane as the scalar code does,
    so the sums are those of four scalar lanes; numba leaves LLVM's SLP vectoriser off, and the
    loop vectoriser cannot keep lanes in a fixed order, hence the explicit vectors.

    An even number of levels goes in pairs, levels ``l, l + 1`` side by side in 8-wide vectors
    ``[t, t**2]`` (squared twice for the next pair): each lane does the scalar code's operations
    on the same values, with a third fewer instructions (0.85 us, not 1.0, for a pass of four
    levels over 4096 keys, on AVX-512 and on AVX2 alike; three levels in a pair and one alone ran
    slower, so odd counts keep one vector per level)."""
    if not (_contiguous_doubles(terms, gaps, lanes) and isinstance(levels, types.IntegerLiteral)):
        return None  # a typing error
    count = levels.literal_value
    pairs = count // 2 if count % 2 == 0 else 0

    def codegen(context, builder, signature, args):
        terms_arg, gaps_arg, start_arg, end_arg, lanes_arg, _, square_arg = args
        vector = ir.VectorType(ir.DoubleType(), 4)
        terms_data, gaps_data, lanes_data = (_data(context, builder, signature.args[i], arg)
                                             for i, arg in ((0, terms_arg), (1, gaps_arg), (4, lanes_arg)))
        intp = start_arg.type
        low, high, whole = list(range(4)), list(range(4, 8)), list(range(8))

        def at(pointer, index):
            return _vector_at(builder, pointer, index, vector)

        def lane(j):  # lanes[4 j : 4 j + 4]: level l's sums are lanes 2 l and 2 l + 1
            return at(lanes_data, ir.Constant(intp, 4 * j))

        wide = [cgutils.alloca_once_value(builder, _shuffle(builder, builder.load(lane(4 * p + s), align=8),
                                                            builder.load(lane(4 * p + 2 + s), align=8), whole))
                for p in range(pairs) for s in (0, 1)]
        slots = [cgutils.alloca_once_value(builder, builder.load(lane(j), align=8)) for j in range(4 * pairs, 2 * count)]
        with cgutils.for_range_slice(builder, start_arg, end_arg, ir.Constant(intp, 4), intp) as (k, _):
            term = builder.load(at(terms_data, k), align=8)
            gap = builder.load(at(gaps_data, k), align=8)
            if pairs:
                gaps_twice = _shuffle(builder, gap, gap, low + low)
                pair = _shuffle(builder, term, builder.fmul(term, term), whole)
                for p in range(pairs):
                    if p:
                        pair = builder.fmul(pair, pair)
                        pair = builder.fmul(pair, pair)
                    rest, first = wide[2 * p], wide[2 * p + 1]
                    builder.store(builder.fadd(builder.load(rest), pair), rest)
                    builder.store(builder.fadd(builder.load(first), builder.fmul(pair, gaps_twice)), first)
                term = _shuffle(builder, pair, pair, high)
                term = builder.fmul(term, term)
            for level in range(len(slots) // 2):  # the levels not in pairs
                rest, first = slots[2 * level], slots[2 * level + 1]
                builder.store(builder.fadd(builder.load(rest), term), rest)
                builder.store(builder.fadd(builder.load(first), builder.fmul(term, gap)), first)
                term = builder.fmul(term, term)
            with builder.if_then(square_arg):
                builder.store(term, at(terms_data, k), align=8)
        for p in range(pairs):
            for s in (0, 1):
                value = builder.load(wide[2 * p + s])
                builder.store(_shuffle(builder, value, value, low), lane(4 * p + s), align=8)
                builder.store(_shuffle(builder, value, value, high), lane(4 * p + 2 + s), align=8)
        for j, slot in zip(range(4 * pairs, 2 * count), slots):
            builder.store(builder.load(slot), lane(j), align=8)
        return context.get_dummy_value()

    return types.none(terms, gaps, start, end, lanes, levels, square), codegen


@njit(cache=True, nogil=True)
def _lane_passes(terms, gaps, start, end, lanes, levels, square):
    """:func:`_lane_pass` with a run-time number of levels, 1 to ``_GROUP``."""
    if levels == 4:
        _lane_pass(terms, gaps, start, end, lanes, 4, square)
    elif levels == 3:
        _lane_pass(terms, gaps, start, end, lanes, 3, square)
    elif levels == 2:
        _lane_pass(terms, gaps, start, end, lanes, 2, square)
    elif levels == 1:
        _lane_pass(terms, gaps, start, end, lanes, 1, square)
    else:
        raise ValueError("levels per lane pass must be 1 to 4")


@njit(cache=True, nogil=True)
def _group_sums(terms, gaps, stops, size, square, rest, first, lanes):
    """``rest[j], first[j]`` of ``size`` consecutive levels of a chain, the terms of level ``j``
    being those at hand squared ``j`` times and summed up to ``stops[j]`` (non-increasing): in
    four fixed interleaved lanes up to the last multiple of 4, lanes added pairwise, then the
    rest in key order, as the scalar code of one level would.  One pass over the keys serves
    every level whose lanes reach them; the terms of the kept keys become those of the level
    after the group when ``square``."""
    lanes[:] = 0.0
    start = 0
    for j in range(size - 1, -1, -1):  # keys that the lanes of levels 0..j reach
        end = stops[j] - stops[j] % 4
        _lane_passes(terms, gaps, start, end, lanes, j + 1, square and j == size - 1)
        start = end
    for j in range(size):  # the last level last: its tail writes the terms
        lane = lanes[8 * j : 8 * j + 8]
        total = (lane[0] + lane[1]) + (lane[2] + lane[3])
        weighted = (lane[4] + lane[5]) + (lane[6] + lane[7])
        for k in range(stops[j] - stops[j] % 4, stops[j]):
            term = _squared(terms[k], j)
            total += term
            weighted += term * gaps[k]
            if square and j == size - 1:
                terms[k] = term * term
        rest[j], first[j] = total, weighted


@njit(cache=True, nogil=True)
def _chain_sums(gaps, m, ties, beta, levels, rest, first, terms, stops, lanes):
    """``rest[l] = sum_{k>=1} exp(-2^l beta D_(k))`` and ``first[l]`` the same weighted by
    ``D_(k)``, for ``l < levels``: one exponential per key, squared up the chain, each level
    summed only as far as its terms matter, ``_GROUP`` levels per pass over the keys."""
    _exp_neg(beta, gaps, m, terms)
    terms[0] = 0.0  # the top key is counted apart: exactly 1
    reach = max(gaps[m - 1], 1.0)
    stop = m
    for group in range(0, levels, _GROUP):
        size = min(_GROUP, levels - group)
        for j in range(size):
            stop = _cutoff(terms, gaps, m, stop, ties, reach, j) if m > 1 else m
            stops[j] = stop
        _group_sums(terms, gaps, stops, size, group + size < levels, rest[group:], first[group:], lanes)


@njit(cache=True, nogil=True)
def _responses(gaps, m, ties, grid, scale, chain_start, chain_nodes, rest, first, terms, stops, lanes, out, at):
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
        _chain_sums(gaps, m, ties, beta0, len(nodes), rest, first, terms, stops, lanes)
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
    hull_x = np.empty(max(width, 1))
    hull_y = np.empty(max(width, 1))
    longest = max(np.diff(beta_chains).max() if len(beta) else 0, np.diff(rho_chains).max() if len(rho) else 0)
    rest = np.empty(max(longest, 1))
    first = np.empty(max(longest, 1))
    terms = np.empty(max(width, 1))
    ratios = np.empty(max(width, 1))
    stops = np.empty(_GROUP, dtype=np.int64)
    lanes = np.empty(8 * _GROUP)
    at_t = 6
    at_r = at_t + len(t)
    at_beta = at_r + len(resolutions)
    at_rho = at_beta + 5 * len(beta)
    for i in range(rows):
        m = row_gaps(ascending[i], row)
        ties, scale, contact_gap, exponent, entropy = _scalars(row, m, log_count, resolutions, resolved, terms, ratios)
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
        _responses(row, m, ties, beta, 1.0, beta_chains, beta_nodes, rest, first, terms, stops, lanes, o, at_beta)
        _responses(row, m, ties, rho, relative, rho_chains, rho_nodes, rest, first, terms, stops, lanes, o, at_rho)
        size = _upper_hull(row, m, log_count, hull_x, hull_y)
        _envelope(hull_x, hull_y, size, beta, beta_order, o, at_beta, len(beta))
        _envelope(hull_x, hull_y, size, rho * relative, rho_order, o, at_rho, len(rho))
