"""Code changes rerun what they change: each rule's code= param hashes its script and the critscale
modules the script imports (critscale.storage.code_sha256), and the workflow profile reruns on
params, not on file times."""

import ast
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from critscale import storage
from tiny_study import ROOT, TINY, copy_study, planned_jobs, snakemake

SCRIPTS = ROOT / "workflow" / "scripts"
RULES = ROOT / "workflow" / "rules"


def names(files):
    return {f.relative_to(storage.PACKAGE_DIR).as_posix() for f in files}


def full_walk_imports(path: Path) -> list[ast.AST]:
    return [node for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, (ast.Import, ast.ImportFrom))]


def test_closures_of_the_stages():
    statistics = names(storage.code_files(SCRIPTS / "statistics.py"))
    assert {"gapstats.py", "kernels.py", "compute.py", "storage.py", "__init__.py"} <= statistics
    # The score stages run none of the statistics code, nor the config validation.
    for script in ("family_scores.py", "model_scores.py"):
        closure = names(storage.code_files(SCRIPTS / script))
        assert not {"gapstats.py", "kernels.py", "compute.py", "config.py"} & closure, (script, closure)
    assert "extraction.py" in names(storage.code_files(SCRIPTS / "model_scores.py"))
    figures = [p for p in storage.code_files(SCRIPTS / "figures_source.py") if p.relative_to(storage.PACKAGE_DIR).parts[0].startswith("figures")]
    assert figures, "figures_source.py imports the figures module"


def test_the_import_scan_finds_what_a_full_parse_finds():
    """The scan parses only the import lines; on every module and script it finds every import a
    parse of the whole file finds (a docstring line reading like an import may add one)."""
    for path in [*storage.PACKAGE_DIR.rglob("*.py"), *SCRIPTS.glob("*.py")]:
        scanned = {ast.dump(node) for node in storage.import_statements(path.read_text())}
        full = {ast.dump(node) for node in full_walk_imports(path)}
        assert full <= scanned, (path, full - scanned)


def test_follows_absolute_relative_and_subpackage_imports(tmp_path, monkeypatch):
    package = tmp_path / "critscale"
    files = {
        "__init__.py": "",
        "a.py": "import numpy\nfrom . import b\n",
        "b.py": "def f():\n    from .c import g  # a lazy import counts too\n",
        "c.py": "g = 1\n",
        "pkg/__init__.py": "from .inner import h\n",
        "pkg/inner.py": "from .. import d\nfrom ..e import (\n    x,\n    y,\n)\n",
        "pkg/other.py": "",
        "d.py": "",
        "e.py": "x = y = 1\n",
        "unused.py": "",
    }
    for name, text in files.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    script = tmp_path / "script.py"
    script.write_text('"""A script."""\nimport os\nimport critscale.a\nfrom critscale.pkg import other, h\nfrom .local import z\n')
    monkeypatch.setattr(storage, "PACKAGE_DIR", package)
    storage._imported_files.cache_clear()
    try:
        found = names(storage.code_files(script))
        assert found == {"__init__.py", "a.py", "b.py", "c.py", "pkg/__init__.py", "pkg/inner.py", "pkg/other.py", "d.py", "e.py"}
        before = storage.code_sha256(script)
        (package / "unused.py").write_text("changed = True\n")
        storage._imported_files.cache_clear()
        assert storage.code_sha256(script) == before  # a module the script never runs
        (package / "pkg" / "inner.py").write_text(files["pkg/inner.py"] + "# changed\n")
        storage._imported_files.cache_clear()
        assert storage.code_sha256(script) != before
    finally:
        storage._imported_files.cache_clear()


def test_the_hash_follows_content_not_time_or_place(tmp_path):
    script = SCRIPTS / "statistics.py"
    before = storage.code_sha256(script)
    copy = tmp_path / "statistics.py"
    copy.write_bytes(script.read_bytes())
    os.utime(copy, (time.time() + 3600, time.time() + 3600))
    assert storage.code_sha256(copy) == before
    copy.write_text(script.read_text() + "\n# an edit\n")
    assert storage.code_sha256(copy) != before


def rules_of(path: Path) -> dict[str, str]:
    return {rule.split(":", 1)[0].split()[1]: rule for rule in re.split(r"\n(?=rule \w+:)", path.read_text())[1:]}


def test_every_rule_with_a_script_and_outputs_hashes_that_script():
    for path in sorted(RULES.glob("*.smk")):
        for name, rule in rules_of(path).items():
            # Snakemake's code trigger is off (profiles/default): a shell: or run: rule would need it.
            assert not re.search(r"^    (shell|run|notebook|wrapper):", rule, re.M), f"{path.name}: {name}"
            script = re.search(r'^    script:\n        "([^"]+)"', rule, re.M)
            if not script or not re.search(r"^    output:", rule, re.M):
                continue  # a target rule, or verify (no outputs, nothing to rerun)
            assert f'        code=code_hash("{script.group(1)}"),\n' in rule, f"{path.name}: {name} has no code= param for its script"


def test_the_profile_reruns_on_params_and_not_on_file_times():
    profile = yaml.safe_load((ROOT / "profiles" / "default" / "config.yaml").read_text())
    assert set(profile["rerun-triggers"]) == {"mtime", "params", "input", "software-env"}


# -- on a finished tiny run --------------------------------------------------------------------


@pytest.fixture
def study(tiny_study, tmp_path):
    """A private copy of the checkout and of the finished tiny run: its code may be edited."""
    return copy_study(tiny_study, tmp_path)


def dry_run(study):
    checkout, results = study
    return snakemake("-n", results=results, root=checkout)


def families():
    return list(yaml.safe_load(TINY.read_text())["families"])


def figures_module(checkout: Path) -> Path:
    """The figures module (or, once it is a package, its __init__.py)."""
    package = checkout / "workflow" / "critscale"
    return package / "figures.py" if (package / "figures.py").exists() else package / "figures" / "__init__.py"


@pytest.mark.slow
def test_unchanged_code_with_new_file_times_reruns_nothing(study):
    checkout, _ = study
    later = time.time() + 60
    for path in [*(checkout / "workflow" / "scripts").glob("*.py"), *(checkout / "workflow" / "critscale").rglob("*.py")]:
        path.write_bytes(path.read_bytes())  # what a `git checkout` of an unchanged file does
        os.utime(path, (later, later))
    run = dry_run(study)
    assert "Nothing to be done" in run.stdout + run.stderr, run.stdout


@pytest.mark.slow
def test_a_gapstats_change_reruns_the_statistics_and_everything_after_them(study):
    checkout, _ = study
    gapstats = checkout / "workflow" / "critscale" / "gapstats.py"
    gapstats.write_text(gapstats.read_text() + "\nLAMBDA_FACTOR = 1.3  # an edit\n")
    run = dry_run(study)
    jobs = planned_jobs(run)
    assert jobs.get("statistics") == len(families()), jobs
    assert jobs.get("fit") == len(families()) and jobs.get("figures_source") == len(families()), jobs
    assert {"fit_table", "theory_check", "figures_overview", "headline", "report_table"} <= jobs.keys(), jobs
    assert "family_scores" not in jobs and "coverage" not in jobs, jobs  # upstream, and a stage it does not run
    assert "Params have changed" in run.stdout, run.stdout


@pytest.mark.slow
def test_a_figures_change_reruns_figures_only(study):
    checkout, _ = study
    module = figures_module(checkout)
    module.write_text(module.read_text() + "\n# an edit\n")
    jobs = planned_jobs(dry_run(study))
    assert jobs.get("figures_source") == len(families()), jobs
    assert set(jobs) <= {"figures_source", "figures_overview", "figures_model", "figures_prescriptions", "report_table", "all"}, jobs


@pytest.mark.slow
def test_a_changed_upstream_output_still_reruns_what_reads_it(study):
    _, results = study
    fits = results / "fits" / "gaussian.csv"
    fits.write_text(fits.read_text() + "\n")
    jobs = planned_jobs(dry_run(study))
    assert jobs.get("fit_table") == 1 and "fit" not in jobs and "statistics" not in jobs, jobs


_EXP_NEG_OF_TWO_KEYS = """
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from critscale import kernels
terms = np.empty(2)
kernels._exp_neg(1.0, np.array([0.0, 0.5]), 2, terms)
print(float(terms[1]), sum(kernels._exp_neg.stats.cache_hits.values()))
"""


def test_editing_an_intrinsic_makes_the_kernels_cached_machine_code_stale(tmp_path):
    """numba would keep kernels.py's cached code after vector_intrinsics.py changed (it stamps a
    cache by its own file only): power_of_two is inlined in _exp_neg, so doubling it must show."""
    shutil.copytree(storage.PACKAGE_DIR, tmp_path / "critscale", ignore=shutil.ignore_patterns("__pycache__"))

    def exp_neg_half():
        run = subprocess.run([sys.executable, "-c", _EXP_NEG_OF_TWO_KEYS, str(tmp_path)], capture_output=True,
                             text=True, check=True, env=os.environ | {"NUMBA_CACHE_DIR": str(tmp_path / "cache")})
        value, hits = run.stdout.split()
        return float(value), int(hits)

    assert exp_neg_half()[1] == 0 and exp_neg_half() == (pytest.approx(np.exp(-0.5), rel=1e-15), 1)  # compiled, then cached
    intrinsics = tmp_path / "critscale" / "vector_intrinsics.py"
    edited = intrinsics.read_text().replace("1023 - _SHIFT_BITS", "1024 - _SHIFT_BITS")  # 2**n becomes 2**(n + 1)
    assert edited != intrinsics.read_text()
    intrinsics.write_text(edited)
    assert exp_neg_half() == (pytest.approx(2 * np.exp(-0.5), rel=1e-15), 0)
