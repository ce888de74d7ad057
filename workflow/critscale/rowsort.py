"""Rows of scores sorted ascending, by the faster of two sorts on this CPU.

``np.sort`` is a vectorised quicksort whose speed depends on the CPU as much as on the SIMD level
numpy dispatches.  At 4096 float32 keys a row takes 16 us where numpy dispatches AVX2, and 46 us
on a Zen 4 EPYC where it dispatches AVX-512, 2.8x its own AVX2 code on the same CPU (most likely
the partition step, whose compress-stores, ``vcompressps`` to memory, Zen 4 runs in microcode).
A least-significant-digit radix sort of the floats' bits (:func:`radix_sort_rows`, three passes
of 11, 11 and 10 bits) takes about 18 us a row there, whatever the SIMD level.

So rows of up to 512 keys, which ``np.sort`` sorts in registers (under 1 us a row), and every
array that is not float32 go to ``np.sort``; longer float32 rows go to whichever of the two was
faster on Gaussian rows of the same length (rounded up to a power of two), timed once per process.
Both give the same array but for the order of ``-0.0`` and ``+0.0``, which the radix sort puts
first (the kernel's gaps do not see it: :func:`critscale.kernels.row_gaps`), and NaN payloads
(NaN keys are only counted); NaN keys of either sign come last, as ``np.sort`` leaves them.
"""

from __future__ import annotations

import threading
import time

import numpy as np
from numba import njit

NETWORK_KEYS = 512  # np.sort sorts rows up to this long in registers: no faster sort to choose
_TIMED_ELEMENTS = 2**18  # scores per timing of each sort (a few milliseconds)
_SIGN = np.uint32(0x80000000)
_MAGNITUDE = np.uint32(0x7FFFFFFF)
_INF_BITS = np.uint32(0x7F800000)
_LAST = np.uint32(0xFFFFFFFF)
_DIGIT = np.uint32(2047)  # the two low digits: 11 bits each; the high one is the 10 bits left

_radix_faster: dict[int, bool] = {}  # per power-of-two row length, once measured
_measuring = threading.Lock()


@njit(cache=True, nogil=True, inline="always")
def _order_key(bits):
    """Unsigned key in the floats' order: negatives flipped whole, positives with their sign set;
    any NaN the largest."""
    if (bits & _MAGNITUDE) > _INF_BITS:
        return _LAST
    return ~bits if bits & _SIGN else bits | _SIGN


@njit(cache=True, nogil=True, inline="always")
def _float_bits(key):
    """The float bits of an order key (:func:`_order_key` undone; a NaN comes back as 0x7FFFFFFF)."""
    return key & _MAGNITUDE if key & _SIGN else ~key


@njit(cache=True, nogil=True)
def _radix_sort_row(bits, keys, spare, low, middle, high, out):
    """One row: its keys, the three digit histograms, their offsets, three stable scatters (low
    digit, middle, high), then the keys back to float bits.  The two conversions are loops of
    their own, which vectorise: inside the first histogram and the last scatter they made the sort
    1.7x slower (30.6 against 18.1 us a row at 4096 keys)."""
    for k in range(len(bits)):
        keys[k] = _order_key(bits[k])
    low[:] = 0
    middle[:] = 0
    high[:] = 0
    for k in range(len(bits)):
        low[keys[k] & _DIGIT] += 1
        middle[(keys[k] >> np.uint32(11)) & _DIGIT] += 1
        high[keys[k] >> np.uint32(22)] += 1
    at_low = at_middle = at_high = 0
    for d in range(len(low)):
        at_low, low[d] = at_low + low[d], at_low
        at_middle, middle[d] = at_middle + middle[d], at_middle
    for d in range(len(high)):
        at_high, high[d] = at_high + high[d], at_high
    for k in range(len(bits)):
        key = keys[k]
        spare[low[key & _DIGIT]] = key
        low[key & _DIGIT] += 1
    for k in range(len(bits)):
        key = spare[k]
        keys[middle[(key >> np.uint32(11)) & _DIGIT]] = key
        middle[(key >> np.uint32(11)) & _DIGIT] += 1
    for k in range(len(bits)):
        key = keys[k]
        spare[high[key >> np.uint32(22)]] = key
        high[key >> np.uint32(22)] += 1
    for k in range(len(bits)):
        out[k] = _float_bits(spare[k])


@njit(cache=True, nogil=True)
def radix_sort_rows(rows, out):
    """Each row of the C-contiguous float32 ``rows`` sorted ascending into ``out``."""
    keys = np.empty(rows.shape[1], dtype=np.uint32)
    spare = np.empty_like(keys)
    low, middle, high = (np.empty(2048, dtype=np.int32), np.empty(2048, dtype=np.int32),
                         np.empty(1024, dtype=np.int32))
    bits, out_bits = rows.view(np.uint32), out.view(np.uint32)
    for i in range(rows.shape[0]):
        _radix_sort_row(bits[i], keys, spare, low, middle, high, out_bits[i])


def _radix(rows: np.ndarray) -> np.ndarray:
    rows = np.ascontiguousarray(rows)
    out = np.empty_like(rows)
    radix_sort_rows(rows, out)
    return out


def _numpy(rows: np.ndarray) -> np.ndarray:
    return np.sort(rows, axis=1)


def _radix_wins(rows: np.ndarray, rounds: int = 3) -> bool:
    """Whether the radix sort's best time on ``rows`` beats ``np.sort``'s, timed in turns."""
    best = {_radix: np.inf, _numpy: np.inf}
    for _ in range(rounds):
        for sort in best:
            start = time.perf_counter()
            sort(rows)
            best[sort] = min(best[sort], time.perf_counter() - start)
    return best[_radix] < best[_numpy]


def radix_is_faster(keys: int) -> bool:
    """Whether the radix sort beat ``np.sort`` on float32 rows of ``keys`` (rounded up to a power
    of two) on this CPU; measured at the first call for that length and remembered."""
    size = 1 << (keys - 1).bit_length()
    if size in _radix_faster:  # every block of the stage asks: no lock once measured
        return _radix_faster[size]
    with _measuring:  # one thread measures; the others wait for its answer, not time on its cores
        if size not in _radix_faster:
            rows = np.random.default_rng(0).normal(size=(max(2, _TIMED_ELEMENTS // size), size))
            rows = rows.astype(np.float32)
            _radix(rows[:1])  # compiled (or loaded from numba's cache) before it is timed
            _radix_faster[size] = _radix_wins(rows)
        return _radix_faster[size]


_SORTS = {"radix": _radix, "np.sort": _numpy}


def chosen_sort(keys: int, dtype=np.float32) -> str:
    """The name (in :data:`_SORTS`) of the sort :func:`ascending` takes for rows of ``keys`` of
    ``dtype`` on this CPU."""
    if np.dtype(dtype) == np.float32 and keys > NETWORK_KEYS and radix_is_faster(keys):
        return "radix"
    return "np.sort"


def ascending(rows: np.ndarray) -> np.ndarray:
    """``np.sort(rows, axis=1)`` of a 2-D float array, by the faster sort for its rows."""
    return _SORTS[chosen_sort(rows.shape[1], rows.dtype)](rows)
