"""Study configuration: validation with messages that name the key, and derived settings."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import numpy as np
import yaml

from .gapstats import Grids, octave_grid

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A config.yaml problem, with the offending key in the message."""


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _describe(error: jsonschema.ValidationError) -> str:
    where = _key(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
        return f"config key {where}: unknown key(s) {', '.join(map(repr, extra))}{hint}"
    if error.validator == "enum":
        return f"config key {where}: {error.instance!r} is not allowed; allowed values: {', '.join(map(repr, error.validator_value))}"
    if error.validator == "required":
        return f"config key {where}: {error.message}"
    if error.validator == "oneOf" and error.context:
        # Report the branch that got furthest (e.g. the dict form of a ladder, not the list form).
        relevant = [e for e in error.context if e.validator != "type"] or list(error.context)
        return _describe(max(relevant, key=lambda e: len(e.absolute_path)))
    return f"config key {where}: {error.message}"


def validate(config: dict) -> dict:
    """Validate ``config`` against the JSON schema and the cross-field rules; return it.

    Raises :class:`ConfigError` naming the key and what is allowed.
    """
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError("\n".join(_describe(e) for e in errors))
    for name in ("beta", "rho"):
        grid = config["grids"][name]
        if grid["min"] >= grid["max"]:
            raise ConfigError(f"config key grids.{name}: min ({grid['min']}) must be below max ({grid['max']})")
    for name, spec in config["families"].items():
        ladder(spec.get("ladder", config["ladder"]), f"families.{name}.ladder")
    ladder(config["ladder"], "ladder")
    for name, spec in config.get("models", {}).items():
        ladder(spec["ladder"], f"models.{name}.ladder")
    for i, study in enumerate(config.get("studies", [])):
        if study["model"] not in config.get("models", {}):
            raise ConfigError(
                f"config key studies.{i}.model: unknown model {study['model']!r}; "
                f"models in this config: {', '.join(config.get('models', {})) or 'none'}"
            )
        for corpus in study["corpora"]:
            if corpus not in config.get("corpora", {}):
                raise ConfigError(
                    f"config key studies.{i}.corpora: unknown corpus {corpus!r}; "
                    f"corpora in this config: {', '.join(config.get('corpora', {})) or 'none'}"
                )
    return config


def validate_model_sources(config: dict) -> None:
    """Check every model and corpus a study uses, fast (no weights loaded, no forward pass): a
    missing path, an unreachable hub id, a model whose attention cannot be captured, a ladder beyond the model's
    positions or an unusable corpus raise :class:`ConfigError` naming the key."""
    runs = model_sources(config)
    if not runs:
        return
    from . import corpora, model_loading  # torch and transformers load only when models are used

    for name in sorted({run["model"] for run in runs.values()}):
        spec = config["models"][name]
        try:
            model_loading.validate_model_spec(spec, max(ladder(spec["ladder"], f"models.{name}.ladder")))
        except model_loading.ModelSpecError as error:
            raise ConfigError(f"config key models.{name}: {error}") from None
    for name in sorted({run["corpus"] for run in runs.values()}):
        try:
            corpora.validate_corpus_spec(config["corpora"][name])
        except corpora.CorpusError as error:
            raise ConfigError(f"config key corpora.{name}: {error}") from None


def model_source_name(model: str, corpus: str, exclude_first_keys: int = 0) -> str:
    """``{model}__{corpus}``, with ``__skip{k}`` when the first ``k`` keys are masked."""
    return f"{model}__{corpus}" + (f"__skip{exclude_first_keys}" if exclude_first_keys else "")


def model_sources(config: dict) -> dict[str, dict]:
    """Each model x corpus (x sink variant) of the ``studies`` as a named source.

    ``{model}__{corpus}`` reads all keys; ``{model}__{corpus}__skip{k}`` masks the first ``k``.
    """
    sources = {}
    for study in config.get("studies", []):
        for corpus in study["corpora"]:
            for skip in study.get("exclude_first_keys", [0]):
                sources[model_source_name(study["model"], corpus, skip)] = {"model": study["model"], "corpus": corpus, "exclude_first_keys": skip}
    return sources


def load(path) -> dict:
    with open(path) as handle:
        return validate(yaml.safe_load(handle))


def ladder(spec, key: str = "ladder") -> list[int]:
    """The context lengths of a ladder spec (see the schema), checked to be increasing."""
    if isinstance(spec, dict):
        if spec["min_exponent"] >= spec["max_exponent"]:
            raise ConfigError(f"config key {key}: min_exponent must be below max_exponent")
        return [2**e for e in range(spec["min_exponent"], spec["max_exponent"] + 1)]
    values = [int(v) for v in spec]
    if any(v < 1 for v in values) or sorted(set(values)) != values:
        raise ConfigError(f"config key {key}: context lengths must be positive and strictly increasing, got {values}")
    return values


def grids(g: dict) -> Grids:
    """The evaluation grids of the ``grids`` section of the config."""
    return Grids(
        t=np.linspace(g["t"]["start"], g["t"]["stop"], g["t"]["num"]),
        resolutions=np.asarray(g["resolutions"], dtype=float),
        beta=octave_grid(g["beta"]["min"], g["beta"]["max"], g["beta"]["per_octave"]),
        rho=octave_grid(g["rho"]["min"], g["rho"]["max"], g["rho"]["per_octave"]),
    )
