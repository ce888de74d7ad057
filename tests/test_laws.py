"""Law comparison with its own uncertainty (``critscale.laws`` through ``fit_source``)."""

import numpy as np
import pytest

from critscale import laws
from critscale.coverage import stats_from_rows
from critscale.fitting import fit_source

MODEL_LADDER = (64, 128, 256, 512, 1024, 2048)


def model_like(scale, units=40, windows=32, queries=8, seed=0):
    """Rows ``scale(log n) * exp(window factor + (window, n) factor + row noise)``: the noise of
    the coverage harness's constructed source (realistic: windows share a factor)."""
    rng = np.random.default_rng(seed)
    log_n = np.log(np.asarray(MODEL_LADDER, dtype=np.float64))[None, :, None, None]
    noise = (rng.normal(0, 0.3, (units, 1, windows, 1)) + rng.normal(0, 0.15, (units, len(MODEL_LADDER), windows, 1))
             + rng.normal(0, 0.5, (units, len(MODEL_LADDER), windows, queries)))
    values = (scale(log_n) * np.exp(noise)).reshape(units, len(MODEL_LADDER), windows * queries)
    return stats_from_rows(values, MODEL_LADDER, sequence=np.repeat(np.arange(windows), queries))


def reference_errors(log_n, log_lambda, scored):
    """Plain loop: each scored length predicted by np.polyfit / a mean on all smaller lengths."""
    x = np.log(log_n)
    errors = np.zeros(len(laws.LAWS))
    for target in range(len(log_n) - scored, len(log_n)):
        train = slice(0, target)
        for index, law in enumerate(laws.LAWS):
            if law in laws.FIXED_LOG_EXPONENTS:
                e = laws.FIXED_LOG_EXPONENTS[law]
                prediction = np.mean(log_lambda[train] - e * x[train]) + e * x[target]
            else:
                regressor = x if law == "free" else log_n
                prediction = np.polyval(np.polyfit(regressor[train], log_lambda[train], 1), regressor[target])
            errors[index] += (prediction - log_lambda[target]) ** 2 / scored
    return errors


def test_extrapolation_errors_match_a_plain_loop():
    rng = np.random.default_rng(1)
    log_n = np.log(np.asarray(MODEL_LADDER, dtype=np.float64))
    log_lambda = rng.normal(size=(7, len(MODEL_LADDER)))
    for scored in (1, 2, 3, 4):
        got = laws.extrapolation_errors(log_n, log_lambda, scored)
        expected = np.stack([reference_errors(log_n, row, scored) for row in log_lambda])
        np.testing.assert_allclose(got, expected, rtol=1e-10)
    with pytest.raises(ValueError, match="needs 7 lengths"):
        laws.extrapolation_errors(log_n, log_lambda, 5)


def test_winner_ties_go_to_the_simplest_law_and_unscored_is_minus_one():
    errors = np.array([[0.3, 0.1, 0.1, 0.5, 0.1, 0.2], [np.nan, 0.1, 0.2, 0.3, 0.4, 0.5]])
    np.testing.assert_array_equal(laws.winner_index(errors, 1e-12), [1, -1])


def test_headline_law_needs_the_share():
    frequencies = np.array([[0.0, 0.1, 0.85, 0.0, 0.05, 0.0], [0.0, 0.3, 0.6, 0.0, 0.1, 0.0], [np.nan] * 6])
    headline = laws.headline_laws(frequencies, 0.8)
    assert list(headline[:2]) == ["log", "undecided"] and np.isnan(headline[2])
    assert list(laws.headline_laws(frequencies[:2], 0.5)) == ["log", "log"]


def test_exact_log_source_with_realistic_noise_is_log_or_undecided_never_sqrt_log():
    fits = fit_source(model_like(lambda log_n: 0.8 * log_n), n_boot=300)
    frequencies = fits[[f"law_frequency_{law}" for law in laws.LAWS]].to_numpy()
    np.testing.assert_allclose(frequencies.sum(axis=1), 1.0)
    assert set(fits["law_winner"]) <= {"log", "undecided"}
    assert (fits["law_frequency_log"] > fits["law_frequency_sqrt_log"]).mean() > 0.9


def test_constant_law_wins_on_a_constant_source():
    fits = fit_source(model_like(lambda log_n: 3.0 + 0 * log_n, seed=1), n_boot=300)
    assert set(fits["law_winner"]) <= {"constant", "undecided"}
    assert (fits["law_winner"] == "constant").mean() > 0.5
    mean_frequency = fits[[f"law_frequency_{law}" for law in laws.LAWS]].mean()
    assert mean_frequency.idxmax() == "law_frequency_constant"
