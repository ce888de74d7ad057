# `snakemake --cores N share`: one self-describing bundle of the study's stores and tables.

ZIPPED = config.get("share", {}).get("format", "zip") == "zip"
BUNDLE = result("share", "critscale-bundle.zarr" + (".zip" if ZIPPED else ""))


rule share:
    input:
        stats=expand(result("stats", "{source}.zarr"), source=SOURCES),
        scores=share_scores,
        fits=result("tables", "fits.csv"),
        headline=result("tables", "headline.csv"),
    output:
        bundle=BUNDLE if ZIPPED else directory(BUNDLE),
        datacard=f"{BUNDLE}.DATACARD.md",
    log:
        result("logs", "share.log"),
    conda:
        "../envs/critscale.yaml"
    params:
        share=canonical(config.get("share", {})),
        sources=SOURCES,
        study=canonical(config),
    script:
        "../scripts/share.py"
