# Exponent laws per unit, with intervals from resampling independent units.


rule fit:
    input:
        result("stats", "{source}.zarr"),
    output:
        table=result("fits", "{source}.csv"),
        dataset=result("fits", "{source}.nc"),
    log:
        result("logs", "fit", "{source}.log"),
    benchmark:
        result("benchmarks", "fit", "{source}.tsv")
    conda:
        "../envs/critscale.yaml"
    params:
        fitting=canonical(study_config.fit_settings(config)),
        seed=config["seed"],
        code=code_hash("../scripts/fit.py"),
    script:
        "../scripts/fit.py"


rule fit_table:
    input:
        expand(result("fits", "{source}.csv"), source=SOURCES),
    output:
        result("tables", "fits.csv"),
    log:
        result("logs", "fit_table.log"),
    conda:
        "../envs/critscale.yaml"
    params:
        code=code_hash("../scripts/fit_table.py"),
    script:
        "../scripts/fit_table.py"


rule coverage:
    output:
        result("tables", "coverage.csv"),
    log:
        result("logs", "coverage.log"),
    benchmark:
        result("benchmarks", "coverage.tsv")
    conda:
        "../envs/critscale.yaml"
    threads: 1
    params:
        fitting=canonical(study_config.coverage_settings(config)),
        seed=config["seed"],
        code=code_hash("../scripts/coverage_table.py"),
    script:
        "../scripts/coverage_table.py"
