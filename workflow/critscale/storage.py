"""Zarr stores: the one layout every score source writes, provenance, and safe writes.

Score store layout (synthetic families and models alike)::

    scores (unit, n, row, key)  float32 or float64; NaN = masked key, or key >= n (padding)
    n (n)            context lengths of the ladder
    unit (unit)      str label of the unit (family instance, or "L{layer}H{head}")
    row (row)        row index within each (unit, n)
    sequence (row)   the independent resampling unit the row belongs to
    query (row)      offset of the query before the last position (0 = the row of position n-1)
    + any extra 1-d coordinates on ``unit`` (``layer``, ``head``) or ``row``
    attrs: source, kind ("family" | "model"), provenance (JSON), anything source-specific

Padding for short rows costs no disk: Zarr does not write chunks that hold only the fill value.
Stores are written with consolidated metadata so that ``xarray.open_zarr(path)`` opens them in
one line without a fallback warning.  A complete store holds a checksum manifest
(:data:`MANIFEST`: the sha256 of every file by its key, e.g. ``scores/c/0/1/0/0``), written when
the store is finished, which ``critscale.verify`` checks.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import json
import platform
import re
import shutil
import sys
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import dask
import dask.array
import fsspec
import numpy as np
import xarray as xr
import zarr
from zarr.codecs import BloscCodec

SCORE_DIMS = ("unit", "n", "row", "key")
LOCK_FILE = Path(__file__).resolve().parents[2] / "requirements.lock"
#: The library package whose modules :func:`code_sha256` follows (this very package).
PACKAGE_DIR = Path(__file__).resolve().parent
#: The checksum manifest inside every complete store (and share bundle): {"sha256": {key: hex}}.
MANIFEST = "critscale-checksums.json"
#: Codec of every numeric data variable: Blosc LZ4 with byte shuffle writes a statistics store's
#: float64 three times as fast as Zarr 3's default (zstd) at a better ratio (measured on a SmolLM2
#: store: 497 against 157 MB/s written, 852 against 558 MB/s read, ratio 1.23 against 1.16).
COMPRESSORS = (BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),)
#: Files of a store that are not its data: the manifest itself, and the marker Snakemake puts in
#: every directory() output after its job.
NOT_CHECKSUMMED = (MANIFEST, ".snakemake_timestamp")
MANIFEST_THREADS = 2  # files of a store hashed at once when its manifest is written
PROVENANCE_PACKAGES = (
    "critscale", "numpy", "scipy", "xarray", "zarr", "dask", "distributed", "statsmodels",
    "snakemake", "torch", "transformers",
)


@contextmanager
def quiet_consolidation():
    # zarr 3 warns that consolidated metadata is not in the v3 spec; we rely on it on purpose.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        yield


def package_versions(names=PROVENANCE_PACKAGES) -> dict[str, str]:
    return dict(_installed_versions(tuple(names)))


@functools.cache  # importlib.metadata scans the environment: 5 ms a store, for the same answer
def _installed_versions(names: tuple[str, ...]) -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@functools.cache
def lock_sha256() -> str | None:
    """sha256 of requirements.lock (the exact versions `make` installs); None outside a checkout."""
    try:
        return hashlib.sha256(LOCK_FILE.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def _module_file(name: str) -> Path | None:
    """The file of library module ``name`` (``critscale.x.y``: ``x/y.py`` or ``x/y/__init__.py``),
    or None when ``name`` is no module of it (a function or class imported from one)."""
    base = PACKAGE_DIR.joinpath(*name.split(".")[1:])
    for candidate in (base / "__init__.py", base.with_name(base.name + ".py")):
        if candidate.is_file():
            return candidate
    return None


#: Where an import statement starts: a line beginning ``import x`` or ``from x import``.
_IMPORT_LINE = re.compile(r"^[ \t]*(?:import|from)[ \t]+[\w.]", re.M)


def import_statements(text: str) -> list[ast.Import | ast.ImportFrom]:
    """The import statements of Python source ``text``, at any depth (in a function too), each
    parsed by :mod:`ast` from the lines it spans. Parsing only these lines, not the whole module,
    keeps the workflow's parse fast; a line of a docstring that reads like an import is skipped
    when it does not parse, or counted (the safe side) when it does."""
    statements = []
    for match in _IMPORT_LINE.finditer(text):
        end = text.find("\n", match.start())
        end = len(text) if end < 0 else end
        line = text[match.start() : end]
        while (line.count("(") > line.count(")") or line.rstrip().endswith("\\")) and end < len(text):
            following = text.find("\n", end + 1)
            following = len(text) if following < 0 else following
            line, end = line + text[end:following], following
        try:
            statements.extend(ast.parse(line.strip()).body)
        except SyntaxError:
            continue
    return [node for node in statements if isinstance(node, (ast.Import, ast.ImportFrom))]


@functools.cache
def _imported_files(path: Path, package: str | None) -> frozenset[Path]:
    """Library modules that the file at ``path`` imports (:func:`import_statements`: nothing is
    imported). ``package`` is the package a library module belongs to (for relative imports); None
    for a script. Importing ``critscale.a.b`` runs ``critscale/__init__.py`` and
    ``critscale/a/__init__.py`` too, so those count."""
    root = PACKAGE_DIR.name
    names = set()
    for node in import_statements(path.read_text()):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
            continue
        if node.level and package is None:
            continue  # a script's relative import is not the library
        if node.level:
            parts = package.split(".")
            module = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        names.add(module)
        names.update(f"{module}.{alias.name}" for alias in node.names if alias.name != "*")
    files = set()
    for name in names:
        parts = name.split(".")
        if parts[0] != root:
            continue
        for end in range(1, len(parts) + 1):  # the module and every package above it
            if (file := _module_file(".".join(parts[:end]))) is not None:
                files.add(file)
    return frozenset(files)


def _package_of(file: Path) -> str:
    parts = file.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1])  # x/__init__.py and x/y.py both belong to package x


def code_files(script) -> list[Path]:
    """The library modules a workflow script runs: those it imports, and those they import in
    turn (found statically, following absolute and relative imports and subpackages)."""
    todo, seen = list(_imported_files(Path(script).resolve(), None)), set()
    while todo:
        file = todo.pop()
        if file not in seen:
            seen.add(file)
            todo.extend(_imported_files(file, _package_of(file)))
    return sorted(seen)


def code_sha256(script) -> str:
    """sha256 of a workflow script's text and of every library module it runs (:func:`code_files`),
    each named by its path in the package, so the same code hashes the same in any checkout and
    whatever the files' times. The workflow passes it to each rule as a param: editing a module
    reruns the rules whose scripts import it, and only those."""
    digest = hashlib.sha256()
    entries = [("<script>", Path(script))] + [(f.relative_to(PACKAGE_DIR.parent).as_posix(), f) for f in code_files(script)]
    for label, file in entries:
        content = file.read_bytes()
        digest.update(f"{label}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()


def provenance(config: dict, **extra) -> str:
    """JSON provenance record: the config that made a store, package versions, the lock file's
    hash, and ``extra``."""
    record = {"config": config, "versions": package_versions(), "lock_sha256": lock_sha256(), **extra}
    return json.dumps(record, sort_keys=True, default=str)


def file_checksum(paths, algorithm: str = "sha256") -> str:
    """One checksum over the contents of ``paths`` in the given order."""
    digest = hashlib.new(algorithm)
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return f"{algorithm}:{digest.hexdigest()}"


def open_store(path, chunks="zarr") -> xr.Dataset:
    """Open a store written by critscale (lazy, Dask-backed in the store's Zarr chunks; with
    ``chunks=None`` lazy without Dask, for a reader that chunks it itself)."""
    with quiet_consolidation():
        return xr.open_zarr(str(path), consolidated=True, chunks={} if chunks == "zarr" else chunks)


def portable_strings(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with fixed-width text variables as Python strings: Zarr then stores them as
    variable-length UTF-8, which other Zarr libraries read (its fixed-width UTF-32 type has no
    Zarr 3 specification)."""
    text = [name for name, var in ds.variables.items() if var.dtype.kind == "U"]
    return ds.assign({name: ds[name].astype(object) for name in text}) if text else ds


def write_dataset(ds: xr.Dataset, path, *, compute: bool = True, encoding: dict | None = None,
                  late_attrs: Callable[[], dict] = dict):
    """Write ``ds`` to a fresh Zarr store at ``path`` (any existing store there is replaced).

    With ``compute=False`` returns the Dask delayed object of the write, so the caller chooses the
    scheduler; the metadata is meanwhile written by a thread of its own (:func:`_lazy_zarr_write`).
    ``late_attrs`` returns attributes added to ``ds``'s, last (by default none): with
    ``compute=False`` that thread calls it, so what they wait for (a checksum being hashed) no longer holds up the computation.
    """
    ds, encoding = _prepared(ds, path, encoding)
    if compute:
        ds = ds.assign_attrs(late_attrs())
        with quiet_consolidation():
            write = ds.to_zarr(str(path), mode="w", consolidated=True, encoding=encoding, zarr_format=3)
        write_manifest(path)
        return write
    write = _lazy_zarr_write(ds, Path(path), encoding, late_attrs)
    # The store is complete only once the delayed write has run: the manifest comes after it.
    return dask.delayed(_manifest_after)(write, path)


def _prepared(ds: xr.Dataset, path, encoding: dict | None) -> tuple[xr.Dataset, dict]:
    """``ds`` and its encoding as every store is written (numeric variables compressed with
    :data:`COMPRESSORS`, portable strings), with any store at ``path`` removed."""
    if Path(path).exists():
        shutil.rmtree(path)
    encoding = {name: dict(spec) for name, spec in (encoding or {}).items()}
    for name, var in ds.data_vars.items():
        if var.dtype.kind in "biuf":
            encoding.setdefault(name, {}).setdefault("compressors", COMPRESSORS)
    return portable_strings(ds), encoding


class _StoreTarget:
    """A Zarr array of a store whose metadata a thread is still writing, as the target of a Dask
    store: a write waits for the metadata (and raises its error, if any).  Named by its path for
    Dask, which would otherwise tokenize a ``zarr.Array`` (a dataclass) by pickling, milliseconds
    per variable; pickled (process and distributed schedulers) once the metadata is written."""

    __slots__ = ("group", "path", "name", "array")

    def __init__(self, group: Future | None, path: Path, name: str, array: zarr.Array | None = None):
        self.group, self.path, self.name, self.array = group, path, name, array

    def opened(self) -> zarr.Array:
        if self.array is None:
            self.array = self.group.result()[self.name]
        return self.array

    def __setitem__(self, key, value):
        self.opened()[key] = value

    def __dask_tokenize__(self):
        return ("zarr-target", f"{self.path.resolve()}/{self.name}")

    def __reduce__(self):
        return _StoreTarget, (None, self.path, self.name, self.opened())


def _lazy_zarr_write(ds: xr.Dataset, path: Path, encoding: dict, late_attrs: Callable[[], dict]):
    """``ds.to_zarr(path, mode="w", consolidated=True, compute=False, zarr_format=3)``, the same
    files byte for byte, with the metadata written by a thread (:func:`_write_metadata`) while the
    caller computes: Zarr takes about 2 ms of Python to create an array and write its attributes,
    0.07 s of a statistics store's 34 arrays, which the threads computing its rows then overlap.
    Returns the delayed writes of the Dask-backed variables, each of which waits for the metadata."""
    lazy = [name for name, var in ds.variables.items() if dask.is_dask_collection(var.data)]
    metadata = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zarr-metadata")
    group = metadata.submit(_write_metadata, ds, path, encoding, lazy, late_attrs)
    metadata.shutdown(wait=False)  # its thread ends with the metadata
    if not lazy:
        group.result()
    targets = [_StoreTarget(group, path, name) for name in lazy]
    return dask.array.store([ds[name].data for name in lazy], targets, lock=False, compute=False)


def _write_metadata(ds: xr.Dataset, path: Path, encoding: dict, lazy: list[str],
                    late_attrs: Callable[[], dict] = dict) -> zarr.Group:
    """Write the metadata and the in-memory variables of ``ds`` at ``path`` as ``to_zarr`` writes
    them, with the attributes of ``late_attrs`` added last, made by xarray's own writer in a Zarr
    memory store and then written as files in one go (through Zarr's asynchronous local store
    xarray creates each array and then writes its attributes, 3 ms an array), and return the
    store's group.  The Dask-backed variables ``lazy`` are left to the caller's write; xarray must
    leave them as they are (no encoding of their values), which is checked."""
    from xarray.backends.common import ArrayWriter
    from xarray.backends.writers import dump_to_store, get_writable_zarr_store

    ds = ds.assign_attrs(late_attrs())
    documents = {}
    writer = ArrayWriter()
    with quiet_consolidation():
        store = get_writable_zarr_store(zarr.storage.MemoryStore(documents), mode="w", consolidated=True, zarr_format=3)
        dump_to_store(ds, store, writer, encoding=encoding)  # consolidates the metadata too
    deferred = {target.path: (source.name, region) for source, target, region in zip(writer.sources, writer.targets, writer.regions)}
    whole = {name: (ds[name].data.name, (slice(None),) * ds[name].ndim) for name in lazy}
    if changed := sorted(name for name in deferred.keys() | whole.keys() if deferred.get(name) != whole.get(name)):
        raise RuntimeError(f"xarray's Zarr writer encodes the values of {changed}: this write needs them as they are")
    for key, document in documents.items():
        file = path / key
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(document.to_bytes())
    return zarr.open_group(str(path), mode="r+", use_consolidated=True)


def _manifest_after(_written, path) -> None:
    write_manifest(path)


def _consolidate_metadata(path) -> None:
    with quiet_consolidation():
        zarr.consolidate_metadata(str(path))


def consolidate(path) -> None:
    """Finish a store written region by region: refresh its consolidated metadata and its
    checksum manifest."""
    Path(path, MANIFEST).unlink(missing_ok=True)  # not a Zarr node: consolidation must not see it
    _consolidate_metadata(path)
    write_manifest(path)


def tree_checksums(filesystem, root: str, threads: int = 1) -> dict[str, str]:
    """sha256 (hex) of every file under ``root`` of an fsspec filesystem but
    :data:`NOT_CHECKSUMMED`, by its key relative to ``root``, hashed by ``threads`` threads
    (sha256 releases the GIL)."""
    root = root.rstrip("/")
    keys = {file: file[len(root) :].lstrip("/") for file in sorted(filesystem.find(root))}
    files = [file for file, key in keys.items() if key not in NOT_CHECKSUMMED]
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        digests = pool.map(lambda file: hashlib.sha256(filesystem.cat_file(file)).hexdigest(), files)
        return {keys[file]: digest for file, digest in zip(files, digests)}


def write_manifest(path) -> None:
    """Record the checksum of every file of the finished local store at ``path``: in
    :data:`MANIFEST_THREADS` threads, because the manifest is the stage's last, serial step
    (a SmolLM2 statistics store, 527 MB: 0.23 s against 0.38 s in one thread)."""
    checksums = tree_checksums(fsspec.filesystem("file"), str(Path(path).resolve()), threads=MANIFEST_THREADS)
    Path(path, MANIFEST).write_text(json.dumps({"sha256": checksums}, indent=0, sort_keys=True))


def table_manifest(path) -> Path:
    """The checksum manifest beside a single-file result such as a table (``<name>.`` + :data:`MANIFEST`):
    a sidecar, since tables of one folder are written by concurrent jobs."""
    path = Path(path)
    return path.with_name(f"{path.name}.{MANIFEST}")


def write_table(table, path) -> None:
    """Write a result table as CSV with its checksum manifest beside it (critscale-verify checks it)."""
    path = Path(path)
    table.to_csv(path, index=False)
    checksum = hashlib.sha256(path.read_bytes()).hexdigest()
    table_manifest(path).write_text(json.dumps({"sha256": {path.name: checksum}}, indent=0))


def create_scores_store(
    path,
    *,
    units: list[str],
    n_ladder: list[int],
    sequence: np.ndarray,
    query: np.ndarray | None = None,
    unit_coords: dict[str, np.ndarray] | None = None,
    row_coords: dict[str, np.ndarray] | None = None,
    attrs: dict | None = None,
    dtype: str = "float32",
    row_chunk: int = 64,
    key_chunk: int = 4096,
) -> None:
    """Create an empty score store (all NaN) with the canonical layout, ready for
    :func:`write_scores`.  Sources that produce rows in pieces (model extraction) stream into it
    so memory stays bounded by one piece.
    """
    import dask.array as da

    n_ladder = [int(n) for n in n_ladder]
    if sorted(set(n_ladder)) != n_ladder or n_ladder[0] < 1:
        raise ValueError(f"n_ladder must be strictly increasing positive integers, got {n_ladder}")
    sequence = np.asarray(sequence)
    rows = len(sequence)
    query = np.zeros(rows, dtype=np.int64) if query is None else np.asarray(query)
    shape = (len(units), len(n_ladder), rows, n_ladder[-1])
    chunks = (1, 1, min(row_chunk, rows), min(key_chunk, n_ladder[-1]))
    empty = da.full(shape, np.nan, dtype=dtype, chunks=chunks)
    coords = {
        "unit": ("unit", np.asarray(units, dtype=object)),
        "n": ("n", np.asarray(n_ladder, dtype=np.int64)),
        "row": ("row", np.arange(rows)),
        "key": ("key", np.arange(n_ladder[-1])),
        "sequence": ("row", sequence),
        "query": ("row", query),
    }
    for name, values in (unit_coords or {}).items():
        coords[name] = ("unit", np.asarray(values))
    for name, values in (row_coords or {}).items():
        coords[name] = ("row", np.asarray(values))
    ds = xr.Dataset({"scores": (SCORE_DIMS, empty)}, coords=coords, attrs=attrs or {})
    # Metadata and coordinates only; the all-NaN chunks are never written.  No manifest yet: the
    # store is complete only after write_scores and a final consolidate().
    ds, encoding = _prepared(ds, path, {"scores": {"chunks": chunks}})
    _write_metadata(ds, Path(path), encoding, lazy=["scores"])
    _consolidate_metadata(path)


def write_scores(path, values: np.ndarray, *, unit, n_index: int, rows) -> None:
    """Write rows of one context length into a store made by :func:`create_scores_store`.

    ``values`` has shape ``(units, rows, keys)`` with ``keys <= n`` (shorter rows are padded
    with NaN).  ``unit`` and ``rows`` are slices (or ints) into the store's dimensions.
    """
    array = zarr.open_array(str(Path(path) / "scores"), mode="r+")
    values = np.asarray(values, dtype=array.dtype)
    padded = np.full(values.shape[:-1] + (array.shape[-1],), np.nan, dtype=array.dtype)
    padded[..., : values.shape[-1]] = values
    array[unit, n_index, rows, :] = padded


def store_checksum(path, variable: str = "scores") -> str:
    """Checksum of the stored chunks of one variable (its data as written, not its metadata)."""
    root = Path(path) / variable
    chunks = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "zarr.json")
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(str(chunk.relative_to(root)).encode())
        digest.update(chunk.read_bytes())
    return f"sha256:{digest.hexdigest()}"
