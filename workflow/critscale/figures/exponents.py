"""Figures of the fit table: the fitted exponents ``xi`` with their intervals, ``xi`` per layer and
head, and which law of ``Lambda_n`` extrapolates best."""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from critscale.figures.canvas import (MAX_ANNOTATED_CELLS, label_blank_cells, legend_outside, move_legend_outside,
                                      new_figure, quiet_nan_reductions, styled)
from critscale.laws import FIXED_LOG_EXPONENTS, LAWS, UNDECIDED

#: A unit's headline law (``law_winner``): a law, ``undecided`` or, without a fit, ``not scored``.
LAW_OUTCOMES = (*LAWS, UNDECIDED, "not scored")
LAW_LABELS = {
    "constant": "constant",
    "sqrt_log": r"$\sqrt{\log n}$",
    "log": r"$\log n$",
    "log_squared": r"$(\log n)^2$",
    "free": r"$(\log n)^\xi$",
    "power": r"$n^p$",
    UNDECIDED: UNDECIDED,
    "not scored": "not scored",
}
#: Line style of the fixed laws drawn as reference lines (at their ``xi``) in the exponent table.
REFERENCE_STYLES = {"sqrt_log": ":", "log": "--", "log_squared": "-."}


def _row_label(fits: pd.DataFrame) -> pd.Series:
    """``source`` where a source has one unit named like itself, else ``source: unit``."""
    source, unit = fits["source"].astype(str), fits["unit"].astype(str)
    return source.where(source == unit, source + ": " + unit)


@styled
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
    fig, axes = new_figure(1, 1, panel=(8.5, 1.2 + 0.38 * len(table)), legend=2.0)
    ax = axes[0, 0]
    drawn = table.loc[np.isfinite(table["xi"].astype(float)), "winner"]
    winners = [law for law in LAW_OUTCOMES if law in set(drawn)]
    palette = dict(zip(winners, sns.color_palette("colorblind", len(winners))))
    handles, labels = [], []
    for law in winners:
        handles.append(Line2D([], [], ls="", marker="o", color=palette[law], mec="k", mew=0.6))
        labels.append(f"wins: {LAW_LABELS.get(law, law)}")
    for law, style in REFERENCE_STYLES.items():
        value = FIXED_LOG_EXPONENTS[law]
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
    legend_outside(fig, handles, labels, title="colour: held-out winner")
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


@styled
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
    fig, axes = new_figure(1, len(sources), panel=(2.5 + 0.6 * heads, 1.5 + 0.45 * layers))
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
        with quiet_nan_reductions():  # NaN cells (not fitted) are drawn as gaps on purpose
            sns.heatmap(xi, ax=ax, cmap="RdBu_r", center=1.0, vmin=1 - span, vmax=1 + span,
                        annot=labels if annotate else False, fmt="", annot_kws={"fontsize": "x-small"},
                        linewidths=0.5, linecolor="white",
                        cbar_kws={"label": r"$\xi$  (1 = $\log n$ law)", "shrink": 0.8})
        if annotate:  # say why a head was not fitted
            label_blank_cells(ax, xi.values, status.values)
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


@styled
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
    fig, axes = new_figure(1, 2, panel=(width, 4.0), legend=1.8)
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
    move_legend_outside(fig, left, title="source")
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
