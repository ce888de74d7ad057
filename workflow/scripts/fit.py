"""Exponent-law fits of one statistics store (thin wrapper over critscale.fitting)."""

import numba

from critscale import fitting, runlog, storage

runlog.to_file(snakemake.log[0])
numba.set_num_threads(snakemake.threads)  # the resampling kernel: as many threads as the job has
stats = storage.open_store(snakemake.input[0])
table = fitting.fit_source(stats, seed=snakemake.params.seed, **fitting.settings_from_config(snakemake.params.fitting))
table.to_csv(snakemake.output.table, index=False)
fitting.fits_to_dataset(table).to_netcdf(snakemake.output.dataset)
print(table.to_string())
