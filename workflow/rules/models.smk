# Model sources: exact pre-softmax attention rows of transformers reading text.


def is_gguf(model):
    return "gguf_file" in config["models"][model] or config["models"][model].get("path", "").endswith(".gguf")


def model_spec(model):
    """The model's config entry; GGUF models point at their converted safetensors directory."""
    spec = dict(config["models"][model])
    if is_gguf(model):
        spec["converted"] = result("models", model)
    return canonical(spec)


def converted_model(wildcards):
    model = MODEL_RUNS[wildcards.model_source]["model"]
    return [result("models", model)] if is_gguf(model) else []


rule convert_gguf:
    output:
        directory(result("models", "{model}")),
    params:
        spec=lambda wildcards: canonical(config["models"][wildcards.model]),
    log:
        result("logs", "convert_gguf", "{model}.log"),
    benchmark:
        result("benchmarks", "convert_gguf", "{model}.tsv")
    threads: 2
    resources:
        mem_mb=6000,
    script:
        "../scripts/convert_gguf.py"


rule model_scores:
    input:
        converted_model,
    output:
        directory(result("scores", "{model_source}.zarr")),
    params:
        run=lambda wildcards: canonical(MODEL_RUNS[wildcards.model_source]),
        model=lambda wildcards: model_spec(MODEL_RUNS[wildcards.model_source]["model"]),
        corpus=lambda wildcards: canonical(config["corpora"][MODEL_RUNS[wildcards.model_source]["corpus"]]),
        extraction=canonical(config.get("extraction", {})),
        seed=config["seed"],
    log:
        result("logs", "model_scores", "{model_source}.log"),
    benchmark:
        result("benchmarks", "model_scores", "{model_source}.tsv")
    threads: 2
    resources:
        mem_mb=8000,
    script:
        "../scripts/model_scores.py"
