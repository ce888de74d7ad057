"""The canvas every figure is drawn on: a fresh Agg figure in the study's seaborn style, without
pyplot (figures never accumulate in global state, no display is needed), one legend outside the
panels, readable ticks and labels, and :func:`save` to write it to disk."""

from __future__ import annotations

import functools
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator

N_PALETTE = "viridis"
MAX_ANNOTATED_CELLS = 400  # beyond this, heatmap numbers would be unreadable


def styled(function):
    """Draw inside the study's seaborn style without changing global rcParams."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.9):
            return function(*args, **kwargs)

    return wrapper


def new_figure(nrows: int = 1, ncols: int = 1, panel=(5.0, 3.8), legend: float = 0.0, **subplot_kw):
    """A fresh Agg figure and its axes as a 2-d array; ``legend`` inches are added on the right
    for a legend outside the panels (:func:`legend_outside`), so the panels keep their size."""
    fig = Figure(figsize=(panel[0] * ncols + legend, panel[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplot_kw)
    return fig, axes


def save(fig: Figure, path, dpi: int = 150) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix), creating the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


@contextmanager
def quiet_nan_reductions():
    """All-NaN slices (e.g. a length whose rows are all tied) are expected, not news."""
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.filterwarnings("ignore", message="All-NaN slice encountered")
        yield


def n_label(n: int) -> str:
    n = int(n)
    exponent = n.bit_length() - 1
    return f"$2^{{{exponent}}}$" if n == 2**exponent else str(n)


def n_colors(ladder) -> dict[int, tuple]:
    colors = sns.color_palette(N_PALETTE, len(ladder))
    return {int(n): color for n, color in zip(ladder, colors)}


def legend_outside(fig: Figure, handles=None, labels=None, title: str = "") -> None:
    """One legend for the whole figure, right of every panel, so that it never covers data or
    annotations; without ``handles``, the labelled artists of all axes, each label once."""
    if handles is None:
        found = {}
        for ax in fig.axes:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                found.setdefault(label, handle)
        handles, labels = list(found.values()), list(found)
    fig.legend(handles, labels, title=title, loc="outside right upper", fontsize="small",
               title_fontsize="small", ncols=1 + (len(handles) > 12), frameon=True)


def move_legend_outside(fig: Figure, ax, title: str) -> None:
    """Replace the legend seaborn drew inside ``ax`` by the same entries outside the panels."""
    inside = ax.get_legend()
    legend_outside(fig, inside.legend_handles, [text.get_text() for text in inside.get_texts()], title=title)
    inside.remove()


def readable_log_ticks(axis) -> None:
    """Plain-number ticks on a log axis, each label distinct: nice linear steps when the view
    spans less than a decade (where matplotlib's log labels repeat, e.g. "3e-01 3e-01"), else
    1, 2, 5 times powers of ten.  Call after the data are drawn (it reads the view limits)."""
    low, high = sorted(axis.get_view_interval())
    within_decade = low > 0 and high / low < 10
    nice_steps = MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10])
    axis.set_major_locator(nice_steps if within_decade else LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_locator(NullLocator())


def thinned(labels: list[str], most: int = 6) -> list[str]:
    """Every k-th label (the rest blank) so that at most about ``most`` are written."""
    step = int(np.ceil(len(labels) / most))
    return [label if i % step == 0 else "" for i, label in enumerate(labels)]


def label_blank_cells(ax, values: np.ndarray, labels: np.ndarray) -> None:
    """Write ``labels`` into the heatmap cells whose value is NaN (seaborn leaves them blank)."""
    for i, j in zip(*np.nonzero(~np.isfinite(values.astype(np.float64)))):
        if pd.notna(labels[i, j]):
            ax.text(j + 0.5, i + 0.5, str(labels[i, j]), ha="center", va="center", fontsize="x-small",
                    color="0.3", style="italic")
