"""Generate a synthetic family's score store (thin wrapper over critscale.families)."""

import dask

from critscale import runlog, storage
from critscale.families.dataset import family_dataset

runlog.to_file(snakemake.log[0])
spec = snakemake.params.spec
scores = family_dataset(
    snakemake.wildcards.family,
    spec,
    n_ladder=spec["ladder"],
    rows=spec["rows"],
    seed=snakemake.params.seed,
    row_chunk=snakemake.params.row_chunk,
    dtype=spec["dtype"],
    quantiles=snakemake.params.quantiles,
)
write = storage.write_dataset(scores, snakemake.output[0], compute=False)
# Dask's threads directly, not critscale.compute's scheduler setting: this job then runs none of
# the statistics code, and an edit there does not rerun it (see storage.code_sha256).
dask.compute(write, scheduler="threads", num_workers=max(1, int(snakemake.threads)))
