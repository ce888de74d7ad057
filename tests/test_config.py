"""A config error names the key and what is allowed, and stops before any job runs."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from critscale import config as study_config

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((ROOT / "config.yaml").read_text())


def test_default_config_is_valid():
    study_config.validate(copy.deepcopy(DEFAULT))


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda c: c["families"]["gaussian"].update(family="gausian"), r"families\.gaussian\.family: 'gausian' is not allowed; allowed values: 'simplex'"),
        (lambda c: c["families"]["gaussian"].update(rowz=3), r"families\.gaussian: unknown key\(s\) 'rowz'; allowed keys: .*rows"),
        (lambda c: c.update(ladder=[64, -128, 256]), r"ladder\.1: -128 is less than the minimum of 1"),
        (lambda c: c.update(ladder={"min_exponent": -1, "max_exponent": 5}), r"ladder\.min_exponent: -1 is less than the minimum"),
        (lambda c: c.update(ladder=[256, 64, 128]), r"ladder: context lengths must be positive and strictly increasing"),
        (lambda c: c.update(seeed=1), r"unknown key\(s\) 'seeed'"),
        (lambda c: c["compute"].update(scheduler="fast"), r"compute\.scheduler: 'fast' does not match"),
        (lambda c: c["grids"]["beta"].update(min=10, max=1), r"grids\.beta: min \(10\) must be below max \(1\)"),
        (lambda c: c["fitting"].pop("bootstrap"), r"fitting: 'bootstrap' is a required property"),
    ],
)
def test_config_errors_name_the_key(mutate, expected):
    config = copy.deepcopy(DEFAULT)
    mutate(config)
    with pytest.raises(study_config.ConfigError, match=expected):
        study_config.validate(config)


def test_snakemake_stops_before_any_job(tmp_path):
    config = copy.deepcopy(DEFAULT)
    config["families"]["gaussian"]["family"] = "gausian"
    config["results"] = str(tmp_path / "results")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", str(path), "--directory", str(ROOT)],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert run.returncode != 0
    assert "families.gaussian.family: 'gausian' is not allowed" in run.stdout + run.stderr
    assert not (tmp_path / "results").exists()


def with_models(tmp_path, model_spec, corpus="shakespeare"):
    config = copy.deepcopy(DEFAULT)
    config["models"] = {"m": model_spec}
    config["studies"] = [{"model": "m", "corpora": [corpus]}]
    return config


def test_missing_model_path_stops_with_the_key(tmp_path):
    config = with_models(tmp_path, {"path": str(tmp_path / "nowhere"), "ladder": [64, 128, 256]})
    with pytest.raises(study_config.ConfigError, match=r"config key models\.m: model path .*nowhere.* does not exist"):
        study_config.validate_model_sources(study_config.validate(config))


def test_hub_id_without_network_stops(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    config = with_models(tmp_path, {"id": "HuggingFaceTB/SmolLM2-135M", "revision": "main", "ladder": [64, 128, 256]})
    with pytest.raises(study_config.ConfigError, match=r"config key models\.m: hub model .* not in the local cache"):
        study_config.validate_model_sources(study_config.validate(config))


def test_context_beyond_positions_stops():
    config = copy.deepcopy(DEFAULT)
    config["models"]["minilm_l6"]["ladder"] = [256, 512, 1024]
    config["studies"] = [{"model": "minilm_l6", "corpora": ["shakespeare"]}]
    with pytest.raises(study_config.ConfigError, match=r"models\.minilm_l6: context length 1024 exceeds the model's 512 positions"):
        study_config.validate_model_sources(study_config.validate(config))


def test_unknown_corpus_and_model_stop():
    config = copy.deepcopy(DEFAULT)
    config["studies"] = [{"model": "minilm_l6", "corpora": ["shakespear"]}]
    with pytest.raises(study_config.ConfigError, match=r"studies\.0\.corpora: unknown corpus 'shakespear'; corpora in this config: shakespeare"):
        study_config.validate(config)
    config["studies"] = [{"model": "gpt5", "corpora": ["shakespeare"]}]
    with pytest.raises(study_config.ConfigError, match=r"studies\.0\.model: unknown model 'gpt5'"):
        study_config.validate(config)


def test_unknown_corpus_kind_names_the_allowed_kinds():
    config = copy.deepcopy(DEFAULT)
    config["corpora"]["shakespeare"]["kind"] = "web"
    with pytest.raises(study_config.ConfigError, match=r"corpora\.shakespeare\.kind: 'web' is not allowed; allowed values: 'files'"):
        study_config.validate(config)


def test_default_models_and_corpora_validate():
    study_config.validate_model_sources(copy.deepcopy(DEFAULT))
