"""Coverage of the fit's intervals on synthetic sources with known xi (critscale.coverage).

Named coverage_table, not coverage: numba imports the coverage package, which a script
called coverage.py (its folder is on sys.path) would shadow."""

import numba

from critscale import coverage, runlog, storage

runlog.to_file(snakemake.log[0])
numba.set_num_threads(snakemake.threads)  # the resampling kernel: as many threads as the job has
table = coverage.coverage_from_config(snakemake.params.fitting, snakemake.params.seed)
storage.write_table(table, snakemake.output[0])
print(table.to_string())
