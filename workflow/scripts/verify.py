"""Check every store, bundle, table and converted model under the results folder (thin wrapper over critscale.verify)."""

from critscale import runlog, verify

runlog.to_file(snakemake.log[0])
status = verify.main([snakemake.params.results])
if status:
    raise SystemExit(f"critscale verify: stores under {snakemake.params.results} fail their checksums, see {snakemake.log[0]}")
