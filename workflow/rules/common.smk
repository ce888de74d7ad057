# Shared settings and helpers. The config is validated here, at parse time, so a bad key, a
# missing model or an unusable corpus stops the run before any job starts.
import functools
import json
import sys
from pathlib import Path

from critscale import config as study_config
from critscale import genres as genre_comparison  # cheap at parse: its heavy imports are lazy
from critscale import model_sources
from critscale import stalelock
from critscale import storage

study_config.validate(config)

RESULTS = config["results"]
FAMILIES = list(config["families"])
MODEL_RUNS = study_config.model_sources(config)
# Model x corpus pairs whose scores are extracted (a sink variant reuses its pair's scores).
EXTRACTED = study_config.extracted_sources(config)
SOURCES = FAMILIES + list(MODEL_RUNS)

study_config.validate_model_sources(config)

# Before any job: the stores' estimated size against the budget and the free disk. A hard kill
# leaves Snakemake's lock behind; remove it when every run recorded here is gone (each run,
# this one too, records its process id and start time first), so a plain rerun resumes (with
# rerun-incomplete from profiles/default). Jobs (subprocess or remote mode) parse this file too
# and must never touch the lock of the run that started them.
if workflow.is_main_process:
    study_config.check_storage(config)  # estimate vs storage_budget_gb and free disk
    for stale in stalelock.start_run(Path.cwd()):
        print(f"critscale: removed the stale lock {stale} of a killed run", file=sys.stderr)


wildcard_constraints:
    family="|".join(FAMILIES) or "(?!)",
    model="|".join(config.get("models", {})) or "(?!)",
    model_source="|".join(MODEL_RUNS) or "(?!)",
    extracted="|".join(EXTRACTED) or "(?!)",
    source="[A-Za-z0-9][A-Za-z0-9_.-]*",


def canonical(value):
    """Config values with keys in sorted order: Snakemake compares params as written, so key order
    alone (say, a config rewritten by a YAML dumper) must not trigger a rerun."""
    return json.loads(json.dumps(value, sort_keys=True))


def code_hash(script):
    """The content hash of a rule's script (the path its script: names) and of every critscale
    module the script imports, directly or through other modules: each rule's code= param, so an
    edit reruns the rules whose code it changes, and only those (profiles/default reruns on
    params, input and environment, not on the scripts' file times)."""
    return storage.code_sha256(Path(workflow.current_basedir.get_path_or_uri(secret_free=True), script))


def result(*parts):
    return str(Path(RESULTS, *parts))


def family_spec(wildcards):
    """The family's own config entry, with study defaults filled in (a rerun trigger)."""
    spec = dict(config["families"][wildcards.family])
    spec.setdefault("params", {})
    spec.setdefault("sampling", "random")
    spec.setdefault("rows", config.get("rows", 256))
    spec.setdefault("dtype", "float32")
    spec["ladder"] = study_config.ladder(spec.get("ladder", config["ladder"]))
    return canonical(spec)


def all_targets():
    return [
        result("tables", "fits.csv"),
        result("tables", "coverage.csv"),
        result("tables", "theory_check.csv"),
        *figure_targets(),
        *prescription_targets(),
        *expand(result("schedules", "{model_source}.json"), model_source=MODEL_RUNS),
        *genre_targets(),
    ]


# Helpers of the rule files (Snakemake's lint keeps functions out of files with rules).


# used by models.smk
@functools.cache
def source_of(model):
    """The model entry's source: whether a job assembles its GGUF pieces or converts its GGUF."""
    return model_sources.model_source(config["models"][model])


def needs_conversion(model):
    return source_of(model).needs_conversion


def assembled_gguf(model):
    """The GGUF assembled from pieces, or nothing for any other model entry."""
    return [result("models", f"{model}.gguf")] if source_of(model).needs_assembly else []


def gguf_spec(model):
    """The model's config entry, pointing at its assembled GGUF when it ships in chunks."""
    spec = dict(config["models"][model])
    if assembled_gguf(model):
        spec["assembled"] = assembled_gguf(model)[0]
    return canonical(spec)


def model_spec(model):
    """The model's config entry; GGUF models point at their converted safetensors directory."""
    spec = gguf_spec(model)
    if needs_conversion(model):
        spec["converted"] = result("models", model)
    return canonical(spec)


def converted_model(wildcards):
    model = EXTRACTED[wildcards.extracted]["model"]
    return [result("models", model)] if needs_conversion(model) else []


# used by statistics.smk
def scores_of(wildcards):
    """The score store a source's statistics read (a sink variant reads its pair's)."""
    return result("scores", f"{study_config.scores_source(config, wildcards.source)}.zarr")


def excluded_keys(wildcards):
    """Keys at the start of every row that the statistics treat as masked (attention sinks)."""
    return MODEL_RUNS.get(wildcards.source, {}).get("exclude_first_keys", 0)


# used by figures.smk
def figure(*parts):
    return result("figures", *parts)


def source_category(wildcards):
    """Report section of a source: its model x corpus name, or the synthetic families."""
    return "Synthetic families" if wildcards.source in FAMILIES else wildcards.source


def figure_targets():
    """Every figure and report table of the study (used by rule all)."""
    return [
        figure("exponent_table.png"),
        *expand(figure("{source}", "{name}.png"), source=SOURCES, name=SOURCE_FIGURES),
        *expand(figure("{source}", "{name}.png"), source=MODEL_SOURCES, name=MODEL_FIGURES + PRESCRIPTION_FIGURES),
        *expand(result("report", "{table}.html"), table=REPORT_TABLES[:4]),
    ]


# used by prescriptions.smk
def prescription_targets():
    tables = ["headline"]
    if MODEL_RUNS:
        tables += ["rule_drift", "recommendations", "operating_points"]
    return [result("tables", f"{table}.csv") for table in tables] + [
        result("report", f"{table}.html") for table in tables
    ]


# used by intervention.smk
INTERVENTION = config.get("intervention", {})
INTERVENTION_WINDOWS = list(range(INTERVENTION.get("windows", 0)))
if INTERVENTION:  # imported only here: it adds seconds to every parse of every job
    from critscale import intervention

    intervention.check_settings(INTERVENTION, MODEL_RUNS, config["fitting"]["training_length"])


def intervention_model():
    """The converted model directory the intervention's model reads, if it is a GGUF."""
    model = MODEL_RUNS[INTERVENTION["source"]]["model"]
    return [result("models", model)] if needs_conversion(model) else []


def intervention_window_settings():
    """What changes one window's output (not the statistics' bootstrap or level)."""
    return canonical({k: v for k, v in INTERVENTION.items() if k not in ("bootstrap", "level")})


# used by share.smk
def share_scores(wildcards):
    """The score store of every source, when the sharing level includes them (a sink variant's is
    its pair's: it has none of its own)."""
    if config["share"]["level"] == "scores":  # filled in by study_config.validate
        return [result("scores", f"{study_config.scores_source(config, source)}.zarr") for source in SOURCES]
    return []


# used by genres.smk
# Models (x sink variant) reading two or more corpora, and the sources they read.
GENRE_GROUPS = genre_comparison.groups(MODEL_RUNS)
GENRE_SOURCES = genre_comparison.sources(GENRE_GROUPS)


def genre_targets():
    """The genre comparison's tables, figure and report pages, when some model reads two or more
    corpora (used by rule all)."""
    if not GENRE_GROUPS:
        return []
    return [
        *(result("tables", f"{name}.csv") for name in GENRE_TABLES.values()),
        figure(GENRE_FIGURE),
        *(result("report", f"{name}.html") for name in GENRE_TABLES.values()),
    ]
