"""Exponent fits on statistics stores with known answers (``critscale.fitting``)."""

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from critscale import config as study_config
from critscale.fitting import LAWS, fit_source, fits_to_dataset, headline, median_aggregates, settings_from_config
from critscale.resampling import SortedRows
from critscale.storage import open_store, write_dataset
from synthetic_stats import LADDER, log_law_stats, stats_from_rows

WIDE_LADDER = tuple(2**k for k in range(4, 22, 2))


def test_weighted_median_equals_median_of_expanded_rows():
    rng = np.random.default_rng(3)
    for _ in range(100):
        rows = int(rng.integers(1, 9))
        units = np.unique(rng.integers(0, 4, rows), return_inverse=True)[1]
        values = np.where(
            rng.random((2, 3, rows)) < 0.5,
            rng.normal(size=(2, 3, rows)),
            rng.choice([0.5, 1.0, 2.0, np.inf, np.nan], size=(2, 3, rows)),
        )
        multiplicity = rng.integers(0, 4, (5, units.max() + 1))
        got = SortedRows(values, units).medians(multiplicity)
        assert got.shape == (5, 2, 3)
        for replicate, index in np.ndindex(5, 6):
            lane = np.unravel_index(index, (2, 3))
            expanded = np.repeat(values[lane], multiplicity[replicate][units])
            expanded = expanded[~np.isnan(expanded)]
            expected = np.median(expanded) if expanded.size else np.nan
            np.testing.assert_equal(got[(replicate, *lane)], expected)


def test_recovers_known_exponents_within_their_intervals():
    exponents = [0.5, 1.0, 1.3, 2.0]
    # A 99% interval, so that all four covering is the expected outcome, not a coin toss.
    fits = fit_source(log_law_stats(exponents, n_sequences=128, sigma=0.2), level=0.99)
    assert list(fits["fit_status"]) == ["fitted"] * 4
    for exponent, (_, fit) in zip(exponents, fits.iterrows()):
        assert fit.xi_low <= exponent <= fit.xi_high
        assert fit.xi_low < fit.xi < fit.xi_high
        assert abs(fit.xi - exponent) < 0.15
    assert list(fits["excludes_one"]) == [True, False, True, True]
    assert list(fits["discovery"]) == [True, False, True, True]


def test_interval_coverage_is_near_its_level():
    fits = fit_source(log_law_stats(np.ones(80), n_sequences=64, seed=11), n_boot=200, level=0.9)
    coverage = np.mean((fits["xi_low"] <= 1) & (1 <= fits["xi_high"]))
    assert 0.75 <= coverage <= 0.99


def test_bootstrap_resamples_sequences_not_rows():
    # Eight rows per sequence, identical within the sequence: the data hold 16 independent
    # draws, not 128, and the interval must say so.
    exponents = [0.5, 1.0, 1.5, 2.0]
    settings = dict(n_sequences=16, identical_within_sequence=True, seed=5)
    correlated = log_law_stats(exponents, rows_per_sequence=8, **settings)
    one_row_each = log_law_stats(exponents, rows_per_sequence=1, **settings)
    as_if_independent = correlated.assign_coords(sequence=("row", np.arange(correlated.sizes["row"])))
    by_sequence = fit_source(correlated)
    by_row = fit_source(as_if_independent)
    assert (by_sequence["n_sequences"] == 16).all() and (by_row["n_sequences"] == 128).all()
    np.testing.assert_array_equal(by_sequence["xi"], by_row["xi"])
    # Replicating every row eightfold changes no median, so resampling sequences gives exactly
    # the interval of the 16 distinct rows: the copies add no information.
    interval_columns = ["xi_low", "xi_high", "power_exponent_low", "power_exponent_high"]
    pd.testing.assert_frame_equal(by_sequence[interval_columns], fit_source(one_row_each)[interval_columns])
    width_ratio = (by_sequence["xi_high"] - by_sequence["xi_low"]) / (by_row["xi_high"] - by_row["xi_low"])
    assert (width_ratio > 1).all() and width_ratio.mean() > 1.5


@pytest.mark.parametrize(
    "law, scale",
    [
        ("sqrt_log", lambda log_n: 2.0 * np.sqrt(log_n)),
        ("log", lambda log_n: 0.7 * log_n),
        ("log_squared", lambda log_n: 0.05 * log_n**2),
        ("free", lambda log_n: 1.5 * log_n**1.3),
        ("power", lambda log_n: 0.9 * np.exp(0.3 * log_n)),
    ],
)
def test_law_winner_is_the_true_law_on_clean_data(law, scale):
    log_n = np.log(np.asarray(WIDE_LADDER, dtype=np.float64))
    rows = np.broadcast_to(scale(log_n)[None, :, None], (1, len(WIDE_LADDER), 8))
    fit = fit_source(stats_from_rows(rows, n_ladder=WIDE_LADDER), n_boot=20).iloc[0]
    # Noise-free: every resample picks the same law, so the headline is decided.
    assert fit.law_winner == fit.law_point_winner == law
    assert fit[f"law_frequency_{law}"] == 1
    assert fit[f"heldout_error_{law}"] < 1e-20
    assert set(LAWS) == {column.removeprefix("heldout_error_") for column in fit.index if column.startswith("heldout_error_")}


def test_power_exponent_of_polynomial_scale():
    rng = np.random.default_rng(2)
    n = np.asarray(LADDER, dtype=np.float64)
    rows = n[None, :, None] ** 0.5 * np.exp(rng.normal(0, 0.1, (1, len(n), 64)))
    fit = fit_source(stats_from_rows(rows)).iloc[0]
    assert fit.power_exponent_low <= 0.5 <= fit.power_exponent_high
    assert fit.law_winner == "power" and fit.law_frequency_power >= 0.8


def test_decomposition_is_exact_for_deterministic_alpha_and_gap():
    log_n = np.log(np.asarray(LADDER, dtype=np.float64))[None, :, None]
    shape = (1, len(LADDER), 10)
    alpha = np.broadcast_to(0.2 * log_n**0.3, shape)
    gap = np.broadcast_to(0.7 * log_n**0.8, shape)
    stats = stats_from_rows(alpha * log_n / gap, contact_exponent=alpha, contact_gap=gap)
    fit = fit_source(stats).iloc[0]
    assert fit.xi_alpha == pytest.approx(0.3) and fit.xi_D == pytest.approx(0.8)
    assert fit.xi == pytest.approx(0.5)
    assert abs(fit.decomposition_residual) < 1e-12
    assert fit.xi_high - fit.xi_low < 1e-12  # nothing to resample


def test_decomposition_residual_is_reported_when_medians_do_not_compose():
    stats = log_law_stats([1.0], n_sequences=40)  # even row count: medians of 1/x and x differ
    fit = fit_source(stats).iloc[0]
    assert np.isfinite(fit.decomposition_residual) and fit.decomposition_residual != 0
    assert fit.xi_decomposed + fit.decomposition_residual == pytest.approx(fit.xi)


def test_tied_units_are_reported_not_fitted():
    stats = log_law_stats([1.0, 1.0, 1.0], n_sequences=50)
    scale = stats["accumulation_scale"].values.copy()
    scale[0, :, :30] = np.inf  # 60% tied: median inf
    scale[1, :, :15] = np.inf  # 30% tied: median finite
    fits = fit_source(stats_from_rows(scale))
    assert list(fits["fit_status"]) == ["tied", "fitted", "fitted"]
    assert fits["tied_fraction"].tolist() == pytest.approx([0.6, 0.3, 0.0])
    tied = fits.iloc[0]
    fit_columns = ["xi", "xi_low", "xi_high", "xi_se", "xi_alpha", "xi_D", "power_exponent"]
    assert tied[fit_columns].isna().all() and pd.isna(tied.law_winner) and pd.isna(tied.excludes_one)
    assert pd.isna(tied.discovery) and np.isnan(tied.p_value_xi_one)
    assert np.isfinite(fits.iloc[1][fit_columns].astype(float)).all()
    medians = median_aggregates(stats_from_rows(scale))
    assert np.isposinf(medians["median_lambda"].values[0]).all()


def test_interval_is_withheld_when_many_replicates_are_tied():
    stats = log_law_stats([1.0], n_sequences=50)
    scale = stats["accumulation_scale"].values.copy()
    scale[0, :, :23] = np.inf  # 46% tied: the point median is finite, many replicates are not
    fit = fit_source(stats_from_rows(scale), level=0.9).iloc[0]
    assert fit.fit_status == "fitted" and np.isfinite(fit.xi)
    assert 0 < fit.boot_valid_fraction < 0.9
    assert np.isnan(fit.xi_low) and np.isnan(fit.xi_high) and pd.isna(fit.excludes_one)


def test_too_few_lengths_are_not_fitted_and_n_below_two_is_dropped():
    rows = np.full((1, 3, 4), 2.0)
    fit = fit_source(stats_from_rows(rows, n_ladder=(1, 64, 256))).iloc[0]
    assert fit.fit_status == "too_few_lengths" and fit.n_min == 64 and fit.n_lengths == 2
    assert np.isnan(fit.xi) and pd.isna(fit.law_winner)


def test_fit_is_deterministic_for_a_seed_and_independent_of_chunking():
    stats = log_law_stats([0.5, 1.0], n_sequences=16, rows_per_sequence=4, seed=1)
    first = fit_source(stats, seed=7)
    pd.testing.assert_frame_equal(first, fit_source(stats, seed=7))
    pd.testing.assert_frame_equal(first, fit_source(stats.chunk({"unit": 1, "row": 16}), seed=7))
    other = fit_source(stats, seed=8)
    np.testing.assert_array_equal(first["xi"], other["xi"])
    assert not np.array_equal(first["xi_low"], other["xi_low"])


def test_model_labels_and_dataset_round_trip(tmp_path):
    stats = log_law_stats(
        [0.8, 1.2], n_sequences=8, rows_per_sequence=3, layer=[0, 1], head=[3, 3],
        units=["L0H3", "L1H3"], source="model-x-corpus", kind="model",
    )
    fits = fit_source(stats, n_boot=50)
    assert list(fits[["source", "kind", "unit", "layer", "head"]].itertuples(index=False, name=None)) == [
        ("model-x-corpus", "model", "L0H3", 0, 3),
        ("model-x-corpus", "model", "L1H3", 1, 3),
    ]
    assert json.loads(fits.attrs["provenance"])["config"]["fitting"]["n_boot"] == 50
    write_dataset(fits_to_dataset(fits), tmp_path / "fits.zarr")
    back = open_store(tmp_path / "fits.zarr").load()
    np.testing.assert_array_equal(back["xi"].values, fits["xi"].to_numpy())
    assert list(back["law_winner"].values) == list(fits["law_winner"])
    assert list(back["unit"].values) == ["L0H3", "L1H3"]
    np.testing.assert_array_equal(back["excludes_one"].values, fits["excludes_one"].astype(float))
    assert back.attrs["provenance"] == fits.attrs["provenance"]


@pytest.mark.parametrize("n_sequences", [1, 2, 3])
def test_too_few_units_give_no_interval_and_no_claim(n_sequences):
    # Rows of a window are identical (one draw per window): with 1 window every resample is the
    # same and the percentile interval used to have zero width and "exclude 1".
    stats = log_law_stats([0.5, 2.0], n_sequences=n_sequences, rows_per_sequence=8, identical_within_sequence=True)
    fits = fit_source(stats, n_boot=50)
    assert list(fits["fit_status"]) == ["too_few_units"] * 2
    assert np.isfinite(fits["xi"]).all()
    for column in ("xi_low", "xi_high", "p_value_xi_one", "xi_alpha_low", "power_exponent_high"):
        assert fits[column].isna().all(), column
    assert fits["excludes_one"].isna().all() and fits["discovery"].isna().all() and fits["law_winner"].isna().all()
    assert fits["law_point_winner"].notna().all()


def test_min_sequences_is_configurable_and_checked():
    stats = log_law_stats([0.5], n_sequences=6, rows_per_sequence=2)
    assert fit_source(stats, n_boot=50).iloc[0].fit_status == "fitted"
    assert fit_source(stats, n_boot=50, min_sequences=7).iloc[0].fit_status == "too_few_units"
    for bad, message in [
        (dict(min_sequences=1), "min_sequences"), (dict(method="bca"), "method"), (dict(fdr=0.0), "fdr"),
        (dict(fdr_method="holm"), "fdr_method"), (dict(law_share=1.5), "law_share"),
    ]:
        with pytest.raises(ValueError, match=message):
            fit_source(stats, n_boot=50, **bad)


def test_zero_width_interval_never_excludes_one():
    # Deterministic rows with xi = 0.5: every resample gives the same slope.
    log_n = np.log(np.asarray(LADDER, dtype=np.float64))
    rows = np.broadcast_to((log_n**0.5)[None, :, None], (1, len(LADDER), 12))
    fit = fit_source(stats_from_rows(rows), n_boot=50).iloc[0]
    assert fit.fit_status == "fitted" and fit.xi == pytest.approx(0.5)
    assert fit.xi_high - fit.xi_low == 0
    assert pd.isna(fit.excludes_one) and pd.isna(fit.discovery) and np.isnan(fit.p_value_xi_one)


def test_student_t_interval_and_p_value_say_the_same():
    fits = fit_source(log_law_stats(np.linspace(0.7, 1.3, 40), n_sequences=12, rows_per_sequence=4, seed=4), n_boot=200)
    has = fits["excludes_one"].notna()
    assert has.all()
    np.testing.assert_array_equal(fits["excludes_one"].astype(bool), fits["p_value_xi_one"] < 0.1)
    # The interval is symmetric about xi with half-width t_{G-1} * se.
    from scipy import stats as scipy_stats

    half = scipy_stats.t.ppf(0.95, 11) * fits["xi_resampling_se"]
    np.testing.assert_allclose(fits["xi_high"] - fits["xi"], half, rtol=1e-12)
    np.testing.assert_allclose(fits["xi"] - fits["xi_low"], half, rtol=1e-12)


def test_fdr_controls_the_claim_over_many_null_units():
    # 200 units, all with xi = 1: the raw count has about 10% false "excludes 1", FDR ~ none.
    fits = fit_source(log_law_stats(np.ones(200), n_sequences=16, rows_per_sequence=2, seed=9), n_boot=200)
    assert 8 <= fits["excludes_one"].astype(bool).sum() <= 40
    assert fits["discovery"].astype(bool).sum() <= 1
    summary = headline(fits).iloc[0]
    assert summary.fraction_excluding_one_raw == fits["excludes_one"].astype(bool).mean()
    assert summary.fraction_excluding_one_fdr == fits["discovery"].astype(bool).mean()
    assert summary.expected_false_raw_if_all_null == pytest.approx(0.1 * 200)
    assert summary.expected_false_discoveries_fdr == pytest.approx(0.05 * summary.discoveries_fdr)


def test_headline_counts_decided_laws_and_undecided_units():
    fits = fit_source(log_law_stats([0.0, 0.0, 1.0, 2.0], n_sequences=32, rows_per_sequence=4, sigma=0.05, seed=2))
    summary = headline(fits).iloc[0]
    won = sum(summary[f"won_by_{law}"] for law in LAWS)
    assert won + summary.undecided_units == summary.units_with_interval == 4
    # The two constant units are decided for the constant law or undecided, never for another law.
    assert summary.won_by_constant >= 1 and summary.won_by_sqrt_log == 0
    assert summary.undecided_units == (fits["law_winner"] == "undecided").sum()
    assert set(fits["law_winner"][:2]) <= {"constant", "undecided"}
    frequencies = fits[[f"law_frequency_{law}" for law in LAWS]].to_numpy()
    np.testing.assert_allclose(frequencies.sum(axis=1), 1.0)


def test_local_and_global_layers_are_fitted_and_summarised_apart():
    stats = log_law_stats([0.0, 0.0, 1.0, 1.0], n_sequences=8, rows_per_sequence=2, sigma=0.05, seed=3)
    stats = stats.assign_coords(layer_type=("unit", ["sliding_attention", "sliding_attention", "full_attention", "full_attention"]),
                                window=("unit", [512, 512, 0, 0]))
    fits = fit_source(stats, n_boot=100)
    assert list(fits["layer_type"]) == ["sliding_attention"] * 2 + ["full_attention"] * 2
    assert list(fits["window"]) == [512, 512, 0, 0]
    summary = headline(fits).set_index("layers")
    assert sorted(summary.index) == ["full_attention", "sliding_attention"]
    assert summary.loc["sliding_attention", "units"] == summary.loc["full_attention", "units"] == 2
    assert summary.loc["sliding_attention", "median_xi"] < 0.5 < summary.loc["full_attention", "median_xi"]
    # a source without layer types keeps one row
    assert list(headline(fit_source(log_law_stats([1.0], n_sequences=8, seed=3), n_boot=50))["layers"]) == ["all"]


def test_resampled_medians_do_not_depend_on_threads():
    import numba

    from critscale.resampling import sequence_multiplicities

    stats = log_law_stats([0.5, 1.0, 1.5], n_sequences=16, rows_per_sequence=4, seed=3)
    values = stats["accumulation_scale"].values
    rows, draws = SortedRows(values, stats["sequence"].values), sequence_multiplicities(16, 64, 0)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = rows.medians(draws)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = rows.medians(draws)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(one, many)
    assert one.shape == (64, 3, len(LADDER)) and (draws.sum(axis=1) == 16).all()


def test_the_fit_rule_takes_exactly_the_fitting_keys_the_fit_reads():
    # A key read but not in FIT_KEYS would change fits without rerunning them; one in FIT_KEYS
    # but not read would rerun them for nothing.
    section = {key: f"value of {key}" for key in study_config.FIT_KEYS}
    assert sorted(map(str, settings_from_config(section).values())) == sorted(section.values())
    config = {"fitting": {**section, "training_length": 64, "extension_factors": [2], "coverage": {"replications": 1}}}
    assert study_config.fit_settings(config) == section


def test_genres_and_coverage_rerun_on_the_settings_they_read_only():
    # Both used to take the whole fitting section: a new training_length reran them for nothing.
    config = study_config.validate(yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text()))
    before = (study_config.fit_settings(config), study_config.coverage_settings(config))
    changed = copy.deepcopy(config)
    changed["fitting"].update(training_length=4096, extension_factors=[3])
    changed["compute"]["scheduler"] = "synchronous"
    assert (study_config.fit_settings(changed), study_config.coverage_settings(changed)) == before
    changed["fitting"]["coverage"]["replications"] = 5
    assert study_config.fit_settings(changed) == before[0] and study_config.coverage_settings(changed) != before[1]
    assert before[1]["coverage"]["replications"] == 400 and before[1]["bootstrap"] == config["fitting"]["bootstrap"]
