"""The intervention stage's pieces on a tiny random causal LM: arms, RoPE handling, a shared prefix
that changes nothing, chunked loss equal to the model's own, the guard, and the paired statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from critscale import intervention, intervention_stats, schedules
from test_tempering import L, LENGTH, causal_lm, tokens


def document_for(model, seed=0):
    rng = np.random.default_rng(seed)
    config = model.config
    rows = [dict(source="m", unit=f"L{l}H{h}", layer=l, head=h, fit_status="fitted", xi=x, xi_low=x - 0.1,
                 xi_high=x + 0.1)
            for l in range(config.num_hidden_layers) for h in range(config.num_attention_heads)
            for x in [rng.uniform(0.5, 3)]]
    return schedules.build_schedule(pd.DataFrame(rows), L, source="m", level=0.9, provenance={})


@pytest.fixture(scope="module")
def model():
    return causal_lm("llama")


def test_chunked_loss_is_the_models_own(model):
    ids = tokens()
    with torch.no_grad():
        logits = model(ids).logits[0, :-1]
        hidden = model.model(ids[:, :-1]).last_hidden_state
    expected = -torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None])[:, 0].double().numpy()
    assert np.allclose(intervention.token_nll(model, hidden, ids[:, 1:], chunk=7), expected, atol=1e-5)


def test_shared_prefix_equals_whole_window_runs_and_the_guard_holds(model):
    ids = tokens()
    arms = intervention.arms(document_for(model), intervention.ARMS, seed=1)
    edges = intervention.bucket_edges(L, LENGTH, shortest=4)
    buckets, entropy, nll = intervention.run_handling(model, ids, arms, "none", training_length=L, edges=edges,
                                                      chunk=16)
    run = intervention.WindowRun(model, ids, 0, 16, ())
    for name, schedule in arms.items():
        whole, _ = run.arm(schedule)
        assert np.allclose(whole, nll[name], atol=1e-5), name
    checked = intervention.guard(model, ids, arms["per_head"], arms["none"], nll["per_head"], handling="none",
                                 training_length=L, chunk=16)
    assert checked["identical_up_to_L"] and checked["differs_beyond_L"]
    assert checked["shared_prefix_max_abs_diff"] < 1e-5
    assert set(buckets["arm"]) == set(intervention.ARMS)
    assert buckets.groupby("arm")["tokens"].sum().eq(LENGTH - 1).all()
    assert set(entropy["n"]) == {int(e) for e in edges[1:] if e <= LENGTH - 1}
    assert np.all(entropy["entropy"] >= 0) and np.all(entropy["entropy"] <= np.log(LENGTH) + 1e-6)


def test_entropy_probe_against_the_models_attention(model):
    ids = tokens()
    probe = intervention.EntropyProbe([LENGTH - 1])
    none = intervention.arms(document_for(model), ["none"], seed=0)["none"]
    eager = causal_lm("llama", attn="eager")
    with torch.no_grad(), intervention.tempered(eager, none, probe=probe):
        attentions = eager(ids, output_attentions=True).attentions
    table = probe.table()
    for layer, weights in enumerate(attentions):
        p = weights[0, :, -1].double()
        expected = -(p * torch.log(p.clamp_min(1e-300))).sum(-1).numpy()
        got = table[table["layer"] == layer].sort_values("head")["entropy"].to_numpy()
        assert np.allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("handling", ["linear", "yarn", "dynamic"])
def test_rope_handling_extends_beyond_L_and_is_restored(model, handling):
    ids = tokens()
    with torch.no_grad():
        before = model(ids).logits
        with intervention.rope_handling(model, handling, L, LENGTH):
            extended = model(ids).logits
            assert model.model.rotary_emb.attention_scaling == 1.0  # the temperature stays the arms' alone
        after = model(ids).logits
    assert torch.equal(before, after)
    assert not torch.allclose(extended[:, L:], before[:, L:], atol=1e-3)


def test_bucket_edges_hold_L_and_cover_the_window():
    edges = intervention.bucket_edges(8192, 12288)
    assert 8192 in edges and edges[-1] == 12288 and edges[0] == 64
    table = intervention.bucket_table(np.ones(12287), edges)
    assert table["tokens"].sum() == 12287
    assert table.loc[table["n_low"] == 8192, "n_high"].item() == edges[list(edges).index(8192) + 1]


def _per_window(effect, windows=8, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.normal(3.0, 0.3, windows)
    rows = []
    for arm, shift in {"none": 0.0, "per_head": effect, "dose_matched": 0.0, "shuffled": 0.0, "qwen_logn": 0.01,
                       "yarn": 0.02}.items():
        for w in range(windows):
            rows.append({"window": w, "handling": "yarn", "arm": arm, "nll": base[w] + shift + rng.normal(0, 0.002)})
    return pd.DataFrame(rows)


def test_contrasts_find_a_real_paired_effect_and_no_null_one():
    arms = {"yarn": ["none", "per_head", "dose_matched", "shuffled", "qwen_logn", "yarn"]}
    found = intervention_stats.contrasts(_per_window(-0.01), arms, bootstrap=2000)
    row = found.set_index("contrast").loc["per_head - none"]
    assert row["high"] < 0 and row["p_holm"] < 0.01 and abs(row["mean_difference"] + 0.01) < 0.003
    assert "per_head - qwen_logn" in set(found["contrast"])  # best published rule of the handling
    assert (found["p_holm"] >= found["p"]).all()


def test_interval_coverage_and_test_size_at_eight_windows():
    """Known truth (no effect) at the study's 8 windows: how often the bootstrap interval holds 0
    and how often the paired test rejects at 0.05."""
    rng = np.random.default_rng(5)
    results = [intervention_stats._paired(rng.normal(0, 0.01, 8), 0.95, 1000, rng) for _ in range(400)]
    coverage = np.mean([r["low"] <= 0 <= r["high"] for r in results])
    size = np.mean([r["p"] < 0.05 for r in results])
    assert 0.90 <= coverage <= 0.98  # studentized; the percentile bootstrap gave 0.88 here
    assert 0.02 <= size <= 0.08


def test_beyond_length_counts_only_targets_past_L():
    buckets = pd.DataFrame({"window": 0, "handling": "none", "arm": "none", "n_low": [4, 16, 32],
                            "n_high": [16, 32, 48], "nll_sum": [100.0, 32.0, 48.0], "tokens": [16, 16, 16]})
    assert intervention_stats.beyond_length(buckets, 16)["nll"].item() == 80.0 / 32


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overlays", "windows"), [([], 8), (["config/intervene-1.25L.yaml"], 8), (["config/intervene-cuda.yaml"], 32)]
)
def test_shipped_intervention_configs_plan_their_windows(tmp_path, overlays, windows):
    import subprocess
    import sys

    from tiny_study import ROOT, planned_jobs

    command = [sys.executable, "-m", "snakemake", "-n", "intervene", "--configfile", "config/intervene.yaml",
               *overlays, "--replace-workflow-config", "--config", f"results={tmp_path}"]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    jobs = planned_jobs(run)
    assert jobs["intervention_window"] == windows and jobs["schedule"] == 1, jobs


@pytest.mark.slow
def test_an_intervention_on_an_unknown_source_stops_before_any_job(tmp_path):
    import subprocess
    import sys

    import yaml

    from tiny_study import ROOT

    config = yaml.safe_load((ROOT / "config" / "intervene.yaml").read_text())
    config["intervention"]["source"] = "nobody"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "snakemake", "-n", "intervene", "--configfile", str(path),
               "--replace-workflow-config", "--config", f"results={tmp_path}"]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert run.returncode != 0
    assert "intervention.source: 'nobody' is not a model source" in run.stdout + run.stderr
    assert not (tmp_path / "logs").exists()


def test_the_shared_prefix_is_untempered_whatever_arm_comes_first(model):
    """Without a `none` arm, and with an ungated arm first, every arm still equals its own
    whole-window run."""
    ids = tokens()
    arms = intervention.arms(document_for(model), ["ssmax", "per_head", "yarn"], seed=1)
    edges = intervention.bucket_edges(L, LENGTH, shortest=4)
    _, _, nll = intervention.run_handling(model, ids, arms, "none", training_length=L, edges=edges, chunk=16)
    run = intervention.WindowRun(model, ids, 0, 16, ())
    for name, schedule in arms.items():
        assert np.allclose(run.arm(schedule)[0], nll[name], atol=1e-5), name
