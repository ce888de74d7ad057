"""The intervention: a model run with each temperature schedule (arm) on held-out windows longer
than its training length ``L``, scored by next-token loss per position bucket and by per-head
attention entropy.

Design (the statistics are in :mod:`critscale.intervention_stats`):

* **Arms** (:func:`arms`): ``none``; the measured schedule ``per_head``, ``per_layer``;
  ``dose_matched`` (one global exponent with the per-head schedule's mean ``log beta``);
  ``shuffled`` (the per-head exponents permuted across heads: the control); the published rules
  ``qwen_logn``, ``llama4``, ``yarn`` (YaRN's temperature) and ``ssmax`` (``log n / log L``,
  ungated).  Every arm runs through :func:`critscale.tempering.tempered`.
* **RoPE beyond L** (:func:`rope_handling`) is one setting shared by every arm of a run: ``none``,
  ``linear``, ``dynamic`` or ``yarn`` frequencies with ``attention_factor = 1``, so YaRN's
  temperature is applied by its arm alone, never twice.
* **Shared prefix**: the first ``P`` tokens, where every sharing arm is exactly 1, are run once per
  window and handling with a KV cache; each such arm continues from a copy-free crop of that cache.
  Arms that are not 1 there (SSMax) and dynamic-NTK frequencies (which rescale cached keys'
  frequencies once the length passes ``L``) run the whole window.
* **Loss** (:func:`token_nll`): the LM head runs on chunks of positions, never ``n x vocab`` logits.
  Target ``t + 1`` is predicted by the query at position ``t``, which sees ``n = t + 1`` keys;
  buckets are over that ``n`` (:func:`bucket_edges`: log-spaced, with ``L`` an edge).
* **Entropy**: per head, of the tempered attention row of the last query of every bucket.
"""

from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import schedules
from .capture import _repeat_kv
from .tempering import identity, published_rules, query_positions, tempered

HANDLINGS = ("none", "linear", "dynamic", "yarn")
ARMS = ("none", "per_head", "per_layer", "dose_matched", "shuffled", "qwen_logn", "llama4", "yarn", "ssmax")
PUBLISHED = ("qwen_logn", "llama4", "yarn", "ssmax")


def arms(document: dict, names, *, seed: int) -> dict:
    """The schedules of the arms ``names`` (in :data:`ARMS`) for a schedule document."""
    unknown = sorted(set(names) - set(ARMS))
    if unknown:
        raise ValueError(f"intervention arms {unknown} are not known; allowed: {', '.join(ARMS)}")
    L = document["training_length"]
    per_head = schedules.schedule_variant(document, "per_head")
    layers, heads = document["layers"], document["heads"]
    built = {
        "none": identity(L),
        "per_head": per_head,
        "per_layer": schedules.schedule_variant(document, "per_layer"),
        "dose_matched": schedules.schedule_variant(document, "global"),
        "shuffled": schedules.shuffled_across_heads(per_head, seed),
        **published_rules(L),
    }
    return {name: built[name] for name in names}


def bucket_edges(training_length: int, longest: int, per_octave: int = 2, shortest: int = 64) -> np.ndarray:
    """Log-spaced edges of ``n`` from ``shortest`` to ``longest``, ``L`` among them; bucket ``i``
    holds ``edges[i] < n <= edges[i + 1]`` (the first also holds every ``n <= edges[0]``)."""
    L = int(training_length)
    below = int(math.floor(per_octave * math.log2(L / shortest)))
    above = int(math.ceil(per_octave * math.log2(longest / L)))
    steps = np.arange(-below, above + 1) / per_octave
    edges = np.unique(np.round(L * 2.0**steps).astype(np.int64))
    edges = np.unique(np.clip(np.append(edges, [L, longest]), shortest, longest))
    return edges


@contextmanager
def rope_handling(model, handling: str, training_length: int, length: int):
    """RoPE frequencies for positions beyond ``training_length`` (``L``), for every arm of a run:
    ``none`` leaves the model's RoPE; ``linear``, ``dynamic`` and ``yarn`` (``attention_factor`` 1)
    extend it by ``length / L``.  The rotary modules are rebuilt and restored afterwards."""
    if handling not in HANDLINGS:
        raise ValueError(f"intervention RoPE handling must be one of {HANDLINGS}, got {handling!r}")
    if handling == "none":
        yield model
        return
    config = model.config
    saved = copy.deepcopy(config.rope_parameters)
    saved_positions = config.max_position_embeddings
    factor = max(length / training_length, 1.0)
    config.rope_parameters = {**saved, "rope_type": handling, "factor": factor}
    if handling == "yarn":
        config.rope_parameters.update(original_max_position_embeddings=int(training_length), attention_factor=1.0)
    if handling == "dynamic":  # transformers' dynamic NTK starts rescaling past max_position_embeddings
        config.rope_parameters["original_max_position_embeddings"] = int(training_length)
        config.max_position_embeddings = int(training_length)
    originals = _rebuild_rotary(model)
    try:
        yield model
    finally:
        config.rope_parameters = saved
        config.max_position_embeddings = saved_positions
        for parent, name, module in originals:
            setattr(parent, name, module)


def _rebuild_rotary(model) -> list:
    """Replace every rotary-embedding module by one built from the current config; returns what
    to put back."""
    originals = []
    for name, module in list(model.named_modules()):
        if name.split(".")[-1] != "rotary_emb":
            continue
        parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        device = next(iter(module.buffers())).device
        originals.append((parent, name.split(".")[-1], module))
        setattr(parent, name.split(".")[-1], type(module)(config=model.config).to(device))
    if not originals:
        raise ValueError(f"{type(model).__name__} has no rotary_emb module: its RoPE cannot be extended")
    return originals


def _base_and_head(model):
    return getattr(model, model.base_model_prefix), model.get_output_embeddings()


def token_nll(model, hidden, targets, chunk: int = 1024):
    """Next-token NLL (float64 numpy) of ``targets`` from final hidden states ``(1, T, d)``, the LM
    head on ``chunk`` positions at a time (with the model's final soft-capping, if any)."""
    import torch

    _, head = _base_and_head(model)
    softcap = getattr(model.config, "final_logit_softcapping", None)
    out = []
    with torch.no_grad():
        for start in range(0, hidden.shape[1], chunk):
            out.append(_chunk_nll(head, hidden[:, start:start + chunk], targets[:, start:start + chunk], softcap))
    return torch.cat(out, 1)[0].double().cpu().numpy()


def _chunk_nll(head, hidden, target, softcap):
    import torch

    logits = head(hidden).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return -torch.log_softmax(logits, -1).gather(-1, target[..., None])[..., 0]


class EntropyProbe:
    """Per-head entropy of the tempered attention row at chosen query positions."""

    def __init__(self, positions):
        self.positions = {int(p) for p in positions}
        self.records = []

    def __call__(self, layer, module, query, key, value, mask, kwargs):
        import torch

        here = [(i, int(p)) for i, p in enumerate(query_positions(query, key, kwargs)[0].tolist())
                if p in self.positions]
        if not here:
            return
        keys = _repeat_kv(key, query.shape[1] // key.shape[1])[0].float()
        window = kwargs.get("sliding_window")
        for index, position in here:
            first = 0 if window is None else max(0, position - window + 1)
            logits = module.scaling * (keys[:, first:position + 1] @ query[0, :, index].float()[..., None])[..., 0]
            p = torch.softmax(logits, -1)
            entropy = -(p * torch.log(p.clamp_min(1e-30))).sum(-1)
            for head, value_ in enumerate(entropy.tolist()):
                self.records.append((layer, head, position + 1, value_))

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.records, columns=["layer", "head", "n", "entropy"])


@dataclass
class WindowRun:
    """One window under one RoPE handling: the prefix shared by the arms that are 1 on it."""

    model: object
    ids: object  # (1, length) token ids
    prefix: int  # tokens run once and shared
    chunk: int
    probe_positions: tuple

    def _forward(self, schedule, ids, cache=None, probe=None):
        import torch

        base, _ = _base_and_head(self.model)
        with torch.no_grad(), tempered(self.model, schedule, probe=probe):
            output = base(ids, cache=cache, use_cache=cache is not None)
        return output.last_hidden_state

    def shared_prefix(self, training_length: int):
        """Hidden states, entropies and the KV cache of the first ``prefix`` tokens (untempered)."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        probe = EntropyProbe(self.probe_positions)
        hidden = self._forward(identity(training_length), self.ids[:, :self.prefix], cache=cache, probe=probe)
        return hidden, cache, probe.table()

    def arm(self, schedule, shared=None):
        """``(nll per target position, entropy table)`` of one arm; ``shared`` = :meth:`shared_prefix`."""
        import torch

        probe = EntropyProbe(self.probe_positions)
        targets = self.ids[:, 1:]
        if shared is None:
            hidden = self._forward(schedule, self.ids[:, :-1], probe=probe)
            return token_nll(self.model, hidden, targets, self.chunk), probe.table()
        prefix_hidden, cache, prefix_entropy = shared
        rest = self._forward(schedule, self.ids[:, self.prefix:-1], cache=cache, probe=probe)
        cache.crop(self.prefix - cache.get_seq_length())  # a negative crop removes that many tokens
        hidden = torch.cat([prefix_hidden, rest], 1)
        return token_nll(self.model, hidden, targets, self.chunk), pd.concat([prefix_entropy, probe.table()])


def bucket_table(nll: np.ndarray, edges: np.ndarray) -> pd.DataFrame:
    """Sum and count of NLL per bucket of ``n`` (target ``t + 1`` has ``n = t + 1``)."""
    n = np.arange(1, len(nll) + 1)
    index = np.clip(np.searchsorted(edges, n, side="left") - 1, 0, len(edges) - 2)
    frame = pd.DataFrame({"bucket": index, "nll": nll})
    grouped = frame.groupby("bucket")["nll"].agg(["sum", "count"]).reset_index()
    grouped["n_low"] = edges[grouped["bucket"]]
    grouped["n_high"] = edges[grouped["bucket"] + 1]
    return grouped.rename(columns={"sum": "nll_sum", "count": "tokens"})


def _prefix_length(schedules_by_arm: dict, training_length: int, length: int) -> int:
    """Tokens shared by the arms that are exactly 1 on them (at least half of ``L``)."""
    sharing = [s.identity_through() for s in schedules_by_arm.values() if s.identity_through() >= training_length // 2]
    return min(min(sharing, default=0), length - 1)


def run_handling(model, ids, schedules_by_arm: dict, handling: str, *, training_length, edges, chunk):
    """Every arm of one RoPE handling on one window: ``(buckets, entropy, nll by arm)``."""
    length = ids.shape[1]
    probe_positions = tuple(int(e) - 1 for e in edges[1:] if e <= length - 1)
    prefix = _prefix_length(schedules_by_arm, training_length, length)
    share = handling != "dynamic" and prefix > 0
    run = WindowRun(model, ids, prefix, chunk, probe_positions)
    buckets, entropies, nll_by_arm = [], [], {}
    with rope_handling(model, handling, training_length, length):
        shared = run.shared_prefix(training_length) if share else None
        for name, schedule in schedules_by_arm.items():
            own = shared if share and schedule.identity_through() >= prefix else None
            nll, entropy = run.arm(schedule, own)
            nll_by_arm[name] = nll
            buckets.append(bucket_table(nll, edges).assign(handling=handling, arm=name))
            entropies.append(entropy.assign(handling=handling, arm=name))
    return pd.concat(buckets), pd.concat(entropies), nll_by_arm


def guard(model, ids, schedule, none, nll_shared: np.ndarray, *, handling, training_length, chunk) -> dict:
    """The arm ``schedule`` and ``none`` over the whole window without a shared prefix: positions
    with ``n <= L`` must be bit-identical between them, and the shared-prefix run must agree."""
    run = WindowRun(model, ids, 0, chunk, ())
    with rope_handling(model, handling, training_length, ids.shape[1]):
        arm_nll, _ = run.arm(schedule)
        none_nll, _ = run.arm(none)
    L = int(training_length)
    return {
        "handling": handling,
        "arm": schedule.name,
        "identical_up_to_L": bool(np.array_equal(arm_nll[:L], none_nll[:L])),
        "differs_beyond_L": bool(not np.array_equal(arm_nll[L:], none_nll[L:])),
        "shared_prefix_max_abs_diff": float(np.max(np.abs(arm_nll - nll_shared))),
    }


def effective_context(model, ids, full_nll: np.ndarray, short_context: int, chunk: int) -> dict:
    """The last ``short_context // 2`` targets with the full window as context against only the
    last ``short_context`` tokens (untempered, the model's own RoPE)."""
    targets = short_context // 2
    run = WindowRun(model, ids[:, -short_context:], 0, chunk, ())
    short_nll, _ = run.arm(identity(2))
    return {"targets": targets, "context_full": int(ids.shape[1] - targets), "context_short": short_context - targets,
            "full_nll": float(full_nll[-targets:].mean()), "short_nll": float(short_nll[-targets:].mean())}


def run_window(model, ids, document: dict, settings: dict, *, window: int, seed: int, log=print) -> dict:
    """Every handling and arm of ``settings["arms"]`` on one window: ``buckets`` and ``entropy``
    tables, and ``checks`` (guard on the first window, effective context, timings)."""
    import time

    L = document["training_length"]
    edges = bucket_edges(L, ids.shape[1], settings["buckets_per_octave"])
    chunk = settings["lm_head_chunk"]
    buckets, entropies, checks = [], [], {"window": window, "guard": [], "seconds": {}}
    for handling, names in settings["arms"].items():
        started = time.perf_counter()
        schedules_by_arm = arms(document, names, seed=seed)
        table, entropy, nll = run_handling(model, ids, schedules_by_arm, handling, training_length=L, edges=edges,
                                           chunk=chunk)
        buckets.append(table)
        entropies.append(entropy)
        checks["seconds"][handling] = round(time.perf_counter() - started, 1)
        log(f"[critscale] window {window}, RoPE {handling}: {len(names)} arms in {checks['seconds'][handling]} s")
        gated = [name for name in names if name != "none" and schedules_by_arm[name].identity_through() >= L]
        if settings["guard"] and window == 0 and "none" in names and gated:
            checks["guard"].append(guard(model, ids, schedules_by_arm[gated[0]], schedules_by_arm["none"],
                                         nll[gated[0]], handling=handling, training_length=L, chunk=chunk))
        if handling == "none" and "none" in names:
            checks["effective_context"] = effective_context(model, ids, nll["none"], settings["short_context"], chunk)
    return {"buckets": pd.concat(buckets).assign(window=window), "entropy": pd.concat(entropies).assign(window=window),
            "checks": checks}


def check_settings(settings: dict, sources, training_length: int) -> None:
    """Refuse, before any job, an intervention the study cannot run (the key named)."""
    if settings["source"] not in sources:
        raise ValueError(f"intervention.source: {settings['source']!r} is not a model source of the studies; "
                         f"allowed: {', '.join(sources) or 'none (add a study)'}")
    if settings["length"] <= training_length:
        raise ValueError(f"intervention.length: {settings['length']} must exceed fitting.training_length "
                         f"({training_length}): the intervention looks beyond L")
    if not 2 <= settings["short_context"] < settings["length"]:
        raise ValueError(f"intervention.short_context: {settings['short_context']} must lie in 2..{settings['length'] - 1}")
