"""Convert a GGUF model once into a safetensors directory (thin wrapper over critscale.model_loading)."""

from critscale import model_loading, model_sources, runlog, storage

runlog.to_file(snakemake.log[0])
source = model_sources.model_source(snakemake.params.spec)  # the assembled GGUF of a model in pieces
model_loading.convert_gguf(source.path, snakemake.output[0])
storage.write_manifest(snakemake.output[0])  # so critscale-verify can check the converted weights
