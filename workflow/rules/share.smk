# `snakemake --cores N share`: one self-describing bundle of the study's stores and tables.

ZIPPED = config.get("share", {}).get("format", "zip") == "zip"
BUNDLE = result("share", "critscale-bundle.zarr" + (".zip" if ZIPPED else ""))


def share_scores(wildcards):
    if config.get("share", {}).get("include_scores", False):
        return expand(result("scores", "{source}.zarr"), source=SOURCES)
    return []


rule share:
    input:
        stats=expand(result("stats", "{source}.zarr"), source=SOURCES),
        scores=share_scores,
        fits=result("tables", "fits.csv"),
        headline=result("tables", "headline.csv"),
    output:
        bundle=BUNDLE if ZIPPED else directory(BUNDLE),
        datacard=f"{BUNDLE}.DATACARD.md",
    params:
        share=canonical(config.get("share", {})),
        sources=SOURCES,
        study=canonical(config),
    log:
        result("logs", "share.log"),
    script:
        "../scripts/share.py"
