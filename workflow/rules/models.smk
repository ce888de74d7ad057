# Model sources: exact pre-softmax attention rows of transformers reading text.


rule assemble_gguf:
    output:
        result("models", "{model}.gguf"),
    log:
        result("logs", "assemble_gguf", "{model}.log"),
    benchmark:
        result("benchmarks", "assemble_gguf", "{model}.tsv")
    conda:
        "../envs/critscale.yaml"
    params:
        spec=lambda wildcards: canonical(config["models"][wildcards.model]),
        code=code_hash("../scripts/assemble_gguf.py"),
    script:
        "../scripts/assemble_gguf.py"


rule convert_gguf:
    input:
        lambda wildcards: assembled_gguf(wildcards.model),
    output:
        directory(result("models", "{model}")),
    log:
        result("logs", "convert_gguf", "{model}.log"),
    benchmark:
        result("benchmarks", "convert_gguf", "{model}.tsv")
    conda:
        "../envs/critscale.yaml"
    threads: 1
    resources:
        mem_mb=6000,
    params:
        spec=lambda wildcards: gguf_spec(wildcards.model),
        code=code_hash("../scripts/convert_gguf.py"),
    script:
        "../scripts/convert_gguf.py"


rule model_scores:
    input:
        converted_model,
    output:
        directory(result("scores", "{extracted}.zarr")),
    log:
        result("logs", "model_scores", "{extracted}.log"),
    benchmark:
        result("benchmarks", "model_scores", "{extracted}.tsv")
    conda:
        "../envs/critscale.yaml"
    threads: 1
    resources:
        mem_mb=8000,
    params:
        run=lambda wildcards: canonical(EXTRACTED[wildcards.extracted]),
        model=lambda wildcards: model_spec(EXTRACTED[wildcards.extracted]["model"]),
        corpus=lambda wildcards: canonical(config["corpora"][EXTRACTED[wildcards.extracted]["corpus"]]),
        extraction=canonical(config.get("extraction", {})),
        seed=config["seed"],
        code=code_hash("../scripts/model_scores.py"),
    script:
        "../scripts/model_scores.py"
