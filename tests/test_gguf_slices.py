"""A GGUF shipped as raw slices in packages: assembled in order, refused when a slice is missing or altered."""

import hashlib

import pytest

from critscale import model_sources

PIECES = [b"GGUF\x03\x00\x00\x00" + b"a" * 100, b"b" * 100, b"c" * 37]


def fake_slice_packages(root, pieces):
    """Installed-looking distributions ``fake-slice-partK`` 0.9.0, each with one raw slice."""
    for k, piece in enumerate(pieces, start=1):
        name = f"fake_slice_part{k}"
        (root / name / "data").mkdir(parents=True)
        (root / name / "data" / f"part{k:02d}.bin").write_bytes(piece)
        info = root / f"{name}-0.9.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fake-slice-part{k}\nVersion: 0.9.0\n")
        (info / "RECORD").write_text(f"{name}/data/part{k:02d}.bin,,\n{name}-0.9.0.dist-info/METADATA,,\n")
    whole = b"".join(pieces)
    return {"packages": [f"fake-slice-part{k}" for k in range(1, len(pieces) + 1)], "version": "0.9.0",
            "glob": "*/data/part*.bin", "sha256": hashlib.sha256(whole).hexdigest(), "size": len(whole)}


@pytest.fixture
def slices(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    return site, fake_slice_packages(site, PIECES)


def test_slices_assemble_in_order(slices, tmp_path):
    _, spec = slices
    source = model_sources.model_source({"slices": spec, "ladder": [8]})
    assert source.kind == "gguf_chunks" and source.chunks[0].endswith("part01.bin")
    assert source.needs_assembly and source.needs_conversion
    out = source.assemble(tmp_path / "m.gguf")
    assert out.read_bytes() == b"".join(PIECES)


def test_altered_slice_is_refused(slices, tmp_path):
    site, spec = slices
    (site / "fake_slice_part2" / "data" / "part02.bin").write_bytes(b"B" * 100)
    with pytest.raises(model_sources.ModelSpecError, match="expects sha256:" + spec["sha256"]):
        model_sources.assemble_gguf_slices(spec, tmp_path / "m.gguf")
    assert not (tmp_path / "m.gguf").exists()


def test_missing_slice_is_refused(slices, tmp_path):
    _, spec = slices
    with pytest.raises(model_sources.ModelSpecError, match="fake-slice-part9==0.9.0 is not installed"):
        model_sources.assemble_gguf_slices({**spec, "packages": spec["packages"] + ["fake-slice-part9"]}, tmp_path / "m.gguf")
    (tmp_path / "site" / "fake_slice_part3" / "data" / "part03.bin").unlink()
    with pytest.raises(model_sources.ModelSpecError, match="fake-slice-part3 holds 0 installed files"):
        model_sources.assemble_gguf_slices(spec, tmp_path / "m.gguf")
