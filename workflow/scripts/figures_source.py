"""Figures of one source: gap counting, Lambda_n against log n, the collapse."""

import pandas as pd

from critscale import runlog, storage
from critscale.figures.canvas import save
from critscale.figures.per_source import collapse, gap_counting, scale_vs_log_n

runlog.to_file(snakemake.log[0])
stats = storage.open_store(snakemake.input.stats)
fits = pd.read_csv(snakemake.input.fits)
save(gap_counting(stats), snakemake.output.gap_counting)
save(scale_vs_log_n(stats, fits), snakemake.output.scale_vs_log_n)
save(collapse(stats), snakemake.output.collapse)
