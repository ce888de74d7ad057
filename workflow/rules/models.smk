# Model sources: exact pre-softmax attention rows of transformers reading text.
from critscale import model_loading


def is_gguf(model):
    spec = config["models"][model]
    return (
        "gguf_file" in spec
        or spec.get("path", "").endswith(".gguf")
        or model_loading.needs_assembly(spec)
    )


def assembled_gguf(model):
    """The GGUF assembled from a chunk package, or nothing for any other model entry."""
    return (
        [result("models", f"{model}.gguf")]
        if model_loading.needs_assembly(config["models"][model])
        else []
    )


def gguf_spec(model):
    """The model's config entry, pointing at its assembled GGUF when it ships in chunks."""
    spec = dict(config["models"][model])
    if assembled_gguf(model):
        spec["assembled"] = assembled_gguf(model)[0]
    return canonical(spec)


def model_spec(model):
    """The model's config entry; GGUF models point at their converted safetensors directory."""
    spec = gguf_spec(model)
    if is_gguf(model):
        spec["converted"] = result("models", model)
    return canonical(spec)


def converted_model(wildcards):
    model = MODEL_RUNS[wildcards.model_source]["model"]
    return [result("models", model)] if is_gguf(model) else []


rule assemble_gguf:
    output:
        result("models", "{model}.gguf"),
    log:
        result("logs", "assemble_gguf", "{model}.log"),
    benchmark:
        result("benchmarks", "assemble_gguf", "{model}.tsv")
    params:
        package=lambda wildcards: config["models"][wildcards.model]["package"],
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
    threads: 2
    resources:
        mem_mb=6000,
    params:
        spec=lambda wildcards: gguf_spec(wildcards.model),
    script:
        "../scripts/convert_gguf.py"


rule model_scores:
    input:
        converted_model,
    output:
        directory(result("scores", "{model_source}.zarr")),
    log:
        result("logs", "model_scores", "{model_source}.log"),
    benchmark:
        result("benchmarks", "model_scores", "{model_source}.tsv")
    threads: 2
    resources:
        mem_mb=8000,
    params:
        run=lambda wildcards: canonical(MODEL_RUNS[wildcards.model_source]),
        model=lambda wildcards: model_spec(MODEL_RUNS[wildcards.model_source]["model"]),
        corpus=lambda wildcards: canonical(
            config["corpora"][MODEL_RUNS[wildcards.model_source]["corpus"]]
        ),
        extraction=canonical(config.get("extraction", {})),
        seed=config["seed"],
    script:
        "../scripts/model_scores.py"
