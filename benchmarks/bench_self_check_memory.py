"""Peak memory of the self-check's eager reference forward at long n, on a random one-layer model
with SmolLM2's attention shape (9 query heads, 3 KV heads, hidden 576): what the reference adds
above the capture forward, against the bound that query blocks give (the eager float mask
``n^2`` plus a few ``heads x QUERY_BLOCK x n`` weight blocks) and against one whole ``heads x n x n``
matrix, which an unblocked eager forward holds per layer.

    python benchmarks/bench_self_check_memory.py          # n = 8192
    python benchmarks/bench_self_check_memory.py 4096

The last line is a JSON summary (MiB).  Run in its own process: peak RSS is per process.
"""

from __future__ import annotations

import json
import os
import resource
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import AutoConfig, AutoModel

from critscale import capture as cap
from machine import describe, summary_line

HEADS, KV_HEADS, HIDDEN = 9, 3, 576  # SmolLM2-135M's attention
LADDER = [64, 128, 256, 512, 1024, 2048, 4096, 8192]
MIB = 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure(n: int) -> dict:
    """Peak RSS (MiB) after the capture forward and after the self-check of a window of ``n`` tokens."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    config = AutoConfig.for_model("llama", vocab_size=1000, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=1,
                                  num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=2 * n)
    model = AutoModel.from_config(config, attn_implementation="eager").eval()
    cap.register_attention()
    ids = torch.randint(0, config.vocab_size, (1, n))
    checked = cap.check_positions(n, [m for m in LADDER if m <= n], True, True)
    rows = {}
    with cap.capturing(model, checked, lambda layer, r, p: rows.__setitem__(layer, r), mode="sdpa"), torch.inference_mode():
        model(input_ids=ids)
    after_capture = _peak_mib()
    cap.self_check(model, ids, rows, checked, checked, causal=True)
    block = HEADS * cap.QUERY_BLOCK * n * 4 / MIB
    return {"n": n, "query_block": cap.QUERY_BLOCK, "after_capture": after_capture,
            "self_check_added": _peak_mib() - after_capture, "mask": n * n * 4 / MIB, "weight_block": block,
            "whole_matrix": HEADS * n * n * 4 / MIB}


if __name__ == "__main__":
    print(summary_line(describe()))
    result = measure(int(sys.argv[1]) if len(sys.argv) > 1 else 8192)
    print(f"n = {result['n']}: the self-check adds {result['self_check_added']:.0f} MiB above the capture forward "
          f"(mask {result['mask']:.0f} MiB, weight block of {result['query_block']} queries {result['weight_block']:.0f} MiB; "
          f"one unblocked heads x n x n matrix: {result['whole_matrix']:.0f} MiB)")
    print(json.dumps(result | {"machine": describe()}))
