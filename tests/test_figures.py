"""Figures (``critscale.figures``) on tiny statistics stores, ties included, and the report checker."""

from __future__ import annotations

import base64
import json

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from critscale import compute, families, figures, storage
from critscale import config as study_config
from report_check import PNG_SIGNATURE, report_problems

# Wide t and rho grids: N(t) reaches n within the grid, and every operating point lies inside it.
GRIDS = study_config.grids({
    "t": {"start": 0.0, "stop": 8.0, "num": 17},
    "resolutions": [0.0, 1.0],
    "beta": {"min": 0.125, "max": 16, "per_octave": 1},
    "rho": {"min": 1 / 32, "max": 32, "per_octave": 2},
})
FAMILY_LADDER = [16, 32, 64, 128]
MODEL_LADDER = [16, 32, 64]
MODEL_UNITS = ["L0H0", "L0H1", "L1H0", "L1H1"]  # L1H1: every row tied at the maximum


@pytest.fixture(scope="module")
def family_stats(tmp_path_factory):
    """Gaussian family rows with the finite-n prediction carried into the statistics store."""
    folder = tmp_path_factory.mktemp("family")
    spec = {"family": "gaussian", "params": {"sigma": 1.0}}
    scores = families.family_dataset("gaussian", spec, n_ladder=FAMILY_LADDER, rows=12, seed=3, row_chunk=12,
                                     prediction_draws=64)
    storage.write_dataset(scores, folder / "scores.zarr")
    compute.compute_statistics_store(folder / "scores.zarr", folder / "stats.zarr", GRIDS)
    return storage.open_store(folder / "stats.zarr")


@pytest.fixture(scope="module")
def model_stats(tmp_path_factory):
    """A model-like store: 2 layers x 2 heads, random normal rows, one head tied in every row."""
    folder = tmp_path_factory.mktemp("model")
    rows, rng = 6, np.random.default_rng(0)
    storage.create_scores_store(
        folder / "scores.zarr", units=MODEL_UNITS, n_ladder=MODEL_LADDER, sequence=np.repeat(np.arange(3), 2),
        unit_coords={"layer": [0, 0, 1, 1], "head": [0, 1, 0, 1]},
        attrs={"source": "toy_model", "kind": "model", "provenance": "{}"},
    )
    for index, n in enumerate(MODEL_LADDER):
        values = rng.normal(size=(len(MODEL_UNITS), rows, n))
        values[3, :, :2] = values[3].max(axis=-1, keepdims=True) + 1.0  # two equal maxima
        storage.write_scores(folder / "scores.zarr", values, unit=slice(None), n_index=index, rows=slice(None))
    compute.compute_statistics_store(folder / "scores.zarr", folder / "stats.zarr", GRIDS)
    return storage.open_store(folder / "stats.zarr")


def fit_rows(source, kind, units, xi, layer=None, head=None):
    """A fit table with the columns of ``critscale.fitting.fit_source`` that figures read."""
    xi = np.asarray(xi, dtype=np.float64)
    fitted = np.isfinite(xi)
    low, high = xi - 0.1, xi + 0.1
    return pd.DataFrame({
        "source": source, "kind": kind, "unit": units,
        "layer": np.nan if layer is None else layer, "head": np.nan if head is None else head,
        "fit_status": np.where(fitted, "fitted", "tied"),
        "xi": xi, "xi_low": low, "xi_high": high, "free_law_coefficient": np.where(fitted, 1.3, np.nan),
        "power_exponent": np.where(fitted, 0.2, np.nan),
        "law_winner": pd.Series(np.where(fitted, "log", None), dtype=object),
        **{f"law_frequency_{law}": np.where(fitted, float(law == "log"), np.nan) for law in figures.LAWS},
        "law_share": 0.8,
        "excludes_one": pd.array([bool(l > 1 or h < 1) if f else None for l, h, f in zip(low, high, fitted)],
                                 dtype="boolean"),
    })


@pytest.fixture
def model_fits():
    return fit_rows("toy_model", "model", MODEL_UNITS, [0.5, 1.02, 1.6, np.nan], layer=[0, 0, 1, 1], head=[0, 1, 0, 1])


def saved_png(fig, path) -> np.ndarray:
    """Save ``fig`` and return the decoded image, after checking it is a non-blank PNG."""
    assert isinstance(fig, Figure)
    figures.save(fig, path)
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].std() > 0.01, "the figure is blank"
    return image


def axes_labels(fig) -> list[tuple[str, str]]:
    return [(ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes if ax.get_xlabel() or ax.get_ylabel()]


def test_gap_counting_has_one_line_per_length(family_stats, tmp_path):
    fig = figures.gap_counting(family_stats)
    saved_png(fig, tmp_path / "gap_counting.png")
    (ax,) = fig.axes
    assert "gap $t$" in ax.get_xlabel() and r"\log N(t)" in ax.get_ylabel()
    assert [line.get_label() for line in ax.get_lines()] == ["$2^{4}$", "$2^{5}$", "$2^{6}$", "$2^{7}$"]
    # N(t) grows to n: the last point of each median curve is log n.
    np.testing.assert_allclose([line.get_ydata()[-1] for line in ax.get_lines()], np.log(FAMILY_LADDER), rtol=1e-6)


def test_scale_vs_log_n_shows_data_fit_and_theory(family_stats, tmp_path):
    fits = fit_rows("gaussian", "family", ["gaussian"], [0.8])
    fig = figures.scale_vs_log_n(family_stats, fits)
    saved_png(fig, tmp_path / "scale.png")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert r"\log n" in ax.get_xlabel() and r"\Lambda_n" in ax.get_ylabel()
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert any(text.startswith("fit") and "0.80 [0.70, 0.90]" in text for text in legend)
    assert any("predicted median" in text for text in legend) and any("asymptotic" in text for text in legend)
    fitted = next(line for line in ax.get_lines() if line.get_label().startswith("fit"))
    np.testing.assert_allclose(fitted.get_ydata(), 1.3 * np.log(FAMILY_LADDER) ** 0.8)


def test_collapse_overlays_all_lengths_with_the_line_at_rho_one(family_stats, tmp_path):
    fig = figures.collapse(family_stats)
    saved_png(fig, tmp_path / "collapse.png")
    entropy, gap = fig.axes
    for ax in (entropy, gap):
        assert r"\rho = \beta / \Lambda" in ax.get_xlabel()
        assert any(list(line.get_xdata()) == [1.0, 1.0] for line in ax.get_lines())
        assert {line.get_label() for line in ax.get_lines()} >= {"$2^{4}$", "$2^{7}$"}
    assert "entropy" in entropy.get_ylabel() and "top-two gap" in gap.get_ylabel()
    # Normalised entropy and the top-two gap live in [0, 1].
    for line in entropy.get_lines() + gap.get_lines():
        y = np.asarray(line.get_ydata(), dtype=float)
        assert np.all((y[np.isfinite(y)] >= -1e-9) & (y[np.isfinite(y)] <= 1 + 1e-9))


def test_source_figures_survive_a_tied_head(model_stats, model_fits, tmp_path):
    assert np.isposinf(model_stats["accumulation_scale"].sel(unit="L1H1").values).all()
    scale = figures.scale_vs_log_n(model_stats, model_fits)
    saved_png(scale, tmp_path / "scale.png")
    tied_panel = scale.axes[3]
    assert "layer 1, head 1" in tied_panel.get_title() and "tied" in tied_panel.get_title()
    assert any("no finite median" in text.get_text() for text in tied_panel.texts)
    saved_png(figures.gap_counting(model_stats, unit="L1H1"), tmp_path / "gap.png")
    collapse = figures.collapse(model_stats, unit=["L0H0", "L1H1"])
    saved_png(collapse, tmp_path / "collapse.png")
    # The model's own beta = 1 is marked on the untied head's curves, nowhere on the tied head's.
    markers = [[line for line in ax.get_lines() if line.get_marker() == "o"] for ax in collapse.axes]
    assert len(markers[0]) == len(MODEL_LADDER) and markers[2] == []


def test_select_units_spans_the_heads(model_stats):
    assert figures.select_units(model_stats) == MODEL_UNITS
    chosen = figures.select_units(model_stats, max_units=2)
    assert len(chosen) == 2 and chosen[-1] == "L1H1"  # the tied head has the largest (inf) scale
    with pytest.raises(KeyError, match="L9H9"):
        figures.select_units(model_stats, unit="L9H9")


def test_exponent_table_lists_every_unit_and_says_why_not_fitted(model_fits, tmp_path):
    fits = pd.concat([fit_rows("gaussian", "family", ["gaussian"], [0.77]), model_fits], ignore_index=True)
    fig = figures.exponent_table(fits)
    saved_png(fig, tmp_path / "table.png")
    (ax,) = fig.axes
    assert r"\xi" in ax.get_xlabel()
    assert [tick.get_text() for tick in ax.get_yticklabels()] == ["gaussian"] + [f"toy_model: {u}" for u in MODEL_UNITS]
    texts = [text.get_text() for text in ax.texts]
    assert "not fitted (tied)" in texts and "0.77 [0.67, 0.87]" in texts


def test_xi_heatmap_marks_intervals_excluding_one_and_unfitted_heads(model_fits, tmp_path):
    fig = figures.xi_heatmap(model_fits)
    saved_png(fig, tmp_path / "heatmap.png")
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("head", "layer")
    texts = {text.get_text() for text in ax.texts}
    assert {"0.50*", "1.02", "1.60*", "tied"} <= texts
    with pytest.raises(ValueError, match="no model units"):
        figures.xi_heatmap(fit_rows("gaussian", "family", ["gaussian"], [0.77]))


def test_law_winners_counts_units_and_shows_frequencies(model_fits, tmp_path):
    model_fits.loc[0, "law_winner"] = "undecided"
    fig = figures.law_winners(model_fits)
    saved_png(fig, tmp_path / "laws.png")
    left, right = fig.axes[:2]
    assert "80%" in left.get_xlabel() and "won" in left.get_ylabel()
    (bars,) = left.containers  # one source: one bar per outcome, in the order of the ticks
    heights = dict(zip([tick.get_text() for tick in left.get_xticklabels()], bars.datavalues))
    assert heights[r"$\log n$"] == 2 and heights["undecided"] == 1 and heights["not scored"] == 1
    assert heights[r"$(\log n)^2$"] == 0 and heights["constant"] == 0
    assert "share of resamples" in right.get_ylabel()
    assert [tick.get_text() for tick in right.get_xticklabels()][0] == "constant"
    assert any(line.get_ydata()[0] == 0.8 for line in right.get_lines())  # the law_share threshold


def test_rule_drift_and_operating_points_handle_ties(tmp_path):
    drift = pd.DataFrame({
        "source": "toy_model", "unit": ["L0H0", "L0H1", "L1H1"] * 2, "layer": [0, 0, 1] * 2, "head": [0, 1, 1] * 2,
        "rule": ["ssmax"] * 3 + ["yarn"] * 3, "drift": [0.05, 0.1, np.nan, 0.3, 0.4, np.nan],
    })
    fig = figures.rule_drift(drift)
    saved_png(fig, tmp_path / "drift.png")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "prescription" and "drift" in ax.get_ylabel()
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["ssmax", "yarn"]  # best first
    assert "2 unit x rule pairs without finite drift" in ax.get_title()

    points = pd.DataFrame({
        "source": "toy_model", "unit": ["L0H0", "L0H1", "L1H1"] * 2, "layer": [0, 0, 1] * 2, "head": [0, 1, 1] * 2,
        "n": [16] * 3 + [32] * 3, "median_lambda": [1.0, 4.0, np.inf, 1.5, 8.0, np.inf],
        "rho_at_beta1": [1.0, 0.25, 0.0, 1 / 1.5, 0.125, 0.0],
        "regime": ["critical", "subcritical", "tied", "critical", "subcritical", "tied"],
    })
    fig = figures.operating_points(points)
    saved_png(fig, tmp_path / "operating.png")
    ax = fig.axes[0]
    assert "context length" in ax.get_xlabel() and ax.get_ylabel() == "layer"
    assert {"crit 50%", "tied 100%"} <= {text.get_text() for text in ax.texts}


def test_figures_from_real_prescription_tables(model_stats, tmp_path):
    prescriptions = pytest.importorskip("critscale.prescriptions")
    saved_png(figures.rule_drift(prescriptions.rule_drift(model_stats, training_length=16)), tmp_path / "d.png")
    saved_png(figures.operating_points(prescriptions.operating_points(model_stats)), tmp_path / "o.png")


def test_table_html_page(tmp_path):
    figures.save_table_html(pd.DataFrame({"source": ["a"], "xi": [0.123456789]}), tmp_path / "t.html", title="fits")
    page = (tmp_path / "t.html").read_text()
    assert "<table" in page and "0.1235" in page and "<h3>fits</h3>" in page
    figures.save_table_html(pd.DataFrame({"source": []}), tmp_path / "empty.html")
    assert "No rows" in (tmp_path / "empty.html").read_text()


def _fake_report(tmp_path, categories, results):
    html = (f"<html><body><script>var results = {json.dumps(results)};\n</script>"
            f"<script>var categories = {json.dumps(categories)};\n</script></body></html>")
    path = tmp_path / "report.html"
    path.write_text(html)
    return path


def test_report_checker_finds_empty_sections_and_broken_figures(family_stats, tmp_path):
    png = figures.save(figures.gap_counting(family_stats), tmp_path / "g.png").read_bytes()
    good = {"mime_type": "image/png", "caption": "<p>ok</p>", "data_uri": "data:image/png;base64," + base64.b64encode(png).decode()}
    broken = dict(good, data_uri="data:image/png;base64," + base64.b64encode(b"not a png").decode())
    path = _fake_report(tmp_path, {"Synthetic families": {"gaussian": ["g.png"]}}, {"g.png": good})
    assert report_problems(path, required_categories=["Synthetic families"]) == []
    path = _fake_report(tmp_path, {"Synthetic families": {"gaussian": []}},
                        {"g.png": broken, "h.png": dict(good, caption="")})
    problems = report_problems(path, required_categories=["Synthetic families", "Theory check"])
    assert any("missing report section 'Theory check'" in p for p in problems)
    assert any("'gaussian' is empty" in p for p in problems)
    assert any("g.png: embedded PNG" in p for p in problems)
    assert any("h.png: no caption" in p for p in problems)


def test_collapse_by_layer_has_a_panel_per_layer_and_marks_beta_one(model_stats, tmp_path):
    fig = figures.collapse_by_layer(model_stats, columns=3)
    saved_png(fig, tmp_path / "collapse_by_layer.png")
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["layer 0", "layer 1"]
    ladder = len(model_stats["n"])
    for ax in visible:
        curves = [line for line in ax.get_lines() if len(line.get_xdata()) == len(model_stats["rho"])]
        assert len(curves) == 2 * ladder  # entropy and top-two gap for every n
    # the model's own beta = 1; layer 1's median Lambda is inf (a head tied in every row): no dot
    assert any(line.get_marker() == "o" for line in visible[0].get_lines())
    assert not any(line.get_marker() == "o" for line in visible[1].get_lines())
