"""Per-head exponent figures and the per-layer collapse of one model x corpus source."""

import pandas as pd

from critscale import runlog, storage
from critscale.figures.canvas import save
from critscale.figures.exponents import law_winners, xi_heatmap
from critscale.figures.per_source import collapse_by_layer

runlog.to_file(snakemake.log[0])
fits = pd.read_csv(snakemake.input.fits)
save(xi_heatmap(fits), snakemake.output.xi_heatmap)
save(law_winners(fits), snakemake.output.law_winners)
save(collapse_by_layer(storage.open_store(snakemake.input.stats)), snakemake.output.collapse_by_layer)
