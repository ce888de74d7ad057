"""The intervention figure: NLL difference to the untempered arm against position, per arm."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402


def intervention_figure(curves, training_length: int):
    """One panel per RoPE handling: per arm, the window-paired mean NLL difference to ``none`` per
    position bucket (at the bucket's upper ``n``) with its interval; ``L`` marked."""
    handlings = list(dict.fromkeys(curves["handling"]))
    fig, axes = plt.subplots(1, len(handlings), figsize=(6.5 * len(handlings), 4.2), squeeze=False, sharey=False)
    palette = dict(zip(sorted(set(curves["arm"])), sns.color_palette("tab10", len(set(curves["arm"])))))
    for ax, handling in zip(axes[0], handlings):
        here = curves[curves["handling"] == handling]
        for arm, group in here.groupby("arm"):
            group = group.sort_values("n_high")
            ax.plot(group["n_high"], group["mean_difference"], marker="o", ms=3, label=arm, color=palette[arm])
            ax.fill_between(group["n_high"], group["low"], group["high"], alpha=0.15, color=palette[arm])
        ax.axhline(0, color="black", lw=0.8)
        ax.axvline(training_length, color="grey", ls="--", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set(title=f"RoPE beyond L: {handling}", xlabel="keys seen by the query (n)",
               ylabel="NLL minus untempered (nats/token)")
    axes[0][-1].legend(fontsize=8, loc="best")
    sns.despine(fig)
    fig.tight_layout()
    return fig
