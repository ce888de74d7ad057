"""The genre comparison: per head, xi paired across two corpora of one model, FDR-controlled.

Synthetic statistics stores with known exponents stand in for a model reading several corpora:
heads share each window's effect (as the heads of a model share its windows), and every corpus
has its own, independent windows.  The fits are the real ones (critscale.fitting.fit_source).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from statsmodels.stats.multitest import multipletests

from critscale import config as study_config
from critscale import fitting, genres, readme_figures
from critscale.coverage import stats_from_rows
from critscale.figures.canvas import save
from critscale.figures.genres import genre_figure
from test_workflow_models import config_with, tiny_llama  # noqa: F401 (the tiny Llama fixture)
from tiny_study import planned_jobs, snakemake

ROOT = Path(__file__).resolve().parents[1]
LADDER = (2**6, 2**8, 2**10, 2**12, 2**14, 2**16)
SEED, N_BOOT, LEVEL, FDR = 11, 400, 0.9, 0.05
HEADS_PER_LAYER = 10


def genre_stats(exponents, seed, windows=32, queries=4, layer_types=None, corpus="a"):
    """``log Lambda = xi (log log n) + window effect shared by all heads + window-by-head effect +
    row noise``: per head the median follows ``(log n)^xi`` in expectation; windows independent."""
    rng = np.random.default_rng(seed)
    exponents = np.asarray(exponents, dtype=np.float64)
    sequence = np.repeat(np.arange(windows), queries)
    shape = (len(exponents), len(LADDER))
    shared = rng.normal(0, 0.3, (1, len(LADDER), windows))[..., sequence]
    by_head = rng.normal(0, 0.3, (*shape, windows))[..., sequence]
    rows = rng.normal(0, 0.2, (*shape, windows * queries))
    log_log_n = np.log(np.log(np.asarray(LADDER, dtype=np.float64)))
    scale = np.exp(exponents[:, None, None] * log_log_n[None, :, None] + shared + by_head + rows)
    units = np.arange(len(exponents))
    layer, head = units // HEADS_PER_LAYER, units % HEADS_PER_LAYER
    stats = stats_from_rows(scale, LADDER, sequence=sequence, units=[f"L{i}H{j}" for i, j in zip(layer, head)],
                            layer=layer, head=head, source=f"toy__{corpus}", kind="model")
    if layer_types is not None:
        stats = stats.assign_coords(layer_type=("unit", np.asarray(layer_types)))
    return stats


def fitted(stats):
    return fitting.fit_source(stats, n_boot=N_BOOT, level=LEVEL, seed=SEED, held_out=2)


def compare(exponents_by_corpus: dict, seed=0, **kwargs):
    """``(heads, summary)`` of one model reading the given corpora (independent windows each)."""
    stats = {f"toy__{corpus}": genre_stats(exponents, seed + index, corpus=corpus, **kwargs)
             for index, (corpus, exponents) in enumerate(exponents_by_corpus.items())}
    runs = {f"toy__{corpus}": {"model": "toy", "corpus": corpus, "exclude_first_keys": 0}
            for corpus in exponents_by_corpus}
    plan = genres.groups(runs)
    fits = {source: fitted(store) for source, store in stats.items()}
    return genres.compare_study(plan, fits, stats, n_boot=N_BOOT, seed=SEED, level=LEVEL, fdr=FDR, fdr_method="by")


def test_groups_pair_the_corpora_of_each_model_and_sink_variant():
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    plan = genres.groups(study_config.model_sources(config))
    by_model = {(group["model"], group["exclude_first_keys"]): group for group in plan}
    # SmolLM2 reads three corpora, Gemma 3 two; the sink variant and MiniLM read one each.
    assert set(by_model) == {("smollm2_135m", 0), ("gemma3_270m", 0)}
    assert genres.pairs(by_model["smollm2_135m", 0]) == [
        ("austen_novels", "pari_manual"), ("austen_novels", "wikipedia_vital"), ("pari_manual", "wikipedia_vital")]
    assert genres.pairs(by_model["gemma3_270m", 0]) == [("austen_novels", "xarray_source")]
    assert genres.sources(plan)[:3] == ["smollm2_135m__austen_novels", "smollm2_135m__pari_manual",
                                        "smollm2_135m__wikipedia_vital"]
    one = {"m__a": {"model": "m", "corpus": "a", "exclude_first_keys": 0},
           "m__a__skip4": {"model": "m", "corpus": "a", "exclude_first_keys": 4}}
    assert genres.groups(one) == []


def test_the_replicates_are_the_fits_own_and_other_settings_are_refused():
    stats = genre_stats(np.linspace(0, 2, 20), seed=3)
    fits = fitted(stats)
    corpus = genres.corpus_fit(fits, stats, N_BOOT, SEED, LEVEL)
    np.testing.assert_allclose(corpus.table["se"], fits["xi_resampling_se"], rtol=1e-10)
    assert corpus.replicates.shape == (N_BOOT, 20) and corpus.windows == 32
    with pytest.raises(ValueError, match="other settings"):
        genres.corpus_fit(fits, stats, N_BOOT, SEED + 1, LEVEL)


def test_identical_genres_give_no_controlled_difference():
    exponents = np.random.default_rng(5).uniform(-0.2, 2.0, 200)
    heads, summary = compare({"a": exponents, "b": exponents}, seed=20)
    row = summary.iloc[0]
    assert row["heads"] == row["heads_compared"] == 200
    # Raw per-head intervals exclude 0 at about their level; the controlled claim finds nothing.
    assert 0.02 <= row["fraction_differing_raw"] <= 0.2, row
    assert row["differing_fdr"] <= 2, row
    assert row["median_shift_low"] <= 0 <= row["median_shift_high"], row
    assert abs(row["median_shift"]) < 0.1
    assert heads["p_adjusted"].ge(heads["p_value"]).all()


def test_with_no_shift_the_tests_hold_their_level_over_replications():
    """12 studies of 60 heads with no shift: the raw per-head rejections near 1 - level (the
    intervals cover 0.90-0.93 at 32 windows, README), no controlled discovery, and the median
    shift's interval covers 0 in most (40 replications of 100 heads gave raw 0.082, no
    discovery and coverage 0.95)."""
    raw, discoveries, covered = [], 0, 0
    for replication in range(12):
        exponents = np.random.default_rng(100 + replication).uniform(-0.2, 2.0, 60)
        _, summary = compare({"a": exponents, "b": exponents}, seed=1000 + 2 * replication)
        row = summary.iloc[0]
        raw.append(row["fraction_differing_raw"])
        discoveries += row["differing_fdr"]
        covered += row["median_shift_low"] <= 0 <= row["median_shift_high"]
    assert 0.04 <= np.mean(raw) <= 0.16, raw
    assert discoveries <= 1 and covered >= 9, (discoveries, covered)


def test_a_planted_shift_on_some_heads_is_found():
    exponents = np.random.default_rng(6).uniform(-0.2, 2.0, 200)
    planted = np.zeros(200, dtype=bool)
    planted[::4] = True  # 50 heads, spread over the layers
    heads, summary = compare({"a": exponents, "b": exponents + np.where(planted, 1.0, 0.0)}, seed=30)
    row = summary.iloc[0]
    differs = heads["differs"].astype(bool).to_numpy()
    assert differs[planted].sum() >= 45, differs[planted].sum()
    assert differs[~planted].sum() <= 3, differs[~planted].sum()
    assert row["higher_in_b_fdr"] == row["differing_fdr"] and row["lower_in_b_fdr"] == 0
    assert row["expected_false_fdr"] == pytest.approx(FDR * row["differing_fdr"])
    # The median head is unshifted: the 150 null heads hold the median (the noise moves it a little).
    assert abs(row["median_shift"]) < 0.15, row
    hit = heads[planted]
    assert ((hit["shift_low"] <= 1.0) & (1.0 <= hit["shift_high"])).mean() >= 0.8


def test_a_shift_of_every_head_gives_its_median_with_an_interval():
    exponents = np.random.default_rng(7).uniform(-0.2, 2.0, 200)
    _, summary = compare({"a": exponents, "b": exponents - 0.4}, seed=40)
    row = summary.iloc[0]
    assert row["median_shift"] == pytest.approx(-0.4, abs=0.1), row
    assert row["median_shift_low"] <= -0.4 <= row["median_shift_high"], row
    assert row["median_shift_p"] < 0.01
    assert row["lower_in_b_fdr"] == row["differing_fdr"] >= 40


def test_the_fdr_family_is_every_head_and_pair_of_a_model():
    exponents = np.linspace(0, 2, 40)
    heads, summary = compare({"a": exponents, "b": exponents + 0.5, "c": exponents}, seed=50)
    assert list(zip(summary["corpus_a"], summary["corpus_b"])) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert summary["family_tests"].eq(120).all() and len(heads) == 120
    reject, adjusted, _, _ = multipletests(heads["p_value"], alpha=FDR, method="fdr_by")
    np.testing.assert_allclose(heads["p_adjusted"], adjusted)
    assert heads["differs"].astype(bool).tolist() == reject.tolist()


def test_layer_types_are_summarised_apart_and_together():
    exponents = np.linspace(0, 2, 40)
    layer_types = np.where(np.arange(40) // HEADS_PER_LAYER % 2, "full_attention", "sliding_attention")
    heads, summary = compare({"a": exponents, "b": exponents}, seed=60, layer_types=layer_types)
    assert summary["layers"].tolist() == ["sliding_attention", "full_attention", "all"]
    assert summary["heads_compared"].tolist() == [20, 20, 40]
    assert set(heads["layer_type"]) == {"sliding_attention", "full_attention"}


def test_heads_without_an_interval_are_reported_not_compared():
    exponents = np.linspace(0, 2, 20)
    stats_a, stats_b = genre_stats(exponents, 1, corpus="a"), genre_stats(exponents, 2, corpus="b")
    scale = stats_b["accumulation_scale"].values.copy()
    scale[0] = np.inf  # every row of head 0 tied on corpus b
    stats_b["accumulation_scale"] = (stats_b["accumulation_scale"].dims, scale)
    stats_b["ties"] = (stats_b["ties"].dims, np.where(np.isposinf(scale), 2, 1))
    stats = {"toy__a": stats_a, "toy__b": stats_b}
    runs = {source: {"model": "toy", "corpus": source[-1]} for source in stats}
    fits = {source: fitted(store) for source, store in stats.items()}
    heads, summary = genres.compare_study(genres.groups(runs), fits, stats, n_boot=N_BOOT, seed=SEED, level=LEVEL,
                                          fdr=FDR, fdr_method="by")
    assert heads.loc[0, "fit_status_b"] == "tied" and np.isnan(heads.loc[0, "p_value"])
    assert pd.isna(heads.loc[0, "differs"])
    assert summary.loc[0, "heads"] == 20 and summary.loc[0, "heads_compared"] == 19


def test_the_figure_marks_the_differing_heads(tmp_path):
    exponents = np.linspace(0, 2, 60)
    heads, summary = compare({"a": exponents, "b": exponents + np.where(np.arange(60) < 20, 1.0, 0.0),
                              "c": exponents}, seed=70)
    fig = genre_figure(heads, summary)
    assert len(fig.axes) == 6
    assert "heads differ" in fig.axes[0].get_title()
    path = save(fig, tmp_path / "genres.png")
    assert path.stat().st_size > 20_000
    assert len(genre_figure(heads.iloc[:0], summary.iloc[:0]).axes) == 2  # nothing compared: one note
    # make readme-figures renders it too, from the study's tables, small enough for the README.
    (tmp_path / "results" / "tables").mkdir(parents=True)
    assert readme_figures.genres_png(tmp_path / "results", tmp_path / "docs", 600_000) is None
    heads.to_csv(tmp_path / "results" / "tables" / "genre_heads.csv", index=False)
    summary.to_csv(tmp_path / "results" / "tables" / "genres.csv", index=False)
    small = readme_figures.genres_png(tmp_path / "results", tmp_path / "docs", 600_000)
    assert small.name == "genres.png" and 10_000 < small.stat().st_size <= 600_000


@pytest.mark.slow
def test_a_tiny_llama_reading_two_corpora_gets_the_comparison(tmp_path, tiny_llama):  # noqa: F811
    """In the default target only when a model reads two corpora; then the tables, the figure and
    the report page from the real fits of both sources."""
    results = tmp_path / "results"
    model = {"tiny_llama": {"path": str(tiny_llama), "ladder": [32, 64, 128, 256]}}
    one = config_with(tmp_path, "one.yaml", model, [{"model": "tiny_llama", "corpora": ["shakespeare"]}])
    assert "genres" not in planned_jobs(snakemake("-n", config=one, results=results))
    both = [{"model": "tiny_llama", "corpora": ["shakespeare", "xarray_source"]}]
    two = config_with(tmp_path, "two.yaml", model, both)
    config = yaml.safe_load(two.read_text())
    config["extraction"]["sequences"] = 4  # min_sequences: an interval needs 4 windows
    two.write_text(yaml.safe_dump(config))
    jobs = planned_jobs(snakemake("-n", config=two, results=results))
    assert jobs["genres"] == 1 and jobs["figures_genres"] == 1 and jobs["genres_report_table"] == 2, jobs

    targets = [results / "tables" / "genres.csv", results / "figures" / "genres.png",
               results / "report" / "genres.html"]
    snakemake(*map(str, targets), config=two, results=results)
    summary = pd.read_csv(targets[0])
    assert len(summary) == 1 and summary.loc[0, "heads"] == 8  # 2 layers x 4 heads
    assert (summary.loc[0, "corpus_a"], summary.loc[0, "corpus_b"]) == ("shakespeare", "xarray_source")
    heads = pd.read_csv(results / "tables" / "genre_heads.csv")
    fits = pd.read_csv(results / "fits" / "tiny_llama__shakespeare.csv")
    assert summary.loc[0, "heads_compared"] == heads["p_value"].notna().sum() >= 1
    np.testing.assert_allclose(heads["xi_a"], fits["xi"])
    assert targets[1].stat().st_size > 10_000 and (results / "benchmarks" / "genres.tsv").is_file()


@pytest.mark.slow
def test_the_genre_study_plans_qwen_on_code_and_encyclopedic_prose(tmp_path):
    # make genres: config/genres.yaml over config.yaml; the Qwen slices assembled and converted once
    import subprocess
    import sys

    from tiny_study import ROOT, planned_jobs

    command = [sys.executable, "-m", "snakemake", "-n", "--configfile", "config.yaml", "config/genres.yaml",
               "--replace-workflow-config", "--config", f"results={tmp_path}"]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    jobs = planned_jobs(run)
    assert (jobs["assemble_gguf"], jobs["convert_gguf"], jobs["model_scores"], jobs["genres"]) == (1, 1, 2, 1), jobs
    assert "qwen25_coder_05b__xarray_source" in run.stdout and "qwen25_coder_05b__wikipedia_vital" in run.stdout
