"""environment.yml (conda) and pyproject.toml (pip) name the same packages."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PYPI = {"pytorch": "torch"}
NOT_PACKAGES = {"python", "pip"}


def name_of(requirement: str) -> str:
    name = re.split(r"[<>=!~ \[;]", requirement.strip(), maxsplit=1)[0]
    return CONDA_TO_PYPI.get(name.lower(), name.lower()).replace("_", "-")


def test_environment_and_pyproject_name_the_same_packages():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_side = {name_of(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]}
    conda = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    conda_side = set()
    for entry in conda:
        if isinstance(entry, dict):
            conda_side |= {name_of(r) for r in entry["pip"] if not r.startswith("-")}
        elif name_of(entry) not in NOT_PACKAGES:
            conda_side.add(name_of(entry))
    assert pip_side == conda_side, f"only in pyproject: {pip_side - conda_side}; only in environment.yml: {conda_side - pip_side}"


def test_torch_pinned_to_the_cpu_wheel_everywhere():
    assert 'torch==2.13.0' in (ROOT / "pyproject.toml").read_text()
    assert "torch==2.13.0" in (ROOT / "environment.yml").read_text()


def test_no_deps_packages_are_documented_for_conda_users():
    listed = [line for line in (ROOT / "workflow/envs/no-deps.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert listed
    assert "workflow/envs/no-deps.txt" in (ROOT / "environment.yml").read_text()
    assert "workflow/envs/no-deps.txt" in (ROOT / "Makefile").read_text()
