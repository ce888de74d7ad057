"""The workflow is lint-clean: `snakemake --lint` reports nothing and `snakefmt --check .` passes."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLEAN = "Congratulations, your workflow is in a good condition!"


def run(*command):
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT)


@pytest.mark.slow
def test_snakemake_lint_reports_nothing(tmp_path):
    # Every rule exists whatever the config; the tiny one skips loading the default study's models.
    lint = run(sys.executable, "-m", "snakemake", "--lint", "--configfile", "tests/data/tiny_config.yaml",
               "--replace-workflow-config", "--config", f"results={tmp_path}")
    output = lint.stdout + lint.stderr
    assert lint.returncode == 0, output
    assert "Lints for" not in output and CLEAN in output, output


def test_snakefmt_check_passes():
    snakefmt = shutil.which("snakefmt", path=str(Path(sys.executable).parent))
    assert snakefmt, "snakefmt is a test dependency (pyproject.toml [test] extra)"
    check = run(snakefmt, "--check", ".")
    assert check.returncode == 0, check.stdout + check.stderr


def test_every_rule_with_a_job_names_the_shared_conda_env():
    for path in sorted((ROOT / "workflow/rules").glob("*.smk")):
        text = path.read_text()
        for rule in re.split(r"\n(?=rule \w+:)", text)[1:]:
            name = rule.split(":", 1)[0]
            if not re.search(r"^    (script|shell|run|notebook|wrapper):", rule, re.M):
                continue  # a target rule (inputs only) runs nothing
            assert 'conda:\n        "../envs/critscale.yaml"' in rule, f"{path.name}: {name} has no conda: environment"
