# The published beta_n prescriptions confronted with each model source's measured scales, and
# the headline tables of the study.


rule prescriptions:
    input:
        stats=result("stats", "{model_source}.zarr"),
        fits=result("fits", "{model_source}.csv"),
    output:
        rule_drift=result("prescriptions", "{model_source}", "rule_drift.csv"),
        recommendations=result("prescriptions", "{model_source}", "recommendations.csv"),
        operating_points=result("prescriptions", "{model_source}", "operating_points.csv"),
    log:
        result("logs", "prescriptions", "{model_source}.log"),
    benchmark:
        result("benchmarks", "prescriptions", "{model_source}.tsv")
    conda:
        "../envs/critscale.yaml"
    params:
        prescription=canonical(study_config.prescription_settings(config)),
        code=code_hash("../scripts/prescriptions.py"),
    script:
        "../scripts/prescriptions.py"


rule prescription_table:
    input:
        expand(result("prescriptions", "{model_source}", "{{table}}.csv"), model_source=MODEL_RUNS),
    output:
        result("tables", "{table}.csv"),
    log:
        result("logs", "prescription_table", "{table}.log"),
    wildcard_constraints:
        table="rule_drift|recommendations|operating_points",
    conda:
        "../envs/critscale.yaml"
    params:
        code=code_hash("../scripts/fit_table.py"),
    script:
        "../scripts/fit_table.py"


rule headline:
    input:
        result("tables", "fits.csv"),
    output:
        result("tables", "headline.csv"),
    log:
        result("logs", "headline.log"),
    conda:
        "../envs/critscale.yaml"
    params:
        code=code_hash("../scripts/headline.py"),
    script:
        "../scripts/headline.py"
