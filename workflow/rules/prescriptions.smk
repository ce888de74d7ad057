# The published beta_n prescriptions confronted with each model source's measured scales, and
# the headline tables of the study.


def prescription_targets():
    tables = ["headline"]
    if MODEL_RUNS:
        tables += ["rule_drift", "recommendations", "operating_points"]
    return [result("tables", f"{table}.csv") for table in tables] + [
        result("report", f"{table}.html") for table in tables
    ]


rule prescriptions:
    input:
        stats=result("stats", "{model_source}.zarr"),
        fits=result("fits", "{model_source}.csv"),
    output:
        rule_drift=result("prescriptions", "{model_source}", "rule_drift.csv"),
        recommendations=result("prescriptions", "{model_source}", "recommendations.csv"),
        operating_points=result("prescriptions", "{model_source}", "operating_points.csv"),
    params:
        fitting=canonical(config["fitting"]),
    log:
        result("logs", "prescriptions", "{model_source}.log"),
    script:
        "../scripts/prescriptions.py"


rule prescription_table:
    input:
        expand(result("prescriptions", "{model_source}", "{{table}}.csv"), model_source=MODEL_RUNS),
    output:
        result("tables", "{table}.csv"),
    wildcard_constraints:
        table="rule_drift|recommendations|operating_points",
    log:
        result("logs", "prescription_table", "{table}.log"),
    script:
        "../scripts/fit_table.py"


rule headline:
    input:
        result("tables", "fits.csv"),
    output:
        result("tables", "headline.csv"),
    log:
        result("logs", "headline.log"),
    script:
        "../scripts/headline.py"
