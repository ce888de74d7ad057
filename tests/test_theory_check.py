"""Per-row theorem checks and the comparison of families with their finite-n predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from critscale import gapstats, theory_check
from critscale.families.rows import generate_rows

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


# ------------------------------------------------------------------ completeness


def test_a_family_store_without_prediction_fails_by_name(family_stats, small_grids):
    stats = family_stats("g", {"family": "gaussian"}, [64, 256], 20, small_grids)
    result = theory_check.compare_with_theory(stats.drop_vars("predicted_accumulation_scale"))
    assert len(result) == 1 and not result.passed.iloc[0] and result.check.iloc[0] == "prediction"
    with pytest.raises(theory_check.TheoryCheckError, match="family 'gaussian'.*check 'prediction'"):
        theory_check.raise_on_failure(result, theory_check.theorem_violations(stats))


def test_an_exponent_check_without_two_lengths_fails_by_name(family_stats, small_grids):
    stats = family_stats("one", {"family": "gaussian"}, [256], 40, small_grids)
    result = theory_check.compare_with_theory(stats)
    exponent = result[result.check == "xi"]
    assert len(exponent) == 1 and not exponent.passed.iloc[0] and "1 usable length" in exponent.note.iloc[0]
    with pytest.raises(theory_check.TheoryCheckError, match="family 'gaussian'.*check 'xi'"):
        theory_check.raise_on_failure(result, theory_check.theorem_violations(stats))


def test_a_unit_missing_from_the_fits_table_fails(family_stats, small_grids):
    stats = family_stats("g", {"family": "gaussian"}, [64, 256], 40, small_grids)
    fits = pd.DataFrame({"unit": ["another"], "xi": [0.6], "power_exponent": [0.1]})
    exponent = theory_check.compare_with_theory(stats, fits).query("check == 'xi'")
    assert not exponent.passed.iloc[0] and "no finite xi" in exponent.note.iloc[0]


def test_missing_statistics_are_an_error(clean_stats):
    with pytest.raises(ValueError, match="contact_entropy"):
        theory_check.theorem_violations(clean_stats.drop_vars("contact_entropy"))


# ------------------------------------------------------------------ mutations of the pipeline
# Each mutation is what a buggy accumulation-scale kernel would write into the statistics store:
# its Lambda and contact gap, and everything derived from them consistently (C = Lambda D,
# alpha = C / log n, Lambda^(0), and the responses on the relative grid beta = rho Lambda, which
# the plain reference recomputes at the buggy Lambda).  The other kernels stay correct.

LADDER_SMALL = [64, 256, 1024]
MUTATION_SPECS = {
    "gaussian": {"family": "gaussian", "params": {"sigma": 1.0}},
    "gaussian_quantile": {"family": "gaussian", "params": {"sigma": 1.0}, "sampling": "quantile"},
    "simplex": {"family": "simplex", "params": {"q": 1.0, "p": 0.0}},
}


def buggy_scale(row, count_offset=0, drop_max=False):
    """``(Lambda, D_Lambda)`` of a row with the counting bug ``log(k + count_offset)`` and, with
    ``drop_max``, gaps measured from the second-largest score (the maximum, at a negative gap,
    still counted: ``N(t)`` is then ``1 +`` the count of the row without it)."""
    scores = np.sort(np.asarray(row, dtype=np.float64))[::-1]
    if drop_max:
        scores, count_offset = scores[1:], count_offset + 1
    gaps = scores[0] - scores
    counts = np.searchsorted(gaps, gaps, side="right") + count_offset
    positive = gaps > 0
    if not positive.any():
        return np.inf, 0.0
    ratios = np.log(counts[positive]) / gaps[positive]
    scale = ratios.max()
    return scale, gaps[positive][ratios == scale].max()


MUTATIONS = {
    "lambda_x1.3": lambda row: (lambda scale, gap: (1.3 * scale, gap))(*buggy_scale(row)),
    "log_k_plus_1": lambda row: buggy_scale(row, count_offset=1),
    "gap_from_second": lambda row: buggy_scale(row, drop_max=True),
}


def stored_rows(spec, n, rows, seed):
    """The rows a family store holds (float32, as :func:`critscale.families.dataset.family_dataset`)."""
    scores = generate_rows(spec["family"], spec.get("params"), spec.get("sampling", "random"), n, np.arange(rows), seed)
    return scores.astype(np.float32).astype(np.float64)


def write_buggy_scales(stats, spec, seed, kernel):
    """``stats`` with the accumulation-scale quantities of ``kernel`` (row -> Lambda, D_Lambda)."""
    from critscale.reference import _softmax_response

    out = stats.copy(deep=True)
    arrays = {name: out[name].values for name in out.data_vars}
    zero = int(np.flatnonzero(out["r"].values == 0)[0])
    for i, n in enumerate(out["n"].values):
        for j, row in enumerate(stored_rows(spec, int(n), out.sizes["row"], seed)):
            scale, gap = kernel(row)
            where = (0, i, j)
            entropy = scale * gap if np.isfinite(scale) else np.log(np.sum(row == row.max()))
            arrays["accumulation_scale"][where] = scale
            arrays["contact_gap"][where] = gap
            arrays["contact_entropy"][where] = entropy
            arrays["contact_exponent"][where] = entropy / np.log(n)
            arrays["resolved_scale"][where + (zero,)] = scale
            gaps = np.sort(row.max() - row)
            counts = np.searchsorted(gaps, gaps, side="right")
            with np.errstate(invalid="ignore"):  # rho = 0 times an infinite buggy Lambda
                responses = np.array([_softmax_response(row, gaps, counts, rho * scale) for rho in out["rho"].values])
            for k, name in enumerate(gapstats.RESPONSE_NAMES):
                arrays[f"{name}_rel"][where] = responses[:, k]
    return out


@pytest.fixture(scope="module")
def mutation_stores(small_grids_module):
    from conftest import build_family_stats

    rows = {"gaussian": 200, "gaussian_quantile": 4, "simplex": 8}
    return {
        name: build_family_stats(name, spec, LADDER_SMALL, rows[name], small_grids_module, seed=4)
        for name, spec in MUTATION_SPECS.items()
    }


@pytest.fixture(scope="module")
def small_grids_module():
    return gapstats.Grids(
        t=np.array([0.0, 0.1, 0.5, 1.0]),
        resolutions=np.array([0.0, 1.0]),
        beta=np.geomspace(0.05, 200.0, 25),
        rho=np.array([0.0, 0.1, 0.3, 0.5, 0.8, 0.95, 1.0, 1.05, 1.5, 3.0, 10.0]),
    )


def test_unmutated_stores_pass(mutation_stores):
    for name, stats in mutation_stores.items():
        identity = write_buggy_scales(stats, MUTATION_SPECS[name], 4, buggy_scale)  # the reference kernel
        for store in (stats, identity):
            result = theory_check.compare_with_theory(store)
            theory_check.raise_on_failure(result, theory_check.theorem_violations(store))


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
@pytest.mark.parametrize("name", sorted(MUTATION_SPECS))
def test_each_mutation_fails_naming_family_and_check(mutation_stores, name, mutation):
    spec = MUTATION_SPECS[name]
    mutated = write_buggy_scales(mutation_stores[name], spec, 4, MUTATIONS[mutation])
    comparison = theory_check.compare_with_theory(mutated)
    violations = theory_check.theorem_violations(mutated)
    per_n = "median" if name == "gaussian" else "every_row_exact"
    # the per-n comparison with the family's prediction fails on its own ...
    assert not comparison[comparison.check == per_n].passed.all(), comparison.to_dict("records")
    # ... and so do the per-row theorems, which need no prediction (they run on model stores too)
    assert not violations.empty
    family = spec["family"]
    with pytest.raises(theory_check.TheoryCheckError, match=f"family '{family}'.*check '{per_n}'"):
        theory_check.raise_on_failure(comparison, violations)


def test_lambda_scaled_breaks_the_envelope_identities(mutation_stores):
    stats = mutation_stores["gaussian"]
    mutated = write_buggy_scales(stats, MUTATION_SPECS["gaussian"], 4, MUTATIONS["lambda_x1.3"])
    found = set(theory_check.theorem_violations(mutated).inequality)
    assert {"envelope_contact", "envelope_contact_rel"} <= found, found


@pytest.mark.parametrize("name", ["gaussian_quantile", "simplex"])
def test_xi_shifted_by_0_15_fails_on_exact_families(mutation_stores, name):
    stats = mutation_stores[name]
    log_n = np.log(stats["n"].astype(float))
    shifted = stats.copy(deep=True)
    shifted["accumulation_scale"] = stats["accumulation_scale"] * (log_n / log_n[0]) ** 0.15
    result = theory_check.compare_with_theory(shifted)
    failed = result[result.passed.eq(False).fillna(False)]
    assert {"every_row_exact", "xi"} <= set(failed.check), result.to_dict("records")
    exact = theory_check.compare_with_theory(stats).query("check == 'xi'")
    fits = pd.DataFrame({"unit": [name], "xi": [exact.predicted.iloc[0] + 0.15]})
    given = theory_check.compare_with_theory(stats, fits)
    with pytest.raises(theory_check.TheoryCheckError, match=f"family '{MUTATION_SPECS[name]['family']}'.*check 'xi'"):
        theory_check.raise_on_failure(given, theory_check.theorem_violations(stats))


def test_violations_do_not_depend_on_the_unit_blocks(clean_stats):
    corrupted = clean_stats.copy(deep=True)
    corrupted["accumulation_scale"][dict(unit=0, n=1, row=3)] *= 1.3
    corrupted["accumulation_scale"][dict(unit=2, n=0, row=5)] *= 0.5
    one_unit_blocks = theory_check.theorem_violations(corrupted, block_elements=1)
    whole = theory_check.theorem_violations(corrupted, block_elements=10**9)
    assert set(one_unit_blocks.unit) == {"u0", "u2"}
    pd.testing.assert_frame_equal(one_unit_blocks, whole)


def test_a_new_family_is_generated_predicted_and_checked_from_its_class_alone(family_stats, small_grids, monkeypatch):
    """Adding a family touches its class (registered in the catalog), its schema entry and its
    tests: generation, the finite-n prediction and the theory check ask the class, no module
    branches on which family it is."""
    import math

    from critscale.families import catalog
    from critscale.families.base import ScoreFamily, positive, rounded_to

    class Offset(ScoreFamily):
        """One score ``gap`` above ``n - 1`` zeros: ``Lambda = log n / gap`` exactly."""

        name = "offset"
        parameters = {"gap": (1.0, positive, "a finite number > 0")}
        asymptotic_xi = 1.0

        def sample(self, n, rng):
            row = np.zeros(n)
            row[0] = self.params["gap"]
            return row

        def asymptotic_accumulation_scale(self, n):
            return np.log(np.asarray(n, dtype=np.float64)) / self.params["gap"]

        def exact_accumulation_scale(self, n, dtype):
            return math.log(n) / float(rounded_to(dtype)(self.params["gap"]))

        def predicted_exactly(self, sampling):
            return True

    monkeypatch.setitem(catalog.FAMILIES, "offset", Offset)
    stats = family_stats("src", {"family": "offset", "params": {"gap": 0.25}}, [64, 256, 1024], 50, small_grids)
    result = theory_check.compare_with_theory(stats)
    exact = result[result.check == "every_row_exact"]
    assert len(exact) == 3 and exact.passed.all(), exact.to_dict("records")
    np.testing.assert_allclose(stats["accumulation_scale"].sel(n=1024).values, math.log(1024) / 0.25, rtol=1e-6)
    assert theory_check.theorem_violations(stats).empty
