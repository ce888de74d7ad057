"""Check stores and share bundles against the checksum manifests they carry.

A store or bundle (a Zarr directory, a ``.zip`` of one, or an fsspec URL such as ``s3://...``) is
checked against its own manifest (:data:`critscale.storage.MANIFEST`) and nothing else, so a
downloaded bundle can be checked without the study that made it.  Every difference is reported
by store and key (``<array>/c/<chunk index>`` for a chunk)::

    critscale-verify results/share/critscale-bundle.zarr.zip
    critscale-verify results/            # every store and bundle found under a folder
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from .storage import MANIFEST, MANIFEST_THREADS, table_manifest, tree_checksums


@dataclass(frozen=True)
class Mismatch:
    store: str
    key: str
    problem: str

    def __str__(self) -> str:
        return f"{self.store}: {self.key}: {self.problem}" if self.key else f"{self.store}: {self.problem}"


def _open_tree(location: str, storage_options: dict | None):
    """``(filesystem, root, threads)`` of a store or bundle: zip file, local directory or fsspec
    URL, and how many threads hash its files.  A local directory is hashed in
    :data:`MANIFEST_THREADS` threads, as its manifest was written; a zip bundle (one file handle
    shared under a lock) and remote filesystems (thread safety not checked) in one."""
    if location.endswith(".zip") and "::" not in location:
        return fsspec.filesystem("zip", fo=location), "", 1
    filesystem, root = fsspec.core.url_to_fs(location, **(storage_options or {}))
    return filesystem, root, MANIFEST_THREADS if isinstance(filesystem, LocalFileSystem) else 1


def _differences(location: str, recorded: dict, found: dict) -> list[Mismatch]:
    mismatches = [Mismatch(location, key, "recorded but missing") for key in sorted(recorded.keys() - found.keys())]
    mismatches += [Mismatch(location, key, "present but not recorded") for key in sorted(found.keys() - recorded.keys())]
    mismatches += [
        Mismatch(location, key, f"checksum differs (recorded sha256 {recorded[key][:12]}..., found {found[key][:12]}...)")
        for key in sorted(recorded.keys() & found.keys())
        if recorded[key] != found[key]
    ]
    return mismatches


def _no_manifest(location: str) -> list[Mismatch]:
    return [Mismatch(location, "", f"no checksum manifest ({MANIFEST}): nothing to check against")]


def _check_tree(location: str, storage_options: dict | None) -> list[Mismatch]:
    filesystem, root, threads = _open_tree(location, storage_options)
    manifest_key = f"{root.rstrip('/')}/{MANIFEST}" if root else MANIFEST
    if not filesystem.exists(manifest_key):
        return _no_manifest(location)
    recorded = json.loads(filesystem.cat_file(manifest_key))["sha256"]
    return _differences(location, recorded, tree_checksums(filesystem, root, threads))


def verify_table(path) -> list[Mismatch]:
    """Differences between a result table and the manifest beside it (:func:`storage.table_manifest`)."""
    path = Path(path)
    if not table_manifest(path).is_file():
        return _no_manifest(str(path))
    recorded = json.loads(table_manifest(path).read_text())["sha256"]
    found = {path.name: hashlib.sha256(path.read_bytes()).hexdigest()} if path.is_file() else {}
    return _differences(str(path), recorded, found)


def verify_store(location, storage_options: dict | None = None) -> list[Mismatch]:
    """Differences between a store (or bundle, or converted model) and its manifest; empty when
    it is intact.  ``storage_options`` go to fsspec for a URL (credentials, endpoint).  A store
    that cannot be read at all (a truncated zip, a corrupt manifest) is one mismatch, not an
    exception, so one damaged file never hides the problems of the others."""
    location = str(location)
    try:
        return _check_tree(location, storage_options)
    except (zipfile.BadZipFile, OSError, ValueError, KeyError) as error:
        return [Mismatch(location, "", f"unreadable ({type(error).__name__}: {error})")]


def _is_tree(entry: Path) -> bool:
    """A store (root ``zarr.json``), a directory with a manifest, or a converted model (every
    directory in ``models/``, so that one converted before manifests existed is reported)."""
    return (entry / "zarr.json").is_file() or (entry / MANIFEST).is_file() or entry.parent.name == "models"


def stores_under(folder) -> list[Path]:
    """Every store, converted model, zipped bundle and ``tables/*.csv`` under ``folder``; groups
    inside a store are part of that store."""
    found, pending = [], [Path(folder)]
    while pending:
        directory = pending.pop()
        for entry in sorted(directory.iterdir()):
            if entry.is_dir() and _is_tree(entry):
                found.append(entry)
            elif entry.is_dir():
                pending.append(entry)
            elif entry.name.endswith(".zarr.zip") or (entry.suffix == ".csv" and directory.name == "tables"):
                found.append(entry)
    return sorted(found)


def verify_locations(locations) -> tuple[list[str], list[Mismatch]]:
    """Check each location: a store, a bundle, or a local folder holding stores."""
    checked, mismatches = [], []
    for location in map(str, locations):
        is_folder = "://" not in location and Path(location).is_dir() and not (Path(location) / "zarr.json").exists()
        targets = stores_under(location) if is_folder else [location]
        if not targets:
            raise ValueError(f"no Zarr store or .zarr.zip bundle (nor table or converted model) under {location!r}")
        for target in targets:
            checked.append(str(target))
            mismatches += verify_table(target) if str(target).endswith(".csv") else verify_store(target)
    return checked, mismatches


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="critscale-verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("locations", nargs="+", help="store, bundle (.zarr.zip, directory or URL), or folder of stores")
    args = parser.parse_args(argv)
    try:
        checked, mismatches = verify_locations(args.locations)
    except (ValueError, FileNotFoundError) as error:
        print(f"critscale-verify: {error}", file=sys.stderr)
        return 2
    for mismatch in mismatches:
        print(f"MISMATCH {mismatch}")
    broken = {m.store for m in mismatches}
    for store in checked:
        print(f"{'FAILED' if store in broken else 'ok    '} {store}")
    print(f"{len(checked) - len(broken)} of {len(checked)} stores intact, {len(mismatches)} mismatches")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
