"""LLVM vector code for :mod:`critscale.kernels` that numba does not emit by itself: 8-wide vector
maxima, ``2**n`` by a bit cast and the kernel's lane passes in explicit vectors.

Each is a numba ``@intrinsic`` whose code generator writes LLVM IR (llvmlite's ``ir``) into the
calling function, so it costs no call.  Vector adds and multiplies without fast-math flags round
each lane as scalar code would, so these change no value, only how many keys one instruction
serves.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

SHIFT = 6755399441055744.0  # 1.5 * 2**52: adding it rounds a double to an integer held in its low bits
_SHIFT_BITS = int(np.array([SHIFT]).view(np.int64)[0])


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
def largest(values):
    """``max(values)`` (``-inf`` if empty), 8 keys at a time."""
    end = len(values) - len(values) % 8
    best = _vector_max(values, end)
    for k in range(end, len(values)):
        best = max(best, values[k])
    return best


@intrinsic
def power_of_two(typingctx, shifted):
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
def lane_passes(terms, gaps, start, end, lanes, levels, square):
    """:func:`_lane_pass` with a run-time number of levels, 1 to 4."""
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
