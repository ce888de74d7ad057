# Shared settings and helpers. The config is validated here, at parse time, so a bad key, a
# missing model or an unusable corpus stops the run before any job starts.
from pathlib import Path

from critscale import config as study_config

study_config.validate(config)

RESULTS = config["results"]
FAMILIES = list(config["families"])
MODEL_RUNS = study_config.model_sources(config)
SOURCES = FAMILIES + list(MODEL_RUNS)

study_config.validate_model_sources(config)


wildcard_constraints:
    family="|".join(FAMILIES) or "(?!)",
    model="|".join(config.get("models", {})) or "(?!)",
    model_source="|".join(MODEL_RUNS) or "(?!)",
    source="[A-Za-z0-9][A-Za-z0-9_.-]*",


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
    return spec


def all_targets():
    return [
        result("tables", "fits.csv"),
        result("tables", "theory_check.csv"),
        *figure_targets(),
        *prescription_targets(),
    ]
