"""Extract a model's attention rows on a corpus into a score store (thin wrapper)."""

from critscale import extraction, runlog, study

runlog.to_file(snakemake.log[0])
run, settings = snakemake.params.run, snakemake.params.extraction
summary = extraction.extract_to_store(
    snakemake.params.model,
    snakemake.params.corpus,
    snakemake.output[0],
    n_ladder=study.ladder(snakemake.params.model["ladder"]),
    sequences=snakemake.params.model.get("sequences", settings["sequences"]),
    queries=settings["queries"],
    layers=settings.get("layers"),
    heads=settings.get("heads"),
    seed=snakemake.params.seed,
    dtype=settings["model_dtype"],
    attention_output=settings["attention_output"],
    device=settings["device"],
    model_name=run["model"],
    corpus_name=run["corpus"],
    threads=snakemake.threads,
)
print(summary)
