"""A result table as a self-contained HTML page for the report."""

import pandas as pd

from critscale import runlog
from critscale.figures.tables import save_table_html

runlog.to_file(snakemake.log[0])
table = pd.read_csv(snakemake.input[0])
save_table_html(table, snakemake.output[0], title=snakemake.wildcards.table.replace("_", " "))
