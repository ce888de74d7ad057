"""Figures of the prescription tables: each rule's drift from the measured scale, and where the
model's own ``beta = 1`` sits per layer and ``n``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from critscale.figures.canvas import (MAX_ANNOTATED_CELLS, label_blank_cells, move_legend_outside, n_label, new_figure,
                                      quiet_nan_reductions, styled)

REGIME_SHORT = {"subcritical": "sub", "critical": "crit", "supercritical": "super", "tied": "tied"}


@styled
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
    fig, axes = new_figure(1, 1, panel=(max(6.5, 1.4 * len(order)), 4.2), legend=1.8)
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
    move_legend_outside(fig, ax, title="source")
    return fig


@styled
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
    fig, axes = new_figure(1, len(sources), panel=(2.5 + 0.8 * lengths, 1.5 + 0.45 * groups))
    for ax, source in zip(axes[0], sources):
        part = table[table["source"] == source]
        colour = part.pivot_table(index="group", columns="n", values="log2_rho", aggfunc="median", dropna=False)
        majority = part.groupby(["group", "n"])["regime"].agg(_majority).unstack("n").reindex_like(colour)
        ax.set_facecolor("0.85")
        annotate = colour.size <= MAX_ANNOTATED_CELLS
        with quiet_nan_reductions():  # NaN cells (tied everywhere) are drawn as gaps on purpose
            sns.heatmap(colour, ax=ax, cmap="RdBu_r", center=0.0, vmin=-span, vmax=span,
                        annot=majority.fillna("").values if annotate else False,
                        fmt="", annot_kws={"fontsize": "x-small"}, linewidths=0.5, linecolor="white",
                        cbar_kws={"label": r"median $\log_2 \rho$ at $\beta = 1$", "shrink": 0.8})
        if annotate:
            label_blank_cells(ax, colour.values, majority.values)
        ax.grid(False)
        ax.set_xticks(np.arange(lengths) + 0.5, [n_label(n) for n in colour.columns], rotation=0)
        ax.set(xlabel=r"context length $n$", ylabel="layer" if has_layers else "unit",
               title=f"{source}: operating point of $\\beta = 1$")
    return fig


def _majority(regimes: pd.Series) -> str:
    """``"crit 75%"``: the most common regime among heads and its share."""
    counts = regimes.dropna().value_counts()
    if counts.empty:
        return ""
    return f"{REGIME_SHORT.get(counts.index[0], counts.index[0])} {counts.iloc[0] / counts.sum():.0%}"
