"""The row sort: the radix sort against ``np.sort``, and the statistics whichever sort is chosen."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from critscale import rowsort
from critscale.gapstats import pack
from critscale.kernels import fill_rows
from test_gapstats import GRIDS

EDGE_VALUES = np.concatenate([
    np.array([np.nan, -np.nan, -np.inf, np.inf, -0.0, 0.0, 1e-45, -1e-45, 1.0, 1.0, -1.0], dtype=np.float32),
    np.array([np.finfo(np.float32).max, -np.finfo(np.float32).max, np.finfo(np.float32).tiny], dtype=np.float32),
    np.array([0x7FC00001, 0xFFC00001], dtype=np.uint32).view(np.float32),  # NaNs with payloads
])


def assert_sorted_like_numpy(rows: np.ndarray) -> None:
    """The same values in the same order as ``np.sort`` (NaN last), the same bits but for the
    order of signed zeros (-0.0 first) and NaN payloads."""
    radix, numpy = rowsort._radix(rows), np.sort(rows, axis=1)
    assert np.array_equal(radix, numpy, equal_nan=True)
    same_bits = ~np.isnan(numpy) & (numpy != 0)
    assert np.array_equal(radix.view(np.uint32)[same_bits], numpy.view(np.uint32)[same_bits])
    for row in radix:
        negative = np.signbit(row[row == 0])
        assert not np.any(~negative[:-1] & negative[1:])  # no -0.0 after a +0.0


def edge_row(rng) -> np.ndarray:
    return rng.permutation(np.concatenate([EDGE_VALUES, rng.normal(size=600).astype(np.float32)]))


def test_radix_sort_edge_values():
    rng = np.random.default_rng(3)
    assert_sorted_like_numpy(np.stack([edge_row(rng) for _ in range(5)]))


@settings(max_examples=200, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 3), st.integers(1, 80)), elements=st.floats(width=32)))
def test_radix_sort_is_numpy_sort(rows):
    assert_sorted_like_numpy(rows)


def test_radix_sort_of_non_contiguous_rows():
    rows = np.random.default_rng(0).normal(size=(6, 2000)).astype(np.float32)[::2, ::3]
    assert np.array_equal(rowsort._radix(rows), np.sort(rows, axis=1))


@pytest.mark.parametrize("radix", [True, False])
def test_statistics_do_not_depend_on_the_sort_chosen(monkeypatch, radix):
    rng = np.random.default_rng(5)
    rows = rng.normal(size=(6, 1500)).astype(np.float32)
    rows[1, :40] = np.nan
    rows[2, :40] = -np.inf
    rows[3, :] = np.round(rows[3, :], 1)  # ties
    rows[4, :3] = [0.0, -0.0, 0.0]
    rows[4, 3:] = -np.abs(rows[4, 3:]) - 1  # three zero maxima of both signs
    rows[5, :2] = [-0.0, -0.0]
    rows[5, 2:] = -np.abs(rows[5, 2:]) - 1
    monkeypatch.setattr(rowsort, "_radix_faster", {2048: radix})
    chosen = pack(rows, GRIDS)
    expected = pack(rows.astype(np.float64), GRIDS)  # float64 rows always go to np.sort
    assert chosen.tobytes() == expected.tobytes()


def test_zero_maxima_of_either_sign_give_the_same_bytes():
    """However a sort orders -0.0 and +0.0 among equal maxima, the gaps and every statistic are the
    same bytes (the kernel takes the largest score as +0.0)."""
    tail = -np.linspace(1, 3, 30)
    outputs = []
    for zeros in ([0.0, -0.0], [-0.0, 0.0], [-0.0, -0.0], [0.0, 0.0]):
        ascending = np.concatenate([tail[::-1], zeros])[None, :].astype(np.float32)
        out = np.full((1, GRIDS.width), np.nan)
        fill_rows(ascending, GRIDS.t, GRIDS.resolutions, GRIDS.beta, *GRIDS.chains("beta"), GRIDS.rho,
                  *GRIDS.chains("rho"), out)
        outputs.append(out.tobytes())
    assert len(set(outputs)) == 1


def test_the_choice_is_measured_once_per_power_of_two(monkeypatch):
    monkeypatch.setattr(rowsort, "_radix_faster", {})
    rowsort.ascending(np.zeros((2, rowsort.NETWORK_KEYS), dtype=np.float32))
    rowsort.ascending(np.zeros((2, 900), dtype=np.float64))
    assert rowsort._radix_faster == {}  # short rows and float64 rows: np.sort, nothing timed
    rowsort.ascending(np.zeros((2, 3000), dtype=np.float32))
    rowsort.ascending(np.zeros((2, 4096), dtype=np.float32))
    assert list(rowsort._radix_faster) == [4096]
