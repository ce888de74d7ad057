"""Figures of one statistics store: gap counting, the scale against ``log n`` and the collapse.

Infinite or NaN aggregates (the median over rows of a length whose rows are mostly tied) are not
drawn; the panel says how many lengths were left out.  A store with many units (layer x head)
shows at most ``max_units`` of them (:func:`critscale.figures.selection.select_units`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator

from critscale.figures.canvas import (legend_outside, n_colors, n_label, new_figure, quiet_nan_reductions,
                                      readable_log_ticks, styled, thinned)
from critscale.figures.selection import fit_row, median_scale, select_units, unit_title

CLOUD_ROWS = 24  # rows per n drawn in the light per-row cloud of the collapse plot


@styled
def gap_counting(stats: xr.Dataset, unit=None, max_units: int = 4) -> Figure:
    """``log N(t)`` against the gap ``t``: median over rows, one line per ``n``.

    ``N(t)`` is the number of keys within ``t`` of the row's maximum; its growth near ``t = 0``
    sets ``Lambda`` (the steepest ray ``log N(t) <= Lambda t`` from the origin).
    """
    units = select_units(stats, unit, max_units)
    ladder = [int(n) for n in stats["n"].values]
    colors = n_colors(ladder)
    fig, axes = new_figure(1, len(units), legend=0.9 + 0.5 * (len(ladder) > 12))
    t = stats["t"].values
    for ax, label in zip(axes[0], units):
        counts = stats["gap_count"].sel(unit=label).transpose("n", "row", "t").values.astype(np.float64)
        with quiet_nan_reductions():
            # N(t) = 0 only for a row without keys (padding); it has no logarithm.
            log_counts = np.nanmedian(np.log(np.where(counts > 0, counts, np.nan)), axis=1)
        for n, curve in zip(ladder, log_counts):
            ax.plot(t, curve, color=colors[n], lw=1.8, label=n_label(n))
        ax.set(xlabel=r"gap $t$ below the row maximum", ylabel=r"$\log N(t)$  (median over rows)",
               title=unit_title(stats, label), xlim=(t[0], t[-1]))
        ax.set_ylim(bottom=0)
    legend_outside(fig, title="n")
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


@styled
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
    fig, axes = new_figure(1, len(units), panel=(4.6, 4.0), legend=2.6)
    pad = (log_n[-1] / log_n[0]) ** 0.05
    for ax, label in zip(axes[0], units):
        rows = stats["accumulation_scale"].sel(unit=label).transpose("n", "row").values
        median = medians.sel(unit=label).values
        with quiet_nan_reductions():
            # inverted_cdf picks observed values, so an inf (tie) never meets a finite one in a sum.
            low, high = np.nanquantile(rows, [0.25, 0.75], axis=1, method="inverted_cdf")
        drawn = np.isfinite(median) & (median > 0)
        band = drawn & np.isfinite(low) & np.isfinite(high) & (low > 0)
        if band.any():
            ax.fill_between(log_n[band], low[band], high[band], color="C0", alpha=0.2, lw=0,
                            label="interquartile range over rows")
        if drawn.any():
            ax.plot(log_n[drawn], median[drawn], "o-", color="C0", lw=2, label=r"median $\Lambda_n$")
        law = _free_law(fit_row(fits, source, label), log_n, median)
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
        ax.set_xticks(log_n, thinned([f"{v:.1f}" for v in log_n]), minor=False)
        ax.xaxis.set_minor_locator(NullLocator())
        if drawn.any():  # plain numbers: the values, not powers of ten, are what a reader compares
            ax.set_yscale("log")
            readable_log_ticks(ax.yaxis)
        top = ax.secondary_xaxis("top")
        top.set_xticks(log_n, thinned([n_label(n) for n in ladder]))
        top.xaxis.set_minor_locator(NullLocator())
        title = unit_title(stats, label)
        if law is not None:
            title += f"\n{law[1]}"
        left_out = int((~drawn).sum())
        if left_out:
            title += f"\n({left_out} length(s) with infinite median, i.e. tied, not drawn)"
        ax.set(xlabel=r"$\log n$  (top axis: $n$)", ylabel=r"median $\Lambda_n$ (accumulation scale)", title=title)
    legend_outside(fig)
    return fig


def _operating_rho(stats: xr.Dataset, label: str) -> np.ndarray:
    """``rho`` of ``beta = 1`` per ``n``: ``1 / median Lambda_n`` (the model's own temperature)."""
    with np.errstate(divide="ignore"):
        return 1.0 / median_scale(stats).sel(unit=label).values


@styled
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
    colors = n_colors(ladder)
    rho = stats["rho"].values
    rng = np.random.default_rng(seed)
    fig, axes = new_figure(len(units), 2, panel=(5.0, 3.6), legend=1.7)
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
                with quiet_nan_reductions():
                    median = np.nanmedian(values[i], axis=0)
                ax.plot(rho, median, color=colors[n], lw=2, label=n_label(n))
                if mark_beta_one and np.isfinite(operating[i]) and rho[0] <= operating[i] <= rho[-1]:
                    at = np.interp(np.log(operating[i]), np.log(rho), median)
                    ax.plot(operating[i], at, "o", ms=7, mfc=colors[n], mec="k", zorder=5)
            ax.axvline(1.0, color="k", ls="--", lw=1)
            ax.set_xscale("log", base=2)
            ax.set(xlabel=r"$\rho = \beta / \Lambda$", ylabel=f"{name} (median over rows)",
                   title=unit_title(stats, label), ylim=(-0.02, 1.02))
    _collapse_legend(fig, ladder, colors, mark_beta_one, rho_line="--")
    return fig


def _collapse_legend(fig: Figure, ladder, colors, mark_beta_one: bool, rho_line: str, gap_line: str = "") -> None:
    """The legend of the collapse figures: one line per ``n``, then the keys of the line styles
    (the transition ``rho = 1``, the top-two gap if drawn as ``gap_line``) and of the dots."""
    handles = [Line2D([], [], color=colors[n], lw=2) for n in ladder]
    labels = [n_label(n) for n in ladder]
    keys = [(Line2D([], [], color="k", ls=rho_line, lw=1), r"$\rho = 1$")]
    if gap_line:
        keys = [(Line2D([], [], color="0.3", lw=1.4), r"entropy $H / \log n$"),
                (Line2D([], [], color="0.3", ls=gap_line, lw=1.0), r"top-two gap $\Delta_{top}$"), *keys]
    if mark_beta_one:
        keys.append((Line2D([], [], ls="", marker="o", mfc="0.7", mec="k"), r"model's own $\beta = 1$"))
    legend_outside(fig, handles + [handle for handle, _ in keys], labels + [label for _, label in keys], title="n")


@styled
def collapse_by_layer(stats: xr.Dataset, columns: int = 6) -> Figure:
    """The collapse on real rows, one panel per layer: entropy ``H / log n`` (solid) and top-two
    gap (dashed) against ``rho = beta / Lambda``, medians over every head and row of the layer,
    all ``n`` overlaid; the dot on each entropy curve is the model's own ``beta = 1`` (``rho`` =
    1 / median ``Lambda_n`` over the layer's heads)."""
    layers = sorted({int(layer) for layer in stats["layer"].values})
    ladder = [int(n) for n in stats["n"].values]
    colors = n_colors(ladder)
    rho = stats["rho"].values
    rows = int(np.ceil(len(layers) / columns))
    fig, axes = new_figure(rows, columns, panel=(2.6, 2.0), legend=1.7, sharex=True, sharey=True)
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
            with quiet_nan_reductions():
                median_entropy = np.nanmedian(entropy[:, i].reshape(-1, len(rho)), axis=0)
                median_gap = np.nanmedian(gap[:, i].reshape(-1, len(rho)), axis=0)
            ax.plot(rho, median_entropy, color=colors[n], lw=1.4, label=n_label(n))
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
