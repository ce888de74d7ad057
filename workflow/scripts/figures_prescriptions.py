"""Figures of the published prescriptions against one source's measured scales."""

import pandas as pd

from critscale import runlog
from critscale.figures.canvas import save
from critscale.figures.prescriptions import operating_points, rule_drift

runlog.to_file(snakemake.log[0])
save(rule_drift(pd.read_csv(snakemake.input.rule_drift)), snakemake.output.rule_drift)
save(operating_points(pd.read_csv(snakemake.input.operating_points)), snakemake.output.operating_points)
