"""The exponent table of the synthetic families as one figure (models get per-head heatmaps)."""

import pandas as pd

from critscale import figures, runlog

runlog.to_file(snakemake.log[0])
fits = pd.read_csv(snakemake.input[0])
families = fits[fits["kind"] == "family"]
figures.save(figures.exponent_table(families), snakemake.output[0])
print(families[["source", "unit", "xi", "xi_low", "xi_high", "law_winner"]].to_string())
