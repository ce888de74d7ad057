"""critscale.tempering on tiny random causal LMs of four types: the identity schedule is the
untempered model, every rule and a per-head schedule against a hand computation of the first
layer's attention, a KV cache continues exactly, bad schedules stop before any forward, and gated
schedules leave positions up to L bit-identical."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from critscale.tempering import LogPowerSchedule, PositionRule, ScheduleError, published_rules, tempered
from tiny_models import WINDOW, tiny_config

TYPES = ["llama", "qwen2", "gemma3_text", "gpt_neox"]
L = 16  # training length of the test schedules: the 48-token inputs reach 3L
LENGTH = 48


def causal_lm(model_type, attn="sdpa"):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    config = tiny_config(model_type)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn).eval()
    with torch.no_grad():  # peaked attention, so a temperature visibly changes the output
        for name, parameter in model.named_parameters():
            if parameter.ndim == 2 and any(part in name for part in ("q_proj", "k_proj", "query_key_value")):
                parameter.mul_(4.0)
    return model


def tokens(length=LENGTH, seed=1):
    return torch.randint(2, 1000, (1, length), generator=torch.Generator().manual_seed(seed))


def per_head(model, seed=3):
    config = model.config
    exponents = np.random.default_rng(seed).uniform(0.2, 3.0, (config.num_hidden_layers, config.num_attention_heads))
    return LogPowerSchedule("per_head", exponents, L)


# hand computations of beta(n), written from the published formulas (not from the library)
HAND = {
    "qwen_logn": lambda n, h: math.log(n) / math.log(L) if n > L else 1.0,
    "yarn": lambda n, h: (0.1 * math.log(n / L) + 1) ** 2 if n > L else 1.0,
    "llama4": lambda n, h: math.log(math.floor(n / L) + 1) * 0.1 + 1,
    "ssmax": lambda n, h: math.log(max(n, 2)) / math.log(L),
}


def logits(model, ids, schedule=None, **kwargs):
    with torch.no_grad():
        if schedule is None:
            return model(ids, **kwargs).logits
        with tempered(model, schedule):
            return model(ids, **kwargs).logits


@pytest.mark.parametrize("model_type", TYPES)
def test_identity_schedule_is_the_untempered_model(model_type):
    model = causal_lm(model_type)
    ids = tokens()
    plain = logits(model, ids)
    zero = LogPowerSchedule("identity", np.zeros((model.config.num_hidden_layers, model.config.num_attention_heads)), L)
    assert torch.allclose(logits(model, ids, zero), plain, atol=1e-6, rtol=0)
    # a schedule gated beyond the input's length is the identity too
    assert torch.allclose(logits(model, ids, LogPowerSchedule("late", zero.exponents + 2, 512)), plain, atol=1e-6,
                          rtol=0)
    assert model.config._attn_implementation == "sdpa"  # restored


def _first_layer_inputs(model, ids):
    """Query, key, value states of layer 0 as the model hands them to its attention."""
    seen = {}

    def probe(layer, module, query, key, value, mask, kwargs):
        if layer == 0:
            seen.update(query=query.clone(), key=key.clone(), value=value.clone(), module=module,
                        window=kwargs.get("sliding_window"))

    zero = LogPowerSchedule("identity", np.zeros((model.config.num_hidden_layers, model.config.num_attention_heads)), L)
    with torch.no_grad(), tempered(model, zero, probe=probe):
        model(ids)
    return seen


def _hand_attention(seen, beta):
    """Softmax attention of layer 0 with query row (h, p) logits multiplied by beta[h, p]."""
    query, key, value, module = seen["query"][0], seen["key"][0], seen["value"][0], seen["module"]
    heads, length = query.shape[0], query.shape[1]
    groups = heads // key.shape[0]
    out = torch.zeros(length, heads, value.shape[-1], dtype=torch.float64)
    for h in range(heads):
        k, v = key[h // groups].double(), value[h // groups].double()
        for p in range(length):
            first = 0 if seen["window"] is None else max(0, p - seen["window"] + 1)
            row = beta[h, p] * module.scaling * (k[first:p + 1] @ query[h, p].double())
            out[p, h] = torch.softmax(row, 0) @ v[first:p + 1]
    return out.reshape(length, -1)


def _attention_output(model, ids, schedule):
    """Layer 0's attention output before its output projection, tempered by ``schedule``."""
    module = model.get_submodule([n for n, m in model.named_modules() if n.endswith("layers.0.self_attn")
                                  or n.endswith("layers.0.attention")][0])
    projection = getattr(module, "o_proj", None) or module.dense
    seen = {}
    handle = projection.register_forward_pre_hook(lambda mod, args: seen.update(out=args[0][0].clone()))
    try:
        logits(model, ids, schedule)
    finally:
        handle.remove()
    return seen["out"].double()


@pytest.mark.parametrize("model_type", TYPES)
@pytest.mark.parametrize("rule", sorted(HAND) + ["per_head"])
def test_schedule_against_a_hand_computation(model_type, rule):
    model = causal_lm(model_type)
    ids = tokens()
    heads = model.config.num_attention_heads
    if rule == "per_head":
        schedule = per_head(model)
        xi = schedule.exponents[0]
        beta = np.array([[(math.log(max(p + 1, 2)) / math.log(L)) ** xi[h] if p + 1 > L else 1.0
                          for p in range(LENGTH)] for h in range(heads)])
    else:
        schedule = published_rules(L)[rule]
        beta = np.array([[HAND[rule](p + 1, h) for p in range(LENGTH)] for h in range(heads)])
    seen = _first_layer_inputs(model, ids)
    if model_type == "gemma3_text":
        assert seen["window"] == WINDOW  # the sliding layer is covered
    expected = _hand_attention(seen, beta)
    got = _attention_output(model, ids, schedule)
    assert torch.allclose(got, expected, atol=2e-5, rtol=1e-5)
    untempered = _hand_attention(seen, np.ones_like(beta))
    assert not torch.allclose(untempered, expected, atol=1e-3)  # the check can fail


@pytest.mark.parametrize("model_type", TYPES)
def test_prefix_then_continuation_with_a_cache_equals_one_forward(model_type):
    model = causal_lm(model_type)
    ids = tokens()
    schedule = per_head(model)
    whole = logits(model, ids, schedule)
    with torch.no_grad(), tempered(model, schedule):
        prefix = model(ids[:, :20], use_cache=True)
        rest = model(ids[:, 20:], cache=prefix.past_key_values, use_cache=True).logits
    assert torch.allclose(torch.cat([prefix.logits, rest], 1), whole, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(whole, logits(model, ids), atol=1e-3)


@pytest.mark.parametrize("model_type", TYPES)
@pytest.mark.parametrize("rule", ["per_head", "qwen_logn", "yarn"])
def test_gated_schedules_leave_positions_up_to_L_bit_identical(model_type, rule):
    model = causal_lm(model_type)
    ids = tokens()
    schedule = per_head(model) if rule == "per_head" else published_rules(L)[rule]
    plain, tempered_logits = logits(model, ids), logits(model, ids, schedule)
    assert schedule.identity_through() == L
    assert torch.equal(tempered_logits[:, :L], plain[:, :L])
    assert not torch.allclose(tempered_logits[:, L:], plain[:, L:], atol=1e-4)


@pytest.mark.parametrize(
    ("schedule", "field"),
    [
        (LogPowerSchedule("s", np.ones((3, 4)), L), "'layers' has 3 entries"),
        (LogPowerSchedule("s", np.ones((2, 5)), L), "'heads' has 5 entries"),
        (LogPowerSchedule("s", np.full((2, 4), np.nan), L), "layer 0 head 0"),
        (LogPowerSchedule("s", np.ones((2, 4)), 4096), "'training_length' 4096 is beyond the model's 512 positions"),
        (PositionRule("zero", lambda n: np.zeros_like(n), L), "finite and positive"),
        (PositionRule("negative", lambda n: np.where(n > 100, -1.0, 1.0), L), "at n = 10"),
    ],
)
def test_bad_schedules_stop_before_any_forward(schedule, field):
    model = causal_lm("llama")
    calls = []
    model.register_forward_pre_hook(lambda *args: calls.append(1))
    with pytest.raises(ScheduleError, match=field):
        with tempered(model, schedule):
            model(tokens())
    assert not calls
    assert model.config._attn_implementation == "sdpa"


def test_eager_base_matches_sdpa_base():
    model = causal_lm("llama")
    ids = tokens()
    schedule = per_head(model)
    with torch.no_grad():
        with tempered(model, schedule, base="eager"):
            eager = model(ids).logits
    assert torch.allclose(eager, logits(model, ids, schedule), atol=1e-5)
