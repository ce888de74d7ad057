"""Compare every family with theory and check the per-row theorems on every statistics store
(families and models); fail the run on any theorem violation or mismatch."""

import pandas as pd

from critscale import runlog, storage, theory_check

runlog.to_file(snakemake.log[0])
comparisons, violations = [], []
for stats_path, fit_path in zip(snakemake.input.stats, snakemake.input.fits):
    stats = storage.open_store(stats_path)
    comparisons.append(theory_check.compare_with_theory(stats, pd.read_csv(fit_path)))
    violations.append(theory_check.theorem_violations(stats))
for stats_path in snakemake.input.model_stats:
    violations.append(theory_check.theorem_violations(storage.open_store(stats_path)))
    print(f"theorems checked on {stats_path}")
comparison = pd.concat(comparisons, ignore_index=True)
violation = pd.concat(violations, ignore_index=True)
storage.write_table(comparison, snakemake.output.comparison)
storage.write_table(violation, snakemake.output.violations)
print(comparison.to_string())
theory_check.raise_on_failure(comparison, violation)
