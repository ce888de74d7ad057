"""Temperature schedules as files: a model source's fitted exponents turned into the ``beta(n)``
its queries should run with beyond the training length ``L``, and read back as
:class:`critscale.tempering.Schedule` objects.

Per unit ``(layer, head)`` the factor for a query that sees ``n`` keys is 1 up to ``L`` and beyond
it ``Lambda(n) / Lambda(L) = (log n / log L)^xi`` under the unit's fitted free law
``Lambda_n = c (log n)^xi``; the ``xi`` interval gives the band.  A unit without a fit keeps
``xi = 0`` (factor 1) and says why.  The per-layer and global variants are *means* of the per-head
exponents (unfitted heads counting as 0), so each carries the same mean ``log beta`` over the
heads it covers as the per-head schedule at every ``n``: the global variant is the dose-matched
control.  The file format is ``workflow/schemas/schedule.schema.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .tempering import LogPowerSchedule

FORMAT = "critscale-schedule"
VERSION = 1
SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "schedule.schema.json"
LAW = "beta(n) = 1 for n <= L, else (log n / log L)^xi: Lambda(n) / Lambda(L) of Lambda_n = c (log n)^xi"
VARIANTS = ("per_head", "per_head_low", "per_head_high", "per_layer", "global")


def _unit_records(fits: pd.DataFrame) -> list[dict]:
    records = []
    for row in fits.sort_values(["layer", "head"]).itertuples(index=False):
        fitted = row.fit_status == "fitted" and np.isfinite(row.xi)
        entry = {"layer": int(row.layer), "head": int(row.head), "fit_status": str(row.fit_status)}
        for name in ("xi", "xi_low", "xi_high"):
            value = getattr(row, name)
            entry[name] = float(value) if fitted and np.isfinite(value) else (0.0 if name == "xi" else None)
        entry["reason"] = None if fitted else f"no fit ({row.fit_status}): factor 1"
        records.append(entry)
    return records


def build_schedule(fits: pd.DataFrame, training_length: int, *, source: str, level: float, provenance: dict) -> dict:
    """The schedule document of one model source from its fit table (``critscale.fitting``)."""
    fits = fits.dropna(subset=["layer", "head"])
    units = _unit_records(fits)
    layers = sorted({u["layer"] for u in units})
    heads = sorted({u["head"] for u in units})
    xi = _grid(units, "xi", layers, heads)
    return {
        "format": FORMAT,
        "version": VERSION,
        "source": source,
        "training_length": int(training_length),
        "law": LAW,
        "level": float(level),
        "layers": len(layers),
        "heads": len(heads),
        "units": units,
        "per_layer": [{"layer": layer, "xi": float(value)} for layer, value in zip(layers, xi.mean(axis=1))],
        "global": {"xi": float(xi.mean())},
        "provenance": provenance,
    }


def _grid(units: list[dict], name: str, layers, heads) -> np.ndarray:
    """``(layers, heads)`` of one unit field (a missing bound falls back to the point ``xi``)."""
    grid = np.zeros((len(layers), len(heads)))
    for unit in units:
        value = unit[name] if unit[name] is not None else unit["xi"]
        grid[layers.index(unit["layer"]), heads.index(unit["head"])] = value
    return grid


def validate_document(document: dict) -> None:
    """Raise ``jsonschema.ValidationError`` unless the document follows the shipped schema."""
    import jsonschema

    jsonschema.validate(document, json.loads(SCHEMA_PATH.read_text()))


def write_schedule(document: dict, path) -> None:
    validate_document(document)
    Path(path).write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")


def read_schedule(path) -> dict:
    document = json.loads(Path(path).read_text())
    validate_document(document)
    return document


def schedule_variant(document: dict, variant: str = "per_head") -> LogPowerSchedule:
    """One variant of a schedule document as a :class:`~critscale.tempering.LogPowerSchedule`."""
    if variant not in VARIANTS:
        raise ValueError(f"schedule variant must be one of {VARIANTS}, got {variant!r}")
    units = document["units"]
    layers = list(range(document["layers"]))
    heads = list(range(document["heads"]))
    field = {"per_head_low": "xi_low", "per_head_high": "xi_high"}.get(variant, "xi")
    exponents = _grid(units, field, layers, heads)
    if variant == "per_layer":
        exponents = np.array([[entry["xi"]] for entry in document["per_layer"]])
    elif variant == "global":
        exponents = np.full((len(layers), 1), document["global"]["xi"])
    return LogPowerSchedule(variant, exponents, document["training_length"], gated=True,
                            notes={"source": document["source"]})


def shuffled_across_heads(schedule: LogPowerSchedule, seed: int) -> LogPowerSchedule:
    """The control: the same exponents permuted across every (layer, head), so the schedule's
    dose is kept and only which head gets which factor is lost."""
    flat = np.asarray(schedule.exponents, dtype=np.float64).ravel()
    permuted = np.random.default_rng(seed).permutation(flat).reshape(np.shape(schedule.exponents))
    return LogPowerSchedule("shuffled", permuted, schedule.training_length, schedule.gated, schedule.notes)


def store_provenance(attrs: dict, *, fits_path) -> dict:
    """What a schedule says made it: the statistics store's provenance (config, versions, model,
    corpus checksum, the windows fitted on) and the fit table's checksum."""
    from .storage import file_checksum

    record = {key: attrs[key] for key in ("source", "model", "corpus") if key in attrs}
    for key in ("provenance", "statistics_provenance"):
        if key in attrs:
            record[key] = json.loads(attrs[key])
    record["fits_checksum"] = file_checksum([fits_path])
    return record


def fitted_windows(document: dict) -> dict:
    """``{"length", "window_index", "seed"}`` of the windows the schedule's exponents came from
    (the intervention evaluates on windows disjoint from them)."""
    extraction = document["provenance"]["provenance"]
    return {
        "length": int(max(extraction["config"]["n_ladder"])),
        "window_index": [int(i) for i in extraction["windows"]["window_index"]],
        "seed": int(extraction["config"]["seed"]),
    }
