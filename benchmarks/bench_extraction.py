"""Extraction (capture + write to the Zarr store) versus a plain SDPA forward of the same model on
the same windows (the fair baseline), and a plain eager forward as a second line, in one run;
prints the times, the ratios and peak memory above the loaded model, for models with 2 and 8 layers
(peak memory must not grow with the number of layers). Windows run back to back as in the driver,
so the writer thread overlaps the next forward and its tail is timed. The self-check is not
included (it is timed in the extraction summary, ``self_check_seconds``).

    python benchmarks/bench_extraction.py                    # tiny random Llama, 2 and 8 layers
    python benchmarks/bench_extraction.py --n 2048 --repeat 3
    python benchmarks/bench_extraction.py --smollm2 DIR      # real SmolLM2 (converted dir), layer subsets

Target: extraction <= 1.15x the plain SDPA forward.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import psutil
import torch

from critscale import capture as cap
from critscale import extraction as ex
from critscale import model_loading as ml
from critscale.score_writer import RowChunkWriter, choose_row_chunk
from critscale.storage import create_scores_store
from machine import describe, summary_line


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every 2 ms."""

    def __enter__(self):
        self.proc = psutil.Process()
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop = True
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def mib(self):
        return (self.peak - self.base) / 2**20


def tiny_llama(layers, hidden=256, heads=4, kv_heads=2, vocab=1000):
    from transformers import AutoModel, LlamaConfig

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=8192)
    return AutoModel.from_config(cfg, attn_implementation="eager").eval()


def run_mode(model, ids, ladder, queries, attention_output, repeat, layers, mode):
    """Time ``mode`` over all windows of ``ids`` (one forward each, as the driver runs them): a plain
    "sdpa" or "eager" forward, or "extract" (capture, with the driver's chunk-aligned writer thread
    overlapping the next forward, and the writer's tail until the store is complete)."""
    cfg = model.config
    n_layers, n_heads = cfg.num_hidden_layers, cfg.num_attention_heads
    layer_list = list(range(n_layers)) if layers is None else list(layers)
    units = [f"L{l}H{h}" for l in layer_list for h in range(n_heads)]
    positions = [n - 1 - o for n in ladder for o in range(queries)]
    windows = ids.shape[0]
    times, peak = [], 0.0
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        store = os.path.join(tmp, "s.zarr")
        model(input_ids=ids[:1, :64])  # warm-up
        for _ in range(repeat):
            row_chunk = choose_row_chunk(windows * queries, queries, len(units), ladder, ex.WRITE_BUFFER_BYTES)
            create_scores_store(store, units=units, n_ladder=ladder, sequence=np.repeat(np.arange(windows), queries),
                                row_chunk=row_chunk)
            with PeakRSS() as mem:
                t0 = time.perf_counter()
                if mode == "extract":
                    extract_windows(model, ids, store, positions, layer_list, len(ladder), queries, attention_output)
                else:
                    with cap.attention_implementation(model, mode):
                        for window in ids:
                            model(input_ids=window[None])
                times.append(time.perf_counter() - t0)
            peak = max(peak, mem.mib)
    return min(times), peak


def extract_windows(model, ids, store, positions, layer_list, n_count, queries, attention_output):
    """The driver's per-window capture without its self-check, rows to the writer thread."""
    layer_units = {layer: i * model.config.num_attention_heads for i, layer in enumerate(layer_list)}
    with RowChunkWriter(store) as writer:
        for index, window in enumerate(ids):
            ex.capture_forward(model, writer, window[None], positions, list(range(n_count)), row0=index * queries,
                               queries=queries, layer_units=layer_units, mode=attention_output)


def child(args):
    """One (model, mode) measurement in a fresh process, so peak RSS is not hidden by allocator reuse."""
    if args.smollm2:
        model, _, _ = ml.load_model({"path": args.smollm2})
        layers = [0, 1] if args.case == 2 else None
    else:
        model, layers = tiny_llama(args.case), None
    ids = torch.randint(0, model.config.vocab_size, (args.windows, args.n), generator=torch.Generator().manual_seed(0))
    print(summary_line(describe()))
    ladder = [n for n in (64, 128, 256, 512, 1024, 2048, 4096, 8192) if n < args.n] + [args.n]
    seconds, peak = run_mode(model, ids, ladder, args.queries, args.attention_output, args.repeat, layers, args.mode)
    print(json.dumps({"seconds": seconds, "peak_mib": peak, "heads": model.config.num_attention_heads}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2048, help="longest context length")
    parser.add_argument("--windows", type=int, default=8, help="windows timed back to back (one forward each)")
    parser.add_argument("--queries", type=int, default=4, help="rows per window and n (the default study's)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 8], help="tiny-model layer counts")
    parser.add_argument("--attention-output", choices=["eager", "sdpa"], default="sdpa")
    parser.add_argument("--smollm2", help="converted SmolLM2 directory: benchmark the real model with layer subsets")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--_child", dest="case", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["sdpa", "eager", "extract"], default="extract", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.case is not None:
        child(args)
        return 0
    ladder = [n for n in (64, 128, 256, 512, 1024, 2048, 4096, 8192) if n < args.n] + [args.n]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; n ladder {ladder}, {args.windows} windows, "
          f"queries {args.queries}, extraction attention output: {args.attention_output}")
    print(f"{'model':<28} {'SDPA s':>8} {'eager s':>8} {'extract s':>10} {'/SDPA':>6} {'/eager':>7} "
          f"{'peak MiB SDPA':>14} {'peak MiB extract':>17}")
    if args.smollm2:
        cases = [("SmolLM2 capture 2 layers", 2), ("SmolLM2 capture 30 layers", 30)]
    else:
        cases = [(f"tiny Llama {layers} layers", layers) for layers in args.layers]
    ratios, peaks = [], []
    for name, case in cases:
        out = {}
        for mode in ("sdpa", "eager", "extract"):
            cmd = [sys.executable, __file__, "--_child", str(case), "--mode", mode, "--n", str(args.n),
                   "--windows", str(args.windows), "--queries", str(args.queries), "--repeat", str(args.repeat),
                   "--attention-output", args.attention_output]
            if args.smollm2:
                cmd += ["--smollm2", args.smollm2]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            out[mode] = json.loads(res.stdout.strip().splitlines()[-1])
        sdpa, eager, extract = (out[mode]["seconds"] for mode in ("sdpa", "eager", "extract"))
        ratios.append(extract / sdpa)
        peaks.append(out["extract"]["peak_mib"])
        print(f"{name:<28} {sdpa:>8.2f} {eager:>8.2f} {extract:>10.2f} {extract / sdpa:>6.2f} {extract / eager:>7.2f} "
              f"{out['sdpa']['peak_mib']:>14.1f} {out['extract']['peak_mib']:>17.1f}", flush=True)
    heads = out["sdpa"]["heads"]
    print(f"max ratio to the SDPA forward {max(ratios):.2f} (target <= 1.15); extraction peak memory "
          f"{min(peaks):.0f}..{max(peaks):.0f} MiB across layer counts "
          f"(one layer's logits at n={args.n}: {heads * args.n ** 2 * 4 / 2**20:.0f} MiB)")
    return 0 if max(ratios) <= 1.15 else 1


if __name__ == "__main__":
    sys.exit(main())
