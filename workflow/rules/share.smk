# `snakemake --cores N share`: one self-describing bundle of the study at the configured sharing
# level. `snakemake --cores 1 verify`: every store and bundle under the results folder against
# the checksum manifest it carries.

SHARE = config["share"]  # defaults filled in by study_config.validate
ZIPPED = SHARE["format"] == "zip"
BUNDLE = result("share", "critscale-bundle.zarr" + (".zip" if ZIPPED else ""))


rule share:
    input:
        stats=expand(result("stats", "{source}.zarr"), source=SOURCES),
        scores=share_scores,
        coverage=result("tables", "coverage.csv"),
        fits=result("tables", "fits.csv"),
        headline=result("tables", "headline.csv"),
    output:
        bundle=BUNDLE if ZIPPED else directory(BUNDLE),
        datacard=f"{BUNDLE}.DATACARD.md",
    log:
        result("logs", "share.log"),
    benchmark:
        result("benchmarks", "share.tsv")
    conda:
        "../envs/critscale.yaml"
    params:
        share=canonical(SHARE),
        sources=SOURCES,
        study=canonical(config),
        code=code_hash("../scripts/share.py"),
    script:
        "../scripts/share.py"


# No input and no output: it checks whatever stores exist, every time it is asked for, and
# never triggers a rerun of the stores it checks.
rule verify:
    log:
        result("logs", "verify.log"),
    localrule: True
    conda:
        "../envs/critscale.yaml"
    params:
        results=RESULTS,
    script:
        "../scripts/verify.py"
