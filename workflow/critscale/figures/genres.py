"""The genre figure: per model and pair of corpora, ``xi`` on one corpus against the other per
head, the heads that differ after FDR control marked, and the distribution of the shifts with
their median and its interval (tables of :mod:`critscale.genres`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from critscale.figures.canvas import move_legend_outside

#: Outcome of a head's test, in drawing order, and its colour.
OUTCOMES = {"no difference": "#9e9e9e", "higher on B": "#d95f02", "lower on B": "#1b9e77"}
PAIR_KEYS = ["model", "exclude_first_keys", "corpus_a", "corpus_b"]


def outcome(heads: pd.DataFrame) -> pd.Series:
    """``higher on B``, ``lower on B`` (a discovery of the FDR family) or ``no difference``;
    NaN for heads without a test."""
    differs = heads["differs"].astype("boolean").fillna(False).astype(bool)
    labels = np.where(~differs, "no difference", np.where(heads["shift"] > 0, "higher on B", "lower on B"))
    return pd.Series(labels, index=heads.index).where(heads["p_value"].notna())


def _pair_title(keys: tuple, row: pd.Series | None) -> str:
    model, skip, corpus_a, corpus_b = keys
    title = f"{model}{f', first {skip} keys masked' if skip else ''}\nA = {corpus_a}, B = {corpus_b}"
    if row is None:
        return title
    return (f"{title}\n{int(row['differing_fdr'])} of {int(row['heads_compared'])} heads differ (FDR {row['fdr']:g})")


def _summary_row(summary: pd.DataFrame, keys: tuple) -> pd.Series | None:
    """The pair's summary over all its heads (``layers == 'all'`` when layer types are split)."""
    rows = summary[(summary[PAIR_KEYS] == pd.Series(keys, index=PAIR_KEYS)).all(axis=1)]
    if rows.empty:
        return None
    whole = rows[rows["layers"] == "all"]
    return (whole if len(whole) else rows).iloc[0]


def genre_figure(heads: pd.DataFrame, summary: pd.DataFrame) -> Figure:
    """One column per model and pair: ``xi_B`` against ``xi_A`` per compared head (diagonal: no
    shift), and the histogram of ``shift = xi_B - xi_A`` with its median and interval."""
    tested = heads[heads["p_value"].notna()] if len(heads) else heads
    keys = list(dict.fromkeys(map(tuple, tested[PAIR_KEYS].itertuples(index=False)))) if len(tested) else []
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.85):
        fig = Figure(figsize=(4.2 * max(len(keys), 1), 7.6), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(2, max(len(keys), 1), squeeze=False)
        if not keys:
            axes[0, 0].text(0.5, 0.5, "no head compared", ha="center", va="center")
            return fig
        for column, pair in enumerate(keys):
            here = tested[(tested[PAIR_KEYS] == pd.Series(pair, index=PAIR_KEYS)).all(axis=1)]
            here = here.assign(outcome=outcome(here))
            row = _summary_row(summary, pair)
            top, bottom = axes[0, column], axes[1, column]
            sns.scatterplot(data=here, x="xi_a", y="xi_b", hue="outcome", hue_order=list(OUTCOMES),
                            palette=OUTCOMES, s=14, linewidth=0, ax=top, legend=column == 0)
            low = float(np.nanmin(here[["xi_a", "xi_b"]].to_numpy()))
            high = float(np.nanmax(here[["xi_a", "xi_b"]].to_numpy()))
            top.plot([low, high], [low, high], color="black", lw=0.8, ls="--")
            top.set(xlabel=r"$\xi$ on A", ylabel=r"$\xi$ on B", title=_pair_title(pair, row))
            if column == 0 and top.get_legend() is not None:
                move_legend_outside(fig, top, title="head (FDR)")
            sns.histplot(data=here, x="shift", hue="outcome", hue_order=list(OUTCOMES), palette=OUTCOMES,
                         multiple="stack", bins=30, ax=bottom, legend=False)
            bottom.axvline(0, color="black", lw=0.8)
            if row is not None and np.isfinite(row["median_shift"]):
                bottom.axvline(row["median_shift"], color="#7570b3", lw=1.5)
                if np.isfinite(row["median_shift_low"]):
                    bottom.axvspan(row["median_shift_low"], row["median_shift_high"], color="#7570b3", alpha=0.2, lw=0)
                level = f"{100 * row['ci_level']:.0f}%"
                bottom.set_title(f"median shift {row['median_shift']:.2f} "
                                 f"[{row['median_shift_low']:.2f}, {row['median_shift_high']:.2f}] ({level})")
            bottom.set(xlabel=r"shift $\xi_B - \xi_A$ per head", ylabel="heads")
    return fig
