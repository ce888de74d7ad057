"""The temperature schedule of one model source (thin wrapper over critscale.schedules)."""

import pandas as pd

from critscale import runlog, schedules, storage

runlog.to_file(snakemake.log[0])
stats = storage.open_store(snakemake.input.stats)
document = schedules.build_schedule(
    pd.read_csv(snakemake.input.fits),
    snakemake.params.training_length,
    source=snakemake.wildcards.model_source,
    level=snakemake.params.level,
    provenance=schedules.store_provenance(stats.attrs, fits_path=snakemake.input.fits),
)
schedules.write_schedule(document, snakemake.output[0])
print(f"{document['source']}: {len(document['units'])} units, global xi {document['global']['xi']:.3f}")
