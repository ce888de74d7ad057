"""Per-head exponent figures of one model x corpus source."""

import pandas as pd

from critscale import figures, runlog

runlog.to_file(snakemake.log[0])
fits = pd.read_csv(snakemake.input[0])
figures.save(figures.xi_heatmap(fits), snakemake.output.xi_heatmap)
figures.save(figures.law_winners(fits), snakemake.output.law_winners)
