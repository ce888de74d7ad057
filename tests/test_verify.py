"""Checksum manifests of finished stores, and critscale-verify naming each damaged chunk."""

import hashlib
import json
import shutil
import tomllib
import zipfile
from importlib import import_module
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from critscale import storage, verify

ROOT = Path(__file__).resolve().parents[1]


def small_dataset():
    return xr.Dataset({"a": (("unit", "n"), np.arange(12.0).reshape(3, 4)), "b": (("unit",), np.arange(3))})


def chunk_files(store: Path) -> list[str]:
    return sorted(p.relative_to(store).as_posix() for p in store.rglob("*") if p.is_file() and "/c/" in p.as_posix())


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("delayed", [False, True])
def test_write_dataset_records_every_chunk(tmp_path, delayed):
    store = tmp_path / "s.zarr"
    write = storage.write_dataset(small_dataset().chunk(unit=1), store, compute=not delayed)
    if delayed:
        assert not (store / storage.MANIFEST).exists()  # not finished before the delayed write runs
        write.compute()
    recorded = json.loads((store / storage.MANIFEST).read_text())["sha256"]
    # b's first chunk holds only the fill value 0, so Zarr writes no file for it.
    assert chunk_files(store) == ["a/c/0/0", "a/c/1/0", "a/c/2/0", "b/c/1", "b/c/2"]
    assert sorted(key for key in recorded if "/c/" in key) == chunk_files(store)
    assert "zarr.json" in recorded and "a/zarr.json" in recorded
    assert verify.verify_store(store) == []


@pytest.mark.parametrize("threads", [1, 3])
def test_manifest_holds_the_sha256_of_each_file_hashed_in_any_number_of_threads(tmp_path, threads):
    store = tmp_path / "s.zarr"
    storage.write_dataset(small_dataset().chunk(unit=1), store)
    files = sorted(p for p in store.rglob("*") if p.is_file() and p.name != storage.MANIFEST)
    plain = {p.relative_to(store).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    filesystem = fsspec.filesystem("file")
    assert storage.tree_checksums(filesystem, str(store), threads=threads) == plain
    assert json.loads((store / storage.MANIFEST).read_text())["sha256"] == plain


def test_verify_hashes_a_local_store_in_the_manifests_threads_and_a_zip_bundle_in_one(tmp_path, monkeypatch):
    store = tmp_path / "s.zarr"
    storage.write_dataset(small_dataset().chunk(unit=1), store)
    bundle = tmp_path / "s.zarr.zip"
    with zipfile.ZipFile(bundle, "w") as archive:
        for file in sorted(p for p in store.rglob("*") if p.is_file()):
            archive.write(file, file.relative_to(store).as_posix())
    flip_byte(store / "a" / "c" / "1" / "0")
    used = []

    def recording(filesystem, root, threads=1):
        used.append(threads)
        return storage.tree_checksums(filesystem, root, threads)

    monkeypatch.setattr(verify, "tree_checksums", recording)
    assert [m.key for m in verify.verify_store(store)] == ["a/c/1/0"]
    assert verify.verify_store(bundle) == []
    assert used == [storage.MANIFEST_THREADS, 1] and storage.MANIFEST_THREADS > 1


def test_region_written_store_gets_its_manifest_on_consolidate(tmp_path):
    store = tmp_path / "scores.zarr"
    storage.create_scores_store(store, units=["u"], n_ladder=[4, 8], sequence=np.arange(3))
    assert not (store / storage.MANIFEST).exists()
    storage.write_scores(store, np.ones((1, 3, 8)), unit=slice(None), n_index=1, rows=slice(None))
    storage.consolidate(store)
    assert verify.verify_store(store) == []
    assert "scores/c/0/1/0/0" in json.loads((store / storage.MANIFEST).read_text())["sha256"]


def test_flipped_byte_missing_and_extra_files_are_named_by_store_and_chunk(tmp_path):
    store = tmp_path / "s.zarr"
    storage.write_dataset(small_dataset().chunk(unit=1), store)
    (store / ".snakemake_timestamp").write_text("")  # Snakemake's marker is not data
    flip_byte(store / "a" / "c" / "1" / "0")
    (store / "a" / "c" / "2" / "0").unlink()
    (store / "stray").write_text("x")
    problems = {(m.store, m.key): m.problem for m in verify.verify_store(store)}
    assert set(problems) == {(str(store), "a/c/1/0"), (str(store), "a/c/2/0"), (str(store), "stray")}
    assert problems[(str(store), "a/c/1/0")].startswith("checksum differs")
    assert problems[(str(store), "a/c/2/0")] == "recorded but missing"
    assert problems[(str(store), "stray")] == "present but not recorded"


def test_cli_checks_a_folder_of_stores_and_reports_store_and_chunk(tmp_path, capsys):
    for name in ("scores/x.zarr", "stats/x.zarr"):
        storage.write_dataset(small_dataset().chunk(unit=1), tmp_path / name)
    assert verify.main([str(tmp_path)]) == 0
    assert "2 of 2 stores intact, 0 mismatches" in capsys.readouterr().out
    flip_byte(tmp_path / "stats/x.zarr/a/c/0/0")
    assert verify.main([str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"MISMATCH {tmp_path / 'stats/x.zarr'}: a/c/0/0: checksum differs" in out
    assert f"FAILED {tmp_path / 'stats/x.zarr'}" in out and "1 of 2 stores intact" in out


def test_store_without_manifest_and_empty_folder_are_reported(tmp_path, capsys):
    small_dataset().to_zarr(tmp_path / "old.zarr", zarr_format=3, consolidated=False)
    assert [m.problem for m in verify.verify_store(tmp_path / "old.zarr")] == [
        f"no checksum manifest ({storage.MANIFEST}): nothing to check against"
    ]
    (tmp_path / "empty").mkdir()
    assert verify.main([str(tmp_path / "empty")]) == 2
    assert "no Zarr store or .zarr.zip bundle" in capsys.readouterr().err


def test_console_script_is_declared():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, function = scripts["critscale-verify"].split(":")
    assert getattr(import_module(module), function) is verify.main


def test_every_damaged_store_bundle_table_and_model_is_reported_on_one_line(tmp_path, capsys):
    for name in ("stats/a.zarr", "stats/b.zarr", "share/critscale-bundle.zarr"):
        storage.write_dataset(small_dataset().chunk(unit=1), tmp_path / name)
    bundle = tmp_path / "share/critscale-bundle.zarr.zip"
    with zipfile.ZipFile(bundle, "w") as archive:
        for file in sorted((tmp_path / "share/critscale-bundle.zarr").rglob("*")):
            archive.write(file, file.relative_to(tmp_path / "share/critscale-bundle.zarr").as_posix())
    shutil.rmtree(tmp_path / "share/critscale-bundle.zarr")
    bundle.write_bytes(bundle.read_bytes()[: bundle.stat().st_size // 2])  # an interrupted download
    flip_byte(tmp_path / "stats/a.zarr/a/c/1/0")
    (tmp_path / "stats/b.zarr/a/c/0/0").unlink()
    (tmp_path / "tables").mkdir()
    storage.write_table(pd.DataFrame({"x": [1, 2]}), tmp_path / "tables/fits.csv")
    (tmp_path / "tables/fits.csv").write_text("x\n1\n3\n")
    model = tmp_path / "models/tiny"
    model.mkdir(parents=True)
    (model / "model.safetensors").write_bytes(b"weights")
    storage.write_manifest(model)
    (model / "model.safetensors").write_bytes(b"weightz")
    assert verify.main([str(tmp_path)]) == 1
    problems = [line for line in capsys.readouterr().out.splitlines() if line.startswith("MISMATCH")]
    expected = [
        f"{model}: model.safetensors: checksum differs",
        f"{bundle}: unreadable (BadZipFile: File is not a zip file)",
        f"{tmp_path / 'stats/a.zarr'}: a/c/1/0: checksum differs",
        f"{tmp_path / 'stats/b.zarr'}: a/c/0/0: recorded but missing",
        f"{tmp_path / 'tables/fits.csv'}: fits.csv: checksum differs",
    ]
    assert len(problems) == len(expected)
    assert all(line.startswith(f"MISMATCH {start}") for line, start in zip(problems, expected))
