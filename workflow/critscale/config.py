"""Study configuration: validation with messages that name the key, and derived settings."""

from __future__ import annotations

import copy
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import numpy as np
import yaml

from .families.spec import parse_spec
from .gapstats import Grids, row_statistics
from .model_sources import HUB_GGUF
from .study import ConfigError, ladder, model_source_name  # re-exported: critscale.config.ladder etc.

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"
#: Model score stores are float32 whatever the extraction dtype (critscale.extraction).
MODEL_SCORE_BYTES = 4


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


def fill_defaults(schema: dict, instance: dict) -> None:
    """Write each ``default`` of the schema's properties into ``instance`` where the key is absent,
    recursing into objects: the schema is the one home of every default, and the rules, scripts
    and size estimates read the filled config."""
    for key, spec in schema.get("properties", {}).items():
        if key not in instance and "default" in spec:
            instance[key] = copy.deepcopy(spec["default"])
        if isinstance(instance.get(key), dict):
            fill_defaults(spec, instance[key])


#: Keys renamed so that a *sequence* (an independent window or family row, what the fit
#: resamples) and a *unit* (a head: the stores' ``unit`` dimension) never share a name.
RENAMED_KEYS = {
    ("fitting", "min_units"): "fitting.min_sequences",
    ("fitting", "coverage", "unit_counts"): "fitting.coverage.sequence_counts",
    ("fitting", "coverage", "family_unit_counts"): "fitting.coverage.family_sequence_counts",
    ("fitting", "coverage", "rows_per_unit"): "fitting.coverage.rows_per_sequence",
}


def _refuse_renamed_keys(config: dict) -> None:
    for path, new in RENAMED_KEYS.items():
        section = config
        for key in path[:-1]:
            section = section.get(key) if isinstance(section, dict) else None
        if isinstance(section, dict) and path[-1] in section:
            raise ConfigError(f"config key {_key(path)} was renamed: use {new} (it counts independent "
                              "sequences, not units, which are heads)")


def validate(config: dict) -> dict:
    """Validate ``config`` against the JSON schema and the cross-field rules; return it.

    Raises :class:`ConfigError` naming the key and what is allowed.
    """
    _refuse_renamed_keys(config)
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError("\n".join(_describe(e) for e in errors))
    fill_defaults(schema, config)
    for name in ("beta", "rho"):
        grid = config["grids"][name]
        if grid["min"] >= grid["max"]:
            raise ConfigError(f"config key grids.{name}: min ({grid['min']}) must be below max ({grid['max']})")
    ladder(config["ladder"], "ladder")  # first, so an error in the shared ladder names its own key
    for name, spec in config["families"].items():
        _validate_family(name, spec, ladder(spec.get("ladder", config["ladder"]), f"families.{name}.ladder"))
    for name, spec in config.get("models", {}).items():
        _validate_model_entry(name, spec, config.get("extraction", {}))
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
    share_url(config)
    return config


def share_url(config: dict) -> str | None:
    """Where ``share.url`` puts the bundle: a scheme URL (``s3://...``) or absolute path as given,
    a relative path under the ``results`` folder (so a share cannot land beside, or over, other
    files); a relative path that escapes ``results`` is a :class:`ConfigError`."""
    url = config.get("share", {}).get("url")
    if not url or "://" in url or "::" in url or os.path.isabs(url):
        return url
    results = os.path.normpath(config["results"])
    resolved = os.path.normpath(os.path.join(results, url))
    if os.path.commonpath([results, resolved]) != results or resolved == results:
        raise ConfigError(
            f"config key share.url: relative path {url!r} resolves to {resolved!r}, outside the results folder "
            f"{results!r}; use a path below it, an absolute path, or a URL such as s3://bucket/prefix"
        )
    return resolved


def _validate_family(name: str, spec: dict, n_ladder: list[int]) -> None:
    """What the schema cannot say about a family: constraints between parameters (simplex
    ``p < q``), finite values, quantile sampling of a non-i.i.d. family, ``ties`` beyond the
    shortest ``n``."""
    try:
        family, _ = parse_spec(spec)
    except ValueError as error:
        raise ConfigError(f"config key families.{name}: {error}") from None
    ties = family.ties_at_maximum
    if ties > n_ladder[0]:
        raise ConfigError(
            f"config key families.{name}.params.ties: {ties} tied keys do not fit the shortest n = {n_ladder[0]} "
            f"of the ladder; lower ties or start the ladder at n >= {ties}"
        )


def _validate_model_entry(name: str, spec: dict, extraction: dict) -> None:
    """What the schema cannot say about a model entry: a hub model has no GGUF reading (the GGUF
    conversion needs a local path), and every query window must fit the shortest ``n``."""
    n_ladder = ladder(spec["ladder"], f"models.{name}.ladder")
    if "id" in spec and "gguf_file" in spec:
        raise ConfigError(f"config key models.{name}.gguf_file: {HUB_GGUF}")
    queries = extraction.get("queries")
    if queries is not None and queries > n_ladder[0]:
        raise ConfigError(
            f"config key extraction.queries: {queries} queries do not fit the shortest n = {n_ladder[0]} of "
            f"models.{name}.ladder; allowed: queries <= {n_ladder[0]}"
        )


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
        _validate_layers_heads(config, name)
    for name in sorted({run["corpus"] for run in runs.values()}):
        try:
            corpora.validate_corpus_spec(config["corpora"][name])
        except corpora.CorpusError as error:
            raise ConfigError(f"config key corpora.{name}: {error}") from None
    validate_corpus_pins(config, runs)


def corpus_tokens_needed(config: dict, runs: dict) -> dict[str, int]:
    """Tokens each corpus must hold: windows of the longest n of every model reading it, without overlap."""
    needed: dict[str, int] = {}
    for run in runs.values():
        spec = config["models"][run["model"]]
        sequences = spec.get("sequences", config["extraction"]["sequences"])
        tokens = int(sequences) * max(ladder(spec["ladder"], f"models.{run['model']}.ladder"))
        needed[run["corpus"]] = max(needed.get(run["corpus"], 0), tokens)
    return needed


def validate_corpus_pins(config: dict, runs: dict) -> None:
    """Read each local corpus a study uses and check its pinned checksum and its length, so a
    changed or too short text stops the workflow before any job (Hugging Face streams are not read here)."""
    from . import corpora

    for name, tokens in sorted(corpus_tokens_needed(config, runs).items()):
        if config["corpora"][name].get("kind") == "huggingface":
            continue
        try:
            corpora.check_pinned(config["corpora"][name], tokens)
        except corpora.CorpusError as error:
            raise ConfigError(f"config key corpora.{name}: {error}") from None


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


def extracted_sources(config: dict) -> dict[str, dict]:
    """The model x corpus pairs whose scores are extracted, ``{model}__{corpus}``: a sink variant
    reads the scores of its pair and masks its first keys in the statistics stage, so it costs no
    extraction."""
    return {
        model_source_name(run["model"], run["corpus"]): {**run, "exclude_first_keys": 0}
        for run in model_sources(config).values()
    }


def scores_source(config: dict, source: str) -> str:
    """The source whose score store ``source``'s statistics read (itself, but for a sink variant)."""
    run = model_sources(config).get(source)
    return model_source_name(run["model"], run["corpus"]) if run else source


#: The keys of the ``fitting`` section that change a fit: :func:`critscale.fitting.settings_from_config`
#: reads exactly these (tests/test_fitting.py checks it).  The rule ``fit`` takes only these, so
#: changing ``coverage``, ``training_length`` or ``extension_factors`` reruns no fit.
FIT_KEYS = ("bootstrap", "held_out", "level", "method", "min_sequences", "fdr", "fdr_method", "law_share")


def fit_settings(config: dict) -> dict:
    """The ``fitting`` keys of :data:`FIT_KEYS` that the config sets (the params of the rules
    ``fit`` and ``genres``)."""
    return {key: value for key, value in config["fitting"].items() if key in FIT_KEYS}


def coverage_settings(config: dict) -> dict:
    """The fit settings and the ``fitting.coverage`` harness (the rule ``coverage``'s params): not
    the prescriptions' ``training_length`` or ``extension_factors``."""
    return {**fit_settings(config), "coverage": config["fitting"]["coverage"]}


def prescription_settings(config: dict) -> dict:
    """The ``fitting`` keys the prescriptions read (the rule ``prescriptions``' params): a change
    of the resampling or the coverage harness must not rerun them."""
    return {key: config["fitting"][key] for key in ("training_length", "extension_factors")}


def statistics_settings(config: dict) -> dict:
    """The ``compute`` section without ``scheduler`` (the rule ``statistics``' params): where the
    Dask stage runs never changes what it writes (tests/test_compute.py: the same store on every
    scheduler), so a new scheduler must not rerun it; the script reads the scheduler itself."""
    return {key: value for key, value in config["compute"].items() if key != "scheduler"}


def load(path) -> dict:
    with open(path) as handle:
        return validate(yaml.safe_load(handle))


def grids(g: dict) -> Grids:
    """The evaluation grids of the ``grids`` section of the config (:meth:`Grids.from_config`)."""
    return Grids.from_config(g)


# --------------------------------------------------------------------------------------------
# Disk the study's stores will take, checked before any job runs


@dataclass(frozen=True)
class StoreEstimate:
    """Estimated bytes of one store and the config keys that size it."""

    path: str
    nbytes: int
    keys: tuple[str, ...]


def statistics_bytes_per_row(config: dict) -> int:
    """Bytes of the per-row statistics of one row on the configured grids (measured on a row)."""
    stats = row_statistics(np.zeros((1, 2)), grids(config["grids"]))
    return sum(np.asarray(value).nbytes for value in stats.values())


def _family_stores(config: dict, per_row: int) -> list[StoreEstimate]:
    estimates = []
    for name, spec in config["families"].items():
        n_ladder = ladder(spec.get("ladder", config["ladder"]))
        rows = spec.get("rows", config.get("rows", 256))
        keys = (
            f"families.{name}.rows" if "rows" in spec else "rows",
            f"families.{name}.ladder" if "ladder" in spec else "ladder",
        )
        itemsize = np.dtype(spec.get("dtype", "float32")).itemsize
        estimates.append(StoreEstimate(f"scores/{name}.zarr", rows * sum(n_ladder) * itemsize, keys))
        estimates.append(StoreEstimate(f"stats/{name}.zarr", rows * len(n_ladder) * per_row, keys))
    return estimates


def model_units(config: dict, model: str) -> int:
    """Layers x heads a model source extracts: the ``extraction`` lists, else the whole model
    (read from the model's config; no weights loaded)."""
    from . import model_loading  # torch and transformers load only when models are used

    chosen = config.get("extraction", {})
    layers, heads = chosen.get("layers"), chosen.get("heads")
    if layers is None or heads is None:
        n_layers, n_heads = model_shape(config["models"][model])
        layers = range(n_layers) if layers is None else layers
        heads = range(n_heads) if heads is None else heads
    return len(layers) * len(heads)


def model_shape(spec: dict) -> tuple[int, int]:
    """Layers and attention heads of a model entry, from its config or GGUF header (no weights loaded)."""
    from .model_sources import model_source

    return model_source(spec).shape()


def _validate_layers_heads(config: dict, name: str) -> None:
    """``extraction.layers`` / ``heads`` must exist in the model, else the job fails after loading it."""
    chosen = config.get("extraction", {})
    if chosen.get("layers") is None and chosen.get("heads") is None:
        return
    for key, count in zip(("layers", "heads"), model_shape(config["models"][name])):
        beyond = [i for i in chosen.get(key) or [] if i >= count]
        if beyond:
            raise ConfigError(
                f"config key extraction.{key}: {beyond} not in models.{name}, which has {count} {key}; allowed: 0..{count - 1}"
            )


def _model_stores(config: dict, per_row: int, units_of) -> list[StoreEstimate]:
    extraction = config.get("extraction", {})
    estimates = []
    # score stores of the extracted pairs only (sink variants reuse them); statistics of every source
    for store, sources in (("scores", extracted_sources(config)), ("stats", model_sources(config))):
        for source, run in sources.items():
            n_ladder = ladder(config["models"][run["model"]]["ladder"])
            units = units_of(run["model"])
            sequences = config["models"][run["model"]].get("sequences", extraction["sequences"])
            rows = sequences * extraction["queries"]
            keys = ("extraction.sequences", "extraction.queries", f"models.{run['model']}.ladder", "extraction.layers", "extraction.heads")
            per_unit_row = sum(n_ladder) * MODEL_SCORE_BYTES if store == "scores" else len(n_ladder) * per_row
            estimates.append(StoreEstimate(f"{store}/{source}.zarr", units * rows * per_unit_row, keys))
    return estimates


def estimate_stores(config: dict, units_of=None) -> list[StoreEstimate]:
    """Uncompressed size of every score and statistics store of the study: scores are rows x
    keys (the sum of the ladder) x the dtype's bytes; statistics rows x ladder x the bytes of one
    row's statistics on the grids; model sources multiply by layers x heads. ``units_of(model)``
    gives a model's layers x heads (default :func:`model_units`)."""
    per_row = statistics_bytes_per_row(config)
    units_of = units_of or (lambda model: model_units(config, model))
    return _family_stores(config, per_row) + _model_stores(config, per_row, units_of)


def free_bytes(folder) -> int | None:
    """Free bytes of the file system ``folder`` is (or will be) on; None for an fsspec URL."""
    if "://" in str(folder):
        return None
    path = Path(folder).resolve()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def _gb(nbytes: float) -> str:
    return f"{nbytes / 1e9:.3g} GB"


def check_storage(config: dict, units_of=None) -> list[StoreEstimate]:
    """Stop (``ConfigError``) when the study's stores would exceed ``storage_budget_gb`` or the
    free disk of the results folder (stores already written are not counted there); return the
    estimates."""
    estimates = estimate_stores(config, units_of)
    total = sum(e.nbytes for e in estimates)
    largest = max(estimates, key=lambda e: e.nbytes, default=None)
    if largest is None:
        return estimates
    hint = f"the largest is {config['results']}/{largest.path} (about {_gb(largest.nbytes)}; lower {', '.join(largest.keys)})"
    budget = config["storage_budget_gb"]
    if total > budget * 1e9:
        raise ConfigError(
            f"config key storage_budget_gb: the study's stores would take about {_gb(total)}, beyond the budget of "
            f"{budget} GB; {hint}, or raise storage_budget_gb"
        )
    pending = sum(e.nbytes for e in estimates if not Path(config["results"], e.path).exists())
    free = free_bytes(config["results"])
    if free is not None and pending > free:
        raise ConfigError(
            f"config key results: the stores still to write need about {_gb(pending)} but {config['results']} has "
            f"{_gb(free)} free; free disk, choose another results folder, or shrink the study: {hint}"
        )
    return estimates
