"""Pack the study's stores and tables into one bundle (thin wrapper over critscale.share)."""

from critscale import config, runlog, share

runlog.to_file(snakemake.log[0])
settings = snakemake.params.share
sources = snakemake.params.sources
share.pack_bundle(
    snakemake.output.bundle,
    stats=dict(zip(sources, snakemake.input.stats)),
    scores=dict(zip(sources, snakemake.input.scores)) if snakemake.input.scores else None,
    coverage_table=snakemake.input.coverage,
    fits_table=snakemake.input.fits,
    headline_table=snakemake.input.headline,
    config=snakemake.params.study,
    level=settings["level"],
    fmt=settings["format"],
    url=config.share_url(snakemake.params.study),
    storage_options=settings.get("storage_options"),
)
print(f"bundle written to {snakemake.output.bundle}")
