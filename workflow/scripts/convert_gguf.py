"""Convert a GGUF model once into a safetensors directory (thin wrapper over critscale.model_loading)."""

from critscale import model_loading, runlog, storage

runlog.to_file(snakemake.log[0])
source = model_loading.resolve_model_source(snakemake.params.spec)
model_loading.convert_gguf(source["path"], snakemake.output[0])
storage.write_manifest(snakemake.output[0])  # so critscale-verify can check the converted weights
