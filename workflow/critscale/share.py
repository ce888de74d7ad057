"""One self-describing bundle of a study: Zarr that ``xarray.open_zarr`` opens directly.

Layout (one Zarr v3 hierarchy, zipped or as a directory)::

    /                      the fit table of every source (dimension ``fit``), attrs: data card,
                           config, versions, checksums of every component
    /headline              the per-source headline table (dimension ``source``)
    /stats/<source>        each statistics store
    /scores/<source>       each score store (optional)

Open it with ``xr.open_zarr("zip::bundle.zarr.zip")`` (or the directory path), and a component
with ``group="stats/gaussian"``; ``xr.open_datatree(..., engine="zarr")`` opens everything.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from pathlib import Path

import fsspec
import pandas as pd
import xarray as xr

from . import fitting, storage
from .gapstats import DESCRIPTIONS

DATACARD_TEMPLATE = """# critscale result bundle

Measurements of how softmax attention must be tempered as context grows (Hayase & Karakida,
arXiv 2605.12697, as restated in critscale's theory notes). Sources: {sources}.

## How to open
```python
import xarray as xr
fits = xr.open_zarr("{example}")                       # one entry per source x unit
stats = xr.open_zarr("{example}", group="stats/<source>")  # per-row statistics
```

## Root: fitted exponent laws (dimension `fit`)
{fit_columns}

## stats/<source>: per-row statistics (dimensions unit, n, row; grids t, r, beta, rho)
Scores are pre-softmax logits, so gaps are in logit units and inverse temperatures in 1/logit.
`<name>_rel` variables are evaluated at beta = rho * Lambda of each row; `<name>_quantiles` are
inverted-CDF quantiles over rows (always an observed value, inf-safe); `tied_rows` counts rows with
a tie at the maximum (Lambda = inf, never replaced by a finite number).
{stat_variables}

## Provenance
Every store's `attrs["provenance"]` (and `statistics_provenance`) holds the config that made it,
package versions, seeds or model revision, and the checksum of the score chunks; this bundle's
root attrs hold the study config, versions and a checksum of every component.
"""


def _markdown_list(items: dict[str, str]) -> str:
    return "\n".join(f"- `{name}`: {text}" for name, text in items.items())


def datacard(sources: list[str], example: str) -> str:
    """The bundle's data card: what each variable means, with units."""
    stat_variables = {name: f"{text} [{units}]" for name, (text, units) in DESCRIPTIONS.items()}
    return DATACARD_TEMPLATE.format(
        sources=", ".join(sources),
        example=example,
        fit_columns=_markdown_list(fitting.COLUMN_DESCRIPTIONS),
        stat_variables=_markdown_list(stat_variables),
    )


def _table_dataset(table: pd.DataFrame, dim: str) -> xr.Dataset:
    ds = xr.Dataset.from_dataframe(table.reset_index(drop=True).rename_axis(dim))
    for name in ds.data_vars:
        if ds[name].dtype == object:  # variable-length strings, which Zarr 3 specifies
            ds[name] = (dim, ds[name].fillna("").to_numpy().astype(str).astype(object))
    return ds


def pack_bundle(
    out_path,
    *,
    stats: dict[str, str],
    fits_table,
    headline_table,
    config: dict,
    scores: dict[str, str] | None = None,
    fmt: str = "zip",
    url: str | None = None,
    storage_options: dict | None = None,
) -> Path:
    """Write the bundle to ``out_path`` (``fmt`` ``zip`` or ``directory``) and, if ``url`` is
    given, also as a directory store at that fsspec URL (object storage, with
    ``storage_options``)."""
    out_path = Path(out_path)
    if out_path.exists():
        shutil.rmtree(out_path) if out_path.is_dir() else out_path.unlink()
    fits = fitting.fits_to_dataset(pd.read_csv(fits_table))
    components = [("", fits), ("headline", _table_dataset(pd.read_csv(headline_table), "source"))]
    checksums = {}
    for kind, paths in (("stats", stats), ("scores", scores or {})):
        for source, path in paths.items():
            components.append((f"{kind}/{source}", storage.open_store(path)))
            checksums[f"{kind}/{source}"] = storage.store_checksum(path, "scores" if kind == "scores" else "accumulation_scale")
    example = out_path.name if fmt == "directory" else f"zip::{out_path.name}"
    fits.attrs.update(
        datacard=datacard(sorted(stats), example),
        config=json.dumps(config, sort_keys=True, default=str),
        versions=json.dumps(storage.package_versions(), sort_keys=True),
        checksums=json.dumps(checksums, sort_keys=True),
    )
    with tempfile.TemporaryDirectory(dir=out_path.parent) as tmp:
        directory = Path(tmp) / "bundle.zarr"
        for group, ds in components:
            ds = ds.copy()
            for var in ds.variables.values():
                var.encoding = {}  # re-chunk freely: the source stores' encodings do not carry over
            with storage.quiet_consolidation():
                ds.to_zarr(directory, group=group or None, mode="w" if not group else "a", consolidated=False, zarr_format=3)
        storage.consolidate(directory)
        if url:  # object storage: the same directory store, uploaded through fsspec
            filesystem, remote = fsspec.core.url_to_fs(url, **(storage_options or {}))
            filesystem.put(str(directory), remote, recursive=True)
        if fmt == "zip":
            # Zarr's zip convention: the store's keys at the archive root, stored uncompressed
            # (chunks are compressed already).
            with zipfile.ZipFile(out_path, "w", compression=zipfile.ZIP_STORED) as archive:
                for file in sorted(directory.rglob("*")):
                    if file.is_file():
                        archive.write(file, file.relative_to(directory).as_posix())
        else:
            shutil.move(directory, out_path)
    (out_path.parent / f"{out_path.name}.DATACARD.md").write_text(fits.attrs["datacard"])
    return out_path


def open_bundle(path, group: str | None = None) -> xr.Dataset:
    """Open a bundle (zip or directory) or one of its groups."""
    path = str(path)
    if path.endswith(".zip") and "::" not in path:
        path = f"zip::{path}"
    with storage.quiet_consolidation():
        return xr.open_zarr(path, group=group, consolidated=True)
