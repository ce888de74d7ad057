"""Concatenate per-source tables into one tidy table."""

import pandas as pd

from critscale import runlog, storage

runlog.to_file(snakemake.log[0])
table = pd.concat([pd.read_csv(path) for path in snakemake.input], ignore_index=True)
storage.write_table(table, snakemake.output[0])
print(table.head(50).to_string())
