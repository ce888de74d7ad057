"""The exponent table of the synthetic families as one figure (models get per-head heatmaps)."""

import pandas as pd

from critscale import runlog
from critscale.figures.canvas import save
from critscale.figures.exponents import exponent_table

runlog.to_file(snakemake.log[0])
fits = pd.read_csv(snakemake.input[0])
families = fits[fits["kind"] == "family"]
save(exponent_table(families), snakemake.output[0])
print(families[["source", "unit", "xi", "xi_low", "xi_high", "law_winner"]].to_string())
