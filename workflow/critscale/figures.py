"""Figures of a study: gap counting, scale laws, the collapse, exponents, prescriptions.

Every function takes xarray / pandas inputs (a statistics store, the fit table, prescription
tables) and returns a :class:`matplotlib.figure.Figure` drawn on the Agg canvas, without pyplot,
so that figures never accumulate in global state and no display is needed.  :func:`save` writes
one to disk.

Conventions:

* Per ``(unit, n)`` the aggregate of per-row ``Lambda`` is the median over rows, as in
  :mod:`critscale.fitting`; a tied row (``Lambda = inf``) enters it, so a median is infinite
  exactly when at least half the rows are tied.  Infinite or NaN aggregates are not drawn; the
  panel says how many lengths were left out.
* A store with many units (layer x head) shows at most ``max_units`` of them, chosen by
  :func:`select_units` to span the range of median ``Lambda`` at the largest ``n``.
"""

from __future__ import annotations

import functools
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
import xarray as xr
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator

#: Candidate laws of the fit table, simplest first (as in :data:`critscale.fitting.LAWS`).
LAWS = ("constant", "sqrt_log", "log", "log_squared", "free", "power")
#: A unit's headline law (``law_winner``): a law, ``undecided`` or, without a fit, ``not scored``.
LAW_OUTCOMES = (*LAWS, "undecided", "not scored")
LAW_LABELS = {
    "constant": "constant",
    "sqrt_log": r"$\sqrt{\log n}$",
    "log": r"$\log n$",
    "log_squared": r"$(\log n)^2$",
    "free": r"$(\log n)^\xi$",
    "power": r"$n^p$",
    "undecided": "undecided",
    "not scored": "not scored",
}
#: ``xi`` and line style of the fixed laws, drawn as reference lines in the exponent table.
REFERENCE_EXPONENTS = {"sqrt_log": (0.5, ":"), "log": (1.0, "--"), "log_squared": (2.0, "-.")}
REGIME_SHORT = {"subcritical": "sub", "critical": "crit", "supercritical": "super", "tied": "tied"}
N_PALETTE = "viridis"
CLOUD_ROWS = 24  # rows per n drawn in the light per-row cloud of the collapse plot
MAX_ANNOTATED_CELLS = 400  # beyond this, heatmap numbers would be unreadable


def _styled(function):
    """Draw inside the study's seaborn style without changing global rcParams."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.9):
            return function(*args, **kwargs)

    return wrapper


def _figure(nrows: int = 1, ncols: int = 1, panel=(5.0, 3.8), legend: float = 0.0, **subplot_kw):
    """A fresh Agg figure and its axes as a 2-d array; ``legend`` inches are added on the right
    for a legend outside the panels (:func:`_legend_outside`), so the panels keep their size."""
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


# --- selection and labels ---------------------------------------------------------------------


@contextmanager
def _quiet_nan_reductions():
    """All-NaN slices (e.g. a length whose rows are all tied) are expected, not news."""
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.filterwarnings("ignore", message="All-NaN slice encountered")
        yield


def median_scale(stats: xr.Dataset) -> xr.DataArray:
    """Median over rows of per-row ``Lambda``, ``(unit, n)``; ties count as ``inf``."""
    with _quiet_nan_reductions():
        return stats["accumulation_scale"].load().median("row", skipna=True)


def select_units(stats: xr.Dataset, unit=None, max_units: int = 4) -> list[str]:
    """Units to draw: ``unit`` (one label or a list), or all units if there are at most
    ``max_units``, or else ``max_units`` units whose median ``Lambda`` at the largest ``n`` sits
    at evenly spaced ranks (smallest to largest, infinite last), so the panels span the store."""
    if unit is not None:
        chosen = [unit] if isinstance(unit, str) else list(unit)
        missing = sorted(set(chosen) - {str(u) for u in stats["unit"].values})
        if missing:
            raise KeyError(f"unit(s) {missing} not in the store {stats.attrs.get('source', '')!r}")
        return chosen
    labels = [str(u) for u in stats["unit"].values]
    if len(labels) <= max_units:
        return labels
    largest = median_scale(stats.isel(n=[-1])).isel(n=0).values
    order = np.argsort(np.where(np.isnan(largest), np.inf, largest), kind="stable")
    ranks = np.unique(np.round(np.linspace(0, len(order) - 1, max_units)).astype(int))
    return [labels[i] for i in order[ranks]]


def _unit_title(stats: xr.Dataset, unit: str) -> str:
    source = stats.attrs.get("source", "")
    if "layer" in stats.coords and "head" in stats.coords:
        labels = stats[["layer", "head"]].sel(unit=unit)
        return f"{source}: layer {int(labels['layer'])}, head {int(labels['head'])}"
    return source if unit == source else f"{source}: {unit}"


def _n_label(n: int) -> str:
    n = int(n)
    exponent = n.bit_length() - 1
    return f"$2^{{{exponent}}}$" if n == 2**exponent else str(n)


def _n_colors(ladder) -> dict[int, tuple]:
    colors = sns.color_palette(N_PALETTE, len(ladder))
    return {int(n): color for n, color in zip(ladder, colors)}


def _legend_outside(fig: Figure, handles=None, labels=None, title: str = "") -> None:
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


def _move_legend_outside(fig: Figure, ax, title: str) -> None:
    """Replace the legend seaborn drew inside ``ax`` by the same entries outside the panels."""
    inside = ax.get_legend()
    _legend_outside(fig, inside.legend_handles, [text.get_text() for text in inside.get_texts()], title=title)
    inside.remove()


def _readable_log_ticks(axis) -> None:
    """Plain-number ticks on a log axis, each label distinct: nice linear steps when the view
    spans less than a decade (where matplotlib's log labels repeat, e.g. "3e-01 3e-01"), else
    1, 2, 5 times powers of ten.  Call after the data are drawn (it reads the view limits)."""
    low, high = sorted(axis.get_view_interval())
    within_decade = low > 0 and high / low < 10
    nice_steps = MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10])
    axis.set_major_locator(nice_steps if within_decade else LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_locator(NullLocator())


def _thinned(labels: list[str], most: int = 6) -> list[str]:
    """Every k-th label (the rest blank) so that at most about ``most`` are written."""
    step = int(np.ceil(len(labels) / most))
    return [label if i % step == 0 else "" for i, label in enumerate(labels)]


def _fit_row(fits: pd.DataFrame | None, source: str, unit: str) -> pd.Series | None:
    """The fit table's row of ``(source, unit)``, or None."""
    if fits is None or fits.empty:
        return None
    match = fits[(fits["source"].astype(str) == source) & (fits["unit"].astype(str) == unit)]
    return None if match.empty else match.iloc[0]


# --- per-source figures -----------------------------------------------------------------------


@_styled
def gap_counting(stats: xr.Dataset, unit=None, max_units: int = 4) -> Figure:
    """``log N(t)`` against the gap ``t``: median over rows, one line per ``n``.

    ``N(t)`` is the number of keys within ``t`` of the row's maximum; its growth near ``t = 0``
    sets ``Lambda`` (the steepest ray ``log N(t) <= Lambda t`` from the origin).
    """
    units = select_units(stats, unit, max_units)
    ladder = [int(n) for n in stats["n"].values]
    colors = _n_colors(ladder)
    fig, axes = _figure(1, len(units), legend=0.9 + 0.5 * (len(ladder) > 12))
    t = stats["t"].values
    for ax, label in zip(axes[0], units):
        counts = stats["gap_count"].sel(unit=label).transpose("n", "row", "t").values.astype(np.float64)
        with _quiet_nan_reductions():
            # N(t) = 0 only for a row without keys (padding); it has no logarithm.
            log_counts = np.nanmedian(np.log(np.where(counts > 0, counts, np.nan)), axis=1)
        for n, curve in zip(ladder, log_counts):
            ax.plot(t, curve, color=colors[n], lw=1.8, label=_n_label(n))
        ax.set(xlabel=r"gap $t$ below the row maximum", ylabel=r"$\log N(t)$  (median over rows)",
               title=_unit_title(stats, label), xlim=(t[0], t[-1]))
        ax.set_ylim(bottom=0)
    _legend_outside(fig, title="n")
    return fig


def _free_law(fit: pd.Series | None, log_n: np.ndarray, median: np.ndarray):
    """``(curve, summary)`` of the fitted law ``c (log n)^xi`` (summary: ``xi`` and its
    interval), or None without a fit.

    ``c`` is the table's ``free_law_coefficient`` where present; otherwise the least-squares
    intercept through the drawn medians (the same OLS the fit uses)."""
    if fit is None or not np.isfinite(fit.get("xi", np.nan)):
        return None
    xi = float(fit["xi"])
    coefficient = fit.get("free_law_coefficient", np.nan)
    if not np.isfinite(coefficient):
        usable = np.isfinite(median) & (median > 0)
        coefficient = np.exp(np.mean(np.log(median[usable]) - xi * np.log(log_n[usable])))
    interval = ""
    if np.isfinite(fit.get("xi_low", np.nan)) and np.isfinite(fit.get("xi_high", np.nan)):
        interval = f" [{fit['xi_low']:.2f}, {fit['xi_high']:.2f}]"
    return coefficient * log_n**xi, rf"fit $\xi$ = {xi:.2f}{interval}"


@_styled
def scale_vs_log_n(stats: xr.Dataset, fits: pd.DataFrame | None = None, unit=None, max_units: int = 4) -> Figure:
    """Median ``Lambda_n`` (band: interquartile range over rows) against ``log n``, log-log.

    Drawn with it: the fitted free law ``c (log n)^xi`` of ``fits`` (the row of this source and
    unit), and, where the store carries them (synthetic families), the finite-``n`` prediction
    (median of ``predicted_accumulation_scale``) and the asymptotic law.  On these axes a law
    ``(log n)^xi`` is a straight line of slope ``xi``.
    """
    units = select_units(stats, unit, max_units)
    source = str(stats.attrs.get("source", ""))
    ladder = stats["n"].values.astype(np.int64)
    log_n = np.log(ladder.astype(np.float64))
    medians = median_scale(stats)
    fig, axes = _figure(1, len(units), panel=(4.6, 4.0), legend=2.6)
    pad = (log_n[-1] / log_n[0]) ** 0.05
    for ax, label in zip(axes[0], units):
        rows = stats["accumulation_scale"].sel(unit=label).transpose("n", "row").values
        median = medians.sel(unit=label).values
        with _quiet_nan_reductions():
            # inverted_cdf picks observed values, so an inf (tie) never meets a finite one in a sum.
            low, high = np.nanquantile(rows, [0.25, 0.75], axis=1, method="inverted_cdf")
        drawn = np.isfinite(median) & (median > 0)
        band = drawn & np.isfinite(low) & np.isfinite(high) & (low > 0)
        if band.any():
            ax.fill_between(log_n[band], low[band], high[band], color="C0", alpha=0.2, lw=0,
                            label="interquartile range over rows")
        if drawn.any():
            ax.plot(log_n[drawn], median[drawn], "o-", color="C0", lw=2, label=r"median $\Lambda_n$")
        law = _free_law(_fit_row(fits, source, label), log_n, median)
        if law is not None:
            ax.plot(log_n, law[0], "-", color="C3", lw=1.5, label=r"fit $c(\log n)^\xi$")
        if "predicted_accumulation_scale" in stats:
            predicted = stats["predicted_accumulation_scale"]
            level_dim = next(d for d in predicted.dims if d != "n")
            predicted = predicted.sel({level_dim: 0.5}, method="nearest").values
            if np.isfinite(predicted).any():  # a tied family's prediction is infinite: nothing to draw
                ax.plot(log_n, predicted, "--", color="k", lw=1.3, label=r"theory: predicted median at finite $n$")
        if "asymptotic_accumulation_scale" in stats:
            asymptotic = stats["asymptotic_accumulation_scale"].values
            if np.isfinite(asymptotic).any():
                ax.plot(log_n, asymptotic, ":", color="0.4", lw=1.3, label="theory: asymptotic law")
        if not drawn.any():
            ax.text(0.5, 0.5, r"no finite median $\Lambda_n$ (most rows tied)", transform=ax.transAxes,
                    ha="center", va="center")
            ax.set_yticks([])  # an empty axis has no scale to read
        ax.set_xscale("log")
        ax.set_xlim(log_n[0] / pad, log_n[-1] * pad)
        ax.set_xticks(log_n, _thinned([f"{v:.1f}" for v in log_n]), minor=False)
        ax.xaxis.set_minor_locator(NullLocator())
        if drawn.any():  # plain numbers: the values, not powers of ten, are what a reader compares
            ax.set_yscale("log")
            _readable_log_ticks(ax.yaxis)
        top = ax.secondary_xaxis("top")
        top.set_xticks(log_n, _thinned([_n_label(n) for n in ladder]))
        top.xaxis.set_minor_locator(NullLocator())
        title = _unit_title(stats, label)
        if law is not None:
            title += f"\n{law[1]}"
        left_out = int((~drawn).sum())
        if left_out:
            title += f"\n({left_out} length(s) with infinite median, i.e. tied, not drawn)"
        ax.set(xlabel=r"$\log n$  (top axis: $n$)", ylabel=r"median $\Lambda_n$ (accumulation scale)", title=title)
    _legend_outside(fig)
    return fig


def _operating_rho(stats: xr.Dataset, label: str) -> np.ndarray:
    """``rho`` of ``beta = 1`` per ``n``: ``1 / median Lambda_n`` (the model's own temperature)."""
    with np.errstate(divide="ignore"):
        return 1.0 / median_scale(stats).sel(unit=label).values


@_styled
def collapse(stats: xr.Dataset, unit=None, max_units: int = 3, mark_beta_one: bool | None = None,
             seed: int = 0) -> Figure:
    """The collapse: entropy and top-two gap against ``rho = beta / Lambda``, all ``n`` overlaid.

    Entropy is normalised by its maximum ``log n`` (per row, ``n`` = visible keys), so both panels
    run from 0 to 1.  Lines: median over rows per ``n``; faint lines: up to ``CLOUD_ROWS`` rows per
    ``n``.  Tied rows (``Lambda = inf``) have no ``rho`` and are left out.  The theorem: below
    ``rho = 1`` the top two stay unseparated, above it the entropy collapses; curves of all ``n``
    fall on one.  For model stores (``mark_beta_one`` default) the model's own ``beta = 1`` is
    marked on each median curve.
    """
    units = select_units(stats, unit, max_units)
    mark_beta_one = stats.attrs.get("kind") == "model" if mark_beta_one is None else mark_beta_one
    ladder = [int(n) for n in stats["n"].values]
    colors = _n_colors(ladder)
    rho = stats["rho"].values
    rng = np.random.default_rng(seed)
    fig, axes = _figure(len(units), 2, panel=(5.0, 3.6), legend=1.7)
    for axes_row, label in zip(axes, units):
        entropy = stats["entropy_rel"].sel(unit=label).transpose("n", "row", "rho").values
        gap = stats["top_two_gap_rel"].sel(unit=label).transpose("n", "row", "rho").values
        keys = stats["n_keys"].sel(unit=label).transpose("n", "row").values.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            entropy = entropy / np.where(keys > 1, np.log(keys), np.nan)[..., None]
        operating = _operating_rho(stats, label)
        for ax, values, name in (
            (axes_row[0], entropy, r"entropy $H / \log n$"),
            (axes_row[1], gap, r"top-two gap $\Delta_{top}$"),
        ):
            for i, n in enumerate(ladder):
                finite_rows = np.flatnonzero(np.isfinite(values[i]).any(axis=-1))
                cloud = rng.choice(finite_rows, min(CLOUD_ROWS, len(finite_rows)), replace=False)
                for row in cloud:
                    ax.plot(rho, values[i, row], color=colors[n], lw=0.6, alpha=0.12)
                with _quiet_nan_reductions():
                    median = np.nanmedian(values[i], axis=0)
                ax.plot(rho, median, color=colors[n], lw=2, label=_n_label(n))
                if mark_beta_one and np.isfinite(operating[i]) and rho[0] <= operating[i] <= rho[-1]:
                    at = np.interp(np.log(operating[i]), np.log(rho), median)
                    ax.plot(operating[i], at, "o", ms=7, mfc=colors[n], mec="k", zorder=5)
            ax.axvline(1.0, color="k", ls="--", lw=1)
            ax.set_xscale("log", base=2)
            ax.set(xlabel=r"$\rho = \beta / \Lambda$", ylabel=f"{name} (median over rows)",
                   title=_unit_title(stats, label), ylim=(-0.02, 1.02))
    _collapse_legend(fig, ladder, colors, mark_beta_one, rho_line="--")
    return fig


def _collapse_legend(fig: Figure, ladder, colors, mark_beta_one: bool, rho_line: str, gap_line: str = "") -> None:
    """The legend of the collapse figures: one line per ``n``, then the keys of the line styles
    (the transition ``rho = 1``, the top-two gap if drawn as ``gap_line``) and of the dots."""
    handles = [Line2D([], [], color=colors[n], lw=2) for n in ladder]
    labels = [_n_label(n) for n in ladder]
    keys = [(Line2D([], [], color="k", ls=rho_line, lw=1), r"$\rho = 1$")]
    if gap_line:
        keys = [(Line2D([], [], color="0.3", lw=1.4), r"entropy $H / \log n$"),
                (Line2D([], [], color="0.3", ls=gap_line, lw=1.0), r"top-two gap $\Delta_{top}$"), *keys]
    if mark_beta_one:
        keys.append((Line2D([], [], ls="", marker="o", mfc="0.7", mec="k"), r"model's own $\beta = 1$"))
    _legend_outside(fig, handles + [handle for handle, _ in keys], labels + [label for _, label in keys], title="n")


@_styled
def collapse_by_layer(stats: xr.Dataset, columns: int = 6) -> Figure:
    """The collapse on real rows, one panel per layer: entropy ``H / log n`` (solid) and top-two
    gap (dashed) against ``rho = beta / Lambda``, medians over every head and row of the layer,
    all ``n`` overlaid; the dot on each entropy curve is the model's own ``beta = 1`` (``rho`` =
    1 / median ``Lambda_n`` over the layer's heads)."""
    layers = sorted({int(layer) for layer in stats["layer"].values})
    ladder = [int(n) for n in stats["n"].values]
    colors = _n_colors(ladder)
    rho = stats["rho"].values
    rows = int(np.ceil(len(layers) / columns))
    fig, axes = _figure(rows, columns, panel=(2.6, 2.0), legend=1.7, sharex=True, sharey=True)
    scale = median_scale(stats)
    for ax, layer in zip(axes.flat, layers):
        units = stats["unit"].values[stats["layer"].values == layer]
        part = stats.sel(unit=units)
        keys = part["n_keys"].values.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            entropy = part["entropy_rel"].values / np.where(keys > 1, np.log(keys), np.nan)[..., None]
        gap = part["top_two_gap_rel"].values
        with np.errstate(divide="ignore"):
            operating = 1.0 / np.nanmedian(scale.sel(unit=units).values, axis=0)
        for i, n in enumerate(ladder):
            with _quiet_nan_reductions():
                median_entropy = np.nanmedian(entropy[:, i].reshape(-1, len(rho)), axis=0)
                median_gap = np.nanmedian(gap[:, i].reshape(-1, len(rho)), axis=0)
            ax.plot(rho, median_entropy, color=colors[n], lw=1.4, label=_n_label(n))
            ax.plot(rho, median_gap, color=colors[n], lw=1.0, ls="--")
            if np.isfinite(operating[i]) and rho[0] <= operating[i] <= rho[-1]:
                at = np.interp(np.log(operating[i]), np.log(rho), median_entropy)
                ax.plot(operating[i], at, "o", ms=4, mfc=colors[n], mec="k", zorder=5)
        ax.axvline(1.0, color="k", ls=":", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_title(f"layer {layer}", fontsize="small")
    for ax in axes.flat[len(layers):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel(r"$\rho = \beta / \Lambda$")
    for ax in axes[:, 0]:
        ax.set_ylabel(r"$H/\log n$, $\Delta_{top}$")
    _collapse_legend(fig, ladder, colors, mark_beta_one=True, rho_line=":", gap_line="--")
    fig.suptitle(f"{stats.attrs.get('source', '')}: collapse per layer (median over heads and rows)")
    return fig


# --- fit-table figures ------------------------------------------------------------------------


def _row_label(fits: pd.DataFrame) -> pd.Series:
    """``source`` where a source has one unit named like itself, else ``source: unit``."""
    source, unit = fits["source"].astype(str), fits["unit"].astype(str)
    return source.where(source == unit, source + ": " + unit)


@_styled
def exponent_table(fits: pd.DataFrame) -> Figure:
    """The fitted ``xi`` with its interval, one line per source and unit (point-range plot).

    Colour: the law that wins on the held-out largest ``n``.  Reference lines at the exponents of
    the published laws.  Each line is annotated with the value and interval (and the power of
    ``n`` where the power law wins); units that could not be fitted say why.
    """
    if fits.empty:
        raise ValueError("the fit table is empty")
    table = fits.reset_index(drop=True).copy()
    table["label"] = _row_label(table)
    table["winner"] = table["law_winner"].fillna("not scored").astype(str)
    y = np.arange(len(table))[::-1]
    fig, axes = _figure(1, 1, panel=(8.5, 1.2 + 0.38 * len(table)), legend=2.0)
    ax = axes[0, 0]
    drawn = table.loc[np.isfinite(table["xi"].astype(float)), "winner"]
    winners = [law for law in LAW_OUTCOMES if law in set(drawn)]
    palette = dict(zip(winners, sns.color_palette("colorblind", len(winners))))
    handles, labels = [], []
    for law in winners:
        handles.append(Line2D([], [], ls="", marker="o", color=palette[law], mec="k", mew=0.6))
        labels.append(f"wins: {LAW_LABELS.get(law, law)}")
    for law, (value, style) in REFERENCE_EXPONENTS.items():
        ax.axvline(value, color="0.4", ls=style, lw=1)
        handles.append(Line2D([], [], color="0.4", ls=style, lw=1))
        labels.append(rf"$\xi$ = {value:g}: {LAW_LABELS[law]}")
    for position, (_, fit) in zip(y, table.iterrows()):
        xi, low, high = (fit.get(key, np.nan) for key in ("xi", "xi_low", "xi_high"))
        if not np.isfinite(xi):
            continue
        color = palette[fit["winner"]]
        if np.isfinite(low) and np.isfinite(high):
            ax.plot([low, high], [position, position], color=color, lw=2.5, solid_capstyle="butt")
        ax.plot(xi, position, "o", color=color, ms=7, mec="k", mew=0.6)
    ax.set_yticks(y, table["label"])
    ax.set_ylim(-0.7, len(table) - 0.3)
    # The values sit in a column of their own, right of the axes, where no mark can reach them.
    column = ax.secondary_yaxis("right")
    column.set_yticks(y, [_exponent_text(fit) for _, fit in table.iterrows()])
    column.tick_params(length=0)
    ax.set(xlabel=r"fitted exponent $\xi$ of median $\Lambda_n \propto (\log n)^\xi$" + _interval_note(table),
           ylabel="source")
    ax.grid(axis="y", visible=False)
    _legend_outside(fig, handles, labels, title="colour: held-out winner")
    return fig


def _interval_note(fits: pd.DataFrame) -> str:
    """`` (90% interval: student_t over resampled units)`` from the fit table's own columns."""
    if "ci_level" not in fits or "interval_method" not in fits or fits["ci_level"].isna().all():
        return ""
    level, method = float(fits["ci_level"].dropna().iloc[0]), fits["interval_method"].dropna().iloc[0]
    return f" ({level:.0%} interval: {method} over resampled units)"


def _exponent_text(fit: pd.Series) -> str:
    """``"0.63 [0.52, 0.78]"`` (and ``"; n^p"`` where the power law wins), or why not fitted."""
    xi, low, high = (fit.get(key, np.nan) for key in ("xi", "xi_low", "xi_high"))
    if not np.isfinite(xi):
        return f"not fitted ({fit.get('fit_status', 'no finite exponent')})"
    text = f"{xi:.2f}" + (f" [{low:.2f}, {high:.2f}]" if np.isfinite(low) and np.isfinite(high) else "")
    if fit["winner"] == "power" and np.isfinite(fit.get("power_exponent", np.nan)):
        text += f";  $n^{{{fit['power_exponent']:.2f}}}$"
    return text


def _model_fits(fits: pd.DataFrame) -> pd.DataFrame:
    models = fits[fits["kind"].astype(str) == "model"] if "kind" in fits else fits
    models = models.dropna(subset=["layer", "head"])
    if models.empty:
        raise ValueError("the fit table has no model units (kind 'model' with layer and head)")
    return models


@_styled
def xi_heatmap(fits: pd.DataFrame) -> Figure:
    """``xi`` per layer (rows) and head (columns), one panel per model x corpus source.

    Diverging colours centred on ``xi = 1`` (the ``log n`` law); sliding-window layers are
    labelled ``local`` on the layer axis; ``*`` marks heads whose
    ``xi != 1`` is a discovery at the study's false-discovery rate (``discovery`` of the fit
    table; the raw ``excludes_one`` where a table has no such column); grey cells were not fitted (tied or degenerate heads).
    """
    models = _model_fits(fits)
    sources = list(dict.fromkeys(models["source"].astype(str)))
    finite = models["xi"][np.isfinite(models["xi"])]
    span = max(0.5, float(np.abs(finite - 1).max())) if len(finite) else 1.0
    layers, heads = models["layer"].nunique(), models["head"].nunique()
    fig, axes = _figure(1, len(sources), panel=(2.5 + 0.6 * heads, 1.5 + 0.45 * layers))
    for ax, source in zip(axes[0], sources):
        table = models[models["source"].astype(str) == source].copy()
        table["layer"], table["head"] = table["layer"].astype(int), table["head"].astype(int)
        xi = table.pivot_table(index="layer", columns="head", values="xi", aggfunc="first", dropna=False)
        # The mark is the FDR-controlled decision, not the raw per-head interval (many heads, shared windows).
        claim = "discovery" if "discovery" in table else "excludes_one"
        excludes = (table.assign(excludes=table[claim].astype("boolean").fillna(False).astype(bool))
                    .pivot_table(index="layer", columns="head", values="excludes", aggfunc="first")
                    .reindex_like(xi).fillna(False).astype(bool))
        annotate = xi.size <= MAX_ANNOTATED_CELLS
        status = (table.assign(fit_status=table.get("fit_status", "not fitted"))
                  .pivot_table(index="layer", columns="head", values="fit_status", aggfunc="first")
                  .reindex_like(xi))
        labels = np.char.add(np.char.mod("%.2f", xi.values), np.where(excludes.values, "*", ""))
        ax.set_facecolor("0.85")  # not-fitted cells
        with _quiet_nan_reductions():  # NaN cells (not fitted) are drawn as gaps on purpose
            sns.heatmap(xi, ax=ax, cmap="RdBu_r", center=1.0, vmin=1 - span, vmax=1 + span,
                        annot=labels if annotate else False, fmt="", annot_kws={"fontsize": "x-small"},
                        linewidths=0.5, linecolor="white",
                        cbar_kws={"label": r"$\xi$  (1 = $\log n$ law)", "shrink": 0.8})
        if annotate:  # say why a head was not fitted
            _label_blank_cells(ax, xi.values, status.values)
        _mark_sliding_layers(ax, table, xi.index)
        ax.grid(False)
        ax.set(xlabel="head", ylabel="layer", title=f"{source}: $\\xi$ per head\n(* $\\xi \\neq 1$ after FDR control)")
    return fig


def _mark_sliding_layers(ax, table: pd.DataFrame, layers) -> None:
    """Label sliding-window (local) layers on the layer axis, so they are not read as global ones."""
    if "layer_type" not in table or not (table["layer_type"] == "sliding_attention").any():
        return
    sliding = set(table.loc[table["layer_type"] == "sliding_attention", "layer"].astype(int))
    ax.set_yticks(np.arange(len(layers)) + 0.5,
                  [f"{layer} local" if layer in sliding else str(layer) for layer in layers], rotation=0)


@_styled
def law_winners(fits: pd.DataFrame) -> Figure:
    """Which law of ``Lambda_n`` extrapolates best, with its uncertainty, per source.

    Left: units per headline law (a law that wins at least ``law_share`` of the resamples of
    units), ``undecided`` units and units not scored; every outcome gets a bar, zero included, so
    that "no head follows log n" is visible.  Right: per law, the distribution over units of the
    share of resamples it wins, with the ``law_share`` threshold."""
    outcomes = fits["law_winner"].astype(object).where(fits["law_winner"].notna(), "not scored").astype(str)
    sources = list(dict.fromkeys(fits["source"].astype(str)))
    counts = (pd.crosstab(outcomes, fits["source"].astype(str))
              .reindex(index=LAW_OUTCOMES, columns=sources, fill_value=0)
              .rename_axis(index="outcome", columns="source").stack().rename("units").reset_index())
    frequency_columns = {f"law_frequency_{law}": law for law in LAWS}
    frequencies = (fits.assign(source=fits["source"].astype(str))
                   .melt(id_vars="source", value_vars=list(frequency_columns), var_name="law", value_name="frequency")
                   .dropna(subset=["frequency"]))
    frequencies["law"] = frequencies["law"].map(frequency_columns)
    width = max(6.0, 0.8 * len(LAW_OUTCOMES) * max(1, len(sources) / 2))
    fig, axes = _figure(1, 2, panel=(width, 4.0), legend=1.8)
    left, right = axes[0]
    sns.barplot(data=counts, x="outcome", y="units", hue="source", order=LAW_OUTCOMES, hue_order=sources, ax=left,
                palette="colorblind")
    for container in left.containers:
        left.bar_label(container, fontsize="x-small")
    left.yaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_xticks(range(len(LAW_OUTCOMES)), [LAW_LABELS[law] for law in LAW_OUTCOMES], rotation=30)
    share = float(fits["law_share"].iloc[0])
    left.set(xlabel=f"headline law (wins >= {share:.0%} of resamples of units)", ylabel="units (heads) won",
             title=r"Which law of $\Lambda_n$ extrapolates to larger $n$")
    _move_legend_outside(fig, left, title="source")
    if not frequencies.empty:
        sns.boxplot(data=frequencies, x="law", y="frequency", hue="source", order=LAWS, hue_order=sources, ax=right,
                    palette="pastel", showfliers=False, legend=False)
        sns.stripplot(data=frequencies, x="law", y="frequency", hue="source", order=LAWS, hue_order=sources,
                      ax=right, dodge=len(sources) > 1, size=2.5, alpha=0.5, palette="dark", legend=False)
    right.axhline(share, color="0.3", ls="--", lw=1)
    right.set_xticks(range(len(LAWS)), [LAW_LABELS[law] for law in LAWS], rotation=30)
    right.set_ylim(-0.02, 1.02)
    right.set(xlabel="law", ylabel="share of resamples won, per unit",
              title=f"How often each law wins (dashed: {share:.0%})")
    return fig


@_styled
def rule_drift(drift: pd.DataFrame) -> Figure:
    """Distribution over units of each prescription's drift, best (smallest median) first.

    Drift = spread over the ladder of ``log(beta_rule(n) / median Lambda_n)``: 0 means the rule
    keeps a head at a constant distance from criticality.  Units with no finite drift (tied
    heads) are counted in the title, not drawn.
    """
    table = drift.assign(source=drift["source"].astype(str) if "source" in drift else "")
    usable = table[np.isfinite(table["drift"])]
    if usable.empty:
        raise ValueError("no finite drift in the rule-drift table")
    order = list(usable.groupby("rule")["drift"].median().sort_values().index)
    sources = list(dict.fromkeys(usable["source"]))
    fig, axes = _figure(1, 1, panel=(max(6.5, 1.4 * len(order)), 4.2), legend=1.8)
    ax = axes[0, 0]
    sns.boxplot(data=usable, x="rule", y="drift", hue="source", order=order, hue_order=sources, ax=ax,
                showfliers=False, palette="pastel", legend=False)
    sns.stripplot(data=usable, x="rule", y="drift", hue="source", order=order, hue_order=sources, ax=ax,
                  dodge=len(sources) > 1, size=3, alpha=0.6, palette="dark")
    left_out = len(table) - len(usable)
    title = "Drift of each prescription from the measured scale\n(lower is better)"
    if left_out:
        title += f"\n({left_out} unit x rule pairs without finite drift, e.g. tied heads, not drawn)"
    ax.set(xlabel="prescription", ylabel=r"drift: sd over $n$ of $\log(\beta_{rule}(n) / \Lambda_n)$",
           title=title)
    ax.set_ylim(bottom=0)
    _move_legend_outside(fig, ax, title="source")
    return fig


@_styled
def operating_points(points: pd.DataFrame) -> Figure:
    """Where the model's own ``beta = 1`` sits, per layer and ``n``, one panel per source.

    Colour: median over the layer's heads of ``log2 rho`` at ``beta = 1`` (``rho = 1 /
    median Lambda_n``; blue subcritical, red supercritical); text: the regime most heads are in,
    and their share.  Stores without layers (families) use one line per unit.
    """
    table = points.assign(source=points["source"].astype(str) if "source" in points else "")
    has_layers = "layer" in table and table["layer"].notna().any()
    table["group"] = table["layer"].astype("Int64") if has_layers else table["unit"].astype(str)
    rho = table["rho_at_beta1"]
    # A tied head has rho = 0 at beta = 1 (Lambda = inf): it has a regime ("tied"), not a colour.
    table["log2_rho"] = np.log2(rho.where(np.isfinite(rho) & (rho > 0)))
    sources = list(dict.fromkeys(table["source"]))
    groups, lengths = table["group"].nunique(), table["n"].nunique()
    finite = table["log2_rho"].dropna()
    span = max(1.0, float(finite.abs().max())) if len(finite) else 1.0
    fig, axes = _figure(1, len(sources), panel=(2.5 + 0.8 * lengths, 1.5 + 0.45 * groups))
    for ax, source in zip(axes[0], sources):
        part = table[table["source"] == source]
        colour = part.pivot_table(index="group", columns="n", values="log2_rho", aggfunc="median", dropna=False)
        majority = part.groupby(["group", "n"])["regime"].agg(_majority).unstack("n").reindex_like(colour)
        ax.set_facecolor("0.85")
        annotate = colour.size <= MAX_ANNOTATED_CELLS
        with _quiet_nan_reductions():  # NaN cells (tied everywhere) are drawn as gaps on purpose
            sns.heatmap(colour, ax=ax, cmap="RdBu_r", center=0.0, vmin=-span, vmax=span,
                        annot=majority.fillna("").values if annotate else False,
                        fmt="", annot_kws={"fontsize": "x-small"}, linewidths=0.5, linecolor="white",
                        cbar_kws={"label": r"median $\log_2 \rho$ at $\beta = 1$", "shrink": 0.8})
        if annotate:
            _label_blank_cells(ax, colour.values, majority.values)
        ax.grid(False)
        ax.set_xticks(np.arange(lengths) + 0.5, [_n_label(n) for n in colour.columns], rotation=0)
        ax.set(xlabel=r"context length $n$", ylabel="layer" if has_layers else "unit",
               title=f"{source}: operating point of $\\beta = 1$")
    return fig


def _label_blank_cells(ax, values: np.ndarray, labels: np.ndarray) -> None:
    """Write ``labels`` into the heatmap cells whose value is NaN (seaborn leaves them blank)."""
    for i, j in zip(*np.nonzero(~np.isfinite(values.astype(np.float64)))):
        if pd.notna(labels[i, j]):
            ax.text(j + 0.5, i + 0.5, str(labels[i, j]), ha="center", va="center", fontsize="x-small",
                    color="0.3", style="italic")


def _majority(regimes: pd.Series) -> str:
    """``"crit 75%"``: the most common regime among heads and its share."""
    counts = regimes.dropna().value_counts()
    if counts.empty:
        return ""
    return f"{REGIME_SHORT.get(counts.index[0], counts.index[0])} {counts.iloc[0] / counts.sum():.0%}"


# --- tables -----------------------------------------------------------------------------------

TABLE_STYLE = """
body { font-family: sans-serif; font-size: 13px; margin: 1em; }
table { border-collapse: collapse; }
th, td { padding: 2px 8px; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap; }
th { background: #f2f2f2; position: sticky; top: 0; }
td:first-child, th:first-child { text-align: left; }
"""


def save_table_html(table: pd.DataFrame, path, title: str = "", digits: int = 4) -> Path:
    """Write ``table`` as a self-contained HTML page (the report shows it in a frame).

    An empty table still gets a page that says so, so a report section is never blank."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if table.empty:
        body = f"<p>No rows{': ' + ', '.join(map(str, table.columns)) if len(table.columns) else ''}.</p>"
    else:
        body = table.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.{digits}g}", border=0)
    heading = f"<h3>{title}</h3>" if title else ""
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{TABLE_STYLE}</style></head><body>{heading}{body}</body></html>\n"
    )
    return path
