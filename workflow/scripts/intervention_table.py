"""The intervention's tables and figure from every window (thin wrapper over critscale.intervention_stats)."""

import json
from pathlib import Path

import pandas as pd

from critscale import intervention_stats, runlog, storage
from critscale.figures.intervention import intervention_figure

runlog.to_file(snakemake.log[0])
settings = snakemake.params.intervention
buckets = pd.concat([pd.read_csv(path) for path in snakemake.input.buckets], ignore_index=True)
checks = [json.loads(Path(path).read_text()) for path in snakemake.input.checks]
L = snakemake.params.training_length
per_window = intervention_stats.beyond_length(buckets, L)
table = intervention_stats.contrasts(
    per_window, settings["arms"], level=settings["level"], bootstrap=settings["bootstrap"], seed=snakemake.params.seed
)
curves = intervention_stats.by_bucket(buckets, level=settings["level"], seed=snakemake.params.seed)
storage.write_table(table, snakemake.output.table)
storage.write_table(curves, snakemake.output.curves)
context = pd.DataFrame([{"window": c["window"], **c["effective_context"]} for c in checks if "effective_context" in c])
storage.write_table(context, snakemake.output.effective_context)
guard = pd.DataFrame([{"window": c["window"], **g} for c in checks for g in c["guard"]])
storage.write_table(guard, snakemake.output.guard)
intervention_figure(curves, L).savefig(snakemake.output.figure, dpi=120, bbox_inches="tight")
print(table.to_string())
