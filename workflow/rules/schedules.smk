# Temperature schedules: each model source's fitted exponents as the beta(n) its queries run with
# beyond the training length (results/schedules/{source}.json, workflow/schemas/schedule.schema.json).


rule schedule:
    input:
        stats=result("stats", "{model_source}.zarr"),
        fits=result("fits", "{model_source}.csv"),
    output:
        result("schedules", "{model_source}.json"),
    log:
        result("logs", "schedule", "{model_source}.log"),
    benchmark:
        result("benchmarks", "schedule", "{model_source}.tsv")
    conda:
        "../envs/critscale.yaml"
    params:
        training_length=config["fitting"]["training_length"],
        level=config["fitting"]["level"],
        code=code_hash("../scripts/schedule.py"),
    script:
        "../scripts/schedule.py"
