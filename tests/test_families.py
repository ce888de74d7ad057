"""Synthetic score families: generation, closed forms, finite-n predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special, stats

from critscale import gapstats, storage, theory_check
from critscale.families import predictions
from critscale.families.catalog import make_family
from critscale.families.dataset import family_dataset
from critscale.families.predictions import predict_accumulation_scale
from critscale.families.rows import generate_rows
from critscale.families.spec import parse_spec

GRIDS = gapstats.Grids(t=[0.1], resolutions=[0.0], beta=[1.0], rho=[0.5])
IID = {
    "gaussian": {"sigma": 1.5},
    "weibull": {"gamma": 3.0},
    "shrinking_gaps": {"c": 0.7},
    "sphere": {"d": 5, "query_norm": 2.0},
}


def accumulation_scale(rows):
    return gapstats.row_statistics(rows, GRIDS)["accumulation_scale"]


# ------------------------------------------------------------------ generation and validation


@pytest.mark.parametrize(
    "family,params",
    list(IID.items()) + [("simplex", {"q": 1.0, "p": 0.0}), ("tied", {"sigma": 1.0, "ties": 3})],
)
def test_rows_do_not_depend_on_chunking_and_are_deterministic(family, params):
    whole = generate_rows(family, params, "random", 64, np.arange(10), seed=3)
    split = np.concatenate([
        generate_rows(family, params, "random", 64, np.arange(5), seed=3),
        generate_rows(family, params, "random", 64, np.arange(5, 10), seed=3),
    ])
    np.testing.assert_array_equal(whole, split)
    np.testing.assert_array_equal(whole, generate_rows(family, params, "random", 64, np.arange(10), seed=3))
    assert whole.shape == (10, 64) and whole.dtype == np.float64
    if family not in ("simplex",):
        assert not np.array_equal(whole, generate_rows(family, params, "random", 64, np.arange(10), seed=4))


@settings(max_examples=25, deadline=None)
@given(cut=st.integers(0, 12), seed=st.integers(0, 2**31))
def test_any_split_of_rows_gives_the_same_scores(cut, seed):
    rows = np.arange(3, 15)
    whole = generate_rows("gaussian", {}, "random", 17, rows, seed)
    parts = [generate_rows("gaussian", {}, "random", 17, part, seed) for part in (rows[:cut], rows[cut:]) if len(part)]
    np.testing.assert_array_equal(whole, np.concatenate(parts))


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: make_family("cauchy", {}), "unknown family 'cauchy'.*gaussian"),
        (lambda: make_family("gaussian", {"scale": 1}), "unknown parameter 'scale'.*sigma"),
        (lambda: make_family("gaussian", {"sigma": -1}), "'sigma'=-1.*> 0"),
        (lambda: make_family("weibull", {}), "'gamma' is required"),
        (lambda: make_family("simplex", {"q": 0, "p": 1}), "'p'=1 must be < q"),
        (lambda: make_family("sphere", {"d": 2.5}), "'d'=2.5.*integer >= 2"),
        (lambda: make_family("tied", {"ties": 1}), "'ties'=1.*integer >= 2"),
        (lambda: generate_rows("simplex", {"q": 1, "p": 0}, "quantile", 8, [0], 0), "i.i.d. family"),
        (lambda: generate_rows("gaussian", {}, "sobol", 8, [0], 0), "unknown sampling 'sobol'.*quantile"),
        (lambda: generate_rows("tied", {"ties": 4}, "random", 3, [0], 0), "smaller than ties"),
        (lambda: parse_spec({"family": "gaussian", "sigma": 1}), "unknown key 'sigma'"),
        (lambda: parse_spec({"params": {}}), "'family' is required"),
    ],
)
def test_bad_configuration_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ------------------------------------------------------------------ closed forms and marginals


@settings(max_examples=30, deadline=None)
@given(
    q=st.floats(-5, 5), width=st.floats(0.01, 10), n=st.integers(2, 300),
    dtype=st.sampled_from(["float32", "float64"]),
)
def test_simplex_accumulation_scale_is_log_n_over_gap(q, width, n, dtype):
    params = {"q": q, "p": q - width}
    rows = generate_rows("simplex", params, "random", n, [0, 1], 0).astype(dtype)
    predicted = predict_accumulation_scale("simplex", params, "random", n, quantiles=[0.5], dtype=dtype)[0]
    stored_gap = float(np.asarray(q, dtype)) - float(np.asarray(q - width, dtype))
    np.testing.assert_allclose(accumulation_scale(rows), np.log(n) / stored_gap, rtol=1e-12)
    np.testing.assert_allclose(predicted, np.log(n) / stored_gap, rtol=1e-12)


def test_tied_rows_have_infinite_scale_and_report_ties():
    rows = generate_rows("tied", {"sigma": 2.0, "ties": 3}, "random", 100, np.arange(20), 1).astype(np.float32)
    result = gapstats.row_statistics(rows, GRIDS)
    assert np.all(np.isposinf(result["accumulation_scale"])) and np.all(result["ties"] == 3)
    assert np.all(np.isposinf(predict_accumulation_scale("tied", {}, "random", 100, quantiles=[0.1, 0.5])))


def test_marginals_match_their_laws():
    rows = lambda family, params: generate_rows(family, params, "random", 4000, [0, 1], 11).ravel()
    assert stats.kstest(rows("gaussian", {"sigma": 1.5}), stats.norm(scale=1.5).cdf).pvalue > 1e-3
    assert stats.kstest(rows("weibull", {"gamma": 3.0}), stats.weibull_min(3.0).cdf).pvalue > 1e-3
    assert stats.kstest(rows("weibull", {"gamma": 1.0}), stats.expon.cdf).pvalue > 1e-3
    for d in (3, 9):
        unit = rows("sphere", {"d": d, "query_norm": 2.0}) / 2.0
        assert stats.kstest((unit + 1) / 2, stats.beta((d - 1) / 2, (d - 1) / 2).cdf).pvalue > 1e-3
    shrinking = generate_rows("shrinking_gaps", {"c": 0.7}, "random", 4000, [0], 11)[0]
    assert shrinking[0] == 0 and np.all(shrinking[1:] < 0)
    assert stats.kstest(-shrinking[1:], lambda u: np.exp(-0.7 / u)).pvalue > 1e-3


@pytest.mark.parametrize("family", sorted(IID))
def test_isf_is_accurate_down_to_two_to_the_minus_200(family):
    fam = make_family(family, IID[family])
    u = np.array([0.5, 1e-3, 1e-30, 2.0**-200])
    x = fam.isf(u)
    assert np.all(np.isfinite(x)) and np.all(np.diff(x) >= 0)
    if family == "sphere":
        # Scores are bounded by |q| = 2: a float64 score resolves the distance to the bound only
        # to 2 * 2**-53, so the survival is checked where that distance is resolvable.
        assert x[-1] <= 2.0
        u, x = u[:2], x[:2]
    if family == "gaussian":
        log_survival = stats.norm.logsf(x / 1.5)
    elif family == "weibull":
        log_survival = -(x**3.0)
    elif family == "shrinking_gaps":
        log_survival = 0.7 / x  # P(-D > x) = exp(c / x)
    else:
        a = 2.0  # (d - 1) / 2; by symmetry P(s > x) = I_{(1 - x/|q|)/2}(a, a)
        log_survival = np.log(special.betainc(a, a, (1 - x / 2.0) / 2))
    np.testing.assert_allclose(log_survival, np.log(u), rtol=1e-6)


def test_asymptotic_exponents_and_scales():
    n = np.array([2.0**10, 2.0**20])
    assert make_family("gaussian", {}).asymptotic_xi == 0.5
    assert make_family("weibull", {"gamma": 4.0}).asymptotic_xi == 0.75
    assert make_family("shrinking_gaps", {"c": 1}).asymptotic_xi == 2.0
    assert make_family("simplex", {"q": 1, "p": 0}).asymptotic_xi == 1.0
    assert np.isnan(make_family("sphere", {"d": 3}).asymptotic_xi)
    np.testing.assert_allclose(make_family("gaussian", {"sigma": 2}).asymptotic_accumulation_scale(n),
                               np.sqrt(2 * np.log(n)) / 2)
    np.testing.assert_allclose(make_family("shrinking_gaps", {"c": 2}).asymptotic_accumulation_scale(n),
                               np.log(n) ** 2 / 8)
    sphere = make_family("sphere", {"d": 5}).asymptotic_accumulation_scale(n)
    np.testing.assert_allclose(np.log(sphere[1] / sphere[0]) / np.log(n[1] / n[0]), 0.5)


# ------------------------------------------------------------------ finite-n predictions


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("family", sorted(IID))
@pytest.mark.parametrize("n", [2, 1000, 2**12])
def test_quantile_row_prediction_equals_full_row(family, dtype, n):
    row = generate_rows(family, IID[family], "quantile", n, [0, 5], 0)
    assert np.array_equal(row[0], row[1])  # deterministic: the same for every row
    measured = accumulation_scale(row.astype(dtype))
    predicted = predict_accumulation_scale(family, IID[family], "quantile", n, quantiles=[0.1, 0.5], dtype=dtype)
    np.testing.assert_allclose(measured, predicted[0], rtol=1e-9)
    np.testing.assert_array_equal(predicted[0], predicted[1])


@pytest.mark.parametrize("family", sorted(IID) + ["exponential"])
def test_simulated_law_of_lambda_equals_full_rows(family):
    """Small n, many rows: the simulated per-row Lambda has the law of full rows (KS test)."""
    name, params = ("weibull", {"gamma": 1.0}) if family == "exponential" else (family, IID[family])
    fam = make_family(name, params)
    simulated = predictions._random_row_scales(fam, 40, 3000, np.random.default_rng(0), "float64")
    full = accumulation_scale(generate_rows(name, params, "random", 40, np.arange(3000), 9))
    assert stats.ks_2samp(simulated, full).pvalue > 1e-3


def test_prediction_is_deterministic_and_handles_tiny_n():
    first = predict_accumulation_scale("gaussian", {}, "random", 64, draws=300, seed=5, quantiles=[0.25, 0.5])
    again = predict_accumulation_scale("gaussian", {}, "random", 64, draws=300, seed=5, quantiles=[0.25, 0.5])
    np.testing.assert_array_equal(first, again)
    assert np.all(predict_accumulation_scale("gaussian", {}, "random", 1, draws=10) == 0)
    two = accumulation_scale(generate_rows("shrinking_gaps", {"c": 1.0}, "random", 2, np.arange(2000), 0))
    simulated = predictions._random_row_scales(make_family("shrinking_gaps", {"c": 1.0}), 2, 2000,
                                            np.random.default_rng(1), "float64")
    assert stats.ks_2samp(simulated, two).pvalue > 1e-3


@pytest.mark.parametrize(
    "name,spec",
    [
        ("gauss", {"family": "gaussian", "params": {"sigma": 1.0}}),
        ("shrink", {"family": "shrinking_gaps", "params": {"c": 1.0}}),
        ("sphere5", {"family": "sphere", "params": {"d": 5}}),
        ("expo", {"family": "weibull", "params": {"gamma": 1.0}}),
    ],
)
def test_top_k_medians_match_full_rows_at_n_1024(family_stats, name, spec):
    """A few hundred full rows at n = 2**10: medians inside the predicted sampling interval."""
    stats_ds = family_stats(name, spec, [2**10], 300, GRIDS, seed=2)
    result = theory_check.compare_with_theory(stats_ds, None)
    median = result[result.check == "median"].iloc[0]
    assert median.passed, median.to_dict()
    assert 0.85 < median.ratio < 1.15  # a few percent, as theory.md says


# ------------------------------------------------------------------ local slopes quoted in theory.md


def quantile_slope(family, params, low, high):
    """d log Lambda / d log log n between n = 2**low and 2**high on quantile rows (float64)."""
    value = lambda e: predict_accumulation_scale(family, params, "quantile", 2**e, dtype="float64")[0]
    return np.log(value(high) / value(low)) / np.log(high / low)  # log log 2**e = log e + const


@pytest.mark.parametrize(
    "family,params,low,high,expected,tolerance",
    [
        ("gaussian", {}, 8, 12, 0.71, 0.01),
        ("gaussian", {}, 20, 30, 0.64, 0.01),
        ("gaussian", {}, 100, 200, 0.55, 0.01),
        ("weibull", {"gamma": 3.0}, 8, 12, 0.79, 0.01),
        ("weibull", {"gamma": 3.0}, 100, 200, 0.71, 0.01),
        ("weibull", {"gamma": 1.0}, 16, 30, 0.0, 0.06),
        ("weibull", {"gamma": 1.0}, 30, 200, 0.0, 0.03),
    ],
)
def test_quantile_row_local_slopes_of_theory(family, params, low, high, expected, tolerance):
    assert abs(quantile_slope(family, params, low, high) - expected) <= tolerance


def test_shrinking_gap_slopes_are_about_two():
    """docs/theory.md: with the explicit maximum kept (this module's quantile row) the slope rises
    from 1.93 to 2.0; rows of n quantile values without that maximum give 2.0-2.1.  Both are
    checked."""
    slopes = [quantile_slope("shrinking_gaps", {"c": 1.0}, lo, hi) for lo, hi in ((8, 12), (12, 16), (20, 30))]
    assert all(1.9 <= s <= 2.05 for s in slopes) and slopes == sorted(slopes)
    fam = make_family("shrinking_gaps", {"c": 1.0})
    without_max = lambda e: accumulation_scale(fam.isf((np.arange(1, 2**e + 1) - 0.5) / 2**e)[None])[0]
    for lo, hi in ((8, 12), (12, 16)):
        assert 2.0 <= np.log(without_max(hi) / without_max(lo)) / np.log(hi / lo) <= 2.1


# ------------------------------------------------------------------ the lazy dataset


def test_family_dataset_layout_is_lazy_and_canonical(tmp_path):
    spec = {"family": "weibull", "params": {"gamma": 2.0}, "sampling": "random"}
    ds = family_dataset("weib2", spec | {"rows": 10, "dtype": "float32"}, [16, 64], rows=10, seed=1,
                                 row_chunk=4, prediction_draws=200, quantiles=[0.1, 0.9])
    scores = ds["scores"]
    assert scores.dims == storage.SCORE_DIMS and scores.dtype == np.float32
    assert scores.data.numblocks == (1, 2, 3, 1)  # one task per (n, row chunk)
    assert list(ds["unit"].values) == ["weib2"] and list(ds["sequence"].values) == list(range(10))
    assert ds.attrs["kind"] == "family" and ds.attrs["family"] == "weibull" and ds.attrs["sampling"] == "random"
    assert json.loads(ds.attrs["params"]) == {"gamma": 2.0} and ds.attrs["asymptotic_xi"] == 0.5
    assert json.loads(ds.attrs["provenance"])["config"] == spec | {"rows": 10, "dtype": "float32"}
    values = scores.values
    assert np.all(np.isnan(values[0, 0, :, 16:])) and not np.any(np.isnan(values[0, 0, :, :16]))
    np.testing.assert_array_equal(
        values[0, 1, 4:8, :64], generate_rows("weibull", {"gamma": 2.0}, "random", 64, np.arange(4, 8), 1).astype(np.float32)
    )
    predicted = ds["predicted_accumulation_scale"]
    levels = predicted["prediction_quantile"].values
    assert predicted.dims == ("n", "prediction_quantile") and {0.1, 0.5, 0.9} <= set(levels) and len(levels) == 5
    assert np.all(np.diff(predicted.values, axis=1) >= 0)
    storage.write_dataset(ds, tmp_path / "weib2.zarr")
    back = storage.open_store(tmp_path / "weib2.zarr")
    np.testing.assert_array_equal(back["scores"].values, values)
    assert back.attrs["source"] == "weib2"


def test_family_dataset_for_families_without_asymptote():
    ds = family_dataset("tie", {"family": "tied"}, [8], rows=3, seed=0, row_chunk=2)
    assert np.isnan(ds.attrs["asymptotic_xi"]) and np.all(np.isposinf(ds["asymptotic_accumulation_scale"]))
    assert np.all(np.isposinf(ds["predicted_accumulation_scale"].values))
