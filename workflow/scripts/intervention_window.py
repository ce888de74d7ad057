"""One held-out window of the intervention: every arm under every RoPE handling (thin wrapper)."""

import json

import torch

from critscale import corpora, intervention, model_loading, runlog, schedules

runlog.to_file(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
settings = snakemake.params.intervention
document = schedules.read_schedule(snakemake.input.schedule)
model, tokenizer, info = model_loading.load_model(
    snakemake.params.model, dtype=snakemake.params.dtype, device=snakemake.params.device, causal_lm=True
)
model.set_attn_implementation("sdpa")
texts, corpus_info = corpora.load_corpus(snakemake.params.corpus)
windows, starts = corpora.held_out_windows(
    tokenizer, texts, settings["length"], settings["windows"], fitted=schedules.fitted_windows(document)
)
window = int(snakemake.wildcards.window)
result = intervention.run_window(
    model, windows[window : window + 1].to(model.device), document, settings, window=window, seed=snakemake.params.seed
)
result["buckets"].to_csv(snakemake.output.buckets, index=False)
result["entropy"].to_csv(snakemake.output.entropy, index=False)
checks = {**result["checks"], "window_start": starts[window], "corpus_checksum": corpus_info["checksum"],
          "model": {k: str(v) for k, v in info.items()}}
with open(snakemake.output.checks, "w") as handle:
    json.dump(checks, handle, indent=1, sort_keys=True)
print(json.dumps(result["checks"], indent=1))
