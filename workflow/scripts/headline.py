"""Headline table: per source, fitted units, median xi, fraction excluding 1, law winners."""

import pandas as pd

from critscale import fitting, runlog, storage

runlog.to_file(snakemake.log[0])
table = fitting.headline(pd.read_csv(snakemake.input[0]))
storage.write_table(table, snakemake.output[0])
print(table.to_string())
