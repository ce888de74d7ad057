"""Figures (``critscale.figures``) on tiny statistics stores, ties included, and the report checker."""

from __future__ import annotations

import base64
import importlib
import inspect
import itertools
import json
import pkgutil
from statistics import NormalDist
from unittest import mock

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from matplotlib.axis import Axis
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from critscale import compute, figures, prescriptions, readme_figures, storage
from critscale import config as study_config
from critscale.families.dataset import family_dataset
from critscale.figures import canvas, exponents, per_source, selection, tables
from critscale.figures import prescriptions as prescription_figures
from critscale.figures.genres import genre_figure
from critscale.laws import LAWS
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
    scores = family_dataset("gaussian", spec, n_ladder=FAMILY_LADDER, rows=12, seed=3, row_chunk=12,
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
        **{f"law_frequency_{law}": np.where(fitted, float(law == "log"), np.nan) for law in LAWS},
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
    canvas.save(fig, path)
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].std() > 0.01, "the figure is blank"
    return image


def axes_labels(fig) -> list[tuple[str, str]]:
    return [(ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes if ax.get_xlabel() or ax.get_ylabel()]


def test_gap_counting_has_one_line_per_length(family_stats, tmp_path):
    fig = per_source.gap_counting(family_stats)
    saved_png(fig, tmp_path / "gap_counting.png")
    (ax,) = fig.axes
    assert "gap $t$" in ax.get_xlabel() and r"\log N(t)" in ax.get_ylabel()
    assert [line.get_label() for line in ax.get_lines()] == ["$2^{4}$", "$2^{5}$", "$2^{6}$", "$2^{7}$"]
    # N(t) grows to n: the last point of each median curve is log n.
    np.testing.assert_allclose([line.get_ydata()[-1] for line in ax.get_lines()], np.log(FAMILY_LADDER), rtol=1e-6)


def test_scale_vs_log_n_shows_data_fit_and_theory(family_stats, tmp_path):
    fits = fit_rows("gaussian", "family", ["gaussian"], [0.8])
    fig = per_source.scale_vs_log_n(family_stats, fits)
    saved_png(fig, tmp_path / "scale.png")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert r"\log n" in ax.get_xlabel() and r"\Lambda_n" in ax.get_ylabel()
    (legend,) = fig.legends  # one legend for all panels, outside them
    legend = [text.get_text() for text in legend.get_texts()]
    assert r"fit $c(\log n)^\xi$" in legend and "fit $\\xi$ = 0.80 [0.70, 0.90]" in ax.get_title()
    assert any("predicted median" in text for text in legend) and any("asymptotic" in text for text in legend)
    fitted = next(line for line in ax.get_lines() if line.get_label().startswith("fit"))
    np.testing.assert_allclose(fitted.get_ydata(), 1.3 * np.log(FAMILY_LADDER) ** 0.8)


def test_collapse_overlays_all_lengths_with_the_line_at_rho_one(family_stats, tmp_path):
    fig = per_source.collapse(family_stats)
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
    scale = per_source.scale_vs_log_n(model_stats, model_fits)
    saved_png(scale, tmp_path / "scale.png")
    tied_panel = scale.axes[3]
    assert "layer 1, head 1" in tied_panel.get_title() and "tied" in tied_panel.get_title()
    assert any("no finite median" in text.get_text() for text in tied_panel.texts)
    saved_png(per_source.gap_counting(model_stats, unit="L1H1"), tmp_path / "gap.png")
    collapse = per_source.collapse(model_stats, unit=["L0H0", "L1H1"])
    saved_png(collapse, tmp_path / "collapse.png")
    # The model's own beta = 1 is marked on the untied head's curves, nowhere on the tied head's.
    markers = [[line for line in ax.get_lines() if line.get_marker() == "o"] for ax in collapse.axes]
    assert len(markers[0]) == len(MODEL_LADDER) and markers[2] == []


def test_select_units_spans_the_heads(model_stats):
    assert selection.select_units(model_stats) == MODEL_UNITS
    chosen = selection.select_units(model_stats, max_units=2)
    assert len(chosen) == 2 and chosen[-1] == "L1H1"  # the tied head has the largest (inf) scale
    with pytest.raises(KeyError, match="L9H9"):
        selection.select_units(model_stats, unit="L9H9")


def test_exponent_table_lists_every_unit_and_says_why_not_fitted(model_fits, tmp_path):
    fits = pd.concat([fit_rows("gaussian", "family", ["gaussian"], [0.77]), model_fits], ignore_index=True)
    fig = exponents.exponent_table(fits)
    saved_png(fig, tmp_path / "table.png")
    (ax,) = fig.axes
    assert r"\xi" in ax.get_xlabel()
    assert [tick.get_text() for tick in ax.get_yticklabels()] == ["gaussian"] + [f"toy_model: {u}" for u in MODEL_UNITS]
    (column,) = ax.child_axes  # the values, right of the axes, one per line
    values = [tick.get_text() for tick in column.get_yticklabels()]
    assert values == ["0.77 [0.67, 0.87]", "0.50 [0.40, 0.60]", "1.02 [0.92, 1.12]", "1.60 [1.50, 1.70]",
                      "not fitted (tied)"]


def test_xi_heatmap_marks_intervals_excluding_one_and_unfitted_heads(model_fits, tmp_path):
    fig = exponents.xi_heatmap(model_fits)
    saved_png(fig, tmp_path / "heatmap.png")
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("head", "layer")
    texts = {text.get_text() for text in ax.texts}
    assert {"0.50*", "1.02", "1.60*", "tied"} <= texts
    with pytest.raises(ValueError, match="no model units"):
        exponents.xi_heatmap(fit_rows("gaussian", "family", ["gaussian"], [0.77]))


def gemma_like(fits: pd.DataFrame) -> pd.DataFrame:
    """Fits of a model whose layers are sliding-window ones but every sixth (Gemma 3's layout)."""
    local = fits["layer"].astype(int) % 6 != 5
    return fits.assign(layer_type=np.where(local, "sliding_attention", "full_attention"), window=np.where(local, 512, 0))


def test_xi_heatmap_labels_sliding_window_layers(model_fits):
    ax = exponents.xi_heatmap(gemma_like(model_fits)).axes[0]
    labels = [label.get_text() for label in ax.get_yticklabels()]
    layers = sorted(model_fits["layer"].astype(int).unique())
    assert labels == [f"{layer} local" if layer % 6 != 5 else str(layer) for layer in layers]
    plain = [label.get_text() for label in exponents.xi_heatmap(model_fits).axes[0].get_yticklabels()]
    assert not any("local" in label for label in plain)


def test_law_winners_counts_units_and_shows_frequencies(model_fits, tmp_path):
    model_fits.loc[0, "law_winner"] = "undecided"
    fig = exponents.law_winners(model_fits)
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
    fig = prescription_figures.rule_drift(drift)
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
    fig = prescription_figures.operating_points(points)
    saved_png(fig, tmp_path / "operating.png")
    ax = fig.axes[0]
    assert "context length" in ax.get_xlabel() and ax.get_ylabel() == "layer"
    assert {"crit 50%", "tied 100%"} <= {text.get_text() for text in ax.texts}


def test_figures_from_real_prescription_tables(model_stats, tmp_path):
    saved_png(prescription_figures.rule_drift(prescriptions.rule_drift(model_stats, training_length=16)), tmp_path / "d.png")
    saved_png(prescription_figures.operating_points(prescriptions.operating_points(model_stats)), tmp_path / "o.png")


def test_table_html_page(tmp_path):
    tables.save_table_html(pd.DataFrame({"source": ["a"], "xi": [0.123456789]}), tmp_path / "t.html", title="fits")
    page = (tmp_path / "t.html").read_text()
    assert "<table" in page and "0.1235" in page and "<h3>fits</h3>" in page
    tables.save_table_html(pd.DataFrame({"source": []}), tmp_path / "empty.html")
    assert "No rows" in (tmp_path / "empty.html").read_text()


def _fake_report(tmp_path, categories, results):
    html = (f"<html><body><script>var results = {json.dumps(results)};\n</script>"
            f"<script>var categories = {json.dumps(categories)};\n</script></body></html>")
    path = tmp_path / "report.html"
    path.write_text(html)
    return path


def test_report_checker_finds_empty_sections_and_broken_figures(family_stats, tmp_path):
    png = canvas.save(per_source.gap_counting(family_stats), tmp_path / "g.png").read_bytes()
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
    fig = per_source.collapse_by_layer(model_stats, columns=3)
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


# --- no collisions: every figure function, text against text, legends, data -------------------

LAYERS, HEADS = 30, 9  # the shape of SmolLM2-135M, the default study's model
BIG_LADDER = [64, 128, 256, 512, 1024]


@pytest.fixture(scope="module")
def big_model_stats():
    """30 layers x 9 heads of random rows whose scale varies by head, so median Lambda_n spans
    a narrow range per head (0.2 to 0.4 for the steepest heads: the log-axis tick case)."""
    from conftest import build_stats

    rng = np.random.default_rng(1)
    steepness = np.tile(np.geomspace(0.7, 12.0, HEADS), LAYERS)[:, None, None]
    rows_by_n = {n: steepness * rng.normal(size=(LAYERS * HEADS, 8, n)) for n in BIG_LADDER}
    stats = build_stats(rows_by_n, GRIDS, attrs={"source": "big_model__corpus", "kind": "model"})
    layer, head = np.divmod(np.arange(LAYERS * HEADS), HEADS)
    return stats.assign_coords(unit=[f"L{l}H{h}" for l, h in zip(layer, head)], layer=("unit", layer),
                               head=("unit", head))


@pytest.fixture(scope="module")
def big_model_fits():
    rng = np.random.default_rng(2)
    layer, head = np.divmod(np.arange(LAYERS * HEADS), HEADS)
    xi = rng.normal(1.0, 0.6, LAYERS * HEADS)
    xi[::37] = np.nan  # some tied heads
    fits = fit_rows("big_model__corpus", "model", [f"L{l}H{h}" for l, h in zip(layer, head)], xi, layer, head)
    fits["free_law_coefficient"] = np.nan  # drawn through the medians, as with a real fit
    laws = np.array(LAWS, dtype=object)[rng.integers(0, len(LAWS), len(fits))]
    return fits.assign(law_winner=np.where(np.isfinite(xi), laws, None))


@pytest.fixture(scope="module")
def narrow_scale_stats():
    """One head, one deterministic row per n (scaled Gaussian quantiles) whose median Lambda_n
    runs from 0.17 to 0.25 only: matplotlib's log labels read "2e-01" at every tick there."""
    from conftest import build_stats

    quantiles = {n: 10 * np.array([NormalDist().inv_cdf((k + 0.5) / n) for k in range(n)]) for n in BIG_LADDER}
    return build_stats({n: row[None, None] for n, row in quantiles.items()}, GRIDS,
                       attrs={"source": "narrow_model", "kind": "model"})


def study_family_fits():
    """Family fits shaped like the default study's: its twelve families, narrow and wide
    intervals, power-law winners with a large xi (keys on a sphere), exact laws, and a tied family
    that cannot be fitted."""
    rows = {  # name: (xi, xi_low, xi_high, winner)
        "simplex": (1.0, 1.0, 1.0, "log"), "gaussian": (0.77, 0.7, 0.85, "free"),
        "gaussian_quantile": (0.63, 0.52, 0.78, "free"), "weibull3": (0.71, 0.6, 0.8, "free"),
        "weibull3_quantile": (0.69, 0.66, 0.72, "sqrt_log"), "exponential": (1.02, 0.95, 1.1, "log"),
        "shrinking_gaps": (2.1, 1.8, 2.5, "log_squared"), "shrinking_gaps_quantile": (2.0, 2.0, 2.0, "log_squared"),
        "sphere_d3": (7.5, 6.0, 10.0, "power"), "sphere_d5": (4.4, 3.9, 5.1, "power"),
        "sphere_d9": (3.4, 2.8, 4.3, "power"), "tied": (np.nan, np.nan, np.nan, None),
    }
    xi, low, high, winner = zip(*rows.values())
    fits = fit_rows("", "family", list(rows), xi).assign(source=list(rows))
    return fits.assign(xi_low=low, xi_high=high, law_winner=pd.Series(winner, dtype=object))


@pytest.fixture(scope="module")
def genre_tables():
    """``(heads, summary)`` of one model reading three corpora, one of which shifts a third of the
    heads: marked heads, unmarked heads and a summary per pair."""
    from test_genres import compare

    exponents = np.linspace(0, 2, 60)
    return compare({"a": exponents, "b": exponents + np.where(np.arange(60) < 20, 1.0, 0.0), "c": exponents},
                   seed=70)


@pytest.fixture(scope="module")
def figure_cases(family_stats, model_stats, big_model_stats, big_model_fits, narrow_scale_stats, genre_tables):
    """(name, figure factory) for every figure function, on families, a small and a 30 x 9 model."""
    small_fits = fit_rows("toy_model", "model", MODEL_UNITS, [0.5, 1.02, 1.6, np.nan], layer=[0, 0, 1, 1],
                          head=[0, 1, 0, 1])
    family_fits = fit_rows("gaussian", "family", ["gaussian"], [0.8])
    return {
        "gap_counting": [lambda: per_source.gap_counting(family_stats), lambda: per_source.gap_counting(big_model_stats)],
        "scale_vs_log_n": [lambda: per_source.scale_vs_log_n(family_stats, family_fits),
                           lambda: per_source.scale_vs_log_n(model_stats, small_fits),
                           lambda: per_source.scale_vs_log_n(big_model_stats, big_model_fits),
                           lambda: per_source.scale_vs_log_n(narrow_scale_stats)],
        "collapse": [lambda: per_source.collapse(family_stats), lambda: per_source.collapse(big_model_stats)],
        "collapse_by_layer": [lambda: per_source.collapse_by_layer(big_model_stats)],
        "exponent_table": [lambda: exponents.exponent_table(study_family_fits())],
        "xi_heatmap": [lambda: exponents.xi_heatmap(big_model_fits), lambda: exponents.xi_heatmap(gemma_like(big_model_fits))],
        "law_winners": [lambda: exponents.law_winners(pd.concat([big_model_fits, small_fits]))],
        "rule_drift": [lambda: prescription_figures.rule_drift(prescriptions.rule_drift(big_model_stats, training_length=128))],
        "operating_points": [lambda: prescription_figures.operating_points(prescriptions.operating_points(big_model_stats)),
                             lambda: prescription_figures.operating_points(prescriptions.operating_points(model_stats))],
        "genre_figure": [lambda: genre_figure(*genre_tables),
                         lambda: genre_figure(genre_tables[0].iloc[:0], genre_tables[1].iloc[:0])],
    }


def figure_functions() -> set[str]:
    """Every public function of the modules of critscale.figures that returns a Figure."""
    modules = [importlib.import_module(f"{figures.__name__}.{info.name}") for info in pkgutil.iter_modules(figures.__path__)]
    return {name for module in modules for name, function in inspect.getmembers(module, inspect.isfunction)
            if function.__module__ == module.__name__ and not name.startswith("_")
            and inspect.signature(function).return_annotation in (Figure, "Figure")}


def test_every_figure_function_is_checked_for_collisions(figure_cases):
    assert set(figure_cases) == figure_functions()


def drawn_texts(fig) -> list[Text]:
    """The Text artists the canvas really draws (visible, not empty), in drawing order."""
    drawn, draw = {}, Text.draw

    def recording(text, renderer):
        if text.get_visible() and text.get_text().strip():
            drawn[id(text)] = text
        return draw(text, renderer)

    with mock.patch.object(Text, "draw", recording):
        fig.canvas.draw()
    return list(drawn.values())


def overlap(a: Bbox, b: Bbox, tolerance: float = 1.0) -> bool:
    """Boxes that share more than ``tolerance`` pixels in both directions (touching is fine)."""
    return min(a.x1, b.x1) - max(a.x0, b.x0) > tolerance and min(a.y1, b.y1) - max(a.y0, b.y0) > tolerance


def data_points(fig, step: float = 2.0) -> np.ndarray:
    """Display coordinates of the plotted data inside each axes: points every ``step`` pixels
    along every line of ``ax.lines`` (the markers alone where there is no line) and the points of
    scatter collections.  Grid lines, spines, legends and heatmap cells are not data here."""
    points = []
    for ax in fig.axes:
        inside = []
        for line in ax.get_lines():
            if not line.get_visible():
                continue
            xy = line.get_transform().transform(np.asarray(line.get_xydata(), dtype=float))
            xy = xy[np.isfinite(xy).all(axis=1)]
            if line.get_linestyle() in ("None", "", " ") or len(xy) < 2:
                inside.append(xy)
                continue
            for start, end in zip(xy[:-1], xy[1:]):
                steps = max(2, int(np.hypot(*(end - start)) / step) + 1)
                inside.append(start + np.linspace(0, 1, steps)[:, None] * (end - start))
        for collection in ax.collections:
            if isinstance(collection, PathCollection) and len(collection.get_offsets()):
                inside.append(collection.get_offset_transform().transform(collection.get_offsets()))
        if inside:
            xy = np.concatenate(inside)
            points.append(xy[_in_box(xy, ax.bbox)])
    return np.concatenate(points) if points else np.empty((0, 2))


def _in_box(xy: np.ndarray, box: Bbox) -> np.ndarray:
    return (xy[:, 0] > box.x0) & (xy[:, 0] < box.x1) & (xy[:, 1] > box.y0) & (xy[:, 1] < box.y1)


def collisions(fig) -> list[str]:
    """Every collision in ``fig``: two drawn texts overlapping, a text over plotted data, a legend
    inside the data area of an axes or over a text not its own, repeated tick labels on one axis."""
    texts = drawn_texts(fig)
    renderer = fig.canvas.get_renderer()
    boxes = [text.get_window_extent(renderer) for text in texts]
    problems = [f"text {texts[i].get_text()!r} overlaps text {texts[j].get_text()!r}"
                for i, j in itertools.combinations(range(len(texts)), 2) if overlap(boxes[i], boxes[j])]
    data = data_points(fig)
    problems += [f"text {text.get_text()!r} lies on plotted data" for text, box in zip(texts, boxes)
                 if _in_box(data, box.padded(-1)).any()]
    for legend in fig.findobj(Legend):
        frame = legend.get_window_extent(renderer)
        own = {id(text) for text in [*legend.get_texts(), legend.get_title()]}
        problems += [f"legend covers text {text.get_text()!r}" for text, box in zip(texts, boxes)
                     if id(text) not in own and overlap(frame, box)]
        problems += [f"legend {legend.get_title().get_text()!r} sits inside the data area of an axes"
                     for ax in fig.axes if (ax.lines or ax.collections) and overlap(frame, ax.bbox)]
    drawn = {id(text) for text in texts}
    for axis in fig.findobj(Axis):
        labels = [label.get_text() for tick in axis.majorTicks + axis.minorTicks
                  for label in (tick.label1, tick.label2) if id(label) in drawn]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            problems.append(f"{axis.axis_name} axis repeats tick labels {repeated}")
    return problems


@pytest.mark.parametrize("name", sorted(figure_functions()))
def test_figure_has_no_collisions(figure_cases, name):
    assert name in figure_cases, f"add a case for the figure function {name}"
    for case, make in enumerate(figure_cases[name]):
        problems = collisions(make())
        assert not problems, f"{name}, case {case}:\n" + "\n".join(problems)


# --- README figures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def study_results(tmp_path_factory, family_stats, big_model_stats, big_model_fits):
    """A results folder like a finished study's: one family and one 30 x 9 model source."""
    results = tmp_path_factory.mktemp("results")
    storage.write_dataset(family_stats.load(), results / "stats" / "gaussian.zarr")
    storage.write_dataset(big_model_stats, results / "stats" / "big_model__corpus.zarr")
    fits = pd.concat([fit_rows("gaussian", "family", ["gaussian"], [0.8]), big_model_fits], ignore_index=True)
    (results / "tables").mkdir()
    fits.to_csv(results / "tables" / "fits.csv", index=False)
    return results


def test_readme_figures_are_small_pngs_of_the_study(study_results, tmp_path):
    written = readme_figures.readme_figures(study_results, tmp_path / "docs" / "figures", max_kb=600)
    assert [path.name for path in written] == ["exponent_table.png", "scale_vs_log_n.png",
                                               "collapse_by_layer.png", "xi_heatmap.png"]
    for path in written:
        assert path.stat().st_size < 600_000, path.name
        image = matplotlib.image.imread(path)
        assert image.shape[1] > 400 and image[..., :3].std() > 0.01, path.name


def test_readme_figures_lower_the_resolution_to_stay_under_the_limit(study_results, tmp_path):
    fig = per_source.collapse_by_layer(storage.open_store(study_results / "stats" / "big_model__corpus.zarr"))
    path = tmp_path / "c.png"
    first = readme_figures.save_small(fig, path, max_bytes=10**9).stat().st_size  # the first resolution
    first_width = matplotlib.image.imread(path).shape[1]
    readme_figures.save_small(fig, path, max_bytes=first - 1)
    assert path.stat().st_size < first and matplotlib.image.imread(path).shape[1] < first_width
    with pytest.raises(ValueError, match="even at 48 dpi"):
        readme_figures.save_small(fig, path, max_bytes=1000)


def test_readme_figures_name_bad_inputs(study_results, tmp_path):
    with pytest.raises(ValueError, match="fits.csv does not exist"):
        readme_figures.readme_figures(tmp_path, tmp_path / "out")
    with pytest.raises(ValueError, match="--family 'cauchy'.*allowed: \\['gaussian'\\]"):
        readme_figures.readme_figures(study_results, tmp_path / "out", family="cauchy")
    with pytest.raises(ValueError, match="--model-source 'other'.*allowed: \\['big_model__corpus'\\]"):
        readme_figures.readme_figures(study_results, tmp_path / "out", model="other")
