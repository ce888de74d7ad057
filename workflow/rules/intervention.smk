# The intervention: the model source's schedule and the published rules run on held-out windows
# beyond the training length (config key `intervention`; target `intervene`, make intervene).


rule intervention_window:
    input:
        schedule=lambda wildcards: result("schedules", f"{INTERVENTION['source']}.json"),
        model=lambda wildcards: intervention_model(),
    output:
        buckets=result("intervention", "window{window}", "buckets.csv"),
        entropy=result("intervention", "window{window}", "entropy.csv"),
        checks=result("intervention", "window{window}", "checks.json"),
    log:
        result("logs", "intervention", "window{window}.log"),
    benchmark:
        result("benchmarks", "intervention", "window{window}.tsv")
    wildcard_constraints:
        window="[0-9]+",
    conda:
        "../envs/critscale.yaml"
    threads: 1
    resources:
        mem_mb=12000,
    params:
        intervention=lambda wildcards: intervention_window_settings(),
        model=lambda wildcards: model_spec(MODEL_RUNS[INTERVENTION["source"]]["model"]),
        corpus=lambda wildcards: canonical(config["corpora"][MODEL_RUNS[INTERVENTION["source"]]["corpus"]]),
        dtype=lambda wildcards: INTERVENTION["model_dtype"],
        device=lambda wildcards: INTERVENTION["device"],
        seed=config["seed"],
        code=code_hash("../scripts/intervention_window.py"),
    script:
        "../scripts/intervention_window.py"


rule intervention_table:
    input:
        buckets=expand(result("intervention", "window{window}", "buckets.csv"), window=INTERVENTION_WINDOWS),
        checks=expand(result("intervention", "window{window}", "checks.json"), window=INTERVENTION_WINDOWS),
    output:
        table=result("tables", "intervention.csv"),
        curves=result("tables", "intervention_by_position.csv"),
        effective_context=result("tables", "effective_context.csv"),
        guard=result("tables", "intervention_guard.csv"),
        figure=figure("intervention.png"),
    log:
        result("logs", "intervention_table.log"),
    conda:
        "../envs/critscale.yaml"
    params:
        intervention=canonical(INTERVENTION),
        training_length=config["fitting"]["training_length"],
        seed=config["seed"],
        code=code_hash("../scripts/intervention_table.py"),
    script:
        "../scripts/intervention_table.py"


rule intervene:
    input:
        rules.intervention_table.output,
