# Measured against theory: closed forms, finite-n predictions, and the per-row theorems.


rule theory_check:
    input:
        stats=expand(result("stats", "{family}.zarr"), family=FAMILIES),
        fits=expand(result("fits", "{family}.csv"), family=FAMILIES),
    output:
        comparison=result("tables", "theory_check.csv"),
        violations=result("tables", "theorem_violations.csv"),
    log:
        result("logs", "theory_check.log"),
    conda:
        "../envs/critscale.yaml"
    script:
        "../scripts/theory_check.py"
