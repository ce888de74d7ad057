"""Capture exactness on tiny random models of many model types (decoders, encoders, vision
transformers) in both the sdpa and the eager mode, sliding windows read from the model, the
log-probability self-check and its dtype-aware tolerances, refusal of models that bypass the
attention registry."""

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tiny_models import DECODERS, ENCODERS, MODEL_TYPES, VISION, WINDOW, sequence_length, tiny_inputs, tiny_model  # noqa: E402

from critscale import capture as cap  # noqa: E402
from critscale import model_loading as ml  # noqa: E402

F32 = cap.CAPTURE_TOL["float32"]


def captured_rows(model, inputs, positions, mode):
    rows = {}
    with cap.capturing(model, positions, lambda layer, r, _p: rows.__setitem__(layer, r), mode=mode), torch.inference_mode():
        hidden = model(**inputs).last_hidden_state
    return rows, hidden


def own_forward(model, inputs, implementation):
    previous = model.config._attn_implementation
    model.set_attn_implementation(implementation)
    try:
        with torch.inference_mode():
            return model(**inputs, output_attentions=implementation == "eager")
    finally:
        model.set_attn_implementation(previous)


def tiny_case(model_type):
    """A tiny model, its inputs (batch of 2) and query positions: the last, one inside, one early."""
    inputs = tiny_inputs(model_type)
    length = sequence_length(model_type, inputs)
    return tiny_model(model_type), inputs, [length - 1, length // 2, 10, 3]


@pytest.mark.parametrize("mode", ["sdpa", "eager"])
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_captured_rows_are_the_models_own_attention(model_type, mode):
    model, inputs, positions = tiny_case(model_type)
    rows, hidden = captured_rows(model, inputs, positions, mode)
    reference = own_forward(model, inputs, "eager")
    assert sorted(rows) == list(range(len(reference.attentions)))
    for layer, probabilities in enumerate(reference.attentions):
        assert rows[layer].dtype == torch.float32 and rows[layer].shape == probabilities[:, :, positions].shape
        error = cap.log_prob_error(rows[layer], torch.log(probabilities[:, :, positions]))
        assert error <= F32, (model_type, mode, layer, error)
    # the capture does not change the forward: it is the model's own in that implementation
    # (soft-capped attention has no SDPA kernel: the capture continues in eager, as the model does)
    softcapped = getattr(model.config, "attn_logit_softcapping", None) is not None
    own = own_forward(model, inputs, "eager" if softcapped else mode).last_hidden_state
    assert (hidden - own).abs().max().item() <= 1e-5


@pytest.mark.parametrize("mode", ["sdpa", "eager"])
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_self_check_passes_with_rounding_level_capture_error(model_type, mode):
    model, inputs, positions = tiny_case(model_type)
    rows, _ = captured_rows(model, inputs, positions, mode)
    causal = ml.attention_layout(model).direction == "causal"
    check_inputs = inputs["input_ids"] if causal else inputs
    result = cap.self_check(model, check_inputs, rows, positions, positions, causal=causal)
    assert result["capture_error"] <= F32 and result["drift_error"] <= F32
    assert result["rows"] == 2 * len(positions) and result["capture_tol"] == F32
    if mode == "eager":
        assert result["drift_error"] == 0.0  # the same eager forward twice


def test_direction_read_from_the_model():
    for model_type in DECODERS:
        assert ml.attention_layout(tiny_model(model_type)).direction == "causal", model_type
    for model_type in ENCODERS + VISION:
        assert ml.attention_layout(tiny_model(model_type)).direction == "bidirectional", model_type


EXPECTED_WINDOWS = {  # as each model hands them to its attention function
    "mistral": [WINDOW, WINDOW], "phi3": [WINDOW, WINDOW], "starcoder2": [WINDOW, WINDOW],
    "qwen2": [None, WINDOW], "gemma2": [WINDOW, None], "gemma3_text": [WINDOW, None],
    "modernbert": [None, WINDOW // 2 + 1], "llama": [None, None], "bert": [None, None],
}


@pytest.mark.parametrize("model_type", sorted(EXPECTED_WINDOWS))
def test_sliding_windows_read_from_the_model_and_rows_beyond_them_see_fewer_keys(model_type):
    model = tiny_model(model_type)
    windows = cap.probe_layers(model)
    assert windows == EXPECTED_WINDOWS[model_type]
    n = 48
    rows, _ = captured_rows(model, tiny_inputs(model_type, length=n), [n - 1, 5], "sdpa")
    for layer, window in enumerate(windows):
        n_keys = torch.isfinite(rows[layer][0, 0]).sum(-1)  # per query: visible keys
        assert n_keys[0].item() == (n if window is None else window)  # a row at n beyond the window: n_keys < n
        if model_type not in ENCODERS:
            assert n_keys[1].item() == 6  # query 5 sees keys 0..5 (inside any window)


def tail_row():
    """A float32 row with one key at p ~ 1e-10 (and a key at p ~ 1)."""
    logits = torch.tensor([[0.0, -1.0, -2.0, -23.0, -3.0, float("nan")]], dtype=torch.float64)
    return logits


def test_log_prob_error_catches_a_1e_3_logit_error_on_a_key_with_p_1e_10():
    logits = tail_row()
    log_p = torch.log_softmax(torch.nan_to_num(logits, nan=-math.inf), -1)
    assert 1e-11 < math.exp(log_p[0, 3]) < 1e-9
    assert cap.log_prob_error(logits, log_p) <= 1e-12
    perturbed = logits.clone()
    perturbed[0, 3] += 1e-3
    assert cap.log_prob_error(perturbed, log_p) > F32  # caught: 1e-3 / 23
    # an absolute comparison of probabilities (the former check, tolerance 1e-5) would not see it
    assert (torch.softmax(torch.nan_to_num(perturbed, nan=-math.inf), -1) - log_p.exp()).abs().max() < 1e-12


def test_log_prob_error_on_masks():
    logits = tail_row()
    log_p = torch.log_softmax(torch.nan_to_num(logits, nan=-math.inf), -1)
    unmasked = log_p.clone()
    unmasked[0, 5] = -1.0  # the reference gives weight to a key the capture masked
    assert cap.log_prob_error(logits, unmasked) == math.inf
    underflowed = log_p.clone()
    underflowed[0, 1] = -math.inf  # the reference underflowed a key the capture gives p ~ 0.2
    assert cap.log_prob_error(logits, underflowed) == math.inf


def test_log_prob_error_does_not_read_digits_a_subnormal_reference_lacks():
    # p = exp(-100) ~ 4e-44 is subnormal in float32: only a few significant bits survive.
    logits = torch.tensor([[0.0, -1.0, -100.0]], dtype=torch.float64)
    reference = torch.softmax(logits.float(), -1)
    assert 0 < reference[0, 2] < torch.finfo(torch.float32).tiny
    assert cap.log_prob_error(logits, torch.log(reference.double())) <= F32
    # a capture that gives that key a normal probability is still caught
    wrong = logits.clone()
    wrong[0, 2] = -20.0
    assert cap.log_prob_error(wrong, torch.log(reference.double())) == math.inf


def perturb_least_likely_key(rows, amount):
    """Add ``amount`` to the logit of each row's least likely visible key."""
    key = torch.nan_to_num(rows, nan=math.inf).argmin(-1, keepdim=True)
    return rows.scatter_add(-1, key, torch.full_like(key, amount, dtype=rows.dtype))


def test_self_check_catches_a_1e_3_error_on_tail_keys_of_a_real_capture(monkeypatch):
    model = tiny_model("llama")
    ids = tiny_inputs("llama")["input_ids"]
    positions = [47, 30]
    rows, _ = captured_rows(model, {"input_ids": ids}, positions, "sdpa")
    smallest = torch.softmax(torch.nan_to_num(rows[1], nan=-math.inf), -1).min().item()
    assert smallest < 1e-6  # the perturbed keys are tail keys
    original = cap._Capture.record

    def skewed(self, module, query, key, mask, kwargs, *weights):
        sink = self.sink
        self.sink = lambda layer, r, p: sink(layer, perturb_least_likely_key(r, 1e-3) if layer == 1 else r, p)
        try:
            original(self, module, query, key, mask, kwargs, *weights)
        finally:
            self.sink = sink

    monkeypatch.setattr(cap._Capture, "record", skewed)
    with pytest.raises(cap.ExactnessError, match="not exact"):
        cap.self_check(model, ids, rows, positions, positions, causal=True)


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "gemma3_text", "gpt_neox"])
def test_reference_forward_by_query_blocks_gives_the_same_probabilities(model_type, monkeypatch):
    """The long self-check's reference runs the model's eager attention on blocks of queries (its
    memory bound); the probabilities it checks against are those of the whole-matrix forward."""
    model = tiny_model(model_type)
    ids = tiny_inputs(model_type)["input_ids"]
    positions = [47, 30, 5]

    def reference():
        seen = {}
        with cap.capturing(model, positions, lambda layer, rows, probs: seen.__setitem__(layer, probs),
                           mode="reference"), torch.inference_mode():
            model(input_ids=ids)
        return seen

    whole = reference()
    monkeypatch.setattr(cap, "QUERY_BLOCK", 8)
    blocked = reference()
    for layer in whole:
        assert torch.allclose(blocked[layer], whole[layer], atol=1e-6, rtol=1e-5)
    rows, _ = captured_rows(model, {"input_ids": ids}, positions, "sdpa")
    result = cap.self_check(model, ids, rows, positions, positions, causal=True)
    assert result["capture_error"] <= F32 and result["drift_error"] <= F32


def test_self_check_reports_and_bounds_drift():
    model = tiny_model("gemma3_text")
    ids = tiny_inputs("gemma3_text")["input_ids"]
    positions = [47, 15]
    rows, _ = captured_rows(model, {"input_ids": ids}, positions, "sdpa")
    result = cap.self_check(model, ids, rows, positions, positions, causal=True)
    assert 0 < result["drift_error"] <= F32 and result["drift_tol"] == cap.DRIFT_TOL["float32"]
    drifted = {layer: perturb_least_likely_key(r, 0.5) for layer, r in rows.items()}
    with pytest.raises(cap.DriftError, match="attention_output: eager"):
        cap.self_check(model, ids, drifted, positions, positions, causal=True)


@pytest.mark.parametrize("model_type", ["llama", "gemma3_text", "bert"])
def test_bfloat16_model_passes_its_dtype_aware_self_check(model_type):
    model = tiny_model(model_type, dtype=torch.bfloat16)
    ids = tiny_inputs(model_type)["input_ids"]
    positions = [47, 20, 3]
    rows, _ = captured_rows(model, {"input_ids": ids}, positions, "sdpa")
    assert all(r.dtype == torch.float32 for r in rows.values())  # recomputed in float32
    causal = model_type != "bert"
    result = cap.self_check(model, ids if causal else {"input_ids": ids}, rows, positions, positions, causal=causal)
    assert result["capture_tol"] == cap.CAPTURE_TOL["bfloat16"] and result["drift_tol"] == cap.DRIFT_TOL["bfloat16"]
    assert result["capture_error"] <= cap.CAPTURE_TOL["bfloat16"] and result["drift_error"] <= cap.DRIFT_TOL["bfloat16"]
    assert result["capture_error"] > F32  # bfloat16 rounding is visible: the float32 tolerance would not do


def test_check_positions_cover_every_n_in_the_first_window_and_the_first_row_of_others():
    ladder = [16, 32, 64]
    assert cap.check_positions(64, ladder, True, first_window=True) == [15, 31, 63]
    assert cap.check_positions(64, ladder, True, first_window=False) == [15]
    assert [cap.check_positions(n, ladder, False, first_window=True) for n in ladder] == [[15], [31], [63]]
    assert [cap.check_positions(n, ladder, False, first_window=False) for n in ladder] == [[15], [], []]


def test_self_check_on_a_vision_transformer_patch_rows():
    model = tiny_model("vit")
    inputs = tiny_inputs("vit")
    positions = [16, 0]
    rows, _ = captured_rows(model, inputs, positions, "sdpa")
    result = cap.self_check(model, inputs, rows, positions, positions, causal=False)
    assert result["capture_error"] <= F32 and result["rows"] == 4


def test_layer_that_bypasses_the_registry_is_refused_by_name():
    from torch import nn

    model = tiny_model("llama")

    class HandRolledAttention(nn.Module):  # computes its own softmax, never reaches the registry
        def forward(self, hidden_states, **kwargs):
            weights = torch.softmax(hidden_states @ hidden_states.transpose(1, 2), dim=-1)
            return weights @ hidden_states, weights

    model.layers[1].self_attn = HandRolledAttention()
    with pytest.raises(ml.UnsupportedArchitectureError, match="'llama'.*layers.1.self_attn.*bypassing"):
        ml.attention_layout(model)


def test_layer_that_silently_skips_the_registry_is_caught_by_the_probe(monkeypatch):
    model = tiny_model("llama")
    attention = model.layers[0].self_attn
    monkeypatch.setattr(attention, "forward", lambda hidden_states, **kwargs: (torch.zeros_like(hidden_states), None))
    with pytest.raises(ml.UnsupportedArchitectureError, match=r"layers \[0\] bypassed"):
        cap.probe_layers(model)


def test_self_check_memory_is_bounded_by_query_blocks():
    """The reference forward holds the eager mask and a few weight blocks, never a whole matrix:
    at n = 4096 with SmolLM2's 9 heads, the mask (64 MiB) plus four 512-query blocks (72 MiB each)
    bound what it adds (a view of a picked row kept its whole block alive: about 4 blocks more)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "benchmarks" / "bench_self_check_memory.py"
    run = subprocess.run([sys.executable, str(script), "4096"], capture_output=True, text=True, check=True)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["self_check_added"] < result["mask"] + 4 * result["weight_block"] + 32, run.stdout
