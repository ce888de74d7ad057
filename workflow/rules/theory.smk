# Measured against theory: closed forms and finite-n predictions (families), and the per-row
# theorems and identities (every statistics store, families and models alike).


rule theory_check:
    input:
        stats=expand(result("stats", "{family}.zarr"), family=FAMILIES),
        fits=expand(result("fits", "{family}.csv"), family=FAMILIES),
        model_stats=expand(result("stats", "{model_source}.zarr"), model_source=MODEL_RUNS),
    output:
        comparison=result("tables", "theory_check.csv"),
        violations=result("tables", "theorem_violations.csv"),
    log:
        result("logs", "theory_check.log"),
    benchmark:
        result("benchmarks", "theory_check.tsv")
    conda:
        "../envs/critscale.yaml"
    resources:
        mem_mb=2000,
    params:
        code=code_hash("../scripts/theory_check.py"),
    script:
        "../scripts/theory_check.py"
