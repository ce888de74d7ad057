"""Figures of one source: gap counting, Lambda_n against log n, the collapse."""

import pandas as pd

from critscale import figures, runlog, storage

runlog.to_file(snakemake.log[0])
stats = storage.open_store(snakemake.input.stats)
fits = pd.read_csv(snakemake.input.fits)
figures.save(figures.gap_counting(stats), snakemake.output.gap_counting)
figures.save(figures.scale_vs_log_n(stats, fits), snakemake.output.scale_vs_log_n)
figures.save(figures.collapse(stats), snakemake.output.collapse)
