# Model sources: exact pre-softmax attention rows of transformers reading text.
#
# The model forwards are the study's long poles (SmolLM2: about 300 s a corpus on 2 cores, two
# thirds of all job seconds), so the jobs on their path start before any other ready job: left to
# the DAG's order, the last SmolLM2 forward started after the short jobs and ran alone for 207 s.
EXTRACTION_PRIORITY = 10


rule assemble_gguf:
    output:
        result("models", "{model}.gguf"),
    log:
        result("logs", "assemble_gguf", "{model}.log"),
    benchmark:
        result("benchmarks", "assemble_gguf", "{model}.tsv")
    priority: EXTRACTION_PRIORITY
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
    priority: EXTRACTION_PRIORITY
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
    priority: EXTRACTION_PRIORITY
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
