"""Coverage measured, not assumed: the whole fit on synthetic sources with known xi."""

from pathlib import Path

import numpy as np
import pytest
import yaml
from statsmodels.stats.proportion import proportion_confint

from critscale import coverage
from critscale.intervals import wilson_interval

DEFAULT = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
MODEL_LADDER = DEFAULT["models"]["smollm2_135m"]["ladder"]
DEFAULT_UNITS = DEFAULT["extraction"]["sequences"]  # windows per model source in the default study
ROWS_PER_SEQUENCE = DEFAULT["extraction"]["queries"]  # its rows per window


@pytest.fixture(scope="module")
def default_coverage():
    return coverage.coverage_table(MODEL_LADDER, [DEFAULT_UNITS], replications=500, n_boot=300, seed=3,
                                   rows_per_sequence=ROWS_PER_SEQUENCE)


def test_coverage_at_the_default_unit_count_is_near_nominal(default_coverage):
    table = default_coverage.set_index("source")
    assert list(table.index) == list(coverage.SOURCES)
    assert (table["units"] == DEFAULT_UNITS).all() and (table["nominal_level"] == 0.9).all()
    assert (table["replications"] == 500).all() and (table["replications_without_interval"] == 0).all()
    for source, row in table.iterrows():
        assert 0.85 <= row.coverage <= 0.95, (source, row.coverage)
        assert row.coverage_low < row.coverage < row.coverage_high


def test_truths_are_the_finite_n_exponents(default_coverage):
    truth = default_coverage.set_index("source")["truth"]
    assert truth["log_exact"] == 1.0
    # Finite-n slopes on 64..2048, well above the asymptotes 1/2 and 2/3 (docs/theory.md).
    assert 0.55 < truth["gaussian"] < 0.72 and 0.65 < truth["weibull3"] < 0.85


def test_percentile_intervals_undercover_with_few_units():
    # The reason for the default: at 4 units the percentile bootstrap covers well below 90%,
    # the Student-t interval does not.
    settings = dict(replications=400, n_boot=300, seed=5, sources=["log_exact"], min_sequences=4)
    percentile = coverage.coverage_table(MODEL_LADDER, [4], method="percentile", **settings).iloc[0]
    student = coverage.coverage_table(MODEL_LADDER, [4], **settings).iloc[0]
    assert percentile.coverage_high < 0.9 <= student.coverage_high
    assert student.coverage > percentile.coverage + 0.04


def test_constructed_source_has_median_log_n_and_shared_unit_factors():
    rng = np.random.default_rng(0)
    values = coverage._constructed_replications(MODEL_LADDER, 200, 16, 8, rng)
    assert values.shape == (200, len(MODEL_LADDER), 128)
    ratio = values / np.log(np.asarray(MODEL_LADDER, dtype=float))[None, :, None]
    np.testing.assert_allclose(np.median(ratio, axis=(0, 2)), 1.0, atol=0.03)
    # Rows of one unit are correlated (shared factor), rows of different units are not.
    logs = np.log(ratio[:, 0]).reshape(200, 16, 8)
    same_unit = np.corrcoef(logs[:, 0, 0], logs[:, 0, 1])[0, 1]
    other_unit = np.corrcoef(logs[:, 0, 0], logs[:, 1, 0])[0, 1]
    assert same_unit > 0.15 and abs(other_unit) < 0.15


def test_wilson_interval_matches_statsmodels_and_bad_settings_fail():
    for successes, trials in [(0, 10), (45, 50), (361, 400), (7, 7)]:
        np.testing.assert_allclose(wilson_interval(successes, trials), proportion_confint(successes, trials, method="wilson"))
    with pytest.raises(ValueError, match="coverage sources"):
        coverage.coverage_table(MODEL_LADDER, [8], 10, sources=["cauchy"])
    with pytest.raises(ValueError, match="replications"):
        coverage.coverage_table(MODEL_LADDER, [0], 10)
