"""A config error names the key and what is allowed, and stops before any job runs."""

import copy
import shutil
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
        (lambda c: c.update(ladder=[256, 64, 128]), r"ladder: context lengths must be >= 2 \(n = 1 has no gap\) and strictly increasing"),
        (lambda c: c.update(ladder={"min_exponent": 0, "max_exponent": 5}), r"config key ladder\.min_exponent: .*allowed: min_exponent >= 1"),
        (lambda c: c["models"]["smollm2_135m"].update(ladder=[1, 64, 128]), r"config key models\.smollm2_135m\.ladder: context lengths must be >= 2"),
        (lambda c: c["models"]["smollm2_135m"].update(id="HuggingFaceTB/SmolLM2-135M", revision="main"), r"config key models\.smollm2_135m\.gguf_file: a hub model .* cannot name a GGUF file"),
        (lambda c: c.setdefault("extraction", {}).update(queries=40), r"config key extraction\.queries: 40 queries do not fit the shortest n = 32 of models\.\w+\.ladder; allowed: queries <= 32"),
        (lambda c: c.update(seeed=1), r"unknown key\(s\) 'seeed'"),
        (lambda c: c["compute"].update(scheduler="fast"), r"compute\.scheduler: 'fast' does not match"),
        (lambda c: c["grids"]["beta"].update(min=10, max=1), r"grids\.beta: min \(10\) must be below max \(1\)"),
        (lambda c: c["fitting"].pop("bootstrap"), r"fitting: 'bootstrap' is a required property"),
        # the old names of sequence counts (a unit is a head) are refused with the new name
        (lambda c: c["fitting"].update(min_units=4), r"config key fitting\.min_units was renamed: use fitting\.min_sequences"),
        (lambda c: c["fitting"]["coverage"].update(unit_counts=[4]), r"fitting\.coverage\.unit_counts was renamed: use fitting\.coverage\.sequence_counts"),
        (lambda c: c["fitting"]["coverage"].update(rows_per_unit=4), r"use fitting\.coverage\.rows_per_sequence"),
    ],
)
def test_config_errors_name_the_key(mutate, expected):
    config = copy.deepcopy(DEFAULT)
    mutate(config)
    with pytest.raises(study_config.ConfigError, match=expected):
        study_config.validate(config)


@pytest.mark.slow
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


@pytest.mark.slow
def test_default_study_plans_a_bundle_of_every_level(tmp_path):
    # the sink variant has no score store of its own: the scores level takes its pair's
    for level in ("aggregates", "rows", "scores"):
        run = subprocess.run(
            [sys.executable, "-m", "snakemake", "share", "-n", "--cores", "1", "--directory", str(ROOT),
             "--config", f"results={tmp_path / 'results'}", f"share={{level: {level}}}"],
            capture_output=True, text=True, cwd=ROOT,
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert "rule share:" in run.stdout + run.stderr  # also matches "localrule share:"
        make = subprocess.run(["make", "--no-print-directory", "-n", "share", f"LEVEL={level}"],
                              capture_output=True, text=True, cwd=ROOT)
        share_command = [line for line in make.stdout.splitlines() if "snakemake share" in line]
        assert len(share_command) == 1 and share_command[0].endswith(f'"share={{level: {level}}}"'), make.stdout


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


@pytest.mark.parametrize(
    "family, params, expected",
    [
        ("gaussian", {"sigma": -1}, r"families\.gaussian\.params\.sigma: -1 is less than or equal to the minimum of 0"),
        ("weibull3", {"gamma": 0}, r"families\.weibull3\.params\.gamma: 0 is less than or equal to the minimum of 0"),
        ("weibull3", {}, r"families\.weibull3\.params: 'gamma' is a required property"),
        ("shrinking_gaps", {"c": 0.0}, r"families\.shrinking_gaps\.params\.c: 0\.0 is less than or equal to the minimum of 0"),
        ("sphere_d3", {"d": 1}, r"families\.sphere_d3\.params\.d: 1 is less than the minimum of 2"),
        ("sphere_d3", {"d": 2.5}, r"families\.sphere_d3\.params\.d: 2\.5 is not of type 'integer'"),
        ("sphere_d3", {"d": 3, "query_norm": 0}, r"families\.sphere_d3\.params\.query_norm: 0 is less than or equal"),
        ("tied", {"sigma": 1.0, "ties": 1}, r"families\.tied\.params\.ties: 1 is less than the minimum of 2"),
        ("tied", {"sigma": 0, "ties": 2}, r"families\.tied\.params\.sigma: 0 is less than or equal"),
        ("simplex", {"q": 1.0}, r"families\.simplex\.params: 'p' is a required property"),
        ("simplex", {"q": 0.0, "p": 1.0}, r"families\.simplex: family 'simplex': parameter 'p'=1\.0 must be < q=0\.0"),
        ("gaussian", {"sigm": 1.0}, r"families\.gaussian\.params: unknown key\(s\) 'sigm'; allowed keys: sigma"),
        ("gaussian", {"sigma": float("inf")}, r"families\.gaussian: family 'gaussian': parameter 'sigma'=inf not allowed"),
        ("tied", {"ties": 100}, r"families\.tied\.params\.ties: 100 tied keys do not fit the shortest n = 64"),
    ],
)
def test_family_parameters_are_checked(family, params, expected):
    config = copy.deepcopy(DEFAULT)
    config["families"][family]["params"] = params
    with pytest.raises(study_config.ConfigError, match=expected):
        study_config.validate(config)


def test_quantile_sampling_of_a_non_iid_family_is_an_error():
    config = copy.deepcopy(DEFAULT)
    config["families"]["tied"]["sampling"] = "quantile"
    with pytest.raises(study_config.ConfigError, match=r"families\.tied: sampling 'quantile' needs an i\.i\.d\. family"):
        study_config.validate(config)


def tiny_config(tmp_path, **changes):
    config = yaml.safe_load((ROOT / "tests/data/tiny_config.yaml").read_text())
    config["results"] = str(tmp_path / "results")
    config.update(changes)
    return config


def test_store_estimate_matches_the_stores_sizes_by_hand(tmp_path):
    config = tiny_config(tmp_path)
    estimates = {e.path: e for e in study_config.estimate_stores(config)}
    ladder = [16, 32, 64, 128, 256]
    # gaussian: 24 rows of float32 at every n; statistics: 24 rows x 5 lengths x one row's bytes
    assert estimates["scores/gaussian.zarr"].nbytes == 24 * sum(ladder) * 4
    per_row = study_config.statistics_bytes_per_row(config)
    assert estimates["stats/gaussian.zarr"].nbytes == 24 * len(ladder) * per_row
    assert estimates["scores/simplex.zarr"].keys == ("families.simplex.rows", "ladder")
    # one row of statistics: 6 int/float scalars + 9 t + 2 resolutions + 5 responses on 8 betas and 9 rhos
    assert per_row == 8 * (6 + 9 + 2 + 5 * 8 + 5 * 9)


def test_model_store_estimate_multiplies_layers_heads_and_rows(tmp_path):
    config = tiny_config(tmp_path, models={"m": {"path": "x", "ladder": [8, 16, 32]}}, corpora={"c": {"kind": "stdlib"}},
                         studies=[{"model": "m", "corpora": ["c"], "exclude_first_keys": [0, 2]}],
                         extraction={"sequences": 3, "queries": 2})
    estimates = {e.path: e for e in study_config.estimate_stores(config, units_of=lambda model: 10)}
    assert estimates["scores/m__c.zarr"].nbytes == 10 * 3 * 2 * (8 + 16 + 32) * 4
    assert estimates["stats/m__c__skip2.zarr"].nbytes == 10 * 3 * 2 * 3 * study_config.statistics_bytes_per_row(config)
    assert "extraction.sequences" in estimates["scores/m__c.zarr"].keys


def test_default_models_have_their_layers_and_heads():
    assert study_config.model_units(DEFAULT, "minilm_l6") == 6 * 12
    assert study_config.model_units(DEFAULT, "smollm2_135m") == 30 * 9


def test_oversized_rows_stop_with_the_estimate_and_the_key(tmp_path):
    config = study_config.validate(tiny_config(tmp_path, rows=100_000_000))  # the budget's default filled
    with pytest.raises(study_config.ConfigError, match=r"storage_budget_gb: the study's stores would take about 606 GB, beyond the budget of 100 GB; the largest is .*results/stats/gaussian\.zarr \(about 408 GB; lower rows, ladder\)"):
        study_config.check_storage(config)


def test_budget_is_configurable(tmp_path):
    config = tiny_config(tmp_path, storage_budget_gb=1e-6)
    with pytest.raises(study_config.ConfigError, match=r"beyond the budget of 1e-06 GB; the largest is .*stats/gaussian\.zarr"):
        study_config.check_storage(config)
    config["storage_budget_gb"] = 1
    assert study_config.check_storage(config)


def test_refuses_when_the_estimate_exceeds_the_free_disk(tmp_path, monkeypatch):
    config = study_config.validate(tiny_config(tmp_path))
    total = sum(e.nbytes for e in study_config.estimate_stores(config))
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=total - 1))
    with pytest.raises(study_config.ConfigError, match=r"config key results: the stores still to write need about .* free"):
        study_config.check_storage(config)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=total))
    study_config.check_storage(config)


@pytest.mark.slow
@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda c: c["families"]["gaussian"]["params"].update(sigma=-1), "families.gaussian.params.sigma: -1 is less than or equal to the minimum of 0"),
        (lambda c: c["families"]["gaussian"].update(family="weibull", params={"gamma": 0}), "families.gaussian.params.gamma: 0 is less than or equal to the minimum of 0"),
        (lambda c: c.update(rows=100_000_000), "(about 408 GB; lower rows, ladder), or raise storage_budget_gb"),
    ],
)
def test_bad_tiny_configs_stop_before_any_job(tmp_path, change, expected):
    config = tiny_config(tmp_path)
    change(config)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", str(path), "--replace-workflow-config"],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert run.returncode != 0
    assert expected in run.stdout + run.stderr
    assert not (tmp_path / "results").exists()


def test_relative_share_url_stays_under_results():
    config = copy.deepcopy(DEFAULT)
    results = config["results"].rstrip("/")
    for url, resolved in [("share/mirror", f"{results}/share/mirror"), ("s3://bucket/x", "s3://bucket/x"), ("/srv/x", "/srv/x")]:
        config["share"] = {"url": url}
        assert study_config.share_url(study_config.validate(config)) == resolved
    for escaping in ("../elsewhere", "share/../../x", "."):
        config["share"] = {"url": escaping}
        with pytest.raises(study_config.ConfigError, match=r"config key share\.url: relative path .* outside the results folder"):
            study_config.validate(config)


@pytest.mark.parametrize("key, value, expected", [("layers", [999], r"extraction\.layers: \[999\] not in models\.\w+, which has \d+ layers; allowed: 0\.\.\d+"),
                                                  ("heads", [100], r"extraction\.heads: \[100\] not in models\.\w+, which has \d+ heads; allowed: 0\.\.\d+")])
def test_layers_and_heads_beyond_the_model_stop(key, value, expected):
    config = copy.deepcopy(DEFAULT)
    config["extraction"][key] = value
    with pytest.raises(study_config.ConfigError, match=expected):
        study_config.validate_model_sources(config)


def test_truncated_safetensors_names_the_file(tmp_path):
    import json

    header = json.dumps({"w": {"dtype": "F32", "shape": [1024], "data_offsets": [0, 4096]}}).encode()
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text('{"model_type": "llama"}')  # the weights are checked before it is read
    weights = tmp_path / "model" / "model.safetensors"
    weights.write_bytes(len(header).to_bytes(8, "little") + header + bytes(100))  # 4096 bytes promised
    config = with_models(tmp_path, {"path": str(tmp_path / "model"), "ladder": [64, 128, 256]})
    with pytest.raises(study_config.ConfigError, match=r"models\.m: weights file .*model\.safetensors is truncated: \d+ bytes, its header needs \d+"):
        study_config.validate_model_sources(config)


def test_defaults_come_from_the_schema_and_fill_absent_keys():
    config = copy.deepcopy(DEFAULT)
    del config["extraction"], config["compute"]["memory_budget_mb"], config["fitting"]["extension_factors"]
    config.pop("storage_budget_gb", None)
    study_config.validate(config)
    assert config["storage_budget_gb"] == 100
    assert config["compute"]["memory_budget_mb"] == 64
    assert config["fitting"]["extension_factors"] == [2, 4, 8]
    assert config["extraction"] == {"sequences": 32, "queries": 4, "model_dtype": "float32", "device": "auto",
                                    "attention_output": "sdpa"}
    assert config["share"] == {"level": "aggregates", "format": "zip"}
    given = copy.deepcopy(DEFAULT)
    given["extraction"]["queries"] = 2
    assert study_config.validate(given)["extraction"]["queries"] == 2  # a given value is kept


def test_the_fit_defaults_have_one_home_that_the_schema_accepts():
    """``critscale.fitting.DEFAULTS`` is the home of the fit's defaults (the library's keyword
    defaults): the schema declares none of its own for those keys, and accepts every one."""
    from critscale import fitting

    schema = yaml.safe_load(study_config.SCHEMA_PATH.read_text())["properties"]["fitting"]["properties"]
    as_config = {("bootstrap" if key == "n_boot" else key): value for key, value in fitting.DEFAULTS.items()}
    assert set(as_config) == set(study_config.FIT_KEYS)
    assert not [key for key in study_config.FIT_KEYS if "default" in schema[key] or "(default" in schema[key].get("description", "")]
    config = copy.deepcopy(DEFAULT)
    config["fitting"].update(as_config)
    study_config.validate(config)


def test_scripts_carry_no_defaults():
    # a default in a script is a second home of a fact the schema holds (and they had drifted: the
    # windows per corpus defaulted to 4 in the extraction script and to 32 in the size estimate)
    import re

    literal_default = re.compile(r"\.get\(\s*['\"]\w+['\"]\s*,\s*(?:['\"\[{(\d-]|True|False)")
    for script in sorted((ROOT / "workflow" / "scripts").glob("*.py")):
        assert not literal_default.search(script.read_text()), script.name


def test_the_schema_and_the_family_registry_declare_the_same_parameters():
    """Each family's parameters are declared by its class (critscale.families.catalog); the
    schema's entry for it must name the same parameters and require the same ones."""
    from critscale.families.base import REQUIRED
    from critscale.families.catalog import FAMILIES

    family = yaml.safe_load(study_config.SCHEMA_PATH.read_text())["definitions"]["family"]
    assert family["properties"]["family"]["enum"] == list(FAMILIES)
    blocks = {block["if"]["properties"]["family"]["const"]: block["then"] for block in family["allOf"]}
    assert set(blocks) == set(FAMILIES)
    for name, cls in FAMILIES.items():
        params = blocks[name]["properties"]["params"]
        required = {key for key, (default, _, _) in cls.parameters.items() if default is REQUIRED}
        assert set(params["properties"]) == set(cls.parameters), name
        assert set(params.get("required", [])) == required, name
        assert ("params" in blocks[name].get("required", [])) == bool(required), name
