"""Run a model with a temperature schedule: every query row's logits multiplied by its head's
``beta(n)``, where ``n = position + 1`` is the number of keys a causal query sees.

How
---
:func:`tempered` registers an attention function in transformers' ``AttentionInterface`` (and the
matching mask function in ``AttentionMaskInterface``, so causal and sliding-window masks are built
as for the base implementation) and switches the model to it.  Each attention layer hands it the
query states after RoPE and QK-norm; the function multiplies query head ``h`` at position ``p`` by
``beta_layer,h(p + 1)`` and calls the model's own attention (transformers' SDPA, or the modeling
file's eager function).  Scaling the query scales that head's logits ``q.k * scaling`` by exactly
``beta``; keys, values and the cache are untouched, so grouped KV heads, sliding windows, QK-norm
and a KV cache need no special case.  Positions are the ``position_ids`` the model hands every
layer (with a cache they continue from the cached length), so a prefix forward followed by its
continuation equals one forward.

Where a schedule is 1 for every query of a call, the query is passed on untouched, so positions
where a gated schedule is 1 are bit-identical to the untempered model.

Every schedule, the measured per-head ones and the published rules alike, is a :class:`Schedule`:
``factors(layer, n)`` gives ``beta`` per head (or one column for all heads).  :func:`check_schedule`
refuses a schedule that does not fit the model before any forward, naming the field.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from . import prescriptions
from .capture import model_eager_attention, attention_implementation, layer_modules
from .model_sources import max_positions

ATTN_PREFIX = "critscale_tempered_"
BASES = ("sdpa", "eager")
# the largest n at which a schedule's factors are checked to be finite and positive
CHECK_LENGTHS = 2**20


class ScheduleError(ValueError):
    """A schedule that does not fit the model, or whose factors are not finite and positive."""


class Schedule(ABC):
    """``beta`` per layer, head and number of visible keys ``n``."""

    name: str
    training_length: int

    @abstractmethod
    def factors(self, layer: int, n: np.ndarray) -> np.ndarray:
        """``beta`` of shape ``(heads, *n.shape)``, or ``(1, *n.shape)`` when every head shares it."""

    def shape(self) -> tuple[int | None, int | None]:
        """``(layers, heads)`` the schedule is written for; ``None`` where any number fits."""
        return None, None

    def identity_through(self) -> int:
        """The largest ``n`` up to which every factor is exactly 1 (0 where none is)."""
        return self.training_length

    def for_layers(self, layers: int) -> "Schedule":
        """The schedule for a model of ``layers`` layers (a rule written for one layer applies to all)."""
        return self


@dataclass(frozen=True)
class LogPowerSchedule(Schedule):
    """``beta(n) = (log n / log L)^xi`` per head: ``Lambda(n) / Lambda(L)`` under the free law
    ``Lambda_n = c (log n)^xi``.  ``gated``: 1 for ``n <= L`` (Qwen's rule is ``xi = 1`` gated);
    ungated with ``xi = 1`` it is SSMax's ``s log n`` with ``s = 1 / log L``."""

    name: str
    exponents: np.ndarray  # (layers, heads); 0 = untempered
    training_length: int
    gated: bool = True
    notes: dict = field(default_factory=dict, compare=False)

    def factors(self, layer, n):
        # one key (n = 1) has probability 1 at any beta: log n is taken at n >= 2 to stay finite
        n = np.maximum(np.asarray(n, dtype=np.float64), 2.0)
        log_ratio = np.log(np.log(n) / math.log(self.training_length))
        if self.gated:
            log_ratio = np.where(n > self.training_length, log_ratio, 0.0)
        exponents = np.asarray(self.exponents[layer], dtype=np.float64)
        beta = np.exp(exponents.reshape((-1,) + (1,) * log_ratio.ndim) * log_ratio)
        return np.where(log_ratio == 0.0, 1.0, beta)

    def shape(self):
        return tuple(np.shape(self.exponents))

    def identity_through(self):
        return self.training_length if self.gated else 0

    def for_layers(self, layers):
        if self.shape() != (1, 1) or layers == 1:
            return self
        return LogPowerSchedule(self.name, np.ones((layers, 1)) * self.exponents, self.training_length, self.gated,
                                self.notes)


@dataclass(frozen=True)
class PositionRule(Schedule):
    """A published rule: one factor for every head, a function of ``n`` alone."""

    name: str
    rule: object  # n (float array) -> beta
    training_length: int
    identity_until: int = 0

    def factors(self, layer, n):
        n = np.asarray(n, dtype=np.float64)
        return np.asarray(self.rule(n), dtype=np.float64)[None]

    def identity_through(self):
        return self.identity_until


def published_rules(training_length: int, llama_floor_scale: int | None = None) -> dict[str, Schedule]:
    """The published rules as schedules, with ``L = training_length``: Qwen's gated ``log_L n``,
    YaRN's temperature ``(0.1 ln(n / L) + 1)^2``, Llama 4's step rule (``floor_scale`` = ``L``
    unless given) and SSMax's ``log n / log L``, ungated."""
    L = int(training_length)
    floor_scale = int(llama_floor_scale or L)
    return {
        "qwen_logn": LogPowerSchedule("qwen_logn", np.ones((1, 1)), L, gated=True),
        "yarn": PositionRule("yarn", lambda n: prescriptions.yarn(n, L), L, identity_until=L),
        "llama4": PositionRule("llama4", lambda n: prescriptions.llama4(n, floor_scale), L,
                               identity_until=floor_scale - 1),
        "ssmax": LogPowerSchedule("ssmax", np.ones((1, 1)), L, gated=False),
    }


def check_schedule(schedule: Schedule, model) -> Schedule:
    """The schedule made to fit ``model``'s layers, or :class:`ScheduleError` naming the field."""
    config = getattr(model.config, "get_text_config", lambda: model.config)()
    layers, heads = config.num_hidden_layers, config.num_attention_heads
    schedule = schedule.for_layers(layers)
    want_layers, want_heads = schedule.shape()
    where = f"schedule {schedule.name!r}"
    if want_layers is not None and want_layers != layers:
        raise ScheduleError(f"{where}: 'layers' has {want_layers} entries, the model has {layers} layers")
    if want_heads is not None and want_heads not in (1, heads):
        raise ScheduleError(f"{where}: 'heads' has {want_heads} entries per layer, the model has {heads} heads")
    positions = max_positions(config)
    L = schedule.training_length
    if not (isinstance(L, (int, np.integer)) and L >= 2):
        raise ScheduleError(f"{where}: 'training_length' must be an integer >= 2, got {L!r}")
    if positions is not None and L > positions:
        raise ScheduleError(f"{where}: 'training_length' {L} is beyond the model's {positions} positions")
    lengths = np.unique(np.geomspace(1, CHECK_LENGTHS, 200).round())
    for layer in range(layers):
        beta = schedule.factors(layer, lengths)
        bad = ~(np.isfinite(beta) & (beta > 0))
        if bad.any():
            head, at = np.argwhere(bad)[0]
            raise ScheduleError(f"{where}: factor of layer {layer} head {head} at n = {int(lengths[at])} is "
                                f"{beta[head, at]!r}; factors must be finite and positive")
    return schedule


_ACTIVE: list = []  # stack of active temperings (innermost last)


class _Tempering:
    def __init__(self, schedule: Schedule, modules, base: str, probe=None):
        self.schedule = schedule
        self.layer_of = {id(module): layer for layer, module in enumerate(modules)}
        self.base = base
        self.probe = probe


def identity(training_length: int) -> Schedule:
    """The untempered schedule: every factor 1 (for any number of layers and heads)."""
    return LogPowerSchedule("none", np.zeros((1, 1)), int(training_length))


def query_positions(query, key, kwargs):
    """``(batch, query)`` positions: the model's ``position_ids``, else the last keys' positions."""
    import torch

    position_ids = kwargs.get("position_ids")
    if position_ids is not None:
        return position_ids
    q_len, k_len = query.shape[2], key.shape[2]
    return (torch.arange(q_len, device=query.device) + (k_len - q_len))[None]


def tempered_attention_forward(module, query, key, value, attention_mask, **kwargs):
    """The model's own attention with each query row scaled by its head's ``beta(position + 1)``."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    tempering = _ACTIVE[-1]
    layer = tempering.layer_of[id(module)]
    n = query_positions(query, key, kwargs).detach().cpu().numpy() + 1
    beta = tempering.schedule.factors(layer, n)  # (heads | 1, batch, query)
    if not np.all(beta == 1.0):
        factor = torch.as_tensor(np.moveaxis(beta, 0, 1), dtype=query.dtype, device=query.device)
        query = query * factor[..., None]
    if tempering.probe is not None:
        tempering.probe(layer, module, query, key, value, attention_mask, kwargs)
    if tempering.base == "sdpa":
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    return model_eager_attention(module)(module, query, key, value, attention_mask, **kwargs)


def register_tempering() -> None:
    """Register the tempered attention (one name per base) and its base's mask function."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask

    for base, mask in (("sdpa", sdpa_mask), ("eager", eager_mask)):
        AttentionInterface.register(ATTN_PREFIX + base, tempered_attention_forward)
        AttentionMaskInterface.register(ATTN_PREFIX + base, mask)


@contextmanager
def tempered(model, schedule: Schedule, *, base: str | None = None, probe=None):
    """Run ``model`` (any registry-routed transformers model) with ``schedule`` inside the block.

    ``base`` is the attention the tempered query continues with (``sdpa`` or ``eager``; default:
    the model's current one).  ``probe(layer, module, query, key, value, mask, kwargs)``, if given, sees
    every layer's tempered query states (e.g. to measure attention entropy)."""
    base = base or ("eager" if model.config._attn_implementation == "eager" else "sdpa")
    if base not in BASES:
        raise ValueError(f"base must be one of {BASES}, got {base!r}")
    schedule = check_schedule(schedule, model)
    register_tempering()
    _ACTIVE.append(_Tempering(schedule, layer_modules(model), base, probe))
    try:
        with attention_implementation(model, ATTN_PREFIX + base):
            yield model
    finally:
        _ACTIVE.pop()
