# The chunked Dask stage: any score store -> per-row gap statistics and (unit, n) aggregates.


rule statistics:
    input:
        scores_of,
    output:
        directory(result("stats", "{source}.zarr")),
    log:
        result("logs", "statistics", "{source}.log"),
    benchmark:
        result("benchmarks", "statistics", "{source}.tsv")
    conda:
        "../envs/critscale.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        grids=canonical(config["grids"]),
        quantiles=config["quantiles"],
        compute=canonical(study_config.statistics_settings(config)),
        exclude_first_keys=excluded_keys,
        code=code_hash("../scripts/statistics.py"),
    script:
        "../scripts/statistics.py"
