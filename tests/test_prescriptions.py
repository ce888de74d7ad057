"""Published beta_n rules against measured scales (``critscale.prescriptions``)."""

import math
from pathlib import Path

import numpy as np
import pytest

from critscale.fitting import fit_source, median_aggregates
from critscale.prescriptions import (
    RULES,
    llama4,
    operating_points,
    qwen_logn,
    random_energy,
    recommendations,
    rule_drift,
    ssmax,
    su_log512,
    yarn,
)
from synthetic_stats import LADDER, log_law_stats, stats_from_rows


def test_rule_formulas_by_hand():
    assert ssmax(1024, s=0.5) == pytest.approx(0.5 * math.log(1024))
    assert su_log512(512) == pytest.approx(1.0)
    assert su_log512(512**2) == pytest.approx(2.0)
    assert random_energy(math.e**2) == pytest.approx(2.0)
    assert qwen_logn(8192**2, training_length=8192) == pytest.approx(2.0)
    assert yarn(4 * 4096, training_length=4096) == pytest.approx((0.1 * math.log(4) + 1) ** 2)
    # Llama 4 at the last query of n keys (position n - 1): one step per 8192 keys.
    np.testing.assert_allclose(
        llama4([8191, 8192, 3 * 8192 - 1, 3 * 8192]),
        [1.0, 0.1 * math.log(2) + 1, 0.1 * math.log(3) + 1, 0.1 * math.log(4) + 1],
    )


def test_qwen_and_yarn_are_one_up_to_the_training_length():
    n = np.array([2, 64, 1000, 4096])
    np.testing.assert_array_equal(qwen_logn(n, 4096), 1.0)
    np.testing.assert_array_equal(yarn(n, 4096), 1.0)
    assert qwen_logn(4097, 4096) > 1 and yarn(4097, 4096) > 1


def _deterministic_stats(scale_of_n):
    rows = np.broadcast_to(scale_of_n(np.asarray(LADDER, dtype=np.float64))[:, :, None], (3, len(LADDER), 4))
    return stats_from_rows(rows)


@pytest.mark.parametrize(
    "rule, scale_of_n",
    [
        ("ssmax", lambda n: np.stack([0.3 * np.log(n), 2.0 * np.log(n), 7.0 * np.log(n)])),
        ("su_log512", lambda n: np.stack([k * np.log(n) / np.log(512) for k in (0.5, 1, 3)])),
        ("random_energy", lambda n: np.stack([k * np.sqrt(2 * np.log(n)) for k in (0.5, 1, 3)])),
        ("qwen_logn", lambda n: np.stack([k * np.maximum(np.log(n) / np.log(64), 1) for k in (0.5, 1, 3)])),
    ],
)
def test_drift_is_zero_for_the_rule_that_matches_lambda(rule, scale_of_n):
    drift = rule_drift(_deterministic_stats(scale_of_n), training_length=64)
    assert set(drift["rule"]) == set(RULES)
    matching = drift[drift["rule"] == rule]
    np.testing.assert_allclose(matching["drift"], 0, atol=1e-12)
    # On this ladder (n >= L = 64) the log n rules share one shape; every other shape drifts.
    log_rules = {"ssmax", "su_log512", "qwen_logn"}
    same_shape = log_rules if rule in log_rules else {rule}
    others = drift[~drift["rule"].isin(same_shape)]
    assert (others["drift"] > 1e-3).all()


def test_ssmax_scale_is_the_geometric_mean_and_puts_the_head_at_criticality():
    stats = _deterministic_stats(lambda n: np.stack([k * np.log(n) for k in (0.3, 2.0, 7.0)]))
    ssmax_rows = rule_drift(stats, training_length=4096).query("rule == 'ssmax'")
    np.testing.assert_allclose(ssmax_rows["fitted_s"], [0.3, 2.0, 7.0])
    np.testing.assert_allclose(ssmax_rows["mean_log_ratio"], 0, atol=1e-12)


def test_drift_accepts_medians_and_is_nan_for_tied_units():
    stats = log_law_stats([1.0, 1.0], n_sequences=10)
    scale = stats["accumulation_scale"].values.copy()
    scale[0, -1, :] = np.inf
    medians = median_aggregates(stats_from_rows(scale))
    drift = rule_drift(medians, training_length=1024)
    assert drift.query("unit == 'u0'")["drift"].isna().all()
    assert drift.query("unit == 'u1'")["drift"].notna().all()


def test_recommendations_scale_with_the_fitted_exponent():
    fits = fit_source(log_law_stats([0.5, 1.0, 2.0], sigma=0.05, n_sequences=32), n_boot=50)
    table = recommendations(fits, training_length=4096, extension_factors=(2, 8))
    assert len(table) == 6
    for _, row in table.iterrows():
        ratio = math.log(row.extension_factor * 4096) / math.log(4096)
        assert row.fitted_factor == pytest.approx(ratio**row.xi)
        assert row.ssmax_factor == pytest.approx(ratio)
        assert row.yarn_factor == pytest.approx((0.1 * math.log(row.extension_factor) + 1) ** 2)
        assert row.fitted_factor_low <= row.fitted_factor <= row.fitted_factor_high
    # An xi ~ 1 head needs about SSMax's factor; xi ~ 2 about its square.
    at_eight = table[table["extension_factor"] == 8].set_index("unit")
    assert at_eight.loc["u1", "fitted_factor"] == pytest.approx(at_eight.loc["u1", "ssmax_factor"], rel=0.02)
    assert at_eight.loc["u2", "fitted_factor"] == pytest.approx(at_eight.loc["u2", "ssmax_factor"] ** 2, rel=0.02)


def test_operating_points_classify_rho_at_beta_one():
    scales = np.array([0.2, 1.0, 5.0, np.inf])
    rows = np.broadcast_to(scales[:, None, None], (4, len(LADDER), 3))
    points = operating_points(stats_from_rows(rows))
    first_length = points[points["n"] == LADDER[0]].set_index("unit")
    assert list(first_length["regime"]) == ["supercritical", "critical", "subcritical", "tied"]
    np.testing.assert_allclose(first_length["rho_at_beta1"], [5.0, 1.0, 0.2, 0.0])
    assert len(points) == 4 * len(LADDER)
    assert list(points.columns[:9]) == [
        *["source", "unit", "layer", "head", "layer_type", "window"],
        *["n", "median_lambda", "rho_at_beta1"],
    ]


def test_the_prescriptions_rerun_on_their_own_settings_only():
    import copy

    import yaml

    from critscale import config as study_config

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
    before = study_config.prescription_settings(config)
    changed = copy.deepcopy(config)
    changed["fitting"]["bootstrap"] = 10
    changed["fitting"]["coverage"]["replications"] = 5
    assert study_config.prescription_settings(changed) == before == {"training_length": 2048, "extension_factors": [2, 4, 8]}
    changed["fitting"]["training_length"] = 4096
    assert study_config.prescription_settings(changed)["training_length"] == 4096
