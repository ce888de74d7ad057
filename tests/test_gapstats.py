"""Per-row quantities against the plain reference, and the theorems as properties."""

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from critscale import gapstats
from critscale.gapstats import (
    RESPONSE_NAMES,
    Grids,
    doubling_chains,
    doubling_parents,
    octave_grid,
    pack,
    row_statistics,
    sorted_gaps,
)
from critscale.reference import reference_row

GRIDS = Grids(
    t=np.linspace(0, 4, 9),
    resolutions=[0.0, 0.5, 1.0, 3.0],
    beta=np.concatenate([[0.0], octave_grid(2**-6, 2**7, 2)]),
    rho=np.concatenate([[0.0], octave_grid(2**-4, 2**4, 2)]),
)
SCALARS = ("n_keys", "ties", "accumulation_scale", "contact_gap", "contact_exponent", "contact_entropy")
# The responses square exp(-beta D) along doubling chains (<= 2^17 ulp) and sum in another
# order than the reference: agreement to 1e-10 relative is what float64 allows here.
RTOL = 1e-10


def assert_matches_reference(rows, grids=GRIDS):
    fast = row_statistics(rows, grids)
    for i, row in enumerate(rows):
        ref = reference_row(row, grids)
        for name in SCALARS + ("gap_count", "resolved_scale"):
            np.testing.assert_allclose(
                np.asarray(fast[name][i], float), np.asarray(ref[name], float), rtol=1e-12, err_msg=f"row {i} {name}"
            )
        for j, name in enumerate(RESPONSE_NAMES):
            np.testing.assert_allclose(fast[name][i], ref["response"][:, j], rtol=RTOL, atol=1e-13, err_msg=f"row {i} {name}")
            np.testing.assert_allclose(
                fast[name + "_rel"][i], ref["response_rel"][:, j], rtol=RTOL, atol=1e-13, err_msg=f"row {i} {name}_rel"
            )


def padded(rows):
    width = max(len(r) for r in rows)
    out = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def test_random_rows_match_reference():
    rng = np.random.default_rng(1)
    rows = [rng.normal(size=n) * scale for n in (2, 3, 17, 256, 1000) for scale in (1e-3, 1.0, 30.0)]
    assert_matches_reference(padded(rows))


def test_adversarial_rows_match_reference():
    rng = np.random.default_rng(2)
    rows = [
        np.array([1.0]),  # n = 1
        np.array([np.nan, np.nan]),  # nothing visible
        np.array([2.0, 2.0, 1.0]),  # tie at the maximum
        np.array([5.0, 5.0, 5.0, 5.0]),  # all tied
        np.array([1.0, np.nan, -np.inf, 0.5, 0.5, 0.2]),  # masked keys, ties below the top
        np.array([1e6, 1e6 - 1e-3, -1e6]),  # huge scale
        np.array([1e-12, 0.0, -1e-12]),  # tiny scale
        rng.normal(size=300).astype(np.float16).astype(np.float64),  # float16 input: many ties
        np.repeat([3.0, 1.0, 0.0], [1, 50, 50]),  # simplex-like steps
    ]
    assert_matches_reference(padded(rows))


def test_float16_input_accepted():
    rows = np.random.default_rng(3).normal(size=(4, 64)).astype(np.float16)
    fast = row_statistics(rows, GRIDS)
    assert_matches_reference(rows.astype(np.float64))
    assert fast["accumulation_scale"].shape == (4,)


def test_positive_infinity_is_rejected():
    with pytest.raises(ValueError, match=r"\+inf"):
        row_statistics(np.array([[1.0, np.inf]]), GRIDS)


def test_ties_reported_as_infinite_scale():
    out = row_statistics(np.array([[2.0, 2.0, 1.0, 0.0]]), GRIDS)
    assert out["ties"][0] == 2
    assert np.isposinf(out["accumulation_scale"][0])
    assert out["contact_gap"][0] == 0.0
    # max weight <= 1/N(0) and H >= log N(0) at every beta
    assert np.all(np.exp(-out["free_energy"][0]) <= 0.5 + 1e-15)
    assert np.all(out["entropy"][0] >= np.log(2) - 1e-12)
    assert np.all(np.isnan(out["free_energy_rel"][0]))


def test_simplex_closed_form():
    for n in (2, 10, 1000):
        row = np.concatenate([[1.5], np.full(n - 1, 0.25)])
        out = row_statistics(row[None], GRIDS)
        assert out["accumulation_scale"][0] == pytest.approx(np.log(n) / 1.25, rel=1e-14)
        assert out["contact_gap"][0] == pytest.approx(1.25)
        assert out["contact_exponent"][0] == pytest.approx(1.0)


def test_leading_dimensions_preserved():
    rows = np.random.default_rng(4).normal(size=(2, 3, 50))
    out = row_statistics(rows, GRIDS)
    assert out["accumulation_scale"].shape == (2, 3)
    assert out["free_energy"].shape == (2, 3, len(GRIDS.beta))


def test_results_do_not_depend_on_batching():
    rows = np.random.default_rng(5).normal(size=(37, 300))
    whole = row_statistics(rows, GRIDS)
    pieces = [row_statistics(rows[i : i + 5], GRIDS) for i in range(0, 37, 5)]
    for name, value in whole.items():
        np.testing.assert_array_equal(value, np.concatenate([p[name] for p in pieces]), err_msg=name)


@pytest.mark.parametrize("sorted_elements", [1, 700, 1500])  # 1, 2 and 5 rows a batch
def test_pack_sorts_in_batches_of_any_size_to_the_same_bytes(monkeypatch, sorted_elements):
    rows = np.random.default_rng(6).normal(size=(37, 300)).astype(np.float32)
    rows[4] = np.nan
    rows[9, :200] = -np.inf
    whole = pack(rows, GRIDS)
    monkeypatch.setattr(gapstats, "_SORTED_ELEMENTS", sorted_elements)
    assert pack(rows, GRIDS).tobytes() == whole.tobytes()


def test_octave_grid_doubles_exactly():
    grid = octave_grid(0.01, 100.0, 4)
    parents = doubling_parents(grid)
    assert grid[0] == 0.01 and grid[-1] <= 100.0 * (1 + 1e-12)
    linked = parents >= 0
    np.testing.assert_array_equal(grid[linked], 2 * grid[parents[linked]])
    assert linked.sum() > len(grid) // 2


row_strategy = arrays(
    np.float64,
    st.integers(1, 60),
    elements=st.one_of(
        st.floats(-50, 50, allow_nan=False, width=64),  # subnormal gaps included: log k / D_k overflows to inf
        st.sampled_from([0.0, 1.0, -1.0, np.nan]),  # repeats make ties; NaN masks a key
    ),
)


@settings(max_examples=150, deadline=None)
@given(row_strategy)
@example(np.array([0.0, 1.11253693e-308, -1.0]))  # a subnormal gap: beta ~ 1e306 weighs subnormal terms
# gaps of 2.2e-309, whose reciprocal overflows: (log 21 - 3) / gap is finite, 2.0e307
@example(np.array([2.22507386e-309] + [0.0] * 20))
def test_hypothesis_rows_match_reference(row):
    assert_matches_reference(row[None])


@pytest.mark.parametrize("row", [[5e-324, 0.0], [1e-310, 0.0, -1.0], [2.22507386e-311, 0.0, 0.0]])
def test_gaps_whose_reciprocal_overflows_give_infinite_scales_as_the_reference(row):
    # found by Hypothesis: the kernel capped 1 / D at the largest float64 (resolved scale 1.2e308
    # where the reference has inf); then, with two keys at one subnormal gap, it took the first
    # of them as the contact (alpha = log 2 / log 3 where the reference has 1)
    assert_matches_reference(np.array([row]))


@settings(max_examples=150, deadline=None)
@given(row_strategy)
def test_theorem_inequalities(row):
    """theory.md, "What is proved": every inequality on every row."""
    out = {k: v[0] for k, v in row_statistics(row[None], GRIDS).items()}
    n = out["n_keys"]
    if n == 0:
        return
    lam, alpha = out["accumulation_scale"], out["contact_exponent"]
    for beta, f, s, dtop, h, spread in zip(
        GRIDS.beta, out["free_energy"], out["laplace_envelope"], out["top_two_gap"], out["entropy"], out["weight_spread"]
    ):
        slack = 1e-9 * (1 + abs(f))
        # Laplace envelope: S <= F <= S + log(1 + log n)
        assert s <= f + slack
        assert f <= s + np.log1p(np.log(n)) + slack
        assert -1e-12 <= dtop <= 1 + 1e-12 and -1e-12 <= spread <= 1 + 1e-12
        assert h >= -1e-12 and h <= np.log(n) + 1e-9
        if not np.isfinite(lam):
            # tie at the top: max weight <= 1/N(0), H >= log N(0)
            assert np.exp(-f) <= 1 / out["ties"] + 1e-12
            assert h >= np.log(out["ties"]) - 1e-9
            continue
        if beta > lam > 0:
            assert np.exp(f) <= beta / (beta - lam) * (1 + 1e-9)
        if n >= 2 and 0 < beta < lam:
            rho = beta / lam
            middle = rho * alpha * np.log(n) * n ** (-alpha * (1 - rho))
            assert dtop <= middle * (1 + 1e-9) + 1e-12
            assert middle <= rho / (np.e * (1 - rho)) * (1 + 1e-9) + 1e-12
    # Lambda is the smallest L with N(t) <= exp(L t): check on the row's own gaps
    gaps = np.sort(np.nanmax(row) - row[np.isfinite(row)])
    if np.isfinite(lam) and n >= 2:
        counts = np.searchsorted(gaps, gaps, side="right")
        assert np.all(np.log(counts) <= lam * gaps * (1 + 1e-12) + 1e-12)
        assert np.any(np.isclose(np.log(counts), lam * gaps, rtol=1e-12))


@pytest.mark.parametrize(
    "scores, problem",
    [
        (np.array([[1.0 + 2.0j, 0.5]]), "complex"),
        (np.array([["1.0", "0.5"]]), "<U3"),
        (np.array([[1.0, None]], dtype=object), "object"),
        (np.array([[True, False]]), "bool"),
        (np.float64(1.0), "scalar"),
    ],
    ids=["complex", "string", "object", "bool", "scalar"],
)
def test_inputs_that_are_not_real_scores_are_rejected(scores, problem):
    for function in (row_statistics, lambda s, g: pack(s, g), lambda s, g: sorted_gaps(s)):
        with pytest.raises(ValueError, match=problem):
            function(scores, GRIDS)


def test_zero_rows_and_zero_keys_give_documented_empty_results():
    none = row_statistics(np.empty((0, 7)), GRIDS)
    assert none["accumulation_scale"].shape == (0,)
    assert none["free_energy"].shape == (0, len(GRIDS.beta))
    assert pack(np.empty((2, 0, 5)), GRIDS).shape == (0, GRIDS.width)
    keyless = row_statistics(np.empty((3, 0)), GRIDS)  # rows with no visible key
    reference = reference_row(np.empty(0), GRIDS)
    np.testing.assert_array_equal(keyless["n_keys"], [0, 0, 0])
    for name in SCALARS + ("gap_count", "resolved_scale"):
        np.testing.assert_array_equal(keyless[name][1], np.asarray(reference[name], float), err_msg=name)
    assert np.isnan(keyless["entropy_rel"]).all() and np.isnan(keyless["laplace_envelope"]).all()


def test_integer_and_float32_scores_match_float64():
    rows = np.random.default_rng(6).integers(-50, 50, size=(5, 200))
    expected = row_statistics(rows.astype(np.float64), GRIDS)
    for dtype in (np.int16, np.int64, np.float32):
        for name, value in row_statistics(rows.astype(dtype), GRIDS).items():
            np.testing.assert_array_equal(value, expected[name], err_msg=f"{dtype.__name__} {name}")


def test_sorted_gaps_masks_and_sorts():
    gaps, n_keys = sorted_gaps(np.array([[1.0, np.nan, -np.inf, 3.0, 2.0], [np.nan] * 5]))
    np.testing.assert_array_equal(gaps, [[0.0, 1.0, 2.0, np.inf, np.inf], [np.inf] * 5])
    np.testing.assert_array_equal(n_keys, [3, 0])


def test_doubling_chains_cover_the_grid_once():
    grid = np.array([0.5, 1.0, 0.0, 2.0, 1.0, 0.75, 1.5, 4.0, 3.0])
    order, starts, nodes = doubling_chains(grid)
    np.testing.assert_array_equal(np.sort(nodes), np.arange(len(grid)))
    np.testing.assert_array_equal(grid[order], np.sort(grid))
    for c in range(len(starts) - 1):
        values = grid[nodes[starts[c] : starts[c + 1]]]
        np.testing.assert_array_equal(values[1:], 2 * values[:-1])
    assert len(starts) - 1 == 4  # 0 | 0.5 1 2 4 | 1 (repeated) | 0.75 1.5 3


def test_long_rows_with_large_betas_match_reference():
    """Rows where most terms underflow at the large betas: the tail cutoff must not lose mass."""
    rng = np.random.default_rng(7)
    rows = np.stack([rng.normal(size=5000), rng.exponential(size=5000), np.r_[[0.0] * 3, -rng.uniform(0, 1e-3, 4997)]])
    grids = Grids(t=[0.1], resolutions=[0.0], beta=octave_grid(2**-3, 2**12, 3), rho=octave_grid(2**-5, 2**6, 4))
    assert_matches_reference(rows, grids)


def test_integers_beyond_float64_precision_are_refused():
    # 2**60 + 1 and 2**60 are one float64: converting would report two tied maxima.
    with pytest.raises(ValueError, match=r"beyond 2\^53 .* cannot be represented in float64"):
        row_statistics(np.array([[2**60 + 1, 2**60, 0]], dtype=np.int64), GRIDS)
    with pytest.raises(ValueError, match="2\\^53"):
        row_statistics(np.array([[-(2**63), 0]], dtype=np.int64), GRIDS)
    assert row_statistics(np.array([[2**53, 0]], dtype=np.int64), GRIDS)["ties"][0] == 1  # still exact


def chain_sums_one_level_at_a_time(gaps, m, ties, terms, levels):
    """The documented order of a chain's sums in plain Python floats (IEEE doubles, rounded as
    the scalar code rounds): level ``l`` squares the terms of level ``l - 1``, sums them up to its
    cutoff in four interleaved lanes, the lanes pairwise, then the rest in key order."""
    terms = [float(t) for t in terms[:m]]
    terms[0] = 0.0
    reach, stop, sums = max(float(gaps[m - 1]), 1.0), m, []
    for level in range(levels):
        if level:
            terms[:stop] = [t * t for t in terms[:stop]]
        if m > 1:  # smallest K whose tail bound is below 2**-56 of lower bounds of the sums
            low_rest, low_first = terms[1], terms[ties] * float(gaps[ties]) if ties < m else 0.0
            lo, hi = 1, stop
            while lo < hi:
                mid = (lo + hi) // 2
                tail = (m - mid) * terms[mid]
                lo, hi = (lo, mid) if tail <= 2.0**-56 * low_rest and tail * reach <= 2.0**-56 * low_first else (mid + 1, hi)
            stop = lo
        lanes = stop - stop % 4
        rest = [sum_in_order(terms[q:lanes:4]) for q in range(4)]
        first = [sum_in_order([t * float(g) for t, g in zip(terms[q:lanes:4], gaps[q:lanes:4])]) for q in range(4)]
        total, weighted = (rest[0] + rest[1]) + (rest[2] + rest[3]), (first[0] + first[1]) + (first[2] + first[3])
        for k in range(lanes, stop):
            total, weighted = total + terms[k], weighted + terms[k] * float(gaps[k])
        sums.append((total, weighted))
    return sums


def sum_in_order(values):
    total = 0.0
    for value in values:
        total += value
    return total


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 300),
    tied=st.integers(1, 5),
    beta=st.floats(2.0**-9, 64.0),
    levels=st.integers(1, 16),
    seed=st.integers(0, 2**32 - 1),
)
def test_chain_sums_are_the_scalar_sums_in_their_documented_order(n, tied, beta, levels, seed):
    """The grouped vector passes give, bit for bit, the sums of one scalar level at a time:
    regrouping levels into passes changes no rounding."""
    from critscale import kernels

    scores = np.random.default_rng(seed).normal(size=n)
    scores[: min(tied, n)] = scores.max()  # tied top keys
    gaps, m = np.sort(scores.max() - scores), n
    ties = int(np.sum(gaps == 0.0))
    terms = np.empty(m)
    rest, first = np.empty(levels), np.empty(levels)
    stops, lanes = np.empty(kernels._GROUP, np.int64), np.empty(8 * kernels._GROUP)
    kernels._chain_sums(gaps, m, ties, beta, levels, rest, first, terms, stops, lanes)
    kernels._exp_neg(beta, gaps, m, terms)
    expected = chain_sums_one_level_at_a_time(gaps, m, ties, terms, levels)
    assert [(float(a), float(b)) for a, b in zip(rest, first)] == expected


def scalars_by_running_maximum(gaps, m, log_count, resolutions):
    """The kernel's scale, contact and resolved scales as a plain running maximum over the keys
    (one division per key), the order the vectorised loops replace."""
    ties = int(np.sum(gaps[:m] == 0.0))
    scale, contact, resolved = -np.inf, m - 1, [0.0] * len(resolutions)
    for k in range(ties, m):
        ratio = log_count[k] / gaps[k]
        if ratio >= scale:
            scale, contact = ratio, k
        for i, r in enumerate(resolutions):
            excess = log_count[k] - r
            if excess > 0.0:
                with np.errstate(over="ignore"):
                    inverse = 1.0 / gaps[k]  # inf for a gap below 1 / 1.8e308
                value = excess * inverse if inverse < np.inf else excess / gaps[k]
                resolved[i] = max(resolved[i], value)
    return ties, scale, contact, resolved


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 70),
    tied=st.integers(1, 4),
    tiny=st.integers(0, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_scalars_are_the_running_maxima_bit_for_bit(n, tied, tiny, seed):
    """Ratios in vectorised loops and maxima in vector compares give the running maxima's
    values and contact bit for bit, subnormal gaps (infinite reciprocals) included."""
    from critscale import kernels

    rng = np.random.default_rng(seed)
    gaps = np.sort(np.abs(rng.normal(size=n)))
    gaps[: min(tied, n)] = 0.0
    gaps[min(tied, n) : min(tied + tiny, n)] = np.sort(rng.uniform(1, 9, size=max(0, min(tied + tiny, n) - tied))) * 1e-310
    gaps = np.sort(gaps)
    log_count = np.log(np.arange(1, n + 1, dtype=np.float64))
    resolutions = np.array([0.0, 0.5, 1.0, 2.0, 3.0])
    resolved = np.empty(len(resolutions))
    ties, scale, contact_gap, _, _ = kernels._scalars(gaps, n, log_count, resolutions, resolved, np.empty(n), np.empty(n))
    want_ties, want_scale, want_contact, want_resolved = scalars_by_running_maximum(gaps, n, log_count, resolutions)
    assert ties == want_ties
    log_ties = np.log(max(ties, 1))
    want_resolved = [np.inf if log_ties > r else v for r, v in zip(resolutions, want_resolved)]
    assert resolved.tolist() == want_resolved
    if n >= 2 and ties < 2:
        assert scale == want_scale and contact_gap == gaps[want_contact]


def upper_hull_by_plain_chain(gaps, log_count):
    """Andrew's monotone chain in plain Python floats, one point at a time: of tied gaps the last
    (largest count) only; pop the last point while it is not strictly above the segment from the
    point below it to the new one."""
    hull = []
    for k, (x, y) in enumerate(zip(gaps.tolist(), log_count.tolist())):
        if k + 1 < len(gaps) and gaps[k + 1] == gaps[k]:
            continue
        while len(hull) >= 2 and (hull[-1][1] - hull[-2][1]) * (x - hull[-2][0]) <= (y - hull[-2][1]) * (hull[-1][0] - hull[-2][0]):
            hull.pop()
        hull.append((x, y))
    return hull


def gaps_of_kind(kind, m, rng):
    """``m`` sorted gaps from 0 of a kind that stresses the hull's tests."""
    gaps = {"ties": lambda: rng.integers(0, 5, size=m).astype(float),
            "on a line": lambda: np.log(np.arange(1, m + 1.0)),  # exactly the counts: every point collinear
            "subnormal": lambda: rng.normal(size=m) ** 2 * 1e-310,
            "rounded": lambda: np.round(rng.exponential(size=m), 2),
            "cauchy": lambda: rng.standard_cauchy(size=m) ** 2}[kind]()
    gaps = np.sort(gaps)
    return gaps - gaps[0] if m else gaps


@settings(max_examples=80, deadline=None)
@given(
    widths=st.lists(st.integers(0, 60), min_size=4, max_size=4),
    kinds=st.lists(st.sampled_from(["ties", "on a line", "subnormal", "rounded", "cauchy"]), min_size=4, max_size=4),
    seed=st.integers(0, 2**32 - 1),
)
def test_hulls_of_four_rows_are_the_plain_chains_bit_for_bit(widths, kinds, seed):
    """Four rows of any lengths (empty ones included) in branch-free steps give each row's plain
    monotone chain, point for point and bit for bit: the same tests in the same order."""
    from critscale import kernels

    rng = np.random.default_rng(seed)
    width = max(widths)
    gaps = np.full((kernels._HULL_ROWS, width + 2), np.inf)
    for r, (m, kind) in enumerate(zip(widths, kinds)):
        gaps[r, :m] = gaps_of_kind(kind, m, rng)
    log_count = np.log(np.arange(1, width + 1, dtype=np.float64))
    hull_x, hull_y = np.empty((4, width + 2)), np.empty((4, width + 2))
    sizes = np.empty(4, dtype=np.int64)
    kernels._upper_hulls(gaps, np.array(widths, dtype=np.int64), log_count, hull_x, hull_y, sizes)
    for r, m in enumerate(widths):
        want = upper_hull_by_plain_chain(gaps[r, :m], log_count[:m])
        got = list(zip(hull_x[r, 2 : 2 + sizes[r]].tolist(), hull_y[r, 2 : 2 + sizes[r]].tolist()))
        assert got == want
