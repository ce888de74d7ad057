"""Gap statistics of one score store (thin wrapper over critscale.compute)."""

from critscale import compute, runlog
from critscale.gapstats import Grids

runlog.to_file(snakemake.log[0])
# the scheduler is no rerun trigger (critscale.config.statistics_settings), so not in params
settings = {**snakemake.params.compute, "scheduler": snakemake.config["compute"]["scheduler"]}
compute.compute_statistics_store(
    snakemake.input[0],
    snakemake.output[0],
    Grids.from_config(snakemake.params.grids),
    quantiles=snakemake.params.quantiles,
    row_chunk=settings["row_chunk"],
    scheduler=settings["scheduler"],
    workers=snakemake.threads,
    memory_budget=settings["memory_budget_mb"] * 2**20,
    exclude_first_keys=snakemake.params.exclude_first_keys,
    config={"grids": snakemake.params.grids, "quantiles": snakemake.params.quantiles, "compute": settings},
)
