"""Schedule files: built from a fit table, valid against the shipped JSON Schema, read back as
the schedules the model runs with; the per-layer and global variants are dose-matched."""

from __future__ import annotations

import copy
import math

import jsonschema
import numpy as np
import pandas as pd
import pytest

from critscale import schedules

L = 2048


def fit_table(layers=3, heads=4, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for layer in range(layers):
        for head in range(heads):
            xi = rng.uniform(0.5, 3)
            rows.append(dict(source="m__c", unit=f"L{layer}H{head}", layer=layer, head=head, fit_status="fitted",
                             xi=xi, xi_low=xi - 0.2, xi_high=xi + 0.3))
    rows[5].update(fit_status="tied", xi=np.nan, xi_low=np.nan, xi_high=np.nan)
    return pd.DataFrame(rows)


@pytest.fixture
def document():
    return schedules.build_schedule(fit_table(), L, source="m__c", level=0.9, provenance={"config": {}})


def test_document_round_trips_through_the_schema(document, tmp_path):
    path = tmp_path / "s.json"
    schedules.write_schedule(document, path)
    assert schedules.read_schedule(path) == document


def test_units_follow_their_fits_and_an_unfitted_unit_keeps_factor_one(document):
    fits = fit_table()
    schedule = schedules.schedule_variant(document, "per_head")
    n = np.array([L // 2, L, 2 * L, 4 * L])
    for row in fits.itertuples():
        beta = schedule.factors(row.layer, n)[row.head]
        if row.fit_status == "fitted":
            expected = [1, 1] + [(math.log(k) / math.log(L)) ** row.xi for k in (2 * L, 4 * L)]
            assert np.allclose(beta, expected)
        else:
            assert np.all(beta == 1.0)
    unit = document["units"][5]
    assert unit["xi"] == 0.0 and unit["reason"] == "no fit (tied): factor 1"


def test_band_brackets_the_point_schedule(document):
    n = np.array([3 * L])
    point, low, high = (schedules.schedule_variant(document, v).factors(0, n) for v in
                        ("per_head", "per_head_low", "per_head_high"))
    assert np.all(low < point) and np.all(point < high)


@pytest.mark.parametrize("variant", ["per_layer", "global"])
def test_variants_carry_the_per_head_dose(document, variant):
    n = np.array([L + 1, 2 * L, 16 * L])
    per_head = schedules.schedule_variant(document, "per_head")
    pooled = schedules.schedule_variant(document, variant)
    heads = document["heads"]
    dose = lambda s, layers: np.mean([np.log(np.broadcast_to(s.factors(l, n), (heads, len(n)))) for l in layers],
                                     axis=(0, 1))
    if variant == "per_layer":
        for layer in range(document["layers"]):
            assert np.allclose(dose(pooled, [layer]), dose(per_head, [layer]))
    else:
        assert np.allclose(dose(pooled, range(3)), dose(per_head, range(3)))


def test_shuffled_control_keeps_the_exponents_and_moves_them(document):
    per_head = schedules.schedule_variant(document, "per_head")
    shuffled = schedules.shuffled_across_heads(per_head, seed=1)
    assert sorted(shuffled.exponents.ravel()) == sorted(per_head.exponents.ravel())
    assert not np.array_equal(shuffled.exponents, per_head.exponents)


@pytest.mark.parametrize(("path", "value"), [(("training_length",), 1), (("units", 0, "xi"), "big"),
                                             (("format",), "other")])
def test_schema_refuses_a_bad_document(document, path, value):
    bad = copy.deepcopy(document)
    target = bad
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        schedules.validate_document(bad)
