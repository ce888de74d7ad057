"""Per-row theorem checks and the comparison of families with their finite-n predictions."""

from __future__ import annotations

import numpy as np
import pytest

from critscale import gapstats, theory_check
from critscale.families import generate_rows

ROWS_BY_FAMILY = {
    "gaussian": {"sigma": 1.0},
    "weibull": {"gamma": 1.0},
    "shrinking_gaps": {"c": 0.5},
    "sphere": {"d": 3},
    "simplex": {"q": 1.0, "p": 0.2},
    "tied": {"ties": 2},
}


def random_rows(n, rows=40, seed=0, dtype=np.float32):
    """Rows of every family, stacked as units: ``(units, rows, n)``, rounded to ``dtype``."""
    return np.stack([
        generate_rows(family, params, "random", n, np.arange(rows), seed).astype(dtype)
        for family, params in ROWS_BY_FAMILY.items()
    ])


@pytest.fixture
def clean_stats(make_stats, small_grids):
    stats = make_stats({64: random_rows(64), 300: random_rows(300)}, small_grids, attrs={"source": "mixed"})
    # an empty (fully masked) row must be skipped, not reported
    empty = gapstats.row_statistics(np.full((1, 300), np.nan), small_grids)
    for name, value in empty.items():
        stats[name][dict(unit=0, n=1, row=0)] = value[0]
    return stats


def test_no_violations_on_random_rows(clean_stats):
    assert np.isnan(clean_stats["free_energy"][0, 1, 0]).all()  # the masked row is there
    found = theory_check.theorem_violations(clean_stats)
    assert found.empty, found.head()
    assert list(found.columns) == list(theory_check.VIOLATION_COLUMNS)


def test_inequalities_are_exercised_on_both_sides_of_lambda(clean_stats):
    """The grids put beta below and above Lambda for finite-Lambda rows, so the test above is not
    vacuous."""
    scale = clean_stats["accumulation_scale"].values
    beta = clean_stats["beta"].values
    finite = np.isfinite(scale)
    assert (beta[None, None, None, :] > scale[..., None])[finite].any()
    assert (beta[None, None, None, :] < scale[..., None])[finite].any()
    assert (clean_stats["rho"] > 1).any() and (clean_stats["rho"] < 1).any()


@pytest.mark.parametrize(
    "variable,grid_index,change,inequality",
    [
        ("free_energy", 3, +2.0, "envelope_upper"),
        ("free_energy", 3, -50.0, "envelope_lower"),
        ("free_energy_rel", 9, +5.0, "partition_bound_rel"),
        ("top_two_gap_rel", 2, +0.9, "top_two_bound_rel"),
        ("laplace_envelope_rel", 4, +30.0, "envelope_lower_rel"),
    ],
)
def test_corrupted_statistics_are_caught(clean_stats, variable, grid_index, change, inequality):
    corrupted = clean_stats.copy(deep=True)
    where = dict(unit=0, n=1, row=7)  # a Gaussian row of 300 keys
    corrupted[variable][where] = corrupted[variable][where].values + np.where(
        np.arange(corrupted[variable].shape[-1]) == grid_index, change, 0.0
    )
    found = theory_check.theorem_violations(corrupted)
    assert not found.empty
    hit = found[found.inequality == inequality]
    assert len(hit) >= 1 and set(hit.row) == {7} and set(hit.n) == {300} and set(hit.unit) == {"u0"}
    assert (hit.lhs > hit.rhs).all() and (hit.source == "mixed").all()


def test_a_wrong_accumulation_scale_breaks_the_partition_bound(clean_stats):
    corrupted = clean_stats.copy(deep=True)
    corrupted["accumulation_scale"][dict(unit=0, n=1, row=3)] = 0.01  # far below the true Lambda
    found = theory_check.theorem_violations(corrupted)
    assert "partition_bound" in set(found.inequality)


# ------------------------------------------------------------------ comparison with predictions


@pytest.mark.parametrize(
    "spec,check",
    [
        ({"family": "gaussian", "params": {"sigma": 0.5}}, "median"),
        ({"family": "shrinking_gaps", "params": {"c": 1.0}}, "median"),
        ({"family": "sphere", "params": {"d": 3}}, "median"),
        ({"family": "simplex", "params": {"q": 0.3, "p": -0.1}}, "every_row_exact"),
        ({"family": "weibull", "params": {"gamma": 3.0}, "sampling": "quantile"}, "every_row_exact"),
        ({"family": "tied", "params": {"ties": 3}}, "every_row_tied"),
    ],
)
def test_families_agree_with_their_predictions(family_stats, small_grids, spec, check):
    stats = family_stats("src", spec, [64, 256, 1024], 200, small_grids, seed=4)
    result = theory_check.compare_with_theory(stats)
    assert list(result.columns) == list(theory_check.COMPARISON_COLUMNS)
    per_n = result[result.check == check]
    assert len(per_n) == 3 and per_n.passed.all(), per_n.to_dict("records")
    exponent = result[result.check.isin(["xi", "power_exponent"])]
    if spec["family"] == "tied":
        assert exponent.empty
    else:
        assert len(exponent) == 1 and exponent.passed.all(), exponent.to_dict("records")
        info = result[result.check.str.startswith("asymptotic")]
        assert len(info) == 1 and info.passed.isna().all()
    assert theory_check.theorem_violations(stats).empty


def test_comparison_fails_when_measurements_are_off(family_stats, small_grids):
    stats = family_stats("g", {"family": "gaussian"}, [64, 256, 1024], 200, small_grids, seed=4)
    skewed = stats.copy(deep=True)
    # xi off by 1.5: far outside the honest (wide) tolerance of 200 heavy-tailed rows on 64..1024
    skewed["accumulation_scale"] = skewed["accumulation_scale"] * (np.log(skewed["n"]) / np.log(64)) ** 1.5
    result = theory_check.compare_with_theory(skewed)
    assert not result[result.check == "median"].passed.all()
    assert not result[result.check == "xi"].passed.iloc[0]
    given = theory_check.compare_with_theory(stats, 2.0)
    assert not given[given.check == "xi"].passed.iloc[0]
    with pytest.raises(theory_check.TheoryCheckError, match="1 comparison"):
        theory_check.raise_on_failure(given, theory_check.theorem_violations(stats))

    simplex = family_stats("s", {"family": "simplex", "params": {"q": 1, "p": 0}}, [64], 20, small_grids)
    simplex["accumulation_scale"][dict(unit=0, n=0, row=5)] *= 1 + 1e-6
    assert not theory_check.compare_with_theory(simplex).passed.iloc[0]


def test_model_stores_have_nothing_to_compare(make_stats, small_grids):
    stats = make_stats({64: random_rows(64, rows=3)}, small_grids, attrs={"kind": "model", "source": "m"})
    assert theory_check.compare_with_theory(stats).empty


def test_measured_exponents_from_the_fits_table(family_stats, small_grids):
    from critscale import fitting

    stats = family_stats("sph", {"family": "sphere", "params": {"d": 5}}, [64, 256, 1024], 100, small_grids)
    fits = fitting.fit_source(stats, held_out=1, n_boot=20)
    result = theory_check.compare_with_theory(stats, fits)
    exponent = result[result.check == "power_exponent"].iloc[0]
    assert exponent.measured == pytest.approx(fits.power_exponent.iloc[0]) and exponent.passed
    assert "given by the caller" in exponent.note
    theory_check.raise_on_failure(result, theory_check.theorem_violations(stats))  # does not raise
