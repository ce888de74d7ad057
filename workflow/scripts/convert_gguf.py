"""Convert a GGUF model once into a safetensors directory (thin wrapper over critscale.extraction)."""

from critscale import extraction, runlog

runlog.to_file(snakemake.log[0])
source = extraction.resolve_model_source(snakemake.params.spec)
extraction.convert_gguf(source["path"], snakemake.output[0])
