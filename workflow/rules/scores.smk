# Score sources: synthetic families (and, in models.smk, transformers on text).


rule family_scores:
    output:
        directory(result("scores", "{family}.zarr")),
    log:
        result("logs", "family_scores", "{family}.log"),
    benchmark:
        result("benchmarks", "family_scores", "{family}.tsv")
    conda:
        "../envs/critscale.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        spec=family_spec,
        seed=config["seed"],
        row_chunk=config["compute"]["row_chunk"],
        quantiles=config["quantiles"],
        code=code_hash("../scripts/family_scores.py"),
    script:
        "../scripts/family_scores.py"
