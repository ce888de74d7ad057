"""The genre comparison: per model reading several corpora, xi per head paired across each pair of
its corpora (thin wrapper over critscale.genres)."""

import numba
import pandas as pd

from critscale import genres, runlog, storage

runlog.to_file(snakemake.log[0])
numba.set_num_threads(snakemake.threads)  # the resampling kernel: as many threads as the job has
plan = snakemake.params.groups
names = genres.sources(plan)
fits = {source: pd.read_csv(path) for source, path in zip(names, snakemake.input.fits)}
stats = {source: storage.open_store(path) for source, path in zip(names, snakemake.input.stats)}
heads, summary = genres.compare_study(
    plan, fits, stats, seed=snakemake.params.seed, **genres.settings(snakemake.params.fitting)
)
storage.write_table(summary, snakemake.output.summary)
storage.write_table(heads, snakemake.output.heads)
print(summary.to_string())
