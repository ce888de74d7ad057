"""The default target on a tiny config builds a report whose every figure loads in headless Chromium.

Chromium is required: without it the test fails (CI installs it: apt-get install -y chromium).
The screenshot and the probe's findings are kept in test-artifacts/ for inspection.
"""

from __future__ import annotations

import json

import pytest

from report_check import chromium_probe, find_chromium, report_data, report_problems
from tiny_study import ROOT, snakemake

ARTIFACTS = ROOT / "test-artifacts"
SECTIONS = ("Theory check", "Synthetic families")


@pytest.mark.slow
def test_report_of_the_tiny_study_loads_in_chromium(tmp_path, tiny_study):
    chromium = find_chromium()
    if chromium is None:
        pytest.fail("headless Chromium is required for the report test and was not found; "
                    "install it (apt-get update && apt-get install -y chromium)")
    report = tmp_path / "report.html"
    snakemake("--report", str(report), results=tiny_study)

    problems = report_problems(report, required_categories=SECTIONS, min_figures=4)
    assert problems == [], "\n".join(problems)

    embedded = report_data(report.read_text())["results"]
    show = next(path for path in embedded if path.endswith("gaussian/scale_vs_log_n.png"))
    screenshot = ARTIFACTS / "report.png"
    found = chromium_probe(report, chromium, screenshot=screenshot, show_path=show)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "report_probe.json").write_text(json.dumps(found, indent=2))

    assert found["appRendered"], "the report's app did not render"
    assert found["errors"] == [], f"page errors: {found['errors']}"
    assert set(SECTIONS) <= set(found["sections"])
    empty = [f"{c} / {s}" for c, subs in found["sections"].items() for s, rows in subs.items() if rows == 0]
    assert empty == [], f"sections listed no results in the page: {empty}"
    figures = found["figures"]
    assert len(figures) >= 4
    broken = {path: size for path, size in figures.items() if "x" not in size or size.startswith("0x")}
    assert broken == {}, f"figures that did not load: {broken}"
    assert screenshot.stat().st_size > 10_000

