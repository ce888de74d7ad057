"""Prescription drift, operating points and recommendations of one model source."""

import pandas as pd

from critscale import prescriptions, runlog, storage

runlog.to_file(snakemake.log[0])
settings = snakemake.params.prescription
stats = storage.open_store(snakemake.input.stats)
fits = pd.read_csv(snakemake.input.fits)
drift = prescriptions.rule_drift(stats, training_length=settings["training_length"])
points = prescriptions.operating_points(stats)
advice = prescriptions.recommendations(
    fits, training_length=settings["training_length"], extension_factors=settings["extension_factors"]
)
storage.write_table(drift, snakemake.output.rule_drift)
storage.write_table(points, snakemake.output.operating_points)
storage.write_table(advice, snakemake.output.recommendations)
print(drift.groupby("rule")["drift"].describe().to_string())
