"""Exponent-law fits of one statistics store (thin wrapper over critscale.fitting)."""

from critscale import fitting, runlog, storage

runlog.to_file(snakemake.log[0])
settings = snakemake.params.fitting
stats = storage.open_store(snakemake.input[0])
table = fitting.fit_source(
    stats,
    held_out=settings["held_out"],
    n_boot=settings["bootstrap"],
    level=settings["level"],
    seed=snakemake.params.seed,
)
table.to_csv(snakemake.output.table, index=False)
fitting.fits_to_dataset(table).to_netcdf(snakemake.output.dataset)
print(table.to_string())
