"""The repository explains and cites itself: no reference to a path outside it, its own theory
document linked from the README, and valid citation metadata."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE_REFERENCES = ("../shared", "shared/theory.md")


def tracked_files() -> list[Path]:
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / name for name in listing.decode().split("\0") if name]


def test_no_tracked_file_outside_tests_refers_outside_the_repository():
    files = [path for path in tracked_files() if path.relative_to(ROOT).parts[0] != "tests" and path.is_file()]
    assert any(path.name == "README.md" for path in files)  # the listing is the repository's
    hits = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in files
        for number, line in enumerate(path.read_text(errors="ignore").splitlines(), 1)
        if any(reference in line for reference in OUTSIDE_REFERENCES)
    ]
    assert not hits, "references to a path outside the repository:\n" + "\n".join(hits)


def test_the_theory_document_exists_and_the_readme_links_to_it():
    theory = ROOT / "docs" / "theory.md"
    assert theory.is_file()
    text = theory.read_text()
    assert "arXiv:2605.12697" in text and "Hayase" in text and "Karakida" in text
    assert "](docs/theory.md)" in (ROOT / "README.md").read_text()


def test_the_readme_says_how_to_cite():
    assert "How to cite" in (ROOT / "README.md").read_text()


def test_citation_metadata_are_valid():
    cffconvert = Path(sys.executable).parent / "cffconvert"
    run = subprocess.run([str(cffconvert), "--validate", "--infile", str(ROOT / "CITATION.cff")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "valid" in run.stdout and "2605.12697" in (ROOT / "CITATION.cff").read_text()
