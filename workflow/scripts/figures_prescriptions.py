"""Figures of the published prescriptions against one source's measured scales."""

import pandas as pd

from critscale import figures, runlog

runlog.to_file(snakemake.log[0])
figures.save(figures.rule_drift(pd.read_csv(snakemake.input.rule_drift)), snakemake.output.rule_drift)
figures.save(figures.operating_points(pd.read_csv(snakemake.input.operating_points)), snakemake.output.operating_points)
