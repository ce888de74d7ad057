"""Exact pre-softmax attention rows through transformers' attention-function registry, and the
self-check that they are what the model feeds its softmax.

How the logits are captured
---------------------------
:func:`capturing` registers an attention function ``"critscale"`` in transformers' registry
(``AttentionInterface``) and the eager mask function under the same name in
``AttentionMaskInterface`` (without it transformers would build *no* mask for an unknown
implementation and causal masking would silently disappear), and switches the model to it.  Every
attention layer then hands the function the query/key/value states it really uses: after RoPE,
QK-norm, any built-in length scaling, with the module's own ``scaling`` and ``softcap`` and the mask
carrying causal/sliding-window/padding structure (and ALiBi-style additive biases).  The function
recomputes the wanted query rows in float32 from those states (grouped KV heads expanded, soft-capping
applied, mask bias added; keys the query cannot see become NaN: they are not competitors), hands
them to the active capture, and continues the forward with the model's own eager attention
(``mode="eager"``/``"reference"``) or transformers' SDPA (``mode="sdpa"``), so the forward pass is
the model's own.

Self-check
----------
:func:`self_check` runs, on the rows :func:`check_positions` names, the model's eager forward with
the capture inside it (``mode="reference"``) and measures, on log-probabilities (logits minus their
log-sum-exp), two things:

* capture exactness, like with like: the captured rows against the probabilities the model's own
  eager attention computes *in the same forward* from the same hidden states: rounding level;
* drift: the rows the study keeps (captured in the SDPA-continued forward) against the same rows of
  the eager forward: kernel differences accumulated through the layers.

Both are ``max |log p - log p_ref| / max(1, max |logit|)`` per row (:func:`log_prob_error`): a
logit error is an absolute error, so it is measured relative to the row's logit scale, never to
``p``; a 1e-3 error on a key with ``p = 1e-10`` is caught, which an absolute check of ``p`` misses.
Tolerances follow the model's dtype (:data:`CAPTURE_TOL`, :data:`DRIFT_TOL`).
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import contextmanager

from .model_loading import EXTRA_LOGIT_ARGUMENTS, UnsupportedArchitectureError, attention_layout

ATTN_NAME = "critscale"
MODES = ("sdpa", "eager", "reference")
# like with like: rounding of the logits (u * |logit|) and, below float32, of the model's stored probabilities
CAPTURE_TOL = {"float64": 1e-12, "float32": 1e-5, "float16": 4e-3, "bfloat16": 3e-2}
# SDPA-continued vs eager forward: rounding differences accumulated through the layers
# queries per eager call of the self-check's reference forward: bounds its weights to
# heads x QUERY_BLOCK x n (SmolLM2 at n = 8192: 0.15 GB instead of 2.4 GB per layer)
QUERY_BLOCK = 512
DRIFT_TOL = {"float64": 1e-9, "float32": 1e-3, "float16": 5e-2, "bfloat16": 2e-1}


class ExactnessError(RuntimeError):
    """Captured rows do not reproduce the model's own eager attention probabilities."""


class DriftError(ExactnessError):
    """The SDPA-continued rows drift from the eager forward's rows beyond the dtype's tolerance."""


_ACTIVE: list = []  # stack of active captures (innermost last)


def _repeat_kv(states, groups: int):
    if groups == 1:
        return states
    b, h, s, d = states.shape
    return states[:, :, None, :, :].expand(b, h, groups, s, d).reshape(b, h * groups, s, d)


def model_eager_attention(module):
    """The eager attention function of the module's own modeling file (checked by attention_layout)."""
    return sys.modules[type(module).__module__].eager_attention_forward


def critscale_attention_forward(module, query, key, value, attention_mask, **kwargs):
    """The model's own attention (eager, or SDPA without soft-capping) that also hands the wanted
    query rows to the active capture."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    extra = [name for name in EXTRA_LOGIT_ARGUMENTS if kwargs.get(name) is not None]
    if extra:
        raise UnsupportedArchitectureError(f"{type(module).__name__} passes {extra} to its attention; not supported")
    capture = _ACTIVE[-1] if _ACTIVE else None
    mode = capture.mode if capture is not None else "eager"
    picked = None  # the reference forward's weights of the captured rows only (long windows)
    if mode == "sdpa" and kwargs.get("softcap") is None:
        output, weights = sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    elif mode == "reference" and query.shape[2] > QUERY_BLOCK:
        eager_bias = _additive_mask(module, query, key, attention_mask)
        output, picked = _eager_by_query_blocks(module, query, key, value, eager_bias, capture.positions, **kwargs)
        weights = None
    else:
        eager_bias = _additive_mask(module, query, key, attention_mask)
        output, weights = model_eager_attention(module)(module, query, key, value, eager_bias, **kwargs)
    if capture is not None:
        capture.record(module, query, key, attention_mask, kwargs, weights, picked)
    return output, weights


def _eager_by_query_blocks(module, query, key, value, bias, positions, **kwargs):
    """The model's eager attention on :data:`QUERY_BLOCK` queries at a time, so the reference
    forward of a long window never holds a whole ``heads x n x n`` weight matrix; returns the
    output and the weights of the rows at ``positions`` ``(B, H, P, K)``."""
    import torch

    eager = model_eager_attention(module)
    outputs, picked = [], {}
    wanted = [int(p) for p in positions.tolist()]
    for start in range(0, query.shape[2], QUERY_BLOCK):
        stop = start + QUERY_BLOCK
        output, weights = eager(module, query[:, :, start:stop], key, value, bias[:, :, start:stop], **kwargs)
        outputs.append(output)
        # a copy: a view of one row would keep the block's whole ``heads x block x n`` weights alive
        picked.update({p: weights[:, :, p - start].clone() for p in wanted if start <= p < stop})
        del output, weights
    return torch.cat(outputs, 1), torch.stack([picked[p] for p in wanted], 2)


def _visible_keys(module, attention_mask, query_length: int, key_length: int, device):
    """Boolean ``(..., query, key)`` visibility from the mask the model built; ``None`` (SDPA's
    causal fast path needs no mask) means causal for a causal module and all keys otherwise."""
    import torch

    if attention_mask is None:
        if not getattr(module, "is_causal", False):
            return torch.ones((1, 1, query_length, key_length), dtype=torch.bool, device=device)
        keys = torch.arange(key_length, device=device)
        causal = keys[None, :] <= torch.arange(query_length, device=device)[:, None] + (key_length - query_length)
        return causal[None, None]
    mask = attention_mask[..., :key_length]
    return mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min / 2


def _additive_mask(module, query, key, attention_mask):
    """The float mask an eager attention function adds to its logits (SDPA's mask is boolean or None)."""
    import torch

    if attention_mask is not None and attention_mask.dtype != torch.bool:
        return attention_mask
    visible = _visible_keys(module, attention_mask, query.shape[2], key.shape[2], query.device)
    blocked = torch.tensor(torch.finfo(query.dtype).min, dtype=query.dtype, device=query.device)
    return torch.where(visible, torch.zeros((), dtype=query.dtype, device=query.device), blocked)


def _mask(*args, **kwargs):
    """SDPA's mask (``None`` where its causal kernel needs none, no ``n x n`` tensor) while a capture
    continues with SDPA; the eager float mask otherwise (the self-check's reference forward)."""
    from transformers.masking_utils import eager_mask, sdpa_mask

    capture = _ACTIVE[-1] if _ACTIVE else None
    if capture is not None and capture.mode == "sdpa":
        return sdpa_mask(*args, **kwargs)
    return eager_mask(*args, **kwargs)


def register_attention() -> None:
    """Register ``"critscale"`` in the attention-function and the mask-function registries."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTN_NAME, critscale_attention_forward)
    AttentionMaskInterface.register(ATTN_NAME, _mask)


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


def layer_modules(model) -> list:
    """The model's attention modules in layer order (checked by :func:`attention_layout`)."""
    return [model.get_submodule(name) for name in attention_layout(model).modules]


class _Capture:
    """Collects float32 logits of the wanted query rows of every selected layer during one forward.

    ``sink(layer, rows, probabilities)`` receives rows ``(B, H, P, K)`` (NaN = masked key) and, in
    ``mode="reference"``, the model's own eager probabilities of the same rows (else None)."""

    def __init__(self, modules, positions, sink, *, layers=None, heads=None, mode="sdpa"):
        import torch

        if mode not in MODES:
            raise ValueError(f"capture mode must be one of {MODES}, got {mode!r}")
        self.layer_of = {id(module): layer for layer, module in enumerate(modules)}
        self.positions = torch.as_tensor(positions, dtype=torch.long)
        self.layers = None if layers is None else {int(layer) for layer in layers}
        self.heads = None if heads is None else torch.as_tensor(heads, dtype=torch.long)
        self.mode = mode
        self.sink = sink
        self.windows = {}  # layer -> the sliding window the layer handed its attention (None: global)
        self.seen = set()

    def _select(self, tensor, positions_dim=2):
        device = tensor.device
        tensor = tensor.index_select(positions_dim, self.positions.to(device)) if positions_dim is not None else tensor
        if self.heads is not None and tensor.shape[1] > 1:
            tensor = tensor.index_select(1, self.heads.to(device))
        return tensor

    def record(self, module, query, key, attention_mask, kwargs, weights, picked_weights=None):
        import torch

        layer = self.layer_of.get(id(module))
        if layer is None:
            raise UnsupportedArchitectureError(f"attention call from unexpected module {type(module).__name__}")
        self.seen.add(layer)
        self.windows[layer] = kwargs.get("sliding_window")
        if self.layers is not None and layer not in self.layers:
            return
        wide = torch.float64 if query.dtype == torch.float64 else torch.float32
        q = self._select(query).to(wide)
        k = self._select(_repeat_kv(key, query.shape[1] // key.shape[1]), None).to(wide)
        scaling = kwargs.get("scaling")
        rows = torch.matmul(q, k.transpose(2, 3)) * (query.size(-1) ** -0.5 if scaling is None else scaling)
        if kwargs.get("softcap") is not None:
            rows = torch.tanh(rows / kwargs["softcap"]) * kwargs["softcap"]
        visible = self._select(_visible_keys(module, attention_mask, query.shape[2], k.shape[2], rows.device))
        if attention_mask is not None and attention_mask.dtype != torch.bool:
            rows = rows + self._select(attention_mask[..., : k.shape[2]]).to(wide)  # e.g. ALiBi-style biases
        rows = torch.where(visible.expand_as(rows), rows, float("nan"))
        if picked_weights is not None:  # already the rows at self.positions
            weights = picked_weights
        probabilities = None
        if self.mode == "reference":
            probabilities = self._select(weights, None if picked_weights is not None else 2).to(wide)
        self.sink(layer, rows, probabilities)


@contextmanager
def capturing(model, positions, sink, *, layers=None, heads=None, mode="sdpa", modules=None):
    """Within the block, forward passes of ``model`` hand ``sink(layer, rows, probabilities)`` the
    rows of query ``positions`` (see :class:`_Capture`).  ``modules`` (from :func:`layer_modules`)
    saves re-reading the model's layout on every call."""
    register_attention()
    capture = _Capture(layer_modules(model) if modules is None else modules, positions, sink, layers=layers, heads=heads, mode=mode)
    with attention_implementation(model, ATTN_NAME):
        _ACTIVE.append(capture)
        try:
            yield capture
        finally:
            _ACTIVE.pop()


def probe_layers(model, inputs=None) -> list:
    """Each layer's sliding window as the model hands it to its attention (None = global), read
    from a forward over 4 tokens (or ``inputs``).  Raises when a layer never reaches the registry."""
    import torch

    modules = layer_modules(model)
    device = next(model.parameters()).device
    inputs = {"input_ids": torch.zeros((1, 4), dtype=torch.long, device=device)} if inputs is None else inputs
    with capturing(model, [0], lambda *_: None, mode="eager", modules=modules) as capture, torch.inference_mode():
        model(**inputs)
    _require_all_layers(capture, len(modules), model)
    return [capture.windows[layer] for layer in range(len(modules))]


def _require_all_layers(capture, n_layers: int, model):
    if len(capture.seen) != n_layers:
        missing = sorted(set(range(n_layers)) - capture.seen)
        raise UnsupportedArchitectureError(
            f"model type {model.config.model_type!r}: attention of layers {missing} bypassed the attention registry"
        )


# --------------------------------------------------------------------------------------------
# the self-check
# --------------------------------------------------------------------------------------------


def log_prob_error(logits, log_reference):
    """``max |log_softmax(logits) - log_reference| / max(1, max |logit|)`` over rows and visible keys.

    ``logits`` (``..., K``; NaN = masked key), ``log_reference`` (``-inf`` = masked or underflowed
    to 0).  A key the capture masks but the reference gives weight, or one the reference underflows
    (to 0 or a subnormal, whose few significant bits say nothing about the logit) while the capture
    gives it a normal probability, makes the error infinite."""
    import torch

    visible = torch.isfinite(logits)
    log_p = torch.log_softmax(torch.nan_to_num(logits, nan=-math.inf), dim=-1)
    present = torch.isfinite(log_reference)
    if (present & ~visible).any():
        return math.inf
    # A reference probability below the smallest normal float32 (0 or subnormal) has lost its
    # significant bits: such a key is only required to be as small in the capture.
    tiny = math.log(torch.finfo(torch.float32).tiny)
    normal = log_reference >= tiny
    if (visible & ~normal & (log_p > tiny + 2.0)).any():
        return math.inf
    both = visible & normal
    scale = torch.where(visible, logits.abs(), 0.0).amax(-1, keepdim=True).clamp(min=1.0)
    error = torch.where(both, (log_p - log_reference).abs() / scale, 0.0)
    return float(error.max()) if error.numel() else 0.0


def check_positions(length: int, n_ladder, causal: bool, first_window: bool) -> list:
    """Query positions of a forward over ``length`` tokens that the self-check covers.

    The first window is checked at one row per ``n`` of the ladder, the longest included (causal:
    all from one forward; bidirectional: the row ``n - 1`` of the forward of each ``n``); every
    other window at its first row, the row of the shortest ``n`` (its forward is cheap)."""
    n_ladder = sorted(int(n) for n in n_ladder)
    if causal:
        return [n - 1 for n in n_ladder if n <= length] if first_window else [n_ladder[0] - 1]
    return [length - 1] if first_window or length == n_ladder[0] else []


def self_check(model, inputs, study_rows: dict, positions, checked, *, causal: bool, heads=None, modules=None) -> dict:
    """Check the rows a study forward captured against the model's own eager forward.

    ``study_rows``: layer -> ``(B, H, P, K)`` rows captured at query ``positions`` of a forward
    over ``inputs`` (token ids, or a dict of model inputs such as ``pixel_values``; ``heads``
    selected); ``checked``: the positions to check (see :func:`check_positions`).  Runs one eager
    forward (over the prefix up to the last checked position when ``causal``) with the capture
    inside it.  Returns ``{"capture_error",
    "drift_error", "capture_tol", "drift_tol", "rows", "seconds"}``; raises
    :class:`ExactnessError` (capture) or :class:`DriftError` (drift) beyond the dtype's tolerance."""
    import torch

    t0 = time.perf_counter()
    checked = sorted(int(p) for p in checked)
    if not checked:
        return {"capture_error": 0.0, "drift_error": 0.0, "rows": 0, "seconds": 0.0}
    modules = layer_modules(model) if modules is None else modules
    if not isinstance(inputs, dict):
        inputs = {"input_ids": inputs[:, : checked[-1] + 1] if causal else inputs}
    elif causal:
        raise ValueError("a causal self-check takes token ids (it runs on their prefix)")
    reference = {}
    with capturing(model, checked, lambda layer, rows, probs: reference.__setitem__(layer, (rows, probs)),
                   layers=list(study_rows), heads=heads, mode="reference", modules=modules), torch.inference_mode():
        model(**inputs)
    if set(reference) != set(study_rows):
        raise ExactnessError(f"self-check saw layers {sorted(reference)} of {sorted(study_rows)}")
    index = torch.as_tensor([list(positions).index(p) for p in checked], dtype=torch.long)
    capture_error = drift_error = 0.0
    for layer, (rows, probabilities) in reference.items():
        capture_error = max(capture_error, log_prob_error(rows, torch.log(probabilities)))
        study = study_rows[layer].index_select(2, index.to(rows.device))[..., : rows.shape[-1]].to(rows.dtype)
        drift_error = max(drift_error, log_prob_error(study, torch.log_softmax(torch.nan_to_num(rows, nan=-math.inf), -1)))
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    result = {"capture_error": capture_error, "drift_error": drift_error, "capture_tol": CAPTURE_TOL[dtype],
              "drift_tol": DRIFT_TOL[dtype], "rows": int(rows.shape[0]) * len(checked), "seconds": time.perf_counter() - t0}
    where = f"model type {model.config.model_type!r}, {dtype}, positions {checked}"
    if not capture_error <= CAPTURE_TOL[dtype]:
        raise ExactnessError(
            f"captured logits differ from the model's own eager probabilities by {capture_error:.3g} > {CAPTURE_TOL[dtype]:g} "
            f"(log-probability error relative to the logit scale; {where}): the capture is not exact"
        )
    if not drift_error <= DRIFT_TOL[dtype]:
        raise DriftError(
            f"rows of the SDPA-continued forward drift from the eager forward by {drift_error:.3g} > {DRIFT_TOL[dtype]:g} "
            f"({where}); set extraction.attention_output: eager"
        )
    return result
