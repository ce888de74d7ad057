"""Check every store, bundle, table and converted model under the results folder (thin wrapper over critscale.verify)."""

import sys
from pathlib import Path

from critscale import runlog, verify

runlog.to_file(snakemake.log[0])
status = verify.main([snakemake.params.results])
if status:
    sys.stderr = sys.__stderr__  # the report on the console too, not only in the log
    raise SystemExit(f"critscale verify: damage under {snakemake.params.results} ({snakemake.log[0]}):\n{Path(snakemake.log[0]).read_text()}")
