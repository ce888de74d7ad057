"""Per-head exponent figures and the per-layer collapse of one model x corpus source."""

import pandas as pd

from critscale import figures, runlog, storage

runlog.to_file(snakemake.log[0])
fits = pd.read_csv(snakemake.input.fits)
figures.save(figures.xi_heatmap(fits), snakemake.output.xi_heatmap)
figures.save(figures.law_winners(fits), snakemake.output.law_winners)
figures.save(figures.collapse_by_layer(storage.open_store(snakemake.input.stats)), snakemake.output.collapse_by_layer)
