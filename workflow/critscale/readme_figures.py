"""Small PNGs of a finished study for the README (``make readme-figures``).

Re-renders four key figures from a results folder into ``docs/figures/``, at a resolution low
enough that each file stays well under ``--max-kb`` (default 600 kB):

* ``exponent_table.png``: the fitted ``xi`` of every synthetic family, with intervals;
* ``scale_vs_log_n.png``: median ``Lambda_n`` of one family (default ``gaussian``) against
  ``log n`` with the fitted law and the finite-``n`` prediction;
* ``collapse_by_layer.png``: the collapse per layer of one model source with the model's own
  ``beta = 1`` marked;
* ``xi_heatmap.png``: ``xi`` per layer and head of the same model source;
* ``genres.png``: ``xi`` per head on one corpus against another (:mod:`critscale.figures.genres`),
  when the study compared genres (``tables/genre_heads.csv`` exists).

The model source defaults to the first model source of ``tables/fits.csv`` (the first corpus of
the first study).  A results folder without model sources (e.g. the tiny test study) gives the two
family figures only, and says so.  Run from the repository root::

    python -m critscale.readme_figures --results results --out docs/figures
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from critscale import storage
from critscale.figures.canvas import save
from critscale.figures.exponents import exponent_table, xi_heatmap
from critscale.figures.genres import genre_figure
from critscale.figures.per_source import collapse_by_layer, scale_vs_log_n

#: Resolutions tried in turn until a PNG is under the size limit.
DPI_STEPS = (90, 72, 60, 48)


def save_small(fig, path: Path, max_bytes: int) -> Path:
    """Save ``fig`` at the first resolution of :data:`DPI_STEPS` that stays under ``max_bytes``."""
    for dpi in DPI_STEPS:
        save(fig, path, dpi=dpi)
        if path.stat().st_size <= max_bytes:
            return path
    raise ValueError(f"{path.name} is {path.stat().st_size} bytes even at {DPI_STEPS[-1]} dpi "
                     f"(limit --max-kb {max_bytes // 1000})")


def model_source(fits: pd.DataFrame, requested: str | None) -> str | None:
    """``requested`` if the fit table has it as a model source, else its first model source."""
    models = list(dict.fromkeys(fits.loc[fits["kind"].astype(str) == "model", "source"].astype(str)))
    if requested is None:
        return models[0] if models else None
    if requested not in models:
        raise ValueError(f"--model-source {requested!r} is not a model source of the fit table; "
                         f"allowed: {models}")
    return requested


def readme_figures(results: Path, out: Path, family: str = "gaussian", model: str | None = None,
                   max_kb: int = 600) -> list[Path]:
    """Render the README figures of the study in ``results`` into ``out``; returns their paths."""
    fits_path = results / "tables" / "fits.csv"
    if not fits_path.is_file():
        raise ValueError(f"{fits_path} does not exist: run the study first (make study)")
    fits = pd.read_csv(fits_path)
    families = fits[fits["kind"].astype(str) == "family"]
    if family not in set(families["source"].astype(str)):
        raise ValueError(f"--family {family!r} is not a family of the fit table; "
                         f"allowed: {sorted(set(families['source'].astype(str)))}")
    out.mkdir(parents=True, exist_ok=True)
    max_bytes = max_kb * 1000
    written = [
        save_small(exponent_table(families), out / "exponent_table.png", max_bytes),
        save_small(scale_vs_log_n(storage.open_store(results / "stats" / f"{family}.zarr"), fits),
                   out / "scale_vs_log_n.png", max_bytes),
    ]
    source = model_source(fits, model)
    if source is None:
        print("no model source in the fit table: collapse_by_layer.png and xi_heatmap.png not made")
        return written
    stats = storage.open_store(results / "stats" / f"{source}.zarr")
    written.append(save_small(collapse_by_layer(stats), out / "collapse_by_layer.png", max_bytes))
    written.append(save_small(xi_heatmap(fits[fits["source"].astype(str) == source]),
                              out / "xi_heatmap.png", max_bytes))
    genres = genres_png(results, out, max_bytes)
    return written + ([genres] if genres else [])


def genres_png(results: Path, out: Path, max_bytes: int) -> Path | None:
    """``genres.png`` from the study's genre tables, or nothing when it compared no genres."""
    heads, summary = results / "tables" / "genre_heads.csv", results / "tables" / "genres.csv"
    if not (heads.is_file() and summary.is_file()):
        return None
    return save_small(genre_figure(pd.read_csv(heads), pd.read_csv(summary)), out / "genres.png", max_bytes)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("results"), help="results folder of a finished study")
    parser.add_argument("--out", type=Path, default=Path("docs/figures"), help="where the PNGs go")
    parser.add_argument("--family", default="gaussian", help="family of scale_vs_log_n.png")
    parser.add_argument("--model-source", default=None, help="model x corpus source (default: the first)")
    parser.add_argument("--max-kb", type=int, default=600, help="size limit of each PNG")
    args = parser.parse_args(argv)
    for path in readme_figures(args.results, args.out, args.family, args.model_source, args.max_kb):
        print(f"{path}  {path.stat().st_size // 1000} kB")


if __name__ == "__main__":
    sys.exit(main())
