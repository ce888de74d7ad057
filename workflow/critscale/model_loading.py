"""Models from their sources (:mod:`critscale.model_sources`): GGUF conversion, the check that a
model's attention can be captured, the checks that run before any job, and loading on a device
and dtype.

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
import inspect
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from .model_sources import ModelSpecError, UnsupportedArchitectureError, gguf_header, gguf_model_type, model_source
from .storage import file_checksum

DEVICES = ("auto", "cpu", "cuda", "mps")
MODEL_DTYPES = ("float32", "float64", "bfloat16", "float16")
REGISTRY_LOOKUP = "ALL_ATTENTION_FUNCTIONS"
# keyword arguments that add terms to the softmax beyond the query-key logits
EXTRA_LOGIT_ARGUMENTS = ("s_aux", "sinks", "position_bias")


# --------------------------------------------------------------------------------------------
# GGUF conversion
# --------------------------------------------------------------------------------------------

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
    source = model_source(spec)
    config, positions = source.header()
    layout = config_attention_layout(config, source.trust_remote_code)
    if positions is not None and int(max_n) > positions:
        raise ModelSpecError(f"context length {max_n} exceeds the model's {positions} positions; lower the n ladder for this model")
    return layout


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
    source = model_source(spec)
    config = source.config()
    layout = config_attention_layout(config, source.trust_remote_code)
    kwargs = {"dtype": getattr(torch, dtype), "attn_implementation": "eager", "trust_remote_code": source.trust_remote_code}
    info = {"dtype": dtype, "device": device, "architecture": config.model_type, "direction": layout.direction}
    where = source.pretrained(kwargs, info)
    tok_kwargs = {k: kwargs[k] for k in ("gguf_file", "revision", "trust_remote_code") if k in kwargs}
    tokenizer = AutoTokenizer.from_pretrained(where, **tok_kwargs)
    model = (AutoModelForCausalLM if causal_lm else AutoModel).from_pretrained(where, **kwargs).to(device)
    model.eval()
    info["tokenizer"] = f"{type(tokenizer).__name__}:{getattr(tokenizer, 'name_or_path', '')}"
    return model, tokenizer, info
