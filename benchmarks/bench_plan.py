"""Benchmark: how long Snakemake takes to plan a study under load (issue: 8 model sources and 20
families must plan in under 30 s).

Run: ``python benchmarks/bench_plan.py [--families 20] [--sources 8]``.  Builds a config from
config.yaml with ``--families`` synthetic families (the shipped ones, then Gaussian and Weibull
variants of other parameters) and ``--sources`` model sources (the shipped models on the shipped
corpora), and times ``snakemake -n`` on it in a fresh process: config validation (model configs
read without weights, corpora loaded and checksummed, sizes estimated) and the DAG.  The stage's
memory as stores grow is measured by ``bench_gapstats.py`` (its peak-memory lines).
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from machine import describe, summary_line

ROOT = Path(__file__).resolve().parents[1]


def loaded_config(families: int, sources: int, results: Path) -> dict:
    """config.yaml with ``families`` families and ``sources`` (model, corpus) pairs."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["results"] = str(results)
    shipped = dict(config["families"])
    variants = ({"family": "gaussian", "params": {"sigma": s}} for s in itertools.count(2))
    variants = itertools.chain(variants, ({"family": "weibull", "params": {"gamma": g}} for g in itertools.count(2)))
    while len(shipped) < families:
        shipped[f"extra_{len(shipped)}"] = next(variants)
    config["families"] = dict(itertools.islice(shipped.items(), families))
    pairs = [(model, corpus) for model in config["models"] for corpus in config["corpora"]]
    chosen: dict[str, list[str]] = {}
    for model, corpus in pairs[:sources]:
        chosen.setdefault(model, []).append(corpus)
    config["studies"] = [{"model": model, "corpora": corpora} for model, corpora in chosen.items()]
    return config


def plan_seconds(config: dict, workdir: Path) -> tuple[float, str]:
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "snakemake", "-n", "--cores", "2", "--configfile", str(path),
               "--replace-workflow-config"]
    start = time.perf_counter()
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if run.returncode:
        raise RuntimeError(f"snakemake -n failed:\n{run.stderr[-3000:]}")
    return seconds, run.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", type=int, default=20)
    parser.add_argument("--sources", type=int, default=8)
    args = parser.parse_args()
    machine = describe()
    print(summary_line(machine))
    with tempfile.TemporaryDirectory() as tmp:
        config = loaded_config(args.families, args.sources, Path(tmp) / "results")
        seconds, plan = plan_seconds(config, Path(tmp))
    sources = sum(len(study["corpora"]) for study in config["studies"])
    jobs = next(int(line.split()[-1]) for line in plan.splitlines() if line.startswith("total"))
    print(f"{len(config['families'])} families, {sources} model sources ({jobs} jobs): "
          f"snakemake -n in {seconds:.1f} s (target 30 s)")
    print(json.dumps({"machine": machine, "families": len(config["families"]), "model_sources": sources,
                      "plan_seconds": seconds, "jobs": jobs}))


if __name__ == "__main__":
    main()
